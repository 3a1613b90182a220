"""Forward jets (mldd.models.jets) and the PINN problems' jet route against nested autograd.

Measured (interleaved, one process, float64, 10,000 Hammersley points, `python -m
mldd.problems.pinn.derivative_timing`): see the report of the jets work; the jet route is the
problems' default because it was the faster one on this project's 2-core machine.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mldd.problems as problems
from mldd.models import MLP, ResidualMLP
from mldd.models.jets import (
    JET_ACTIVATIONS,
    forward_jet,
    has_jets,
    input_jet,
    layer_modules,
    make_spec,
    propagate,
    supports_jets,
)
from mldd.objective import ParamsObjective
from mldd.problems.pinn import Burgers, GridPINN
from mldd.problems.pinn.jet_residuals import AnsatzCache, NonAffineAnsatzError, ansatz_jets
from pinn_settings import COARSE

NAMES = ["allen-cahn", "burgers", "diffusion-advection", "klein-gordon", "poisson2d"]


def make(name: str, **kw: Any) -> GridPINN:
    opts: dict[str, Any] = {"n_collocation": 200, "reference_options": COARSE[name], "width": 10,
                            "depth": 3, **kw}
    p = problems.get(name, **opts)
    assert isinstance(p, GridPINN)
    return p


def randomised(model: nn.Module, seed: int = 0, scale: float = 0.5) -> nn.Module:
    """Non-zero biases so that every term of the jet formulas is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in model.modules():
            if isinstance(lin, nn.Linear):
                assert lin.bias is not None
                lin.bias.copy_(scale * torch.randn(lin.bias.shape, generator=g,
                                                   dtype=lin.bias.dtype))
    return model


def rel_err(a: Tensor, b: Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


def flat_grad(loss: Tensor, params: list[nn.Parameter], **kw: Any) -> Tensor:
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, **kw)])


def autograd_jet(model: nn.Module, x: Tensor, ops: list[tuple[float, float]]
                 ) -> tuple[Tensor, Tensor, Tensor]:
    X = x.clone().requires_grad_(True)
    u = model(X)[:, 0]
    (g,) = torch.autograd.grad(u.sum(), X, create_graph=True)
    diag = [torch.autograd.grad(g[:, i].sum(), X, create_graph=True)[0][:, i] for i in range(2)]
    second = torch.stack([c[0] * diag[0] + c[1] * diag[1] for c in ops])
    return u, g.T, second


# ------------------------------------------------------------------------------ model jets
@pytest.mark.parametrize("act", JET_ACTIVATIONS)
@pytest.mark.parametrize("kind", ["mlp", "residual"])
def test_jet_matches_autograd_values_gradients_and_hvps(act: str, kind: str) -> None:
    torch.manual_seed(0)
    model = (MLP(2, 1, width=7, depth=3, activation=act) if kind == "mlp"
             else ResidualMLP(2, 1, width=7, depth=3, activation=act))
    randomised(model)
    assert supports_jets(model) and has_jets(model)
    x = torch.rand(23, 2, dtype=torch.float64) * 2 - 1
    ops = [(1.0, 0.0), (-1.0, 2.5)]
    J = forward_jet(model, x, make_spec(2, ops))
    u, first, second = autograd_jet(model, x, ops)
    assert J.value.shape == (23, 1) and J.first.shape == (2, 23, 1) and J.second.shape == (2, 23, 1)
    assert rel_err(J.value[:, 0], u) < 1e-12
    assert rel_err(J.first[:, :, 0], first) < 1e-12
    assert rel_err(J.second[:, :, 0], second) < 1e-12

    # A scalar function using every channel nonlinearly: weight gradients (first-order fast
    # backward), then gradients with create_graph and Hessian-vector products (double backward).
    w = torch.randn(4, 23, dtype=torch.float64)

    def F(v: Tensor, d: Tensor, s: Tensor) -> Tensor:
        return (w[0] * v * d[0] + w[1] * d[1] ** 2 + w[2] * s[0] * v + w[3] * s[1] ** 2).sum()

    params = list(model.parameters())
    ref = F(u, first, second)
    g_ref = flat_grad(ref, params, create_graph=True)
    g_fast = flat_grad(F(J.value[:, 0], J.first[:, :, 0], J.second[:, :, 0]), params)
    assert rel_err(g_fast, g_ref) < 1e-12
    J2 = forward_jet(model, x, make_spec(2, ops))
    g_jet = flat_grad(F(J2.value[:, 0], J2.first[:, :, 0], J2.second[:, :, 0]), params,
                      create_graph=True)
    assert rel_err(g_jet.detach(), g_ref.detach()) < 1e-12
    v = torch.randn_like(g_ref)
    hv_ref = flat_grad(g_ref @ v, params)
    hv_jet = flat_grad(g_jet @ v, params)
    assert rel_err(hv_jet, hv_ref) < 1e-10


