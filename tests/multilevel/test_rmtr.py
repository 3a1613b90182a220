"""RMTR (docs/algorithms.md §2.3): identities, the coarse-correction ratio test, the fine trust
region seen from the coarse levels, convergence, checkpoints, closures and NaN safety."""

import copy
import io
import itertools
import math

import pytest
import torch
from multilevel_toys import DT, laplace_problem, regression_data, resmlp

import mldd.optim
import mldd.problems
from mldd.multilevel import Hierarchy, MatrixTransfer
from mldd.multilevel.batch_schedule import ConstantBatchSize, GeometricBatchSize
from mldd.multilevel.problem import MultilevelProblem, evaluation_cost
from mldd.multilevel.rmtr import RMTRConfig, RMTRSolver
from mldd.objective import ClosureError, FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.solvers import TrustRegionConfig, TrustRegionSolver

TR_VARIANTS = {
    "lsr1-obs": {},
    "lsr1-linf": {"norm": "linf"},
    "lbfgs-cg": {"hessian": "lbfgs"},
    "exact-cg": {"hessian": "exact"},
}


# -- one level is the trust-region method ------------------------------------------------------
@pytest.mark.parametrize("variant", list(TR_VARIANTS))
def test_one_level_is_trust_region_iterate_by_iterate(variant):
    tr_cfg = TR_VARIANTS[variant]
    n = 10
    x0 = rosenbrock_start(n)
    tr = TrustRegionSolver(TrustRegionConfig(**tr_cfg))
    obj = FunctionObjective(rosenbrock, n)
    expected, x = [], x0
    for _ in range(60):
        x = tr.iterate(obj, x).x
        expected.append(x)

    solver = RMTRSolver(RMTRConfig(trust_region=TrustRegionConfig(**tr_cfg)), 1)
    seen = []
    solver.monitor = lambda e: seen.append(e["x"]) if e["event"] == "iterate" else None
    problem = MultilevelProblem([FunctionObjective(rosenbrock, n)])
    x = x0
    while len(seen) < len(expected):
        x = solver.iterate(problem, x).x
    assert len(seen) >= 60
    for k, (a, b) in enumerate(zip(seen, expected, strict=False)):
        assert torch.equal(a, b), f"iterate {k} differs by {(a - b).abs().max():.3g}"


def test_one_level_shell_is_trust_region_step_by_step():
    X, Y = regression_data()
    m1, m2 = resmlp(), resmlp()
    o1 = mldd.optim.TrustRegion(m1.parameters())
    o2 = mldd.optim.RMTR(m2.parameters(), pre_smoothing=1, post_smoothing=0)

    def closure_for(m, opt):
        def closure():  # torch style: zero_grad, loss, backward
            opt.zero_grad()
            loss = ((m(X) - Y) ** 2).mean()
            loss.backward()
            return loss
        return closure

    loss0 = float(((m1(X) - Y) ** 2).mean().detach())
    for k in range(15):
        l1 = o1.step(closure_for(m1, o1))
        l2 = o2.step(closure_for(m2, o2))
        assert torch.equal(l1, l2), k
        for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
            assert torch.equal(p, q), k
        assert o1.radius == o2.radius
    assert o2.last_info["loss"] == o1.last_info["loss"] < 0.5 * loss0


# -- the coarse correction: ratio test ---------------------------------------------------------
def _two_by_one(quartic: float):
    """Fine f(x) = −(x1 + x2) + q (x1 + x2)⁴ on R², coarse f_c(y) = −2y on R, P = [1, 1]ᵀ."""
    P = torch.ones(2, 1, dtype=DT)
    fine = FunctionObjective(lambda x: -(x.sum()) + quartic * x.sum() ** 4, 2)
    coarse = FunctionObjective(lambda y: -2.0 * y.sum(), 1)
    return MultilevelProblem([coarse, fine], [MatrixTransfer(P)])


