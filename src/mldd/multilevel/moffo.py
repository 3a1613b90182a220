"""MOFFO — multilevel objective-function-free optimisation (multilevel AdaGrad) [GKT23].

Never evaluates the objective: only gradients, so it tolerates noisy mini-batch gradients (no
ratio test compares two noisy losses). Every gradient is obtained with
:meth:`~mldd.objective.Objective.grad`, so ``n_f`` stays 0 on every level.

Notation: level ``l`` (``0`` coarsest, ``L−1`` finest), its objective ``h_l`` (the loss at the
finest level, the additive first-order coherent model below — the only model that needs no loss
value), gradient ``g``, accumulator ``a_l = ς + Σ_k g_k²`` (componentwise, over every gradient
this level has used), ``w = sqrt(a_l)``.

**One level** is AdaGrad without momentum [GKT23, §2]: ``s = −η·g / w``. It is the minimiser of
the linear model ``gᵀs`` over the componentwise trust region ``|s_i| ≤ Δ_i = η|g_i|/w_i`` — the
OFFO view: the region is sized by the gradient history instead of a ratio test. With
``scale="none"`` and ``η = 1`` this is the paper's method, and it equals
``torch.optim.Adagrad(lr=η, eps=0, initial_accumulator_value=ς, lr_decay=0, weight_decay=0)``
exactly (torch adds its ``eps`` *outside* the square root, so ``eps=0``; its initial accumulator
value plays ``ς`` inside it).

**Parameter scaling** (``scale="rms"``, the default; our choice). AdaGrad's first step moves every
coordinate by about ``η`` whatever its size, so one ``η`` cannot suit weights of size 1e-2 and
1: ``η = 1`` moved a 16-wide residual network on digits far too much, and the best AdaGrad
learning rate depends on the network. MOFFO therefore runs AdaGrad in the scaled variables
``z = x / d``, with ``d_i`` the root-mean-square of the initial values of the tensor that holds
coordinate ``i`` (a tensor initialised to zero, such as a bias, takes the RMS of all
parameters; an all-zero start takes ``d = 1``), frozen at the first iteration — the relative step
size of Adafactor [SS18, §7] without its time dependence. In the original variables::

    a ← ς + Σ g²,   w = sqrt(a),   s = −η·d·g / w,   Δ_i = η·d_i·|g_i|/w_i

so ``η`` is a *relative* step: the first step moves each tensor by about ``η`` times its RMS.
``ς`` stays in the units of ``g²`` (in ``z`` it is ``ς·d_i²``): taken literally in ``z``, a small
``d`` would inflate it to ``ς/d²`` and damp the first steps (on a 9-block, 8-wide digits network
25 full-batch steps reached a loss of 0.90 that way, 0.16 this way). One level is then
``torch.optim.Adagrad(initial_accumulator_value=ς, eps=0)`` with one parameter group per tensor
``p`` and learning rate ``η·d_p`` (tested). A coarse level takes the injected scales ``|Π d|``
(floored like the fine ones). This is a fixed diagonal change of variables, so the OFFO
analysis, which holds in ``z``, is unchanged.

**Multilevel** (one fine iteration at level ``l > 0``)::

    g ← ∇h_l(x);  a_l ← a_l + g²;  Δ ← η d|g|/sqrt(a_l);  s_T ← −η d g/sqrt(a_l)   (Taylor)
    if ‖R g‖ ≥ κ_r‖g‖ and ‖R g‖ > ε:                                    (recursion test)
        x_c0 ← Π x;  h_c ← additive model of f_{l−1} around x_c0  (∇h_c(x_c0) = R g)
        x_c ← ν_c MOFFO iterations on h_c from x_c0 (the first uses R g; each may recurse)
        s_R ← clip(P(x_c − x_c0), −Δ, Δ)           (the fine componentwise bounds hold)
        if gᵀs_R ≤ κ_s·gᵀs_T: take s_R            (enough of the box's best linear decrease)
    otherwise take s_T

The recursion test, the clipping, the linear-decrease safeguard and their constants are **our
choices** where [GKT23] could not be checked (docs/algorithms.md §2.6, unverified): a coarse step is
taken only when the restriction keeps a fair share of the gradient (``κ_r = 0.5``), the
prolongated step is projected onto the fine box (clipping is the Euclidean projection onto it),
and it is kept only if it achieves at least ``κ_s = 0.1`` of the largest linear decrease
available in that box, ``−gᵀs_T = Σ η d_i g_i²/w_i`` — otherwise the fine AdaGrad step is taken,
so a poor coarse step costs coarse gradients but never a bad fine step. Accumulators of every level
persist across iterations (each level's AdaGrad sees all the gradients it used).

NaN/Inf gradients (fine or coarse) and NaN/Inf fine losses (the value comes with the gradient
and is looked at for this alone) never reach the iterate: the fine iteration is skipped
(accumulator untouched), a coarse one ends the coarse solve. After :data:`SKIP_LIMIT` (10)
consecutive skipped fine iterations the method stops with a reason: a mini-batch with a bad value
is skipped, parameters where every gradient is NaN end the run.

References:
    [GKT23] Gratton, Kopaničáková, Toint. Multilevel objective-function-free optimization with
    an application to neural networks training. SIAM J. Optim. 33(4), 2023. arXiv:2302.07049.
    [DHS11] Duchi, Hazan, Singer. Adaptive subgradient methods for online learning and
    stochastic optimization. JMLR 12, 2011 (AdaGrad).
    [SS18] Shazeer, Stern. Adafactor: adaptive learning rates with sublinear memory cost.
    ICML 2018 (relative step sizes, §7).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mldd.linalg.flat import all_finite
from mldd.multilevel.coarse_models import build_coarse_model
from mldd.multilevel.problem import MultilevelProblem, descent_test, per_level_configs
from mldd.objective import Objective
from mldd.solvers.base import IterationResult, check_bools, check_choice, check_positive
from mldd.validation import check_int

__all__ = ["LEVEL_OPTIONS", "SCALES", "MOFFOConfig", "MOFFOSolver"]

#: Choices of :attr:`MOFFOConfig.scale`.
SCALES: tuple[str, ...] = ("rms", "none")

#: The options a hierarchy level may override (``Level.options``): a coarse level's own
#: number of iterations per visit.
LEVEL_OPTIONS: tuple[str, ...] = ("coarse_iterations",)

Monitor = Callable[[dict[str, Any]], None]

#: Default ``η``: the paper's value, applied to the scaled variables of ``scale="rms"``.
DEFAULT_LR = 1.0


#: consecutive skipped fine iterations (NaN/Inf loss or gradient) after which MOFFO stops.
SKIP_LIMIT = 10


@dataclass
class MOFFOConfig:
    """Options of :class:`MOFFOSolver` (**unverified** constants: conservative choices of ours).

    Attributes:
        sigma: ``ς > 0`` inside ``w = sqrt(ς + Σ g²)`` (default 1e-2).
        lr: ``η``, the scale of the componentwise trust region ``Δ_i = η|g_i|/w_i``; relative to
            each tensor's initial RMS with ``scale="rms"``, an AdaGrad learning rate with
            ``scale="none"``. Default 1: the paper's value.
        scale: ``"rms"`` (default; AdaGrad in the variables ``x/d``, ``d`` the initial
            per-tensor RMS) or ``"none"`` (plain AdaGrad).
        coarse_iterations: MOFFO iterations per coarse visit (default 1; see
            :class:`~mldd.optim.MOFFO` for how it was chosen).
        kappa_r: recursion test ``‖R g‖ ≥ κ_r‖g‖`` (default 0.5).
        restricted_grad_tol: ``ε``: no recursion when ``‖R g‖ ≤ ε`` (default 1e-9).
        kappa_s: keep the prolongated coarse step only if ``gᵀs_R ≤ κ_s·gᵀs_T`` (default 0.1).
    """

    sigma: float = 1e-2
    lr: float = DEFAULT_LR
    scale: str = "rms"
    coarse_iterations: int = 1
    kappa_r: float = 0.5
    restricted_grad_tol: float = 1e-9
    kappa_s: float = 0.1

    def __post_init__(self) -> None:
        check_bools(self)
        check_positive(self, ("sigma", "lr", "kappa_r"))
        check_choice("scale", self.scale, SCALES)
        check_positive(self, ("restricted_grad_tol",), allow_zero=True)
        v = self.coarse_iterations
        check_int("coarse_iterations", v)
        if not (isinstance(self.kappa_s, int | float) and 0.0 < self.kappa_s <= 1.0):
            raise ValueError(f"kappa_s must lie in (0, 1], got {self.kappa_s!r}")


class MOFFOSolver:
    """MOFFO iterations on a :class:`~mldd.multilevel.problem.MultilevelProblem`.

    Args:
        config: the options.
        n_levels: the number of levels of the problems :meth:`iterate` will get.
        level_options: optional per-level overrides (coarsest first) of :data:`LEVEL_OPTIONS`.
        segments: lengths of the finest level's tensors in the flat vector (for
            ``scale="rms"``); ``None``: the whole vector is one tensor.

    Attributes:
        accumulators: per level, ``ς + Σ g²`` (``None`` until the level is first used).
        scales: per level, the componentwise scale ``d`` (``None`` until the level is first used
            or with ``scale="none"``).
        monitor: optional callable receiving event dicts (``"step"``).
    """

    def __init__(self, config: MOFFOConfig, n_levels: int,
                 level_options: Sequence[Mapping[str, Any]] | None = None,
                 segments: Sequence[int] | None = None) -> None:
        check_int("n_levels", n_levels)
        if segments is not None:
            segments = [int(k) for k in segments]
            if not segments or any(k < 1 for k in segments):
                raise ValueError(f"segments must be positive tensor sizes, got {segments!r}")
        self.config = config
        self.n_levels = n_levels
        self.segments = segments
        self.coarse_iterations = [c.coarse_iterations for c in per_level_configs(
            config, n_levels, level_options, LEVEL_OPTIONS, "MOFFO")]
        self.accumulators: list[Tensor | None] = [None] * n_levels
        self.scales: list[Tensor | None] = [None] * n_levels
        self.monitor: Monitor | None = None
        self.n_iter = 0
        self.n_coarse_steps = 0
        self.n_coarse_declined = 0
        self.n_skipped = 0
        self.skip_run = 0  # consecutive skipped fine iterations
        self.stop_reason: str | None = None
        self._problem: MultilevelProblem | None = None
        self._kind = "taylor"

    def iterate(self, problem: MultilevelProblem, x: Tensor) -> IterationResult:
        """One fine MOFFO iteration from ``x`` (``f_start`` is NaN: no loss is evaluated)."""
        if problem.n_levels != self.n_levels:
            raise ValueError(f"this MOFFO solver was built for {self.n_levels} levels, the "
                             f"problem has {problem.n_levels}")
        self._problem = problem
        self._kind = "skipped"
        try:
            x_new, g = self._iteration(self.n_levels - 1, problem.fine, x, None)
        finally:
            self._problem = None
        self.n_iter += 1
        counters = problem.counters()
        fine = counters[-1]
        info: dict[str, Any] = {
            "accepted": self._kind != "skipped",
            "step_kind": self._kind,
            "grad_norm": float(torch.linalg.vector_norm(g)) if g is not None else math.nan,
            "step_norm": float(torch.linalg.vector_norm(x_new - x)),
            "iteration": self.n_iter,
            "n_coarse_steps": self.n_coarse_steps,
            "n_coarse_declined": self.n_coarse_declined,
            "n_skipped": self.n_skipped,
            "n_f": fine.n_f,
            "n_g": fine.n_g,
            "levels": [c.as_dict() for c in counters],
            "cost": problem.cost(),
            "stop_reason": self.stop_reason,
        }
        return IterationResult(x_new, math.nan, info)

    # -- one iteration at one level ------------------------------------------------------------
    def _iteration(self, level: int, h: Objective, x: Tensor,
                   g: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One MOFFO iteration at ``level``; returns the new point and the gradient used (or
        ``None`` when the gradient was not finite and nothing moved)."""
        cfg = self.config
        fine_level = level == self.n_levels - 1
        finite = True
        if g is None and fine_level:
            f, g = h.grad_and_value(x)
            finite = math.isfinite(float(f))
        elif g is None:
            g = h.grad(x)
        if not (finite and all_finite(g)):
            if fine_level:
                self.n_skipped += 1
                self.skip_run += 1
                self._kind = "skipped"
                if self.skip_run >= SKIP_LIMIT:
                    self.stop_reason = (f"{self.skip_run} consecutive iterations with a NaN/Inf "
                                        "loss or gradient; nothing to step from")
            return x, None
        if fine_level:
            self.skip_run = 0
            self.stop_reason = None
        d = self._scale(level, x)
        acc = self.accumulators[level]
        if acc is None or acc.shape != g.shape:
            acc = torch.full_like(g, cfg.sigma)
        acc.addcmul_(g, g)
        self.accumulators[level] = acc
        w = acc.sqrt()
        # With d = None: torch.optim.Adagrad's exact operation, so the one-level identity is
        # bitwise.
        x_taylor = torch.addcdiv(x, g if d is None else g * d, w, value=-cfg.lr)
        step = None
        if level > 0:
            bound = cfg.lr * g.abs() / w
            if d is not None:
                bound = bound * d
            step = self._recursive_step(level, g, x, bound, x_taylor - x)
        if step is None:
            if fine_level:
                self._kind = "taylor"
            self._emit(event="step", level=level, kind="taylor", x=x_taylor, x_before=x)
            return x_taylor, g
        if fine_level:
            self._kind = "coarse"
        x_new = x + step
        self._emit(event="step", level=level, kind="coarse", x=x_new, x_before=x)
        return x_new, g

    def _scale(self, level: int, x: Tensor) -> Tensor | None:
        """The componentwise scale ``d`` of ``level`` (``None`` with ``scale="none"``), fixed at
        the level's first use: per-tensor RMS of ``x`` at the finest level, ``|Π d|`` below."""
        if self.config.scale == "none":
            return None
        d = self.scales[level]
        if d is not None and d.shape == x.shape:
            return d
        if level == self.n_levels - 1:
            sizes = self.segments if self.segments is not None else [x.numel()]
            if sum(sizes) != x.numel():
                raise ValueError(f"MOFFO segments add up to {sum(sizes)} entries, the finest "
                                 f"level has {x.numel()}")
            parts = x.detach().split(sizes)
            d = torch.cat([torch.full_like(p, float(p.pow(2).mean().sqrt())) for p in parts])
        else:
            problem = self._problem
            assert problem is not None
            fine = self.scales[level + 1]
            assert fine is not None, "a coarse level is visited only after its fine level"
            d = problem.transfers[level].inject(fine).abs()
        # Tensors initialised to zero (biases) take the RMS of the whole vector; an all-zero
        # start leaves plain AdaGrad (d = 1).
        overall = float(x.detach().pow(2).mean().sqrt()) if x.numel() else 0.0
        floor = overall if overall > 0.0 and math.isfinite(overall) else 1.0
        d = torch.where((d > 0) & torch.isfinite(d), d, torch.full_like(d, floor))
        self.scales[level] = d
        return d

    def _recursive_step(self, level: int, g: Tensor, x: Tensor, bound: Tensor,
                        s_taylor: Tensor) -> Tensor | None:
        """The clipped prolongated coarse step, or ``None`` when no coarse step is taken."""
        cfg = self.config
        problem = self._problem
        assert problem is not None
        transfer = problem.transfers[level - 1]
        g_r = transfer.restrict(g)
        if not descent_test(g, g_r, kappa_g=cfg.kappa_r, tol=cfg.restricted_grad_tol):
            return None
        x_c0 = transfer.inject(x)
        h_c = build_coarse_model("additive", problem.objectives[level - 1], x_c0, g_r,
                                 gradient_only=True)
        if not all_finite(h_c.g0):
            return None
        x_c = x_c0
        g_c: Tensor | None = g_r
        for _ in range(self.coarse_iterations[level - 1]):
            x_c, used = self._iteration(level - 1, h_c, x_c, g_c)
            if used is None:
                break
            g_c = None
        step = transfer.prolong(x_c - x_c0)
        step = torch.maximum(torch.minimum(step, bound), -bound)
        decrease = float(torch.dot(g, step))
        best = float(torch.dot(g, s_taylor))
        if math.isfinite(decrease) and all_finite(step) and best < 0.0 \
                and decrease <= cfg.kappa_s * best:
            if level == self.n_levels - 1:
                self.n_coarse_steps += 1
            return step
        if level == self.n_levels - 1:
            self.n_coarse_declined += 1
        return None

    def _emit(self, **event: Any) -> None:
        if self.monitor is not None:
            self.monitor(event)

    # -- checkpointing ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All state: the accumulators of every level and the counters."""
        return {
            "config": asdict(self.config),
            "n_levels": self.n_levels,
            "accumulators": [None if a is None else a.clone() for a in self.accumulators],
            "scales": [None if d is None else d.clone() for d in self.scales],
            "n_iter": self.n_iter,
            "n_coarse_steps": self.n_coarse_steps,
            "n_coarse_declined": self.n_coarse_declined,
            "n_skipped": self.n_skipped,
            "skip_run": self.skip_run,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        if int(d["n_levels"]) != self.n_levels:
            raise ValueError(f"state_dict is for {d['n_levels']} levels, this solver has "
                             f"{self.n_levels}")
        self.accumulators = [None if a is None else a.clone() for a in d["accumulators"]]
        scales = d.get("scales", [None] * self.n_levels)  # absent in pre-scale checkpoints
        self.scales = [None if v is None else v.clone() for v in scales]
        self.n_iter = int(d["n_iter"])
        self.n_coarse_steps = int(d["n_coarse_steps"])
        self.n_coarse_declined = int(d["n_coarse_declined"])
        self.n_skipped = int(d["n_skipped"])
        self.skip_run = int(d.get("skip_run", 0))
        self.stop_reason = d["stop_reason"]
