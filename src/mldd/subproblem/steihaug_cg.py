"""Steihaug–Toint truncated conjugate gradients for the trust-region subproblem.

CG on ``B s = −g`` from ``s = 0`` [NW06, Alg. 7.2], stopped when

* the residual is small: ``‖r_j‖ ≤ η‖g‖`` with the forcing term ``η = min(rtol, √‖g‖)``
  [NW06, eq. (7.3)–(7.4): ``η_k = min(0.5, √‖∇f_k‖)`` gives superlinear local convergence; ``rtol``
  plays the role of the cap 0.5 and defaults to the tighter 1e-2];
* the next iterate leaves the trust region: step to the boundary along the current direction ``d``;
* negative (or zero) curvature ``dᵀBd ≤ 0``: step to the boundary along ``±d``, whichever of the two
  boundary points has the lower model value (as in [NW06, Alg. 7.2]).

With ``norm="linf"`` the same iteration runs and the boundary is the box ``|s_i| ≤ Δ``.

The first CG iterate is the Cauchy point, and the model decreases monotonically along the CG
path, so the step achieves at least the Cauchy decrease; the Cauchy model value is also computed
from the first matvec (free) and returned instead if rounding ever made CG worse.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Alg. 7.2 and §7.1.
    Steihaug, The conjugate gradient method and trust regions in large scale optimization,
    SIAM J. Numer. Anal. 20, 1983. Toint, Towards an efficient sparsity exploiting Newton method
    for minimization, 1981.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mldd.subproblem.base import (
    Matvec,
    SubproblemResult,
    boundary_taus,
    check_inputs,
    result,
    vec_norm,
)
from mldd.subproblem.cauchy import cauchy_from_curvature

__all__ = ["steihaug_cg"]


def steihaug_cg(
    g: Tensor,
    matvec: Matvec,
    radius: float,
    norm: str = "l2",
    *,
    rtol: float = 1e-2,
    max_iter: int | None = None,
) -> SubproblemResult:
    """Approximately solve ``min gᵀs + ½ sᵀBs, ‖s‖ ≤ Δ`` by Steihaug–Toint CG [NW06, Alg. 7.2].

    Args:
        g: gradient (1-D, finite).
        matvec: ``v ↦ B v`` (any symmetric ``B``: quasi-Newton matrix, Hessian-vector products).
        radius: ``Δ > 0``.
        norm: ``"l2"`` or ``"linf"`` (box).
        rtol: cap on the relative residual; CG stops once ``‖r‖ ≤ min(rtol, √‖g‖)·‖g‖``.
            Default 1e-2.
        max_iter: maximum number of CG iterations (matvecs). Default ``None``: ``n``, the exact
            termination bound; cap it when ``B`` is an expensive Hessian.

    Returns:
        The step, with ``iterations`` the number of matvecs.

    Raises:
        ValueError: non-finite ``g``, ``radius ≤ 0``, unknown norm, bad ``rtol``/``max_iter``.
    """
    check_inputs(g, radius, norm)
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be >= 1 or None, got {max_iter!r}")
    radius = float(radius)
    g = g.detach()
    n_max = g.numel() if max_iter is None else max_iter
    g_norm = float(torch.linalg.vector_norm(g))
    if g_norm == 0.0:
        return result(torch.zeros_like(g), 0.0, False, 0)
    tol = min(rtol, math.sqrt(g_norm)) * g_norm

    z = torch.zeros_like(g)
    r = g.clone()  # residual = model gradient g + Bz
    d = -r
    rr = g_norm * g_norm
    # Model value at z via m(z) = ½(gᵀz + zᵀ(g + Bz)): exact from vectors CG already has.
    cauchy: tuple[Tensor, float, bool] | None = None
    step: Tensor = z
    model_value = 0.0
    on_boundary = False
    it = 0
    while it < n_max:
        Bd = matvec(d)
        dBd = float(torch.dot(d, Bd))
        it += 1
        if not math.isfinite(dBd):
            break
        if cauchy is None:
            cauchy = cauchy_from_curvature(g, dBd, radius, norm)  # d = −g at the first iteration
        if dBd <= 0.0:
            tau_minus, tau_plus = boundary_taus(z, d, radius, norm)
            best = None
            for tau in (tau_plus, tau_minus):
                p = z + tau * d
                m = 0.5 * (float(torch.dot(g, p)) + float(torch.dot(p, r + tau * Bd)))
                if best is None or m < best[1]:
                    best = (p, m)
            assert best is not None
            step, model_value, on_boundary = best[0], best[1], True
            break
        alpha = rr / dBd
        z_next = z + alpha * d
        if vec_norm(z_next, norm) >= radius:
            _, tau = boundary_taus(z, d, radius, norm)
            step = z + tau * d
            model_value = 0.5 * (float(torch.dot(g, step)) + float(torch.dot(step, r + tau * Bd)))
            on_boundary = True
            break
        r = r + alpha * Bd
        z = z_next
        step = z
        model_value = 0.5 * (float(torch.dot(g, z)) + float(torch.dot(z, r)))
        rr_next = float(torch.dot(r, r))
        if math.sqrt(rr_next) <= tol:
            break
        d = -r + (rr_next / rr) * d
        rr = rr_next

    if cauchy is not None and cauchy[1] < model_value:
        return result(cauchy[0], cauchy[1], cauchy[2], it)
    return result(step, model_value, on_boundary, it)
