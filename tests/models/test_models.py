"""Networks: shapes, dtypes, parameter counts, the step size h and the ODE view of depth."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mldd.models import ConvResNet, ResidualMLP, SmallCNN, default_step


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ---------------------------------------------------------------------------------- ResidualMLP


def test_residual_mlp_shapes_dtype_and_parameter_count() -> None:
    m = ResidualMLP(3, 2, width=7, depth=5)
    y = m(torch.randn(11, 3, dtype=torch.float64))
    assert y.shape == (11, 2) and y.dtype == torch.float64
    assert len(m.blocks) == 5 and all(isinstance(b, nn.Linear) for b in m.blocks)
    assert n_params(m) == 3 * 7 + 7 + 5 * (7 * 7 + 7) + 7 * 2 + 2
    m32 = ResidualMLP(3, 2, width=4, depth=2, dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in m32.parameters())
    assert m32(torch.randn(5, 3)).dtype == torch.float32


def test_residual_mlp_init_is_xavier_normal_with_zero_bias() -> None:
    torch.manual_seed(0)
    m = ResidualMLP(200, 200, width=200, depth=1)
    for lin in (m.input_layer, m.blocks[0], m.output_layer):
        assert torch.all(lin.bias == 0)
        # Xavier-normal std = sqrt(2 / (fan_in + fan_out)) = 0.0707 here.
        assert abs(float(lin.weight.detach().std()) - math.sqrt(2 / 400)) < 0.005


def test_residual_mlp_flatten_for_images() -> None:
    m = ResidualMLP(1 * 4 * 4, 3, width=5, depth=2, flatten=True)
    assert m(torch.randn(6, 1, 4, 4, dtype=torch.float64)).shape == (6, 3)


@pytest.mark.parametrize(("depth", "T", "h"), [(4, 1.0, 1 / 3), (1, 1.0, 1.0), (2, 3.0, 3.0),
                                               (9, 2.0, 0.25)])
def test_default_step_is_T_over_K_minus_1(depth: int, T: float, h: float) -> None:
    assert default_step(depth, T) == pytest.approx(h)
    assert ResidualMLP(2, 1, width=3, depth=depth, T=T).h == pytest.approx(h)
    assert ConvResNet(1, 2, 4, width=2, depth=depth, T=T).h == pytest.approx(h)


def test_h_override_and_reassignment_changes_forward() -> None:
    m = ResidualMLP(2, 1, width=4, depth=3, h=1.0)
    assert m.h == 1.0 and m.T == 1.0 and m.depth == 3 and m.width == 4
    x = torch.randn(8, 2, dtype=torch.float64)
    y1 = m(x)
    m.h = 0.0  # h = 0 removes the blocks from the computation
    y0 = m(x)
    assert not torch.allclose(y1, y0)
    expected = m.output_layer(torch.tanh(m.input_layer(x)))
    torch.testing.assert_close(y0, expected)


def test_seeding_is_deterministic() -> None:
    torch.manual_seed(3)
    a = ResidualMLP(4, 2, width=6, depth=3)
    torch.manual_seed(3)
    b = ResidualMLP(4, 2, width=6, depth=3)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    torch.manual_seed(3)
    c1 = ConvResNet(1, 3, 6, width=4, depth=2)
    torch.manual_seed(3)
    c2 = ConvResNet(1, 3, 6, width=4, depth=2)
    for p, q in zip(c1.parameters(), c2.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"width": 0}, "width"),
        ({"depth": 0}, "depth"),
        ({"depth": 2.5}, "depth"),
        ({"h": -1.0}, "h"),
        ({"h": 0.0}, "h"),
        ({"T": 0.0}, "T"),
        ({"activation": "nope"}, "activation"),
    ],
)
def test_residual_mlp_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ResidualMLP(2, 1, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------ ODE view of the depth


def _prolong_blocks(coarse: nn.ModuleList, fine: nn.ModuleList) -> None:
    """Fine block 2j <- coarse j; fine 2j+1 <- mean of coarse j and j+1 [KK22]."""
    with torch.no_grad():
        for j, cb in enumerate(coarse):
            for pf, pc in zip(fine[2 * j].parameters(), cb.parameters(), strict=True):
                pf.copy_(pc)
            if j + 1 < len(coarse):
                nxt = coarse[j + 1]
                for pf, pc, pn in zip(fine[2 * j + 1].parameters(), cb.parameters(),
                                      nxt.parameters(), strict=True):
                    pf.copy_(0.5 * (pc + pn))


def _refine(coarse: ResidualMLP | ConvResNet) -> ResidualMLP | ConvResNet:
    K = coarse.depth
    if isinstance(coarse, ResidualMLP):
        fine: ResidualMLP | ConvResNet = ResidualMLP(
            coarse.in_features, coarse.out_features, width=coarse.width, depth=2 * K - 1,
            T=coarse.T, activation=coarse.activation_name, dtype=torch.float64)
        pairs = [(fine.input_layer, coarse.input_layer), (fine.output_layer, coarse.output_layer)]
    else:
        fine = ConvResNet(coarse.in_channels, coarse.num_classes, coarse.image_size,
                          width=coarse.width, depth=2 * K - 1, T=coarse.T,
                          activation=coarse.activation_name, dtype=torch.float64)
        pairs = [(fine.stem, coarse.stem), (fine.head, coarse.head)]
    with torch.no_grad():
        for f, c in pairs:
            for pf, pc in zip(f.parameters(), c.parameters(), strict=True):
                pf.copy_(pc)
    _prolong_blocks(coarse.blocks, fine.blocks)
    assert fine.h == pytest.approx(coarse.h / 2)
    return fine


def _smooth_resmlp(K: int) -> ResidualMLP:
    """Blocks sampled from smooth weight functions W(t) = A + t B, b(t) = a + t c."""
    g = torch.Generator().manual_seed(0)
    width = 6
    A, B = (0.5 * torch.randn(width, width, generator=g, dtype=torch.float64) for _ in range(2))
    a, c = (0.5 * torch.randn(width, generator=g, dtype=torch.float64) for _ in range(2))
    torch.manual_seed(1)
    m = ResidualMLP(3, 2, width=width, depth=K, T=1.0)
    with torch.no_grad():
        for k, blk in enumerate(m.blocks):
            t = k * m.h
            blk.weight.copy_(A + t * B)
            blk.bias.copy_(a + t * c)
    return m


def test_depth_refinement_nearly_preserves_the_function_and_converges() -> None:
    x = torch.randn(50, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    diffs = []
    for K in (3, 5, 9, 17, 33):
        coarse = _smooth_resmlp(K)
        fine = _refine(coarse)
        with torch.no_grad():
            yc, yf = coarse(x), fine(x)
        diffs.append(float((yc - yf).norm() / yc.norm()))
    # The two networks are Euler discretisations of the same ODE: O(h) apart.
    assert all(d2 < d1 for d1, d2 in itertools.pairwise(diffs))
    assert diffs[-1] < 0.3 * diffs[0]
    assert diffs[-1] < 0.02


def test_depth_refinement_conv_resnet_close_for_smooth_weights() -> None:
    x = torch.randn(4, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    diffs = []
    for K in (3, 9):
        torch.manual_seed(0)
        m = ConvResNet(1, 3, 6, width=4, depth=K, activation="tanh", dtype=torch.float64)
        w0 = m.blocks[0].weight.detach().clone()
        with torch.no_grad():
            for k, blk in enumerate(m.blocks):
                blk.weight.copy_(w0 * (1 + k * m.h))  # smooth in t = k h
                blk.bias.fill_(0.1 * k * m.h)
        fine = _refine(m)
        with torch.no_grad():
            diffs.append(float((m(x) - fine(x)).norm() / m(x).norm()))
    assert diffs[1] < diffs[0]


# ------------------------------------------------------------------------------- SmallCNN


def test_small_cnn_shapes_and_parameter_count() -> None:
    m = SmallCNN(3, 10, 12, channels=(4, 8))
    y = m(torch.randn(2, 3, 12, 12))
    assert y.shape == (2, 10) and y.dtype == torch.float32
    expected = (3 * 9 * 4 + 4) + (4 * 9 * 8 + 8) + (8 * 3 * 3 * 10 + 10)
    assert n_params(m) == expected
    rect = SmallCNN(1, 2, (8, 12), channels=(2,), dtype=torch.float64)
    assert rect(torch.randn(1, 1, 8, 12, dtype=torch.float64)).shape == (1, 2)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((1, 10, 3), {}, "too small"),
        ((0, 10, 8), {}, "in_channels"),
        ((1, 10, 8), {"channels": ()}, "channels"),
        ((1, 10, 8), {"channels": (4, 0)}, "channels"),
        ((1, 10, (8,)), {}, "image_size"),
    ],
)
def test_small_cnn_validation(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        SmallCNN(*args, **kwargs)


# ------------------------------------------------------------------------------ ConvResNet


def test_conv_resnet_shapes_params_and_no_batchnorm() -> None:
    m = ConvResNet(3, 5, 8, width=6, depth=3)
    assert m(torch.randn(2, 3, 8, 8)).shape == (2, 5)
    assert len(m.blocks) == 3 and m.width == 6 and m.depth == 3 and m.h == pytest.approx(0.5)
    assert not any(isinstance(mod, nn.modules.batchnorm._BatchNorm) for mod in m.modules())
    expected = (3 * 9 * 6 + 6) + 3 * (6 * 9 * 6 + 6) + (6 * 5 + 5)
    assert n_params(m) == expected
    pooled = ConvResNet(1, 2, 28, width=4, depth=2, downsample=2, h=1.0, dtype=torch.float64)
    assert pooled.h == 1.0
    assert pooled(torch.randn(3, 1, 28, 28, dtype=torch.float64)).dtype == torch.float64


def test_conv_resnet_is_batch_independent() -> None:
    # Without BatchNorm a sample's output must not depend on the rest of the batch.
    m = ConvResNet(1, 3, 6, width=4, depth=2)
    x = torch.randn(5, 1, 6, 6)
    torch.testing.assert_close(m(x)[:2], m(x[:2]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"width": 0}, "width"), ({"depth": -1}, "depth"), ({"h": -0.1}, "h"),
     ({"downsample": 16}, "downsample"), ({"activation": "x"}, "activation")],
)
def test_conv_resnet_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ConvResNet(1, 2, 8, **kwargs)  # type: ignore[arg-type]
