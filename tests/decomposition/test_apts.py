"""APTS (additively preconditioned trust region), float64: identities with TR, properties of the
combination, NaN rejection, checkpoints, convergence, closure errors, serial ≡ distributed."""

from __future__ import annotations

import copy
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mldd.optim
from mldd.decomposition.apts import APTSConfig, APTSSolver
from mldd.decomposition.apts_local import DataShards, ParameterBlocks
from mldd.decomposition.executors import Executor
from mldd.decomposition.subdomains import Decomposition, data_shards
from mldd.models import MLP
from mldd.objective import ClosureError, FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.solvers import TrustRegionConfig, TrustRegionSolver

F = nn.functional


# ---------------------------------------------------------------------- fixtures


def _regression(seed: int = 0, rows: int = 64) -> tuple[nn.Module, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(rows, 3, generator=g, dtype=torch.float64)
    y = torch.sin(X.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 8), nn.Tanh(),
                          nn.Linear(8, 1)).double()
    return model, X, y


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def _plain(model: nn.Module, X: Tensor, y: Tensor) -> Any:
    return lambda: ((model(X) - y) ** 2).mean()


def _rows(X: Tensor, y: Tensor) -> Any:
    return lambda m, r: ((m(X[r]) - y[r]) ** 2).mean()


def _identity_tr(params: Any, norm: str = "l2") -> mldd.optim.TrustRegion:
    """The TR that APTS with one subdomain, local_iters=1 and no global pass reproduces: accept
    iff ρ > η, then grow by `expand`, else shrink by `shrink` (module docstring of apts.py)."""
    return mldd.optim.TrustRegion(params, memory=5, radius=0.1, norm=norm, rho_tol=0.25,
                                  eta1=0.25, eta2=0.25, gamma1=0.9, gamma2=1.2,
                                  radius_min=0.01, radius_max=1.0)


# ---------------------------------------------------------------------- identities


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_one_block_equals_trust_region_iterate_by_iterate(norm: str) -> None:
    m_tr, X, y = _regression()
    m_ap, _, _ = _regression()
    n = sum(p.numel() for p in m_ap.parameters())
    tr = _identity_tr(m_tr.parameters(), norm)
    ap = mldd.optim.APTS(m_ap.parameters(), decomposition=Decomposition.from_sizes([n]),
                         local_iters=1, norm=norm)
    outcomes = set()
    for _ in range(40):
        tr.step(_plain(m_tr, X, y))
        ap.step(_plain(m_ap, X, y))
        assert torch.equal(_flat(m_tr), _flat(m_ap))
        assert ap.radius == tr.radius
        outcomes.add(ap.last_info["accepted"])
    assert outcomes == {True, False}  # both branches of the ratio test were exercised


def test_one_shard_equals_trust_region_iterate_by_iterate() -> None:
    m_tr, X, y = _regression()
    m_ap, _, _ = _regression()
    tr = _identity_tr(m_tr.parameters())
    ap = mldd.optim.APTS(m_ap.parameters(), model=m_ap, decomposition="data", n_shards=1,
                         n_rows=len(X), local_iters=1)
    for _ in range(40):
        tr.step(_plain(m_tr, X, y))
        ap.step(_rows(X, y))
        assert torch.equal(_flat(m_tr), _flat(m_ap))
        assert ap.radius == tr.radius
    assert ap.last_info["n_rejected"] > 0


# ---------------------------------------------------------------------- combination properties


def _block_quadratic(blocks: int = 4, k: int = 3) -> tuple[Any, Tensor]:
    """``½ Σ_b (x_b − c_b)ᵀ A_b (x_b − c_b)`` with dense SPD 3×3 blocks (condition 10)."""
    g = torch.Generator().manual_seed(0)
    As, cs = [], []
    for _ in range(blocks):
        q, _ = torch.linalg.qr(torch.randn(k, k, generator=g, dtype=torch.float64))
        As.append((q * torch.logspace(0, 1, k, dtype=torch.float64)) @ q.T)
        cs.append(torch.randn(k, generator=g, dtype=torch.float64))

    def f(x: Tensor) -> Tensor:
        return sum((0.5 * (x[b * k:(b + 1) * k] - cs[b]) @ As[b] @ (x[b * k:(b + 1) * k] - cs[b])
                    for b in range(blocks)), torch.zeros((), dtype=x.dtype))

    return f, torch.cat(cs)


