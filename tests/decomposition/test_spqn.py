"""SPQN (ASPQN / MSPQN): identities with L-BFGS, one-iteration solves of separable problems,
serial ≡ multi-rank, cost accounting, safety, and convergence."""

import math
import threading

import pytest
import torch

from mldd.decomposition import (
    Decomposition,
    ExecutorError,
    SerialExecutor,
    SPQNConfig,
    SPQNSolver,
    SubspaceObjective,
)
from mldd.decomposition.executors import owned_round_robin
from mldd.decomposition.spqn import PAPER_SETTINGS
from mldd.objective import EvalCounters, FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.solvers import LBFGSConfig, LBFGSSolver

COMBINES = ["line_search", "per_subdomain", "subspace"]


def _spd_block(k: int, seed: int, condition: float = 10.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    Q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
    return Q @ torch.diag(torch.logspace(0, math.log10(condition), k, dtype=torch.float64)) @ Q.T


def _quadratic(A: torch.Tensor, b: torch.Tensor) -> FunctionObjective:
    return FunctionObjective(lambda x: 0.5 * x @ A @ x - b @ x, A.shape[0])


def _block_diag_problem(sizes: list[int], coupling: float = 0.0):
    A = torch.block_diag(*[_spd_block(k, seed=i) for i, k in enumerate(sizes)])
    n = A.shape[0]
    if coupling:
        C = _spd_block(n, seed=99)
        A = A + coupling * C
    b = torch.linspace(-1.0, 2.0, n, dtype=torch.float64)
    return A, b, torch.linalg.solve(A, b)


def _solver(dec: Decomposition, obj=None, **kw) -> SPQNSolver:
    counters = obj.counters if obj is not None else None
    return SPQNSolver(SPQNConfig(**kw), dec, counters=counters)


# ------------------------------------------------------------------------------ identities
def _reference_iterates(obj, x, outer: int, k_s: int, global_iters: int = 1,
                        memory: int = 3) -> list[torch.Tensor]:
    """k_s iterations of a fresh L-BFGS (memory 3), then ``global_iters`` steps of a global
    L-BFGS (memory ``memory``)."""
    glob = LBFGSSolver(LBFGSConfig(memory=memory))
    out = []
    for _ in range(outer):
        local = LBFGSSolver(LBFGSConfig(memory=3))
        for _ in range(k_s):
            x = local.iterate(obj, x).x
            if local.stop_reason is not None:
                break
        for _ in range(global_iters):
            x = glob.iterate(obj, x).x
        out.append(x)
    return out


def test_one_subdomain_mspqn_equals_lbfgs_local_then_global_bitwise() -> None:
    n, k_s = 6, 4
    obj = FunctionObjective(rosenbrock, n)
    ref = _reference_iterates(obj, rosenbrock_start(n), outer=4, k_s=k_s)
    dec = Decomposition.from_sizes([n])
    paper = {**PAPER_SETTINGS, "local_iters": k_s, "momentum": 0.0}  # paper's, no momentum
    solver = _solver(dec, obj, variant="multiplicative", **paper)
    x = rosenbrock_start(n)
    for r in ref:
        x = solver.iterate(obj, x).x
        assert torch.equal(x, r)
    assert float(rosenbrock(x)) < float(rosenbrock(rosenbrock_start(n))) * 0.1


def test_global_iters_equal_that_many_global_lbfgs_iterations_bitwise() -> None:
    # One subdomain, restarted local memory, no momentum: k_s local L-BFGS iterations, then
    # `global_iters` iterations of one global L-BFGS whose memory persists.
    n, k_s, j = 6, 3, 3
    obj = FunctionObjective(rosenbrock, n)
    ref = _reference_iterates(obj, rosenbrock_start(n), outer=3, k_s=k_s, global_iters=j,
                              memory=7)
    solver = _solver(Decomposition.from_sizes([n]), obj, variant="multiplicative",
                     local_iters=k_s, momentum=0.0, memory=7, global_iters=j,
                     keep_local_memory=False)
    x = rosenbrock_start(n)
    for r in ref:
        res = solver.iterate(obj, x)
        x = res.x
        assert res.info["global_iters"] == j
        assert torch.equal(x, r)
    assert len(solver.global_step.memory) == 7  # 3 × 3 pairs, capped at the memory


def test_one_subdomain_aspqn_equals_lbfgs_local_then_global() -> None:
    # The additive combination's line search accepts the unit step along x_s* − x_k, so the
    # preconditioned point is the local result up to the rounding of x + (z − x).
    n, k_s = 6, 4
    obj = FunctionObjective(rosenbrock, n)
    ref = _reference_iterates(obj, rosenbrock_start(n), outer=4, k_s=k_s)
    paper = {**PAPER_SETTINGS, "local_iters": k_s, "momentum": 0.0}  # paper's, no momentum
    solver = _solver(Decomposition.from_sizes([n]), obj, **paper)
    x = rosenbrock_start(n)
    for r in ref:
        res = solver.iterate(obj, x)
        x = res.x
        assert res.info["combine_weights"] == [1.0]
        torch.testing.assert_close(x, r, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------ separable problems
@pytest.mark.parametrize("variant,combine", [("multiplicative", "line_search")]
                         + [("additive", c) for c in COMBINES])
def test_separable_quadratic_is_solved_in_one_outer_iteration(variant, combine) -> None:
    sizes = [3, 4, 2]
    A, b, x_star = _block_diag_problem(sizes)
    obj = _quadratic(A, b)
    solver = _solver(Decomposition.from_sizes(sizes), obj, variant=variant, combine=combine,
                     local_iters=40, local_tolerance_grad=1e-13, local_tolerance_change=0.0,
                     global_step=False)
    x = torch.zeros(A.shape[0], dtype=torch.float64)
    res = solver.iterate(obj, x)
    assert torch.allclose(res.x, x_star, rtol=0, atol=1e-7)  # f is accurate to ~1e-16 only
    if variant == "additive":
        assert res.info["combine_weights"] == pytest.approx([1.0] * 3, abs=1e-6)


def test_coupled_quadratic_is_not_solved_in_one_iteration() -> None:
    # The same test on a coupled problem fails: the one-iteration solve above is not automatic.
    sizes = [3, 4, 2]
    A, b, x_star = _block_diag_problem(sizes, coupling=0.5)
    obj = _quadratic(A, b)
    solver = _solver(Decomposition.from_sizes(sizes), obj, local_iters=40, global_step=False)
    res = solver.iterate(obj, torch.zeros(A.shape[0], dtype=torch.float64))
    assert float((res.x - x_star).abs().max()) > 1e-3


@pytest.mark.parametrize("weights", ["multiplicity", "restricted"])
@pytest.mark.parametrize("combine", COMBINES)
def test_overlapping_additive_converges_on_a_coupled_quadratic(weights, combine) -> None:
    sizes = [2, 3, 3, 2]
    A, b, x_star = _block_diag_problem(sizes, coupling=0.3)
    obj = _quadratic(A, b)
    dec = Decomposition.from_sizes(sizes, overlap=1, weights=weights)
    solver = _solver(dec, obj, combine=combine, local_iters=10, tolerance_grad=1e-10,
                     tolerance_change=0.0)
    x = torch.zeros(A.shape[0], dtype=torch.float64)
    for _ in range(25):
        x = solver.iterate(obj, x).x
        if solver.stop_reason:
            break
    assert torch.allclose(x, x_star, atol=1e-7)


# ------------------------------------------------------------------------------ convergence
def _assert_solves_rosenbrock(solver: SPQNSolver, obj, n: int, max_outer: int) -> None:
    """Outer iterations from the standard start until a stop reason (at most ``max_outer``)
    reach the minimiser ``x* = 1`` of the extended Rosenbrock function."""
    x = rosenbrock_start(n)
    for _ in range(max_outer):
        x = solver.iterate(obj, x).x
        if solver.stop_reason:
            break
    assert float(rosenbrock(x)) < 1e-12
    assert torch.allclose(x, torch.ones(n, dtype=torch.float64), atol=1e-5)


@pytest.mark.parametrize("variant,combine", [("multiplicative", "line_search")]
                         + [("additive", c) for c in COMBINES])
def test_rosenbrock_converges(variant, combine) -> None:
    n = 10
    obj = FunctionObjective(rosenbrock, n)
    solver = _solver(Decomposition.from_sizes([2] * 5), obj, variant=variant, combine=combine,
                     local_iters=10)
    _assert_solves_rosenbrock(solver, obj, n, max_outer=20)


@pytest.mark.parametrize("keep", [False, True])
def test_two_level_and_kept_local_memory_converge(keep) -> None:
    n = 10
    obj = FunctionObjective(rosenbrock, n)
    coarse = torch.arange(0, n, 2)
    solver = SPQNSolver(SPQNConfig(local_iters=10, keep_local_memory=keep, coarse_iters=2),
                        Decomposition.from_sizes([2] * 5), coarse=coarse, counters=obj.counters)
    x = rosenbrock_start(n)
    for _ in range(40):
        res = solver.iterate(obj, x)
        assert res.info["loss_coarse"] <= res.f_start
        x = res.x
        if solver.stop_reason:
            break
    assert float(rosenbrock(x)) < 1e-10
    assert solver.coarse_counters.n_g > 0


def test_kept_local_memory_carries_pairs_into_the_next_outer_iteration() -> None:
    n = 10
    xs = {}
    for keep in (False, True):
        obj = FunctionObjective(rosenbrock, n)
        solver = _solver(Decomposition.from_sizes([5, 5]), obj, local_iters=2,
                         keep_local_memory=keep)
        x = solver.iterate(obj, rosenbrock_start(n)).x
        pairs = solver.local_solvers[1].memory.pairs()[0]
        x = solver.iterate(obj, x).x
        after = solver.local_solvers[1].memory.pairs()[0]
        # Kept: a pair of the first outer iteration is still there (memory 3, 2 new pairs).
        assert any(torch.equal(p, q) for p in pairs for q in after) == keep
        xs[keep] = x
    assert not torch.allclose(xs[False], xs[True])


# ------------------------------------------------------------------------------ cost accounting
def test_local_global_and_coarse_evaluations_are_counted_separately() -> None:
    calls = {"n": 0}

    def f(x):
        calls["n"] += 1
        return rosenbrock(x)

    obj = FunctionObjective(f, 8)
    solver = SPQNSolver(SPQNConfig(local_iters=3, combine="subspace"),
                        Decomposition.from_sizes([4, 4], overlap=1), coarse=torch.tensor([0, 7]),
                        counters=obj.counters)
    x = rosenbrock_start(8)
    for _ in range(3):
        res = solver.iterate(obj, x)
        x = res.x
    info = res.info
    assert info["local_n_g"] == solver.local_counters.n_g > 0
    assert info["coarse_n_g"] == solver.coarse_counters.n_g > 0
    assert info["global_n_g"] == obj.counters.n_g > 0
    assert info["n_g"] == info["grad_evals"] == (info["global_n_g"] + info["local_n_g"]
                                                 + info["coarse_n_g"])
    assert calls["n"] == info["n_f"] == (info["global_n_f"] + info["local_n_f"]
                                         + info["coarse_n_f"])
    # k_s iterations per subdomain: at least k_s local gradients each (no evaluation at x_k).
    assert info["local_n_g"] >= 3 * 2 * 3


def test_mspqn_reuses_the_local_end_points_gradient() -> None:
    # The sweep hands each subdomain the gradient of the previous one's end point, and the
    # global step starts from the sweep's end: an outer iteration costs no extra global gradient
    # beyond the global line search.
    obj = FunctionObjective(rosenbrock, 8)
    solver = _solver(Decomposition.from_sizes([4, 4]), obj, variant="multiplicative",
                     local_iters=3, global_iters=1)
    x = rosenbrock_start(8)
    res = solver.iterate(obj, x)
    assert obj.counters.n_g == 1 + res.info["line_search_evals"]  # f(x_0) + the global search


# ------------------------------------------------------------------------------ plug-in & safety
def test_a_plugged_local_objective_gives_the_same_iterates() -> None:
    made = []

    class Plain(SubspaceObjective):
        full_evaluation = None  # type: ignore[assignment]  # a plug-in that cannot hand it back

    def factory(objective, s, x_base, counters):
        made.append(s)
        return Plain(objective, x_base, dec[s].index, counters=counters)

    dec = Decomposition.from_sizes([3, 3])
    for variant in ("additive", "multiplicative"):
        obj = FunctionObjective(rosenbrock, 6)
        a = _solver(dec, obj, variant=variant, local_iters=3)
        b = SPQNSolver(SPQNConfig(variant=variant, local_iters=3), dec, local_objective=factory)
        xa = xb = rosenbrock_start(6)
        for _ in range(3):
            xa, xb = a.iterate(obj, xa).x, b.iterate(obj, xb).x
        torch.testing.assert_close(xa, xb, rtol=1e-9, atol=1e-12)
    assert made[:2] == [0, 1] and len(made) == 12


def test_local_gradients_are_weighted_by_their_grad_cost_and_providers_are_bound() -> None:
    dec = Decomposition.from_sizes([3, 3])
    seen, made = [], []

    class Provider:
        def for_decomposition(self, decomposition):
            seen.append(decomposition)

            def factory(objective, s, x_base, counters):
                made.append((s, counters.n_g))  # the sweep is sequential: n_g at the start
                local = SubspaceObjective(objective, x_base, decomposition[s].index,
                                          counters=counters)
                local.grad_cost = 0.25 * (s + 1)  # type: ignore[attr-defined]
                return local

            return factory

    obj = FunctionObjective(rosenbrock, 6)
    solver = SPQNSolver(SPQNConfig(variant="multiplicative", local_iters=3), dec,
                        local_objective=Provider(), counters=obj.counters)
    assert seen == [dec]
    x = rosenbrock_start(6)
    for _ in range(2):
        x = solver.iterate(obj, x).x
    info = solver.cost()
    ends = [n for _, n in made[1:]] + [info["local_n_g"]]
    expected = sum(0.25 * (s + 1) * (end - n0) for (s, n0), end in zip(made, ends, strict=True))
    assert len(made) == 4 and info["local_n_g"] > 0
    assert info["local_grad_evals"] == pytest.approx(expected)
    assert info["grad_evals"] == pytest.approx(info["global_n_g"] + expected
                                               + info["coarse_n_g"])
    assert info["n_g"] == info["global_n_g"] + info["local_n_g"] + info["coarse_n_g"]
    fresh = SPQNSolver(SPQNConfig(variant="multiplicative", local_iters=3), dec)
    fresh.load_state_dict(solver.state_dict())
    assert fresh.cost() == info


def test_nan_regions_never_reach_the_iterate() -> None:
    # Inf beyond |x| > 1.5: the combined and global line searches must back off.
    def f(x):
        val = rosenbrock(x)
        return torch.where(x.abs().max() > 1.5, torch.full_like(val, float("nan")), val)

    obj = FunctionObjective(f, 4)
    for combine in COMBINES:
        solver = _solver(Decomposition.from_sizes([2, 2]), obj, combine=combine, local_iters=5)
        x = torch.tensor([-1.2, 1.0, -1.2, 1.0], dtype=torch.float64)
        for _ in range(10):
            res = solver.iterate(obj, x)
            x = res.x
            assert math.isfinite(res.info["loss"]) and bool(torch.isfinite(x).all())
            assert float(x.abs().max()) <= 1.5


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="combine='mean' is not allowed"):
        SPQNConfig(combine="mean")
    with pytest.raises(ValueError, match="local_iters must be an integer >= 1"):
        SPQNConfig(local_iters=0)
    with pytest.raises(ValueError, match="momentum"):
        SPQNConfig(momentum=1.0)

    class Two(SerialExecutor):
        world_size = 2

    with pytest.raises(ValueError, match="sequential sweep"):
        SPQNSolver(SPQNConfig(variant="multiplicative"), Decomposition.from_sizes([2, 2]),
                   executor=Two())


# ------------------------------------------------------------------------------ serial ≡ ranks
class _Group:
    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size, timeout=60)
        self.slots: list = [None] * world_size
        self.n_reduce = 0


