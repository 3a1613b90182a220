"""Functions the spawned ranks run (module level, so that spawned processes can import them),
and the toy additive method written against the Executor protocol."""

from __future__ import annotations

import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

import torch
from torch import Tensor, nn

from mldd.decomposition.distributed import DistributedExecutor
from mldd.decomposition.executors import Executor

# ---------------------------------------------------------------------- the toy additive method

N_BLOCKS = 4
BLOCK = 3


def toy_quadratic() -> tuple[Tensor, Tensor]:
    """``f(x) = ½ xᵀAx − bᵀx`` with A SPD and coupled blocks (so one additive step is not exact)."""
    g = torch.Generator().manual_seed(7)
    n = N_BLOCKS * BLOCK
    m = torch.randn(n, n, generator=g, dtype=torch.float64)
    a = m @ m.T / n + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    return a, b


def toy_additive(executor: Executor, n_outer: int = 4, k_local: int = 5) -> list[Tensor]:
    """Additive Schwarz with gradient-descent local solves and an Armijo line search.

    Each rank runs ``k_local`` steps of gradient descent (step ``1/L_s``) on its owned blocks
    with the others frozen; the corrections are summed with ``all_reduce_sum``; the step length
    along the sum is chosen by backtracking, from numbers every rank computes identically from
    the all-reduced direction. Returns the outer iterates.
    """
    a, b = toy_quadratic()
    n = a.shape[0]
    blocks = [torch.arange(s * BLOCK, (s + 1) * BLOCK) for s in range(N_BLOCKS)]

    def f(x: Tensor) -> float:
        return float(0.5 * x @ (a @ x) - b @ x)

    x = torch.zeros(n, dtype=torch.float64)
    iterates = []
    for _ in range(n_outer):
        def local(x: Tensor = x) -> Tensor:
            d = torch.zeros(n, dtype=torch.float64)
            for s in executor.owns(N_BLOCKS):
                idx = blocks[s]
                lip = float(torch.linalg.eigvalsh(a[idx][:, idx]).max())
                y = x.clone()
                for _ in range(k_local):
                    y[idx] -= ((a @ y)[idx] - b[idx]) / lip
                d[idx] = y[idx] - x[idx]
            return d

        d = executor.all_reduce_sum(executor.guarded(local))
        f0, slope, alpha = f(x), float((a @ x - b) @ d), 1.0
        while f(x + alpha * d) > f0 + 1e-4 * alpha * slope:
            alpha *= 0.5
        x = x + alpha * d
        iterates.append(x.clone())
    return iterates


# ---------------------------------------------------------------------- serial ≡ distributed cases

