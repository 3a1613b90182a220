"""Collocation-point samplers on axis-aligned boxes.

Every sampler returns an ``(n, d)`` tensor of points in the box ``bounds = [(lo_1, hi_1), ...,
(lo_d, hi_d)]``. The PINN problems sample their collocation points once, at construction, with
:func:`sample`; Hammersley points are the default of the SPQN experiments [KKKK24].

* :func:`hammersley` — deterministic low-discrepancy set: first coordinate ``i / n``, the others
  the radical inverses of ``i`` in bases 2, 3, 5, ... (the Hammersley construction; [Nie92] §3.1).
* :func:`sobol` — scrambled Sobol' sequence (``torch.quasirandom.SobolEngine``), seeded.
* :func:`uniform` — i.i.d. uniform points from a ``torch.Generator``.
* :func:`grid` — tensor-product uniform grid including the end points.

References:
    [Nie92] H. Niederreiter, *Random Number Generation and Quasi-Monte Carlo Methods*, SIAM 1992.
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, "Enhancing training of
    physics-informed neural networks using domain-decomposition based preconditioning
    strategies", SIAM J. Sci. Comput. 2024, arXiv:2306.17648.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Bounds = Sequence[tuple[float, float]]

SAMPLERS: tuple[str, ...] = ("hammersley", "sobol", "uniform", "grid")

# Enough primes for a 25-dimensional Hammersley set (first coordinate + 24 radical inverses);
# the PINN problems here are 2-D, and high-dimensional Hammersley sets degrade anyway.
_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79,
           83, 89, 97)


def _check_bounds(bounds: Bounds) -> list[tuple[float, float]]:
    out = []
    if len(bounds) == 0:
        raise ValueError("bounds must list at least one (lo, hi) pair")
    for k, b in enumerate(bounds):
        if len(b) != 2:
            raise ValueError(f"bounds[{k}] must be a (lo, hi) pair, got {b!r}")
        lo, hi = float(b[0]), float(b[1])
        if not lo < hi:
            raise ValueError(f"bounds[{k}] must satisfy lo < hi, got ({lo}, {hi})")
        out.append((lo, hi))
    return out


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise ValueError(f"number of points must be a positive integer, got {n!r}")
    return int(n)


def _scale(unit: Tensor, bounds: list[tuple[float, float]], dtype: torch.dtype) -> Tensor:
    """Map points of the unit cube (float64) affinely onto the box, then cast."""
    lo = torch.tensor([b[0] for b in bounds], dtype=torch.float64)
    hi = torch.tensor([b[1] for b in bounds], dtype=torch.float64)
    return (lo + unit * (hi - lo)).to(dtype)


def radical_inverse(i: Tensor, base: int) -> Tensor:
    """Van der Corput radical inverse ``φ_b(i) = Σ_k a_k b^{-k-1}`` of ``i = Σ_k a_k b^k``.

    Args:
        i: non-negative integer tensor (int64).
        base: the base ``b >= 2``.

    Returns:
        float64 tensor of the same shape with values in ``[0, 1)``.
    """
    if base < 2:
        raise ValueError(f"base must be >= 2, got {base}")
    i = i.to(torch.int64).clone()
    out = torch.zeros(i.shape, dtype=torch.float64)
    scale = 1.0 / base
    # Digit loop: log_b(max i) iterations, vectorised over all points.
    while bool((i > 0).any()):
        out += (i % base).to(torch.float64) * scale
        i = torch.div(i, base, rounding_mode="floor")
        scale /= base
    return out


def hammersley(n: int, bounds: Bounds, dtype: torch.dtype = torch.float64) -> Tensor:
    """The ``n``-point Hammersley set on the box ``bounds``.

    Point ``i = 0, ..., n-1`` of the unit cube is ``(i/n, φ_2(i), φ_3(i), φ_5(i), ...)`` with
    ``φ_b`` the radical inverse in base ``b`` (:func:`radical_inverse`); its star discrepancy is
    ``O(log(n)^{d-1} / n)`` [Nie92]. Deterministic: no seed.

    Args:
        n: number of points.
        bounds: ``[(lo, hi), ...]`` per dimension.
        dtype: dtype of the result.

    Returns:
        ``(n, d)`` tensor.
    """
    n = _check_n(n)
    b = _check_bounds(bounds)
    d = len(b)
    if d > len(_PRIMES) + 1:
        raise ValueError(f"hammersley supports at most {len(_PRIMES) + 1} dimensions, got {d}")
    i = torch.arange(n, dtype=torch.int64)
    cols = [i.to(torch.float64) / n]
    cols += [radical_inverse(i, p) for p in _PRIMES[: d - 1]]
    return _scale(torch.stack(cols, dim=1), b, dtype)


def sobol(
    n: int, bounds: Bounds, seed: int | None = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """``n`` points of a scrambled Sobol' sequence on the box (deterministic for a given seed).

    Args:
        n: number of points (powers of two keep the balance properties of the net).
        bounds: ``[(lo, hi), ...]`` per dimension.
        seed: scrambling seed; ``None`` draws one from torch's global generator.
        dtype: dtype of the result.
    """
    n = _check_n(n)
    b = _check_bounds(bounds)
    engine = torch.quasirandom.SobolEngine(len(b), scramble=True, seed=seed)
    return _scale(engine.draw(n, dtype=torch.float64), b, dtype)


def uniform(
    n: int,
    bounds: Bounds,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """``n`` i.i.d. uniform points on the box, drawn from ``generator`` (global RNG if ``None``)."""
    n = _check_n(n)
    b = _check_bounds(bounds)
    unit = torch.rand(n, len(b), generator=generator, dtype=torch.float64)
    return _scale(unit, b, dtype)


def grid(shape: Sequence[int], bounds: Bounds, dtype: torch.dtype = torch.float64) -> Tensor:
    """The tensor-product grid with ``shape[k]`` uniform points (end points included) per axis.

    Rows are ordered with the *last* axis varying fastest (``meshgrid(indexing="ij")``).

    Returns:
        ``(prod(shape), d)`` tensor.
    """
    b = _check_bounds(bounds)
    if len(shape) != len(b):
        raise ValueError(f"grid shape {tuple(shape)} and bounds ({len(b)} dims) disagree")
    axes = [
        torch.linspace(lo, hi, _check_n(m), dtype=torch.float64)
        for m, (lo, hi) in zip(shape, b, strict=True)
    ]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=1).to(dtype)


def sample(
    kind: str,
    n: int,
    bounds: Bounds,
    *,
    seed: int | None = 0,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """Dispatch to a sampler by name.

    Args:
        kind: one of :data:`SAMPLERS` (``"hammersley"``, ``"sobol"``, ``"uniform"``, ``"grid"``).
        n: number of points; for ``"grid"`` the grid has ``m`` points per axis with ``m`` the
            smallest integer such that ``m^d >= n`` (so it may hold more than ``n`` points).
        bounds: ``[(lo, hi), ...]`` per dimension.
        seed: seed of ``"sobol"`` scrambling and of the ``"uniform"`` generator (ignored by the
            deterministic samplers).
        dtype: dtype of the result.

    Raises:
        ValueError: for an unknown ``kind`` (the message lists the known ones) or bad arguments.
    """
    if kind == "hammersley":
        return hammersley(n, bounds, dtype=dtype)
    if kind == "sobol":
        return sobol(n, bounds, seed=seed, dtype=dtype)
    if kind == "uniform":
        gen = torch.Generator()
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(seed)
        return uniform(n, bounds, generator=gen, dtype=dtype)
    if kind == "grid":
        n = _check_n(n)
        d = len(_check_bounds(bounds))
        m = max(2, round(n ** (1.0 / d)))
        while m**d < n:
            m += 1
        return grid([m] * d, bounds, dtype=dtype)
    raise ValueError(f"unknown sampler {kind!r}; choose one of {', '.join(SAMPLERS)}")