def test_separable_quadratic_aligned_blocks_solved_in_one_outer_iteration() -> None:
    f, x_star = _block_quadratic()
    obj = FunctionObjective(f, n=12)
    problem = ParameterBlocks(obj, Decomposition.from_sizes([3] * 4))
    x0 = torch.zeros(12, dtype=torch.float64)
    # A radius large enough to hold the minimiser: each local L-SR1 solve finishes its 3-D block.
    solver = APTSSolver(APTSConfig(local_iters=6, radius=100.0, radius_max=100.0))
    res = solver.iterate(problem, x0)
    assert res.info["accepted"]
    assert res.info["rho"] == pytest.approx(1.0, abs=1e-9)
    assert float(torch.linalg.vector_norm(res.x - x_star)) < 1e-8 * float(x_star.norm())
    # The global trust region alone, same memory and radius, is far from it after one step.
    tr = TrustRegionSolver(TrustRegionConfig(radius=100.0))
    assert float(f(tr.iterate(obj, x0).x)) > 1e-3 * float(f(x0))


def test_separable_function_prediction_is_exact() -> None:
    """On a block-separable f the sum of local reductions is the actual reduction: ρ = 1."""
    f, _ = _block_quadratic()
    obj = FunctionObjective(f, n=12)
    solver = APTSSolver(APTSConfig(local_iters=2))
    x = torch.zeros(12, dtype=torch.float64)
    for _ in range(30):
        res = solver.iterate(ParameterBlocks(obj, Decomposition.from_sizes([3] * 4)), x)
        if solver.stop_reason is not None:
            break
        assert res.info["accepted"] and res.info["rho"] == pytest.approx(1.0, abs=1e-9)
        x = res.x
    assert solver.stop_reason is not None and "gradient norm" in solver.stop_reason
    assert solver.n_iter >= 5


@pytest.mark.parametrize("kind,kw", [
    ("layers", {}), ("layers", {"norm": "linf"}), ("data", {"combine": "mean"}),
    ("data", {"combine": "sum"}), ("data", {"combine": "sum", "norm": "linf"}),
])
def test_trial_step_stays_inside_global_region(kind: str, kw: dict[str, Any]) -> None:
    model, X, y = _regression()
    extra = {"n_shards": 4, "n_rows": len(X)} if kind == "data" else {}
    opt = mldd.optim.APTS(model.parameters(), model=model, decomposition=kind, local_iters=5,
                          **extra, **kw)
    closure = _rows(X, y) if kind == "data" else _plain(model, X, y)
    on_boundary = 0
    for _ in range(25):
        before = _flat(model)
        opt.step(closure)
        info = opt.last_info
        assert info["step_norm"] <= info["radius"] * (1 + 1e-12)
        moved = _flat(model) - before
        if info["accepted"]:
            ord_ = 2 if kw.get("norm", "l2") == "l2" else math.inf
            assert float(torch.linalg.vector_norm(moved, ord=ord_)) <= info["radius"] * (1 + 1e-12)
        on_boundary += info["step_norm"] >= 0.99 * info["radius"]
    assert on_boundary > 0  # the bound was active, so the test could have failed


def test_local_iterates_stay_in_ball_around_start() -> None:
    """Local iterations measure their radius from z0: with many local iterations on a function
    whose minimiser is far away, each local solve ends no farther than Δ_loc from z0."""
    obj = FunctionObjective(lambda x: ((x - 50.0) ** 2).sum(), n=6)
    solver = APTSSolver(APTSConfig(local_iters=10))
    problem = ParameterBlocks(obj, Decomposition.from_sizes([2, 2, 2]))
    x = torch.zeros(6, dtype=torch.float64)
    res = solver.iterate(problem, x)
    local_radius = 0.1 / math.sqrt(3)
    for b in range(3):
        assert float(res.x[2 * b:2 * b + 2].norm()) <= local_radius * (1 + 1e-12)
    assert res.info["local_accepted"] >= 3


