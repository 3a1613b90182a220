"""The trust-region policy: accept or reject a trial step and adapt the radius. Pure functions.

Notation: ``radius = Δ``, ``ared = f(x) − f(x + s)`` (actual reduction), ``pred = m(0) − m(s)``
(predicted reduction of the quadratic model), ``rho = ared / pred``.

Truth table of :meth:`TrustRegionPolicy.decide` (defaults from Kopaničáková's RMTR code,
docs/algorithms.md §1.3):

=====================================  ========  =====================================
condition                              accept?   new radius
=====================================  ========  =====================================
trial loss non-finite, or pred ≤ 0     no        ``γ1·Δ``
``ρ < η1``                             if ρ>ρ_tol ``γ1·Δ``
``η1 ≤ ρ ≤ η2``                        yes       ``Δ``
``ρ > η2``                             yes       ``γ2·Δ`` (only if the step reached the
                                                 boundary when ``expand_on_boundary_only``)
=====================================  ========  =====================================

and the radius is always clamped to ``[Δmin, Δmax]``.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Algorithm 4.1.
    [GST08] Gratton, Sartenaer, Toint. Recursive trust-region methods for multiscale nonlinear
    optimization. SIAM J. Optim., 2008.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mldd.solvers.base import check_bools


@dataclass(frozen=True)
class TRDecision:
    """Outcome of one ratio test.

    Attributes:
        accepted: whether the trial point becomes the new iterate.
        radius: the radius for the next iteration.
        rho: the ratio ``ared / pred`` (``-inf`` for a non-finite trial).
    """

    accepted: bool
    radius: float
    rho: float


@dataclass(frozen=True)
class TrustRegionPolicy:
    """Parameters of the ratio test and radius update.

    Args:
        eta1: shrink when ``ρ < eta1`` (default 0.05).
        eta2: expand when ``ρ > eta2`` (default 0.9).
        rho_tol: accept when ``ρ > rho_tol`` (default 0.005).
        gamma1: shrink factor (default 0.25).
        gamma2: expansion factor (default 2.5).
        radius_min: lower clamp on Δ (default 1e-14).
        radius_max: upper clamp on Δ (default 1e14).
        expand_on_boundary_only: expand only if the step reached the boundary (Nocedal–Wright's
            rule); default False (the RMTR code expands on any very successful step).
    """

    eta1: float = 0.05
    eta2: float = 0.9
    rho_tol: float = 0.005
    gamma1: float = 0.25
    gamma2: float = 2.5
    radius_min: float = 1e-14
    radius_max: float = 1e14
    expand_on_boundary_only: bool = False

    def __post_init__(self) -> None:
        check_bools(self)
        checks = [
            (0.0 <= self.rho_tol <= self.eta1, "need 0 <= rho_tol <= eta1", self.rho_tol),
            (self.eta1 <= self.eta2 < 1.0 + 1e-12, "need eta1 <= eta2 <= 1", self.eta2),
            (0.0 < self.gamma1 < 1.0, "gamma1 must lie in (0, 1)", self.gamma1),
            (self.gamma2 >= 1.0, "gamma2 must be >= 1", self.gamma2),
            (0.0 < self.radius_min <= self.radius_max, "need 0 < radius_min <= radius_max",
             self.radius_min),
        ]
        for ok, msg, value in checks:
            if not ok:
                raise ValueError(f"invalid trust-region policy ({msg}); got {value!r} in {self}")

    def clamp(self, radius: float) -> float:
        """``Δ`` clamped to ``[Δmin, Δmax]``."""
        return min(max(radius, self.radius_min), self.radius_max)

    def decide(
        self, radius: float, ared: float, pred: float, on_boundary: bool = True
    ) -> TRDecision:
        """Ratio test and radius update for one trial step.

        Args:
            radius: the current radius Δ.
            ared: actual reduction ``f(x) − f(x+s)`` (may be non-finite).
            pred: predicted reduction ``m(0) − m(s)``.
            on_boundary: whether the step lies on the trust-region boundary.

        Returns:
            The :class:`TRDecision`.
        """
        rho = ratio(ared, pred)
        if not math.isfinite(rho):
            return TRDecision(False, self.clamp(self.gamma1 * radius), rho)
        accepted = rho > self.rho_tol
        if rho < self.eta1:
            new = self.gamma1 * radius
        elif rho > self.eta2 and (on_boundary or not self.expand_on_boundary_only):
            new = self.gamma2 * radius
        else:
            new = radius
        return TRDecision(accepted, self.clamp(new), rho)

    def as_dict(self) -> dict[str, float | bool]:
        """The policy's parameters as a dict."""
        return asdict(self)


def ratio(ared: float, pred: float) -> float:
    """``ρ = ared / pred``; ``-inf`` when either is non-finite or ``pred ≤ 0``.

    A non-positive predicted reduction means the model promises nothing, so the trial step cannot
    be trusted; a non-finite actual reduction means the trial loss was NaN/Inf.
    """
    if not (math.isfinite(ared) and math.isfinite(pred)) or pred <= 0.0:
        return -math.inf
    return ared / pred