@pytest.mark.parametrize("correction_radius", ["separate", "shared"])
@pytest.mark.parametrize("quartic, accept", [(50.0, False), (1e-3, True)])
def test_coarse_correction_needs_rho_above_rho_tol(quartic, accept, correction_radius):
    cfg = RMTRConfig(pre_smoothing=0, post_smoothing=0, correction_radius=correction_radius)
    solver = RMTRSolver(cfg, 2)

    def radius_after():
        # "separate": the ratio test updates the corrections' own radius, not the smoother's
        if correction_radius == "separate":
            assert solver.radius == 1.0
            return solver.correction_radii[-1]
        return solver.radius

    events = []
    solver.monitor = events.append
    x = torch.zeros(2, dtype=DT)
    res = solver.iterate(_two_by_one(quartic), x)
    (corr,) = [e for e in events if e["event"] == "correction"]
    # the coarse model promised a decrease: the fine region (Δ = 1) was filled along P
    assert corr["predicted_reduction"] > 1.0
    assert float(torch.linalg.vector_norm(corr["trial"] - x)) == pytest.approx(1.0, rel=1e-9)
    rho_tol = cfg.trust_region.policy.rho_tol
    assert corr["accepted"] is accept and (corr["rho"] > rho_tol) is accept
    if accept:
        assert torch.equal(res.x, corr["trial"]) and res.info["coarse_accepted"] == 1
        assert radius_after() == 2.5  # very successful: expanded
    else:
        assert corr["rho"] < 0  # the fine loss went up
        assert torch.equal(res.x, x) and res.info["coarse_rejected"] == 1
        assert radius_after() == 0.25  # shrunk by γ1
        assert res.info["loss"] == 0.0


def test_every_correction_obeys_the_ratio_test():
    make, n = laplace_problem(levels=3)
    solver = RMTRSolver(RMTRConfig(trust_region=TrustRegionConfig(radius=0.5)), 3)
    events = []
    solver.monitor = events.append
    x = torch.zeros(n, dtype=DT)
    problem = make()
    for _ in range(15):
        x = solver.iterate(problem, x).x
    corrections = [e for e in events if e["event"] == "correction"]
    assert len(corrections) >= 15
    rho_tol = solver.config.trust_region.policy.rho_tol
    for e in corrections:
        assert e["accepted"] == (e["rho"] > rho_tol)
        assert torch.equal(e["x"], e["trial"] if e["accepted"] else e["x_before"])


# -- the coarse iterates stay in the fine trust region -----------------------------------------
def _norm(v, norm):
    return float(torch.linalg.vector_norm(v, ord=2 if norm == "l2" else math.inf))


@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("p_scale", [1.0, 2.0])
@pytest.mark.parametrize("cycle", ["V", "W"])
def test_coarse_iterates_stay_inside_the_fine_trust_region(norm, p_scale, cycle):
    L = 3
    make, n = laplace_problem(levels=L, p_scale=p_scale)
    cfg = RMTRConfig(cycle=cycle, trust_region=TrustRegionConfig(norm=norm, radius=0.05))
    solver = RMTRSolver(cfg, L)
    regions = {}  # coarse level -> the finer region it must respect (latest descend)
    worst, checked = [0.0], [0]

    def inside(level, x):
        """x at `level` stands for a point inside every finer trust region."""
        while level < L - 1:
            r = regions[level]
            d = r["transfer"].prolong(x - r["x0"])
            size, radius = _norm(d, norm), r["radius"]
            worst[0] = max(worst[0], size / radius)
            # exact up to the rounding of x itself (x − x0 cancels when the radius is tiny)
            slack = 1e-12 * radius + 1e-14 * max(1.0, _norm(x, norm))
            assert size <= radius + slack, (level, size / radius, radius)
            x, level = r["center"] + d, level + 1
        checked[0] += 1

    def monitor(e):
        if e["event"] == "descend":
            regions[e["level"]] = e
        elif e["event"] in ("iterate", "correction") and e["level"] < L - 1:
            inside(e["level"], e["x"])
            if e.get("trial") is not None:
                inside(e["level"], e["trial"])

    solver.monitor = monitor
    x = torch.zeros(n, dtype=DT)
    problem = make()
    f0 = float(problem.fine.value(x))
    for _ in range(8):
        x = solver.iterate(problem, x).x
    assert checked[0] > 20
    assert worst[0] > 0.99  # the constraint was active, so the test is not vacuous
    assert float(problem.fine.value(x)) < f0


