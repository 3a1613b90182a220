"""First-order coherent coarse models (docs/algorithms.md §2.2): ∇h(x_c0) = R g_l, h(x_c0), …"""

import math

import pytest
import torch

from mldd.multilevel.coarse_models import (
    AdditiveCoarseModel,
    HybridCoarseModel,
    MultiplicativeCoarseModel,
    build_coarse_model,
)
from mldd.objective import FunctionObjective

DT = torch.float64
N = 6


def _base(shift: float = 3.0) -> FunctionObjective:
    """A nonlinear coarse loss with nonzero value, gradient and a non-diagonal Hessian."""
    A = torch.linspace(0.5, 2.0, N, dtype=DT)

    def fc(x):
        return shift + 0.5 * (A * x * x).sum() + torch.sin(x).prod() + 0.25 * (x ** 4).sum()

    return FunctionObjective(fc, N)


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.randn(N, generator=g, dtype=DT)
    g_r = torch.randn(N, generator=g, dtype=DT)
    return x0, g_r


F_FINE = 7.5

CASES = [
    ("additive", {}, None),                      # τ-correction: h(x_c0) = f_c0
    ("additive", {"zeroth_order": True}, F_FINE),
    ("multiplicative", {}, F_FINE),
    ("hybrid", {}, F_FINE),                      # γ = 0.5, zeroth-order term on
    ("hybrid", {"gamma": 0.2}, F_FINE),
    ("hybrid", {"gamma": 1.0, "zeroth_order": False}, None),
]


@pytest.mark.parametrize("kind, opts, promised", CASES)
def test_first_order_coherence(kind, opts, promised):
    base = _base()
    x0, g_r = _data()
    h = build_coarse_model(kind, base, x0, g_r, F_FINE, **opts)
    f0, g0 = h.value_and_grad(x0)
    scale = float(g_r.abs().max() + base.value_and_grad(x0)[1].abs().max())
    assert torch.allclose(g0, g_r, rtol=0, atol=1e-14 * scale), (g0 - g_r).abs().max()
    assert float(f0) == pytest.approx(h.value_at_start, rel=1e-14, abs=1e-14)
    if promised is not None:
        assert float(f0) == pytest.approx(promised, rel=1e-14)
    else:
        assert float(f0) == pytest.approx(float(base.value(x0)), rel=1e-14)


@pytest.mark.parametrize("kind, opts, promised", CASES)
def test_value_gradient_hvp_are_derivatives(kind, opts, promised):
    """value_and_grad / linearize agree with autograd on an independent closed form of h."""
    base = _base()
    x0, g_r = _data(1)
    h = build_coarse_model(kind, base, x0, g_r, F_FINE, **opts)
    fc = base.fn
    f0 = float(fc(x0))
    g0 = torch.autograd.functional.jacobian(fc, x0)
    gamma = opts.get("gamma", 0.5)
    zeroth = opts.get("zeroth_order", kind == "hybrid")

    def additive(x):
        return fc(x) + (g_r - g0) @ (x - x0) + ((F_FINE - f0) if zeroth else 0.0)

    def multiplicative(x):
        e = F_FINE / f0
        delta = g_r / f0 - (F_FINE / f0 ** 2) * g0
        return (e + delta @ (x - x0)) * fc(x)

    closed = {"additive": additive, "multiplicative": multiplicative,
              "hybrid": lambda x: gamma * additive(x) + (1 - gamma) * multiplicative(x)}[kind]
    x = x0 + 0.3 * torch.randn(N, generator=torch.Generator().manual_seed(5), dtype=DT)
    v = torch.randn(N, generator=torch.Generator().manual_seed(6), dtype=DT)
    f, g, hv = h.linearize(x)
    assert float(f) == pytest.approx(float(closed(x)), rel=1e-13)
    assert torch.allclose(g, torch.autograd.functional.jacobian(closed, x), rtol=1e-12, atol=1e-12)
    H = torch.autograd.functional.hessian(closed, x)
    assert torch.allclose(hv(v), H @ v, rtol=1e-11, atol=1e-11)
    assert float(h.value(x)) == pytest.approx(float(f), rel=1e-14)
    assert torch.allclose(h.value_and_grad(x)[1], g, rtol=1e-14, atol=1e-14)


def test_evaluations_are_counted_on_the_coarse_objective():
    base = _base()
    x0, g_r = _data()
    h = build_coarse_model("hybrid", base, x0, g_r, F_FINE)
    assert base.counters.as_dict() == {"n_f": 1, "n_g": 1, "n_hvp": 0}  # f_c0, g_c0
    h.value_and_grad(x0 + 0.1)
    h.value(x0)
    assert base.counters.n_f == 3 and base.counters.n_g == 2
    assert h.counters.n_f == 2 and h.counters.n_g == 1


def test_gradient_only_additive_evaluates_no_loss():
    base = _base()
    x0, g_r = _data()
    h = build_coarse_model("additive", base, x0, g_r, gradient_only=True)
    assert isinstance(h, AdditiveCoarseModel)
    assert torch.allclose(h.grad(x0), g_r, rtol=0, atol=1e-14)
    h.grad(x0 + 0.2)
    # building (∇f_c(x_c0)) + two gradients; no loss value anywhere
    assert base.counters.n_f == 0 and base.counters.n_g == 3
    assert math.isnan(h.f0)


@pytest.mark.parametrize("kind", ["multiplicative", "hybrid"])
@pytest.mark.parametrize("shift", [None, 1e-15])
def test_multiplicative_refuses_zero_coarse_loss(kind, shift):
    x0, g_r = _data()
    if shift is None:  # f_c(x_c0) exactly 0
        base = FunctionObjective(lambda x: ((x - x0) ** 2).sum(), N)
    else:  # tiny
        base = FunctionObjective(lambda x: ((x - x0) ** 2).sum() + shift, N)
    with pytest.raises(ValueError, match="zero or too small"):
        build_coarse_model(kind, base, x0, g_r, F_FINE)


def test_constructor_and_builder_errors():
    base = _base()
    x0, g_r = _data()
    with pytest.raises(ValueError, match="unknown coarse model 'quadratic'"):
        build_coarse_model("quadratic", base, x0, g_r, F_FINE)
    with pytest.raises(ValueError, match="needs the finer level's loss"):
        build_coarse_model("multiplicative", base, x0, g_r)
    with pytest.raises(ValueError, match="zeroth-order term"):
        build_coarse_model("additive", base, x0, g_r, zeroth_order=True)
    with pytest.raises(ValueError, match="gradient_only"):
        build_coarse_model("hybrid", base, x0, g_r, F_FINE, gradient_only=True)
    f0, g0 = base.value_and_grad(x0)
    with pytest.raises(ValueError, match=r"gamma must lie in \[0, 1\]"):
        HybridCoarseModel(base, x0, g_r, g0, float(f0), F_FINE, gamma=1.5)
    with pytest.raises(ValueError, match="same shape"):
        MultiplicativeCoarseModel(base, x0, g_r[:3], g0, float(f0), F_FINE)
    with pytest.raises(ValueError, match="finite"):
        MultiplicativeCoarseModel(base, x0, g_r, g0, float("nan"), F_FINE)
