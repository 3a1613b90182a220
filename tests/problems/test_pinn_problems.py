"""PINN problems: options, models, hard constraints, residuals, loss, metric, registry, cache."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor, nn

import mldd.problems as problems
from mldd.models import MLP
from mldd.problems import cache
from mldd.problems.pinn import (
    AllenCahn,
    Burgers,
    DiffusionAdvection,
    GridPINN,
    KleinGordon,
    Poisson2D,
)
from pinn_settings import COARSE

SIZES = {
    "burgers": (8, 20),
    "klein-gordon": (6, 50),
    "allen-cahn": (6, 64),
    "diffusion-advection": (10, 50),
    "poisson2d": (4, 32),
}
NAMES = sorted(SIZES)


def make(name: str, **kw: Any) -> GridPINN:
    opts: dict[str, Any] = {"n_collocation": 256, "reference_options": COARSE[name], **kw}
    p = problems.get(name, **opts)
    assert isinstance(p, GridPINN)
    return p


def make_kg(**kw: Any) -> KleinGordon:
    p = make("klein-gordon", **kw)
    assert isinstance(p, KleinGordon)
    return p


def small_model(p: GridPINN, seed: int = 0) -> nn.Module:
    # A small random network keeps the finite-difference checks fast; a non-zero last layer
    # makes N(x) non-trivial (the MLP's zero biases alone would not).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        m = MLP(2, 1, width=8, depth=2, dtype=p.dtype)
        last = m.layers[-1]
        assert isinstance(last, nn.Linear)
        nn.init.normal_(last.bias)
    return m


# ------------------------------------------------------------------------------ registry, options
def test_registry_names_and_default_sizes() -> None:
    assert set(NAMES) <= set(problems.available())
    classes = {"burgers": Burgers, "klein-gordon": KleinGordon, "allen-cahn": AllenCahn,
               "diffusion-advection": DiffusionAdvection, "poisson2d": Poisson2D}
    for name in NAMES:
        p = make(name)
        assert isinstance(p, classes[name]) and p.name == name
        depth, width = SIZES[name]
        m = p.build_model(seed=0)
        assert isinstance(m, MLP) and (m.depth, m.width) == (depth, width)
        assert m.layers[0].in_features == 2 and m.layers[-1].out_features == 1
        d = p.describe()
        assert d["name"] == name and d["width"] == width and d["depth"] == depth
        assert problems.describe_all()[name]


def test_collocation_points_default_and_sampler() -> None:
    p = problems.get("klein-gordon")
    assert isinstance(p, GridPINN)
    assert p.collocation.shape == (10_000, 2) and p.collocation.dtype == torch.float64
    assert float(p.collocation[:, 1].max()) <= 12.0 and float(p.collocation[:, 0].min()) >= -1.0
    q = make("burgers", sampler="sobol", seed=3)
    r = make("burgers", sampler="sobol", seed=3)
    torch.testing.assert_close(q.collocation, r.collocation)
    assert not torch.equal(q.collocation, make("burgers").collocation)


def test_build_model_seeding_leaves_global_rng_alone() -> None:
    p = make("burgers")
    state = torch.get_rng_state()
    a, b, c = p.build_model(seed=1), p.build_model(seed=1), p.build_model(seed=2)
    assert torch.equal(state, torch.get_rng_state())
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(next(a.parameters()), next(c.parameters()))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_collocation": 0}, "n_collocation"),
        ({"n_collocation": 2.5}, "n_collocation"),
        ({"sampler": "latin"}, "latin.*hammersley"),
        ({"width": 0}, "width"),
        ({"depth": -1}, "depth"),
        ({"activation": "swish2"}, "swish2"),
        ({"dtype": torch.int64}, "dtype"),
        ({"seed": "a"}, "seed"),
        ({"reference_options": {"n_grid": 3}}, "n_grid"),
        ({"network": "cnn"}, "cnn.*mlp, resmlp"),
    ],
)
def test_invalid_options_raise(kw: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        problems.get("burgers", **kw)


def test_klein_gordon_specific_options() -> None:
    with pytest.raises(ValueError, match="boundary_weight"):
        make("klein-gordon", boundary_weight=0.0)
    with pytest.raises(ValueError, match="n_boundary"):
        make("klein-gordon", n_boundary=0)


# ------------------------------------------------------------------------------ hard constraints
def _check_constraints(p: GridPINN, m: nn.Module) -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.rand(64, generator=g, dtype=torch.float64)
    (x0, x1), (y0, y1) = p.bounds
    a = x0 + (x1 - x0) * s
    b = y0 + (y1 - y0) * s
    zeros = torch.zeros_like(s)

    def u(col0: Tensor, col1: Tensor) -> Tensor:
        return p.transform(m, torch.stack([col0, col1], 1)).detach()

    if p.name == "burgers":
        torch.testing.assert_close(u(a, zeros), -torch.sin(math.pi * a), rtol=0, atol=1e-15)
        assert float(u(zeros - 1, b).abs().max()) < 1e-15
        assert float(u(zeros + 1, b).abs().max()) < 1e-15
    elif p.name == "allen-cahn":
        torch.testing.assert_close(u(a, zeros), a**2 * torch.cos(math.pi * a), rtol=0, atol=1e-15)
        torch.testing.assert_close(u(zeros - 1, b), zeros - 1, rtol=0, atol=1e-15)
        torch.testing.assert_close(u(zeros + 1, b), zeros - 1, rtol=0, atol=1e-15)
    elif p.name == "klein-gordon":
        torch.testing.assert_close(u(a, zeros), a, rtol=0, atol=0)
        # u_t(0, x) = 0: the ansatz is x + t² N, so a one-sided difference is O(h²)
        h = 1e-6
        assert float(((u(a, zeros + h) - a) / h).abs().max()) < 1e-4
    else:  # zero on the four walls of the unit square
        for col0, col1 in ((zeros, b), (zeros + 1, b), (a, zeros), (a, zeros + 1)):
            assert float(u(col0, col1).abs().max()) == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_transform_satisfies_constraints_exactly(name: str) -> None:
    p = make(name)
    _check_constraints(p, small_model(p))
    _check_constraints(p, p.build_model(seed=4))


# ------------------------------------------------------------------------------ residuals
def _fd_residual(p: GridPINN, m: nn.Module, x: Tensor, h: float = 1e-3) -> Tensor:
    """The same residual as the problem's, with every derivative by central differences."""

    def u(d0: float = 0.0, d1: float = 0.0) -> Tensor:
        shift = torch.tensor([d0, d1], dtype=x.dtype)
        with torch.no_grad():
            return p.transform(m, x + shift)

    u0 = u()
    d0 = (u(h) - u(-h)) / (2 * h)
    d1 = (u(0, h) - u(0, -h)) / (2 * h)
    d00 = (u(h) - 2 * u0 + u(-h)) / h**2
    d11 = (u(0, h) - 2 * u0 + u(0, -h)) / h**2
    c0, c1 = x[:, 0], x[:, 1]
    if p.name == "burgers":
        return d1 + u0 * d0 - (0.01 / math.pi) * d00
    if p.name == "allen-cahn":
        return d1 - 1e-3 * d00 - 5 * (u0 - u0**3)
    if p.name == "klein-gordon":
        return d11 - d00 + u0**2 + c0 * torch.cos(c1) - (c0 * torch.cos(c1)) ** 2
    if p.name == "diffusion-advection":
        return -0.01 * (d00 + d11) + d0 + d1 - 1.0
    pi = math.pi
    f = 2 * pi**2 * torch.sin(pi * c0) * torch.sin(pi * c1) + 5 * pi**2 * torch.sin(
        4 * pi * c0
    ) * torch.sin(2 * pi * c1)
    return -(d00 + d11) - f