def test_value_only_and_first_only_jets() -> None:
    torch.manual_seed(1)
    model = randomised(MLP(2, 3, width=5, depth=2))
    x = torch.rand(11, 2, dtype=torch.float64)
    J = forward_jet(model, x, make_spec(2, first=False))
    torch.testing.assert_close(J.value, model(x), rtol=1e-13, atol=1e-13)
    assert J.first.shape == (0, 11, 3) and J.second.shape == (0, 11, 3)
    J1 = forward_jet(model, x, make_spec(2))
    X = x.clone().requires_grad_(True)
    out = model(X)
    for k in range(3):
        (g,) = torch.autograd.grad(out[:, k].sum(), X, retain_graph=True)
        torch.testing.assert_close(J1.first[:, :, k], g.T, rtol=1e-12, atol=1e-13)


def test_propagate_in_pieces_equals_one_pass() -> None:
    torch.manual_seed(2)
    model = randomised(ResidualMLP(2, 1, width=6, depth=4))
    spec = make_spec(2, [(1.0, 1.0)])
    x = torch.rand(9, 2, dtype=torch.float64)
    H0 = input_jet(x, spec)
    whole = propagate(model, H0, spec)
    L = len(layer_modules(model))
    assert L == 6
    mid = propagate(model, H0, spec, 0, 3)
    torch.testing.assert_close(propagate(model, mid, spec, 3, L), whole, rtol=0, atol=1e-14)


def test_jet_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="n_inputs"):
        make_spec(0)
    with pytest.raises(ValueError, match="coefficients"):
        make_spec(2, [(1.0,)])
    with pytest.raises(ValueError, match="non-zero"):
        make_spec(2, [(0.0, 0.0)])
    with pytest.raises(ValueError, match="first"):
        make_spec(2, [(1.0, 0.0)], first=False)
    spec = make_spec(2)
    with pytest.raises(ValueError, match="shape"):
        input_jet(torch.zeros(4, 3, dtype=torch.float64), spec)
    model = MLP(2, 1, width=4, depth=2)
    with pytest.raises(ValueError, match="start"):
        propagate(model, input_jet(torch.zeros(4, 2, dtype=torch.float64), spec), spec, 2, 1)
    relu = MLP(2, 1, width=4, depth=2, activation="relu")
    assert not supports_jets(relu) and not has_jets(relu)
    with pytest.raises(ValueError, match="relu"):
        forward_jet(relu, torch.zeros(4, 2, dtype=torch.float64), spec)
    assert not supports_jets(nn.Sequential(nn.Linear(2, 1)))


# ------------------------------------------------------------------------------ PINN problems
@pytest.mark.parametrize("name", NAMES)
def test_problem_jet_route_equals_autograd(name: str) -> None:
    jet, auto = make(name), make(name, derivatives="autograd")
    assert jet.derivatives == "jet" and jet.describe()["derivatives"] == "jet"
    model = randomised(jet.build_model(seed=0), seed=3, scale=0.3)
    x = jet.collocation
    assert rel_err(jet.residual(model, x), auto.residual(model, x)) < 1e-10
    params = list(model.parameters())
    lj, la = jet.loss(model), auto.loss(model)
    assert lj.requires_grad and lj.grad_fn is not None
    assert rel_err(lj, la) < 1e-10
    assert rel_err(flat_grad(lj, params), flat_grad(la, params)) < 1e-10
    batch = x[::7]
    assert rel_err(jet.loss(model, batch), auto.loss(model, batch)) < 1e-10