def _tiny_regression() -> tuple[nn.Module, Tensor, Tensor]:
    """A 3-layer tanh MLP (3 subdomains by layer, so rank 0 owns two) on 32 points, float64."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(),
                          nn.Linear(6, 1)).to(torch.float64)
    return model, x, y


#: The cost counters of the last case's optimizer after its last step (``_run_steps``).
LAST_COSTS: dict[str, float] = {}
COST_KEYS = ("grad_evals", "local_grad_evals", "local_grad_evals_max_rank")


def _run_steps(opt: Any, model: nn.Module, closure: Callable[..., Tensor],
               n_outer: int) -> list[Tensor]:
    xs = []
    for _ in range(n_outer):
        opt.step(closure)
        xs.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone())
    LAST_COSTS.clear()
    LAST_COSTS.update({k: float(opt.last_info[k]) for k in COST_KEYS if k in opt.last_info})
    return xs


def aspqn_case(executor: Executor, **options: Any) -> list[Tensor]:
    """ASPQN by layers (3 subdomains on 2 ranks), short local solves, 3 outer iterations."""
    from mldd.optim import ASPQN

    model, x, y = _tiny_regression()
    # One global step per outer iteration (the paper's): with the default 20, the 1e-16
    # differences of the all-reduce's summation order on overlaps grow past the 1e-10 tolerance
    # over 60 global L-BFGS steps.
    options.setdefault("global_iters", 1)
    opt = ASPQN(model.parameters(), model=model, local_iters=5, executor=executor, **options)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return _run_steps(opt, model, closure, 3)


def aspqn_two_level_case(executor: Executor) -> list[Tensor]:
    """ASPQN with overlapping layer blocks (overlap 1) and the coarse step."""
    return aspqn_case(executor, overlap=1, two_level=True)


def aspqn_subspace_case(executor: Executor) -> list[Tensor]:
    """ASPQN combining by subspace minimisation, local memories kept between iterations."""
    return aspqn_case(executor, combine="subspace", keep_local_memory=True)


#: Row counts the data-parallel cases' closures were called with (reported per case).
SEEN_ROWS: set[int] = set()


def aspqn_data_parallel_case(executor: Executor, **options: Any) -> list[Tensor]:
    """ASPQN with data-parallel global steps: each rank evaluates half of the 32 rows there
    (a rows closure); local solves see all rows. Serially the option has no effect."""
    from mldd.optim import ASPQN

    model, x, y = _tiny_regression()
    options.setdefault("global_iters", 2)
    opt = ASPQN(model.parameters(), model=model, local_iters=5, executor=executor,
                data_parallel=True, n_rows=x.shape[0], **options)

    def closure(m: nn.Module, rows: Tensor | None) -> Tensor:
        SEEN_ROWS.add(x.shape[0] if rows is None else len(rows))
        r = slice(None) if rows is None else rows
        return ((m(x[r]) - y[r]) ** 2).mean()

    return _run_steps(opt, model, closure, 3)


def aspqn_data_parallel_subspace_case(executor: Executor) -> list[Tensor]:
    """Data-parallel ASPQN with the coarse step and the subspace combination (its secants are
    rank-local whole-batch evaluations)."""
    return aspqn_data_parallel_case(executor, combine="subspace", two_level=True)


def apts_layers_case(executor: Executor) -> list[Tensor]:
    """APTS by layers (3 subdomains on 2 ranks), defaults, 4 outer iterations."""
    from mldd.optim import APTS

    model, x, y = _tiny_regression()
    opt = APTS(model.parameters(), model=model, executor=executor)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        return loss

    return _run_steps(opt, model, closure, 4)


def apts_data_case(executor: Executor) -> list[Tensor]:
    """APTS with data decomposition (2 shards, one per rank), 4 outer iterations."""
    from mldd.optim import APTS

    model, x, y = _tiny_regression()
    opt = APTS(model.parameters(), model=model, decomposition="data", n_shards=2,
               n_rows=x.shape[0], executor=executor)

    def closure(m: nn.Module, rows: Tensor) -> Tensor:
        return ((m(x[rows]) - y[rows]) ** 2).mean()

    return _run_steps(opt, model, closure, 4)


#: Name → ``case(executor) -> list of iterates``. The suite runs every case on the distributed
#: executor; the test runs it on SerialExecutor and compares the iterates. To add a method, write
#: a module-level function that builds it on a small float64 problem with ``executor=`` and
#: returns a few outer iterates (cloned flat parameter vectors), and register it here.
CASES: dict[str, Callable[[Executor], list[Tensor]]] = {
    "toy-additive": toy_additive,
    "aspqn-layers": aspqn_case,
    "aspqn-two-level-overlap": aspqn_two_level_case,
    "aspqn-subspace": aspqn_subspace_case,
    "aspqn-data-parallel": aspqn_data_parallel_case,
    "aspqn-data-parallel-subspace-two-level": aspqn_data_parallel_subspace_case,
    "apts-layers": apts_layers_case,
    "apts-data": apts_data_case,
}


# ---------------------------------------------------------------------- rank functions


def _record(fn: Callable[[], Any]) -> dict[str, Any]:
    t0 = time.monotonic()
    try:
        rec: dict[str, Any] = {"status": "ok", "value": fn()}
    except Exception as exc:  # every stage's outcome is asserted by the parent
        rec = {
            "status": "raised",
            "error_types": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc),
            "ranks": list(getattr(exc, "ranks", [])),
            "cause": type(exc.__cause__).__name__ if exc.__cause__ is not None else None,
        }
    rec["elapsed_s"] = time.monotonic() - t0
    return rec


def collectives(ex: DistributedExecutor) -> dict[str, Any]:
    """all_reduce_sum on several tensors, owns(), counters, guarded success, barrier."""
    rank = ex.rank
    t = torch.arange(6, dtype=torch.float64) * (rank + 1) + 0.25
    before = t.clone()
    s = ex.all_reduce_sum(t)
    bytes_after_one = ex.bytes_communicated
    nc = torch.arange(12, dtype=torch.float64).reshape(3, 4).T * (rank + 1)  # not contiguous
    s_nc = ex.all_reduce_sum(nc)
    scalar = ex.all_reduce_sum(torch.tensor(1.5 * (rank + 1), dtype=torch.float64))
    empty = ex.all_reduce_sum(torch.zeros(0, dtype=torch.float64))
    counted = (ex.bytes_communicated, ex.n_collectives)
    g = ex.guarded(lambda: 10 * rank + 1)
    after_guard = (ex.bytes_communicated, ex.n_collectives)
    ex.barrier()
    # A late rank: the punctual one's wait is counted in collective_s.
    c0 = ex.collective_s
    if rank == 1:
        time.sleep(0.3)
    ex.all_reduce_sum(torch.ones(1, dtype=torch.float64))
    waited = ex.collective_s - c0
    ex.reset_counters()
    return {
        "waited": waited,
        "after_reset": (ex.bytes_communicated, ex.n_collectives, ex.collective_s),
        "sum": s, "input_unchanged": bool(torch.equal(t, before)), "dtype": str(s.dtype),
        "bytes_after_one": bytes_after_one, "sum_nc": s_nc, "scalar": scalar,
        "empty_shape": tuple(empty.shape), "counted": counted, "guarded": g,
        "after_guard": after_guard, "owns": {n: ex.owns(n) for n in (2, 3, 5)},
        "world_size": ex.world_size, "rank": ex.rank, "timeout_s": ex.timeout_s,
    }


def failing_work(ex: DistributedExecutor, failing: list[int]) -> Any:
    """guarded() around local work that raises on the ranks in ``failing``."""

    def work() -> int:
        if ex.rank in failing:
            raise ValueError(f"closure exploded on rank {ex.rank}")
        return ex.rank

    return ex.guarded(work)


def data_parallel_failure(ex: DistributedExecutor) -> Any:
    """Data-parallel ASPQN whose closure raises on rank 1's shard (global phase only)."""
    from mldd.optim import ASPQN

    model, x, y = _tiny_regression()
    opt = ASPQN(model.parameters(), model=model, local_iters=2, executor=ex,
                data_parallel=True, n_rows=x.shape[0])

    def closure(m: nn.Module, rows: Tensor | None) -> Tensor:
        if rows is not None and ex.rank == 1:
            raise ValueError("shard closure exploded on rank 1")
        r = slice(None) if rows is None else rows
        return ((m(x[r]) - y[r]) ** 2).mean()

    return opt.step(closure)