def test_data_loss_is_the_mean_over_rows_and_costs_are_counted() -> None:
    model, X, y = _regression(rows=60)
    opt = mldd.optim.APTS(model.parameters(), model=model, decomposition="data", n_shards=4,
                          n_rows=len(X), local_iters=3)
    with torch.no_grad():
        full = float(((model(X) - y) ** 2).mean())
    out = opt.step(_rows(X, y))
    assert float(out) == pytest.approx(full, rel=1e-14)
    info = opt.last_info
    with torch.no_grad():
        assert info["loss"] == pytest.approx(float(((model(X) - y) ** 2).mean()), rel=1e-14)
    local_n_g = opt._solver.local_counters.n_g  # type: ignore[attr-defined]
    assert 1 <= local_n_g <= 4 * 3  # the first local iteration reuses f_k, g_k
    assert info["local_grad_evals"] == pytest.approx(local_n_g * 15 / 60)  # equal shards
    assert info["global_grad_evals"] == 2  # at x_k and at the trial point
    assert info["grad_evals"] == pytest.approx(2 + local_n_g / 4)
    assert info["local_grad_evals_max_rank"] == pytest.approx(info["local_grad_evals"])


def test_layer_costs_count_full_gradients() -> None:
    model, X, y = _regression()
    opt = mldd.optim.APTS(model.parameters(), model=model, local_iters=2)
    opt.step(_plain(model, X, y))
    local_n_g = opt._solver.local_counters.n_g  # type: ignore[attr-defined]
    assert len(opt.decomposition) == 3 and 3 <= local_n_g <= 6  # type: ignore[arg-type]
    assert opt.last_info["local_grad_evals"] == local_n_g
    assert opt.last_info["n_g"] == local_n_g + 2


# ---------------------------------------------------------------------- NaN


def test_nan_trial_is_rejected_and_never_reaches_the_parameters() -> None:
    """Each block alone is fine, their combination is NaN: the global test must reject it."""
    def f(x: Tensor) -> Tensor:
        v = ((x - 1.0) ** 2).sum()
        return v * math.nan if bool((x[0] > 0.02) & (x[1] > 0.02)) else v

    obj = FunctionObjective(f, n=2)
    solver = APTSSolver(APTSConfig())
    x = torch.zeros(2, dtype=torch.float64)
    res = solver.iterate(ParameterBlocks(obj, Decomposition.from_sizes([1, 1])), x)
    assert not res.info["accepted"] and res.info["rho"] == -math.inf
    assert torch.equal(res.x, x) and solver.radius == pytest.approx(0.09)
    for _ in range(30):
        res = solver.iterate(ParameterBlocks(obj, Decomposition.from_sizes([1, 1])), res.x)
        assert math.isfinite(float(f(res.x))) and math.isfinite(res.info["loss"])
    assert solver.n_rejected > 1 and solver.n_accepted > 0


def test_nan_closure_in_shell_keeps_parameters_finite() -> None:
    model, X, y = _regression()

    def closure(m: nn.Module, rows: Tensor) -> Tensor:
        loss = ((m(X[rows]) - y[rows]) ** 2).mean()
        big = max(float(p.detach().abs().max()) for p in m.parameters())
        return loss * math.nan if big > 1.05 else loss

    opt = mldd.optim.APTS(model.parameters(), model=model, decomposition="data", n_shards=2,
                          n_rows=len(X), radius=1.0)
    for _ in range(10):
        opt.step(closure)
        assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
        assert math.isfinite(opt.last_info["loss"])
    assert opt.last_info["n_rejected"] > 0