# -- convergence -------------------------------------------------------------------------------
def test_pinn_poisson_two_levels_decreases_the_loss():
    prob = mldd.problems.get("poisson2d", n_collocation=64)
    net = resmlp(depth=5, width=8, d_in=2, seed=0)
    h = Hierarchy.build(net, levels=2, coarsen="depth")
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=h)
    loss0 = float(prob.loss(net).detach())
    for _ in range(12):
        opt.step(lambda m: prob.loss(m))
    info = opt.last_info
    # measured: 745 -> 520 (0.70); a method that never moves stays at 1.0
    assert info["loss"] < 0.8 * loss0, (loss0, info["loss"])
    assert info["n_coarse_accepted"] >= 5
    assert info["levels"][0]["n_g"] > 0


def test_digits_three_levels_trains():
    prob = mldd.problems.get("digits", dtype=DT)
    X, Y = prob.x_train[:300], prob.y_train[:300]
    net = resmlp(depth=9, width=8, d_in=64, d_out=10, seed=0, flatten=True)
    h = Hierarchy.build(net, levels=3, coarsen="depth")
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=h)

    def closure(m):
        return torch.nn.functional.cross_entropy(m(X), Y)

    loss0 = float(closure(net).detach())
    for _ in range(8):
        opt.step(closure)
    loss = float(closure(net).detach())
    # measured: 2.38 -> 0.13 and test accuracy 0.92 (10 classes: chance is 0.1)
    assert loss < 0.2 * loss0, (loss0, loss)
    assert prob.metric(net) > 0.8
    assert opt.last_info["n_coarse_accepted"] >= 5


# -- cost accounting ---------------------------------------------------------------------------
def test_cost_is_reported_in_fine_gradient_equivalents():
    X, Y = regression_data()
    net = resmlp(depth=5)
    h = Hierarchy.build(net, levels=2, coarsen="depth")
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=h)
    for _ in range(3):
        opt.step(lambda m: ((m(X) - Y) ** 2).mean())
    counts = opt.level_counters
    ratio = h[0].n_params / h[1].n_params
    expected = ratio * max(counts[0].n_f, counts[0].n_g) + max(counts[1].n_f, counts[1].n_g)
    assert opt.last_info["grad_evals"] == pytest.approx(expected)
    assert counts[0].n_g > 0 and counts[1].n_g > 0
    assert evaluation_cost(counts, [h[0].cost, 1.0]) == pytest.approx(expected)
    assert opt.last_info["n_g"] == counts[1].n_g


# -- checkpoints -------------------------------------------------------------------------------
def _rmtr_run(net, h, schedule=None, **kw):
    return mldd.optim.RMTR(net.parameters(), hierarchy=h, batch_schedule=schedule, **kw)


