"""MG/OPT (docs/algorithms.md §2.4): identities with its smoother, the line search on the coarse
correction, convergence, checkpoints and NaN safety."""

import copy
import io
import math

import pytest
import torch
from multilevel_toys import DT, laplace_problem, regression_data, resmlp

import mldd.optim
import mldd.problems
from mldd.multilevel import Hierarchy, MatrixTransfer
from mldd.multilevel.mgopt import MGOptConfig, MGOptSolver, TorchSmoother
from mldd.multilevel.problem import MultilevelProblem
from mldd.objective import ClosureError, FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.solvers import TrustRegionConfig, TrustRegionSolver


def test_one_level_is_the_trust_region_smoother():
    n = 8
    x0 = rosenbrock_start(n)
    tr = TrustRegionSolver(TrustRegionConfig())
    obj = FunctionObjective(rosenbrock, n)
    expected, x = [], x0
    for _ in range(40):
        x = tr.iterate(obj, x).x
        expected.append(x)
    solver = MGOptSolver(MGOptConfig(), [TrustRegionSolver(TrustRegionConfig())])
    seen = []
    solver.monitor = lambda e: seen.append(e["x"])
    problem = MultilevelProblem([FunctionObjective(rosenbrock, n)])
    x = x0
    while len(seen) < len(expected):
        x = solver.iterate(problem, x).x
    for k, (a, b) in enumerate(zip(seen, expected, strict=False)):
        assert torch.equal(a, b), k


def test_one_level_shell_is_its_torch_optimizer():
    X, Y = regression_data()
    m1, m2 = resmlp(), resmlp()
    adam = torch.optim.Adam(m1.parameters(), lr=1e-2)
    opt = mldd.optim.MGOpt(m2.parameters(), smoother=lambda p: torch.optim.Adam(p, lr=1e-2),
                           pre_smoothing=1, post_smoothing=0)
    for k in range(15):
        adam.zero_grad()
        loss = ((m1(X) - Y) ** 2).mean()
        loss.backward()
        adam.step()
        start = opt.step(lambda: ((m2(X) - Y) ** 2).mean())
        assert float(start) == float(loss.detach()), k
        for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
            assert torch.equal(p, q), k


# -- the line search on the prolongated coarse correction --------------------------------------
@pytest.mark.parametrize("line_search", ["armijo", "wolfe"])
def test_accepted_corrections_have_sufficient_decrease(line_search):
    make, n = laplace_problem(levels=3)
    cfg = MGOptConfig(line_search=line_search)
    solver = MGOptSolver(cfg, [TrustRegionSolver(TrustRegionConfig()) for _ in range(3)])
    events = []
    solver.monitor = lambda e: events.append(e) if e["event"] == "correction" else None
    problem = make()
    f = make().fine  # an independent copy to check with
    x = torch.zeros(n, dtype=DT)
    f0 = float(f.value(x))
    for _ in range(10):
        x = solver.iterate(problem, x).x
    fine_events = [e for e in events if e["level"] == 2]
    assert sum(e["accepted"] for e in fine_events) >= 5
    for e in events:
        level_f = f if e["level"] == 2 else None
        if level_f is None:
            continue
        fx, gx = level_f.value_and_grad(e["x_before"])
        slope = float(gx @ e["direction"])
        assert slope < 0
        if e["accepted"]:
            t = e["step_length"]
            assert torch.equal(e["x"], e["x_before"] + t * e["direction"])
            assert float(level_f.value(e["x"])) <= float(fx) + cfg.c1 * t * slope
        else:
            assert torch.equal(e["x"], e["x_before"])
    assert float(f.value(x)) < f0


def _two_by_one(quartic: float, R_sign: float = 1.0):
    P = torch.ones(2, 1, dtype=DT)
    fine = FunctionObjective(lambda x: -(x.sum()) + quartic * x.sum() ** 4, 2)
    coarse = FunctionObjective(lambda y: -2.0 * y.sum(), 1)
    return MultilevelProblem([coarse, fine], [MatrixTransfer(P, R=R_sign * P.T)])


def test_ascent_correction_is_rejected():
    """With R = −Pᵀ the coarse descent prolongates to an ascent direction: never taken."""
    solver = MGOptSolver(MGOptConfig(pre_smoothing=0, post_smoothing=0),
                         [TrustRegionSolver(TrustRegionConfig()) for _ in range(2)])
    x = torch.zeros(2, dtype=DT)
    res = solver.iterate(_two_by_one(1.0, R_sign=-1.0), x)
    assert torch.equal(res.x, x)
    assert res.info["coarse_skipped"] == 1
    assert "not a descent direction" in res.info["skip_reasons"][0]


def test_correction_without_sufficient_decrease_is_rejected():
    solver = MGOptSolver(MGOptConfig(pre_smoothing=0, post_smoothing=0, max_evals=1),
                         [TrustRegionSolver(TrustRegionConfig()) for _ in range(2)])
    x = torch.zeros(2, dtype=DT)
    problem = _two_by_one(50.0)
    res = solver.iterate(problem, x)
    assert torch.equal(res.x, x) and res.info["coarse_rejected"] == 1
    # with a budget, backtracking finds a decrease along the same direction
    solver = MGOptSolver(MGOptConfig(pre_smoothing=0, post_smoothing=0, max_evals=20),
                         [TrustRegionSolver(TrustRegionConfig()) for _ in range(2)])
    res = solver.iterate(_two_by_one(50.0), x)
    assert res.info["coarse_accepted"] == 1 and 0 < res.info["step_length"] < 1
    assert res.info["loss"] < 0.0


