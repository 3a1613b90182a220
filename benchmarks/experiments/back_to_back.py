"""Pairs of runs made one right after the other, so that both see the same machine.

The benchmark VM's speed drifts between hours (README, "Machine drift"): two rows of a bench
report made far apart can differ by 1.3–1.5× in time per gradient evaluation with identical
iterates. This script runs each pair ``A, B`` for one seed, then the next seed, alternating, and
prints per seed the final and best metric of each, the time each needed to reach the worse of
the two best values (ratio ``A / B``: > 1 means B got there sooner), and both runs' machine
probes.

Usage (from the repository root; about 4 minutes per run)::

    .venv/bin/python benchmarks/experiments/back_to_back.py run \\
        --out benchmarks/results/back-to-back-burgers --seeds 0 1
    .venv/bin/python benchmarks/experiments/back_to_back.py run --problem klein-gordon \\
        --pairs 0 --out benchmarks/results/back-to-back-klein-gordon
    .venv/bin/python benchmarks/experiments/back_to_back.py report \\
        benchmarks/results/back-to-back-burgers

``run`` also writes ``report.md``. The pairs are :data:`PAIRS`; each entry is a run label and
the ``mldd train`` arguments after the common ones (problem, seed, budget, threads, dtype).
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

COMMON = ["--budget", "240", "--threads", "2", "--dtype", "float64", "--no-plots"]

#: ``(label A, args A), (label B, args B)`` per pair.
PAIRS: list[tuple[tuple[str, list[str]], tuple[str, list[str]]]] = [
    (("mspqn", ["--method", "mspqn"]),
     ("mspqn-tr", ["--method", "mspqn", "--set", "method.globalization=trust_region"])),
    (("torch-lbfgs-h50", ["--method", "torch-lbfgs", "--set", "method.history=50"]),
     ("trust-region-lbfgs50", ["--method", "trust-region", "--set", "method.hessian=lbfgs",
                               "--set", "method.memory=50"])),
    (("aspqn-sweep-2proc", ["--method", "aspqn", "--set", "method.local_sweep=true",
                            "--nproc", "2"]),
     ("aspqn-sweep-tr-2proc", ["--method", "aspqn", "--set", "method.local_sweep=true",
                               "--set", "method.globalization=trust_region", "--nproc", "2"])),
    # Does the Schwarz sweep add to the trust-region L-BFGS-50 global phase it shares with the
    # single-level method?
    (("trust-region-lbfgs50", ["--method", "trust-region", "--set", "method.hessian=lbfgs",
                               "--set", "method.memory=50"]),
     ("mspqn-tr", ["--method", "mspqn", "--set", "method.globalization=trust_region"])),
]


def _rows(run: Path) -> list[tuple[float, float]]:
    """``(time_s, metric)`` of a run's ``metrics.csv`` (the problem's metric column)."""
    summary = json.loads((run / "summary.json").read_text())
    with (run / "metrics.csv").open() as fh:
        return [(float(r["time_s"]), float(r[summary["metric"]])) for r in csv.DictReader(fh)]


def _time_to(rows: list[tuple[float, float]], target: float) -> float:
    return next((t for t, m in rows if m <= target), float("inf"))


def report(out: Path, seeds: list[int]) -> str:
    """The Markdown table of every finished pair in ``out`` (pairs with missing runs are
    skipped)."""
    lines = ["| pair (A / B) | seed | final A (best) | final B (best) | time to the worse best, "
             "A / B | machine probe ms, A; B |", "|---|---|---|---|---|---|"]
    for (la, _), (lb, _) in PAIRS:
        for s in seeds:
            a, b = out / la / f"seed{s}", out / lb / f"seed{s}"
            if not ((a / "summary.json").is_file() and (b / "summary.json").is_file()):
                continue
            ra, rb = _rows(a), _rows(b)
            best_a, best_b = min(m for _, m in ra), min(m for _, m in rb)
            target = max(best_a, best_b)
            ratio = _time_to(ra, target) / _time_to(rb, target)
            probes = [json.loads((d / "summary.json").read_text()).get("machine_probe_ms")
                      for d in (a, b)]
            probe_text = "; ".join("–" if p is None else ", ".join(f"{x:.1f}" for x in p)
                                   for p in probes)
            lines.append(f"| `{la}` / `{lb}` | {s} | {ra[-1][1]:.2e} ({best_a:.2e}) | "
                         f"{rb[-1][1]:.2e} ({best_b:.2e}) | {ratio:.2f}× | {probe_text} |")
    return "\n".join(lines) + "\n"


def run(out: Path, seeds: list[int], problem: str = "burgers",
        pairs: list[int] | None = None) -> None:
    """Run the chosen pairs (indices into :data:`PAIRS`, default all) for each seed, A then B,
    on ``problem``, and write ``out/report.md``."""
    exe = str(Path(sys.executable).with_name("mldd"))
    chosen = [PAIRS[i] for i in (pairs if pairs is not None else range(len(PAIRS)))]
    for s in seeds:
        for pair in chosen:
            for label, args in pair:
                cmd = [exe, "train", "--problem", problem, *COMMON, *args, "--seed", str(s),
                       "--out", str(out / label / f"seed{s}")]
                print(" ".join(cmd), flush=True)
                subprocess.run(cmd, check=True)
    (out / "report.md").write_text(report(out, seeds))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    r.add_argument("--problem", default="burgers")
    r.add_argument("--pairs", type=int, nargs="+", default=None,
                   help="indices into PAIRS (default: all)")
    q = sub.add_parser("report")
    q.add_argument("out", type=Path)
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    args = p.parse_args()
    if args.cmd == "run":
        run(args.out, args.seeds, args.problem, args.pairs)
    else:
        print(report(args.out, args.seeds), end="")


if __name__ == "__main__":
    main()
