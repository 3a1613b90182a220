"""Trust-region iterations: a quadratic-model step × the ratio-test policy.

One iteration from ``x`` with radius ``Δ``:

1. the model ``m(s) = f + gᵀs + ½ sᵀBs`` with ``B`` an L-SR1 or L-BFGS matrix (compact form),
   the exact Hessian (Hessian-vector products by double backward) or ``0`` (``hessian="none"``,
   which makes the step the Cauchy point, i.e. a steepest-descent step of length Δ);
2. the step ``s ≈ argmin m(s), ‖s‖ ≤ Δ`` by the chosen subproblem solver (OBS for L-SR1,
   Steihaug–Toint CG, or the Cauchy point), in the 2-norm or the ∞-norm; CG on a float64
   L-BFGS model in the 2-norm runs in ``span[g, S, Y]``
   (:func:`~mldd.subproblem.steihaug_cg.steihaug_cg_in_span`, the same iterates in exact
   arithmetic at a fraction of the cost);
3. the trial loss ``f(x+s)``, the ratio ``ρ = (f(x) − f(x+s)) / (m(0) − m(s))``, acceptance and
   the radius update by :class:`~mldd.globalization.TrustRegionPolicy`; a non-finite trial loss
   or gradient is a rejection (the iterate does not move);
4. the quasi-Newton pair ``(s, ∇f(x+s) − ∇f(x))`` is offered to the memory after every trial,
   accepted or not (the pair carries curvature information either way).

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Ch. 4 and §7.
    [CGT00] Conn, Gould, Toint. Trust-Region Methods. SIAM, 2000.
    [BEM16] Brust, Erway, Marcia. On solving L-SR1 trust-region subproblems. arXiv:1506.07222.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from mldd.globalization.trust_region import TrustRegionPolicy
from mldd.objective import EvalCounters, MatVec, Objective
from mldd.quasinewton import LBFGSMemory, LSR1Memory
from mldd.solvers.base import (
    EvaluationCache,
    IterationResult,
    check_bools,
    check_choice,
    check_positive,
    evaluate_at,
    is_finite,
)
from mldd.subproblem import SubproblemResult, solve
from mldd.subproblem.steihaug_cg import steihaug_cg_in_span
from mldd.validation import check_int

HESSIANS = ("lsr1", "lbfgs", "exact", "none")
SUBPROBLEMS = ("obs", "cg", "cauchy")
NORMS = ("l2", "linf")


def default_subproblem(hessian: str) -> str:
    """OBS for L-SR1 (exact and cheap for compact matrices), truncated CG otherwise."""
    return {"lsr1": "obs", "lbfgs": "cg", "exact": "cg", "none": "cauchy"}[hessian]


@dataclass
class TrustRegionConfig:
    """Options of :class:`TrustRegionSolver`.

    Attributes:
        hessian: ``"lsr1"`` (default), ``"lbfgs"``, ``"exact"`` (Hessian-vector products; the
            closure must not call ``backward()``) or ``"none"``.
        memory: quasi-Newton memory (default 5; the papers use 3–5).
        subproblem: ``"obs"`` (L-SR1 only), ``"cg"`` or ``"cauchy"``; ``None`` picks the default
            for the Hessian (OBS for L-SR1, CG otherwise).
        norm: ``"l2"`` or ``"linf"`` (box) trust region.
        radius: initial radius Δ0 (default 1).
        policy: the ratio-test parameters (defaults of docs/algorithms.md §1.3).
        cg_rtol: relative residual at which truncated CG stops (default 0.1).
        cg_max_iter: CG iteration cap (default ``None``: the dimension, capped at 250).
        tolerance_grad: stop when ``‖g‖₂ ≤ tolerance_grad`` (default 1e-9).
        lsr1_gamma: ``"yy_sy"`` or ``"fixed"``: the L-SR1 initial matrix rule.
        reuse_evaluations: reuse the loss/gradient computed at the accepted trial point at the
            next iteration (default True; set False for closures that change between calls).
    """

    hessian: str = "lsr1"
    memory: int = 5
    subproblem: str | None = None
    norm: str = "l2"
    radius: float = 1.0
    policy: TrustRegionPolicy = field(default_factory=TrustRegionPolicy)
    cg_rtol: float = 0.1
    cg_max_iter: int | None = None
    tolerance_grad: float = 1e-9
    lsr1_gamma: str = "yy_sy"
    reuse_evaluations: bool = True

    def __post_init__(self) -> None:
        check_bools(self)
        if isinstance(self.policy, dict):
            self.policy = TrustRegionPolicy(**self.policy)
        check_choice("hessian", self.hessian, HESSIANS)
        if self.subproblem is None:
            self.subproblem = default_subproblem(self.hessian)
        check_choice("subproblem", self.subproblem, SUBPROBLEMS)
        check_choice("norm", self.norm, NORMS)
        check_choice("lsr1_gamma", self.lsr1_gamma, ("yy_sy", "fixed"))
        if self.subproblem == "obs" and self.hessian != "lsr1":
            raise ValueError(
                "subproblem='obs' solves L-SR1 models exactly and needs hessian='lsr1', "
                f"got hessian={self.hessian!r}; use 'cg' or 'cauchy'")
        check_int("memory", self.memory)
        check_positive(self, ("radius", "cg_rtol"))
        check_positive(self, ("tolerance_grad",), allow_zero=True)
        check_int("cg_max_iter", self.cg_max_iter, allow_none=True)


class TrustRegionSolver:
    """Trust-region iterations on flat vectors (see the module docstring).

    Args:
        config: the options.
        counters: evaluation counters shared with the objectives given to :meth:`iterate`.
    """

    def __init__(self, config: TrustRegionConfig, counters: EvalCounters | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else EvalCounters()
        self.memory: LSR1Memory | LBFGSMemory | None
        if config.hessian == "lsr1":
            self.memory = LSR1Memory(config.memory, gamma_rule=config.lsr1_gamma)
        elif config.hessian == "lbfgs":
            self.memory = LBFGSMemory(config.memory)
        else:
            self.memory = None
        self.radius = float(config.radius)
        self.cache = EvaluationCache()
        self.n_iter = 0
        self.n_accepted = 0
        self.n_rejected = 0
        self.stop_reason: str | None = None

    def reset(self, radius: float | None = None) -> None:
        """Empty the memory and the cache; optionally set a new radius (keeps counters)."""
        if self.memory is not None:
            self.memory.reset()
        self.cache.clear()
        self.stop_reason = None
        if radius is not None:
            self.radius = float(radius)

    def model_matvec(self) -> MatVec:
        """``v ↦ B v`` of the quasi-Newton model (zero for ``hessian="none"``)."""
        if self.memory is not None:
            return self.memory.matvec
        return torch.zeros_like

    def solve_subproblem(self, g: Tensor, matvec: MatVec, radius: float) -> SubproblemResult:
        """The step of the trust-region subproblem at gradient ``g``, radius ``radius``."""
        cfg = self.config
        assert cfg.subproblem is not None
        if cfg.subproblem == "obs":
            return solve("obs", g, radius, norm=cfg.norm, memory=self.memory)
        opts: dict[str, Any] = {}
        if cfg.subproblem == "cg":
            cap = cfg.cg_max_iter if cfg.cg_max_iter is not None else min(g.numel(), 250)
            opts = {"rtol": cfg.cg_rtol, "max_iter": cap}
            memory = self.memory
            if (isinstance(memory, LBFGSMemory) and len(memory) and cfg.norm == "l2"
                    and g.dtype == torch.float64 and matvec == memory.matvec):
                # The same CG in span[g, S, Y]: two passes over the pairs instead of two per
                # CG iteration (float64 only: squared norms come from Gram entries).
                res = steihaug_cg_in_span(g, memory, radius, **opts)
                if res is not None:
                    return res
        return solve(cfg.subproblem, g, radius, norm=cfg.norm, matvec=matvec, **opts)

    def iterate(self, objective: Objective, x: Tensor) -> IterationResult:
        """One trust-region iteration from ``x``."""
        cfg = self.config
        exact = cfg.hessian == "exact"
        if exact:
            fz, g, matvec = objective.linearize(x)
            f = float(fz)
        else:
            f, g = evaluate_at(objective, self.cache, x, cfg.reuse_evaluations)
            matvec = self.model_matvec()
        info: dict[str, Any] = {"loss": f, "accepted": False, "rho": float("nan")}
        if not is_finite(f, g):
            self.cache.clear()
            return self._finish(x, f, g, info, "the loss or gradient at the current parameters "
                                "is NaN/Inf; nothing to step from")
        if float(torch.linalg.vector_norm(g)) <= cfg.tolerance_grad:
            return self._finish(x, f, g, info,
                                f"gradient norm <= tolerance_grad={cfg.tolerance_grad:g}")

        def trial_eval(xt: Tensor) -> tuple[float | Tensor, Tensor | None]:
            if exact:
                return float(objective.value(xt)), None
            ft, gt = objective.value_and_grad(xt)
            return float(ft), gt

        result, _, _ = self._trial(trial_eval, x, f, g, matvec, info)
        return result

    def step_from(self, value_and_grad: Callable[[Tensor], tuple[float | Tensor, Tensor]],
                  x: Tensor, f: float, g: Tensor) -> tuple[IterationResult, float, Tensor]:
        """One trust-region trial from ``x`` whose loss ``f`` and gradient ``g`` are known.

        For methods that embed trust-region steps in a larger iteration (the global phase of
        :class:`~mldd.decomposition.spqn.SPQNSolver`): no evaluation at ``x``, no cache, no
        gradient test; the quasi-Newton model only (``hessian="exact"`` needs
        :meth:`iterate`).

        Args:
            value_and_grad: ``x ↦ (f(x), ∇f(x))`` (``f`` a float or a 0-d tensor).
            x, f, g: the current point, its loss and gradient (finite).

        Returns:
            ``(result, f_new, g_new)``: the iteration result (``result.x`` is the trial when
            accepted, else ``x``) and the loss and gradient at ``result.x``.
        """
        if self.config.hessian == "exact":
            raise ValueError("step_from needs a quasi-Newton model (hessian='lsr1', 'lbfgs' or "
                             "'none'); hessian='exact' linearizes the objective in iterate()")
        info: dict[str, Any] = {"loss": f, "accepted": False, "rho": float("nan")}
        out = self._trial(value_and_grad, x, f, g, self.model_matvec(), info)
        self.cache.clear()  # the caller keeps its own evaluations
        return out

    def _trial(self, trial_eval: Callable[[Tensor], tuple[float | Tensor, Tensor | None]],
               x: Tensor, f: float, g: Tensor, matvec: MatVec,
               info: dict[str, Any]) -> tuple[IterationResult, float, Tensor]:
        """Steps 2–4 of the module docstring from ``x`` (loss ``f``, gradient ``g``)."""
        cfg = self.config
        sub = self.solve_subproblem(g, matvec, self.radius)
        s = sub.step
        x_trial = x + s
        ft, g_trial = trial_eval(x_trial)
        f_trial = float(ft)
        usable = is_finite(f_trial, g_trial)
        # A finite loss with a NaN/Inf gradient is no place to continue from (the next
        # iteration could not step): the trial counts as failed, like a NaN loss.
        decision = cfg.policy.decide(self.radius, f - f_trial if usable else math.nan,
                                     sub.predicted_reduction, sub.on_boundary)
        if self.memory is not None and g_trial is not None and usable:
            self.memory.update(s, g_trial - g)
        self.n_iter += 1
        info.update(rho=decision.rho, radius=self.radius,
                    step_norm=float(torch.linalg.vector_norm(s)),
                    predicted_reduction=sub.predicted_reduction, subproblem_iters=sub.iterations,
                    on_boundary=sub.on_boundary)
        self.radius = decision.radius
        if decision.accepted:
            self.n_accepted += 1
            self.cache.put(x_trial, f_trial, g_trial)
            info.update(loss=f_trial, accepted=True)
            g_report = g_trial if g_trial is not None else g
            return self._finish(x_trial, f, g_report, info, None), f_trial, g_report
        self.n_rejected += 1
        reason = None
        if self.radius <= cfg.policy.radius_min:
            reason = f"trust-region radius reached radius_min={cfg.policy.radius_min:g}"
        return self._finish(x, f, g, info, reason), f, g

    def _finish(self, x: Tensor, f_start: float, g: Tensor, info: dict[str, Any],
                reason: str | None) -> IterationResult:
        self.stop_reason = reason
        info.update(
            grad_norm=float(torch.linalg.vector_norm(g)),
            radius_next=self.radius,
            iteration=self.n_iter,
            n_accepted=self.n_accepted,
            n_rejected=self.n_rejected,
            stop_reason=reason,
            **self.counters.as_dict(),
        )
        info.setdefault("radius", self.radius)
        return IterationResult(x, f_start, info)

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All algorithm state (radius, memory, cached evaluation, counters)."""
        cfg = asdict(self.config)
        return {
            "config": cfg,
            "radius": self.radius,
            "memory": None if self.memory is None else self.memory.state_dict(),
            "cache": self.cache.state_dict(),
            "counters": self.counters.as_dict(),
            "n_iter": self.n_iter,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.radius = float(d["radius"])
        if self.memory is not None:
            self.memory.load_state_dict(d["memory"])
        self.cache.load_state_dict(d["cache"])
        self.counters.load(d["counters"])
        self.n_iter = int(d["n_iter"])
        self.n_accepted = int(d["n_accepted"])
        self.n_rejected = int(d["n_rejected"])
        self.stop_reason = d["stop_reason"]
