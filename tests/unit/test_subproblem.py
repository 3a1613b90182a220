"""Unit tests of the trust-region subproblem solvers against a dense exact reference (float64)."""

from __future__ import annotations

import math

import pytest
import torch

from mldd.quasinewton import LBFGSMemory, LSR1Memory
from mldd.subproblem import (
    SubproblemResult,
    cauchy_point,
    solve,
    solve_obs,
    steihaug_cg,
)

DT = torch.float64
NORMS = ("l2", "linf")


# --------------------------------------------------------------------------- dense reference
def model(B: torch.Tensor, g: torch.Tensor, s: torch.Tensor) -> float:
    return float(g @ s + 0.5 * s @ (B @ s))


def exact_tr(B: torch.Tensor, g: torch.Tensor, radius: float) -> tuple[torch.Tensor, float, bool]:
    """Dense exact l2 TR solution by eigendecomposition and bisection on σ (hard case included).

    Returns (step, σ, unique) — ``unique`` is False in the hard case (the sign of τ is free).
    """
    lam, Q = torch.linalg.eigh(B)
    a = Q.T @ g
    lam_min = float(lam[0])
    scale = float(lam.abs().max())

    def step(sigma: float, skip: torch.Tensor | None = None) -> torch.Tensor:
        d = lam + sigma
        c = -a / d
        if skip is not None:
            c[skip] = 0.0
        return Q @ c

    if lam_min > 0 and float(torch.linalg.vector_norm(step(0.0))) <= radius:
        return step(0.0), 0.0, True
    lo = max(0.0, -lam_min)
    tie = lam <= lam_min + 1e-9 * scale
    g_norm = float(torch.linalg.vector_norm(g))
    if lam_min <= 0 and float(torch.linalg.vector_norm(a[tie])) <= 1e-10 * max(g_norm, 1e-300):
        p = step(lo, skip=tie)
        p_norm = float(torch.linalg.vector_norm(p))
        if p_norm <= radius:
            tau = math.sqrt(radius**2 - p_norm**2)
            return p + tau * Q[:, 0], lo, tau == 0.0
    hi = lo + g_norm / radius + abs(lam_min) + 1.0
    while float(torch.linalg.vector_norm(step(hi))) > radius:
        hi *= 2
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if float(torch.linalg.vector_norm(step(mid))) > radius:
            lo = mid
        else:
            hi = mid
    return step(hi), hi, True


def box_cauchy_value(B, g, radius, norm) -> float:
    gg = float(g @ g)
    if gg == 0:
        return 0.0
    t_max = radius / float(torch.linalg.vector_norm(g, ord=2 if norm == "l2" else math.inf))
    gBg = float(g @ B @ g)
    t = t_max if gBg <= 0 else min(gg / gBg, t_max)
    return -t * gg + 0.5 * t * t * gBg


def dense_of(mem: LSR1Memory, n: int) -> torch.Tensor:
    gamma, Psi, Minv = mem.compact()
    B = gamma * torch.eye(n, dtype=DT)
    if Psi is not None:
        B = B + Psi @ Minv @ Psi.T
    return 0.5 * (B + B.T)


def check_common(res: SubproblemResult, B, g, radius, norm, tol=1e-10):
    s = res.step
    assert s.shape == g.shape and s.dtype == g.dtype
    ord_ = 2 if norm == "l2" else math.inf
    assert float(torch.linalg.vector_norm(s, ord=ord_)) <= radius * (1 + 1e-8)
    m = model(B, g, s)
    scale = 1.0 + abs(m)
    assert res.model_value == pytest.approx(m, rel=1e-8, abs=1e-10 * scale)
    assert res.predicted_reduction == pytest.approx(max(-m, 0.0), rel=1e-8, abs=1e-10 * scale)
    assert m <= box_cauchy_value(B, g, radius, norm) + tol * scale


# --------------------------------------------------------------------------- test problems
def sr1_memory(n: int, k: int, seed: int, kind: str, gamma: float = 1.0) -> LSR1Memory:
    """kind: 'pd' (pairs from A ≽ γI ⇒ B ≻ 0), 'indef' (symmetric A), 'random' (general pairs)."""
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n, generator=gen, dtype=DT)
    if kind == "pd":
        A = X @ X.T / n + 2.0 * gamma * torch.eye(n, dtype=DT)
    else:
        A = 1.5 * (X + X.T) / math.sqrt(n)
    mem = LSR1Memory(history=k, gamma_init=gamma)
    for _ in range(k):
        s = torch.randn(n, generator=gen, dtype=DT)
        y = torch.randn(n, generator=gen, dtype=DT) if kind == "random" else A @ s
        mem.update(s, y)
    assert len(mem) == k
    return mem


