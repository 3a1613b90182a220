"""RMTR vs single-level TrustRegion at equal cost (fine-gradient equivalents), one process.

Usage (from the repository root)::

    .venv/bin/python benchmarks/experiments/multilevel_rmtr.py digits --budget 150
    .venv/bin/python benchmarks/experiments/multilevel_rmtr.py burgers --budget 150 \\
        --problem-options "{'n_collocation': 10000}" --metric-every 10

Every method starts from the same seeded network; after each step the script records the cost
(fine-gradient equivalents, docs/algorithms.md §1.5), the wall time of the optimizer's own steps
(interleaved in one process, one torch thread), the full training loss and, every
``--metric-every`` steps, the problem's metric. The target is the loss (and the metric) the
single-level trust-region method reaches within the budget; the tables give each method's cost
and time to reach it and the ratios to TrustRegion.

``--horizons 75,150,300`` adds the speed-up to the baseline's best within each budget (a lead
that exists only early shows up as such); ``--seed`` seeds the network; ``--save PATH`` writes
the traces, ``--load PATH...`` prints the tables of saved ones (run the baseline and RMTR in two
processes at once, then tabulate; ``benchmarks/results/rmtr-horizon/NOTE.md``).

``--configs`` picks a subset of :data:`CONFIGS` (comma-separated names); ``--extra NAME=DICT``
adds an RMTR configuration given as a Python dict of keyword arguments of
:class:`mldd.optim.RMTR`; ``--tr DICT`` sets the baseline's keyword arguments. The session-11
run with the L-BFGS-50 model on every level (the paper's 8×20 Burgers network)::

    .venv/bin/python benchmarks/experiments/multilevel_rmtr.py burgers --budget 400 \
        --problem-options "{'network': 'mlp', 'width': 20, 'depth': 8}" \
        --tr "{'hessian': 'lbfgs', 'memory': 50}" --configs TR --metric-every 10 \
        --extra "rmtr-d8-lb50={'levels': 2, 'coarsen': 'data', 'hessian': 'lbfgs', \
                 'memory': 50, 'hierarchy_options': {'data_ratio': 0.125}}"
"""

from __future__ import annotations

import argparse
import ast
import functools
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multilevel_common import (
    Trace,
    eval_loss,
    horizon_table,
    load_traces,
    metric_table,
    run,
    save_traces,
    table,
)

import mldd.problems
from mldd.optim import RMTR, TrustRegion

#: Network per problem (ResidualMLP, float64): deep enough that depth levels are cheaper.
NETWORKS: dict[str, dict[str, Any]] = {
    "digits": {"width": 16, "depth": 33, "dtype": "float64"},
    "mnist5k": {"width": 32, "depth": 9, "dtype": "float64"},
    "burgers": {"network": "resmlp", "width": 20, "depth": 9, "n_collocation": 10_000},
    "allen-cahn": {"network": "resmlp", "width": 20, "depth": 9, "n_collocation": 10_000},
    # the paper's 6 × 50 MLP: only data levels apply to it
    "klein-gordon": {"n_collocation": 10_000},
}