@pytest.mark.parametrize("kw", [{}, {"cycle": "W", "norm": "linf", "reuse_evaluations": False}])
def test_state_dict_round_trip_resumes_identically(kw):
    X, Y = regression_data()

    def closure(m):
        return ((m(X) - Y) ** 2).mean()

    net = resmlp(depth=5)
    opt = _rmtr_run(net, Hierarchy.build(net, levels=2, coarsen="depth"),
                    GeometricBatchSize(8, patience=1), **kw)
    for _ in range(4):
        opt.step(closure)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "net": copy.deepcopy(net.state_dict())}, buf)
    reference = []
    for _ in range(5):
        opt.step(closure)
        reference.append([p.detach().clone() for p in net.parameters()])

    buf.seek(0)
    saved = torch.load(buf, weights_only=False)
    net2 = resmlp(depth=5, seed=7)
    net2.load_state_dict(saved["net"])
    schedule = GeometricBatchSize(8, patience=1)
    opt2 = _rmtr_run(net2, Hierarchy.build(net2, levels=2, coarsen="depth"), schedule, **kw)
    opt2.load_state_dict(saved["opt"])
    assert opt2.radius == saved["opt"]["state"][0]["solver"]["core"]["solvers"][-1]["radius"]
    assert schedule.batch_size == saved["opt"]["state"][0]["solver"]["core"]["batch_schedule"][
        "size"]
    for k in range(5):
        opt2.step(closure)
        for p, q in zip(reference[k], net2.parameters(), strict=True):
            assert torch.equal(p, q), k
    assert opt2.level_counters[0].as_dict() == opt.level_counters[0].as_dict()
    assert opt2.last_info["grad_evals"] == opt.last_info["grad_evals"]


# -- closures ----------------------------------------------------------------------------------
def test_wrong_closure_kind_raises_closure_error():
    X, Y = regression_data()
    net = resmlp(depth=5)
    depth = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2))
    with pytest.raises(ClosureError, match=r"closure\(model\) -> loss"):
        depth.step(lambda: ((net(X) - Y) ** 2).mean())
    with pytest.raises(ClosureError, match=r"closure\(model\)"):
        depth.step()

    net2 = resmlp(depth=5)
    data = mldd.optim.RMTR(net2.parameters(), model=net2, levels=2, coarsen="data",
                           n_rows=X.shape[0])
    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        data.step(lambda m: ((m(X) - Y) ** 2).mean())
    data.step(lambda m, rows: ((m(X[rows] if rows is not None else X)
                                - (Y[rows] if rows is not None else Y)) ** 2).mean())
    assert data.last_info["levels"][0]["n_g"] > 0

    plain = mldd.optim.RMTR(resmlp().parameters())
    with pytest.raises(ClosureError, match="no model"):
        plain.step(lambda m: ((m(X) - Y) ** 2).mean())


def test_constructor_validation():
    net = resmlp(depth=5)
    with pytest.raises(ValueError, match="cycle='F' is not allowed"):
        mldd.optim.RMTR(net.parameters(), cycle="F")
    with pytest.raises(ValueError, match="exactly the finest level"):
        mldd.optim.RMTR(resmlp(depth=5).parameters(), hierarchy=Hierarchy.build(net, levels=2))
    with pytest.raises(ValueError, match="either hierarchy= or model="):
        mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2), model=net)
    with pytest.raises(ValueError, match="pre_successes must be an integer >= 1"):
        RMTRConfig(pre_successes=0)
    with pytest.raises(ValueError, match="coarse_model='cubic'"):
        RMTRConfig(coarse_model="cubic")


# -- NaN / Inf never reach the parameters ------------------------------------------------------
def test_nan_trial_losses_are_rejected():
    X, Y = regression_data()
    net = resmlp(depth=5)
    start = torch.nn.utils.parameters_to_vector(net.parameters()).detach().clone()

    def closure(m):
        loss = ((m(X) - Y) ** 2).mean()
        w = torch.nn.utils.parameters_to_vector(m.parameters()).detach()
        # the fine network is "NaN land" more than 0.3 away from where it started
        far = m is net and float(torch.linalg.vector_norm(w - start)) > 0.3
        return loss * float("nan") if far else loss

    opt = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2),
                          radius=5.0)
    for _ in range(10):
        opt.step(closure)
        w = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
        assert torch.isfinite(w).all()
        assert float(torch.linalg.vector_norm(w - start)) <= 0.3
        assert math.isfinite(opt.last_info["loss"])
    assert opt.radius < 5.0