def rand_g(n, seed, scale=1.0):
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(1000 + seed), dtype=DT)


def hard_case(seed: int, n: int = 20):
    """Indefinite B, g ⟂ eigenvector of λ_min, radius beyond the pseudo-inverse step."""
    mem = sr1_memory(n, 5, seed, "indef")
    B = dense_of(mem, n)
    lam, Q = torch.linalg.eigh(B)
    assert float(lam[0]) < -1e-3 and float(lam[1] - lam[0]) > 1e-6
    g = Q[:, 1:] @ rand_g(n - 1, seed, 0.1)
    p = -Q[:, 1:] @ ((Q[:, 1:].T @ g) / (lam[1:] - lam[0]))
    radius = 2.0 * float(torch.linalg.vector_norm(p)) + 0.5
    return mem, B, g, radius, float(torch.linalg.vector_norm(p))


# --------------------------------------------------------------------------- the reference itself
def test_reference_solver_is_optimal_on_random_small_cases():
    gen = torch.Generator().manual_seed(0)
    for _ in range(5):
        X = torch.randn(4, 4, generator=gen, dtype=DT)
        B = X + X.T
        g = torch.randn(4, generator=gen, dtype=DT)
        s, _, _ = exact_tr(B, g, 0.7)
        best = min(
            model(B, g, 0.7 * v / torch.linalg.vector_norm(v) * torch.rand(1, generator=gen))
            for v in torch.randn(2000, 4, generator=gen, dtype=DT)
        )
        assert model(B, g, s) <= best + 1e-12


# --------------------------------------------------------------------------- Cauchy
@pytest.mark.parametrize("norm", NORMS)
def test_cauchy_point_formula(norm):
    mem = sr1_memory(10, 3, 0, "indef")
    B = dense_of(mem, 10)
    g = rand_g(10, 0)
    for radius in (1e-3, 0.3, 10.0, 1e4):
        res = cauchy_point(g, mem.matvec, radius, norm)
        check_common(res, B, g, radius, norm, tol=1e-12)
        assert res.model_value == pytest.approx(box_cauchy_value(B, g, radius, norm), rel=1e-12)
        # the step is along −g
        cos = float(-res.step @ g) / float(torch.linalg.vector_norm(res.step) * g.norm())
        assert cos == pytest.approx(1.0, abs=1e-12)
    assert cauchy_point(torch.zeros(10, dtype=DT), mem.matvec, 1.0, norm).step.abs().max() == 0


# --------------------------------------------------------------------------- hand-built cases
def _cases():
    n = 20
    out = {}
    mem = sr1_memory(n, 5, 1, "pd")
    out["pd_interior"] = (mem, rand_g(n, 1, 0.1), 100.0)
    out["pd_boundary"] = (mem, rand_g(n, 1, 10.0), 0.5)
    mem_i = sr1_memory(n, 5, 2, "indef")
    out["indefinite"] = (mem_i, rand_g(n, 2), 1.5)
    out["indefinite_small_radius"] = (mem_i, rand_g(n, 3), 1e-3)
    hm, _, hg, hr, p_norm = hard_case(3)
    out["hard"] = (hm, hg, hr)
    out["hard_candidate_not_hard"] = (hm, hg, 0.5 * p_norm)  # g ⟂ u_min but radius too small
    out["zero_g_pd"] = (mem, torch.zeros(n, dtype=DT), 1.0)
    out["zero_g_indefinite"] = (mem_i, torch.zeros(n, dtype=DT), 0.8)
    out["empty_memory"] = (LSR1Memory(gamma_init=2.0), rand_g(n, 4), 0.1)
    return out


CASES = _cases()


def _pd_and_definite(mem, n):
    return float(torch.linalg.eigvalsh(dense_of(mem, n))[0]) > 0


def test_cases_are_what_they_claim():
    n = 20
    assert _pd_and_definite(CASES["pd_interior"][0], n)
    assert not _pd_and_definite(CASES["indefinite"][0], n)


