"""Combining the subdomains' corrections into the preconditioned point ``x_{k+½}`` (additive SPQN).

Notation: ``x = x_k``, ``f = f(x)``, ``g = ∇f(x)``; subdomain ``s`` returned the local correction
``c_s``; its weighted extension is the column ``D_s = E_s(w_s ⊙ c_s)`` of ``D ∈ R^{n×N}`` and the
additive correction is ``d = Σ_s D_s = D·1``. Every function below returns the new point
``x + D a`` for some weights ``a ∈ R^N`` chosen with global evaluations only; since ``D`` is
identical on every rank (it is all-reduced) and the global evaluations are replicated, every
rank computes the same ``a`` and takes the same branch.

* :func:`along_sum` — ``a = α·1``, one strong-Wolfe step length along ``d`` [KKKK24 §3.2]
  (``"line_search"``, the paper's choice).
* :func:`per_subdomain` — one step length per subdomain, chosen one after another: ``a_s`` is a
  strong-Wolfe step along ``D_s`` from the point reached with ``a_1 … a_{s−1}`` (a Gauss–Seidel
  sweep over the weights; a column that is not a descent direction there gets ``a_s = 0``).
  Interactions between subdomains are seen by the later line searches, which is what the sum
  with one step length cannot do. Cost: one line search (usually 1–2 gradients) per subdomain.
* :func:`subspace` — minimise ``φ(a) = f(x + D a)`` over the span of the corrections
  (multi-preconditioning [BG06]): ``∇φ(a) = Dᵀ∇f(x + Da)``. The model Hessian
  ``M ≈ Dᵀ∇²f D`` comes from the secants ``y_s = ∇f(x + D_s) − g`` (one gradient per subdomain,
  computed in parallel; free when ``D_s`` is the subdomain's own end point):
  ``M = sym(Dᵀ[y_1 … y_N])``, made positive definite by replacing its eigenvalues ``λ`` by
  ``max(|λ|, ε·max|λ|)`` (the saddle-free modification [DPGCGB14]). Then ``iters`` BFGS
  iterations in ``R^N`` from ``a = 0`` with ``B_0 = M``: ``p = −B⁻¹∇φ``, a strong-Wolfe line
  search along ``Dp`` (first trial ``t = 1``: the model's Newton step), BFGS update of ``B``.
  On a quadratic the first iteration is the exact minimiser over the span.

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. SIAM J. Sci. Comput. 46(5), 2024.
    [BG06] Bridson, Greif. A multipreconditioned conjugate gradient algorithm. SIAM J. Matrix
    Anal. Appl. 27(4), 2006 (multi-preconditioning: minimise over the span of several
    preconditioned directions).
    [DPGCGB14] Dauphin et al. Identifying and attacking the saddle point problem in
    high-dimensional non-convex optimization. NeurIPS 2014.
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §3.5 (line search), §6.1 (BFGS).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mldd.globalization.line_search import strong_wolfe

COMBINES = ("line_search", "per_subdomain", "subspace")

#: ``x ↦ (f(x), ∇f(x))``: one counted global evaluation.
Evaluate = Callable[[Tensor], tuple[float, Tensor]]


@dataclass(frozen=True)
class LineSearchOptions:
    """Strong-Wolfe constants shared by the combinations (docs/algorithms.md §1.4 defaults)."""

    c1: float = 1e-4
    c2: float = 0.9
    max_ls: int = 25
    tolerance_change: float = 1e-9


@dataclass
class CombineResult:
    """The preconditioned point and how it was reached.

    Attributes:
        x: ``x + D a`` (``x`` itself when nothing was accepted).
        f: the loss there.
        g: the gradient there (``None`` only if no gradient is known, which does not happen for
            the combinations here).
        weights: the weights ``a_s`` applied to each column.
        n_evals: global evaluations used.
        reason: how the combination ended.
    """

    x: Tensor
    f: float
    g: Tensor
    weights: list[float]
    n_evals: int
    reason: str


def _search(evaluate: Evaluate, x: Tensor, f: float, g: Tensor, d: Tensor, opts: LineSearchOptions,
            t0: float = 1.0) -> tuple[float, Tensor, float, Tensor, int, str]:
    """Strong-Wolfe search along ``d``; returns ``(t, x_new, f_new, g_new, n_evals, reason)``
    with ``t = 0`` (and the inputs) when ``d`` is not a descent direction or nothing was found."""
    dphi0 = float(g @ d)
    if not (math.isfinite(dphi0) and dphi0 < 0.0):
        return 0.0, x, f, g, 0, "not a descent direction"

    def along(t: float) -> tuple[float, Tensor]:
        fv, gv = evaluate(torch.add(x, d, alpha=t))
        return float(fv), gv

    ls = strong_wolfe(along, d, f, dphi0, t0, c1=opts.c1, c2=opts.c2, max_evals=opts.max_ls,
                      tolerance_change=opts.tolerance_change)
    if ls.t <= 0.0 or ls.g is None or not ls.sufficient_decrease:
        return 0.0, x, f, g, ls.n_evals, ls.reason
    # Formed by the same fused op as the evaluated trial point, so the two are bit-identical.
    return ls.t, torch.add(x, d, alpha=ls.t), ls.f, ls.g, ls.n_evals, ls.reason


def along_sum(evaluate: Evaluate, x: Tensor, f: float, g: Tensor, d: Tensor, n_columns: int,
              opts: LineSearchOptions) -> CombineResult:
    """``x + α d`` with ``α`` from a strong-Wolfe line search (first trial ``α = 1``)."""
    t, x1, f1, g1, n, reason = _search(evaluate, x, f, g, d, opts)
    return CombineResult(x1, f1, g1, [t] * n_columns, n, reason)


def per_subdomain(evaluate: Evaluate, x: Tensor, f: float, g: Tensor, columns: Tensor,
                  opts: LineSearchOptions) -> CombineResult:
    """Weights ``a_s`` one after another, each by a line search along ``D_s`` (see module doc).

    Args:
        columns: ``D`` as an ``(n, N)`` tensor.
    """
    weights, n_total, accepted = [], 0, 0
    for s in range(columns.shape[1]):
        d = columns[:, s]
        if not bool(d.any()):
            weights.append(0.0)
            continue
        t, x, f, g, n, _ = _search(evaluate, x, f, g, d, opts)
        weights.append(t)
        n_total += n
        accepted += t > 0.0
    reason = f"{accepted} of {columns.shape[1]} subdomain corrections accepted"
    return CombineResult(x, f, g, weights, n_total, reason)


def positive_definite(M: Tensor, eps: float = 1e-8) -> Tensor:
    """``sym(M)`` with eigenvalues ``λ`` replaced by ``max(|λ|, eps·max|λ|)`` (identity if 0)."""
    S = 0.5 * (M + M.T)
    lam, Q = torch.linalg.eigh(S)
    top = float(lam.abs().max()) if lam.numel() else 0.0
    if not (math.isfinite(top) and top > 0.0):
        return torch.eye(M.shape[0], dtype=M.dtype, device=M.device)
    lam = lam.abs().clamp_min(eps * top)
    return (Q * lam) @ Q.T


def secant_model(columns: Tensor, secants: Tensor) -> Tensor:
    """``M = Dᵀ Y`` (``N×N``, not yet symmetrised) from columns ``D`` and secants ``Y``."""
    return columns.T @ secants


def subspace(evaluate: Evaluate, x: Tensor, f: float, g: Tensor, columns: Tensor, model: Tensor,
             opts: LineSearchOptions, iters: int = 1, curvature_eps: float = 1e-10
             ) -> CombineResult:
    """Minimise ``f(x + D a)`` over ``a ∈ R^N`` by ``iters`` BFGS iterations with ``B_0 = M``.

    Args:
        columns: ``D`` as an ``(n, N)`` tensor.
        model: ``M ≈ Dᵀ∇²f D`` (``N×N``; symmetrised and made positive definite here).
        iters: BFGS iterations in the subspace (each one line search).
        curvature_eps: skip the BFGS update unless ``sᵀy > eps·‖s‖‖y‖``.
    """
    # The N-dimensional algebra runs on the CPU in float64: N is tiny and the host needs the
    # numbers for the line-search decisions anyway.
    B = positive_definite(model.detach().to(device="cpu", dtype=torch.float64))
    a = torch.zeros(columns.shape[1], dtype=torch.float64)
    gb = (columns.T @ g).to(device="cpu", dtype=torch.float64)
    n_total, reason = 0, "no subspace iteration"
    for _ in range(iters):
        if not bool(gb.any()):
            reason = "gradient orthogonal to the corrections"
            break
        p = -torch.linalg.solve(B, gb)
        d = columns @ p.to(dtype=columns.dtype, device=columns.device)
        t, x, f, g, n, reason = _search(evaluate, x, f, g, d, opts)
        n_total += n
        if t == 0.0:
            break
        s_a = t * p
        gb_new = (columns.T @ g).to(device="cpu", dtype=torch.float64)
        y_a = gb_new - gb
        sy = float(s_a @ y_a)
        if sy > curvature_eps * float(s_a.norm()) * float(y_a.norm()):
            Bs = B @ s_a
            B = B - torch.outer(Bs, Bs) / float(s_a @ Bs) + torch.outer(y_a, y_a) / sy
        a = a + s_a
        gb = gb_new
    return CombineResult(x, f, g, a.tolist(), n_total, reason)