def test_nan_everywhere_stops_without_moving():
    net = resmlp(depth=5)
    before = [p.detach().clone() for p in net.parameters()]
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2))
    opt.step(lambda m: m(torch.zeros(2, 3, dtype=DT)).sum() * float("nan"))
    assert opt.last_info["stop_reason"] and "NaN" in opt.last_info["stop_reason"]
    for p, q in zip(before, net.parameters(), strict=True):
        assert torch.equal(p, q)


def test_nan_coarse_level_skips_the_correction():
    X, Y = regression_data()
    net = resmlp(depth=5)
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2))

    def closure(m):
        loss = ((m(X) - Y) ** 2).mean()
        return loss if m is net else loss * float("inf")

    loss0 = float(closure(net).detach())
    for _ in range(5):
        opt.step(closure)
    assert opt.last_info["n_coarse_accepted"] == 0
    assert opt.last_info["n_coarse_skipped"] + opt.last_info["n_coarse_rejected"] >= 5
    assert opt.last_info["loss"] < loss0  # the smoothing still trains the fine network


# -- stochastic use ----------------------------------------------------------------------------
def test_geometric_batch_schedule_grows_on_stagnation():
    s = GeometricBatchSize(16, factor=2.0, maximum=50, patience=2, rtol=1e-2)
    s.update(1.0, 0.5)   # progress
    s.update(1.0, 0.995)  # stagnates (below 1 %)
    assert s.batch_size == 16
    s.update(1.0, 1.0)
    assert s.batch_size == 32 and s.stagnant == 0
    s.update(1.0, float("nan"))
    s.update(1.0, 1.0)
    assert s.batch_size == 50  # capped
    t = GeometricBatchSize(1)
    t.load_state_dict(s.state_dict())
    assert (t.batch_size, t.stagnant, t.n_growths) == (50, 0, 2)
    assert ConstantBatchSize(7).batch_size == 7
    with pytest.raises(ValueError, match="factor must be a finite number > 1"):
        GeometricBatchSize(8, factor=1.0)
    with pytest.raises(ValueError, match="maximum=4 is below initial=8"):
        GeometricBatchSize(8, maximum=4)


def test_minibatch_cycles_hold_the_batch_and_grow_it():
    """Each step draws a batch of opt.batch_size rows; the batch is fixed within the step."""
    X, Y = regression_data(n=64)
    net = resmlp(depth=5)
    # small batches are fitted fast (measured: −50…−80 % per cycle on its own batch), so a
    # cycle counts as stagnating below a 75 % decrease here: the wiring is what is tested.
    schedule = GeometricBatchSize(8, factor=2.0, maximum=64, patience=1, rtol=0.75)
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2),
                          reuse_evaluations=False, batch_schedule=schedule)
    gen = torch.Generator().manual_seed(0)
    sizes, n_f = [], []
    for _ in range(8):
        sizes.append(opt.batch_size)
        idx = torch.randperm(64, generator=gen)[: opt.batch_size]
        seen = set()

        def make_closure(idx, seen):
            def closure(m):
                seen.add(tuple(idx.tolist()))
                return ((m(X[idx]) - Y[idx]) ** 2).mean()
            return closure

        opt.step(make_closure(idx, seen))
        assert len(seen) == 1
        assert opt.last_info["batch_size"] == opt.batch_size
        n_f.append(opt.last_info["n_f"])
    assert sizes[0] == 8 and sizes[-1] >= 32
    assert all(b >= a for a, b in itertools.pairwise(sizes))
    assert all(b > a for a, b in itertools.pairwise(n_f))  # re-evaluated every step
    full = float(((net(X) - Y) ** 2).mean().detach())
    assert full < float(((resmlp(depth=5)(X) - Y) ** 2).mean().detach())


