"""The Cauchy point: the model minimiser along ``−g`` inside the trust region.

``s_C = −t* g`` with ``t* = argmin_{0 ≤ t ≤ t_max} m(−t g)``, ``m(s) = gᵀs + ½ sᵀBs``::

    t_max = Δ/‖g‖₂  (norm "l2")   or   Δ/‖g‖∞  (norm "linf", the box exit along −g),
    t*    = t_max                    if gᵀBg ≤ 0,
            min(‖g‖₂²/gᵀBg, t_max)   otherwise.

Every trust-region step should achieve at least this decrease; it is what the global convergence
theory needs [NW06, §4.1, Lemma 4.3]. One matvec.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §4.1 (Alg. 4.2, eq. (4.11)-(4.12)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mldd.subproblem.base import Matvec, SubproblemResult, check_inputs, result, vec_norm

__all__ = ["cauchy_from_curvature", "cauchy_length", "cauchy_point"]


def cauchy_length(gg: float, g_norm: float, gBg: float, radius: float
                  ) -> tuple[float, float, bool]:
    """The Cauchy step length ``t*`` from scalars alone (no vector is formed).

    Args:
        gg: ``‖g‖₂²``.
        g_norm: ``‖g‖`` in the trust region's norm (``‖g‖₂`` or ``‖g‖∞``).
        gBg: the curvature ``gᵀBg``.
        radius: ``Δ``.

    Returns:
        ``(t*, model_value, on_boundary)``; the step is ``−t* g``.
    """
    if gg == 0.0:
        return 0.0, 0.0, False
    t_max = radius / g_norm
    if gBg <= 0.0:
        t, on_boundary = t_max, True
    else:
        t_free = gg / gBg
        t, on_boundary = (t_max, True) if t_free >= t_max else (t_free, False)
    return t, -t * gg + 0.5 * t * t * gBg, on_boundary


def cauchy_from_curvature(
    g: Tensor, gBg: float, radius: float, norm: str
) -> tuple[Tensor, float, bool]:
    """The Cauchy step given the curvature ``gᵀBg`` (lets CG reuse its first matvec).

    Returns:
        ``(step, model_value, on_boundary)``.
    """
    gg = float(torch.dot(g, g))
    if gg == 0.0:
        return torch.zeros_like(g), 0.0, False
    t, model_value, on_boundary = cauchy_length(gg, vec_norm(g, norm), gBg, radius)
    return -t * g, model_value, on_boundary


def cauchy_point(g: Tensor, matvec: Matvec, radius: float, norm: str = "l2") -> SubproblemResult:
    """Cauchy point of the trust-region subproblem [NW06, §4.1].

    Args:
        g: gradient (1-D, finite).
        matvec: ``v ↦ B v``.
        radius: trust-region radius ``Δ > 0``.
        norm: ``"l2"`` (ball) or ``"linf"`` (box ``|s_i| ≤ Δ``; the minimiser along ``−g`` up to
            the box exit ``t = Δ/‖g‖∞``).

    Returns:
        The step with ``iterations = 0``.

    Raises:
        ValueError: non-finite ``g``, ``radius ≤ 0`` or an unknown norm.
    """
    check_inputs(g, radius, norm)
    g = g.detach()
    if not bool(g.any()):
        return result(torch.zeros_like(g), 0.0, False, 0)
    gBg = float(torch.dot(g, matvec(g)))
    step, model_value, on_boundary = cauchy_from_curvature(g, gBg, float(radius), norm)
    return result(step, model_value, on_boundary, 0)
