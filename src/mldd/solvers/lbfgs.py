"""L-BFGS with a strong-Wolfe line search: one iteration on an :class:`~mldd.objective.Objective`.

One iteration from ``x_k`` with gradient ``g_k``:

1. direction ``d_k = −H_k g_k`` by the two-loop recursion over the last ``m`` pairs, with
   ``H_0 = γ I``, ``γ = sᵀy / yᵀy`` of the newest pair [NW06, Alg. 7.4];
2. a strong-Wolfe line search ``x_{k+1} = x_k + t_k d_k`` (``t = 1`` first, except on the very
   first iteration or after a memory reset, where ``t = min(1, 1/‖g‖₁)`` because the direction
   ``−g`` carries no scale information);
3. the pair ``s = x_{k+1} − x_k``, ``y = g_{k+1} − g_k`` is stored if ``yᵀs > ε ‖s‖ ‖y‖``.

Stopping: ``max|g| ≤ tolerance_grad``; ``max|s| ≤ tolerance_change``; ``|Δf| < tolerance_change``.
A failed line search first resets the memory and retries from steepest descent on the next
iteration; a failure from steepest descent stops with a reason. The iterate never moves to a point
with a non-finite loss (the line search backs off from such points).

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §7.2 and Algorithm 7.4–7.5.
    Liu, Nocedal. On the limited memory BFGS method for large scale optimization. Math. Prog., 1989.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mldd.globalization.line_search import LineSearchResult, strong_wolfe
from mldd.linalg.flat import max_abs
from mldd.objective import EvalCounters, Objective
from mldd.quasinewton import LBFGSMemory
from mldd.solvers.base import (
    EvaluationCache,
    IterationResult,
    check_bools,
    check_choice,
    check_positive,
    evaluate_at,
    is_finite,
)
from mldd.validation import is_int

LINE_SEARCHES = ("strong_wolfe", "backtracking")


@dataclass
class LBFGSConfig:
    """Options of :class:`LBFGSSolver` (defaults match ``torch.optim.LBFGS`` where it has them).

    Attributes:
        memory: number of stored pairs ``m`` (default 10).
        line_search: ``"strong_wolfe"`` (default; c1 = 1e-4, c2 = 0.9) or ``"backtracking"``
            (Armijo with halving; cheaper, no curvature guarantee).
        lr: initial step length of the line search (default 1).
        c1: sufficient-decrease constant.
        c2: curvature constant.
        max_ls: evaluations allowed per line search (default 25).
        tolerance_grad: stop when ``max|g| ≤ tolerance_grad`` (default 1e-7).
        tolerance_change: stop when the step or the loss change falls below this (default 1e-9).
        curvature_eps: store a pair only if ``yᵀs > curvature_eps ‖s‖ ‖y‖`` (default 1e-10).
        reuse_evaluations: reuse the loss/gradient computed at the accepted point instead of
            calling the closure again at the next iteration (default True; set False when the
            closure draws a new mini-batch at every call).
    """

    memory: int = 10
    line_search: str = "strong_wolfe"
    lr: float = 1.0
    c1: float = 1e-4
    c2: float = 0.9
    max_ls: int = 25
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    curvature_eps: float = 1e-10
    reuse_evaluations: bool = True

    def __post_init__(self) -> None:
        check_bools(self)
        check_choice("line_search", self.line_search, LINE_SEARCHES)
        check_positive(self, ("memory", "lr", "max_ls"))
        check_positive(self, ("tolerance_grad", "tolerance_change", "curvature_eps"),
                       allow_zero=True)
        if not is_int(self.memory) or not is_int(self.max_ls):
            raise ValueError(f"memory and max_ls must be integers, got {self.memory!r}, "
                             f"{self.max_ls!r}")
        if not 0.0 < self.c1 < self.c2 < 1.0:
            raise ValueError(f"need 0 < c1 < c2 < 1, got c1={self.c1}, c2={self.c2}")


def backtracking(evaluate: Any, d: Tensor, f0: float, dphi0: float, t_init: float, *,
                 c1: float, max_evals: int) -> LineSearchResult:
    """Armijo backtracking: halve ``t`` until ``f(x + t d) ≤ f(x) + c1 t gᵀd`` (finite)."""
    t = t_init
    for k in range(1, max_evals + 1):
        f, g = evaluate(t)
        f = float(f)
        if is_finite(f, g) and f <= f0 + c1 * t * dphi0:
            return LineSearchResult(t, f, g, float(g @ d), k, True, True,
                                    "Armijo condition satisfied")
        t *= 0.5
    return LineSearchResult(0.0, f0, None, dphi0, max_evals, False, False,
                            "evaluation budget exhausted while backtracking")


class LBFGSSolver:
    """L-BFGS iterations on flat vectors (see the module docstring for the algorithm).

    Args:
        config: the options.
        counters: evaluation counters shared with the objectives this solver is given.
    """

    def __init__(self, config: LBFGSConfig, counters: EvalCounters | None = None) -> None:
        self.config = config
        self.counters = counters if counters is not None else EvalCounters()
        self.memory = LBFGSMemory(config.memory, curvature_eps=config.curvature_eps)
        self.cache = EvaluationCache()
        self.n_iter = 0
        self.n_resets = 0
        self.stop_reason: str | None = None
        self.fresh_direction = True  # next direction is −g: scale the first trial step
        # max|g| of the accepted point's gradient, computed by the last iteration's stopping
        # test, so the next iteration's test on the same tensor costs no second pass.
        self._known_g_max: tuple[Tensor, float] | None = None

    def reset(self) -> None:
        """Forget the memory and cached evaluation (keeps counters)."""
        self.memory.reset()
        self.cache.clear()
        self._known_g_max = None
        self.fresh_direction = True
        self.stop_reason = None

    def iterate(self, objective: Objective, x: Tensor) -> IterationResult:
        """One L-BFGS iteration from ``x``."""
        cfg = self.config
        f, g = evaluate_at(objective, self.cache, x, cfg.reuse_evaluations)
        info: dict[str, Any] = {"loss": f, "accepted": False, "step_length": 0.0}
        known = self._known_g_max
        self._known_g_max = None
        # NaN/Inf propagate through max_abs, so this is also the finiteness test of g.
        g_max = known[1] if known is not None and known[0] is g else max_abs(g)
        if not (math.isfinite(f) and math.isfinite(g_max)):
            self.cache.clear()
            return self._finish(x, f, g, info, "the loss or gradient at the current parameters "
                                "is NaN/Inf; nothing to step from")
        if g_max <= cfg.tolerance_grad:
            return self._finish(x, f, g, info,
                                f"gradient max-norm <= tolerance_grad={cfg.tolerance_grad:g}")

        d = self.memory.apply_inverse(g, negate=True) if len(self.memory) else -g
        dphi0 = float(g @ d)
        d_max = max_abs(d)  # NaN/Inf propagate: also the finiteness test of d
        if not dphi0 < 0.0 or not math.isfinite(d_max):
            # A corrupted memory (rounding) can produce an ascent direction: fall back to −g.
            self.memory.reset()
            self.fresh_direction = True
            d = -g
            dphi0 = float(g @ d)
            d_max = g_max
        t0 = cfg.lr
        if self.fresh_direction:
            t0 = cfg.lr * min(1.0, 1.0 / float(g.abs().sum()))

        evaluated: dict[float, Tensor] = {}

        def along(t: float) -> tuple[float, Tensor]:
            # One fused op; the accepted point below is formed by the same call (or is this very
            # tensor), so it is bit-identical to the evaluated one and the cache hits at the next
            # iteration.
            xt = torch.add(x, d, alpha=t)
            evaluated.clear()  # keep only the newest: the parameters hold it
            evaluated[t] = xt
            fv, gv = objective.value_and_grad(xt)
            return float(fv), gv

        if cfg.line_search == "strong_wolfe":
            ls = strong_wolfe(along, d, f, dphi0, t0, c1=cfg.c1, c2=cfg.c2, max_evals=cfg.max_ls,
                              tolerance_change=cfg.tolerance_change)
        else:
            ls = backtracking(along, d, f, dphi0, t0, c1=cfg.c1, max_evals=cfg.max_ls)
        info.update(line_search_evals=ls.n_evals, line_search=ls.reason)
        self.n_iter += 1
        if ls.t <= 0.0 or ls.g is None or not ls.sufficient_decrease:
            if len(self.memory) or not self.fresh_direction:
                self.memory.reset()
                self.n_resets += 1
                self.fresh_direction = True
                return self._finish(x, f, g, info, None)
            return self._finish(x, f, g, info,
                                f"line search failed from steepest descent ({ls.reason})")

        s = ls.t * d
        # The evaluated tensor itself when the search ended on its last trial: the shell then
        # sees that the parameters already hold it and skips writing it back.
        x_new = evaluated.get(ls.t)
        if x_new is None:
            x_new = torch.add(x, d, alpha=ls.t)
        self.memory.update(s, ls.g - g)
        self.fresh_direction = False
        self.cache.put(x_new, ls.f, ls.g)
        info.update(loss=ls.f, accepted=True, step_length=ls.t)
        reason = None
        # max|s| = t·max|d| (exact in float64, where rounding is monotone; within float32 rounding
        # otherwise), without another pass over s.
        if ls.t * d_max <= cfg.tolerance_change:
            reason = f"step max-norm <= tolerance_change={cfg.tolerance_change:g}"
        elif abs(ls.f - f) < cfg.tolerance_change:
            reason = f"loss change < tolerance_change={cfg.tolerance_change:g}"
        else:
            self._known_g_max = (ls.g, max_abs(ls.g))
            if self._known_g_max[1] <= cfg.tolerance_grad:
                reason = f"gradient max-norm <= tolerance_grad={cfg.tolerance_grad:g}"
        result = self._finish(x_new, f, ls.g, info, reason)
        return result

    def _finish(self, x: Tensor, f_start: float, g: Tensor, info: dict[str, Any],
                reason: str | None) -> IterationResult:
        self.stop_reason = reason
        info.update(
            grad_norm=float(torch.linalg.vector_norm(g)) if g is not None else float("nan"),
            iteration=self.n_iter,
            memory=len(self.memory),
            stop_reason=reason,
            **self.counters.as_dict(),
        )
        return IterationResult(x, f_start, info)

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All algorithm state (memory, cached evaluation, counters, flags)."""
        return {
            "config": asdict(self.config),
            "memory": self.memory.state_dict(),
            "cache": self.cache.state_dict(),
            "counters": self.counters.as_dict(),
            "n_iter": self.n_iter,
            "n_resets": self.n_resets,
            "stop_reason": self.stop_reason,
            "fresh_direction": self.fresh_direction,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.memory.load_state_dict(d["memory"])
        self.cache.load_state_dict(d["cache"])
        self.counters.load(d["counters"])
        self.n_iter = int(d["n_iter"])
        self.n_resets = int(d["n_resets"])
        self.stop_reason = d["stop_reason"]
        self.fresh_direction = bool(d["fresh_direction"])
