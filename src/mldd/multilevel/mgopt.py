"""MG/OPT — the multilevel cycle with a line search on the coarse correction
(docs/algorithms.md §2.4).

Notation as in :mod:`mldd.multilevel.rmtr`: levels ``0 … L−1`` coarsest first, ``h_l`` the
objective of level ``l`` (the loss at the finest level, a first-order coherent coarse model below),
``P``/``R``/``Π`` the transfers.

One cycle at level ``l`` from ``x``::

    x ← ν1 smoother iterations on h_l                         # pre-smoothing
    if l > 0 and ‖R g‖ ≥ κ_g‖g‖ and ‖R g‖ > ε:                 # coarse correction
        x_c0 ← Π x;  h_c ← coherent model of f_{l−1} around x_c0   (additive = Nash's τ-correction)
        x_c ← x_c0, then μ cycles at level l−1 on h_c          (V: μ = 1, W: μ = 2)
        d ← P(x_c − x_c0);  if ∇h_l(x)ᵀd < 0: line search x ← x + t·d
    x ← ν2 smoother iterations on h_l                         # post-smoothing
    (the coarsest level runs ν_c smoother iterations)

The line search is backtracking Armijo (``t = 1, β, β², …`` until
``h(x + t d) ≤ h(x) + c1·t·∇hᵀd``) or strong Wolfe (:func:`mldd.globalization.strong_wolfe`);
a correction that is not a descent direction, or for which no step length gives sufficient
decrease, is rejected (the iterate does not move), and a NaN/Inf trial is never accepted.

The smoother is any object with ``iterate(objective, x) -> IterationResult``: the trust-region
solver (:class:`~mldd.solvers.TrustRegionSolver`, default) or any ``torch.optim`` optimizer
through :class:`TorchSmoother` (SGD, Adam, … — the form used for transformers). Coarse smoothers
are reset at the start of each coarse local solve (their objective changes every visit); the
finest one persists, so MG/OPT with one level is exactly its smoother.

References:
    [N00] Nash. A multigrid approach to discretized optimization problems. Optim. Methods Softw.
    14, 2000.
    [LN05] Lewis, Nash. Model problems for the multigrid optimization of systems governed by
    differential equations. SIAM J. Sci. Comput. 26(6), 2005.
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., §3.1 (Armijo), §3.5 (strong Wolfe).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.optim import Optimizer

from mldd.globalization.line_search import strong_wolfe
from mldd.linalg.flat import all_finite
from mldd.multilevel.batch_schedule import BatchSchedule
from mldd.multilevel.coarse_models import COARSE_MODELS
from mldd.multilevel.problem import (
    DESCENT_REFERENCES,
    CycleCounters,
    MultilevelProblem,
    descent_test,
    per_level_configs,
)
from mldd.multilevel.rmtr import CYCLES
from mldd.objective import Objective
from mldd.solvers.base import (
    EvaluationCache,
    IterationResult,
    check_bools,
    check_choice,
    check_positive,
    evaluate_at,
    is_finite,
)
from mldd.validation import check_int

__all__ = ["LEVEL_OPTIONS", "LINE_SEARCHES", "MGOptConfig", "MGOptSolver", "Smoother",
           "TorchSmoother"]

LINE_SEARCHES: tuple[str, ...] = ("armijo", "wolfe")

#: The options a hierarchy level may override (``Level.options``).
LEVEL_OPTIONS: tuple[str, ...] = ("pre_smoothing", "post_smoothing", "coarse_iterations")

OptimizerFactory = Callable[[list[Tensor]], Optimizer]
Monitor = Callable[[dict[str, Any]], None]


class Smoother(Protocol):
    """What MG/OPT needs from a smoother."""

    stop_reason: str | None

    def iterate(self, objective: Objective, x: Tensor) -> IterationResult: ...
    def reset(self) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, d: dict[str, Any]) -> None: ...


class TorchSmoother:
    """A ``torch.optim`` optimizer as a flat-vector smoother: one ``optimizer.step()`` per
    :meth:`iterate`, on a private flat parameter holding the level's iterate.

    The gradient comes from ``objective.value_and_grad``. A torch step evaluates nothing at the
    point it produces, so a step into a region where the loss or gradient is NaN/Inf is only
    seen at the next call: that call returns the point the step was taken from (the last one
    with a finite loss and gradient) and sets :attr:`stop_reason`, since the same optimizer
    state would take the same step again. A NaN/Inf at any other starting point also stops
    (nothing to step from); a non-finite updated iterate leaves ``x`` unchanged. Optimizers
    whose ``step`` needs a closure (``torch.optim.LBFGS``) are not supported: use the
    trust-region smoother.

    Args:
        factory: ``params -> optimizer``, e.g. ``lambda p: torch.optim.Adam(p, lr=1e-3)``.
    """

    def __init__(self, factory: OptimizerFactory) -> None:
        if not callable(factory):
            raise ValueError(f"smoother factory must be callable (params -> torch.optim."
                             f"Optimizer), got {type(factory).__name__}")
        self.factory = factory
        self.param: Tensor | None = None
        self.optimizer: Optimizer | None = None
        self.stop_reason: str | None = None
        self.n_iter = 0
        self._pending_state: dict[str, Any] | None = None
        # (start, its loss, result) of the last step taken: a NaN found at `result` sends us
        # back to `start`. Tensors kept by reference (neither is modified in place).
        self._last_step: tuple[Tensor, float, Tensor] | None = None

    def _ensure(self, x: Tensor) -> tuple[Tensor, Optimizer]:
        if self.param is None or self.param.shape != x.shape or self.param.dtype != x.dtype:
            self.param = torch.zeros_like(x, requires_grad=True)
            self.optimizer = None
        if self.optimizer is None:
            opt = self.factory([self.param])
            if not isinstance(opt, Optimizer):
                raise ValueError(f"smoother factory must return a torch.optim.Optimizer, got "
                                 f"{type(opt).__name__}")
            self.optimizer = opt
            if self._pending_state is not None:
                opt.load_state_dict(self._pending_state)
                self._pending_state = None
        return self.param, self.optimizer

    def iterate(self, objective: Objective, x: Tensor) -> IterationResult:
        """One optimizer step from ``x``."""
        param, opt = self._ensure(x)
        ft, g = objective.value_and_grad(x)
        f = float(ft)
        info: dict[str, Any] = {"loss": f, "accepted": False,
                                "grad_norm": float(torch.linalg.vector_norm(g))}
        self.n_iter += 1
        if not is_finite(f, g):
            last = self._last_step
            if last is not None and last[2].shape == x.shape and torch.equal(last[2], x):
                self.stop_reason = (
                    "the smoother's last step led to a NaN/Inf loss or gradient; returned to the "
                    "point it started from (lower the smoother's learning rate)")
                info.update(loss=last[1], accepted=False, stop_reason=self.stop_reason,
                            reverted=True)
                self._last_step = None
                return IterationResult(last[0], f, info)
            self.stop_reason = ("the loss or gradient at the current parameters is NaN/Inf; "
                                "nothing to step from")
            info["stop_reason"] = self.stop_reason
            return IterationResult(x, f, info)
        self.stop_reason = None
        with torch.no_grad():
            param.copy_(x)
        param.grad = g.detach().clone()
        opt.step()
        x_new = param.detach().clone()
        param.grad = None
        if not all_finite(x_new):
            info["stop_reason"] = "the optimizer produced a non-finite iterate; step skipped"
            return IterationResult(x, f, info)
        info["accepted"] = True
        self._last_step = (x, f, x_new)
        # The loss at x_new is unknown (a torch optimizer step evaluates nothing): None, which
        # is not the NaN of a failed evaluation.
        info["loss"] = None
        return IterationResult(x_new, f, info)

    def reset(self) -> None:
        """Drop the optimizer's state (a fresh optimizer at the next :meth:`iterate`)."""
        self.optimizer = None
        self._pending_state = None
        self._last_step = None
        self.stop_reason = None

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimizer's state dict (``None`` before the first iterate), the last
        step's endpoints and the stop reason."""
        sd = self.optimizer.state_dict() if self.optimizer is not None else self._pending_state
        last = self._last_step
        return {"optimizer": sd, "n_iter": self.n_iter, "stop_reason": self.stop_reason,
                "last_step": None if last is None else (last[0].clone(), last[1],
                                                        last[2].clone())}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore; the optimizer is rebuilt (and loaded) at the next :meth:`iterate`."""
        self.optimizer = None
        self._pending_state = d["optimizer"]
        self.n_iter = int(d["n_iter"])
        self.stop_reason = d.get("stop_reason")
        last = d.get("last_step")
        self._last_step = None if last is None else (last[0].clone(), float(last[1]),
                                                     last[2].clone())


@dataclass
class MGOptConfig:
    """Options of :class:`MGOptSolver` (our defaults; MG/OPT's papers leave them to the user).

    Attributes:
        cycle: ``"V"`` or ``"W"``.
        pre_smoothing, post_smoothing: smoother iterations before/after the coarse correction
            (1 and 1, as in [N00]).
        coarse_iterations: smoother iterations on the coarsest level (4).
        coarse_model: ``"additive"`` (Nash's τ-correction, default), ``"multiplicative"`` or
            ``"hybrid"``.
        hybrid_gamma, zeroth_order: see :func:`~mldd.multilevel.coarse_models.build_coarse_model`.
        kappa_g, restricted_grad_tol, descent_reference: the descent test (1/8, 1e-9, "fine"),
            as in RMTR.
        line_search: ``"armijo"`` (backtracking, default) or ``"wolfe"`` (strong Wolfe).
        c1: sufficient-decrease constant (1e-4); c2: Wolfe curvature constant (0.9).
        backtrack: Armijo step-reduction factor β (0.5).
        initial_step: the first trial step length (1: the coarse correction's own length).
        max_evals: line-search evaluation budget (10).
        reuse_evaluations: reuse the last fine evaluation at the start of the next cycle
            (True; False when the batch changes between cycles).
    """

    cycle: str = "V"
    pre_smoothing: int = 1
    post_smoothing: int = 1
    coarse_iterations: int = 4
    coarse_model: str = "additive"
    hybrid_gamma: float = 0.5
    zeroth_order: bool | None = None
    kappa_g: float = 0.125
    restricted_grad_tol: float = 1e-9
    descent_reference: str = "fine"
    line_search: str = "armijo"
    c1: float = 1e-4
    c2: float = 0.9
    backtrack: float = 0.5
    initial_step: float = 1.0
    max_evals: int = 10
    reuse_evaluations: bool = True

    def __post_init__(self) -> None:
        check_bools(self)
        check_choice("cycle", self.cycle, tuple(CYCLES))
        check_choice("coarse_model", self.coarse_model, COARSE_MODELS)
        check_choice("descent_reference", self.descent_reference, DESCENT_REFERENCES)
        check_choice("line_search", self.line_search, LINE_SEARCHES)
        for name in ("pre_smoothing", "post_smoothing", "coarse_iterations"):
            v = getattr(self, name)
            check_int(name, v, 0)
        check_int("max_evals", self.max_evals)
        check_positive(self, ("kappa_g", "initial_step"))
        check_positive(self, ("restricted_grad_tol",), allow_zero=True)
        if not 0.0 < self.c1 < self.c2 < 1.0:
            raise ValueError(f"need 0 < c1 < c2 < 1, got c1={self.c1!r}, c2={self.c2!r}")
        if not 0.0 < self.backtrack < 1.0:
            raise ValueError(f"backtrack must lie in (0, 1), got {self.backtrack!r}")
        if not (isinstance(self.hybrid_gamma, int | float) and 0 <= self.hybrid_gamma <= 1):
            raise ValueError(f"hybrid_gamma must lie in [0, 1], got {self.hybrid_gamma!r}")


class MGOptSolver(CycleCounters):
    """MG/OPT cycles on a :class:`~mldd.multilevel.problem.MultilevelProblem`.

    Args:
        config: the options.
        smoothers: one smoother per level, coarsest first (e.g. ``TrustRegionSolver`` or
            :class:`TorchSmoother` objects).
        batch_schedule: optional mini-batch size schedule, updated after every cycle.
        level_options: optional per-level overrides (coarsest first) of :data:`LEVEL_OPTIONS`.

    Attributes:
        monitor: optional callable receiving event dicts (``"smooth"``, ``"correction"``).

    The info dict of :meth:`iterate` has ``"loss"`` (the loss at the returned iterate) only when
    it is known: a ``torch.optim`` smoother's step evaluates nothing, so after one the key is
    absent and ``"loss_start"`` is the last loss seen.
    """

    label = "MG/OPT"

    def __init__(self, config: MGOptConfig, smoothers: Sequence[Smoother],
                 batch_schedule: BatchSchedule | None = None,
                 level_options: Sequence[Mapping[str, Any]] | None = None) -> None:
        self.config = config
        self.smoothers = list(smoothers)
        if not self.smoothers:
            raise ValueError("MGOptSolver needs one smoother per level (at least one)")
        self.n_levels = len(self.smoothers)
        self.level_configs = per_level_configs(config, self.n_levels, level_options,
                                               LEVEL_OPTIONS, "MG/OPT")
        self.caches = [EvaluationCache() for _ in self.smoothers]
        self.batch_schedule = batch_schedule
        self.monitor: Monitor | None = None
        self.n_cycles = 0
        self.n_coarse_accepted = 0
        self.n_coarse_rejected = 0
        self.n_coarse_skipped = 0
        self.stop_reason: str | None = None
        self._problem: MultilevelProblem | None = None
        self._log: dict[str, Any] = {}

    # -- evaluations shared with the smoother's cache --------------------------------------------
    def _cache(self, level: int) -> EvaluationCache:
        own = getattr(self.smoothers[level], "cache", None)
        return own if isinstance(own, EvaluationCache) else self.caches[level]

    def _evaluate(self, level: int, h: Objective, x: Tensor) -> tuple[float, Tensor]:
        return evaluate_at(h, self._cache(level), x, True)

    # -- public -----------------------------------------------------------------------------
    def iterate(self, problem: MultilevelProblem, x: Tensor) -> IterationResult:
        """One cycle from ``x`` at the finest level."""
        if problem.n_levels != self.n_levels:
            raise ValueError(f"this MG/OPT solver has {self.n_levels} smoothers, the problem has "
                             f"{problem.n_levels} levels")
        if not self.config.reuse_evaluations:
            self._cache(self.n_levels - 1).clear()
        self._problem = problem
        self._log = {"f_start": None, "loss": None, "grad_norm": math.nan, "moved": False,
                     "coarse_accepted": 0, "coarse_rejected": 0, "coarse_skipped": 0,
                     "step_length": math.nan}
        try:
            x_new = self._cycle(self.n_levels - 1, problem.fine, x)
        finally:
            self._problem = None
        log = self._log
        if log["f_start"] is None:
            f, g = self._evaluate(self.n_levels - 1, problem.fine, x)
            self._note_fine(f, f, g)
        self.n_cycles += 1
        self.stop_reason = self.smoothers[-1].stop_reason
        if self.batch_schedule is not None and log["loss"] is not None:
            self.batch_schedule.update(log["f_start"], log["loss"])
        return IterationResult(x_new, log["f_start"], self._info(problem))

    # -- the recursion ------------------------------------------------------------------------
    def _cycle(self, level: int, h: Objective, x: Tensor) -> Tensor:
        cfg = self.level_configs[level]
        if level == 0 and self.n_levels > 1:
            return self._smooth(level, h, x, cfg.coarse_iterations)
        x = self._smooth(level, h, x, cfg.pre_smoothing)
        if self.smoothers[level].stop_reason is not None:
            # Converged, or a NaN sent the smoother back to its last good point: a coarse
            # correction and post-smoothing from here would only repeat or undo that.
            return x
        if level > 0:
            x = self._coarse_correction(level, h, x)
        return self._smooth(level, h, x, cfg.post_smoothing)

    def _note_fine(self, f_start: float, loss: float | None, g: Tensor | None,
                   moved: bool = False) -> None:
        log = self._log
        if log["f_start"] is None:
            log["f_start"] = f_start
        log["loss"] = loss
        if g is not None:
            log["grad_norm"] = float(torch.linalg.vector_norm(g))
        log["moved"] = log["moved"] or moved

    def _smooth(self, level: int, h: Objective, x: Tensor, n: int) -> Tensor:
        smoother = self.smoothers[level]
        for _ in range(n):
            res = smoother.iterate(h, x)
            self._emit(event="smooth", level=level, x=res.x, x_before=x,
                       accepted=res.info.get("accepted"))
            if level == self.n_levels - 1:
                loss = res.info.get("loss")
                self._note_fine(res.f_start, None if loss is None else float(loss), None,
                                bool(res.info.get("accepted")))
                if "grad_norm" in res.info:
                    self._log["grad_norm"] = float(res.info["grad_norm"])
            x = res.x
            if smoother.stop_reason is not None:
                break
        return x

    def _skip(self, level: int, reason: str) -> Tensor | None:
        self.n_coarse_skipped += 1
        if level == self.n_levels - 1:
            self._log["coarse_skipped"] += 1
            self._log.setdefault("skip_reasons", []).append(reason)
        return None

    def _coarse_correction(self, level: int, h: Objective, x: Tensor) -> Tensor:
        cfg = self.config
        problem = self._problem
        assert problem is not None
        fine_level = level == self.n_levels - 1
        f, g = self._evaluate(level, h, x)
        if fine_level:
            self._note_fine(f, f, g)
        if not is_finite(f, g):
            return x
        transfer = problem.transfers[level - 1]
        g_r = transfer.restrict(g)
        kappa, tol = cfg.kappa_g, cfg.restricted_grad_tol
        if cfg.descent_reference == "fine" and not descent_test(g, g_r, kappa_g=kappa, tol=tol):
            self._skip(level, "descent test")
            return x
        x_c0 = transfer.inject(x)
        h_c = self._build_model(level, problem.objectives[level - 1], x_c0, g_r, f)
        if h_c is None or not is_finite(h_c.f0, h_c.g0):
            self._skip(level, "coarse model unavailable")
            return x
        if cfg.descent_reference == "coarse" and not descent_test(
                g, g_r, kappa_g=kappa, tol=tol, g_coarse=h_c.g0, reference="coarse"):
            self._skip(level, "descent test")
            return x
        coarse = self.smoothers[level - 1]
        coarse.reset()
        cache = self._cache(level - 1)
        cache.clear()
        cache.put(x_c0, h_c.value_at_start, g_r)
        x_c = x_c0
        for _ in range(CYCLES[cfg.cycle]):
            x_c = self._cycle(level - 1, h_c, x_c)
        d = transfer.prolong(x_c - x_c0)
        dphi0 = float(torch.dot(g, d))
        if not (math.isfinite(dphi0) and dphi0 < 0.0):
            self._skip(level, "coarse correction is not a descent direction")
            return x
        t, f_t, g_t = self._line_search(h, x, d, f, dphi0)
        accepted = t > 0.0 and g_t is not None
        if accepted:
            assert g_t is not None
            x_new = x + t * d
            self._cache(level).put(x_new, f_t, g_t)
            self.n_coarse_accepted += 1
        else:
            x_new = x
            self.n_coarse_rejected += 1
        if fine_level:
            key = "coarse_accepted" if accepted else "coarse_rejected"
            self._log[key] += 1
            self._log["step_length"] = t
            if accepted:
                self._note_fine(f, f_t, g_t, True)
        self._emit(event="correction", level=level, x=x_new, x_before=x, direction=d,
                   step_length=t, accepted=accepted)
        return x_new

    def _line_search(self, h: Objective, x: Tensor, d: Tensor, f: float,
                     dphi0: float) -> tuple[float, float, Tensor | None]:
        """``(t, h(x + t d), ∇h(x + t d))``; ``t = 0`` (and no gradient) on failure."""
        cfg = self.config

        def evaluate(t: float) -> tuple[float, Tensor]:
            ft, gt = h.value_and_grad(x + t * d)
            return float(ft), gt

        if cfg.line_search == "wolfe":
            ls = strong_wolfe(evaluate, d, f, dphi0, cfg.initial_step, c1=cfg.c1, c2=cfg.c2,
                              max_evals=cfg.max_evals)
            if ls.t > 0.0 and ls.sufficient_decrease and ls.g is not None:
                return ls.t, ls.f, ls.g
            return 0.0, f, None
        t = cfg.initial_step
        for _ in range(cfg.max_evals):
            ft, gt = evaluate(t)
            if is_finite(ft, gt) and ft <= f + cfg.c1 * t * dphi0:
                return t, ft, gt
            t *= cfg.backtrack
        return 0.0, f, None

    # -- reporting ------------------------------------------------------------------------------
    def _emit(self, **event: Any) -> None:
        if self.monitor is not None:
            self.monitor(event)

    def _info(self, problem: MultilevelProblem) -> dict[str, Any]:
        log = self._log
        counters = problem.counters()
        fine = counters[-1]
        info: dict[str, Any] = {
            "loss_start": log["f_start"],
            "accepted": log["moved"],
            "grad_norm": log["grad_norm"],
            "cycle": self.n_cycles,
            "coarse_accepted": log["coarse_accepted"],
            "coarse_rejected": log["coarse_rejected"],
            "coarse_skipped": log["coarse_skipped"],
            "step_length": log["step_length"],
            "n_coarse_accepted": self.n_coarse_accepted,
            "n_coarse_rejected": self.n_coarse_rejected,
            "n_coarse_skipped": self.n_coarse_skipped,
            "n_f": fine.n_f,
            "n_g": fine.n_g,
            "n_hvp": fine.n_hvp,
            "levels": [c.as_dict() for c in counters],
            "cost": problem.cost(),
            "stop_reason": self.stop_reason,
        }
        if log["loss"] is not None:  # unknown after a torch smoother's step
            info["loss"] = log["loss"]
        if "skip_reasons" in log:
            info["skip_reasons"] = list(log["skip_reasons"])
        if self.batch_schedule is not None:
            info["batch_size"] = self.batch_schedule.batch_size
        radius = getattr(self.smoothers[-1], "radius", None)
        if radius is not None:
            info["radius"] = radius
        return info

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All state: every level's smoother and cached evaluation, counters, schedule."""
        return {
            "config": asdict(self.config),
            "smoothers": [s.state_dict() for s in self.smoothers],
            "caches": [c.state_dict() for c in self.caches],
            **self._counters_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self._check_levels(d)
        for s, sd in zip(self.smoothers, d["smoothers"], strict=True):
            s.load_state_dict(sd)
        for c, cd in zip(self.caches, d["caches"], strict=True):
            c.load_state_dict(cd)
        self._load_counters_state(d)
