"""Parallel efficiency of the additive Schwarz methods: N processes against the serial executor.

docs/benchmarks.md, "Performance beyond convergence": the wall time per outer iteration of ``N``
processes (1 thread each) against the serial execution of the same subdomains (1 thread), and
the communication volume per outer iteration. Both runs start from the same weights and take the
same iterates (the distributed executor reproduces the serial one to rounding; the report shows
the largest difference), so the ratio measures the execution, not the algorithm::

    speed-up    S = T_serial / T_parallel
    efficiency  E = S / N                    (1 = ideal)

Processes are started like ``torchrun`` starts them (``MASTER_ADDR``/``MASTER_PORT``/``RANK``/
``WORLD_SIZE`` in the environment), and the optimizer is built by the method registry, exactly as
``mldd train --nproc N`` builds it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

__all__ = ["ParallelResult", "format_parallel", "measure_parallel_efficiency"]


@dataclass
class ParallelResult:
    """What :func:`measure_parallel_efficiency` measured.

    Attributes:
        method, problem, nproc, outer_iters: the set-up.
        serial_s, parallel_s: median seconds per outer iteration (after one warm-up iteration).
        speedup, efficiency: ``serial_s / parallel_s`` and ``speedup / nproc``.
        bytes_per_iter, collectives_per_iter: what one rank all-reduced per outer iteration.
        max_iterate_diff: largest ``|x_serial − x_parallel|`` over the measured iterates.
        subdomains_per_rank: how many subdomains each rank solved.
        data_parallel: whether the processes split the rows for the global phase
            (:mod:`mldd.decomposition.data_parallel`).
        options: method and problem options used.
        collective_s_per_rank: median seconds per outer iteration each rank spent inside
            collectives (transfers plus waiting for the slowest rank).
        work_inflation: ``Σ_r (T_parallel,r − C_r) / T_serial``, the ranks' summed compute time
            against the serial time (> 1: contention for memory bandwidth and caches, and
            work every rank repeats).
        idle_share: ``mean_r C_r / T_parallel``, the share of the parallel time spent in
            collectives. ``efficiency ≈ (1 − idle_share) / work_inflation``.
        copies_s: median seconds per iteration of ``nproc`` copies of the serial run at once
            (NaN without the baseline); see :attr:`ceiling`.
    """

    method: str
    problem: str
    nproc: int
    outer_iters: int
    serial_s: float
    parallel_s: float
    speedup: float
    efficiency: float
    bytes_per_iter: float
    collectives_per_iter: float
    max_iterate_diff: float
    subdomains_per_rank: list[int] = field(default_factory=list)
    data_parallel: bool = False
    options: dict[str, Any] = field(default_factory=dict)
    collective_s_per_rank: list[float] = field(default_factory=list)
    work_inflation: float = math.nan
    idle_share: float = math.nan
    copies_s: float = math.nan

    @property
    def ceiling(self) -> float:
        """``T_serial / T_copies``: the efficiency of a perfect split of the work when ``nproc``
        processes slow each other as much as ``nproc`` independent serial copies do here."""
        return self.serial_s / self.copies_s

    @property
    def efficiency_of_ceiling(self) -> float:
        """``efficiency / ceiling``: what the method's execution achieves of this machine's
        best."""
        return self.efficiency / self.ceiling


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(method: str, problem_name: str, problem_opts: dict[str, Any],
         method_opts: dict[str, Any], outer_iters: int, seed: int) -> dict[str, Any]:
    """Build problem, model and optimizer (registry), time ``outer_iters + 1`` steps."""
    import mldd.problems as problems
    from mldd.train.methods import build_optimizer

    torch.set_num_threads(1)
    problem = problems.get(problem_name, **problem_opts)
    model = problem.build_model(seed=seed)
    opt = build_optimizer(method, model.parameters(), problem, dict(method_opts),
                          {"model": model})
    ex = getattr(opt, "executor", None) or getattr(opt, "_executor", None)

    def closure(m: torch.nn.Module | None = None,
                rows: torch.Tensor | None = None) -> torch.Tensor:
        # The trainer's rows closure: data-parallel methods evaluate shards of the points.
        return problem.loss(model if m is None else m, problem.select_rows(None, rows))

    closure.n_rows = problem.n_rows(None)  # type: ignore[attr-defined]

    times: list[float] = []
    waits: list[float] = []
    iterates: list[list[float]] = []
    bytes0 = coll0 = 0
    for k in range(outer_iters + 1):
        if k == 1 and ex is not None:  # the warm-up iteration is not counted
            bytes0 = int(getattr(ex, "bytes_communicated", 0))
            coll0 = int(getattr(ex, "n_collectives", 0))
        if ex is not None and getattr(ex, "world_size", 1) > 1:
            ex.barrier()
        c0 = float(getattr(ex, "collective_s", 0.0))
        t0 = time.perf_counter()
        opt.step(closure)
        dt = time.perf_counter() - t0
        if k >= 1:
            times.append(dt)
            waits.append(float(getattr(ex, "collective_s", 0.0)) - c0)
        iterates.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).tolist())
    n_sub = len(opt.decomposition) if getattr(opt, "decomposition", None) is not None else 0
    solver = getattr(opt, "solver", None)
    if solver is not None and hasattr(solver, "owned"):
        owned = len(solver.owned)
    else:
        owned = len(ex.owns(n_sub)) if ex is not None and n_sub else n_sub
    return {
        "times": times,
        "collective_s": waits,
        "iterates": iterates,
        "bytes": int(getattr(ex, "bytes_communicated", 0)) - bytes0,
        "collectives": int(getattr(ex, "n_collectives", 0)) - coll0,
        "owned": owned,
        "data_parallel": bool(getattr(opt, "_data_parallel", False)),
    }


def _worker(rank: int, nproc: int, port: int, out_dir: str, args: tuple[Any, ...],
            distributed: bool = True) -> None:
    """One process of the parallel run, or (``distributed=False``) one of ``nproc`` independent
    serial copies run at the same time: the machine's ceiling for ``nproc`` processes."""
    if distributed:
        os.environ.update({
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
            "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc),
        })
    else:
        for key in ("WORLD_SIZE", "RANK"):
            os.environ.pop(key, None)
    os.environ["OMP_NUM_THREADS"] = "1"
    from mldd.decomposition.distributed import shutdown

    try:
        rec = _run(*args)
    finally:
        shutdown()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(rec))