@pytest.mark.parametrize("name", NAMES)
def test_residual_matches_finite_differences(name: str) -> None:
    p = make(name)
    m = small_model(p, seed=1)
    x = p.collocation[::8]
    r = p.residual(m, x)
    assert r.shape == (x.shape[0],)
    fd = _fd_residual(p, m, x)
    err = float((r.detach() - fd).abs().max())
    assert err < 1e-5 * max(1.0, float(fd.abs().max()))


def test_residual_of_the_reference_like_solution_vanishes() -> None:
    # Klein–Gordon: a "network" that makes the ansatz the exact solution has zero residual.
    p = make_kg()

    class Exact(nn.Module):
        def forward(self, x: Tensor) -> Tensor:
            xs, t = x[:, 0:1], x[:, 1:2]
            safe = torch.where(t == 0, 1.0, t)
            # (x cos t − x) / t², with its limit −x/2 at t = 0
            return torch.where(t == 0, -xs / 2, -2 * xs * torch.sin(safe / 2) ** 2 / safe**2)

    x = p.collocation[p.collocation[:, 1] > 0.1]
    assert float(p.residual(Exact(), x).detach().abs().max()) < 1e-9
    assert float(p.boundary_loss(Exact())) < 1e-20


# ------------------------------------------------------------------------------ loss, metric
@pytest.mark.parametrize("name", NAMES)
def test_loss_is_scalar_with_graph(name: str) -> None:
    p = make(name)
    m = p.build_model(seed=0)
    loss = p.loss(m)
    assert loss.ndim == 0 and loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in m.parameters())
    batch_loss = p.loss(m, p.collocation[:10])
    assert batch_loss.ndim == 0


def test_klein_gordon_loss_has_boundary_penalty() -> None:
    p = make_kg(boundary_weight=3.0, n_boundary=50)
    assert p.boundary.shape == (100, 2)
    torch.testing.assert_close(p.boundary_values.abs(), torch.cos(p.boundary[:, 1]).abs())
    m = p.build_model(seed=0)
    r = p.residual(m, p.collocation)
    expected = (r * r).mean() + 3.0 * p.boundary_loss(m)
    torch.testing.assert_close(p.loss(m), expected)
    assert float(p.boundary_loss(m).detach()) > 0