@pytest.mark.parametrize("name", sorted(CASES))
def test_obs_l2_matches_dense_exact(name):
    mem, g, radius = CASES[name]
    n = g.numel()
    B = dense_of(mem, n)
    res = solve_obs(g, mem, radius, "l2")
    check_common(res, B, g, radius, "l2")
    s_ref, _, unique = exact_tr(B, g, radius)
    m_ref = model(B, g, s_ref)
    assert res.model_value == pytest.approx(m_ref, rel=1e-8, abs=1e-10)
    if unique:
        torch.testing.assert_close(res.step, s_ref, rtol=1e-7, atol=1e-8)
    ref_on_boundary = float(torch.linalg.vector_norm(s_ref)) >= radius * (1 - 1e-9)
    assert res.on_boundary == ref_on_boundary
    if name.startswith("zero_g_pd"):
        assert res.step.abs().max() == 0
    if name == "zero_g_indefinite":
        lam, Q = torch.linalg.eigh(B)
        u = Q[:, 0]
        assert float(torch.linalg.vector_norm(res.step)) == pytest.approx(radius, rel=1e-10)
        assert abs(float(res.step @ u)) == pytest.approx(radius, rel=1e-8)
        assert res.model_value == pytest.approx(0.5 * float(lam[0]) * radius**2, rel=1e-8)


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("norm", NORMS)
def test_all_solvers_feasible_and_beat_cauchy(name, norm):
    mem, g, radius = CASES[name]
    B = dense_of(mem, g.numel())
    for res in (
        cauchy_point(g, mem.matvec, radius, norm),
        steihaug_cg(g, mem.matvec, radius, norm),
        steihaug_cg(g, mem.matvec, radius, norm, rtol=1e-12),
        solve_obs(g, mem, radius, norm),
    ):
        check_common(res, B, g, radius, norm)


def test_obs_linf_takes_better_of_l2_and_box_cauchy():
    mem, g, radius = CASES["indefinite"]
    B = dense_of(mem, g.numel())
    res = solve_obs(g, mem, radius, "linf")
    l2 = solve_obs(g, mem, radius, "l2").model_value
    assert res.model_value == pytest.approx(min(l2, box_cauchy_value(B, g, radius, "linf")))


def test_cg_matches_exact_for_pd_interior():
    mem, g, radius = CASES["pd_interior"]
    B = dense_of(mem, g.numel())
    res = steihaug_cg(g, mem.matvec, radius, rtol=1e-12)
    s_ref = torch.linalg.solve(B, -g)
    assert float(s_ref.norm()) < radius
    torch.testing.assert_close(res.step, s_ref, rtol=1e-8, atol=1e-9)
    assert not res.on_boundary
    assert res.iterations <= g.numel()


def test_cg_boundary_and_negative_curvature():
    mem, g, radius = CASES["pd_boundary"]
    res = steihaug_cg(g, mem.matvec, radius)
    assert res.on_boundary
    assert float(res.step.norm()) == pytest.approx(radius, rel=1e-10)
    # pure negative curvature: B = −I, the first direction −g meets it immediately
    g2 = rand_g(8, 5)
    res = steihaug_cg(g2, lambda v: -v, 2.0)
    assert res.on_boundary and res.iterations == 1
    torch.testing.assert_close(res.step, -2.0 * g2 / g2.norm())
    res = steihaug_cg(g2, lambda v: -v, 2.0, "linf")
    assert float(res.step.abs().max()) == pytest.approx(2.0)
    torch.testing.assert_close(res.step, -2.0 * g2 / g2.abs().max())


def test_cg_max_iter_and_forcing():
    mem, g, radius = CASES["pd_interior"]
    assert steihaug_cg(g, mem.matvec, radius, max_iter=1).iterations == 1
    loose = steihaug_cg(g, mem.matvec, radius, rtol=0.5)
    tight = steihaug_cg(g, mem.matvec, radius, rtol=1e-12)
    assert loose.iterations <= tight.iterations
    assert tight.model_value <= loose.model_value + 1e-14


# --------------------------------------------------------------------------- randomised
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("kind", ["pd", "indef", "random"])
def test_obs_random_cases_match_dense_exact(seed, kind):
    n = 25
    mem = sr1_memory(n, 5, seed, kind, gamma=[1.0, 0.3, 2.0][seed % 3])
    B = dense_of(mem, n)
    g = rand_g(n, seed, [0.01, 1.0, 10.0][seed % 3])
    for radius in (1e-2, 0.5, 5.0, 1e3):
        res = solve_obs(g, mem, radius)
        check_common(res, B, g, radius, "l2")
        s_ref, _, _ = exact_tr(B, g, radius)
        assert res.model_value == pytest.approx(model(B, g, s_ref), rel=1e-8, abs=1e-12)
        for norm in NORMS:
            check_common(steihaug_cg(g, mem.matvec, radius, norm), B, g, radius, norm)
            check_common(solve_obs(g, mem, radius, norm), B, g, radius, norm)


