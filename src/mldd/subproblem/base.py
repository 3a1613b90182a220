"""Shared pieces of the trust-region subproblem solvers.

The subproblem is ``min_s m(s) = gᵀs + ½ sᵀBs`` subject to ``‖s‖ ≤ Δ`` with ``norm="l2"``
(``‖s‖₂ ≤ Δ``) or ``norm="linf"`` (the box ``|s_i| ≤ Δ``). ``B`` is given as a matvec (Cauchy,
Steihaug-CG) or as a compact L-SR1 memory (OBS). ``radius = Δ``.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Ch. 4 and §7.1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mldd.linalg.flat import all_finite

__all__ = ["NORMS", "Matvec", "SubproblemResult"]

Matvec = Callable[[Tensor], Tensor]
NORMS = ("l2", "linf")


@dataclass
class SubproblemResult:
    """A trust-region step and what the quadratic model predicts for it.

    Attributes:
        step: the step ``s`` (1-D, dtype/device of ``g``).
        predicted_reduction: ``−(gᵀs + ½ sᵀBs) ≥ 0``.
        on_boundary: whether the step lies on the trust-region boundary.
        iterations: solver iterations (CG iterations, Newton iterations on the secular equation; 0
            for the Cauchy point).
        model_value: ``gᵀs + ½ sᵀBs`` (``≤ 0``).
    """

    step: Tensor
    predicted_reduction: float
    on_boundary: bool
    iterations: int
    model_value: float


def check_inputs(g: Tensor, radius: float, norm: str) -> None:
    """Validate the common arguments of every solver.

    Raises:
        ValueError: ``g`` not 1-D or not finite, ``radius`` not finite and positive, unknown norm.
    """
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if not isinstance(g, Tensor) or g.dim() != 1:
        shape = tuple(g.shape) if isinstance(g, Tensor) else type(g).__name__
        raise ValueError(f"g must be a flat 1-D tensor, got {shape}")
    r = float(radius)
    if not math.isfinite(r) or r <= 0:
        raise ValueError(f"trust-region radius must be finite and > 0, got {radius!r}")
    if not all_finite(g):
        raise ValueError("gradient g contains non-finite entries (nan/inf)")


def vec_norm(v: Tensor, norm: str) -> float:
    """``‖v‖₂`` or ``‖v‖∞``."""
    return float(torch.linalg.vector_norm(v, ord=2 if norm == "l2" else math.inf))


def l2_boundary_taus(zz: float, zd: float, dd: float, radius: float) -> tuple[float, float]:
    """The roots ``τ− ≤ 0 ≤ τ+`` of ``‖z + τd‖₂² = Δ²`` from ``zᵀz``, ``zᵀd``, ``dᵀd``."""
    disc = math.sqrt(max(zd * zd + dd * (radius * radius - zz), 0.0))
    # Stable root formulas: avoid subtracting nearly equal numbers.
    if zd >= 0:
        tau_plus = (radius * radius - zz) / (zd + disc) if zd + disc > 0 else 0.0
        tau_minus = -(zd + disc) / dd
    else:
        tau_plus = (disc - zd) / dd
        tau_minus = (radius * radius - zz) / (zd - disc) if zd - disc < 0 else 0.0
    return min(tau_minus, 0.0), max(tau_plus, 0.0)


def boundary_taus(z: Tensor, d: Tensor, radius: float, norm: str) -> tuple[float, float]:
    """The two step lengths ``τ− ≤ 0 ≤ τ+`` where ``z + τd`` meets the trust-region boundary.

    ``z`` must be inside the region and ``d ≠ 0``.

    * l2: the roots of ``‖z + τd‖² = Δ²``.
    * linf: the exits of the box along ``+d`` and ``−d``: ``τ+ = min_i (Δ·sign(d_i) − z_i)/d_i``
      over ``d_i ≠ 0``, and symmetrically for ``τ−``.
    """
    if norm == "l2":
        return l2_boundary_taus(float(torch.dot(z, z)), float(torch.dot(z, d)),
                                float(torch.dot(d, d)), radius)
    nz = d != 0
    dn = d[nz]
    zn = z[nz]
    sign = torch.sign(dn)
    up = ((radius * sign - zn) / dn).min()
    down = ((-radius * sign - zn) / dn).max()
    return min(float(down), 0.0), max(float(up), 0.0)


def result(
    step: Tensor, model_value: float, on_boundary: bool, iterations: int
) -> SubproblemResult:
    """Package a step; the predicted reduction is clamped at 0 against rounding."""
    return SubproblemResult(
        step=step,
        predicted_reduction=max(-model_value, 0.0),
        on_boundary=on_boundary,
        iterations=iterations,
        model_value=model_value,
    )