class _Lookup(nn.Module):
    """A 'network' returning precomputed values at the reference points (in their order)."""

    def __init__(self, values: Tensor) -> None:
        super().__init__()
        self.values = values

    def forward(self, x: Tensor) -> Tensor:
        assert x.shape[0] == self.values.shape[0]
        return self.values.reshape(-1, 1)


class _Const(nn.Module):
    def __init__(self, c: float) -> None:
        super().__init__()
        self.c = c

    def forward(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0], 1), self.c, dtype=x.dtype)


@pytest.mark.parametrize("name", NAMES)
def test_metric_of_the_reference_is_zero(name: str) -> None:
    p = make(name)
    pts, ref = p.reference()
    assert pts.dtype == torch.float64 and ref.shape == (pts.shape[0],)
    # Every ansatz is affine in the network output, u = A + B·N: invert it at the points.
    A = p.predict(_Const(0.0), pts)
    B = p.predict(_Const(1.0), pts) - A
    N = torch.where(B.abs() > 1e-12, (ref - A) / torch.where(B == 0, 1.0, B), 0.0)
    assert p.metric(_Lookup(N)) < 1e-12
    assert p.metric(p.build_model(seed=0)) > 1e-3


def test_reference_grid_ordering() -> None:
    p = make("burgers")
    a0, a1, U = p.reference_grid()
    pts, vals = p.reference()
    assert pts.shape == (a0.size * a1.size, 2)
    k = 3 * a1.size + 5  # x index 3, t index 5
    assert float(pts[k, 0]) == a0[3] and float(pts[k, 1]) == a1[5]
    assert float(vals[k]) == U[3, 5]


def test_float32_problem() -> None:
    p = make("allen-cahn", dtype=torch.float32)
    m = p.build_model(seed=0)
    assert p.collocation.dtype == torch.float32 and next(m.parameters()).dtype == torch.float32
    assert p.loss(m).dtype == torch.float32
    assert p.reference()[0].dtype == torch.float32
    assert np.isfinite(p.metric(m))


# ------------------------------------------------------------------------------ cache
def test_cache_writes_once_and_reads_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    calls: list[int] = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"u": np.arange(5.0), "x": np.ones(3)}

    params = {"n": 4, "tol": 1e-8, "shape": (2, 3)}
    first = cache.load_or_compute("demo", params, compute, keys=("u", "x"))
    second = cache.load_or_compute("demo", dict(reversed(params.items())), compute)
    assert len(calls) == 1
    np.testing.assert_array_equal(first["u"], second["u"])
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == [cache.cache_path("demo", params).name]
    cache.load_or_compute("demo", {**params, "n": 5}, compute)  # new parameters, new file
    assert len(calls) == 2 and len(list(tmp_path.iterdir())) == 2
    cache.load_or_compute("demo", params, compute, use_cache=False)
    assert len(calls) == 3


def test_cache_recomputes_corrupted_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    compute: Callable[[], dict[str, np.ndarray]] = lambda: {"u": np.full(4, 2.0)}  # noqa: E731
    path = cache.cache_path("demo", {"a": 1})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not an npz file")
    with pytest.warns(RuntimeWarning, match="recomputing"):
        out = cache.load_or_compute("demo", {"a": 1}, compute)
    np.testing.assert_array_equal(out["u"], np.full(4, 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = cache.load_or_compute("demo", {"a": 1}, compute)  # now a valid file
    np.testing.assert_array_equal(again["u"], out["u"])
    # a file missing an expected array counts as corrupted too
    with pytest.warns(RuntimeWarning):
        cache.load_or_compute("demo", {"a": 1}, compute, keys=("u", "v"))
    assert not [f for f in tmp_path.iterdir() if f.suffix == ".tmp"]


def test_cache_dir_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cache.ENV_VAR, raising=False)
    assert cache.cache_dir() == Path.home() / ".cache" / "mldd" / "references"


def test_problem_reference_is_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_VAR, str(tmp_path))
    import mldd.problems.pinn.burgers as burgers_module

    calls: list[dict[str, Any]] = []
    real = burgers_module.burgers_reference

    @functools.wraps(real)  # keeps the signature the option validation reads
    def counting(**kw: Any) -> dict[str, np.ndarray]:
        calls.append(kw)
        return real(**kw)

    monkeypatch.setattr(burgers_module, "burgers_reference", counting)
    a = make("burgers").reference()
    b = make("burgers").reference()  # a fresh instance reads the file
    assert len(calls) == 1 and len(list(tmp_path.glob("burgers-*.npz"))) == 1
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=0)
    make("burgers", use_cache=False).reference()
    assert len(calls) == 2


def test_residual_network_option() -> None:
    """``network="resmlp"`` builds the residual network the depth hierarchies refine."""
    from mldd.models import ResidualMLP

    p = make("burgers", network="resmlp", depth=5, width=8)
    m = p.build_model(seed=0)
    assert isinstance(m, ResidualMLP) and m.depth == 5 and m.width == 8
    assert p.describe()["network"] == "resmlp"
    assert torch.isfinite(p.loss(m))