#: Named RMTR configurations (keyword arguments of mldd.optim.RMTR); "TR" is the baseline.
CONFIGS: dict[str, dict[str, Any]] = {
    "TR": {},
    "rmtr-depth3": {"levels": 3, "coarsen": "depth"},
    "rmtr-data2": {"levels": 2, "coarsen": "data", "hierarchy_options": {"data_ratio": 0.125}},
    # the coarse level's rows double (up to half of the points) once 2 of its last 3
    # corrections were rejected (RowGrowth; benchmarks/results/rmtr-horizon/NOTE.md)
    "rmtr-data2-grow": {"levels": 2, "coarsen": "data", "row_growth": True,
                        "hierarchy_options": {"data_ratio": 0.125}},
    # no fine smoothing step after the coarse correction: one fine evaluation per cycle
    # (Klein–Gordon, benchmarks/results/rmtr-horizon/NOTE.md, session 18)
    "rmtr-data2-ps0": {"levels": 2, "coarsen": "data", "post_smoothing": 0,
                       "hierarchy_options": {"data_ratio": 0.125}},
    "rmtr-data2-16": {"levels": 2, "coarsen": "data", "hierarchy_options": {"data_ratio": 0.0625}},
    "rmtr-data3": {"levels": 3, "coarsen": "data", "hierarchy_options": {"data_ratio": 0.25}},
    "rmtr-depth+data2": {"levels": 2, "coarsen": "depth+data",
                         "hierarchy_options": {"data_ratio": 0.125}},
    "rmtr-depth3-hybrid": {"levels": 3, "coarsen": "depth", "coarse_model": "hybrid"},
    "rmtr-data2-hybrid": {"levels": 2, "coarsen": "data", "coarse_model": "hybrid",
                          "hierarchy_options": {"data_ratio": 0.125}},
    # the defaults before this study (GST08-style: coarse memory reset every visit, 2 coarse
    # trials stopping after 1 success, one shared fine radius, 3+3 smoothing trials)
    "rmtr-depth3-old": {"levels": 3, "coarsen": "depth", "pre_smoothing": 3,
                        "post_smoothing": 3, "coarse_iterations": 2, "coarse_successes": 1,
                        "coarse_memory": "reset", "coarse_radius": "fine",
                        "correction_radius": "shared"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("problem", choices=sorted(NETWORKS))
    ap.add_argument("--budget", type=float, default=150.0,
                    help="fine-gradient equivalents per method")
    ap.add_argument("--configs", default="TR,rmtr-depth3,rmtr-data2,rmtr-depth3-old")
    ap.add_argument("--extra", action="append", default=[], metavar="NAME=DICT")
    ap.add_argument("--problem-options", default="{}", help="dict overriding NETWORKS[problem]")
    ap.add_argument("--metric-every", type=int, default=1, help="0: no metric")
    ap.add_argument("--time-limit", type=float, default=170.0, help="seconds per method")
    ap.add_argument("--tr", default="{}", metavar="DICT",
                    help="keyword arguments of the TrustRegion baseline, e.g. "
                         "\"{'hessian': 'lbfgs', 'memory': 50}\"")
    ap.add_argument("--seed", type=int, default=0, help="seed of the network's initialisation")
    ap.add_argument("--save", metavar="PATH", help="write the runs' traces (JSON) here")
    ap.add_argument("--load", nargs="+", metavar="PATH",
                    help="run nothing: print the tables of traces saved with --save (e.g. a "
                         "baseline and an RMTR run made in two processes at once)")
    ap.add_argument("--horizons", default="", metavar="B1,B2,...",
                    help="also print the speed-up to the baseline's best within each budget")
    args = ap.parse_args()
    horizons = [float(b) for b in args.horizons.split(",") if b]
    if args.load:
        prob = mldd.problems.get(args.problem, **{**NETWORKS[args.problem],
                                                  **ast.literal_eval(args.problem_options)})
        report(load_traces(args.load), prob, horizons, bool(args.metric_every))
        return

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    opts = {**NETWORKS[args.problem], **ast.literal_eval(args.problem_options)}
    prob = mldd.problems.get(args.problem, **opts)
    n_rows = prob.n_rows(None)
    loss_of = eval_loss(lambda m: prob.loss(m))
    runner = functools.partial(run, time_limit=args.time_limit)
    if args.metric_every:
        runner = functools.partial(runner, metric=prob.metric, metric_every=args.metric_every)

    configs = {name: CONFIGS[name] for name in args.configs.split(",") if name}
    for item in args.extra:
        name, spec = item.split("=", 1)
        configs[name] = ast.literal_eval(spec)
    print(f"# {args.problem} {opts}, budget {args.budget:g} fine-gradient equivalents, "
          "1 torch thread")
    traces = []
    for name, kw in configs.items():
        model = prob.build_model(seed=args.seed)
        if name == "TR":
            opt: Any = TrustRegion(model.parameters(), **ast.literal_eval(args.tr))
            traces.append(runner(name, model, opt, lambda m=model: prob.loss(m), loss_of,
                                 args.budget))
            continue
        kw = dict(kw)
        data = "data" in str(kw.get("coarsen", ""))
        opt = RMTR(model.parameters(), model=model, n_rows=n_rows if data else None, **kw)
        if data:
            def closure(m: torch.nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
                return prob.loss(m, prob.select_rows(None, rows))
        else:
            def closure(m: torch.nn.Module) -> torch.Tensor:  # type: ignore[misc]
                return prob.loss(m)
        trace = runner(name, model, opt, closure, loss_of, args.budget)
        info = opt.last_info
        print(f"{name}: cycles {info['cycle']}, coarse accepted/rejected/skipped "
              f"{info['n_coarse_accepted']}/{info['n_coarse_rejected']}/"
              f"{info['n_coarse_skipped']}, evaluations per level "
              f"{[lev['n_g'] for lev in info['levels']]}, cost shares "
              f"{[round(float(lev.cost or 0), 3) for lev in opt.hierarchy or []]}", flush=True)
        traces.append(trace)
    if args.save:
        save_traces(args.save, traces)
    report(traces, prob, horizons, bool(args.metric_every))


def report(traces: list[Trace], prob: Any, horizons: list[float], metric: bool) -> None:
    """Print the tables; the baseline is the run named "TR" (else the first)."""
    ref = next((tr for tr in traces if tr.name == "TR"), traces[0])
    print("\nBy training loss (target: the final loss of the baseline)")
    print(table(traces, ref.final, ref))
    if metric:
        print(f"\nBy {prob.metric_name}")
        print(metric_table(traces, prob.higher_is_better, ref))
    if horizons:
        print("\nBy training loss, per budget: the baseline's cost to its best loss within the "
              "budget ÷ each method's (time ratio in brackets)")
        print(horizon_table(traces, ref, horizons))
        if metric:
            print(f"\nThe same by {prob.metric_name}")
            print(horizon_table(traces, ref, horizons, by_metric=True,
                                higher_is_better=prob.higher_is_better))


if __name__ == "__main__":
    main()
