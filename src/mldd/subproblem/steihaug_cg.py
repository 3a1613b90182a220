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

:func:`steihaug_cg_in_span` runs the same iteration for an L-BFGS model without touching
``n``-vectors: every CG vector lies in ``span(V)``, ``V = [g, S, Y]``, because
``B = δI − U K⁻¹ Uᵀ`` with ``U = [δS, Y]`` maps ``span(V)`` into itself. Vectors are held as
coefficient vectors ``z`` (``Vz``), inner products are ``aᵀ(VᵀV)b`` and ``B`` acts on coefficients
through the small matrices; the step is formed once at the end. In exact arithmetic the iterates
are those of :func:`steihaug_cg`; the cost is one pass over ``[S; Y]`` for ``[S; Y]g`` and one to
form the step, instead of two per CG iteration.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Alg. 7.2 and §7.1.
    Steihaug, The conjugate gradient method and trust regions in large scale optimization,
    SIAM J. Numer. Anal. 20, 1983. Toint, Towards an efficient sparsity exploiting Newton method
    for minimization, 1981.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
from torch import Tensor

from mldd.subproblem.base import (
    Matvec,
    SubproblemResult,
    boundary_taus,
    check_inputs,
    l2_boundary_taus,
    result,
    vec_norm,
)
from mldd.subproblem.cauchy import cauchy_length

if TYPE_CHECKING:
    from mldd.quasinewton.lbfgs import LBFGSMemory

__all__ = ["steihaug_cg", "steihaug_cg_in_span"]

V = TypeVar("V", Tensor, np.ndarray)


class _BreakdownError(ArithmeticError):
    """Rounding made an inner product impossible (a negative squared norm)."""


def _prepare(g: Tensor, radius: float, norm: str, rtol: float, max_iter: int | None
             ) -> tuple[Tensor, float, int]:
    """Validate the arguments; return ``(g detached, Δ as a float, the CG iteration cap)``."""
    check_inputs(g, radius, norm)
    if not math.isfinite(rtol) or rtol < 0:
        raise ValueError(f"rtol must be finite and >= 0, got {rtol!r}")
    if max_iter is not None and max_iter < 1:
        raise ValueError(f"max_iter must be >= 1 or None, got {max_iter!r}")
    return g.detach(), float(radius), g.numel() if max_iter is None else max_iter


def _forcing_tol(g_norm: float, rtol: float) -> float:
    """``‖r‖ ≤ min(rtol, √‖g‖)·‖g‖`` [NW06, eq. (7.3)–(7.4)]."""
    return min(rtol, math.sqrt(g_norm)) * g_norm


def _steihaug(g: V, gg: float, g_norm: float, matvec: Callable[[V], V],
              inner: Callable[[V, V], float], vnorm: Callable[[V], float],
              taus: Callable[[V, V], tuple[float, float]], radius: float, n_max: int, tol: float
              ) -> tuple[V, float, bool, int, tuple[float, float, bool] | None]:
    """The CG iteration on any vector representation (torch vectors or span coefficients).

    Returns:
        ``(step, model_value, on_boundary, iterations, cauchy)`` with ``cauchy = (t, value,
        on_boundary)`` of the Cauchy step ``−t g`` (``None`` if no matvec ran).
    """
    z = g * 0.0
    r = g * 1.0  # residual = model gradient g + Bz
    d = -r
    rr = gg
    # Model value at z via m(z) = ½(gᵀz + zᵀ(g + Bz)): exact from vectors CG already has.
    cauchy: tuple[float, float, bool] | None = None
    step = z
    model_value = 0.0
    on_boundary = False
    it = 0
    while it < n_max:
        Bd = matvec(d)
        dBd = inner(d, Bd)
        it += 1
        if not math.isfinite(dBd):
            break
        if cauchy is None:
            cauchy = cauchy_length(gg, g_norm, dBd, radius)  # d = −g at the first iteration
        if dBd <= 0.0:
            tau_minus, tau_plus = taus(z, d)
            best: tuple[V, float] | None = None
            for tau in (tau_plus, tau_minus):
                p = z + tau * d
                m = 0.5 * (inner(g, p) + inner(p, r + tau * Bd))
                if best is None or m < best[1]:
                    best = (p, m)
            assert best is not None
            step, model_value, on_boundary = best[0], best[1], True
            break
        alpha = rr / dBd
        z_next = z + alpha * d
        if vnorm(z_next) >= radius:
            _, tau = taus(z, d)
            step = z + tau * d
            model_value = 0.5 * (inner(g, step) + inner(step, r + tau * Bd))
            on_boundary = True
            break
        r = r + alpha * Bd
        z = z_next
        step = z
        model_value = 0.5 * (inner(g, z) + inner(z, r))
        rr_next = inner(r, r)
        if rr_next < 0.0:
            raise _BreakdownError("negative squared residual norm")
        if math.sqrt(rr_next) <= tol:
            break
        d = -r + (rr_next / rr) * d
        rr = rr_next
    return step, model_value, on_boundary, it, cauchy


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
    g, radius, n_max = _prepare(g, radius, norm, rtol, max_iter)
    gg = float(torch.dot(g, g))
    g_norm = math.sqrt(gg)
    if g_norm == 0.0:
        return result(torch.zeros_like(g), 0.0, False, 0)
    tol = _forcing_tol(g_norm, rtol)

    def inner(a: Tensor, b: Tensor) -> float:
        return float(torch.dot(a, b))

    step, model_value, on_boundary, it, cauchy = _steihaug(
        g, gg, g_norm if norm == "l2" else vec_norm(g, norm), matvec, inner,
        lambda v: vec_norm(v, norm), lambda z, d: boundary_taus(z, d, radius, norm), radius,
        n_max, tol)
    if cauchy is not None and cauchy[1] < model_value:
        return result(-cauchy[0] * g, cauchy[1], cauchy[2], it)
    return result(step, model_value, on_boundary, it)


