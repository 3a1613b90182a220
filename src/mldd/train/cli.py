"""The ``mldd`` command line.

::

    mldd train --problem burgers --method trust-region --budget 60 --out runs/tr
    mldd train --config run.yaml --set method.lr=1e-2 --set problem.n_collocation=2000
    mldd bench default --out benchmarks/results/latest [--budget S] [--seeds N] [--quick]
    mldd plot DIR
    mldd problems
    mldd methods

Bad input (unknown names, bad options, missing files) ends with one line on stderr and exit
code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from mldd.train.callbacks import format_evals
from mldd.train.user_modules import import_user_modules

EXIT_USAGE = 2


class UsageError(Exception):
    """Bad command-line input (exit code 2, one line)."""


def _console() -> Console:
    # Built per call so that output follows the current sys.stdout (tests capture it).
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train one method on one problem",
                       description="Train one method on one problem; writes a run directory.")
    p.add_argument("--problem", help="problem name (see `mldd problems`)")
    p.add_argument("--method", help="method name (see `mldd methods`)")
    p.add_argument("--config", help="YAML or TOML config file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, dotted keys: method.lr=1e-3, "
                   "method.hierarchy_options.data_ratio=0.125 (repeatable)")
    p.add_argument("--budget", type=float, dest="budget_s",
                   help="training-time budget in seconds (default 60)")
    p.add_argument("--max-grad-evals", type=int, help="gradient-evaluation budget")
    p.add_argument("--max-iters", type=int, help="iteration budget")
    p.add_argument("--target", type=float, help="stop when the metric reaches this value")
    p.add_argument("--out", help="run directory (default runs/<problem>_<method>; with "
                   "--config, the config's out, else runs/latest)")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default 2)")
    p.add_argument("--dtype", choices=["float32", "float64"])
    p.add_argument("--log-every", type=float, help="seconds between metrics rows (default 2)")
    p.add_argument("--checkpoint-every", type=float, help="seconds between checkpoints")
    p.add_argument("--resume", help="continue from this checkpoint.pt")
    p.add_argument("--no-plots", action="store_true", help="do not write PNG plots")
    # --nproc N > 1 re-launches through torchrun (mldd.train.launch), without --nproc.
    p.add_argument("--nproc", type=int, default=1,
                   help="processes: N > 1 runs N torch.distributed workers through torchrun "
                   "(gloo on CPU), sharing --threads among them; rank 0 writes the run directory")


def _add_bench(sub: Any) -> None:
    from mldd.train.suites import available_suites

    p = sub.add_parser("bench", help="run a benchmark suite",
                       description="Run methods × problems × seeds at an equal wall-clock "
                       f"budget. Suites: core, parallel, {', '.join(available_suites())}.")
    names = ", ".join(["core", "parallel", *available_suites()])
    p.add_argument("suite", help=f"suite name ({names}); "
                   "'core' measures the optimizers themselves (L-BFGS vs torch, overhead); "
                   "'parallel' the parallel efficiency of ASPQN on --nproc processes "
                   "(--methods aspqn,aspqn-sweep,apts)")
    p.add_argument("--nproc", type=int, default=2, help="processes for 'parallel' (default 2)")
    p.add_argument("--threads", type=int,
                   help="torch threads per run (overrides the suite's; 'core' default 2)")
    p.add_argument("--out", help="output directory (default benchmarks/results/<suite>)")
    p.add_argument("--budget", type=float, help="per-run budget in seconds (overrides the suite)")
    p.add_argument("--seeds", type=int, help="number of seeds (overrides the suite)")
    p.add_argument("--quick", action="store_true",
                   help="divide budgets by the suite's factor (10 for most suites), fewer "
                   "collocation points")
    p.add_argument("--problems", help="comma-separated subset of the suite's problems")
    p.add_argument("--methods", help="comma-separated subset of the suite's method labels")
    p.add_argument("--reuse", action="store_true",
                   help="keep runs already finished in --out with the same config")
    p.add_argument("--jobs", type=int,
                   help="runs at a time, in worker processes (default: the suite's, else 1)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-ceiling", action="store_true",
                   help="'parallel': skip the --nproc concurrent serial copies that measure the "
                   "machine's ceiling")


def _csv(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for documentation and tests)."""
    parser = argparse.ArgumentParser(prog="mldd", description="Train and benchmark with mldd.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    parser.add_argument("--import", dest="imports", action="append", default=[],
                        metavar="MODULE|FILE.py", help=_IMPORT_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_bench(sub)
    p = sub.add_parser("plot", help="re-draw the plots of a run or bench directory")
    p.add_argument("dir")
    sub.add_parser("problems", help="list the problems")
    sub.add_parser("methods", help="list the methods")
    for sp in sub.choices.values():
        # Also after the subcommand (`mldd train -q ...`); SUPPRESS keeps the top-level value
        # when the subcommand's flag is absent.
        sp.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show tracebacks")
        sp.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress output")
        sp.add_argument("--import", dest="more_imports", action="append", default=[],
                        metavar="MODULE|FILE.py", help=_IMPORT_HELP)
    return parser


_IMPORT_HELP = ("import a Python module or file first (repeatable): its mldd.problems.register / "
                "mldd.train.register_method calls make your own problems and methods available "
                "by name, e.g. --import examples/custom_pde.py --problem heat1d")


def _cmd_train(args: argparse.Namespace) -> int:
    from mldd.train.config import dump_yaml, resolve
    from mldd.train.run import train

    if args.nproc < 1:
        raise UsageError(f"--nproc must be >= 1, got {args.nproc}")
    base = {
        "problem": args.problem,
        "method": args.method,
        "budget_s": args.budget_s,
        "max_grad_evals": args.max_grad_evals,
        "max_iters": args.max_iters,
        "target": args.target,
        "seed": args.seed,
        "threads": args.threads,
        "dtype": args.dtype,
        "log_every": args.log_every,
        "checkpoint_every": args.checkpoint_every,
        "out": args.out,
    }
    cfg = resolve(args.config, args.overrides, base)
    if args.out is None and not any(o.split("=", 1)[0] == "out" for o in args.overrides) and (
        args.config is None
    ):
        cfg.out = str(Path("runs") / f"{cfg.problem.name}_{cfg.method.name}")
    if args.resume is not None and not Path(args.resume).is_file():
        raise UsageError(f"checkpoint not found: {args.resume}")
    # --- multi-process runs (mldd.train.launch): launch N workers, or be one of them.
    from mldd.train.launch import is_main_process, relaunch, train_worker, world_size

    distributed = world_size() > 1
    if args.nproc > 1 and not distributed:
        return relaunch(args.argv, args.nproc, threads=cfg.threads)
    run_fn = train_worker if distributed else train
    main_process = is_main_process()
    quiet = args.quiet or not main_process
    # --- end multi-process
    con = _console()
    if not quiet:
        con.print(f"[bold]mldd train[/bold] → {cfg.out}")
        # Text the program did not write (YAML lists, report tables): no rich markup, which
        # would swallow "[min, max]"-like brackets.
        con.print(dump_yaml(cfg).rstrip(), markup=False, highlight=False)
    outcome = run_fn(cfg, progress=not quiet, plots=not args.no_plots, resume=args.resume)
    if not main_process:
        return 0
    s = outcome.summary
    con.print(
        f"[bold]{s['problem']} / {s['method']}[/bold]: {s['metric']} final "
        f"{_num(s['final_metric'])}, best {_num(s['best_metric'])}; "
        f"{s['iterations']} iterations, {format_evals(s['grad_evals'])} gradient evaluations in "
        f"{s['time_s']:.1f} s ({_num(s['ms_per_grad_eval'])} ms each); stop: {s['stop_reason']}"
    )
    con.print(f"wrote {outcome.out}/{{config.yaml, metrics.csv, model.pt, summary.json}}")
    if s["stop_reason"] == "nonfinite_loss":
        sys.stderr.write("mldd train: warning: the loss became NaN/Inf and the run stopped there "
                         "(a learning rate too large?)\n")
    return 0


def _num(x: Any) -> str:
    return "–" if x is None else f"{x:.4g}"


def _cmd_bench_core(args: argparse.Namespace) -> int:
    from mldd.perf.core import run_core_benchmark

    _bench_checks(args)
    out = Path(args.out or Path("benchmarks") / "results" / "core")
    run_core_benchmark(out, threads=2 if args.threads is None else args.threads,
                       quick=args.quick)
    con = _console()
    con.print((out / "report.md").read_text(), markup=False, highlight=False)
    con.print(f"wrote {out / 'report.md'}")
    return 0


#: ``mldd bench parallel --methods`` labels that are a registered method with options.
_PARALLEL_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "aspqn-sweep": ("aspqn", {"local_sweep": True}),
}