def hang(ex: DistributedExecutor, sleep_s: float) -> float:
    """Rank 1 sleeps ``sleep_s`` before a collective; the time the collective took."""
    if ex.rank == 1:
        time.sleep(sleep_s)
    t0 = time.monotonic()
    ex.all_reduce_sum(torch.ones(3, dtype=torch.float64))
    return time.monotonic() - t0


def agreement(rank: int) -> tuple[float, int]:
    """RankAgreement on a stand-in trainer whose clock and counter differ per rank."""
    from mldd.train.launch import RankAgreement

    trainer = SimpleNamespace(time_s=1.25 + rank, grad_evals=10 + 3 * rank)
    RankAgreement(DistributedExecutor()).on_step(cast(Any, trainer))
    return trainer.time_s, trainer.grad_evals


def suite(rank: int, world_size: int, cases: list[str], sleep_s: float) -> dict[str, Any]:
    """Every check of the distributed tests in one spawned session (processes are slow to
    start): each stage's outcome is recorded; the hang comes last because it breaks the group.
    """
    ex = DistributedExecutor()
    out: dict[str, Any] = {"collectives": _record(lambda: collectives(ex))}
    out["fail-1"] = _record(lambda: failing_work(ex, [1]))
    out["fail-both"] = _record(lambda: failing_work(ex, [0, 1]))
    # A handled guarded() failure leaves the group usable.
    out["after-failures"] = _record(
        lambda: ex.all_reduce_sum(torch.ones(2, dtype=torch.float64))
    )
    out["agreement"] = _record(lambda: agreement(ex.rank))
    out["dp-failure"] = _record(lambda: data_parallel_failure(DistributedExecutor()))
    out["after-dp-failure"] = _record(
        lambda: ex.all_reduce_sum(torch.ones(2, dtype=torch.float64))
    )
    for name in cases:
        def run(name: str = name) -> dict[str, Any]:
            case_ex = DistributedExecutor()  # its own counters
            SEEN_ROWS.clear()
            LAST_COSTS.clear()
            xs = CASES[name](case_ex)
            return {"iterates": xs, "costs": dict(LAST_COSTS),
                    "bytes": case_ex.bytes_communicated,
                    "n_collectives": case_ex.n_collectives, "seen_rows": sorted(SEEN_ROWS)}
        out[f"case:{name}"] = _record(run)
    ex.all_reduce_sum(torch.ones(1, dtype=torch.float64))  # all connections are up
    out["hang"] = _record(lambda: hang(ex, sleep_s))
    out["after-hang"] = _record(lambda: ex.all_reduce_sum(torch.ones(1, dtype=torch.float64)))
    return out


def cuda_checks(rank: int, world_size: int) -> dict[str, Any]:
    """CUDA tensors through the default back-end (``cpu:gloo,cuda:nccl``), world size 1."""
    from mldd.decomposition.executors import ExecutorError

    ex = DistributedExecutor()
    t = torch.arange(5, dtype=torch.float64, device="cuda") + 0.5
    s = ex.all_reduce_sum(t)
    c = ex.all_reduce_sum(torch.ones(3, dtype=torch.float64))
    try:
        ex.guarded(lambda: 1 / 0)
        failed: Any = None
    except ExecutorError as exc:
        failed = (str(exc), exc.ranks)
    ex.barrier()
    return {"backend": ex.backend, "device": str(s.device), "dtype": str(s.dtype),
            "equal": bool(torch.equal(s, t)), "cpu_device": str(c.device),
            "failed": failed, "bytes": ex.bytes_communicated, "n": ex.n_collectives}
