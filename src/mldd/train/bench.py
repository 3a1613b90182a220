"""The benchmark harness: methods × problems × seeds at an equal wall-clock budget.

Single-process runs go in-process one after the other, or with ``jobs > 1`` to a pool of
spawned worker processes, several at a time; runs with ``nproc > 1`` are launched afterwards as
``mldd train --nproc N`` subprocesses, one at a time. Each run sets the thread count and seeds,
and builds a fresh model from the seed, so every method starts from the same initial weights for
a given seed.
Each run writes a normal run directory ``OUT/runs/<problem>/<label>/seed<k>/``; the harness
writes ``OUT/bench.json`` (the index of runs), ``OUT/report.md`` and PNG plots. A run that fails
(e.g. a method whose optimizer is not installed) is recorded with its error and the suite goes on.
"""

from __future__ import annotations

import json
import logging
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mldd.train.config import ComponentConfig, RunConfig, dump_yaml, problem_parameters
from mldd.train.suites import check_suite, filter_suite, get_suite
from mldd.train.user_modules import IMPORTED, import_user_modules

logger = logging.getLogger("mldd.bench")


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", text)


def expand_methods(methods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Expand ``lr_grid`` entries into one run entry per learning rate.

    Each expanded entry keeps ``group_label`` (the entry's label) and gets the label
    ``<label>-lr<lr>``.
    """
    out: list[dict[str, Any]] = []
    for m in methods:
        opts = dict(m.get("options") or {})
        grid = opts.pop("lr_grid", None)
        if grid:
            for lr in grid:
                out.append({**m, "options": {**opts, "lr": float(lr)},
                            "label": f"{m['label']}-lr{float(lr):g}", "group_label": m["label"]})
        else:
            out.append({**m, "options": opts, "group_label": m["label"]})
    return out


def _problem_options(
    name: str, options: dict[str, Any], quick: dict[str, Any] | None
) -> dict[str, Any]:
    opts = dict(options)
    if quick:
        try:
            names, var = problem_parameters(name)
        except KeyError:
            return opts
        for k, v in (quick.get("problem_options") or {}).items():
            # Only the problems that take the option get it (Poisson has collocation points,
            # digits does not).
            if var or k in names:
                opts.setdefault(k, v)
    return opts


def run_suite(
    suite: str | dict[str, Any],
    out: str | Path,
    *,
    budget_s: float | None = None,
    seeds: int | None = None,
    quick: bool = False,
    progress: bool = True,
    plots: bool = True,
    on_run: Callable[[dict[str, Any]], None] | None = None,
    problems: list[str] | None = None,
    methods: list[str] | None = None,
    reuse: bool = False,
    jobs: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run a suite and write ``out/bench.json``, ``out/report.md`` and plots.

    Args:
        suite: a suite name from :mod:`mldd.train.suites` or a suite dict.
        out: output directory.
        budget_s: per-run budget overriding the suite's.
        seeds: number of seeds overriding the suite's.
        quick: divide budgets by ``quick.budget_factor`` and apply ``quick.problem_options``.
        progress: per-run progress display (only when runs go one at a time).
        plots: write PNG plots.
        on_run: called with each run record as it finishes.
        problems: run only these problems of the suite (default: all).
        methods: run only these method labels of the suite (default: all).
        reuse: keep the result of a run whose directory already holds a ``summary.json`` written
            for exactly the same resolved config (so an interrupted or extended suite re-runs
            only what is missing).
        jobs: runs at a time (default: the suite's ``jobs``, else 1). With ``jobs > 1`` the
            single-process runs go to a pool of ``jobs`` worker processes, each run pinned to
            the suite's ``threads``; choose ``jobs × threads ≤ cores`` so that runs do not
            compete for a core. Multi-process entries (``nproc > 1``) run afterwards, alone.
        threads: torch threads per run, overriding the suite's ``threads`` (a multi-process
            entry shares them among its processes).

    Returns:
        The bench index (what ``bench.json`` holds).
    """
    import mldd.problems  # noqa: F401  (registers the problems)

    name = suite if isinstance(suite, str) else suite.get("name", "custom")
    spec = get_suite(suite) if isinstance(suite, str) else dict(suite)
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        spec["threads"] = int(threads)
    check_suite(spec)
    if problems is not None or methods is not None:
        spec = filter_suite(spec, problems, methods)
    quick_cfg = spec.get("quick") if quick else None
    factor = float(quick_cfg.get("budget_factor", 10)) if quick_cfg else 1.0
    budget = float(budget_s if budget_s is not None else spec["budget_s"]) / factor
    n_seeds = int(seeds if seeds is not None
                  else (quick_cfg or {}).get("seeds", spec.get("seeds", 1)))
    n_jobs = int(jobs if jobs is not None else spec.get("jobs", 1))
    if n_jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {n_jobs}")
    every = (quick_cfg or {}).get("log_every") or spec.get("log_every")
    log_every = float(every) if every else None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    group_budgets = [budget if budget_s is not None else float(g.get("budget_s", budget * factor))
                     / factor for g in spec["groups"]]
    plan = _plan(spec, out, group_budgets, n_seeds, log_every, quick_cfg)
    records: list[dict[str, Any]] = [rec for rec, _, _ in plan]

    def finish(rec: dict[str, Any], summary: dict[str, Any] | None, error: str | None) -> None:
        rec["summary"], rec["error"] = summary, error
        if error is not None:
            logger.warning("run %s/%s seed %d failed: %s", rec["problem"], rec["label"],
                           rec["seed"], error)
        if on_run is not None:
            on_run(rec)

    todo: list[tuple[dict[str, Any], RunConfig, int]] = []
    for rec, cfg, nproc in plan:
        previous = _finished_run(Path(cfg.out), cfg) if reuse else None
        if previous is not None:
            finish(rec, previous, None)
        else:
            todo.append((rec, cfg, nproc))
    single = [t for t in todo if t[2] == 1]
    multi = [t for t in todo if t[2] > 1]
    if n_jobs > 1 and len(single) > 1:
        _run_pool(single, n_jobs, finish)
    else:
        built: dict[str, Any] = {}
        for rec, cfg, _ in single:
            label = f"{rec['problem']}/{rec['label']}/s{rec['seed']}"
            finish(rec, *_run_one(cfg, progress, label, built))
    for rec, cfg, nproc in multi:
        try:
            finish(rec, _train_processes(cfg, nproc), None)
        except Exception as exc:  # a failing method must not end the suite
            finish(rec, None, f"{type(exc).__name__}: {exc}")
    started, elapsed = t_start, time.time() - t_start
    previous_index = out / "bench.json"
    if not todo and previous_index.is_file():
        # Every run was reused: the timing of the suite is that of the run that made them.
        old = json.loads(previous_index.read_text())
        started, elapsed = old.get("started", started), old.get("elapsed_s", elapsed)
    index = {
        "suite": name,
        "spec": spec,
        "budget_s": budget,
        "group_budgets_s": group_budgets,
        "seeds": n_seeds,
        "jobs": n_jobs,
        "quick": quick,
        "started": started,
        "elapsed_s": elapsed,
        "records": records,
    }
    (out / "bench.json").write_text(json.dumps(index, indent=2, default=_json_default))
    from mldd.train.report import write_report

    write_report(out)
    if plots:
        from mldd.train.plots import plot_bench

        plot_bench(out)
    return index


def _plan(
    spec: dict[str, Any],
    out: Path,
    budgets: list[float],
    n_seeds: int,
    log_every: float | None,
    quick_cfg: dict[str, Any] | None,
) -> list[tuple[dict[str, Any], RunConfig, int]]:
    """Every run of the suite in order: (record, config, processes)."""
    plan: list[tuple[dict[str, Any], RunConfig, int]] = []
    owner: dict[Path, int] = {}
    for gi, group in enumerate(spec["groups"]):
        runs = expand_methods(group["methods"])
        for pname, poptions in group["problems"].items():
            popts = _problem_options(pname, poptions or {}, quick_cfg)
            for seed in range(n_seeds):
                for entry in runs:
                    dtype = entry.get("dtype", spec.get("dtype"))
                    run_dir = out / "runs" / _safe(pname) / _safe(entry["label"]) / f"seed{seed}"
                    if owner.setdefault(run_dir, gi) != gi:
                        # Two groups would write the same run directory (and --reuse would
                        # mistake one's run for the other's).
                        raise ValueError(
                            f"suite groups {owner[run_dir]} and {gi} both run method label "
                            f"{entry['label']!r} on problem {pname!r}; give one of them "
                            "another label")
                    cfg = RunConfig(
                        problem=ComponentConfig(pname, dict(popts)),
                        method=ComponentConfig(entry["method"], dict(entry.get("options") or {})),
                        budget_s=budgets[gi],
                        seed=seed,
                        threads=int(spec.get("threads", 2)),
                        dtype=dtype,
                        # About 50 rows per run unless the suite fixes the interval.
                        log_every=log_every or min(2.0, max(0.05, budgets[gi] / 50.0)),
                        out=str(run_dir),
                    )
                    rec: dict[str, Any] = {
                        "group": gi,
                        "problem": pname,
                        "label": entry["label"],
                        "group_label": entry["group_label"],
                        "method": entry["method"],
                        "options": entry.get("options") or {},
                        "dtype": dtype,
                        "seed": seed,
                        "dir": str(run_dir.relative_to(out)),
                        "processes": int(entry.get("nproc", 1)),
                        "budget_s": budgets[gi],
                    }
                    plan.append((rec, cfg, int(entry.get("nproc", 1))))
    return plan


def _run_one(
    cfg: RunConfig, progress: bool, label: str, problems: dict[str, Any]
) -> tuple[dict[str, Any] | None, str | None]:
    """Train one run in this process: ``(summary, None)`` or ``(None, error message)``.

    ``problems`` caches the problems built so far, keyed by (name, options, dtype): building one
    (reference solution, collocation points) is done once per suite and process, not per run.
    """
    from mldd.train.run import build_problem, train

    key = json.dumps([cfg.problem.name, cfg.problem.options, cfg.dtype], sort_keys=True,
                     default=str)
    try:
        if key not in problems:
            problems[key] = build_problem(cfg)
        outcome = train(cfg, progress=progress, plots=False, problem=problems[key], label=label)
        return outcome.summary, None
    except Exception as exc:  # a failing method must not end the suite
        return None, f"{type(exc).__name__}: {exc}"


# The problems of a pool worker: a worker process lives for one suite only.
_WORKER_PROBLEMS: dict[str, Any] = {}


def _worker(cfg: RunConfig) -> tuple[dict[str, Any] | None, str | None]:
    """Pool entry point (module level so that it pickles)."""
    return _run_one(cfg, False, "", _WORKER_PROBLEMS)


def _run_pool(
    todo: list[tuple[dict[str, Any], RunConfig, int]],
    n_jobs: int,
    finish: Callable[[dict[str, Any], dict[str, Any] | None, str | None], None],
) -> None:
    """Run ``todo`` on ``n_jobs`` worker processes; ``finish`` each record as its run ends."""
    import concurrent.futures as cf
    import multiprocessing as mp

    # spawn, not fork: a forked child would inherit torch's thread pools of the parent.
    # Spawned workers import nothing of the parent: give them the user's --import modules.
    with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=mp.get_context("spawn"),
                                initializer=import_user_modules,
                                initargs=(list(IMPORTED),)) as pool:
        futures = {pool.submit(_worker, cfg): rec for rec, cfg, _ in todo}
        for fut in cf.as_completed(futures):
            rec = futures[fut]
            try:
                summary, error = fut.result()
            except Exception as exc:  # the worker process itself died
                summary, error = None, f"{type(exc).__name__}: {exc}"
            finish(rec, summary, error)


def _train_processes(cfg: RunConfig, nproc: int) -> dict[str, Any]:
    """Run ``cfg`` as ``mldd train --nproc N`` in a subprocess; return its summary.

    The suite's thread count is the *total*: each of the ``N`` workers gets ``threads // N``
    (:func:`mldd.train.launch.worker_threads`), so a parallel run uses the same cores as a
    serial one.
    """
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    launch_cfg = run_dir / "launch.yaml"
    dump_yaml(cfg, launch_cfg)
    imports = [a for name in IMPORTED for a in ("--import", name)]
    cmd = [sys.executable, "-m", "mldd.train.cli", "-q", *imports, "train", "--config",
           str(launch_cfg), "--nproc", str(nproc), "--no-plots"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    summary = run_dir / "summary.json"
    if proc.returncode != 0 or not summary.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise RuntimeError(f"{nproc}-process run failed (exit {proc.returncode}): "
                           + " | ".join(tail))
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


def _finished_run(run_dir: Path, cfg: RunConfig) -> dict[str, Any] | None:
    """The summary of a finished run in ``run_dir`` made with the same resolved config."""
    summary, config = run_dir / "summary.json", run_dir / "config.yaml"
    if not (summary.is_file() and config.is_file()):
        return None
    if config.read_text() != dump_yaml(cfg):
        return None
    data: dict[str, Any] = json.loads(summary.read_text())
    return data


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