# ---------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("kind,kw", [
    ("layers", {"global_pass": True}), ("data", {"n_shards": 3}),
    ("layers", {"reset_local_memory": True}),
])
def test_state_dict_resume_is_bit_identical(kind: str, kw: dict[str, Any]) -> None:
    def build(model: nn.Module) -> mldd.optim.APTS:
        extra = {"n_rows": 64} if kind == "data" else {}
        return mldd.optim.APTS(model.parameters(), model=model, decomposition=kind, **extra, **kw)

    model, X, y = _regression()
    closure = _rows(X, y) if kind == "data" else _plain(model, X, y)
    opt = build(model)
    for _ in range(6):
        opt.step(closure)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    solver_state = saved_opt["state"][0]["solver"]
    assert solver_state["current"] is not None and len(solver_state["local_solvers"]) == 3
    for _ in range(6):
        opt.step(closure)
    reference, info = _flat(model), opt.last_info

    model2, _, _ = _regression(seed=1)
    model2.load_state_dict(saved_model)
    opt2 = build(model2)
    opt2.load_state_dict(saved_opt)
    closure2 = _rows(X, y) if kind == "data" else _plain(model2, X, y)
    for _ in range(6):
        opt2.step(closure2)
    assert torch.equal(_flat(model2), reference)
    for key in ("loss", "radius_next", "grad_evals", "n_accepted", "n_f", "n_g"):
        assert opt2.last_info[key] == info[key]


# ---------------------------------------------------------------------- convergence


def _digits() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from mldd.problems import get

    p = get("digits", dtype="float64")
    X = p.x_train.reshape(len(p.x_train), -1)[:600]
    return X, p.y_train[:600], p.x_test.reshape(len(p.x_test), -1), p.y_test


@pytest.mark.parametrize("kind,iters,loss_bar", [("layers", 40, 0.05), ("data", 40, 0.15)])
def test_digits_small_mlp(kind: str, iters: int, loss_bar: float) -> None:
    X, Y, Xt, Yt = _digits()
    torch.manual_seed(0)
    model = MLP(64, 10, width=16, depth=2)
    with torch.no_grad():
        loss0 = float(F.cross_entropy(model(X), Y))
    if kind == "data":
        opt = mldd.optim.APTS(model.parameters(), model=model, decomposition="data", n_shards=4)

        def closure(m: nn.Module, rows: Tensor) -> Tensor:
            return F.cross_entropy(m(X[rows]), Y[rows])

        closure.n_rows = len(X)  # type: ignore[attr-defined]  # as the trainer sets it
    else:
        opt = mldd.optim.APTS(model.parameters(), model=model)

        def closure() -> Tensor:  # type: ignore[misc]
            return F.cross_entropy(model(X), Y)

    for _ in range(iters):
        opt.step(closure)
    with torch.no_grad():
        loss = float(F.cross_entropy(model(X), Y))
        acc = float((model(Xt).argmax(1) == Yt).double().mean())
    assert loss0 > 2.0 and loss < loss_bar
    assert acc > 0.9  # chance is 0.1; TrustRegion after 60 steps: 0.96


def test_rosenbrock_aligned_blocks_and_global_pass() -> None:
    obj = FunctionObjective(rosenbrock, n=4)
    for sizes, global_pass, max_iter in (([2, 2], False, 60), ([1, 1, 1, 1], True, 60)):
        solver = APTSSolver(APTSConfig(global_pass=global_pass))
        x = rosenbrock_start(4)
        for _ in range(max_iter):
            x = solver.iterate(ParameterBlocks(obj, Decomposition.from_sizes(sizes)), x).x
            if solver.stop_reason is not None:
                break
        assert float((x - 1).abs().max()) < 1e-6, (sizes, global_pass)