def _spawn(nproc: int, args: tuple[Any, ...], distributed: bool,
           timeout_s: float) -> list[dict[str, Any]]:
    """Run :func:`_worker` in ``nproc`` fresh processes; their records, rank by rank."""
    with tempfile.TemporaryDirectory() as tmp:
        ctx = mp.start_processes(_worker, args=(nproc, _free_port(), tmp, args, distributed),
                                 nprocs=nproc, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout_s
        while not ctx.join(timeout=1.0):
            if time.monotonic() > deadline:
                for p in ctx.processes:
                    p.kill()
                raise RuntimeError(f"the {nproc}-process run exceeded {timeout_s:g} s")
        return [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(nproc)]


def measure_parallel_efficiency(
    *,
    method: str = "aspqn",
    problem: str = "burgers",
    problem_options: dict[str, Any] | None = None,
    method_options: dict[str, Any] | None = None,
    nproc: int = 2,
    outer_iters: int = 3,
    seed: int = 0,
    timeout_s: float = 1800.0,
    baseline: bool = True,
) -> ParallelResult:
    """Time ``outer_iters`` outer iterations serially and on ``nproc`` processes.

    Args:
        method: a registered method with ``distributed=True`` (``"aspqn"``, ``"apts"``).
        problem: a registered problem name.
        problem_options: its options (default: the problem's defaults).
        method_options: the method's options.
        nproc: number of processes (>= 2).
        outer_iters: measured outer iterations (one more runs first as a warm-up).
        seed: model seed (the same initial weights in both runs).
        timeout_s: the parallel run is killed after this long.
        baseline: also time ``nproc`` concurrent copies of the serial run, the machine's
            ceiling (:attr:`ParallelResult.ceiling`).

    Returns:
        A :class:`ParallelResult`.

    Raises:
        ValueError: for ``nproc < 2`` or ``outer_iters < 1``.
        RuntimeError: if a worker failed or timed out.
    """
    if nproc < 2:
        raise ValueError(f"nproc must be >= 2, got {nproc}")
    if outer_iters < 1:
        raise ValueError(f"outer_iters must be >= 1, got {outer_iters}")
    popts = dict(problem_options or {})
    mopts = dict(method_options or {})
    args = (method, problem, popts, mopts, outer_iters, seed)
    # The hybrid sweeps one group per process; serially the same groups give the same iterates.
    serial_opts = {**mopts, "groups": nproc} if mopts.get("local_sweep") else mopts
    for key in ("WORLD_SIZE", "RANK"):  # the serial run must not see a launcher's variables
        os.environ.pop(key, None)
    threads = torch.get_num_threads()
    try:
        serial = _run(method, problem, popts, serial_opts, outer_iters, seed)
    finally:
        torch.set_num_threads(threads)
    recs = _spawn(nproc, args, True, timeout_s)
    # The serial iterates again in nproc concurrent copies: the time per iteration when nproc
    # processes share this machine's memory bandwidth and caches, with no communication.
    copies = _spawn(nproc, (method, problem, popts, serial_opts, outer_iters, seed), False,
                    timeout_s) if baseline else []
    par = recs[0]
    t_ser = statistics.median(serial["times"])
    t_par = statistics.median(max(ts) for ts in zip(*(r["times"] for r in recs), strict=True))
    waits = [statistics.median(r["collective_s"]) for r in recs]
    computes = [statistics.median(t - c for t, c in zip(r["times"], r["collective_s"],
                                                          strict=True)) for r in recs]
    diff = max(
        (abs(a - b) for xs, xp in zip(serial["iterates"], par["iterates"], strict=True)
         for a, b in zip(xs, xp, strict=True)),
        default=0.0,
    )
    return ParallelResult(
        method=method, problem=problem, nproc=nproc, outer_iters=outer_iters,
        serial_s=t_ser, parallel_s=t_par, speedup=t_ser / t_par,
        efficiency=t_ser / t_par / nproc,
        bytes_per_iter=par["bytes"] / outer_iters,
        collectives_per_iter=par["collectives"] / outer_iters,
        max_iterate_diff=diff,
        subdomains_per_rank=[int(r["owned"]) for r in recs],
        data_parallel=bool(par["data_parallel"]),
        options={"problem": popts, "method": mopts, "seed": seed},
        collective_s_per_rank=waits,
        work_inflation=sum(computes) / t_ser,
        idle_share=statistics.fmean(waits) / t_par,
        copies_s=(statistics.median(max(ts) for ts in zip(*(r["times"] for r in copies),
                                                          strict=True))
                  if copies else math.nan),
    )


def format_parallel(result: ParallelResult) -> str:
    """A Markdown table of one :class:`ParallelResult`."""
    r = result
    kib = r.bytes_per_iter / 1024.0
    return "\n".join([
        f"Parallel efficiency of `{r.method}`"
        + "".join(f" {k}={v}" for k, v in r.options.get("method", {}).items())
        + f" on `{r.problem}` ({r.nproc} processes × 1 thread "
        f"vs 1 process × 1 thread; median of {r.outer_iters} outer iterations after a warm-up; "
        f"global phase {'data-parallel' if r.data_parallel else 'replicated on every process'})",
        "",
        "| serial s/iter | parallel s/iter | speed-up | efficiency | communicated per iter "
        "(one rank) | all-reduces per iter | subdomains per rank | s/iter in collectives "
        "per rank | max iterate difference |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {r.serial_s:.3f} | {r.parallel_s:.3f} | {r.speedup:.2f}× | {100 * r.efficiency:.0f}% "
        f"| {kib:.1f} KiB | {r.collectives_per_iter:.1f} | "
        f"{', '.join(map(str, r.subdomains_per_rank))} | "
        f"{', '.join(f'{c:.3f}' for c in r.collective_s_per_rank)} | "
        f"{r.max_iterate_diff:.1e} |",
        "",
        f"Where the ideal is lost: the ranks' summed compute time is {r.work_inflation:.2f}× the "
        f"serial time (contention for memory bandwidth and caches between processes on one "
        f"machine, and work every rank repeats), and {100 * r.idle_share:.0f}% of the parallel "
        f"time is spent in collectives (transfers and waiting for the slowest rank); "
        f"efficiency ≈ (1 − idle) / inflation = "
        f"{100 * (1 - r.idle_share) / r.work_inflation:.0f}%.",
        "",
        *([] if math.isnan(r.copies_s) else [
            f"Machine ceiling: {r.nproc} independent copies of the serial run at once take "
            f"{r.copies_s:.3f} s/iter against {r.serial_s:.3f} s alone, so even a perfect split "
            f"of the work reaches at most {100 * r.ceiling:.0f}% here; the parallel run "
            f"achieves {100 * r.efficiency_of_ceiling:.0f}% of that ceiling.", ""]),
        "```json",
        json.dumps({**asdict(r), "ceiling": r.ceiling,
                    "efficiency_of_ceiling": r.efficiency_of_ceiling}, indent=2),
        "```",
    ])
