"""Analytic test functions of a flat vector, for testing and benchmarking the optimizers.

These are plain functions ``f(x) -> 0-d tensor``; wrap them with
:class:`mldd.objective.FunctionObjective`, or use them as the loss of a module holding ``x``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def rosenbrock(x: Tensor) -> Tensor:
    """Extended Rosenbrock ``Σ_{i} 100 (x_{2i} − x_{2i−1}²)² + (1 − x_{2i−1})²`` (pairs), n even.

    The minimum is 0 at ``x = (1, …, 1)``; the standard start is ``(−1.2, 1, −1.2, 1, …)``.

    Raises:
        ValueError: if ``n`` is odd.
    """
    if x.numel() % 2:
        raise ValueError(f"extended Rosenbrock needs an even dimension, got n={x.numel()}")
    a, b = x[0::2], x[1::2]
    return (100.0 * (b - a * a) ** 2 + (1.0 - a) ** 2).sum()


def rosenbrock_start(n: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The standard starting point ``(−1.2, 1, −1.2, 1, …)`` of dimension ``n``."""
    x = torch.ones(n, dtype=dtype)
    x[0::2] = -1.2
    return x


def quadratic_diagonal(n: int, condition: float, dtype: torch.dtype = torch.float64) -> Tensor:
    """Eigenvalues ``λ_i`` log-spaced in ``[1, condition]`` (the diagonal of a test quadratic)."""
    if condition < 1 or not math.isfinite(condition):
        raise ValueError(f"condition must be a finite number >= 1, got {condition}")
    return torch.logspace(0.0, math.log10(condition), n, dtype=dtype)


def rotated_quadratic(n: int, condition: float, seed: int = 0,
                      dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """A dense SPD matrix ``A = Q diag(λ) Qᵀ`` with condition number ``condition`` and a vector
    ``b``; the quadratic is ``½ xᵀAx − bᵀx`` with minimiser ``A⁻¹ b``."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=dtype))
    lam = quadratic_diagonal(n, condition, dtype)
    a = (q * lam) @ q.T
    b = torch.randn(n, generator=gen, dtype=dtype)
    return 0.5 * (a + a.T), b