def test_coupled_quadratic_blocks_with_global_pass() -> None:
    g = torch.Generator().manual_seed(7)
    m = torch.randn(12, 12, generator=g, dtype=torch.float64)
    a = m @ m.T / 12 + torch.eye(12, dtype=torch.float64)
    b = torch.randn(12, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(a, b)
    obj = FunctionObjective(lambda x: 0.5 * x @ a @ x - b @ x, n=12)
    solver = APTSSolver(APTSConfig(global_pass=True))
    x = torch.zeros(12, dtype=torch.float64)
    for _ in range(60):
        x = solver.iterate(ParameterBlocks(obj, Decomposition.from_sizes([3] * 4)), x).x
    assert float((x - x_star).norm()) < 1e-7


def _least_squares(rows: int = 400) -> tuple[list[FunctionObjective], list[int], Tensor]:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(rows, 5, generator=g, dtype=torch.float64)
    b = A @ torch.randn(5, generator=g, dtype=torch.float64)
    b = b + 0.1 * torch.randn(rows, generator=g, dtype=torch.float64)
    shards = data_shards(rows, 4)
    objs = [FunctionObjective(lambda x, r=r: ((A[r] @ x - b[r]) ** 2).mean(), n=5)
            for r in shards]
    return objs, [len(r) for r in shards], torch.linalg.lstsq(A, b).solution


def test_data_shards_least_squares_mean_converges_sum_stalls() -> None:
    objs, sizes, x_star = _least_squares()
    errors = {}
    for combine in ("mean", "sum"):
        solver = APTSSolver(APTSConfig(combine=combine))
        x = torch.zeros(5, dtype=torch.float64)
        for _ in range(40):
            x = solver.iterate(DataShards(objs, sizes, combine=combine), x).x
        errors[combine] = float((x - x_star).norm())
    assert errors["mean"] < 1e-8
    # The documented limitation of summing N Newton-like shard steps near a minimiser.
    assert errors["sum"] > 1e-4


# ---------------------------------------------------------------------- errors


def test_wrong_closures_and_options_raise_clear_errors() -> None:
    model, X, y = _regression()
    data = mldd.optim.APTS(model.parameters(), model=model, decomposition="data", n_shards=2)
    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        data.step(_plain(model, X, y))
    with pytest.raises(ClosureError, match="n_rows"):
        data.step(_rows(X, y))
    with pytest.raises(ClosureError, match="needs a closure"):
        data.step(None)
    with pytest.raises(ValueError, match="model="):
        mldd.optim.APTS(model.parameters())
    with pytest.raises(ValueError, match="model="):
        mldd.optim.APTS(model.parameters(), decomposition="data", n_shards=2)
    with pytest.raises(ValueError, match="non-overlapping"):
        mldd.optim.APTS(model.parameters(), decomposition=Decomposition.by_layers(model,
                                                                                  overlap=1))
    with pytest.raises(ValueError, match="decomposition='bogus'"):
        mldd.optim.APTS(model.parameters(), model=model, decomposition="bogus")
    for bad in ({"local_iters": 0}, {"radius": 5.0}, {"combine": "max"}, {"shrink": 1.5},
                {"eta": 0.9, "eta_expand": 0.5}, {"hessian": "exact"},
                {"subproblem": "obs", "hessian": "lbfgs"},
                {"n_shards": 2, "decomposition": "layers"},
                {"blocks": 2, "decomposition": "data"}):
        with pytest.raises(ValueError):
            mldd.optim.APTS(model.parameters(), model=model, **bad)
    # A richer closure serves a parameter decomposition (it gets the optimizer's model).
    layers = mldd.optim.APTS(model.parameters(), model=model, decomposition="layers")
    layers.step(lambda m, rows: ((m(X) - y) ** 2).mean())
    assert layers.last_info["n_subdomains"] == 3


def _run_apts(closure: Any, steps: int, **kw: Any) -> tuple[mldd.optim.APTS, Tensor]:
    model, X, y = _regression()
    opt = mldd.optim.APTS(model.parameters(), model=model, **kw)
    for _ in range(steps):
        opt.step(closure(model, X, y))
    return opt, _flat(model)


@pytest.mark.parametrize("closure, n_rows, resolved", [
    (lambda model, X, y: _plain(model, X, y), None, "layers"),
    (lambda model, X, y: _rows(X, y), None, "layers"),   # rows closure, batch size unknown
    (lambda model, X, y: _rows(X, y), 64, "data"),
])
def test_auto_decomposition_follows_the_closure(closure: Any, n_rows: int | None,
                                               resolved: str, caplog: Any) -> None:
    kw = {} if n_rows is None else {"n_rows": n_rows}
    with caplog.at_level("INFO", logger="mldd.optim.apts"):
        auto, x_auto = _run_apts(closure, 4, **kw)
    assert auto.resolved_decomposition == resolved
    assert auto.last_info["decomposition"] == resolved
    said = [r.getMessage() for r in caplog.records if r.name == "mldd.optim.apts"]
    assert len(said) == 1  # announced once, at the first step
    assert ("2 data shards" if resolved == "data" else "3 layer blocks") in said[0]
    _, x_explicit = _run_apts(closure, 4, decomposition=resolved, **kw)
    assert torch.equal(x_auto, x_explicit)
    assert auto.last_info["n_subdomains"] == (2 if resolved == "data" else 3)


def test_auto_decomposition_is_fixed_by_the_first_step_and_resumes() -> None:
    model, X, y = _regression()
    opt = mldd.optim.APTS(model.parameters(), model=model, n_rows=64)
    assert opt.resolved_decomposition == "auto"
    opt.step(_rows(X, y))
    assert opt.resolved_decomposition == "data"
    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        opt.step(_plain(model, X, y))  # a later plain closure cannot switch the subdomains
    state = copy.deepcopy(opt.state_dict())
    x_saved = _flat(model)
    opt.step(_rows(X, y))
    opt.step(_rows(X, y))
    x_ref = _flat(model)
    fresh_model, _, _ = _regression()
    torch.nn.utils.vector_to_parameters(x_saved, fresh_model.parameters())
    fresh = mldd.optim.APTS(fresh_model.parameters(), model=fresh_model, n_rows=64)
    fresh.load_state_dict(state)
    assert fresh.resolved_decomposition == "data"
    fresh.step(_rows(X, y))
    fresh.step(_rows(X, y))
    assert torch.equal(_flat(fresh_model), x_ref)


def test_param_groups_decomposition_and_torch_contract() -> None:
    model, X, y = _regression()
    groups = [{"params": list(model[0].parameters())},
              {"params": list(model[2].parameters()) + list(model[4].parameters())}]
    opt = mldd.optim.APTS(groups, decomposition="param_groups")
    assert isinstance(opt, torch.optim.Optimizer) and len(opt.decomposition) == 2  # type: ignore[arg-type]
    closure = _plain(model, X, y)
    out = opt.step(closure)
    assert out.dim() == 0
    for _ in range(10):
        opt.step(closure)
    assert opt.last_info["loss"] < float(out)


# ---------------------------------------------------------------------- serial ≡ distributed


def _run(executor: Executor | None, kind: str, steps: int) -> list[Tensor]:
    model, X, y = _regression()
    if kind == "data":
        opt = mldd.optim.APTS(model.parameters(), model=model, decomposition="data", n_shards=4,
                              n_rows=len(X), executor=executor)
        closure = _rows(X, y)
    else:
        opt = mldd.optim.APTS(model.parameters(), model=model, global_pass=True,
                              executor=executor)
        closure = _plain(model, X, y)
    out = []
    for _ in range(steps):
        opt.step(closure)
        out.append(_flat(model))
    return out


def apts_rank(rank: int, world_size: int, steps: int) -> dict[str, list[Tensor]]:
    """Run on each spawned rank: both decompositions with the distributed executor."""
    from mldd.decomposition.distributed import DistributedExecutor

    ex = DistributedExecutor()
    return {kind: _run(ex, kind, steps) for kind in ("layers", "data")}


def test_serial_and_distributed_iterates_agree(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
    from dist_harness import run_ranks  # the shared spawn harness of the executor tests

    steps = 8
    outs = run_ranks(apts_rank, steps, tmp_path=tmp_path, timeout_s=30.0, deadline_s=120.0)
    assert [o.status for o in outs] == ["ok", "ok"], outs
    for kind in ("layers", "data"):
        serial = _run(None, kind, steps)
        for o in outs:
            for a, b in zip(o.value[kind], serial, strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
        # Every rank holds bitwise the same iterate.
        for a, b in zip(outs[0].value[kind], outs[1].value[kind], strict=True):
            assert torch.equal(a, b)
