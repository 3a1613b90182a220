"""Collocation samplers: shapes, bounds, the Hammersley construction, low discrepancy, seeding."""

from __future__ import annotations

import pytest
import torch

from mldd.problems.samplers import (
    SAMPLERS,
    grid,
    hammersley,
    radical_inverse,
    sample,
    sobol,
    uniform,
)

BOX = [(-1.0, 1.0), (0.0, 12.0)]


def star_discrepancy_estimate(u: torch.Tensor, m: int = 32) -> float:
    """Max over anchored boxes [0, a) × [0, b) with a, b on an m-grid of |fraction − area|."""
    a = torch.arange(1, m + 1, dtype=torch.float64) / m
    inside = (u[:, 0:1, None] < a[None, :, None]) & (u[:, 1:2, None] < a[None, None, :])
    frac = inside.to(torch.float64).mean(0)
    return float((frac - a[:, None] * a[None, :]).abs().max())


@pytest.mark.parametrize("kind", SAMPLERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_and_bounds(kind: str, dtype: torch.dtype) -> None:
    pts = sample(kind, 1000, BOX, dtype=dtype)
    assert pts.dtype == dtype
    assert pts.ndim == 2 and pts.shape[1] == 2
    assert pts.shape[0] == 1000 if kind != "grid" else pts.shape[0] >= 1000
    for k, (lo, hi) in enumerate(BOX):
        assert float(pts[:, k].min()) >= lo and float(pts[:, k].max()) <= hi


def test_hammersley_construction() -> None:
    pts = hammersley(8, [(0.0, 1.0)] * 3)
    i = torch.arange(8, dtype=torch.float64)
    torch.testing.assert_close(pts[:, 0], i / 8)
    # van der Corput in base 2: 0, 1/2, 1/4, 3/4, 1/8, 5/8, 3/8, 7/8
    expected2 = torch.tensor([0, 4, 2, 6, 1, 5, 3, 7], dtype=torch.float64) / 8
    torch.testing.assert_close(pts[:, 1], expected2)
    expected3 = torch.tensor([0, 3, 6, 1, 4, 7, 2, 5], dtype=torch.float64) / 9
    torch.testing.assert_close(pts[:, 2], expected3)


def test_radical_inverse_values_and_range() -> None:
    i = torch.arange(1, 5000)
    for base in (2, 3, 5, 7):
        r = radical_inverse(i, base)
        assert float(r.min()) > 0 and float(r.max()) < 1
        assert r.unique().numel() == i.numel()  # a bijection onto b-adic fractions
    assert float(radical_inverse(torch.tensor([10]), 10)[0]) == pytest.approx(0.01)
    with pytest.raises(ValueError):
        radical_inverse(i, 1)


def test_low_discrepancy_beats_random() -> None:
    unit = [(0.0, 1.0), (0.0, 1.0)]
    n = 1024
    d_ham = star_discrepancy_estimate(hammersley(n, unit))
    d_sob = star_discrepancy_estimate(sobol(n, unit, seed=3))
    g = torch.Generator().manual_seed(0)
    d_rnd = star_discrepancy_estimate(uniform(n, unit, generator=g))
    # Hammersley: D* = O(log n / n) ≈ 0.005 here; i.i.d. points: O(n^{-1/2}) ≈ 0.03.
    assert d_ham < 0.01
    assert d_sob < 0.01
    assert d_ham < d_rnd / 2 and d_sob < d_rnd / 2


def test_determinism_and_seeds() -> None:
    torch.testing.assert_close(hammersley(100, BOX), hammersley(100, BOX))
    torch.testing.assert_close(sobol(100, BOX, seed=5), sobol(100, BOX, seed=5))
    assert not torch.equal(sobol(100, BOX, seed=5), sobol(100, BOX, seed=6))
    u1 = sample("uniform", 50, BOX, seed=1)
    torch.testing.assert_close(u1, sample("uniform", 50, BOX, seed=1))
    assert not torch.equal(sample("uniform", 50, BOX, seed=1), sample("uniform", 50, BOX, seed=2))
    state = torch.get_rng_state()
    sample("uniform", 50, BOX, seed=1)
    assert torch.equal(state, torch.get_rng_state())  # a private generator, global RNG untouched


def test_grid() -> None:
    pts = grid([3, 5], BOX)
    assert pts.shape == (15, 2)
    torch.testing.assert_close(pts[0], torch.tensor([-1.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(pts[-1], torch.tensor([1.0, 12.0], dtype=torch.float64))
    torch.testing.assert_close(pts[:5, 1], torch.linspace(0, 12, 5, dtype=torch.float64))
    assert sample("grid", 100, BOX).shape == (100, 2)
    assert sample("grid", 101, BOX).shape == (121, 2)
    with pytest.raises(ValueError, match="disagree"):
        grid([3], BOX)


def test_sample_dispatch_errors() -> None:
    with pytest.raises(ValueError, match=r"'latin'.*hammersley.*sobol.*uniform.*grid"):
        sample("latin", 10, BOX)
    with pytest.raises(ValueError, match="positive integer"):
        sample("hammersley", 0, BOX)
    with pytest.raises(ValueError, match="lo < hi"):
        sample("hammersley", 10, [(1.0, 0.0)])
    with pytest.raises(ValueError, match="at least one"):
        sample("sobol", 10, [])
    with pytest.raises(ValueError, match="pair"):
        sample("uniform", 10, [(0.0, 1.0, 2.0)])  # type: ignore[list-item]
