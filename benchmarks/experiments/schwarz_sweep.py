"""Side-by-side runs of Schwarz (ASPQN/MSPQN) configurations against L-BFGS on a PINN.

Every configuration is trained by :func:`mldd.train.run.train` (the benchmark's trainer and timing
rule: training time excludes metric evaluation), back to back in one process, same problem
object, same seed (same initial weights), same thread count. The report gives, per
configuration, the error at the budget (the last logged row with ``time_s <= budget``), the best
error, the time to reach the reference configuration's best in-budget error, the gradient
evaluations (fine-gradient equivalents) and the time per outer iteration.

Usage (from the repository root)::

    .venv/bin/python benchmarks/experiments/schwarz_sweep.py --out /tmp/schwarz \\
        --problem burgers --n-collocation 2000 --budget 60 --threads 1 \\
        h3=torch-lbfgs:history=3 h50=torch-lbfgs:history=50 \\
        mspqn-k10=mspqn:local_iters=10,memory=10

A configuration is ``label=method[:key=value,...]``; values are parsed as Python literals
(``True``, ``3``, ``1e-3``, ``'subspace'``) and fall back to strings. ``--reference LABEL``
picks the run whose best in-budget error is the target (default: the first). ``--repeat R``
runs the whole list R times, interleaved (``label#r``). Results: ``<out>/<label>/`` run
directories and ``<out>/report.md`` / ``<out>/report.json``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from mldd.train.config import ComponentConfig, RunConfig
from mldd.train.run import build_problem, train


def parse_config(text: str) -> tuple[str, str, dict[str, Any]]:
    """``label=method:k=v,k=v`` → ``(label, method, options)``."""
    label, _, rest = text.partition("=")
    method, _, opts = rest.partition(":")
    if not label or not method:
        raise SystemExit(f"bad configuration {text!r}; expected label=method[:key=value,...]")
    options: dict[str, Any] = {}
    for item in filter(None, opts.split(",")):
        key, _, value = item.partition("=")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return label, method, options


def at_budget(rows: list[dict[str, Any]], budget: float, metric: str) -> dict[str, Any]:
    """The last logged row within the budget."""
    inside = [r for r in rows if float(r["time_s"]) <= budget + 1e-9]
    return inside[-1] if inside else rows[0]


def first_time(rows: list[dict[str, Any]], target: float, metric: str) -> float:
    """First logged training time at which ``metric <= target`` (inf if never)."""
    for r in rows:
        v = float(r[metric])
        if math.isfinite(v) and v <= target:
            return float(r["time_s"])
    return math.inf


def fmt(v: float, spec: str = ".2e") -> str:
    return "never" if v == math.inf else ("-" if not math.isfinite(v) else format(v, spec))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("configs", nargs="+", help="label=method[:key=value,...]")
    ap.add_argument("--out", required=True)
    ap.add_argument("--problem", default="burgers")
    ap.add_argument("--n-collocation", type=int, default=2000)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--log-every", type=float, default=1.0)
    ap.add_argument("--reference", default=None, help="label whose best error is the target")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], help="problem option key=value")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    configs = [parse_config(c) for c in args.configs]
    popts: dict[str, Any] = {"n_collocation": args.n_collocation}
    for item in args.set:
        k, _, v = item.partition("=")
        try:
            popts[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            popts[k] = v

    def cfg_for(label: str, method: str, options: dict[str, Any]) -> RunConfig:
        return RunConfig(problem=ComponentConfig(args.problem, dict(popts)),
                         method=ComponentConfig(method, dict(options)), budget_s=args.budget,
                         seed=args.seed, threads=args.threads, log_every=args.log_every,
                         out=str(out / label))

    problem = build_problem(cfg_for("x", configs[0][1], configs[0][2]))
    metric = problem.metric_name
    problem.metric(problem.build_model(0))  # build the reference once, outside every timing
    runs: dict[str, dict[str, Any]] = {}
    for r in range(args.repeat):
        for label, method, options in configs:
            name = label if args.repeat == 1 else f"{label}#{r}"
            t0 = time.perf_counter()
            outcome = train(cfg_for(name, method, options), progress=False, plots=False,
                            problem=problem)
            res = outcome.result
            runs[name] = {"label": label, "method": method, "options": options,
                          "rows": res.rows, "time_s": res.time_s, "iterations": res.iterations,
                          "grad_evals": res.grad_evals, "stop": res.stop_reason}
            row = at_budget(res.rows, args.budget, metric)
            print(f"{name:28s} {metric} {float(row[metric]):.3e} at {float(row['time_s']):6.1f}s"
                  f"  best {res.best_metric:.3e}  iters {res.iterations}  ge {res.grad_evals}"
                  f"  ({time.perf_counter() - t0:.0f}s wall)", file=sys.stderr, flush=True)

    ref = args.reference or configs[0][0]
    ref_runs = [v for v in runs.values() if v["label"] == ref]
    target = min(min(float(r[metric]) for r in v["rows"] if float(r["time_s"]) <= args.budget)
                 for v in ref_runs)
    table = []
    for name, v in runs.items():
        rows = v["rows"]
        row = at_budget(rows, args.budget, metric)
        best = min(float(r[metric]) for r in rows if float(r["time_s"]) <= args.budget)
        t_target = first_time(rows, target, metric)
        t_ref = first_time(ref_runs[0]["rows"], target, metric) if ref_runs else math.nan
        table.append({
            "name": name, "method": v["method"], "options": v["options"],
            "at_budget": float(row[metric]), "best_in_budget": best,
            "loss_at_budget": float(row["loss"]),
            "time_to_target": t_target,
            "speedup": (t_ref / t_target) if t_target not in (0.0, math.inf) else math.nan,
            "grad_evals_at_budget": float(row["grad_evals"]),
            "iterations": v["iterations"], "time_s": v["time_s"],
            "ms_per_iter": 1000.0 * v["time_s"] / max(v["iterations"], 1),
            "stop": v["stop"],
        })
    lines = [
        f"# {args.problem}, {args.n_collocation} points, budget {args.budget:g} s, "
        f"{args.threads} thread(s), seed {args.seed}",
        "",
        f"Target: best in-budget {metric} of `{ref}` = {target:.3e}.",
        "",
        f"| config | {metric} at budget | best | time to target (s) | speed-up vs {ref} | "
        "grad evals | iters | ms/iter |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in table:
        lines.append(
            f"| {t['name']} | {fmt(t['at_budget'])} | {fmt(t['best_in_budget'])} | "
            f"{fmt(t['time_to_target'], '.1f')} | {fmt(t['speedup'], '.2f')} | "
            f"{t['grad_evals_at_budget']:.0f} | {t['iterations']} | {t['ms_per_iter']:.0f} |")
    report = "\n".join(lines) + "\n"
    (out / "report.md").write_text(report)
    (out / "report.json").write_text(json.dumps({"target": target, "table": table},
                                                indent=1, default=str))
    print(report)
    return {"target": target, "table": table}


if __name__ == "__main__":
    main()
