"""RMTR — recursive multilevel trust region [GST08, KK22], as a short recursive cycle.

Notation: levels ``0 … L−1`` (coarsest first), at level ``l`` the objective ``h_l`` (the true loss
``f`` at the finest level, a first-order coherent coarse model below, see
:mod:`mldd.multilevel.coarse_models`), radius ``Δ_l``; ``P``, ``R``, ``Π`` the transfers of
:class:`~mldd.multilevel.problem.MultilevelProblem`; ``ρ = ared/pred``.

One cycle at level ``l`` from ``x`` (docs/algorithms.md §2.3)::

    cycle(l, h, x):
        x ← smooth(l, h, x, ν1 trials, stop after k1 successes)          # pre-smoothing
        if l > 0:                                                          # coarse correction
            g ← ∇h(x);  test ‖R g‖ ≥ κ_g‖g‖ and ‖R g‖ > ε, else skip
            x_c0 ← Π x;  h_c ← coherent model of f_{l−1} around x_c0;  Δ_{l−1} ← Δ_l
            repeat μ times (V: μ=1, W: μ=2):  x_c ← cycle(l−1, h_c, x_c)  # stays in the fine TR
            s ← P(x_c − x_c0);  ρ ← (h(x) − h(x+s)) / (h_c(x_c0) − h_c(x_c))
            accept x + s if ρ > ρ_tol;  update Δ_l by the ratio test
        x ← smooth(l, h, x, ν2 trials, stop after k2 successes)           # post-smoothing
    (the coarsest level only smooths: ν_c trials, stop after k_c successes)

Smoothing is the trust-region iteration of :class:`~mldd.solvers.TrustRegionSolver` (L-SR1 +
OBS by default) on every level. The finest level's memory and cached evaluation persist across
cycles, so that with one level RMTR *is* the trust-region method, iterate by iterate.

**Between visits** (three options, defaults chosen by measurement, see "Defaults" below):

* ``coarse_memory="keep"``: a coarse level's L-SR1 pairs persist across visits (only its cached
  evaluation is dropped, the model having changed). The additive model's curvature is the coarse
  network's own (``h_c − f_c`` is linear, so ``y = ∇h_c(x+s) − ∇h_c(x) = ∇f_c(x+s) − ∇f_c(x)``);
  [GST08] allows any model Hessian on a level. ``"reset"`` empties the memory at every visit.
* ``coarse_radius="keep"``: a visit starts from ``min(Δ̃_c, Δ_l)``, ``Δ̃_c`` the radius the
  coarse level ended its previous visit with; ``"fine"`` starts from ``Δ_l`` [GST08], which
  wastes coarse trials shrinking an inflated radius whenever ``Δ_l`` is large.
* ``correction_radius="separate"``: a level's coarse corrections have their own radius
  ``Δ_l^corr`` (the region the coarser levels must stay in), updated by the ratio test of the
  corrections; the level's smoother keeps its own ``Δ_l``. With ``"shared"`` [GST08] both use
  one radius, and then a coarse model that is accurate far away (ρ ≈ 1 on the boundary, ×2.5)
  and an L-SR1 model that is not (rejections, ×0.25) pull one radius back and forth: measured,
  most smoothing trials after a successful correction were rejections, and the coarse solve was
  capped by the smoother's small radius. Every accepted point still passed a ratio test with a
  step bounded by a radius that shrinks on failure, so the global-convergence argument of the
  smoother is untouched (the corrections only ever add accepted decrease).

**The coarse iterates stay inside the fine trust region.** With ``d(x_c) = P(x_c − x_c0)`` (the
fine displacement, measured in the fine norm), each coarse iteration uses the radius
``Δ_c = min(Δ̃_c, Δ_l − ‖d(x_c)‖)`` [GST08] (``Δ̃_c`` the coarse ratio test's own radius) and the
coarse local solve stops once ``‖d(x_c)‖ > (1 − 10⁻³)·Δ_l``. Because ``‖P s‖`` can exceed
``‖s‖`` (a depth prolongation duplicates blocks), a trial step that would still leave the fine
region — or, recursively, any finer level's region — is shortened to its boundary (the model's
predicted reduction recomputed for the shorter step). So the guarantee is exact, in the 2-norm
and the ∞-norm alike.

Choices of ours where the papers could not be checked (docs/algorithms.md marks them unverified):
the descent test compares ``‖R g‖`` with the fine gradient as in [GST08]
(``descent_reference="coarse"`` compares with ``∇f_c(x_c0)``, the literal reading of
docs/algorithms.md §2.3); a coarse level's first evaluation is not recomputed (``h_c(x_c0)``
is known in closed form and ``∇h_c(x_c0) = R g`` by coherence); and the coarse correction
``(s, ∇h(x+s) − ∇h(x))`` is offered to the finer level's quasi-Newton memory like any other
trial step of that level.

Defaults (measured in ``benchmarks/experiments/multilevel_rmtr.py``, equal fine-gradient
equivalents): no pre-smoothing and one post-smoothing trial (the fine evaluation at the start of
a cycle is the trial of the previous correction, so a cycle costs one or two fine evaluations),
10 coarse trials per visit without stopping at the first success, coarse memory and radius kept,
separate correction radius. docs/algorithms.md §2.3's GST08-style settings (3+3 smoothing trials
stopping after one success, 2 coarse trials stopping after one, memory reset, shared radius)
made each coarse visit one steepest-descent-like step and left RMTR 2–10× *behind* TrustRegion
at equal cost on digits; they remain available through the options.

Every evaluation that is NaN/Inf is a rejection (ρ = −∞): it shrinks the radius and never moves
the iterate. Coarse models that cannot be built (e.g. multiplicative with ``f_c0 ≈ 0``) skip the
coarse correction with a warning.

Cost: each level's evaluations are counted on its objective's counters;
:meth:`MultilevelProblem.cost` turns them into fine-gradient equivalents (``info["cost"]``).

Stochastic use [KK22]: the caller holds one mini-batch fixed during a cycle (the ``torch.optim``
shell evaluates one closure per ``step``), sets ``reuse_evaluations=False`` so the finest level
re-evaluates at the start of each cycle, and may attach a
:class:`~mldd.multilevel.batch_schedule.BatchSchedule` that sees each cycle's loss decrease.

References:
    [GST08] Gratton, Sartenaer, Toint. Recursive trust-region methods for multiscale nonlinear
    optimization. SIAM J. Optim. 19(1), 2008.
    [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
    networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from mldd.multilevel.batch_schedule import BatchSchedule
from mldd.multilevel.coarse_models import COARSE_MODELS
from mldd.multilevel.problem import (
    DESCENT_REFERENCES,
    CycleCounters,
    MultilevelProblem,
    descent_test,
    per_level_configs,
)
from mldd.multilevel.transfers import Transfer
from mldd.objective import MatVec, Objective
from mldd.solvers.base import (
    IterationResult,
    check_bools,
    check_choice,
    check_positive,
    evaluate_at,
    is_finite,
)
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver
from mldd.subproblem import SubproblemResult
from mldd.subproblem.base import boundary_taus, result, vec_norm
from mldd.validation import check_int

__all__ = ["COARSE_MEMORIES", "COARSE_RADII", "CORRECTION_RADII", "CYCLES", "LEVEL_OPTIONS",
           "RMTRConfig", "RMTRSolver"]

#: Cycle types and the number of coarse cycles per coarse correction.
CYCLES: dict[str, int] = {"V": 1, "W": 2}

#: What a coarse level's quasi-Newton memory does between visits.
COARSE_MEMORIES: tuple[str, ...] = ("reset", "keep")
#: Where a coarse level's radius starts a visit: the finer radius, or its own last one (capped).
COARSE_RADII: tuple[str, ...] = ("fine", "keep")
#: Whether a level's coarse corrections share its smoother's radius or keep their own.
CORRECTION_RADII: tuple[str, ...] = ("shared", "separate")

#: The options a hierarchy level may override (``Level.options``).
LEVEL_OPTIONS: tuple[str, ...] = ("pre_smoothing", "post_smoothing", "pre_successes",
                                  "post_successes", "coarse_iterations", "coarse_successes")

Monitor = Callable[[dict[str, Any]], None]


@dataclass
class RMTRConfig:
    """Options of :class:`RMTRSolver` (defaults: docs/algorithms.md §2.3 unless said otherwise).

    Attributes:
        trust_region: the trust-region options of every level (model ``hessian``, ``memory``,
            ``norm``, initial ``radius``, the ratio-test ``policy``; default L-SR1 memory 5 with
            OBS, 2-norm, Δ0 = 1). Its ``reuse_evaluations`` says whether the finest level may
            reuse, at the start of a cycle, the evaluation of the previous one (False for
            mini-batches that change between cycles).
        cycle: ``"V"`` (one coarse cycle per coarse correction) or ``"W"`` (two).
        pre_smoothing, post_smoothing: trust-region trials before/after the coarse correction
            (0 and 1; docs/algorithms.md §2.3 gives 3 stopping after one success, see the module's
            "Defaults").
        pre_successes, post_successes: stop a smoothing phase after this many accepted steps (1).
        coarse_iterations, coarse_successes: trials and successes on the coarsest level (10,
            10: the coarse level is the cheap one, so it works; docs/algorithms.md gives 2, 1).
        coarse_model: ``"additive"`` (default), ``"multiplicative"`` or ``"hybrid"``.
        hybrid_gamma: the hybrid model's weight of the additive part (0.5 [K23]).
        zeroth_order: the additive part's zeroth-order term (``None``: off for additive, on for
            hybrid; see :func:`~mldd.multilevel.coarse_models.build_coarse_model`).
        kappa_g: descent-test constant ``κ_g`` (1/8).
        restricted_grad_tol: ``ε``: no coarse correction when ``‖R g‖ ≤ ε`` (1e-9).
        descent_reference: compare ``‖R g‖`` with the fine gradient (``"fine"``, [GST08]) or with
            ``∇f_c(x_c0)`` (``"coarse"``); see :func:`~mldd.multilevel.problem.descent_test`.
        boundary_fraction: stop a coarse local solve once ``‖P(x_c − x_c0)‖ > (1 − this)·Δ_l``
            (1e-3).
        coarse_memory: ``"keep"`` (default) a coarse level's quasi-Newton pairs across visits, or
            ``"reset"`` them at every visit.
        coarse_radius: start a visit from the coarse level's own last radius capped by the finer
            one (``"keep"``, default) or from the finer radius (``"fine"``, [GST08]).
        correction_radius: ``"separate"`` (default): coarse corrections have their own radius
            at each level; ``"shared"``: they share the smoother's radius [GST08].
    """

    trust_region: TrustRegionConfig = field(default_factory=TrustRegionConfig)
    cycle: str = "V"
    pre_smoothing: int = 0
    post_smoothing: int = 1
    pre_successes: int = 1
    post_successes: int = 1
    coarse_iterations: int = 10
    coarse_successes: int = 10
    coarse_model: str = "additive"
    hybrid_gamma: float = 0.5
    zeroth_order: bool | None = None
    kappa_g: float = 0.125
    restricted_grad_tol: float = 1e-9
    descent_reference: str = "fine"
    boundary_fraction: float = 1e-3
    coarse_memory: str = "keep"
    coarse_radius: str = "keep"
    correction_radius: str = "separate"

    def __post_init__(self) -> None:
        check_bools(self)
        if isinstance(self.trust_region, dict):
            self.trust_region = TrustRegionConfig(**self.trust_region)
        check_choice("cycle", self.cycle, tuple(CYCLES))
        check_choice("coarse_model", self.coarse_model, COARSE_MODELS)
        check_choice("descent_reference", self.descent_reference, DESCENT_REFERENCES)
        check_choice("coarse_memory", self.coarse_memory, COARSE_MEMORIES)
        check_choice("coarse_radius", self.coarse_radius, COARSE_RADII)
        check_choice("correction_radius", self.correction_radius, CORRECTION_RADII)
        for name in ("pre_smoothing", "post_smoothing", "coarse_iterations"):
            v = getattr(self, name)
            check_int(name, v, 0)
        for name in ("pre_successes", "post_successes", "coarse_successes"):
            v = getattr(self, name)
            check_int(name, v)
        check_positive(self, ("kappa_g",))
        check_positive(self, ("restricted_grad_tol",), allow_zero=True)
        if not (isinstance(self.hybrid_gamma, int | float) and 0 <= self.hybrid_gamma <= 1):
            raise ValueError(f"hybrid_gamma must lie in [0, 1], got {self.hybrid_gamma!r}")
        if not (isinstance(self.boundary_fraction, int | float)
                and 0 <= self.boundary_fraction < 1):
            raise ValueError(
                f"boundary_fraction must lie in [0, 1), got {self.boundary_fraction!r}")


# -- the fine trust region a coarse level must respect ----------------------------------------
@dataclass
class FineRegion:
    """The finer levels' trust regions, seen from a coarse level.

    A coarse point ``x`` stands for the finer point ``center + P(x − x0)``, which must lie within
    ``radius`` of ``center`` (the finer iterate where the recursion started) and, recursively,
    inside the finer level's own region ``parent``.

    Attributes:
        transfer: between this coarse level and the finer one.
        x0: the coarse starting point ``x_c0``.
        center: the finer iterate ``x_l``.
        radius: the finer radius ``Δ_l``.
        norm: ``"l2"`` or ``"linf"``.
        parent: the finer level's own region (``None`` below the finest level).
    """

    transfer: Transfer
    x0: Tensor
    center: Tensor
    radius: float
    norm: str
    parent: FineRegion | None = None

    def displacement(self, x: Tensor) -> Tensor:
        """``P(x − x_c0)``: the finer-level step that ``x`` stands for."""
        return self.transfer.prolong(x - self.x0)

    def size(self, x: Tensor) -> float:
        """``‖P(x − x_c0)‖`` in the finer norm."""
        return vec_norm(self.displacement(x), self.norm)

    def max_step(self, x: Tensor, s: Tensor) -> float:
        """The largest ``t ∈ [0, 1]`` with ``x + t s`` inside this region and every finer one."""
        d = self.displacement(x)
        e = self.transfer.prolong(s)
        t = _exit_fraction(d, e, self.radius, self.norm)
        if self.parent is not None and t > 0.0:
            t = min(t, self.parent.max_step(self.center + d, e))
        return t


def _exit_fraction(d: Tensor, e: Tensor, radius: float, norm: str) -> float:
    """The largest ``t ∈ [0, 1]`` with ``‖d + t e‖ ≤ radius`` (``‖d‖ ≤ radius`` assumed)."""
    if vec_norm(d + e, norm) <= radius:
        return 1.0
    if vec_norm(d, norm) >= radius or not bool(torch.any(e != 0)):
        return 0.0
    _, tau = boundary_taus(d, e, radius, norm)
    t = min(max(tau, 0.0), 1.0)
    # The root is exact only up to rounding: back off until the point is provably inside.
    shrink = 1e-12
    while t > 0.0 and vec_norm(d + t * e, norm) > radius:
        t = t * (1.0 - shrink) if shrink < 1.0 else 0.0
        shrink *= 10.0
    return t


class LevelTrustRegion(TrustRegionSolver):
    """A :class:`TrustRegionSolver` whose steps are shortened to stay in a :class:`FineRegion`.

    Before each :meth:`iterate` the cycle sets :attr:`region` and :attr:`x_current`; a
    subproblem step ``s`` leaving the region becomes ``t·s`` (``t`` from
    :meth:`FineRegion.max_step`) with the model decrease ``−(t gᵀs + t²·½ sᵀBs)``. Without a
    region it is exactly the parent class.
    """

    def __init__(self, config: TrustRegionConfig) -> None:
        super().__init__(config)
        self.region: FineRegion | None = None
        self.x_current: Tensor | None = None
        self.last_step: Tensor | None = None

    def solve_subproblem(self, g: Tensor, matvec: MatVec, radius: float) -> SubproblemResult:
        """The trust-region step, shortened to the fine region when needed."""
        sub = super().solve_subproblem(g, matvec, radius)
        if self.region is not None and self.x_current is not None:
            t = self.region.max_step(self.x_current, sub.step)
            if t < 1.0:
                gs = float(torch.dot(g, sub.step))
                # m(t s) = t gᵀs + t²·½ sᵀBs, and ½ sᵀBs = m(s) − gᵀs.
                model = t * gs + t * t * (sub.model_value - gs)
                sub = result(sub.step * t, model, True, sub.iterations)
        self.last_step = sub.step
        return sub


# -- the cycle ----------------------------------------------------------------------------------
@dataclass
class _CycleLog:
    """What the finest level did during one cycle."""

    f_start: float | None = None
    loss: float = math.nan
    grad_norm: float = math.nan
    moved: bool = False
    coarse_accepted: int = 0
    coarse_rejected: int = 0
    coarse_skipped: int = 0
    rho_coarse: float = math.nan
    skip_reasons: list[str] = field(default_factory=list)
    #: ``(level, accepted)`` of every coarse correction of the cycle, at any level
    corrections: list[tuple[int, bool]] = field(default_factory=list)


class RMTRSolver(CycleCounters):
    """RMTR cycles on a :class:`~mldd.multilevel.problem.MultilevelProblem` (module docstring).

    Args:
        config: the options.
        n_levels: the number of levels ``L`` of the problems :meth:`iterate` will get.
        batch_schedule: optional mini-batch size schedule, updated after every cycle.
        level_options: optional per-level overrides (coarsest first) of the smoothing counts
            :data:`LEVEL_OPTIONS`, e.g. the hierarchy's ``[level.options for level in h]``.

    Attributes:
        solvers: one :class:`LevelTrustRegion` per level (coarsest first); ``solvers[-1].radius``
            is the fine radius ``Δ``.
        monitor: optional callable receiving event dicts (``"iterate"``, ``"descend"``,
            ``"correction"``) — for instrumentation and tests.
    """

    label = "RMTR"

    def __init__(self, config: RMTRConfig, n_levels: int,
                 batch_schedule: BatchSchedule | None = None,
                 level_options: Sequence[Mapping[str, Any]] | None = None) -> None:
        check_int("n_levels", n_levels)
        self.config = config
        self.n_levels = n_levels
        self.level_configs = per_level_configs(config, n_levels, level_options, LEVEL_OPTIONS,
                                               "RMTR")
        # Coarse levels always reuse evaluations: a cycle holds its batch fixed.
        level_cfg = replace(config.trust_region, reuse_evaluations=True)
        self.solvers = [LevelTrustRegion(level_cfg) for _ in range(n_levels)]
        self.batch_schedule = batch_schedule
        self.monitor: Monitor | None = None
        self.n_cycles = 0
        self.n_coarse_accepted = 0
        self.n_coarse_rejected = 0
        self.n_coarse_skipped = 0
        self.correction_radii = [float(config.trust_region.radius)] * n_levels
        self.stop_reason: str | None = None
        self._log = _CycleLog()
        self._problem: MultilevelProblem | None = None

    @property
    def radius(self) -> float:
        """The fine trust-region radius Δ."""
        return self.solvers[-1].radius

    # -- public ---------------------------------------------------------------------------
    def iterate(self, problem: MultilevelProblem, x: Tensor) -> IterationResult:
        """One cycle from ``x`` at the finest level; returns the new iterate and an info dict."""
        if problem.n_levels != self.n_levels:
            raise ValueError(f"this RMTR solver was built for {self.n_levels} levels, the "
                             f"problem has {problem.n_levels}")
        fine = self.solvers[-1]
        if not self.config.trust_region.reuse_evaluations:
            fine.cache.clear()
        self._problem = problem
        self._log = log = _CycleLog()
        L = self.n_levels
        try:
            x_new, _ = self._cycle(L - 1, problem.fine, x, None)
        finally:
            self._problem = None
        if log.f_start is None:  # nothing ran (all smoothing counts 0 on one level)
            f, g = evaluate_at(problem.fine, fine.cache, x, True)
            log.f_start, log.loss = f, f
            log.grad_norm = float(torch.linalg.vector_norm(g))
        self.n_cycles += 1
        self.stop_reason = fine.stop_reason
        if self.batch_schedule is not None:
            self.batch_schedule.update(log.f_start, log.loss)
        info = self._info(problem, log)
        return IterationResult(x_new, log.f_start, info)

    # -- the recursion --------------------------------------------------------------------
    def _cycle(self, level: int, h: Objective, x: Tensor,
               region: FineRegion | None) -> tuple[Tensor, bool]:
        """One cycle at ``level`` on ``h``; returns the iterate and whether the local solve must
        stop (region nearly full, convergence, or breakdown)."""
        cfg = self.level_configs[level]
        if level == 0 and self.n_levels > 1:
            return self._smooth(level, h, x, region, cfg.coarse_iterations, cfg.coarse_successes)
        x, stop = self._smooth(level, h, x, region, cfg.pre_smoothing, cfg.pre_successes)
        if level > 0 and not stop:
            x, stop = self._coarse_correction(level, h, x, region)
        if not stop:
            x, stop = self._smooth(level, h, x, region, cfg.post_smoothing, cfg.post_successes)
        return x, stop

    def _nearly_full(self, region: FineRegion | None, x: Tensor) -> bool:
        if region is None:
            return False
        return region.size(x) > (1.0 - self.config.boundary_fraction) * region.radius

    def _smooth(self, level: int, h: Objective, x: Tensor, region: FineRegion | None,
                trials: int, successes: int) -> tuple[Tensor, bool]:
        solver = self.solvers[level]
        accepted = 0
        for _ in range(trials):
            if region is not None:
                margin = region.radius - region.size(x)
                if margin <= self.config.boundary_fraction * region.radius:
                    return x, True
                solver.radius = min(solver.radius, margin)
            solver.region, solver.x_current = region, x
            res = solver.iterate(h, x)
            info = res.info
            if self.monitor is not None:
                step = solver.last_step
                self._emit(event="iterate", level=level, x=res.x, x_before=x,
                           trial=None if step is None else x + step, accepted=info["accepted"],
                           radius=info.get("radius"), loss=info["loss"])
            solver.last_step = None
            if level == self.n_levels - 1:
                self._log_fine(res.f_start, info["loss"], info["grad_norm"], info["accepted"])
            x = res.x
            accepted += int(bool(info["accepted"]))
            if solver.stop_reason is not None or self._nearly_full(region, x):
                return x, True
            if accepted >= successes:
                break
        return x, False

    def _log_fine(self, f_start: float, loss: float, grad_norm: float, moved: bool) -> None:
        log = self._log
        if log.f_start is None:
            log.f_start = f_start
        log.loss, log.grad_norm = loss, grad_norm
        log.moved = log.moved or bool(moved)

    def _skip(self, level: int, reason: str) -> None:
        self.n_coarse_skipped += 1
        if level == self.n_levels - 1:
            self._log.coarse_skipped += 1
            self._log.skip_reasons.append(reason)

    def _coarse_correction(self, level: int, h: Objective, x: Tensor,
                           region: FineRegion | None) -> tuple[Tensor, bool]:
        cfg = self.config
        problem = self._problem
        assert problem is not None
        solver = self.solvers[level]
        f, g = evaluate_at(h, solver.cache, x, True)
        if level == self.n_levels - 1:
            self._log_fine(f, f, float(torch.linalg.vector_norm(g)), False)
        if not is_finite(f, g):
            # Without pre-smoothing this is the level's first evaluation: report it as the
            # trust-region iteration would.
            solver.cache.clear()
            solver.stop_reason = ("the loss or gradient at the current parameters is NaN/Inf; "
                                  "nothing to step from")
            return x, True
        transfer = problem.transfers[level - 1]
        g_r = transfer.restrict(g)
        kappa, tol = cfg.kappa_g, cfg.restricted_grad_tol
        if cfg.descent_reference == "fine" and not descent_test(g, g_r, kappa_g=kappa, tol=tol):
            self._skip(level, "descent test")
            return x, False
        x_c0 = transfer.inject(x)
        h_c = self._build_model(level, problem.objectives[level - 1], x_c0, g_r, f)
        if h_c is None or not is_finite(h_c.f0, h_c.g0):
            self._skip(level, "coarse model unavailable")
            return x, False
        if cfg.descent_reference == "coarse" and not descent_test(
                g, g_r, kappa_g=kappa, tol=tol, g_coarse=h_c.g0, reference="coarse"):
            self._skip(level, "descent test")
            return x, False

        separate = cfg.correction_radius == "separate"
        radius = self.correction_radii[level] if separate else solver.radius
        if region is not None:
            margin = region.radius - region.size(x)
            if margin <= cfg.boundary_fraction * region.radius:
                return x, True
            radius = min(radius, margin)
        child = FineRegion(transfer, x_c0, x, radius, cfg.trust_region.norm, region)
        coarse = self.solvers[level - 1]
        start_radius = radius if cfg.coarse_radius == "fine" else min(coarse.radius, radius)
        if cfg.coarse_memory == "reset":
            coarse.reset(radius=start_radius)
        else:
            # The pairs stay meaningful across visits: an additive model's curvature is the
            # coarse network's own (the τ-correction is linear), so only the cache is stale.
            coarse.cache.clear()
            coarse.stop_reason = None
            coarse.radius = start_radius
        # ∇h_c(x_c0) = R g by coherence and h_c(x_c0) is known in closed form: no evaluation.
        coarse.cache.put(x_c0, h_c.value_at_start, g_r)
        self._emit(event="descend", level=level - 1, radius=radius, x0=x_c0, center=x,
                   transfer=transfer)
        x_c = x_c0
        for _ in range(CYCLES[cfg.cycle]):
            x_c, stop = self._cycle(level - 1, h_c, x_c, child)
            if stop:
                break
        if torch.equal(x_c, x_c0):
            self._skip(level, "no coarse progress")
            return x, False
        f_c, _ = evaluate_at(h_c, coarse.cache, x_c, True)
        pred = h_c.value_at_start - f_c
        s = transfer.prolong(x_c - x_c0)
        x_trial = x + s
        ft, g_trial = h.value_and_grad(x_trial)
        f_trial = float(ft)
        usable = is_finite(f_trial, g_trial)  # a NaN gradient fails the trial like a NaN loss
        decision = cfg.trust_region.policy.decide(radius, f - f_trial if usable else math.nan,
                                                  pred, self._nearly_full(child, x_c))
        if solver.memory is not None and usable:
            solver.memory.update(s, g_trial - g)
        if separate:
            self.correction_radii[level] = decision.radius
        else:
            solver.radius = decision.radius
        if decision.accepted:
            self.n_coarse_accepted += 1
            solver.cache.put(x_trial, f_trial, g_trial)
            x_out = x_trial
        else:
            self.n_coarse_rejected += 1
            x_out = x
        self._log.corrections.append((level, decision.accepted))
        if level == self.n_levels - 1:
            log = self._log
            log.rho_coarse = decision.rho
            if decision.accepted:
                log.coarse_accepted += 1
                self._log_fine(f, f_trial, float(torch.linalg.vector_norm(g_trial)), True)
            else:
                log.coarse_rejected += 1
        self._emit(event="correction", level=level, x=x_out, trial=x_trial, x_before=x,
                   rho=decision.rho, accepted=decision.accepted, predicted_reduction=pred,
                   actual_reduction=f - f_trial, radius=decision.radius)
        return x_out, self._nearly_full(region, x_out)

    # -- reporting --------------------------------------------------------------------------
    def _emit(self, **event: Any) -> None:
        if self.monitor is not None:
            self.monitor(event)

    def _info(self, problem: MultilevelProblem, log: _CycleLog) -> dict[str, Any]:
        counters = problem.counters()
        fine = counters[-1]
        info: dict[str, Any] = {
            "loss": log.loss,
            "loss_start": log.f_start,
            "accepted": log.moved,
            "grad_norm": log.grad_norm,
            "radius": self.radius,
            "cycle": self.n_cycles,
            "coarse_accepted": log.coarse_accepted,
            "coarse_rejected": log.coarse_rejected,
            "coarse_skipped": log.coarse_skipped,
            "rho_coarse": log.rho_coarse,
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
        if log.skip_reasons:
            info["skip_reasons"] = list(log.skip_reasons)
        if log.corrections:
            info["corrections"] = list(log.corrections)
        if self.batch_schedule is not None:
            info["batch_size"] = self.batch_schedule.batch_size
        return info

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """All state: every level's solver (radius, memory, cache), counters, schedule."""
        return {
            "config": asdict(self.config),
            "solvers": [s.state_dict() for s in self.solvers],
            "correction_radii": list(self.correction_radii),
            **self._counters_state(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (the solver must have the same number of levels)."""
        self._check_levels(d)
        for s, sd in zip(self.solvers, d["solvers"], strict=True):
            s.load_state_dict(sd)
        # checkpoints written before the option existed: corrections shared the fine radius
        radii = d.get("correction_radii") or [s.radius for s in self.solvers]
        self.correction_radii = [float(r) for r in radii]
        self._load_counters_state(d)
