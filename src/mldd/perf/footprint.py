"""Optimizer overhead and peak memory of a method, each measured in a fresh process.

For one (problem, method) pair a child process

1. builds the problem and the seeded model (as a benchmark run does) and notes its resident
   memory — the *baseline*: Python, torch, the data and the reference solution;
2. times the plain gradient evaluation ``t_g`` (zero_grad, loss, backward on the full batch,
   or on a batch of the method's mini-batch size; median of 5 after one warm-up);
3. trains for ``seconds`` with the method through the normal :class:`~mldd.train.Trainer`, and
   reads the iterations ``k``, the gradient evaluations ``G`` (fine-gradient equivalents,
   docs/algorithms.md §1.5) and the training time ``T``;
4. reads the peak resident memory (``ru_maxrss``) of the whole process.

The *overhead* is the time per iteration that is not explained by the gradient evaluations the
method is charged for, as a fraction of one gradient evaluation::

    overhead = (T / k − (G / k) · t_g) / t_g

It holds the optimizer's own algebra (two-loop recursions, the compact L-SR1 matrices, the
trust-region subproblem, the combination of subdomain corrections), the copies between the
model and the flat vector, and for local solves the difference between what a subdomain gradient
really costs and the share of a fine gradient it is charged. A negative value means the charged
evaluations were cheaper than a full gradient each (e.g. a line search that only evaluates the
loss is charged a full gradient).

Memory is reported as the peak resident set of the child and its increase over the baseline;
the benchmark report divides both by Adam's on the same problem (docs/benchmarks.md, "Memory").
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_PAGE = 4096


@dataclass
class Footprint:
    """Overhead and memory of one method on one problem.

    Attributes:
        problem: problem name.
        label: the benchmark label of the method.
        method: registered method name.
        iterations: optimizer steps taken in the measurement.
        grad_evals: gradient evaluations charged (fine-gradient equivalents).
        time_s: training time of those steps.
        grad_eval_ms: one plain full-batch gradient evaluation (median), milliseconds.
        ms_per_iter: ``time_s / iterations`` in milliseconds.
        evals_per_iter: ``grad_evals / iterations``.
        overhead: ``(ms_per_iter − evals_per_iter · grad_eval_ms) / grad_eval_ms``.
        baseline_mib: resident memory after building problem and model.
        peak_mib: peak resident memory of the process.
        batch_rows: rows (samples or points) of the timed gradient evaluation: the full batch,
            or the mini-batch size of a mini-batch method.
        error: why the measurement failed (then the numbers are NaN).
    """

    problem: str
    label: str
    method: str
    iterations: int = 0
    grad_evals: float = float("nan")
    time_s: float = float("nan")
    grad_eval_ms: float = float("nan")
    ms_per_iter: float = float("nan")
    evals_per_iter: float = float("nan")
    overhead: float = float("nan")
    baseline_mib: float = float("nan")
    peak_mib: float = float("nan")
    batch_rows: int = 0
    error: str | None = None

    @property
    def added_mib(self) -> float:
        """Peak memory above the baseline (what training added)."""
        return self.peak_mib - self.baseline_mib


def _rss_mib() -> float:
    """Current resident memory of this process (Linux ``/proc``), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE / 2**20


