"""Hybrid vs additive RMTR coarse models, by training loss, from a bench run directory.

For each problem and seed, the target is the worse of the two methods' final training losses;
the script prints the time and gradient evaluations each method needed to reach it and the
ratios ``additive / hybrid`` (> 1: the hybrid model converged faster).

Usage (from the repository root)::

    mldd bench multilevel --problems digits,mnist5k \\
        --methods rmtr-depth3,rmtr-depth3-hybrid --seeds 2 --threads 1 --jobs 2 \\
        --out benchmarks/results/hybrid
    .venv/bin/python benchmarks/experiments/hybrid_vs_additive.py benchmarks/results/hybrid
"""

from __future__ import annotations

import csv
import statistics
import sys
from pathlib import Path

ADDITIVE, HYBRID = "rmtr-depth3", "rmtr-depth3-hybrid"


def trace(path: Path) -> list[tuple[float, float, float]]:
    """``(time_s, grad_evals, loss)`` rows of one run's ``metrics.csv``."""
    with path.open() as fh:
        return [(float(r["time_s"]), float(r["grad_evals"]), float(r["loss"]))
                for r in csv.DictReader(fh)]


def first_at(rows: list[tuple[float, float, float]], target: float) -> tuple[float, float]:
    """Time and evaluations at which the loss first reaches ``target``."""
    return next((t, e) for t, e, loss in rows if loss <= target)


def main(root: Path) -> None:
    for problem in sorted(p.name for p in (root / "runs").iterdir()):
        time_ratios, eval_ratios = [], []
        print(problem)
        for seed_dir in sorted((root / "runs" / problem / ADDITIVE).iterdir()):
            runs = {lab: trace(root / "runs" / problem / lab / seed_dir.name / "metrics.csv")
                    for lab in (ADDITIVE, HYBRID)}
            target = max(rows[-1][2] for rows in runs.values())
            (ta, ea), (th, eh) = first_at(runs[ADDITIVE], target), first_at(runs[HYBRID], target)
            time_ratios.append(ta / th)
            eval_ratios.append(ea / eh)
            print(f"  {seed_dir.name}: loss target {target:.3e}; additive {ta:.1f} s / {ea:.0f} "
                  f"evals, hybrid {th:.1f} s / {eh:.0f} evals")
        print(f"  additive/hybrid: time {[round(r, 2) for r in time_ratios]} "
              f"(median {statistics.median(time_ratios):.2f}), evals "
              f"{[round(r, 2) for r in eval_ratios]} (median {statistics.median(eval_ratios):.2f})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/hybrid"))