@pytest.mark.parametrize("name", ["burgers", "klein-gordon"])
def test_problem_hessian_vector_products_agree(name: str) -> None:
    jet, auto = make(name, width=6, depth=2), make(name, width=6, depth=2,
                                                   derivatives="autograd")
    model = randomised(jet.build_model(seed=1), seed=4, scale=0.3)
    params = list(model.parameters())
    x0 = torch.cat([p.detach().reshape(-1) for p in params])
    v = torch.randn(x0.numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = []
    for p in (jet, auto):
        obj = ParamsObjective(params, lambda p=p: p.loss(model))
        f, g, hv = obj.linearize(x0)
        out.append((f, g, hv(v)))
    (fj, gj, hj), (fa, ga, ha) = out
    assert abs(float(fj - fa)) <= 1e-10 * abs(float(fa))
    assert rel_err(gj, ga) < 1e-10 and rel_err(hj, ha) < 1e-9


def test_residual_mlp_model_takes_the_jet_route() -> None:
    jet, auto = make("burgers"), make("burgers", derivatives="autograd")
    torch.manual_seed(5)
    model = randomised(ResidualMLP(2, 1, width=8, depth=3), scale=0.3)
    params = list(model.parameters())
    lj, la = jet.loss(model), auto.loss(model)
    assert rel_err(lj, la) < 1e-10
    assert rel_err(flat_grad(lj, params), flat_grad(la, params)) < 1e-10


def test_unsupported_models_fall_back_to_autograd() -> None:
    jet, auto = make("poisson2d"), make("poisson2d", derivatives="autograd")
    torch.manual_seed(6)

    class Quadratic(nn.Module):  # no jets: a custom module
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 3, dtype=torch.float64)

        def forward(self, x: Tensor) -> Tensor:
            return (self.lin(x) ** 2).sum(1, keepdim=True)

    for model in (Quadratic(), MLP(2, 1, width=5, depth=2, activation="softplus")):
        assert not has_jets(model)
        params = list(model.parameters())
        lj, la = jet.loss(model), auto.loss(model)
        assert torch.equal(lj.detach(), la.detach())
        assert torch.equal(flat_grad(lj, params), flat_grad(la, params))


def test_non_affine_ansatz_falls_back_to_autograd() -> None:
    class Squared(Burgers):
        def transform(self, model: nn.Module, x: Tensor) -> Tensor:
            return super().transform(model, x) ** 2

    p = Squared(n_collocation=50, width=5, depth=2, reference_options=COARSE["burgers"])
    q = Squared(n_collocation=50, width=5, depth=2, reference_options=COARSE["burgers"],
                derivatives="autograd")
    model = randomised(p.build_model(seed=0))
    with pytest.raises(NonAffineAnsatzError):
        ansatz_jets(p, p.collocation, make_spec(2, [(1.0, 0.0)]))
    torch.testing.assert_close(p.loss(model), q.loss(model), rtol=0, atol=0)


def test_ansatz_cache_is_reused_until_the_points_change() -> None:
    p = make("burgers")
    spec = make_spec(2, [(1.0, 0.0)])
    cache = AnsatzCache()
    x = p.collocation.clone()
    a = cache.get(p, x, spec)
    assert cache.get(p, x, spec) is a
    assert cache.get(p, x.clone(), spec) is not a
    b = cache.get(p, x, spec)
    x.mul_(0.5)  # in place: a new version of the same tensor
    c = cache.get(p, x, spec)
    assert c is not b
    g, _ = ansatz_jets(p, x, spec)
    torch.testing.assert_close(c[0].value, g.value)
    # Burgers: g = −sin(πx), so g_xx = π² sin(πx).
    torch.testing.assert_close(c[0].second[0], math.pi**2 * torch.sin(math.pi * x[:, 0]))


def test_derivatives_option_is_validated() -> None:
    with pytest.raises(ValueError, match=r"derivatives.*jet.*autograd"):
        make("burgers", derivatives="forward")


def test_float32_jet_route() -> None:
    jet = make("allen-cahn", dtype=torch.float32)
    auto = make("allen-cahn", dtype=torch.float32, derivatives="autograd")
    model = randomised(jet.build_model(seed=0), scale=0.3)
    assert next(model.parameters()).dtype == torch.float32
    params = list(model.parameters())
    lj, la = jet.loss(model), auto.loss(model)
    assert lj.dtype == torch.float32
    gj, ga = flat_grad(lj, params), flat_grad(la, params)
    assert torch.isfinite(gj).all()
    assert rel_err(lj, la) < 1e-4
    assert rel_err(gj, ga) < 1e-3