@pytest.mark.parametrize("seed", range(3))
def test_obs_hard_case_random(seed):
    mem, B, g, radius, _ = hard_case(seed + 10)
    res = solve_obs(g, mem, radius)
    check_common(res, B, g, radius, "l2")
    s_ref, sigma, _ = exact_tr(B, g, radius)
    lam_min = float(torch.linalg.eigvalsh(B)[0])
    assert sigma == pytest.approx(-lam_min)
    assert res.on_boundary
    assert float(res.step.norm()) == pytest.approx(radius, rel=1e-10)
    assert res.model_value == pytest.approx(model(B, g, s_ref), rel=1e-8)


def test_obs_rank_deficient_psi():
    n = 15
    gen = torch.Generator().manual_seed(21)
    mem = LSR1Memory(history=5)
    S = torch.randn(n, 3, generator=gen, dtype=DT)
    Y = torch.randn(n, 3, generator=gen, dtype=DT)
    mem.update(S[:, 0], Y[:, 0])
    mem.update(S[:, 1], Y[:, 1])
    # ψ_3 = ψ_1 + ψ_2 makes Ψ rank 2 with 3 columns (γ = 1)
    y3 = S[:, 2] + (Y[:, 0] - S[:, 0]) + (Y[:, 1] - S[:, 1])
    assert mem.update(S[:, 2], y3)
    _, Psi, _ = mem.compact()
    assert Psi is not None and torch.linalg.matrix_rank(Psi) == 2
    B = dense_of(mem, n)
    g = rand_g(n, 21)
    for radius in (0.1, 1.0, 100.0):
        res = solve_obs(g, mem, radius)
        check_common(res, B, g, radius, "l2")
        s_ref, _, _ = exact_tr(B, g, radius)
        assert res.model_value == pytest.approx(model(B, g, s_ref), rel=1e-7, abs=1e-12)


def test_obs_reuses_factorization_until_memory_changes():
    from mldd.subproblem import obs

    mem, g, _ = CASES["indefinite"]
    solve_obs(g, mem, 1.0)
    spec = obs._CACHE[mem]
    solve_obs(g, mem, 0.1)
    assert obs._CACHE[mem] is spec


def test_large_n_is_fast_and_feasible():
    n = 200_000
    gen = torch.Generator().manual_seed(0)
    mem = LSR1Memory(history=5)
    lb = LBFGSMemory(history=5)
    d = torch.rand(n, generator=gen, dtype=DT) * 4 - 1  # diagonal, indefinite
    for _ in range(5):
        s = torch.randn(n, generator=gen, dtype=DT)
        mem.update(s, d * s)
        lb.update(s, d.abs() * s + s)
    g = torch.randn(n, generator=gen, dtype=DT)
    for norm in NORMS:
        for res in (
            solve_obs(g, mem, 3.0, norm),
            steihaug_cg(g, mem.matvec, 3.0, norm, max_iter=50),
            solve("cg", g, 3.0, norm=norm, memory=lb, max_iter=50),
        ):
            ord_ = 2 if norm == "l2" else math.inf
            assert float(torch.linalg.vector_norm(res.step, ord=ord_)) <= 3.0 * (1 + 1e-8)
            assert res.predicted_reduction > 0


# --------------------------------------------------------------------------- dispatcher, errors
def test_dispatcher():
    mem, g, radius = CASES["indefinite"]
    a = solve("obs", g, radius, memory=mem)
    b = solve_obs(g, mem, radius)
    assert torch.equal(a.step, b.step)
    c = solve("cg", g, radius, matvec=mem.matvec, rtol=1e-6, max_iter=5)
    assert c.iterations <= 5
    solve("cauchy", g, radius, memory=mem, norm="linf")
    with pytest.raises(ValueError, match=r"'newton'.*cauchy, cg, obs"):
        solve("newton", g, radius, memory=mem)
    with pytest.raises(ValueError, match="LSR1Memory"):
        solve("obs", g, radius, matvec=mem.matvec)
    with pytest.raises(ValueError, match="matvec"):
        solve("cg", g, radius)
    with pytest.raises(ValueError, match="unknown options"):
        solve("cg", g, radius, memory=mem, tol=1.0)


@pytest.mark.parametrize("kind", ["cauchy", "cg", "obs"])
def test_input_validation(kind):
    mem, g, _ = CASES["indefinite"]
    bad = g.clone()
    bad[3] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        solve(kind, bad, 1.0, memory=mem)
    for radius in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="radius"):
            solve(kind, g, radius, memory=mem)
    with pytest.raises(ValueError, match="norm"):
        solve(kind, g, 1.0, memory=mem, norm="l1")