# -- options: coarse models, Hessians, descent test, per-level overrides -------------------------
@pytest.mark.parametrize("coarse_model, hessian",
                         [("additive", "exact"), ("multiplicative", "lsr1"), ("hybrid", "lbfgs")])
def test_coarse_model_and_hessian_variants_train(coarse_model, hessian):
    X, Y = regression_data()
    net = resmlp(depth=5)
    opt = mldd.optim.RMTR(net.parameters(), hierarchy=Hierarchy.build(net, levels=2),
                          coarse_model=coarse_model, hessian=hessian)
    loss0 = float(((net(X) - Y) ** 2).mean().detach())
    for _ in range(4):
        opt.step(lambda m: ((m(X) - Y) ** 2).mean())
    assert opt.last_info["loss"] < 0.7 * loss0
    assert opt.last_info["n_coarse_accepted"] >= 1
    if hessian == "exact":
        assert opt.last_info["levels"][0]["n_hvp"] > 0


def test_multiplicative_model_at_zero_coarse_loss_warns_and_skips():
    make, n = laplace_problem(levels=2)
    solver = RMTRSolver(RMTRConfig(coarse_model="multiplicative", pre_smoothing=0,
                                   post_smoothing=3), 2)
    x = torch.zeros(n, dtype=DT)  # f_c(Π·0) = 0 exactly
    with pytest.warns(RuntimeWarning, match="zero or too small"):
        res = solver.iterate(make(), x)
    assert res.info["coarse_skipped"] == 1
    assert res.info["skip_reasons"] == ["coarse model unavailable"]
    assert res.info["loss"] < 0.0  # post-smoothing still moved


def test_descent_test_references():
    from mldd.multilevel.problem import descent_test

    g = torch.tensor([3.0, 4.0], dtype=DT)  # ‖g‖ = 5
    rg = torch.tensor([0.5], dtype=DT)
    assert not descent_test(g, rg, kappa_g=0.125, tol=1e-9)  # 0.5 < 5/8
    assert descent_test(g, rg, kappa_g=0.1, tol=1e-9)
    assert not descent_test(g, rg, kappa_g=0.1, tol=0.5)  # ‖R g‖ must exceed ε
    gc = torch.tensor([1.0], dtype=DT)
    assert descent_test(g, rg, kappa_g=0.5, tol=1e-9, g_coarse=gc, reference="coarse")
    assert not descent_test(g, rg, kappa_g=0.6, tol=1e-9, g_coarse=gc, reference="coarse")
    with pytest.raises(ValueError, match="needs g_coarse"):
        descent_test(g, rg, kappa_g=0.1, tol=0.0, reference="coarse")
    make, n = laplace_problem(levels=2)
    solver = RMTRSolver(RMTRConfig(descent_reference="coarse"), 2)
    x = torch.zeros(n, dtype=DT)
    for _ in range(3):
        x = solver.iterate(make(), x).x
    assert solver.n_coarse_accepted >= 1


def test_per_level_options_from_the_hierarchy():
    X, Y = regression_data()

    def run(options):
        net = resmlp(depth=9)
        h = Hierarchy.build(net, levels=3, coarsen="depth", options=options)
        opt = mldd.optim.RMTR(net.parameters(), hierarchy=h)
        for _ in range(3):
            opt.step(lambda m: ((m(X) - Y) ** 2).mean())
        return opt.last_info["levels"]

    base = run(None)
    more = run({"coarse_iterations": [25, 2, 2], "coarse_successes": [25, 1, 1]})
    none = run({"pre_smoothing": [3, 0, 3], "post_smoothing": [3, 0, 3]})
    assert more[0]["n_g"] > base[0]["n_g"]
    assert none[1]["n_g"] < base[1]["n_g"]
    net = resmlp(depth=5)
    with pytest.raises(ValueError, match="unknown per-level options"):
        mldd.optim.RMTR(net.parameters(),
                        hierarchy=Hierarchy.build(net, levels=2, options={"trials": 3}))


