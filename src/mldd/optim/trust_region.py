"""``mldd.optim.TrustRegion``: one trust-region iteration per ``step``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from torch import Tensor

from mldd.globalization.trust_region import TrustRegionPolicy
from mldd.optim.base import FlatOptimizer, Solver
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver


class TrustRegion(FlatOptimizer):
    """A trust-region method with a quasi-Newton or exact Hessian model — no learning rate.

    Each step minimises ``m(s) = f + gᵀs + ½ sᵀBs`` over ``‖s‖ ≤ Δ`` and accepts the trial
    ``x + s`` when ``ρ = (f(x) − f(x+s)) / (m(0) − m(s)) > ρ_tol``; the radius shrinks
    (×0.25 if ρ < 0.05) or grows (×2.5 if ρ > 0.9) — docs/algorithms.md §1.3. A trial with a NaN/Inf
    loss is rejected, so the parameters always hold the last good point.

    Args:
        params: parameters or parameter groups (all groups form one vector).
        hessian: ``"lsr1"`` (default, memory 5, OBS subproblem), ``"lbfgs"``, ``"exact"``
            (Hessian-vector products; the closure must return the loss without ``backward()``)
            or ``"none"`` (the Cauchy step: steepest descent with a trust-region step size).
        memory: quasi-Newton memory (default 5).
        subproblem: ``"obs"`` (L-SR1 only), ``"cg"`` (Steihaug–Toint) or ``"cauchy"``; default
            OBS for L-SR1, CG for the others.
        norm: ``"l2"`` (default) or ``"linf"`` (box trust region).
        radius: initial radius Δ0 (default 1).
        eta1, eta2, rho_tol, gamma1, gamma2, radius_min, radius_max: the ratio-test policy
            (0.05, 0.9, 0.005, 0.25, 2.5, 1e-14, 1e14).
        cg_rtol, cg_max_iter: truncated-CG controls (0.1, min(n, 250)).
        tolerance_grad: stop when ``‖g‖₂ ≤`` this (1e-9).
        lsr1_gamma: ``"yy_sy"`` (default) or ``"fixed"``.
        reuse_evaluations: reuse the accepted trial's loss/gradient at the next step (True);
            set False when the closure draws a new mini-batch at each call.

    Choosing the model: L-SR1 (memory 5) is the papers' choice and the fastest start; for PINNs
    trained to high accuracy ``hessian="lbfgs", memory=50`` (Steihaug CG) was the strongest
    configuration measured (Burgers, 240 s: rel. L2 3.7e-3 vs 3.1e-2 for L-SR1 and 1.4e-2 for
    torch's L-BFGS history 50; README, "Benchmarks").

    Example:
        >>> opt = mldd.optim.TrustRegion(model.parameters())     # L-SR1 + OBS
        >>> for _ in range(200):
        ...     opt.step(closure)
        >>> opt.last_info["radius"], opt.last_info["accepted"]

    References:
        Conn, Gould, Toint. Trust-Region Methods, SIAM 2000. Nocedal, Wright, Numerical
        Optimization, Ch. 4. Brust, Erway, Marcia, arXiv:1506.07222 (OBS).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *,
                 hessian: str = "lsr1", memory: int = 5, subproblem: str | None = None,
                 norm: str = "l2", radius: float = 1.0, eta1: float = 0.05, eta2: float = 0.9,
                 rho_tol: float = 0.005, gamma1: float = 0.25, gamma2: float = 2.5,
                 radius_min: float = 1e-14, radius_max: float = 1e14, cg_rtol: float = 0.1,
                 cg_max_iter: int | None = None, tolerance_grad: float = 1e-9,
                 lsr1_gamma: str = "yy_sy", reuse_evaluations: bool = True) -> None:
        policy = TrustRegionPolicy(eta1=eta1, eta2=eta2, rho_tol=rho_tol, gamma1=gamma1,
                                   gamma2=gamma2, radius_min=radius_min, radius_max=radius_max)
        cfg = TrustRegionConfig(hessian=hessian, memory=memory, subproblem=subproblem, norm=norm,
                                radius=radius, policy=policy, cg_rtol=cg_rtol,
                                cg_max_iter=cg_max_iter, tolerance_grad=tolerance_grad,
                                lsr1_gamma=lsr1_gamma, reuse_evaluations=reuse_evaluations)
        defaults = asdict(cfg)
        defaults.update(defaults.pop("policy"))
        super().__init__(params, defaults)

    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        h = dict(hyper)
        policy = TrustRegionPolicy(**{k: h.pop(k) for k in list(h)
                                      if k in TrustRegionPolicy.__dataclass_fields__})
        return TrustRegionSolver(TrustRegionConfig(policy=policy, **h), counters=self.counters)

    @property
    def radius(self) -> float:
        """The current trust-region radius Δ."""
        solver = self._solver
        assert isinstance(solver, TrustRegionSolver)
        return solver.radius