def _peak_mib() -> float:
    """Peak resident memory of this process (``ru_maxrss`` is in KiB on Linux), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_here(spec: dict[str, Any]) -> Footprint:
    """Measure in *this* process (the child's work; see the module docstring).

    Args:
        spec: ``{"problem", "problem_options", "label", "method", "options", "dtype",
            "threads", "seconds", "seed"}``.
    """
    import torch

    from mldd.train.config import ComponentConfig, RunConfig
    from mldd.train.run import build_problem, build_trainer

    cfg = RunConfig(
        problem=ComponentConfig(spec["problem"], dict(spec.get("problem_options") or {})),
        method=ComponentConfig(spec["method"], dict(spec.get("options") or {})),
        budget_s=float(spec["seconds"]),
        seed=int(spec.get("seed", 0)),
        threads=int(spec.get("threads", 1)),
        dtype=spec.get("dtype"),
        log_every=1e9,
    )
    torch.set_num_threads(cfg.threads)
    problem = build_problem(cfg)
    trainer = build_trainer(cfg, problem=problem)
    # The metric builds what it needs (reference solution, test set) into the baseline.
    problem.metric(trainer.model)
    baseline = _rss_mib()
    model, batch = trainer.model, problem.full_batch()
    if trainer.batch_size is not None:
        # Mini-batch methods are charged one evaluation per batch: time a batch like theirs
        # (problems without mini-batches, such as PINNs, hand out the full batch).
        first = next(iter(problem.batches(trainer.batch_size, torch.Generator().manual_seed(0))))
        batch = batch if first is None else first
    rows = problem.n_rows(batch)

    def gradient() -> None:
        model.zero_grad(set_to_none=False)
        problem.loss(model, batch).backward()

    gradient()
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        gradient()
        times.append(time.perf_counter() - t0)
    # Start training from the seeded weights: the timing calls above only touched .grad.
    model.zero_grad(set_to_none=True)
    t_g = statistics.median(times)
    result = trainer.run()
    k = max(result.iterations, 1)
    ms_iter = 1e3 * result.time_s / k
    evals = result.grad_evals / k
    return Footprint(
        problem=spec["problem"], label=spec.get("label", spec["method"]), method=spec["method"],
        iterations=result.iterations, grad_evals=float(result.grad_evals), time_s=result.time_s,
        grad_eval_ms=1e3 * t_g, ms_per_iter=ms_iter, evals_per_iter=evals,
        overhead=(ms_iter - evals * 1e3 * t_g) / (1e3 * t_g),
        baseline_mib=baseline, peak_mib=_peak_mib(), batch_rows=rows,
    )


def _failed(spec: dict[str, Any], why: str) -> Footprint:
    return Footprint(spec["problem"], spec.get("label", spec["method"]), spec["method"], error=why)


def measure(spec: dict[str, Any], *, timeout_s: float = 600.0) -> Footprint:
    """Measure one (problem, method) pair in a fresh Python process.

    A fresh process is needed because the peak resident memory is a high-water mark of the
    process: runs sharing a process would see each other's peaks.

    Returns:
        The :class:`Footprint`; a failed child gives one with ``error`` set (never raises for a
        method that fails, so that a benchmark goes on).
    """
    cmd = [sys.executable, "-m", "mldd.perf.footprint", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return _failed(spec, f"timed out after {timeout_s:g} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        return _failed(spec, f"exit {proc.returncode}: {tail}")
    return Footprint(**json.loads(lines[-1]))


def measure_all(specs: Sequence[dict[str, Any]], *, jobs: int = 1) -> list[Footprint]:
    """:func:`measure` each spec, ``jobs`` child processes at a time; results in input order."""
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(measure, specs))


def save(results: Sequence[Footprint], path: str | Path) -> None:
    """Write the results as JSON (NaN as null)."""
    rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in asdict(r).items()}
            for r in results]
    Path(path).write_text(json.dumps(rows, indent=2))


def load(path: str | Path) -> list[Footprint]:
    """Read what :func:`save` wrote."""
    rows: list[dict[str, Any]] = json.loads(Path(path).read_text())
    out = []
    for r in rows:
        fields: dict[str, Any] = {k: (math.nan if v is None and k != "error" else v)
                                  for k, v in r.items()}
        out.append(Footprint(**fields))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Child entry point: ``python -m mldd.perf.footprint '<json spec>'`` prints one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", help="JSON: problem, problem_options, label, method, options, "
                        "dtype, threads, seconds, seed")
    args = parser.parse_args(argv)
    result = measure_here(json.loads(args.spec))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