def _cmd_bench_parallel(args: argparse.Namespace) -> int:
    from mldd.perf.parallel import format_parallel, measure_parallel_efficiency

    _bench_checks(args)
    if args.nproc < 2:
        raise UsageError(f"--nproc must be >= 2 for 'parallel', got {args.nproc}")
    out = Path(args.out or Path("benchmarks") / "results" / "parallel")
    problems = _csv(args.problems) or ["burgers"]
    methods = _csv(args.methods) or ["aspqn"]
    popts: dict[str, Any] = {"n_collocation": 2000} if args.quick else {}
    sections = ["# Parallel efficiency (`mldd bench parallel`)", ""]
    con = _console()
    for problem in problems:
        for label in methods:
            method, mopts = _PARALLEL_VARIANTS.get(label, (label, {}))
            if not args.quiet:
                con.print(f"  {problem} / {label}: serial, then {args.nproc} processes …")
            r = measure_parallel_efficiency(method=method, problem=problem, problem_options=popts,
                                            method_options=mopts, nproc=args.nproc,
                                            outer_iters=2 if args.quick else 3,
                                            baseline=not args.no_ceiling)
            sections += [format_parallel(r), ""]
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text("\n".join(sections))
    con.print((out / "report.md").read_text(), markup=False, highlight=False)
    con.print(f"wrote {out / 'report.md'}")
    return 0


