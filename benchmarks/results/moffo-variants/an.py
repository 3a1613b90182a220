"""Accuracy of each run at equal gradient evaluations: `python an.py PROBLEM EVALS`.

Reads the AdaGrad/MOFFO runs of ../moffo/runs/PROBLEM and the variants in runs/PROBLEM
(median over seeds, then the per-seed values); a run with fewer evaluations reports its final row.
"""
import csv
import glob
import json
import os
import statistics as st
import sys

here = os.path.dirname(os.path.abspath(__file__))
P, E = sys.argv[1], int(sys.argv[2])
dirs = sorted(glob.glob(f"{here}/../moffo/runs/{P}/*")) + sorted(glob.glob(f"{here}/runs/{P}/*"))
for d in dirs:
    accs, fin, ge = [], [], []
    for s in sorted(glob.glob(d + "/seed*/summary.json")):
        with open(os.path.dirname(s) + "/metrics.csv") as fh:
            rows = list(csv.DictReader(fh))
        ok = [r for r in rows if int(r["grad_evals"]) <= E]
        accs.append(float(ok[-1]["accuracy"]))
        with open(s) as fh:
            sm = json.load(fh)
        fin.append(sm["final_metric"])
        ge.append(sm["grad_evals"])
    if accs:
        src = "moffo/" if "/../moffo/" in d else ""
        print(f"{src + os.path.basename(d):34s} at {E}: {st.median(accs):.4f} "
              f"{[round(a, 3) for a in accs]}  final {st.median(fin):.4f}  evals {ge}")
