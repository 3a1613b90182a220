"""Strong-Wolfe line search with cubic interpolation.

Finds ``t > 0`` along a descent direction ``d`` from ``x`` with
``φ(t) = f(x + t d)`` satisfying the strong Wolfe conditions

    φ(t) ≤ φ(0) + c1·t·φ'(0)          (sufficient decrease)
    |φ'(t)| ≤ c2·|φ'(0)|               (curvature)

by the bracketing phase of [NW06, Alg. 3.5] followed by the zoom phase [NW06, Alg. 3.6], each
trial step chosen as the minimiser of the cubic interpolating two points' values and slopes
[NW06, eq. (3.59)], safeguarded to stay well inside the bracket.

A non-finite loss at a trial point is treated as "too far": that point becomes the upper end of
the bracket and the search backs off, so a NaN never becomes the accepted point.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §3.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from mldd.linalg.flat import max_abs

Evaluate = Callable[[float], tuple[float, Tensor]]


@dataclass
class _Point:
    t: float
    f: float
    g: Tensor | None
    dphi: float


@dataclass
class LineSearchResult:
    """Result of a line search.

    Attributes:
        t: the step length (0.0 when nothing acceptable was found).
        f: the loss at ``x + t d``.
        g: the flat gradient at ``x + t d`` (``None`` when ``t == 0``).
        dphi: the directional derivative ``g·d`` there.
        n_evals: number of loss+gradient evaluations used.
        success: whether both strong Wolfe conditions hold.
        sufficient_decrease: whether at least the sufficient-decrease condition holds (the point
            is usable even if the curvature condition was not met within the budget).
        reason: a short description of how the search ended.
    """

    t: float
    f: float
    g: Tensor | None
    dphi: float
    n_evals: int
    success: bool
    sufficient_decrease: bool
    reason: str


def cubic_minimizer(
    t1: float, f1: float, d1: float, t2: float, f2: float, d2: float, lo: float, hi: float
) -> float:
    """Minimiser of the cubic through ``(t1, f1, d1)`` and ``(t2, f2, d2)``, clamped to
    ``[lo, hi]``; the midpoint of ``[lo, hi]`` when the cubic has no real minimiser.

    Formula [NW06, eq. (3.59)]::

        a = d1 + d2 − 3 (f1 − f2) / (t1 − t2),   b = sqrt(a² − d1 d2)
        t = t2 − (t2 − t1) (d2 + b − a) / (d2 − d1 + 2b)
    """
    if t1 == t2:
        return 0.5 * (lo + hi)
    a = d1 + d2 - 3.0 * (f1 - f2) / (t1 - t2)
    disc = a * a - d1 * d2
    if not math.isfinite(disc) or disc < 0.0:
        return 0.5 * (lo + hi)
    b = math.copysign(math.sqrt(disc), t2 - t1)
    denom = d2 - d1 + 2.0 * b
    if denom == 0.0 or not math.isfinite(denom):
        return 0.5 * (lo + hi)
    t = t2 - (t2 - t1) * (d2 + b - a) / denom
    if not math.isfinite(t):
        return 0.5 * (lo + hi)
    return min(max(t, lo), hi)


def strong_wolfe(
    evaluate: Evaluate,
    d: Tensor,
    f0: float,
    dphi0: float,
    t_init: float = 1.0,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 25,
    tolerance_change: float = 1e-9,
    extrapolation: float = 10.0,
) -> LineSearchResult:
    """Strong-Wolfe line search along ``d``.

    Args:
        evaluate: ``t ↦ (f(x + t d), ∇f(x + t d))`` (loss as float, flat gradient).
        d: the search direction (must be a descent direction: ``dphi0 < 0``).
        f0: ``f(x)``.
        dphi0: ``∇f(x)·d`` (negative).
        t_init: first trial step (1.0 for quasi-Newton directions).
        c1: sufficient-decrease constant (default 1e-4).
        c2: curvature constant (default 0.9, the quasi-Newton value).
        max_evals: evaluation budget (default 25).
        tolerance_change: stop when the bracket is shorter than this in ``max|d|``-scaled units.
        extrapolation: the bracketing phase grows ``t`` by at most this factor per trial.

    Returns:
        A :class:`LineSearchResult`; ``t = 0`` when no point with sufficient decrease was found.
    """
    if not 0.0 < c1 < c2 < 1.0:
        raise ValueError(f"need 0 < c1 < c2 < 1 for strong Wolfe, got c1={c1}, c2={c2}")
    if not dphi0 < 0.0:
        raise ValueError(f"line search needs a descent direction (g·d < 0), got g·d = {dphi0}")
    if not t_init > 0.0:
        raise ValueError(f"initial step must be positive, got {t_init}")
    n_evals = 0

    def probe(t: float) -> _Point:
        nonlocal n_evals
        n_evals += 1
        f, g = evaluate(t)
        f = float(f)
        dphi = float(g @ d) if math.isfinite(f) else math.nan
        if not (math.isfinite(f) and math.isfinite(dphi)):
            return _Point(t, math.inf, None, math.nan)
        return _Point(t, f, g, dphi)

    def armijo(p: _Point) -> bool:
        return p.f <= f0 + c1 * p.t * dphi0

    def curvature(p: _Point) -> bool:
        return abs(p.dphi) <= -c2 * dphi0

    def result(p: _Point, success: bool, reason: str) -> LineSearchResult:
        if p.t <= 0.0 or p.g is None:
            return LineSearchResult(0.0, f0, None, dphi0, n_evals, False, False, reason)
        return LineSearchResult(p.t, p.f, p.g, p.dphi, n_evals, success, armijo(p), reason)

    start = _Point(0.0, f0, None, dphi0)
    prev = start
    t = t_init
    lo: _Point
    hi: _Point
    # Bracketing phase [NW06, Alg. 3.5].
    while True:
        cur = probe(t)
        if not math.isfinite(cur.f):
            lo, hi = prev, cur
            break
        if not armijo(cur) or (prev.t > 0.0 and cur.f >= prev.f):
            lo, hi = prev, cur
            break
        if curvature(cur):
            return result(cur, True, "strong Wolfe conditions satisfied")
        if cur.dphi >= 0.0:
            lo, hi = cur, prev
            break
        if n_evals >= max_evals:
            return result(cur, False, "evaluation budget exhausted while extrapolating")
        t_new = cubic_minimizer(prev.t, prev.f, prev.dphi, cur.t, cur.f, cur.dphi,
                                cur.t + 0.01 * (cur.t - prev.t), cur.t * extrapolation)
        prev, t = cur, t_new

    # Zoom phase [NW06, Alg. 3.6]: invariant: lo has the lowest loss among points with
    # sufficient decrease, and hi lies on the other side of a minimiser. max|d| scales the
    # bracket test; most searches end in the bracketing phase, so it is computed only here.
    dmax = max_abs(d)
    while n_evals < max_evals:
        width = abs(hi.t - lo.t)
        if width * dmax < tolerance_change:
            return result(lo, False, "bracket below tolerance_change")
        a, b = min(lo.t, hi.t), max(lo.t, hi.t)
        if math.isfinite(hi.f):
            t = cubic_minimizer(lo.t, lo.f, lo.dphi, hi.t, hi.f, hi.dphi, a, b)
        else:
            t = 0.5 * (a + b)
        # Safeguard: keep the trial at least 10% of the bracket away from its ends so that the
        # bracket shrinks geometrically even when the interpolant is poor.
        t = min(max(t, a + 0.1 * width), b - 0.1 * width)
        cur = probe(t)
        if not math.isfinite(cur.f) or not armijo(cur) or cur.f >= lo.f:
            hi = cur
        else:
            if curvature(cur):
                return result(cur, True, "strong Wolfe conditions satisfied")
            if cur.dphi * (hi.t - lo.t) >= 0.0:
                hi = lo
            lo = cur
    return result(lo, False, "evaluation budget exhausted while zooming")