class _ThreadExecutor:
    """In-process stand-in for a torch.distributed executor: ranks are threads."""

    def __init__(self, group: _Group, rank: int) -> None:
        self.group, self.rank, self.world_size = group, rank, group.world_size

    def owns(self, n):
        return owned_round_robin(self.rank, self.world_size, n)

    def all_reduce_sum(self, t):
        g = self.group
        g.slots[self.rank] = t.clone()
        g.barrier.wait()
        out = g.slots[0].clone()
        for other in g.slots[1:]:
            out = out + other
        if self.rank == 0:
            g.n_reduce += 1
        g.barrier.wait()
        return out

    def guarded(self, fn):
        try:
            result, failed = fn(), 0.0
        except Exception:
            result, failed = None, 1.0
        if float(self.all_reduce_sum(torch.tensor([failed]))) > 0:
            raise ExecutorError("local work failed on some rank")
        return result


def _run_ranks(world_size, make_solver, obj_fn, n, x0, outer, fail_rank=None):
    group = _Group(world_size)
    out: list = [None] * world_size

    def worker(rank):
        ex = _ThreadExecutor(group, rank)

        def f(x):
            if rank == fail_rank and x.requires_grad and not torch.equal(x.detach(), x0):
                raise RuntimeError("closure failed")
            return obj_fn(x)

        obj = FunctionObjective(f, n)
        solver = make_solver(ex)
        x = x0.clone()
        try:
            for _ in range(outer):
                x = solver.iterate(obj, x).x
            out[rank] = x
        except ExecutorError as e:
            out[rank] = e

    threads = [threading.Thread(target=worker, args=(r,)) for r in range(world_size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return out, group


@pytest.mark.parametrize("overlap", [0, 1])
@pytest.mark.parametrize("combine", COMBINES)
def test_serial_and_two_ranks_give_the_same_iterates(combine, overlap) -> None:
    n = 8
    dec = Decomposition.from_sizes([2, 2, 2, 2], overlap=overlap)

    def make(ex):
        # Two global steps per outer iteration: the default 20 solve this problem in two outer
        # iterations, after which there is nothing left to reduce.
        return SPQNSolver(SPQNConfig(combine=combine, local_iters=3, global_iters=2), dec,
                          executor=ex)

    x0 = rosenbrock_start(n)
    obj = FunctionObjective(rosenbrock, n)
    serial = make(SerialExecutor())
    x = x0.clone()
    n_global = 0
    for _ in range(4):
        res = serial.iterate(obj, x)
        x, n_global = res.x, n_global + res.info["global_iters"]
        assert res.info["stop_reason"] is None
    ranks, group = _run_ranks(2, make, rosenbrock, n, x0, outer=4)
    for xr in ranks:
        assert isinstance(xr, torch.Tensor)
        torch.testing.assert_close(xr, x, rtol=1e-10, atol=1e-10)
    assert torch.equal(ranks[0], ranks[1])
    # Per outer iteration: one reduction of the corrections (plus one of the secant model for
    # "subspace"), one of the ranks' evaluation counts, and one flag per guarded phase (local,
    # combination, [secants]), plus one flag per global L-BFGS step.
    per_iter = {"line_search": 2 + 2, "per_subdomain": 2 + 2, "subspace": 3 + 3}[combine]
    assert group.n_reduce == 4 * per_iter + n_global


def test_a_failing_rank_raises_on_every_rank() -> None:
    dec = Decomposition.from_sizes([2, 2])

    def make(ex):
        return SPQNSolver(SPQNConfig(local_iters=3), dec, executor=ex)

    ranks, _ = _run_ranks(2, make, rosenbrock, 4, rosenbrock_start(4), outer=2, fail_rank=1)
    assert all(isinstance(r, ExecutorError) for r in ranks)


def test_counters_for_solver_default_to_fresh() -> None:
    s = SPQNSolver(SPQNConfig(), Decomposition.from_sizes([1, 1]))
    assert isinstance(s.counters, EvalCounters) and s.local_counters is not s.counters


def test_owned_balanced_lpt_assignment() -> None:
    from mldd.decomposition.executors import owned_balanced

    # The measured layer-gradient costs of Burgers 8×20 (prefix-cached blocks): round robin
    # gives rank 0 2.20 of 3.98; longest-first gives 2.00 / 1.98.
    costs = [0.80, 0.72, 0.63, 0.54, 0.45, 0.36, 0.27, 0.16, 0.05]
    parts = [owned_balanced(r, 2, costs) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == list(range(9))
    loads = [sum(costs[s] for s in p) for p in parts]
    assert max(loads) <= 2.01 and max(loads) < sum(costs[0::2])
    # Every rank owns at least one subdomain, even when one cost dominates.
    parts = [owned_balanced(r, 3, [100.0, 1.0, 1.0]) for r in range(3)]
    assert parts == [[0], [1], [2]]
    with pytest.raises(ValueError, match="2 subdomains cannot be shared by 3 processes"):
        owned_balanced(0, 3, [1.0, 1.0])
    with pytest.raises(ValueError, match="finite and > 0"):
        owned_balanced(0, 2, [1.0, 0.0])


def test_solver_balances_ownership_by_cost() -> None:
    """With several ranks the solver deals subdomains by estimated cost (earlier parameters cost
    more), unless round robin is asked for; the chosen subdomains are fixed in ``owned``."""
    dec = Decomposition.from_sizes([40, 30, 20, 10])

    class _Rank:
        def __init__(self, rank: int) -> None:
            self.rank, self.world_size = rank, 2

        def owns(self, n: int) -> list[int]:
            return owned_round_robin(self.rank, 2, n)

    owned = [SPQNSolver(SPQNConfig(), dec, executor=_Rank(r)).owned for r in range(2)]
    # Costs (n − first index)/n = 1.0, 0.6, 0.3, 0.1: rank 0 gets {0}, rank 1 {1, 2, 3}.
    assert owned == [[0], [1, 2, 3]]
    rr = [SPQNSolver(SPQNConfig(ownership="round_robin"), dec, executor=_Rank(r)).owned
          for r in range(2)]
    assert rr == [[0, 2], [1, 3]]
    with pytest.raises(ValueError, match="ownership"):
        SPQNConfig(ownership="random")


# ---------------------------------------------------------------------- hybrid (local sweep)
def _iterates(solver: SPQNSolver, obj, x, outer: int) -> list[torch.Tensor]:
    out = []
    for _ in range(outer):
        x = solver.iterate(obj, x).x
        out.append(x)
    return out


def _assert_two_ranks_match_serial(make, n: int, outer: int = 4) -> None:
    """``make(executor)``'s iterates on Rosenbrock: 2 ranks ≡ serial to 1e-10, ranks bitwise."""
    x0 = rosenbrock_start(n)
    x = _iterates(make(SerialExecutor()), FunctionObjective(rosenbrock, n), x0, outer)[-1]
    ranks, _ = _run_ranks(2, make, rosenbrock, n, x0, outer=outer)
    for xr in ranks:
        assert isinstance(xr, torch.Tensor)
        torch.testing.assert_close(xr, x, rtol=1e-10, atol=1e-10)
    assert torch.equal(ranks[0], ranks[1])


def test_local_sweep_in_one_group_is_mspqn_bitwise() -> None:
    n = 8
    dec = Decomposition.from_sizes([2, 2, 2, 2])
    obj = FunctionObjective(rosenbrock, n)
    hybrid = _iterates(_solver(dec, obj, local_sweep=True), obj, rosenbrock_start(n), 4)
    obj2 = FunctionObjective(rosenbrock, n)
    mspqn = _iterates(_solver(dec, obj2, variant="multiplicative"), obj2, rosenbrock_start(n), 4)
    for a, b in zip(hybrid, mspqn, strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(hybrid[0], rosenbrock_start(n))


@pytest.mark.parametrize("combine", ["line_search", "per_subdomain"])
def test_local_sweep_with_one_subdomain_per_group_is_aspqn_bitwise(combine) -> None:
    n = 8
    dec = Decomposition.from_sizes([2, 2, 2, 2])
    obj = FunctionObjective(rosenbrock, n)
    hybrid = _iterates(_solver(dec, obj, local_sweep=True, groups=4, combine=combine), obj,
                       rosenbrock_start(n), 3)
    obj2 = FunctionObjective(rosenbrock, n)
    aspqn = _iterates(_solver(dec, obj2, combine=combine), obj2, rosenbrock_start(n), 3)
    for a, b in zip(hybrid, aspqn, strict=True):
        assert torch.equal(a, b)


def test_local_sweep_groups_follow_the_ownership_rule() -> None:
    dec = Decomposition.from_sizes([1] * 5)
    rr = SPQNSolver(SPQNConfig(local_sweep=True, groups=2, ownership="round_robin"), dec)
    assert rr.sweep_groups == [[0, 2, 4], [1, 3]]
    assert sorted(rr.owned) == list(range(5))  # one process solves every group
    # Balanced by the default cost (n − first index)/n: 1, .8, .6, .4, .2 → {0, 3, 4} vs {1, 2}.
    bal = SPQNSolver(SPQNConfig(local_sweep=True, groups=2), dec)
    assert bal.sweep_groups == [[0, 3, 4], [1, 2]]


def test_local_sweep_solves_an_aligned_separable_quadratic_in_one_outer_iteration() -> None:
    sizes = [3, 4, 2, 3]
    A, b, x_star = _block_diag_problem(sizes)
    obj = _quadratic(A, b)
    solver = _solver(Decomposition.from_sizes(sizes), obj, local_sweep=True, groups=2,
                     local_iters=40, local_tolerance_grad=1e-13, local_tolerance_change=0.0,
                     global_step=False)
    res = solver.iterate(obj, torch.zeros(A.shape[0], dtype=torch.float64))
    assert torch.allclose(res.x, x_star, rtol=0, atol=1e-7)
    assert res.info["combine_weights"] == pytest.approx([1.0] * 4, abs=1e-6)


@pytest.mark.parametrize("combine", ["line_search", "subspace"])
def test_local_sweep_serial_groups_equal_two_ranks(combine) -> None:
    n = 8
    dec = Decomposition.from_sizes([2, 2, 2, 2])

    def make(ex):
        return SPQNSolver(SPQNConfig(combine=combine, local_iters=3, global_iters=2,
                                     local_sweep=True, groups=2), dec, executor=ex)

    _assert_two_ranks_match_serial(make, n)


def test_local_sweep_options_are_validated() -> None:
    with pytest.raises(ValueError, match="local_sweep applies to the additive"):
        SPQNConfig(variant="multiplicative", local_sweep=True)
    with pytest.raises(ValueError, match="groups applies with local_sweep=True"):
        SPQNConfig(groups=2)
    with pytest.raises(ValueError, match="groups must be None or an integer >= 1"):
        SPQNConfig(local_sweep=True, groups=0)
    with pytest.raises(ValueError, match="local_sweep must be True or False"):
        SPQNConfig(local_sweep=1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="groups=3 exceeds the 2 subdomains"):
        SPQNSolver(SPQNConfig(local_sweep=True, groups=3), Decomposition.from_sizes([2, 2]))

    class Two(SerialExecutor):
        world_size = 2

    with pytest.raises(ValueError, match="groups must equal the number of processes"):
        SPQNSolver(SPQNConfig(local_sweep=True, groups=3), Decomposition.from_sizes([1, 1, 1]),
                   executor=Two())


# ------------------------------------------------------------------- trust-region global step
def _tr_solver(memory: int, radius: float = 1.0):
    from mldd.solvers import TrustRegionConfig, TrustRegionSolver

    return TrustRegionSolver(TrustRegionConfig(hessian="lbfgs", memory=memory, subproblem="cg",
                                               radius=radius))


def test_trust_region_global_step_is_a_persistent_lbfgs_trust_region_bitwise() -> None:
    # One subdomain, restarted local memory: k_s local L-BFGS iterations, then `global_iters`
    # iterations of one TrustRegion(hessian="lbfgs", subproblem="cg") whose radius and memory
    # persist across outer iterations.
    n, k_s, j, m = 6, 3, 4, 7
    obj = FunctionObjective(rosenbrock, n)
    glob = _tr_solver(m, radius=0.5)
    x, ref, radii = rosenbrock_start(n), [], []
    for _ in range(4):
        local = LBFGSSolver(LBFGSConfig(memory=3))
        for _ in range(k_s):
            x = local.iterate(obj, x).x
        glob.cache.clear()
        for _ in range(j):
            x = glob.iterate(obj, x).x
        ref.append(x)
        radii.append(glob.radius)
    solver = _solver(Decomposition.from_sizes([n]), FunctionObjective(rosenbrock, n),
                     variant="multiplicative", local_iters=k_s, memory=m, global_iters=j,
                     keep_local_memory=False, globalization="trust_region", radius=0.5)
    x = rosenbrock_start(n)
    obj2 = FunctionObjective(rosenbrock, n)
    for r, radius in zip(ref, radii, strict=True):
        res = solver.iterate(obj2, x)
        x = res.x
        assert torch.equal(x, r)
        assert res.info["radius"] == radius and res.info["global_iters"] == j
    assert glob.n_rejected == solver.global_step.solver.n_rejected
    assert float(rosenbrock(x)) < 0.1 * float(rosenbrock(rosenbrock_start(n)))


def test_trust_region_step_from_equals_iterate_bitwise() -> None:
    n = 10
    obj_a, obj_b = FunctionObjective(rosenbrock, n), FunctionObjective(rosenbrock, n)
    a, b = _tr_solver(5), _tr_solver(5)
    xa = xb = rosenbrock_start(n)
    fb, gb = obj_b.value_and_grad(xb)
    fb = float(fb)
    for _ in range(30):
        xa = a.iterate(obj_a, xa).x
        res, fb, gb = b.step_from(lambda v: tuple(obj_b.value_and_grad(v)), xb, fb, gb)
        xb = res.x
        assert torch.equal(xa, xb) and a.radius == b.radius
    assert (a.n_accepted, a.n_rejected) == (b.n_accepted, b.n_rejected)
    assert b.n_rejected > 0  # the test exercises rejections
    assert obj_b.counters.n_g == 31  # one evaluation per trial, none at the current point
    assert b.cache.x is None


@pytest.mark.parametrize("variant,sweep", [("multiplicative", False), ("additive", False),
                                           ("additive", True)])
def test_trust_region_global_step_converges_on_rosenbrock(variant, sweep) -> None:
    n = 10
    obj = FunctionObjective(rosenbrock, n)
    kw = {"local_sweep": True, "groups": 2} if sweep else {}
    solver = _solver(Decomposition.from_sizes([2] * 5), obj, variant=variant, local_iters=5,
                     globalization="trust_region", **kw)
    _assert_solves_rosenbrock(solver, obj, n, max_outer=30)


def test_trust_region_global_step_serial_equals_two_ranks() -> None:
    n = 8
    dec = Decomposition.from_sizes([2, 2, 2, 2])

    def make(ex):
        return SPQNSolver(SPQNConfig(local_iters=3, global_iters=3,
                                     globalization="trust_region"), dec, executor=ex)

    _assert_two_ranks_match_serial(make, n)


def test_trust_region_global_step_rejects_nan_trials() -> None:
    # The loss is NaN beyond |x| > 3: the first global trials (radius 1e3) land there and are
    # rejected, the radius shrinks, the iterate stays finite and the loss decreases.
    n = 4

    def f(x):
        return torch.where(x.abs().max() > 3.0, torch.tensor(float("nan"), dtype=x.dtype),
                           ((x - 1.0) ** 2).sum() + 0.1 * (x ** 4).sum())

    obj = FunctionObjective(f, n)
    solver = _solver(Decomposition.from_sizes([2, 2]), obj, local_iters=1,
                     globalization="trust_region", radius=1e3, global_iters=5)
    x = torch.full((n,), -2.0, dtype=torch.float64)
    f0 = float(f(x))
    for _ in range(3):
        res = solver.iterate(obj, x)
        x = res.x
        assert torch.isfinite(x).all() and res.info["loss"] <= f0
    assert solver.global_step.solver.n_rejected > 0
    assert float(f(x)) < 0.5 * f0


def test_trust_region_global_step_options_are_validated() -> None:
    with pytest.raises(ValueError, match="globalization='wolfe' is not allowed"):
        SPQNConfig(globalization="wolfe")
    with pytest.raises(ValueError, match=r"momentum=0\.3 applies to the line-search"):
        SPQNConfig(globalization="trust_region", momentum=0.3)
    with pytest.raises(ValueError, match="radius"):
        SPQNConfig(globalization="trust_region", radius=0.0)
    assert SPQNConfig().beta == 0.1
    assert SPQNConfig(globalization="trust_region").beta == 0.0
    assert SPQNConfig(globalization="trust_region", momentum=0).beta == 0.0
    dec = Decomposition.from_sizes([2, 2])
    tr = SPQNSolver(SPQNConfig(globalization="trust_region"), dec)
    ls = SPQNSolver(SPQNConfig(), dec)
    with pytest.raises(ValueError, match="holds a line-search global step"):
        tr.load_state_dict(ls.state_dict())
    with pytest.raises(ValueError, match="holds a trust-region global step"):
        ls.load_state_dict(tr.state_dict())