def steihaug_cg_in_span(
    g: Tensor,
    memory: LBFGSMemory,
    radius: float,
    *,
    rtol: float = 1e-2,
    max_iter: int | None = None,
) -> SubproblemResult | None:
    """:func:`steihaug_cg` for the L-BFGS model ``B`` of ``memory`` (2-norm), in ``span[g, S, Y]``.

    Same iteration and stopping rules as :func:`steihaug_cg`, computed on coefficient vectors of
    length ``2k+1`` with the Gram matrix of ``[g, S, Y]`` (see the module docstring). Meant for
    float64 pairs: the squared norms come from Gram entries, so a residual ``ε^{1/2}`` below
    ``‖g‖`` is below what float32 Gram entries resolve.

    Args:
        g: gradient (1-D, finite, the memory's length, dtype and device).
        memory: the L-BFGS memory defining ``B`` (non-empty).
        radius: ``Δ > 0``.
        rtol, max_iter: as for :func:`steihaug_cg`.

    Returns:
        The step, or ``None`` when rounding broke the coefficient iteration down (a negative
        squared norm, a zero direction); the caller then runs :func:`steihaug_cg`.

    Raises:
        ValueError: as :func:`steihaug_cg` (``norm`` is ``"l2"``), or an empty memory.
    """
    g, radius, n_max = _prepare(g, radius, "l2", rtol, max_iter)
    G, apply = memory.span_operator(g)
    gg = float(G[0, 0])
    g_norm = math.sqrt(gg)
    if g_norm == 0.0:
        return result(torch.zeros_like(g), 0.0, False, 0)
    tol = _forcing_tol(g_norm, rtol)
    e1 = np.zeros(G.shape[0])
    e1[0] = 1.0

    def inner(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ (G @ b))

    def vnorm(v: np.ndarray) -> float:
        vv = inner(v, v)
        if vv < 0.0:
            raise _BreakdownError("negative squared norm")
        return math.sqrt(vv)

    def taus(z: np.ndarray, d: np.ndarray) -> tuple[float, float]:
        return l2_boundary_taus(inner(z, z), inner(z, d), inner(d, d), radius)

    try:
        coef, model_value, on_boundary, it, cauchy = _steihaug(
            e1, gg, g_norm, apply, inner, vnorm, taus, radius, n_max, tol)
    except (_BreakdownError, ZeroDivisionError):
        return None
    if not (math.isfinite(model_value) and np.isfinite(coef).all()):
        return None
    if cauchy is not None and cauchy[1] < model_value:
        return result(-cauchy[0] * g, cauchy[1], cauchy[2], it)
    step = memory.span_vector(coef, g)
    if on_boundary:
        # Rounding in assembling the step must not leave the ball.
        s_norm = float(torch.linalg.vector_norm(step))
        if s_norm > radius:
            step = step * (radius / s_norm)
    return result(step, model_value, on_boundary, it)
