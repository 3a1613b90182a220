"""Transfers between levels: adjointness, Π P = I, shapes, function (near-)preservation, errors."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.models import MLP, ConvResNet, ResidualMLP
from mldd.multilevel import (
    DepthTransfer,
    IdentityTransfer,
    MatrixTransfer,
    SparseTransfer,
    Transfer,
    WidthTransfer,
    param_layout,
)

D = torch.float64


def flat(m: nn.Module) -> torch.Tensor:
    return params_to_vector(list(m.parameters()))


def load(m: nn.Module, x: torch.Tensor) -> nn.Module:
    vector_to_params(x, list(m.parameters()))
    return m


def loss_at(model: nn.Module, x: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Squared error of ``model`` with flat parameters ``x`` (differentiable in ``x``)."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    parts = torch.split(x, [math.prod(s) for s in shapes])
    params = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
    return ((functional_call(model, params, (X,)) - Y) ** 2).mean()


def grad_at(model: nn.Module, x: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    x = x.detach().requires_grad_(True)
    return torch.autograd.grad(loss_at(model, x, X, Y), x)[0]


def depth_pair(K: int, width: int = 5, seed: int = 0) -> tuple[ResidualMLP, ResidualMLP]:
    torch.manual_seed(seed)
    return (ResidualMLP(3, 2, width=width, depth=K),
            ResidualMLP(3, 2, width=width, depth=2 * K - 1))


def smooth_residual_mlp(K: int, width: int = 6) -> ResidualMLP:
    """A ResidualMLP whose block parameters sample one smooth profile ``W(t)``, ``t ∈ [0, 1]``."""
    gen = torch.Generator().manual_seed(0)
    A, B = (torch.randn(width, width, generator=gen, dtype=D) / math.sqrt(width) for _ in "AB")
    a, b = (torch.randn(width, generator=gen, dtype=D) for _ in "ab")
    m = ResidualMLP(2, 1, width=width, depth=K)
    with torch.no_grad():
        for p in (*m.input_layer.parameters(), *m.output_layer.parameters()):
            p.copy_(torch.randn(p.shape, generator=gen, dtype=D))  # the same for every K
        for k, blk in enumerate(m.blocks):
            t = k * m.h
            blk.weight.copy_(A * math.cos(2 * t) + B * t)
            blk.bias.copy_(a * math.sin(3 * t) + b)
    return m


def _ids(v: object) -> str:
    return v if isinstance(v, str) else ""


def all_transfers() -> list[tuple[str, object]]:
    torch.manual_seed(0)
    c, f = depth_pair(3)
    wc, wf = ResidualMLP(3, 2, width=3, depth=2), ResidualMLP(3, 2, width=7, depth=2)
    P = torch.randn(9, 4, dtype=D)
    return [
        ("matrix", MatrixTransfer(P)),
        ("matrix-scaled", MatrixTransfer(P, restriction_scale=0.25)),
        ("identity", IdentityTransfer(6)),
        ("depth", DepthTransfer(c, f)),
        ("depth-fw", DepthTransfer(c, f, injection="full_weighting", restriction_scale=0.5)),
        ("width", WidthTransfer(wc, wf)),
        ("width-mlp", WidthTransfer(MLP(3, 2, width=2, depth=3), MLP(3, 2, width=5, depth=3),
                                    mapping="random", split="uniform", restriction_scale=2.0)),
    ]


# --------------------------------------------------------------------------- generic properties


@pytest.mark.parametrize(("name", "t"), all_transfers(), ids=_ids)
def test_protocol_shapes_and_adjointness(name: str, t: Transfer) -> None:
    """⟨R g, v⟩ = s·⟨g, P v⟩ with the documented scale s, for vectors and column blocks."""
    assert isinstance(t, Transfer)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(t.n_coarse, generator=gen, dtype=D)
    g = torch.randn(t.n_fine, generator=gen, dtype=D)
    Pv, Rg, Pig = t.prolong(v), t.restrict(g), t.inject(g)
    assert Pv.shape == (t.n_fine,) and Rg.shape == Pig.shape == (t.n_coarse,)
    s = getattr(t, "restriction_scale", 1.0)
    assert torch.dot(Rg, v) == pytest.approx(s * float(torch.dot(g, Pv)), rel=1e-12, abs=1e-12)
    # Column blocks give the same as one vector at a time.
    V = torch.randn(t.n_coarse, 3, generator=gen, dtype=D)
    PV = t.prolong(V)
    assert PV.shape == (t.n_fine, 3)
    torch.testing.assert_close(PV[:, 1], t.prolong(V[:, 1].contiguous()), rtol=1e-14, atol=1e-14)
    # prolong_params is the same (linear) map.
    torch.testing.assert_close(t.prolong_params(v), Pv, rtol=0, atol=0)  # type: ignore[attr-defined]


@pytest.mark.parametrize(("name", "t"), all_transfers(), ids=_ids)
def test_float32_in_float32_out_and_no_aliasing(name: str, t: Transfer) -> None:
    v = torch.randn(t.n_coarse)
    out = t.prolong(v)
    assert out.dtype == torch.float32
    out.zero_()
    assert v.abs().sum() > 0  # the result is a new tensor (IdentityTransfer copies)
    assert t.restrict(torch.randn(t.n_fine)).dtype == torch.float32


@pytest.mark.parametrize(("name", "t"), all_transfers(), ids=_ids)
def test_wrong_inputs_are_rejected(name: str, t: Transfer) -> None:
    with pytest.raises(ValueError, match=f"shape \\({t.n_coarse},\\)"):
        t.prolong(torch.zeros(t.n_coarse + 1, dtype=D))
    with pytest.raises(ValueError, match="shape"):
        t.restrict(torch.zeros(1, 1, t.n_fine, dtype=D))
    with pytest.raises(ValueError, match="floating"):
        t.inject(torch.zeros(t.n_fine, dtype=torch.long))


# ------------------------------------------------------------------------------ matrix/identity


def test_matrix_transfer_defaults_and_errors() -> None:
    P = torch.randn(7, 3, dtype=D)
    t = MatrixTransfer(P, restriction_scale=0.5)
    torch.testing.assert_close(t.R, 0.5 * P.T)
    torch.testing.assert_close(t.Pi @ P, torch.eye(3, dtype=D))  # pseudo-inverse: Π P = I
    R = torch.ones(3, 7, dtype=D)
    torch.testing.assert_close(MatrixTransfer(P, R=R).restrict(torch.ones(7, dtype=D)),
                               torch.full((3,), 7.0, dtype=D))
    with pytest.raises(ValueError, match=r"R must have shape \(3, 7\)"):
        MatrixTransfer(P, R=torch.ones(7, 3, dtype=D))
    with pytest.raises(ValueError, match="Pi must have shape"):
        MatrixTransfer(P, Pi=torch.ones(2, 7, dtype=D))
    with pytest.raises(ValueError, match="2-D"):
        MatrixTransfer(torch.ones(3, dtype=D))
    with pytest.raises(ValueError, match="restriction_scale"):
        MatrixTransfer(P, restriction_scale=0.0)


def test_identity_transfer() -> None:
    t = IdentityTransfer(4)
    x = torch.arange(4.0, dtype=D)
    for op in (t.prolong, t.restrict, t.inject, t.prolong_params):
        y = op(x)
        assert torch.equal(y, x) and y.data_ptr() != x.data_ptr()
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        IdentityTransfer(0)


def test_sparse_transfer_validates_triplets() -> None:
    i = torch.tensor([0, 1])
    ok = (i, i, torch.ones(2, dtype=D))
    t = SparseTransfer(2, 2, ok, ok)
    assert torch.equal(t.matrices()[0], torch.eye(2, dtype=D))
    with pytest.raises(ValueError, match="out of range"):
        SparseTransfer(2, 2, (torch.tensor([0, 2]), i, torch.ones(2, dtype=D)), ok)
    with pytest.raises(ValueError, match="equal length"):
        SparseTransfer(2, 2, (i, i, torch.ones(3, dtype=D)), ok)


# ------------------------------------------------------------------------------------- depth


def test_param_layout_follows_parameters_order() -> None:
    m = ResidualMLP(3, 2, width=4, depth=2)
    layout = param_layout(m)
    assert list(layout) == [n for n, _ in m.named_parameters()]
    offsets = [o for o, _ in layout.values()]
    sizes = [p.numel() for p in m.parameters()]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]


def test_depth_prolongation_formula_and_injection() -> None:
    """Fine block 2j = coarse j, 2j+1 = mean(j, j+1), other layers copied; Π = pick 2j."""
    c, f = depth_pair(3)
    load(f, DepthTransfer(c, f).prolong(flat(c)))
    cb, fb = c.blocks, f.blocks
    for j in range(3):
        torch.testing.assert_close(fb[2 * j].weight, cb[j].weight, rtol=0, atol=0)
    for j in range(2):
        torch.testing.assert_close(fb[2 * j + 1].weight, (cb[j].weight + cb[j + 1].weight) / 2)
        torch.testing.assert_close(fb[2 * j + 1].bias, (cb[j].bias + cb[j + 1].bias) / 2)
    for name in ("input_layer", "output_layer"):
        assert torch.equal(getattr(f, name).weight, getattr(c, name).weight)

    t = DepthTransfer(c, f)
    P, R, Pi = t.matrices()
    torch.testing.assert_close(Pi @ P, torch.eye(t.n_coarse, dtype=D), rtol=0, atol=0)
    torch.testing.assert_close(R, P.T, rtol=0, atol=0)
    torch.manual_seed(3)
    x_f = flat(ResidualMLP(3, 2, width=5, depth=5))
    x_c = load(ResidualMLP(3, 2, width=5, depth=3), t.inject(x_f))
    fine = load(ResidualMLP(3, 2, width=5, depth=5), x_f)
    for j in range(3):
        assert torch.equal(x_c.blocks[j].weight, fine.blocks[2 * j].weight)


@pytest.mark.parametrize("injection", ["injection", "full_weighting"])
def test_depth_fast_path_matches_the_sparse_reference(injection: str) -> None:
    """ResidualMLP/ConvResNet blocks are contiguous, so DepthTransfer slices the flat vectors;
    the result equals the sparse index maps (and the dense matrices) up to summation order."""
    c, f = depth_pair(4, width=3)
    fast = DepthTransfer(c, f, injection=injection, restriction_scale=0.7)
    ref = DepthTransfer(c, f, injection=injection, restriction_scale=0.7)
    assert fast._segments is not None
    ref._segments = None  # force the generic sparse path
    P, R, Pi = fast.matrices()
    gen = torch.Generator().manual_seed(0)
    for cols in ((), (3,)):
        v = torch.randn(fast.n_coarse, *cols, generator=gen, dtype=D)
        g = torch.randn(fast.n_fine, *cols, generator=gen, dtype=D)
        for op, M, x in (("prolong", P, v), ("restrict", R, g), ("inject", Pi, g)):
            out = getattr(fast, op)(x)
            torch.testing.assert_close(out, getattr(ref, op)(x), rtol=1e-15, atol=1e-15)
            torch.testing.assert_close(out, M @ x, rtol=1e-14, atol=1e-14)


def test_depth_full_weighting() -> None:
    c, f = depth_pair(4, width=3)
    t = DepthTransfer(c, f, injection="full_weighting")
    P, _, Pi = t.matrices()
    # Every row of Π sums to one (constant profiles kept), but Π P is a smoothing, not I.
    torch.testing.assert_close(Pi.sum(dim=1), torch.ones(t.n_coarse, dtype=D))
    assert not torch.allclose(Pi @ P, torch.eye(t.n_coarse, dtype=D))
    torch.manual_seed(2)
    fine = ResidualMLP(3, 2, width=3, depth=7)
    coarse = load(ResidualMLP(3, 2, width=3, depth=4), t.inject(flat(fine)))
    fw = [b.weight for b in fine.blocks]
    torch.testing.assert_close(coarse.blocks[1].weight, fw[1] / 4 + fw[2] / 2 + fw[3] / 4)
    torch.testing.assert_close(coarse.blocks[0].weight, 2 * fw[0] / 3 + fw[1] / 3)
    torch.testing.assert_close(coarse.blocks[3].weight, 2 * fw[6] / 3 + fw[5] / 3)
    torch.testing.assert_close(coarse.output_layer.weight, fine.output_layer.weight)


def test_prolonged_residual_mlp_error_is_first_order_in_h() -> None:
    """With a smooth parameter profile W(t), the prolonged network computes the coarse function
    up to the Euler error, which halves at each refinement (first order in h)."""
    X = torch.randn(64, 2, generator=torch.Generator().manual_seed(5), dtype=D)
    errors = []
    for K in (3, 5, 9, 17, 33):
        c = smooth_residual_mlp(K)
        f = ResidualMLP(2, 1, width=6, depth=2 * K - 1)
        load(f, DepthTransfer(c, f).prolong_params(flat(c)))
        with torch.no_grad():
            errors.append(float((c(X) - f(X)).abs().max() / c(X).abs().max()))
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    # Measured: errors 0.22, 0.081, 0.038, 0.019, 0.0094; ratios 2.68, 2.12, 2.03, 2.00.
    assert all(1.8 < r < 3.0 for r in ratios), (errors, ratios)
    assert all(abs(r - 2) < 0.15 for r in ratios[-2:]), (errors, ratios)
    assert errors[-1] < 0.015
    # The h-halving matters: keeping the coarse step on the fine network is badly wrong.
    c = smooth_residual_mlp(17)
    f = ResidualMLP(2, 1, width=6, depth=33)
    load(f, DepthTransfer(c, f).prolong_params(flat(c)))
    f.h = c.h
    with torch.no_grad():
        assert float((c(X) - f(X)).abs().max() / c(X).abs().max()) > 10 * errors[3]


def test_depth_restriction_has_the_coarse_gradient_scale() -> None:
    """R ∇f_f(P x_c) ≈ ∇f_c(x_c) (the coarse network's own gradient), closer as h → 0; with
    R = ½Pᵀ the relative error would be about ½."""
    gen = torch.Generator().manual_seed(7)
    X, Y = torch.randn(40, 2, generator=gen, dtype=D), torch.randn(40, 1, generator=gen, dtype=D)
    rel = []
    for K in (5, 17):
        c = smooth_residual_mlp(K)
        f = ResidualMLP(2, 1, width=6, depth=2 * K - 1)
        t = DepthTransfer(c, f)
        x_c = flat(c)
        g_c = grad_at(c, x_c, X, Y)
        Rg = t.restrict(grad_at(f, t.prolong(x_c), X, Y))
        rel.append(float((Rg - g_c).norm() / g_c.norm()))
        # Exactly the gradient of the Galerkin model x_c ↦ f_f(P x_c) (chain rule).
        xc = x_c.clone().requires_grad_(True)
        galerkin = torch.autograd.grad(loss_at(f, t.prolong(xc), X, Y), xc)[0]
        torch.testing.assert_close(Rg, galerkin, rtol=1e-12, atol=1e-14)
    assert rel[1] < rel[0] < 0.2 and rel[1] < 0.06, rel


def test_depth_transfer_for_conv_resnet() -> None:
    torch.manual_seed(0)
    kw = {"in_channels": 1, "num_classes": 3, "image_size": 6, "width": 3, "dtype": D}
    c, f = ConvResNet(depth=3, **kw), ConvResNet(depth=5, **kw)
    t = DepthTransfer(c, f)
    load(f, t.prolong(flat(c)))
    torch.testing.assert_close(f.blocks[3].weight, (c.blocks[1].weight + c.blocks[2].weight) / 2)
    assert torch.equal(f.stem.weight, c.stem.weight) and torch.equal(f.head.bias, c.head.bias)
    torch.testing.assert_close(t.inject(flat(f)), flat(c), rtol=0, atol=0)


def test_depth_transfer_errors() -> None:
    c, f = depth_pair(3)
    with pytest.raises(ValueError, match="coarse depth 3 needs a fine depth 5, got 6"):
        DepthTransfer(c, ResidualMLP(3, 2, width=5, depth=6))
    with pytest.raises(ValueError, match="same type"):
        DepthTransfer(c, MLP(3, 2, width=5, depth=5))
    with pytest.raises(ValueError, match="ODE view"):
        DepthTransfer(MLP(3, 2, depth=3), MLP(3, 2, depth=5))
    with pytest.raises(ValueError, match="at least 2 blocks"):
        DepthTransfer(ResidualMLP(3, 2, depth=1), ResidualMLP(3, 2, depth=1))
    with pytest.raises(ValueError, match=r"differ in width \(5 vs 6\)"):
        DepthTransfer(c, ResidualMLP(3, 2, width=6, depth=5))
    with pytest.raises(ValueError, match="activation_name"):
        DepthTransfer(c, ResidualMLP(3, 2, width=5, depth=5, activation="relu"))
    with pytest.raises(ValueError, match="injection must be one of"):
        DepthTransfer(c, f, injection="average")
    with pytest.raises(ValueError, match="restriction_scale"):
        DepthTransfer(c, f, restriction_scale=-1.0)
    wrong_h = ResidualMLP(3, 2, width=5, depth=5, h=c.h)
    with pytest.raises(ValueError, match="half the coarse one"):
        DepthTransfer(c, wrong_h)
    assert DepthTransfer(c, wrong_h, check_step=False).n_fine == sum(
        p.numel() for p in f.parameters())


# ------------------------------------------------------------------------------------- width


WIDTH_CASES = [
    (cls, mapping, split)
    for cls in (ResidualMLP, MLP)
    for mapping in ("cyclic", "random")
    for split in ("random", "uniform")
]


@pytest.mark.parametrize(("cls", "mapping", "split"), WIDTH_CASES)
def test_widening_preserves_the_function_and_is_galerkin(cls: type, mapping: str,
                                                         split: str) -> None:
    """f_f(P x_c) = f_c(x_c) for every x_c, hence R ∇f_f(P x_c) = ∇f_c(x_c); and Π P = I."""
    torch.manual_seed(0)
    c, f = cls(3, 2, width=4, depth=3), cls(3, 2, width=11, depth=3)
    t = WidthTransfer(c, f, mapping=mapping, split=split, seed=3)
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(20, 3, generator=gen, dtype=D), torch.randn(20, 2, generator=gen, dtype=D)
    x_c = flat(c) + 0.3 * torch.randn(t.n_coarse, generator=gen, dtype=D)  # not only the init
    load(c, x_c)
    load(f, t.prolong_params(x_c))
    with torch.no_grad():
        torch.testing.assert_close(f(X), c(X), rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(t.restrict(grad_at(f, t.prolong(x_c), X, Y)),
                               grad_at(c, x_c, X, Y), rtol=1e-11, atol=1e-13)
    P, _, Pi = t.matrices()
    torch.testing.assert_close(Pi @ P, torch.eye(t.n_coarse, dtype=D), rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(t.inject(t.prolong(x_c)), x_c, rtol=1e-14, atol=1e-14)
    lam, g = t.split_weights, t.neuron_map
    assert torch.equal(g[:4], torch.arange(4)) and int(g.max()) < 4
    sums = torch.zeros(4, dtype=D).index_add_(0, g, lam)
    torch.testing.assert_close(sums, torch.ones(4, dtype=D))


def test_random_split_breaks_the_symmetry_of_duplicated_neurons() -> None:
    """Uniform split: duplicates get identical gradients (stuck together); random split: not."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    X, Y = torch.randn(30, 3, generator=gen, dtype=D), torch.randn(30, 2, generator=gen, dtype=D)
    c = ResidualMLP(3, 2, width=3, depth=2)
    gaps = {}
    for split in ("uniform", "random"):
        f = ResidualMLP(3, 2, width=6, depth=2)
        t = WidthTransfer(c, f, split=split)
        load(f, t.prolong_params(flat(c)))
        ((f(X) - Y) ** 2).mean().backward()
        gw = f.input_layer.weight.grad
        assert gw is not None
        gaps[split] = float((gw[0] - gw[3]).abs().max() / gw[0].abs().max())  # neuron 3 ↦ 0
    assert gaps["uniform"] < 1e-12 and gaps["random"] > 1e-3, gaps


def test_width_transfer_errors() -> None:
    c = ResidualMLP(3, 2, width=4, depth=2)
    with pytest.raises(ValueError, match="must not exceed the fine width"):
        WidthTransfer(ResidualMLP(3, 2, width=8, depth=2), c)
    with pytest.raises(ValueError, match="differ in depth"):
        WidthTransfer(c, ResidualMLP(3, 2, width=8, depth=3))
    with pytest.raises(ValueError, match="differ in in_features"):
        WidthTransfer(c, ResidualMLP(4, 2, width=8, depth=2))
    with pytest.raises(ValueError, match="same type"):
        WidthTransfer(c, MLP(3, 2, width=8, depth=2))
    kw = {"in_channels": 1, "num_classes": 2, "image_size": 4}
    with pytest.raises(ValueError, match=r"supports mldd\.models\.MLP and ResidualMLP"):
        WidthTransfer(ConvResNet(width=2, **kw), ConvResNet(width=4, **kw))
    f = ResidualMLP(3, 2, width=8, depth=2)
    with pytest.raises(ValueError, match="mapping must be one of"):
        WidthTransfer(c, f, mapping="nearest")
    with pytest.raises(ValueError, match="split must be one of"):
        WidthTransfer(c, f, split="half")
    with pytest.raises(ValueError, match="seed must be an int"):
        WidthTransfer(c, f, seed=1.5)  # type: ignore[arg-type]
    # Equal widths are allowed: the identity.
    t = WidthTransfer(c, ResidualMLP(3, 2, width=4, depth=2))
    torch.testing.assert_close(t.matrices()[0], torch.eye(t.n_coarse, dtype=D))