@pytest.mark.parametrize("cancel", [0.0, 1.0, math.inf])
@pytest.mark.parametrize("near_span", [False, True])
def test_obs_perpendicular_part_formula_and_explicit_agree(monkeypatch, cancel, near_span):
    # ‖g_⊥‖ comes from the Gram expansion (cancel = 0), from an explicit g_⊥ (cancel = ∞), or
    # from whichever the default rule picks; g almost inside span(Ψ) is where the expansion cancels.
    from mldd.subproblem import obs

    monkeypatch.setattr(obs, "_PERP_CANCEL", cancel)
    n = 25
    mem = sr1_memory(n, 5, 4, "indef")
    B = dense_of(mem, n)
    _, Psi, _ = mem.compact()
    g = rand_g(n, 4)
    if near_span:
        assert Psi is not None
        g = Psi @ torch.randn(Psi.shape[1], dtype=DT, generator=torch.Generator().manual_seed(1))
        g = g + 1e-6 * rand_g(n, 5)
    tol = 1e-8
    for radius in (1e-2, 1.0, 1e3):
        res = solve_obs(g, mem, radius)
        check_common(res, B, g, radius, "l2")
        s_ref, _, _ = exact_tr(B, g, radius)
        assert res.model_value == pytest.approx(model(B, g, s_ref), rel=tol, abs=1e-12)


# --------------------------------------------------------------------------- CG in span[g, S, Y]
def _lbfgs_model(seed: int, n: int = 60, history: int = 10) -> tuple[LBFGSMemory, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    X = torch.randn(n, n, generator=gen, dtype=DT)
    A = X @ X.T / n + 0.01 * torch.eye(n, dtype=DT)  # ill-conditioned SPD
    mem = LBFGSMemory(history=history)
    for _ in range(history + 7):  # the ring buffer has wrapped
        s = torch.randn(n, generator=gen, dtype=DT)
        mem.update(s, A @ s)
    return mem, torch.randn(n, generator=gen, dtype=DT)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("history", [3, 10])
def test_cg_in_span_equals_vector_cg(seed, history):
    from mldd.subproblem.steihaug_cg import steihaug_cg_in_span

    mem, g = _lbfgs_model(seed, history=history)
    B = _dense_lbfgs(mem, g.numel())
    for radius in (1e-3, 0.3, 3.0, 1e4):  # boundary along d, interior, tight and loose
        for rtol in (0.1, 1e-10):
            ref = steihaug_cg(g, mem.matvec, radius, rtol=rtol, max_iter=100)
            res = steihaug_cg_in_span(g, mem, radius, rtol=rtol, max_iter=100)
            assert res is not None
            # Rounding differs, so a residual landing at the tolerance may take one CG step more.
            assert abs(res.iterations - ref.iterations) <= (0 if rtol == 0.1 else 1)
            assert res.on_boundary == ref.on_boundary
            torch.testing.assert_close(res.step, ref.step, rtol=1e-8, atol=1e-12)
            assert res.model_value == pytest.approx(model(B, g, res.step), rel=1e-8, abs=1e-14)
            assert float(res.step.norm()) <= radius * (1 + 1e-12)


def _dense_lbfgs(mem: LBFGSMemory, n: int) -> torch.Tensor:
    return torch.stack([mem.matvec(e) for e in torch.eye(n, dtype=DT)], dim=1)


def test_cg_in_span_breakdown_returns_none_and_the_solver_falls_back(monkeypatch):
    import importlib

    from mldd.solvers import trust_region as tr

    # (the package re-exports the function under the module's name)
    cg_module = importlib.import_module("mldd.subproblem.steihaug_cg")

    mem, g = _lbfgs_model(7)
    G, apply = mem.span_operator(g)
    bad = G.copy()
    bad[1:, 1:] *= -1.0  # the S, Y block indefinite, as rounding could (barely) make it
    monkeypatch.setattr(mem, "span_operator", lambda v: (bad, apply))
    assert cg_module.steihaug_cg_in_span(g, mem, 1e4, rtol=1e-12) is None
    monkeypatch.undo()

    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        return None

    monkeypatch.setattr(tr, "steihaug_cg_in_span", broken)
    solver = tr.TrustRegionSolver(tr.TrustRegionConfig(hessian="lbfgs", memory=10,
                                                       subproblem="cg"))
    solver.memory = mem
    res = solver.solve_subproblem(g, mem.matvec, 1.0)
    ref = steihaug_cg(g, mem.matvec, 1.0, rtol=solver.config.cg_rtol, max_iter=60)
    assert calls and torch.equal(res.step, ref.step)


def test_span_operator_needs_pairs():
    with pytest.raises(ValueError, match="non-empty memory"):
        LBFGSMemory().span_operator(torch.ones(3, dtype=DT))