# -- convergence -------------------------------------------------------------------------------
def test_pinn_poisson_two_levels_with_adam_smoother():
    prob = mldd.problems.get("poisson2d", n_collocation=64)
    net = resmlp(depth=5, width=8, d_in=2, seed=0)
    opt = mldd.optim.MGOpt(net.parameters(), model=net, levels=2,
                           smoother=lambda p: torch.optim.Adam(p, lr=3e-2))
    loss0 = float(prob.loss(net).detach())
    for _ in range(10):
        opt.step(lambda m: prob.loss(m))
    loss = float(prob.loss(net).detach())
    # measured: 745 -> 579 (0.78); a method that does not move stays at 1.0
    assert loss < 0.9 * loss0, (loss0, loss)
    assert opt.last_info["n_coarse_accepted"] >= 3


def test_digits_two_levels_with_trust_region_smoother():
    prob = mldd.problems.get("digits", dtype=DT)
    X, Y = prob.x_train[:300], prob.y_train[:300]
    net = resmlp(depth=5, width=8, d_in=64, d_out=10, seed=0, flatten=True)
    opt = mldd.optim.MGOpt(net.parameters(), hierarchy=Hierarchy.build(net, levels=2))

    def closure(m):
        return torch.nn.functional.cross_entropy(m(X), Y)

    loss0 = float(closure(net).detach())
    for _ in range(8):
        opt.step(closure)
    loss = float(closure(net).detach())
    # measured: 2.47 -> 0.118, test accuracy 0.89
    assert loss < 0.2 * loss0, (loss0, loss)
    assert prob.metric(net) > 0.8
    assert opt.last_info["n_coarse_accepted"] >= 4


# -- checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize("smoother", ["tr", "adam"])
def test_state_dict_round_trip_resumes_identically(smoother):
    X, Y = regression_data()

    def closure(m):
        return ((m(X) - Y) ** 2).mean()

    def build(net):
        kw = {} if smoother == "tr" else {"smoother": lambda p: torch.optim.Adam(p, lr=5e-3)}
        return mldd.optim.MGOpt(net.parameters(), hierarchy=Hierarchy.build(net, levels=2),
                                cycle="W", **kw)

    net = resmlp(depth=5)
    opt = build(net)
    for _ in range(3):
        opt.step(closure)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "net": copy.deepcopy(net.state_dict())}, buf)
    reference = []
    for _ in range(4):
        opt.step(closure)
        reference.append([p.detach().clone() for p in net.parameters()])
    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    net2 = resmlp(depth=5, seed=3)
    net2.load_state_dict(saved["net"])
    opt2 = build(net2)
    opt2.load_state_dict(saved["opt"])
    for k in range(4):
        opt2.step(closure)
        for p, q in zip(reference[k], net2.parameters(), strict=True):
            assert torch.equal(p, q), k
    assert opt2.last_info["grad_evals"] == opt.last_info["grad_evals"]


# -- closures, options, NaN --------------------------------------------------------------------
def test_closure_kind_and_options_are_checked():
    net = resmlp(depth=5)
    opt = mldd.optim.MGOpt(net.parameters(), hierarchy=Hierarchy.build(net, levels=2))
    with pytest.raises(ClosureError, match=r"closure\(model\)"):
        opt.step(lambda: net(torch.zeros(1, 3, dtype=DT)).sum())
    with pytest.raises(ValueError, match="smoother must be 'tr' or a factory"):
        mldd.optim.MGOpt(net.parameters(), smoother="adam")
    with pytest.raises(ValueError, match="line_search='backtracking' is not allowed"):
        MGOptConfig(line_search="backtracking")
    with pytest.raises(ValueError, match="backtrack must lie in"):
        MGOptConfig(backtrack=1.0)
    with pytest.raises(ValueError, match=r"must return a torch\.optim\.Optimizer"):
        TorchSmoother(lambda p: None).iterate(FunctionObjective(lambda x: x.sum(), 2),
                                              torch.zeros(2, dtype=DT))


@pytest.mark.parametrize("smoother", ["tr", "sgd"])
def test_nan_never_reaches_the_parameters(smoother):
    X, Y = regression_data()
    net = resmlp(depth=5)
    kw = {} if smoother == "tr" else {"smoother": lambda p: torch.optim.SGD(p, lr=0.5)}
    opt = mldd.optim.MGOpt(net.parameters(), hierarchy=Hierarchy.build(net, levels=2), **kw)
    calls = [0]

    def closure(m):
        calls[0] += 1
        loss = ((m(X) - Y) ** 2).mean()
        return loss * float("nan") if calls[0] % 3 == 0 else loss

    for _ in range(6):
        opt.step(closure)
        for p in net.parameters():
            assert torch.isfinite(p).all()
    assert math.isfinite(float(((net(X) - Y) ** 2).mean().detach()))


def test_loss_is_reported_only_when_known():
    """After a torch smoother's step the loss is unknown: absent, not NaN (a NaN loss would
    stop mldd.train.Trainer)."""
    X, Y = regression_data()
    net = resmlp(depth=5)
    adam = mldd.optim.MGOpt(net.parameters(), hierarchy=Hierarchy.build(net, levels=2),
                            smoother=lambda p: torch.optim.Adam(p, lr=1e-2))
    adam.step(lambda m: _mse(m, X, Y))
    assert "loss" not in adam.last_info and math.isfinite(adam.last_info["loss_start"])
    net2 = resmlp(depth=5)
    tr = mldd.optim.MGOpt(net2.parameters(), hierarchy=Hierarchy.build(net2, levels=2))
    tr.step(lambda m: _mse(m, X, Y))
    assert tr.last_info["loss"] == pytest.approx(float(_mse(net2, X, Y).detach()), rel=1e-12)


def _mse(m, X, Y):
    return ((m(X) - Y) ** 2).mean()
