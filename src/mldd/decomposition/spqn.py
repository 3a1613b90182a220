"""SPQN — Schwarz-preconditioned quasi-Newton (ASPQN, MSPQN, two-level) on an Objective.

Right-preconditioned L-BFGS [KKKK24]. One outer iteration from ``x_k``
(docs/algorithms.md §3.2–3.3):

0. *(two-level only)* coarse step: ``k_c`` L-BFGS iterations on the coarse entries
   (:mod:`mldd.decomposition.two_level`).
1. Local phase: for each subdomain ``s``, ``k_s`` L-BFGS iterations (memory 3, strong Wolfe) on
   ``f`` restricted to ``S_s`` (others frozen); the memory is restarted every outer iteration
   [KKKK24], or kept per subdomain (``keep_local_memory=True``, mldd's default).

   * additive (ASPQN): every subdomain starts from ``x_k`` (in parallel across ranks); the
     corrections are combined through the partition-of-unity weights and one of
     :mod:`mldd.decomposition.combine` picks ``x_{k+½} = x_k + D a``;
   * multiplicative (MSPQN): a Gauss–Seidel sweep, each subdomain starting where the previous
     one ended; ``x_{k+½}`` is the end of the sweep (serial only);
   * hybrid (ASPQN with ``local_sweep=True``): the subdomains are dealt into ``G`` groups, one
     per process; within a group they are swept multiplicatively from ``x_k`` (subdomain order),
     across groups the group corrections are combined additively as above. ``G = 1`` is the
     multiplicative sweep (then ``x_{k+½}`` is the sweep's end point, exactly MSPQN); ``G = N``
     is plain ASPQN. In one process ``groups=G`` runs the ``G`` groups one after another, with
     the iterates of a ``G``-process run (multiplicative inside a group, additive between
     groups, like the hybrid Schwarz preconditioners of linear domain decomposition).
2. Global step: one L-BFGS step at ``x_{k+½}`` (memory 3 [KKKK24], 50 by default here; strong
   Wolfe) whose memory holds only
   the pairs ``s = x_{k+1} − x_{k+½}``, ``y = ∇f(x_{k+1}) − ∇f(x_{k+½})``. With momentum
   ``β``: ``v ← β v + (1−β) p``, ``p = −H∇f(x_{k+½})``, and the line search runs along ``v`` (the
   paper's ``v ← (1−μ)v + μp`` with ``β = 1 − μ``; the group's code uses ``μ = 0.9``, so
   ``β = 0.1`` is the default; ``β = 0`` is plain L-BFGS). ``v`` falls back to ``p`` when it is
   not a descent direction. With ``global_iters = j > 1`` (mldd's default is 20) the global L-BFGS
   takes ``j`` such steps, each adding its pair to the global memory, before the next local
   phase: the Schwarz sweep then acts as a periodic nonlinear preconditioning of a long-memory
   L-BFGS run.
   With ``globalization="trust_region"`` each global step is instead one trust-region
   iteration on the L-BFGS model of the same memory (:class:`GlobalTrustRegionStep`): the
   trial ``s`` minimises ``gᵀs + ½ sᵀBs`` within ``‖s‖ ≤ Δ`` (Steihaug–Toint CG), is accepted
   when ``ρ = ared/pred > ρ_tol``, and ``Δ`` is updated by the ratio test and kept between
   outer iterations. The local phase then preconditions a trust-region L-BFGS run, the
   strongest single-level configuration measured on the PINNs here (README, "Benchmarks").

Cost accounting: global evaluations (the combination, the global step, the first evaluation) are
counted on :attr:`SPQNSolver.counters`; subdomain evaluations on
:attr:`SPQNSolver.local_counters`; coarse evaluations on :attr:`SPQNSolver.coarse_counters`;
``info`` reports each and their totals (:meth:`SPQNSolver.cost`). In the distributed setting the
local counters are this rank's, while ``local_grad_evals`` sums the local work of all ranks (one
all-reduce per outer iteration; ``local_grad_evals_max_rank`` is the busiest rank's share), as
APTS reports it. ``grad_evals`` is in fine-gradient equivalents
(docs/algorithms.md §1.5): global and coarse gradients count 1, a local gradient counts the
``grad_cost`` attribute of the local objective that computed it (``local_grad_evals`` sums
them), 1 when the objective has none. The default local objective
(:class:`~mldd.decomposition.local.ParamsSubspaceObjective`) has none: it still runs the whole
forward pass, and 1 is an upper bound since its backward pass stops at the subdomain's layers.
Cheaper local objectives plug in through ``local_objective``, e.g. the PINN layer-block
objectives of :mod:`mldd.problems.pinn.prefix`, which reuse the outputs of the frozen layers
before the block and report ``grad_cost = (L − a)/L`` for a block starting at layer ``a`` of
``L`` (an upper bound of the measured cost).

Parallel execution: local work runs inside ``executor.guarded`` (a failure on any rank raises on
all), the corrections are summed with ``executor.all_reduce_sum``, and every later decision uses
the all-reduced corrections and global evaluations that every rank computes identically (same
inputs, deterministic kernels), so all ranks take the same branch [KKKK24 §4].

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. Enhancing training of physics-informed
    neural networks using domain-decomposition based preconditioning strategies. SIAM J. Sci.
    Comput. 46(5), 2024. arXiv:2306.17648.
    [LKK24] Lee, Kopaničáková, Karniadakis. Two-level overlapping additive Schwarz preconditioner
    for training scientific machine learning applications. arXiv:2406.10997.
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Alg. 7.4–7.5.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import Tensor

from mldd.decomposition import combine as comb
from mldd.decomposition.executors import (
    Executor,
    SerialExecutor,
    owned_balanced,
    owned_round_robin,
)
from mldd.decomposition.local import LocalSolve, lbfgs_iterations
from mldd.decomposition.local import local_objective as default_local_objective
from mldd.decomposition.subdomains import Decomposition
from mldd.decomposition.two_level import as_index, coarse_step
from mldd.globalization.line_search import strong_wolfe
from mldd.linalg.flat import all_finite, max_abs
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
from mldd.solvers.lbfgs import LBFGSConfig, LBFGSSolver
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver
from mldd.validation import check_int

VARIANTS = ("additive", "multiplicative")
GLOBALIZATIONS = ("line_search", "trust_region")
OWNERSHIPS = ("balanced", "round_robin")
T = TypeVar("T")

#: ``(objective, s, x_base, counters) -> Objective`` over the entries of subdomain ``s``.
LocalObjectiveFactory = Callable[[Objective, int, Tensor, EvalCounters], Objective]


@runtime_checkable
class LocalObjectiveProvider(Protocol):
    """Builds the :data:`LocalObjectiveFactory` of a decomposition (for optimizers that create
    their decomposition themselves, e.g. :class:`mldd.problems.pinn.prefix.PINNLocalObjectives`)."""

    def for_decomposition(self, decomposition: Decomposition) -> LocalObjectiveFactory: ...


@dataclass
class SPQNConfig:
    """Options of :class:`SPQNSolver`.

    Defaults: mldd's tuned settings (:data:`PAPER_SETTINGS` holds the paper's [KKKK24]). Four
    options differ from the paper, chosen by side-by-side runs on Burgers (8×20, float64, 1
    thread; ``benchmarks/experiments/schwarz_sweep.py``): ``local_iters=3`` (paper 50),
    ``keep_local_memory=True`` (paper: restart), ``memory=50`` (paper 3) and
    ``global_iters=20`` (paper 1). With 2,000 points and 120 s, MSPQN ended at a relative L2
    error of 5.4e-3 with them against about 2e-1 with ``local_iters=10`` and the paper's other
    settings (torch L-BFGS: 3.7e-2 with history 3, 7.4e-2 with history 50); each of the four
    changes helped in 60 s runs (``k_s`` 10 → 3 with memory 50: 2.2e-1 → 7.5e-2; memory 3 → 50
    with ``k_s = 3``: 1.2e-1 → 7.5e-2; kept local memory: 7.5e-2 → 4.3e-2 (memory 10 and
    kept: 5.3e-2); then ``global_iters`` 5 / 20: 2.7e-2 / 2.1e-2).

    Attributes:
        variant: ``"additive"`` (ASPQN) or ``"multiplicative"`` (MSPQN).
        local_iters: ``k_s``, L-BFGS iterations per subdomain and outer iteration (default 3;
            50 [KKKK24], 10 for diffusion–advection there).
        local_memory: memory of the local L-BFGS (3 [KKKK24]).
        keep_local_memory: keep each subdomain's L-BFGS memory between outer iterations
            (default True) instead of the paper's restart (False): with few local iterations
            a restarted memory spends the first one on a short steepest-descent step.
        combine: additive only: ``"line_search"`` (paper), ``"per_subdomain"`` or ``"subspace"``
            (:mod:`mldd.decomposition.combine`).
        subspace_iters: BFGS iterations of the ``"subspace"`` combination (default 1: the model's
            Newton step with a line search).
        memory: memory of the global L-BFGS (default 50; 3 [KKKK24]).
        momentum: ``β`` in ``v ← βv + (1−β)p`` (default 0.1 with the line search, i.e. the
            group's ``μ = 0.9``; 0 disables momentum). The trust-region global step has none
            (``None`` resolves to 0 there; a positive value is an error).
        global_step: take the global L-BFGS step (default True; False leaves only the
            preconditioner, for study).
        global_iters: global L-BFGS steps per outer iteration (default 20; 1 [KKKK24]):
            ``j > 1`` runs ``j`` L-BFGS iterations, all adding pairs to the global memory,
            between two local phases; it stops early when a line search fails.
        globalization: how the global step is globalised: ``"line_search"`` (default; strong
            Wolfe, the paper's) or ``"trust_region"`` (one trust-region iteration per global
            step on the L-BFGS model of the global memory, Steihaug–Toint CG subproblem, the
            ratio test of :class:`~mldd.globalization.TrustRegionPolicy` with its defaults; the
            radius persists across outer iterations; a rejected trial shrinks it and the global
            phase goes on with its next step; it stops early when the radius reaches its
            minimum). Single-level, ``TrustRegion(hessian="lbfgs", memory=50)`` is the
            strongest PINN configuration measured here; inside MSPQN, back to back with the line
            search at 240 s, it ended lower in all four pairs measured (Burgers 1.46× and 1.12×,
            Klein–Gordon 1.05× and 1.35×; README).
        radius: initial radius of the trust-region global step (default 1).
        coarse_iters: two-level only: L-BFGS iterations of the coarse step (default 3,
            **(unverified)**: [LKK24] says "a few").
        c1, c2, max_ls: strong-Wolfe constants and evaluation budget of every line search.
        tolerance_grad: stop when ``max|∇f| ≤`` this (1e-7, as ``LBFGSConfig``).
        tolerance_change: stop when the outer iteration changes the loss by less than this
            (1e-9); also the line searches' bracket tolerance.
        local_tolerance_grad, local_tolerance_change: the same for the local solves.
        curvature_eps: pair-skipping threshold of every L-BFGS memory (1e-10).
        reuse_evaluations: reuse the loss/gradient at ``x_{k+1}`` found by the global line
            search at the next outer iteration (True; False for closures that change the batch).
        ownership: additive, several processes: which rank solves which subdomain.
            ``"balanced"`` (default): by estimated cost of a local gradient, longest first to the
            least-loaded rank (:func:`~mldd.decomposition.executors.owned_balanced`);
            ``"round_robin"``: the executor's own rule (``executor.owns``).
        local_sweep: additive only: sweep each group's subdomains multiplicatively (the hybrid
            variant of the module docstring; default False).
        groups: with ``local_sweep``: the number of groups ``G`` (default: the executor's
            world size; several processes need ``G`` equal to it). Subdomains are dealt to
            groups by ``ownership``.
    """

    variant: str = "additive"
    local_iters: int = 3
    local_memory: int = 3
    keep_local_memory: bool = True
    combine: str = "line_search"
    subspace_iters: int = 1
    memory: int = 50
    momentum: float | None = None
    global_step: bool = True
    global_iters: int = 20
    globalization: str = "line_search"
    radius: float = 1.0
    coarse_iters: int = 3
    c1: float = 1e-4
    c2: float = 0.9
    max_ls: int = 25
    tolerance_grad: float = 1e-7
    tolerance_change: float = 1e-9
    local_tolerance_grad: float = 1e-7
    local_tolerance_change: float = 1e-9
    curvature_eps: float = 1e-10
    reuse_evaluations: bool = True
    ownership: str = "balanced"
    local_sweep: bool = False
    groups: int | None = None

    def __post_init__(self) -> None:
        check_bools(self)
        check_choice("variant", self.variant, VARIANTS)
        check_choice("globalization", self.globalization, GLOBALIZATIONS)
        check_positive(self, ("radius",))
        if (self.globalization == "trust_region" and self.momentum is not None
                and self.momentum != 0):
            raise ValueError(f"momentum={self.momentum!r} applies to the line-search global step; "
                             "the trust-region global step (globalization='trust_region') has no "
                             "momentum: leave momentum unset or 0")
        if not isinstance(self.local_sweep, bool):
            raise ValueError(f"local_sweep must be True or False, got {self.local_sweep!r}")
        if self.local_sweep and self.variant != "additive":
            raise ValueError("local_sweep applies to the additive variant (ASPQN); the "
                             "multiplicative variant already sweeps every subdomain")
        if self.groups is not None:
            check_int("groups", self.groups, allow_none=True)
            if not self.local_sweep:
                raise ValueError("groups applies with local_sweep=True only")
        check_choice("ownership", self.ownership, OWNERSHIPS)
        check_choice("combine", self.combine, comb.COMBINES)
        for name in ("local_iters", "local_memory", "subspace_iters", "memory", "coarse_iters",
                     "max_ls", "global_iters"):
            v = getattr(self, name)
            check_int(name, v)
        check_positive(self, ("tolerance_grad", "tolerance_change", "local_tolerance_grad",
                              "local_tolerance_change", "curvature_eps"), allow_zero=True)
        if self.momentum is not None and not (
                isinstance(self.momentum, int | float) and 0.0 <= self.momentum < 1.0):
            raise ValueError(f"momentum (β, the weight of the previous direction) must be in "
                             f"[0, 1), got {self.momentum!r}")
        if not 0.0 < self.c1 < self.c2 < 1.0:
            raise ValueError(f"need 0 < c1 < c2 < 1, got c1={self.c1}, c2={self.c2}")

    @classmethod
    def paper(cls, **overrides: Any) -> SPQNConfig:
        """The settings of [KKKK24] (:data:`PAPER_SETTINGS`), updated with ``overrides``."""
        return cls(**{**PAPER_SETTINGS, **overrides})

    def local_config(self) -> LBFGSConfig:
        """The :class:`LBFGSConfig` of the subdomain and coarse solves."""
        return LBFGSConfig(memory=self.local_memory, c1=self.c1, c2=self.c2, max_ls=self.max_ls,
                           tolerance_grad=self.local_tolerance_grad,
                           tolerance_change=self.local_tolerance_change,
                           curvature_eps=self.curvature_eps)

    @property
    def beta(self) -> float:
        """The momentum weight in use: ``momentum``, or its default (0.1 with the line search,
        0 with the trust region) when unset."""
        if self.momentum is not None:
            return float(self.momentum)
        return 0.1 if self.globalization == "line_search" else 0.0

    def line_search_options(self) -> comb.LineSearchOptions:
        """The strong-Wolfe options of the combination and global line searches."""
        return comb.LineSearchOptions(self.c1, self.c2, self.max_ls, self.tolerance_change)


#: The options of [KKKK24] that differ from :class:`SPQNConfig`'s defaults: ``k_s = 50``
#: restarted local L-BFGS(3) solves, one global L-BFGS(3) step per outer iteration.
PAPER_SETTINGS: dict[str, Any] = {"local_iters": 50, "keep_local_memory": False, "memory": 3,
                                  "global_iters": 1}


class GlobalStep:
    """One L-BFGS step with optional momentum at ``x_{k+½}`` (step 2 of the module docstring).

    With ``momentum = 0`` this is exactly one :class:`~mldd.solvers.LBFGSSolver` iteration whose
    memory holds the global pairs only: same direction, same first-trial scaling
    ``t = min(1, 1/‖g‖₁)`` after a reset, same reset-on-failure rule.
    """

    def __init__(self, memory: int, momentum: float, curvature_eps: float) -> None:
        self.memory = LBFGSMemory(memory, curvature_eps=curvature_eps)
        self.momentum = float(momentum)
        self.v: Tensor | None = None
        self.fresh = True
        self.n_resets = 0

    def reset(self) -> None:
        """Forget the memory and the momentum."""
        self.memory.reset()
        self.v = None
        self.fresh = True

    def step(self, evaluate: comb.Evaluate, x: Tensor, f: float, g: Tensor,
             opts: comb.LineSearchOptions) -> tuple[Tensor, float, Tensor, dict[str, Any]]:
        """The step from ``x`` (loss ``f``, gradient ``g``); returns ``(x₊, f₊, g₊, info)``.

        On a failed line search the memory is reset and ``x`` is returned unchanged; ``info``
        then has ``global_stop=True`` (end the global phase) and ``global_failed`` (the
        failure was from steepest descent: the global step cannot decrease the loss).
        """
        p = self.memory.apply_inverse(g, negate=True) if len(self.memory) else -g
        if not float(g @ p) < 0.0 or not all_finite(p):
            self.reset()
            p = -g
        d = p
        if self.momentum > 0.0 and self.v is not None:
            mixed = self.momentum * self.v + (1.0 - self.momentum) * p
            if float(g @ mixed) < 0.0 and all_finite(mixed):
                d = mixed
        dphi0 = float(g @ d)
        t0 = min(1.0, 1.0 / float(g.abs().sum())) if self.fresh else 1.0

        def along(t: float) -> tuple[float, Tensor]:
            fv, gv = evaluate(torch.add(x, d, alpha=t))
            return float(fv), gv

        ls = strong_wolfe(along, d, f, dphi0, t0, c1=opts.c1, c2=opts.c2,
                          max_evals=opts.max_ls, tolerance_change=opts.tolerance_change)
        info: dict[str, Any] = {"step_length": ls.t, "line_search_evals": ls.n_evals,
                                "line_search": ls.reason}
        if ls.t <= 0.0 or ls.g is None or not ls.sufficient_decrease:
            was_fresh = self.fresh and not len(self.memory)
            self.reset()
            self.n_resets += 1
            info.update(step_length=0.0, global_stop=True, global_failed=was_fresh)
            return x, f, g, info
        x_new = torch.add(x, d, alpha=ls.t)
        self.memory.update(ls.t * d, ls.g - g)
        self.fresh = False
        self.v = d
        info.update(global_stop=False, global_failed=False)
        return x_new, ls.f, ls.g, info

    def state_dict(self) -> dict[str, Any]:
        """Memory, momentum direction and flags."""
        return {"memory": self.memory.state_dict(),
                "v": None if self.v is None else self.v.clone(),
                "fresh": self.fresh, "n_resets": self.n_resets}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if "radius" in d:
            raise ValueError("this state holds a trust-region global step "
                             "(globalization='trust_region'); the optimizer's global step is a "
                             "line search")
        self.memory.load_state_dict(d["memory"])
        self.v = None if d["v"] is None else d["v"].clone()
        self.fresh = bool(d["fresh"])
        self.n_resets = int(d["n_resets"])


class GlobalTrustRegionStep:
    """One trust-region iteration on the global L-BFGS model at ``x_{k+½}``.

    ``globalization="trust_region"``: the model ``m(s) = f + gᵀs + ½ sᵀBs`` with ``B`` the
    compact L-BFGS matrix of the global pairs, the step by Steihaug–Toint CG within ``‖s‖ ≤ Δ``,
    the ratio test and radius update of :class:`~mldd.globalization.TrustRegionPolicy`
    (docs/algorithms.md §1.3), the pair ``(s, ∇f(x+s) − ∇f(x))`` offered to the memory after every
    trial. It is exactly one :meth:`~mldd.solvers.TrustRegionSolver.step_from` of a
    ``TrustRegion(hessian="lbfgs", subproblem="cg")`` solver that persists across outer
    iterations (radius and memory): the global phase continues that solver's run from wherever
    the local phase left the iterate (tested bitwise against it with one subdomain).
    """

    def __init__(self, memory: int, curvature_eps: float, radius: float,
                 counters: EvalCounters) -> None:
        self.solver = TrustRegionSolver(
            TrustRegionConfig(hessian="lbfgs", memory=memory, subproblem="cg", radius=radius),
            counters=counters)
        self.solver.memory = self.memory = LBFGSMemory(memory, curvature_eps=curvature_eps)

    def reset(self) -> None:
        """Forget the memory and restore the initial radius."""
        self.solver.reset(radius=self.solver.config.radius)

    def step(self, evaluate: comb.Evaluate, x: Tensor, f: float, g: Tensor,
             opts: comb.LineSearchOptions) -> tuple[Tensor, float, Tensor, dict[str, Any]]:
        """The trial from ``x`` (loss ``f``, gradient ``g``); returns ``(x₊, f₊, g₊, info)``
        with ``x₊ = x`` when rejected. ``opts`` is unused (the signature of
        :meth:`GlobalStep.step`). ``info["global_stop"]`` is set once the radius reaches its
        minimum."""
        del opts
        res, f_new, g_new = self.solver.step_from(evaluate, x, f, g)
        ri = res.info
        stop = ri["stop_reason"] is not None
        info: dict[str, Any] = {
            "step_length": 1.0 if ri["accepted"] else 0.0, "radius": ri["radius_next"],
            "rho": ri["rho"], "global_rejected": self.solver.n_rejected,
            "global_stop": stop, "global_failed": stop}
        return res.x, f_new, g_new, info

    def state_dict(self) -> dict[str, Any]:
        """Radius, memory and the trial counts."""
        sv = self.solver
        return {"memory": self.memory.state_dict(), "radius": sv.radius, "n_iter": sv.n_iter,
                "n_accepted": sv.n_accepted, "n_rejected": sv.n_rejected}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        if "radius" not in d:
            raise ValueError("this state holds a line-search global step; the optimizer's "
                             "global step is a trust region (globalization='trust_region')")
        sv = self.solver
        self.memory.load_state_dict(d["memory"])
        sv.radius = float(d["radius"])
        sv.n_iter, sv.n_accepted = int(d["n_iter"]), int(d["n_accepted"])
        sv.n_rejected = int(d["n_rejected"])


def _call(fn: Callable[[], T]) -> T:
    return fn()


def _evaluator(objective: Objective) -> comb.Evaluate:
    """``x ↦ (f(x) as a float, ∇f(x))`` for the line searches."""

    def evaluate(xv: Tensor) -> tuple[float, Tensor]:
        fv, gv = objective.value_and_grad(xv)
        return float(fv), gv

    return evaluate


class SPQNSolver:
    """ASPQN / MSPQN / two-level SPQN on flat vectors (see the module docstring).

    Args:
        config: the options.
        decomposition: the subdomains.
        executor: where the additive local work runs (default :class:`SerialExecutor`).
        local_objective: ``(objective, s, x_base, counters) -> Objective`` building subdomain
            ``s``'s objective at ``x_base`` (default
            :func:`mldd.decomposition.local.local_objective`: a
            :class:`~mldd.decomposition.local.ParamsSubspaceObjective` for a module's
            parameters, else a :class:`~mldd.decomposition.SubspaceObjective`), or a
            :class:`LocalObjectiveProvider` that builds one for ``decomposition``. A faster one
            (e.g. reusing the frozen layers' outputs) can be plugged in; it must compute the
            same function, may implement ``full_evaluation(z)`` (see
            :class:`~mldd.decomposition.local.FullEvaluation`) to save evaluations, and may
            carry a ``grad_cost`` attribute (its gradient's cost in full gradients, for
            ``grad_evals``).
        coarse: the coarse space (a Subdomain or index tensor) for the two-level method;
            ``None`` for one level.
        counters: the global evaluation counters (shared with the objectives it is given).
    """

    def __init__(self, config: SPQNConfig, decomposition: Decomposition, *,
                 executor: Executor | None = None,
                 local_objective: LocalObjectiveFactory | LocalObjectiveProvider | None = None,
                 coarse: Any = None, counters: EvalCounters | None = None) -> None:
        self.config = config
        self.decomposition = decomposition
        self.executor: Executor = executor if executor is not None else SerialExecutor()
        if config.variant == "multiplicative" and self.executor.world_size > 1:
            raise ValueError("the multiplicative variant (MSPQN) is a sequential sweep and runs "
                             f"in one process; got an executor with world_size="
                             f"{self.executor.world_size}. Use the additive variant (ASPQN).")
        if isinstance(local_objective, LocalObjectiveProvider):
            local_objective = local_objective.for_decomposition(decomposition)
        self.local_objective: LocalObjectiveFactory = (
            local_objective if local_objective is not None else self._subspace_objective)
        self.coarse_index = None if coarse is None else as_index(coarse, decomposition.n)
        self.counters = counters if counters is not None else EvalCounters()
        self.local_counters = EvalCounters()
        self.coarse_counters = EvalCounters()
        self.local_grad_evals = 0.0  # local gradients in fine-gradient equivalents, all ranks
        self.local_grad_evals_max_rank = 0.0  # the busiest rank's share, summed over iterations
        # Whole-loss gradients the *other* ranks evaluated for the subspace combination's
        # secants (rank-local work counted on their global counters), and this rank's in the
        # current iteration: with them every rank reports the same total ``grad_evals``.
        self.other_ranks_grad_evals = 0.0
        self._secant_evals = 0
        self.cache = EvaluationCache()
        self.global_step: GlobalStep | GlobalTrustRegionStep
        if config.globalization == "trust_region":
            self.global_step = GlobalTrustRegionStep(config.memory, config.curvature_eps,
                                                     config.radius, self.counters)
        else:
            self.global_step = GlobalStep(config.memory, config.beta, config.curvature_eps)
        lc = config.local_config()
        #: With ``local_sweep``: the subdomains of each group, in sweep order.
        self.sweep_groups: list[list[int]] = self._sweep_groups()
        #: The subdomains this rank solves (fixed for the run: the local memories live here).
        self.owned: list[int] = self._solved_here()
        self.local_solvers = {s: LBFGSSolver(lc, counters=self.local_counters)
                              for s in self.owned}
        self.coarse_solver = LBFGSSolver(lc, counters=self.coarse_counters)
        self.n_iter = 0
        self.stop_reason: str | None = None
        self.last_step_lengths: list[float] = []

    def _deal(self, rank: int, world_size: int) -> list[int]:
        """The subdomains of ``rank`` of ``world_size`` under the ownership rule."""
        n = len(self.decomposition)
        if world_size == 1:
            return list(range(n))
        if self.config.ownership == "round_robin":
            return owned_round_robin(rank, world_size, n)
        return sorted(owned_balanced(rank, world_size, self.subdomain_costs()))

    def _sweep_groups(self) -> list[list[int]]:
        cfg, ex = self.config, self.executor
        if not cfg.local_sweep:
            return []
        n_groups = cfg.groups if cfg.groups is not None else ex.world_size
        if ex.world_size > 1 and n_groups != ex.world_size:
            raise ValueError(f"groups={n_groups} with {ex.world_size} processes: each process "
                             "sweeps one group, so groups must equal the number of processes")
        if n_groups > len(self.decomposition):
            raise ValueError(f"groups={n_groups} exceeds the {len(self.decomposition)} "
                             "subdomains: every group needs at least one")
        return [self._deal(r, n_groups) for r in range(n_groups)]

    def _solved_here(self) -> list[int]:
        n = len(self.decomposition)
        if self.config.variant == "multiplicative":
            return list(range(n))
        ex = self.executor
        if self.sweep_groups:
            if ex.world_size > 1:
                return self.sweep_groups[ex.rank]
            return [s for group in self.sweep_groups for s in group]
        if ex.world_size == 1 or self.config.ownership == "round_robin":
            return ex.owns(n)
        return owned_balanced(ex.rank, ex.world_size, self.subdomain_costs())

    def subdomain_costs(self) -> list[float]:
        """Estimated cost of one local gradient of each subdomain, in fine gradients.

        The local objective factory's own estimate when it has one (``costs`` attribute, e.g.
        the PINN layer blocks with cached prefix), else ``(n − first index)/n``: a local gradient
        runs backward from the output down to the subdomain's first parameter, so in a network
        whose parameters are ordered input to output it costs about the share of parameters
        from there on.
        """
        given = getattr(self.local_objective, "costs", None)
        if given is not None:
            return [float(c) for c in given]
        n = self.decomposition.n
        return [(n - int(self.decomposition[s].index[0])) / n
                for s in range(len(self.decomposition))]

    def _subspace_objective(self, objective: Objective, s: int, x_base: Tensor,
                            counters: EvalCounters) -> Objective:
        return default_local_objective(objective, x_base, self.decomposition[s].index, counters)

    def reset(self) -> None:
        """Forget every memory (global, local, coarse), the momentum and the cached evaluation."""
        self.global_step.reset()
        for solver in self.local_solvers.values():
            solver.reset()
        self.coarse_solver.reset()
        self.cache.clear()
        self.stop_reason = None

    # ------------------------------------------------------------------ one outer iteration
    def iterate(self, objective: Objective, x: Tensor) -> IterationResult:
        """One outer iteration from ``x``."""
        cfg, ex = self.config, self.executor
        f, g = evaluate_at(objective, self.cache, x, cfg.reuse_evaluations)
        info: dict[str, Any] = {"loss": f, "accepted": False, "step_length": 0.0,
                                "global_iters": 0}
        g_max = max_abs(g)
        if not (math.isfinite(f) and math.isfinite(g_max)):
            self.cache.clear()
            return self._finish(x, f, g, info, "the loss or gradient at the current parameters "
                                "is NaN/Inf; nothing to step from")
        if g_max <= cfg.tolerance_grad:
            return self._finish(x, f, g, info,
                                f"gradient max-norm <= tolerance_grad={cfg.tolerance_grad:g}")
        f_start = f
        self.n_iter += 1

        evaluate = _evaluator(objective)

        x_k, f_k, g_k = x, f, g
        if self.coarse_index is not None:
            x_k, f_k, g_k = self._shared(objective)(
                lambda: self._coarse(objective, x, f, g, info))
            if not is_finite(f_k, g_k):  # as for the local phase below
                info["coarse_discarded"] = True
                x_k, f_k, g_k = x, f, g
        local_before = self.local_grad_evals
        if cfg.variant == "multiplicative":
            x_h, f_h, g_h = ex.guarded(lambda: self._sweep(objective, evaluate, x_k, f_k, g_k,
                                                           info))
            # Every rank sweeps every subdomain (the same work, repeated): count it once.
            self.local_grad_evals_max_rank += self.local_grad_evals - local_before
        else:
            x_h, f_h, g_h = self._additive(objective, evaluate, x_k, f_k, g_k, info)
            self._count_local_work(local_before, x)
        if not is_finite(f_h, g_h):
            # The local solves see their own objectives (prefix-cached, restricted); the global
            # loss or gradient at their combined point can still be NaN/Inf (or the closure
            # failed there): that point is discarded, never stepped to.
            info["local_discarded"] = True
            x_h, f_h, g_h = x_k, f_k, g_k
        info["loss_half"] = f_h

        x_new, f_new, g_new = x_h, f_h, g_h
        global_failed = False
        opts = cfg.line_search_options()
        done = 0
        while (cfg.global_step and done < cfg.global_iters
               and max_abs(g_new) > cfg.tolerance_grad):
            x_new, f_new, g_new, ginfo = self._shared(objective)(
                functools.partial(self.global_step.step, evaluate, x_new, f_new, g_new, opts))
            global_failed = bool(ginfo.pop("global_failed"))
            stop = bool(ginfo.pop("global_stop"))
            info.update(ginfo)
            done += 1
            if stop:
                break
        info["global_iters"] = done
        self.cache.put(x_new, f_new, g_new)
        info.update(loss=f_new, accepted=f_new < f_start)
        reason = None
        if not f_new < f_start:
            if global_failed or not cfg.global_step:
                reason = "no decrease: neither the local phase nor the global step reduced the loss"
        elif abs(f_start - f_new) < cfg.tolerance_change:
            reason = f"loss change < tolerance_change={cfg.tolerance_change:g}"
        elif max_abs(g_new) <= cfg.tolerance_grad:
            reason = f"gradient max-norm <= tolerance_grad={cfg.tolerance_grad:g}"
        return self._finish(x_new, f_start, g_new, info, reason)

    def _count_local_work(self, before: float, like: Tensor) -> None:
        """Make :attr:`local_grad_evals` the local phase's work on *all* ranks (each rank counted
        only the subdomains it owns; one all-reduce of ``2·world_size`` numbers: each rank's
        local work and its subspace-secant gradients), as APTS reports it, and add the busiest
        rank's share to :attr:`local_grad_evals_max_rank`."""
        ex = self.executor
        mine, secants = self.local_grad_evals - before, self._secant_evals
        self._secant_evals = 0
        if ex.world_size == 1:
            self.local_grad_evals_max_rank += mine
            return
        ws = ex.world_size
        work = torch.zeros(2 * ws, dtype=torch.float64, device=like.device)
        work[ex.rank], work[ws + ex.rank] = mine, secants
        work = ex.all_reduce_sum(work)
        self.local_grad_evals = before + float(work[:ws].sum())
        self.local_grad_evals_max_rank += float(work[:ws].max())
        self.other_ranks_grad_evals += float(work[ws:].sum()) - secants

    def _shared(self, objective: Objective) -> Callable[[Callable[[], T]], T]:
        """How to run the global phase's work ``fn``, the same on every rank.

        ``executor.guarded`` (one failure-flag all-reduce) when ``fn`` evaluates the loss on each
        rank by itself: a closure may raise on one rank only. Plain ``fn()`` when the objective's
        evaluations are collectives that already agree on failure (``agrees_on_failure``, the
        data-parallel objective): the rest of ``fn`` is the same arithmetic on every rank, so an
        error there is raised by every rank at once, and the flag would cost a collective per
        global step for nothing.
        """
        if getattr(objective, "agrees_on_failure", False):
            return _call
        return self.executor.guarded

    def _coarse(self, objective: Objective, x: Tensor, f: float, g: Tensor,
                info: dict[str, Any]) -> tuple[Tensor, float, Tensor]:
        assert self.coarse_index is not None
        if not self.config.keep_local_memory:
            self.coarse_solver.reset()
        x1, res = coarse_step(self.coarse_solver, objective, x, f, g, self.coarse_index,
                              self.config.coarse_iters, self.coarse_counters)
        info.update(coarse_iters=res.iterations, loss_coarse=res.f)
        if res.full is not None:
            return x1, res.full[0], res.full[1]
        if torch.equal(x1, x):
            return x, f, g
        fv, gv = objective.value_and_grad(x1)
        return x1, float(fv), gv

    def _local(self, objective: Objective, s: int, x: Tensor, f: float,
               g: Tensor | None) -> LocalSolve:
        solver = self.local_solvers[s]
        if not self.config.keep_local_memory:
            solver.reset()
        # A data-parallel objective (mldd.decomposition.data_parallel) is a collective over the
        # ranks' shards; a subdomain solve is rank-local work and needs the whole loss.
        local = self.local_objective(getattr(objective, "full", objective), s, x,
                                     self.local_counters)
        dec = self.decomposition
        n_g0 = self.local_counters.n_g
        res = lbfgs_iterations(solver, local, dec.restrict(s, x), self.config.local_iters,
                               f0=f if g is not None else None,
                               g0=None if g is None else dec.restrict(s, g).clone())
        cost = float(getattr(local, "grad_cost", 1.0))
        self.local_grad_evals += cost * (self.local_counters.n_g - n_g0)
        return res

    def _sweep(self, objective: Objective, evaluate: comb.Evaluate, x: Tensor, f: float,
               g: Tensor, info: dict[str, Any]) -> tuple[Tensor, float, Tensor]:
        """Multiplicative: each subdomain from where the previous one ended."""
        x, f, g_cur, iters = self._sweep_over(objective, range(len(self.decomposition)), x, f, g)
        info["local_iters"] = iters
        if g_cur is None:
            f, g_cur = evaluate(x)
        return x, f, g_cur

    def _sweep_over(self, objective: Objective, subdomains: Any, x: Tensor, f: float,
                    g: Tensor | None) -> tuple[Tensor, float, Tensor | None, dict[int, int]]:
        """Solve ``subdomains`` in order, each from where the previous ended.

        Returns:
            The end point, its loss, its gradient when the last local solve evaluated it
            (else ``None``), and the local iterations per subdomain.
        """
        iters = {}
        for s in subdomains:
            res = self._local(objective, s, x, f, g)
            x = self.decomposition.replace(s, x, res.z)
            f, g = (res.full if res.full is not None else (res.f, None))
            iters[s] = res.iterations
        return x, f, g, iters

    def _group_corrections(self, objective: Objective, x: Tensor, f: float,
                           g: Tensor) -> tuple[dict[int, Tensor], dict[int, int], Any]:
        """The hybrid local phase: each of this rank's groups swept from ``x``.

        Returns the corrections ``z_s − R_s x`` of every swept subdomain, their iterations, and
        the end point ``(x, f, g)`` of the sweep when there is a single group (MSPQN's
        ``x_{k+½}``), else ``None``.
        """
        dec = self.decomposition
        groups = ([self.sweep_groups[self.executor.rank]] if self.executor.world_size > 1
                  else self.sweep_groups)
        corrections: dict[int, Tensor] = {}
        iters: dict[int, int] = {}
        end = None
        for group in groups:
            x_end, f_end, g_end, its = self._sweep_over(objective, group, x, f, g)
            iters.update(its)
            for s in group:
                corrections[s] = dec.restrict(s, x_end) - dec.restrict(s, x)
            end = (x_end, f_end, g_end)
        return corrections, iters, end if len(self.sweep_groups) == 1 else None

    def _additive(self, objective: Objective, evaluate: comb.Evaluate, x: Tensor, f: float,
                  g: Tensor, info: dict[str, Any]) -> tuple[Tensor, float, Tensor]:
        """Additive: all subdomains from ``x``, then the chosen combination."""
        cfg, ex, dec = self.config, self.executor, self.decomposition
        owned = self.owned
        self._secant_evals = 0  # set below for combine="subspace" (none left by a failed step)
        results: dict[int, LocalSolve] = {}
        if self.sweep_groups:
            corrections, iters, end = ex.guarded(
                lambda: self._group_corrections(objective, x, f, g))
            info["local_iters"] = iters
            if end is not None:
                # One group: the sweep's end point is x_{k+½}, as in MSPQN.
                x_end, f_end, g_end = end
                if g_end is None:
                    f_end, g_end = evaluate(x_end)
                self.last_step_lengths = [1.0] * len(dec)
                return x_end, f_end, g_end
        else:
            results = ex.guarded(lambda: {s: self._local(objective, s, x, f, g) for s in owned})
            info["local_iters"] = {s: r.iterations for s, r in results.items()}
            corrections = {s: r.correction for s, r in results.items()}
        opts = cfg.line_search_options()
        if cfg.combine == "line_search":
            d = ex.all_reduce_sum(dec.combine(corrections))
            res = self._shared(objective)(
                lambda: comb.along_sum(evaluate, x, f, g, d, len(dec), opts))
        else:
            D = self._columns(corrections, x)
            if cfg.combine == "per_subdomain":
                res = self._shared(objective)(
                    lambda: comb.per_subdomain(evaluate, x, f, g, D, opts))
            else:
                # Rank-local work: the whole loss, never the (collective) data-parallel one.
                evaluate_here = _evaluator(getattr(objective, "full", objective))

                n_g0 = self.counters.n_g
                secant_cols = ex.guarded(lambda: self._secants(evaluate_here, x, g, D, results))
                self._secant_evals = self.counters.n_g - n_g0
                M = ex.all_reduce_sum(secant_cols)
                res = self._shared(objective)(lambda: comb.subspace(evaluate, x, f, g, D, M, opts,
                                                       cfg.subspace_iters, cfg.curvature_eps))
        info.update(combine_weights=res.weights, combine_evals=res.n_evals,
                    combine=res.reason)
        self.last_step_lengths = list(res.weights)
        return res.x, res.f, res.g

    def _columns(self, corrections: dict[int, Tensor], x: Tensor) -> Tensor:
        """``D = [E_1(w_1⊙c_1) … E_N(w_N⊙c_N)]`` on every rank (one all-reduce)."""
        dec = self.decomposition
        N = len(dec)
        D = x.new_zeros(dec.n, N)
        if dec.disjoint:
            # Disjoint supports: the summed vector holds every column; n numbers to reduce.
            d = self.executor.all_reduce_sum(dec.combine(corrections) if corrections
                                             else x.new_zeros(dec.n))
            for s in range(N):
                idx = dec[s].index.to(x.device)
                D[idx, s] = d[idx]
            return D
        for s, c in corrections.items():
            dec.add_extended(D[:, s], s, c * dec.weight(s, c))
        return self.executor.all_reduce_sum(D)

    def _secants(self, evaluate: comb.Evaluate, x: Tensor, g: Tensor, D: Tensor,
                 results: dict[int, LocalSolve]) -> Tensor:
        """This rank's columns of ``M = Dᵀ[y_1 … y_N]``, ``y_s = ∇f(x + D_s) − ∇f(x)``."""
        N = D.shape[1]
        cols = D.new_zeros(N, N)
        for s in self.owned:
            if not bool(D[:, s].any()):
                continue
            r = results.get(s)  # absent for swept groups: their end points are not x + D_s
            if r is not None and r.full is not None and self.decomposition.disjoint:
                g_s = r.full[1]  # x + D_s is the subdomain's own end point: already evaluated
            else:
                g_s = evaluate(x + D[:, s])[1]
            cols[:, s] = D.T @ (g_s - g)
        return cols

    def _finish(self, x: Tensor, f_start: float, g: Tensor, info: dict[str, Any],
                reason: str | None) -> IterationResult:
        self.stop_reason = reason
        info.update(
            grad_norm=float(torch.linalg.vector_norm(g)),
            iteration=self.n_iter,
            memory=len(self.global_step.memory),
            stop_reason=reason,
            **self.cost(),
        )
        return IterationResult(x, f_start, info)

    def cost(self) -> dict[str, float]:
        """Cumulative evaluation counts.

        ``n_f``/``n_g``: all loss/gradient evaluations (local ones included, whatever they
        cost; this rank's in the distributed setting); ``global_*``, ``local_*``, ``coarse_*``:
        the three phases (``local_*``: this rank's); ``local_grad_evals``: the local gradients
        of all ranks in fine-gradient equivalents (each weighted by its local objective's
        ``grad_cost``, 1 by default); ``local_grad_evals_max_rank``: the busiest rank's share
        (the local phase's critical path; equal to ``local_grad_evals`` in one process);
        ``grad_evals``: ``global_n_g + local_grad_evals + coarse_n_g`` (plus the other ranks'
        secant gradients of ``combine="subspace"``), the total work of all ranks
        (docs/algorithms.md §1.5; see the module docstring).
        """
        c, lc, cc = self.counters, self.local_counters, self.coarse_counters
        return {
            "n_f": c.n_f + lc.n_f + cc.n_f, "n_g": c.n_g + lc.n_g + cc.n_g, "n_hvp": c.n_hvp,
            "global_n_f": c.n_f, "global_n_g": c.n_g, "local_n_f": lc.n_f, "local_n_g": lc.n_g,
            "coarse_n_f": cc.n_f, "coarse_n_g": cc.n_g,
            "local_grad_evals": self.local_grad_evals,
            "local_grad_evals_max_rank": self.local_grad_evals_max_rank,
            "grad_evals": c.n_g + self.other_ranks_grad_evals + self.local_grad_evals + cc.n_g,
        }

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """All algorithm state: global memory and momentum, local/coarse memories, cached
        evaluation, the three counter sets, iteration count, stop reason, step lengths."""
        keep = self.config.keep_local_memory
        return {
            "config": asdict(self.config),
            "n": self.decomposition.n,
            "n_subdomains": len(self.decomposition),
            "global_step": self.global_step.state_dict(),
            "cache": self.cache.state_dict(),
            "counters": self.counters.as_dict(),
            "local_counters": self.local_counters.as_dict(),
            "coarse_counters": self.coarse_counters.as_dict(),
            "local_grad_evals": self.local_grad_evals,
            "local_grad_evals_max_rank": self.local_grad_evals_max_rank,
            "other_ranks_grad_evals": self.other_ranks_grad_evals,
            "local_solvers": ({s: v.state_dict() for s, v in self.local_solvers.items()}
                              if keep else {}),
            "coarse_solver": self.coarse_solver.state_dict() if keep else None,
            "n_iter": self.n_iter,
            "stop_reason": self.stop_reason,
            "last_step_lengths": list(self.last_step_lengths),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the decomposition must have the same shape)."""
        if int(d["n"]) != self.decomposition.n or int(d["n_subdomains"]) != len(
                self.decomposition):
            raise ValueError(
                f"this state was saved for {d['n_subdomains']} subdomains of a vector of length "
                f"{d['n']}; the optimizer has {len(self.decomposition)} subdomains of "
                f"{self.decomposition.n}")
        self.global_step.load_state_dict(d["global_step"])
        self.cache.load_state_dict(d["cache"])
        self.counters.load(d["counters"])
        self.local_counters.load(d["local_counters"])
        self.coarse_counters.load(d["coarse_counters"])
        # States saved before the local costs were weighted counted every local gradient as 1.
        self.local_grad_evals = float(d.get("local_grad_evals", self.local_counters.n_g))
        self.local_grad_evals_max_rank = float(d.get("local_grad_evals_max_rank",
                                                     self.local_grad_evals))
        self.other_ranks_grad_evals = float(d.get("other_ranks_grad_evals", 0.0))
        for s, sd in d["local_solvers"].items():
            if int(s) in self.local_solvers:
                self.local_solvers[int(s)].load_state_dict(sd)
        if d["coarse_solver"] is not None:
            self.coarse_solver.load_state_dict(d["coarse_solver"])
        self.n_iter = int(d["n_iter"])
        self.stop_reason = d["stop_reason"]
        self.last_step_lengths = [float(t) for t in d["last_step_lengths"]]