def _bench_checks(args: argparse.Namespace) -> None:
    if args.budget is not None and args.budget <= 0:
        raise UsageError(f"--budget must be positive, got {args.budget}")
    if args.seeds is not None and args.seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {args.seeds}")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")


def _on_run_printer(args: argparse.Namespace) -> Any:
    con = _console()

    def on_run(rec: dict[str, Any]) -> None:
        if args.quiet:
            return
        s = rec.get("summary")
        if s is None:
            con.print(f"  {rec['problem']} / {rec['label']} seed {rec['seed']}: [red]failed[/red] "
                      f"({rec['error']})")
        else:
            con.print(f"  {rec['problem']} / {rec['label']} seed {rec['seed']}: {s['metric']} "
                      f"final {_num(s['final_metric'])}, best {_num(s['best_metric'])}, "
                      f"{format_evals(s['grad_evals'])} evals, stop {s['stop_reason']}")

    return on_run


def _cmd_bench_paper(args: argparse.Namespace) -> int:
    from mldd.train.paper import run_paper

    _bench_checks(args)
    out = Path(args.out or Path("benchmarks") / "results" / ("paper-quick" if args.quick
                                                              else "paper"))
    try:
        report = run_paper(out, quick=args.quick, seeds=args.seeds, jobs=args.jobs,
                           budget_s=args.budget, reuse=args.reuse, progress=not args.quiet,
                           problems=_csv(args.problems), methods=_csv(args.methods),
                           on_run=_on_run_printer(args), threads=args.threads)
    except ValueError as e:
        raise UsageError(str(e)) from None
    _console().print(f"wrote {report} and its plots")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from mldd.train.bench import run_suite
    from mldd.train.suites import filter_suite, get_suite

    if args.suite == "core":
        return _cmd_bench_core(args)
    if args.suite == "parallel":
        return _cmd_bench_parallel(args)
    if args.suite == "paper":
        return _cmd_bench_paper(args)
    get_suite(args.suite)  # unknown names fail before anything runs
    out = Path(args.out or Path("benchmarks") / "results" / args.suite)
    _bench_checks(args)
    con = _console()
    on_run = _on_run_printer(args)

    try:
        spec = filter_suite(get_suite(args.suite), _csv(args.problems), _csv(args.methods))
    except ValueError as e:
        raise UsageError(str(e)) from None
    spec["name"] = args.suite
    run_suite(spec, out, budget_s=args.budget, seeds=args.seeds, quick=args.quick,
              progress=not args.quiet, plots=not args.no_plots, on_run=on_run, reuse=args.reuse,
              jobs=args.jobs, threads=args.threads)
    con.print(f"wrote {out / 'report.md'}")
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from mldd.train.plots import plot_dir

    d = Path(args.dir)
    if (d / "bench.json").is_file():
        from mldd.train.report import write_report

        if json.loads((d / "bench.json").read_text()).get("suite") == "paper":
            from mldd.train.paper import write_paper_report

            write_paper_report(d)
        else:
            write_report(d)
    paths = plot_dir(d)
    con = _console()
    for p in paths:
        con.print(f"wrote {p}")
    return 0


def _cmd_problems(args: argparse.Namespace) -> int:
    import mldd.problems as problems

    table = Table(title="mldd problems")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, desc in problems.describe_all().items():
        table.add_row(name, desc)
    _console().print(table)
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    from mldd.train.methods import available_methods, get_method

    table = Table(title="mldd methods")
    table.add_column("name", style="bold")
    table.add_column("batch")
    table.add_column("options")
    table.add_column("description")
    for name in available_methods():
        spec = get_method(name)
        table.add_row(name, "full" if spec.full_batch else "mini", ", ".join(spec.allowed()),
                      spec.description)
    _console().print(table)
    return 0


_COMMANDS = {
    "train": _cmd_train,
    "bench": _cmd_bench,
    "plot": _cmd_plot,
    "problems": _cmd_problems,
    "methods": _cmd_methods,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``mldd`` script; returns the exit code."""
    from mldd.train.config import ConfigError
    from mldd.train.methods import MethodError

    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # for `train --nproc N`
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                            format="%(message)s", stream=sys.stderr)
    try:
        try:
            import_user_modules([*args.imports, *getattr(args, "more_imports", [])])
        except ImportError as exc:
            raise UsageError(str(exc)) from exc
        return _COMMANDS[args.command](args)
    except (UsageError, ConfigError, MethodError, KeyError, FileNotFoundError, ValueError) as exc:
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
        sys.stderr.write(f"mldd {args.command}: error: {msg}\n")
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