def test_parameter_groups_as_dicts_with_generators():
    X, Y = regression_data()
    net = resmlp(depth=5)
    opt = mldd.optim.RMTR([{"params": net.parameters()}], model=net, levels=2)
    opt.step(lambda m: ((m(X) - Y) ** 2).mean())
    assert len(opt.param_groups[0]["params"]) == len(list(net.parameters()))
    assert opt.last_info["cycle"] == 1


def test_data_levels_refuse_a_changing_batch_size():
    net = resmlp(depth=5)
    with pytest.raises(ValueError, match="data levels"):
        mldd.optim.RMTR(net.parameters(), model=net, levels=2, coarsen="data", n_rows=48,
                        batch_schedule=GeometricBatchSize(16))
    mldd.optim.RMTR(net.parameters(), model=net, levels=2, coarsen="data", n_rows=48,
                    batch_schedule=ConstantBatchSize(48))


# -- coarse memory, coarse radius and correction radius between visits --------------------------
def _visits(memory, radius, correction="separate"):
    """(pairs in the coarse memory, coarse radius, finer radius) at each descent."""
    make, n = laplace_problem(levels=2)
    cfg = RMTRConfig(coarse_memory=memory, coarse_radius=radius, correction_radius=correction,
                     trust_region=TrustRegionConfig(radius=0.5))
    solver = RMTRSolver(cfg, 2)
    seen = []

    def monitor(e):
        if e["event"] == "descend":
            coarse = solver.solvers[0]
            seen.append((len(coarse.memory), coarse.radius, e["radius"]))

    solver.monitor = monitor
    x = torch.zeros(n, dtype=DT)
    problem = make()
    f0 = float(problem.fine.value(x))
    for _ in range(6):
        x = solver.iterate(problem, x).x
    assert float(problem.fine.value(x)) < f0
    return seen


def test_coarse_memory_keep_carries_pairs_across_visits_and_reset_empties_it():
    kept = _visits("keep", "fine")
    reset = _visits("reset", "fine")
    assert len(kept) >= 3 and len(reset) >= 3
    assert all(pairs == 0 for pairs, _, _ in reset)
    assert kept[0][0] == 0 and all(pairs > 0 for pairs, _, _ in kept[1:])


def test_coarse_radius_fine_starts_at_the_finer_radius_and_keep_never_exceeds_it():
    fine = _visits("keep", "fine")
    assert all(r == parent for _, r, parent in fine)
    kept = _visits("keep", "keep")
    assert all(r <= parent for _, r, parent in kept)
    # the coarse level's own radius is remembered, so it differs from the finer one somewhere
    assert any(r < parent for _, r, parent in kept)


def test_correction_radius_separate_leaves_the_smoother_radius_alone():
    make, n = laplace_problem(levels=2)
    for mode in ("separate", "shared"):
        cfg = RMTRConfig(correction_radius=mode, pre_smoothing=0, post_smoothing=0,
                         trust_region=TrustRegionConfig(radius=0.5))
        solver = RMTRSolver(cfg, 2)
        x = torch.zeros(n, dtype=DT)
        for _ in range(4):
            x = solver.iterate(make(), x).x
        assert solver.n_coarse_accepted >= 1
        if mode == "separate":
            # no smoothing ran: only the corrections' radius moved (very successful: grew)
            assert solver.radius == 0.5 and solver.correction_radii[-1] > 0.5
        else:
            assert solver.radius > 0.5 and solver.correction_radii[-1] == 0.5


@pytest.mark.parametrize("key", ["coarse_memory", "coarse_radius", "correction_radius"])
def test_visit_options_are_validated(key):
    with pytest.raises(ValueError, match=key):
        RMTRConfig(**{key: "sometimes"})
    net = resmlp(depth=5)
    with pytest.raises(ValueError, match=key):
        mldd.optim.RMTR(net.parameters(), model=net, levels=2, **{key: "sometimes"})
