"""APTS — additively preconditioned trust region [CTKK23, CTKK25], on flat vectors.

Notation: ``x_k`` the iterate, ``Δ`` the global radius, ``N`` subdomains (parameter blocks or
data shards), ``φ_d`` subdomain ``d``'s local model (:mod:`mldd.decomposition.apts_local`),
``ρ = ared/pred``.

One outer iteration (:meth:`APTSSolver.iterate`):

1. ``f_k, g_k`` at ``x_k`` — a collective evaluation (rank 0 for parameter blocks; the
   all-reduced ``Σ_d w_d (f_d, ∇f_d)`` over the ranks' shards for data shards), reused from the
   previous accepted trial when allowed.
2. **Local phase** (each rank, its own subdomains, under ``executor.guarded``): from ``z0``
   (``R_d x_k`` or ``x_k``), ``local_iters`` trust-region iterations on ``φ_d`` (L-SR1 memory,
   OBS subproblem — :class:`~mldd.solvers.TrustRegionSolver`) with local radius
   ``Δ_loc = Δ·scale`` (``scale`` = 1 or ``1/√N`` for blocks in the ∞-/2-norm, 1 or ``1/N``
   for shards averaged/summed: the trial step always satisfies ``‖s‖ ≤ Δ``). Every local
   iterate stays in the ball ``‖z − z0‖ ≤ Δ_loc`` around the *starting point*, not only each
   step: the radius of local iteration ``j`` is ``min(Δ_j, Δ_loc − ‖z_j − z0‖)``. The first
   local iteration reuses ``f_k, g_k`` (no evaluation).
3. **Combination** (one ``all_reduce`` of ``[s, p_1..p_N, work]``): ``s`` = the sum of the
   disjoint block steps, or the weighted mean (default) / sum of the shard steps; the predicted
   reduction ``pred`` = the sum (or weighted mean) of the local reductions
   ``p_d = φ_d(z0) − φ_d(z_d)`` — the *actual* decrease of each first-order-consistent local
   model, which plays the role of the coarse model's decrease in RMTR [GST08], not a
   quadratic-model prediction. Local memories persist across outer iterations unless
   ``reset_local_memory`` (a block's or shard's curvature pairs stay valid).
4. **Global test** on the true loss (identical on every rank): ``ρ = (f_k − f(x_k+s))/pred``;
   accept if ``ρ > η`` (0.25); ``Δ ← 0.9Δ`` if ``ρ < η``, ``Δ ← 1.2Δ`` if ``ρ > 0.75``,
   ``Δ ∈ [0.01, 1]``, ``Δ0 = 0.1`` (the group's defaults [CTKK25]). A NaN/Inf trial loss or
   gradient, or ``pred ≤ 0``, is a rejection (no trial is evaluated when ``pred ≤ 0``).
5. Optional **global pass**: one trust-region iteration (L-SR1 + OBS, the same policy and
   radius) on the global loss from the new point; its memory also receives the APTS trial pair.

No learning rate: the trust region chooses every step length.

Identity: with one subdomain, ``local_iters=1`` and no global pass, APTS is the trust-region
method whose policy accepts when ``ρ > η`` and then grows the radius by ``expand``, else shrinks
it by ``shrink`` — ``TrustRegionPolicy(rho_tol=η, eta1=η, eta2=η, gamma1=shrink,
gamma2=expand, radius_min, radius_max)``, same memory, radius, norm. (The local reduction of the
single subdomain *is* the actual reduction, so an accepted local step has global ``ρ = 1``.)

Cost accounting (``info``): ``global_grad_evals`` (collective evaluations; each is one full
gradient, shared among the ranks for data shards), ``local_grad_evals`` (all subdomains,
fine-gradient equivalents: 1 per block gradient, ``n_d/n`` per shard gradient),
``local_grad_evals_max_rank`` (the local phase's critical path: the busiest rank's work, summed
over iterations) and ``grad_evals`` = global + local (total work).

References:
    [CTKK23] Cruz, Trotti, Kopaničáková, Krause. Parallel trust-region approaches in neural
    network training. arXiv:2312.13677.
    [CTKK25] Cruz Alegría et al. Data-parallel neural network training via nonlinearly
    preconditioned trust-region method. arXiv:2502.05133.
    [BEM16] Brust, Erway, Marcia. On solving L-SR1 trust-region subproblems. arXiv:1506.07222.
    [GST08] Gratton, Sartenaer, Toint. Recursive trust-region methods for multiscale nonlinear
    optimization. SIAM J. Optim., 2008.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from mldd.decomposition.apts_local import (
    Evaluation,
    EvaluatorObjective,
    SubdomainProblem,
)
from mldd.decomposition.executors import Executor, SerialExecutor
from mldd.globalization.trust_region import TrustRegionPolicy
from mldd.objective import EvalCounters
from mldd.solvers.base import IterationResult, check_bools, check_choice, check_positive, is_finite
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver
from mldd.validation import check_int

HESSIANS = ("lsr1", "lbfgs", "none")
COMBINES = ("sum", "mean")


@dataclass
class APTSConfig:
    """Options of :class:`APTSSolver` (defaults: [CTKK25] and the group's code).

    Attributes:
        local_iters: trust-region iterations per subdomain per outer iteration (default 3).
        memory: quasi-Newton memory of the local and the global models (default 5; 3–5 in the
            papers).
        hessian: ``"lsr1"`` (default, OBS subproblem), ``"lbfgs"`` (Steihaug CG) or ``"none"``
            (Cauchy steps).
        subproblem: ``None`` (the default for the Hessian), ``"obs"``, ``"cg"`` or ``"cauchy"``.
        norm: ``"l2"`` (default) or ``"linf"``.
        combine: data shards only: ``"mean"`` (default: local radius ``Δ``, steps averaged
            with weights ``n_d/n``) or ``"sum"`` (the paper's rule: local radius ``Δ/N``, steps
            summed; it overshoots near a minimiser and stalls there — see
            :class:`~mldd.decomposition.apts_local.DataShards`).
        radius: initial global radius Δ0 (default 0.1).
        radius_min, radius_max: clamps of Δ (defaults 0.01, 1). Near a minimiser the additive
            step can overshoot (block-Jacobi on coupled blocks, summed shard steps); Δ cannot
            then shrink below ``radius_min`` and the iteration stalls. A global pass or a smaller
            ``radius_min`` lets it converge (coupled 12-D quadratic, 4 blocks: stalls at
            ``‖x − x*‖ ≈ 1e-2`` with the defaults; 1e-8 in 31 iterations with
            ``global_pass=True``). After :data:`STALL_LIMIT` (10) consecutive iterations that
            leave the iterate unchanged at ``radius_min``, APTS stops with "no progress".
        eta: accept when ``ρ > eta``; shrink when ``ρ < eta`` (default 0.25).
        eta_expand: expand when ``ρ > eta_expand`` (default 0.75).
        shrink: shrink factor (default 0.9).
        expand: expansion factor (default 1.2).
        global_pass: one global trust-region iteration after the combination (default False).
        reset_local_memory: empty each local memory at the start of each local solve (default
            False: a shard's or block's curvature pairs stay valid from one outer iteration to
            the next, and are kept).
        tolerance_grad: stop when ``‖g_k‖₂ ≤`` this (default 1e-9).
        reuse_evaluations: reuse the accepted trial's loss and gradient as the next ``f_k, g_k``
            (default True; set False when the closure draws a new mini-batch at each call).
    """

    local_iters: int = 3
    memory: int = 5
    hessian: str = "lsr1"
    subproblem: str | None = None
    norm: str = "l2"
    combine: str = "mean"
    radius: float = 0.1
    radius_min: float = 0.01
    radius_max: float = 1.0
    eta: float = 0.25
    eta_expand: float = 0.75
    shrink: float = 0.9
    expand: float = 1.2
    global_pass: bool = False
    reset_local_memory: bool = False
    tolerance_grad: float = 1e-9
    reuse_evaluations: bool = True

    def __post_init__(self) -> None:
        check_bools(self)
        for name in ("local_iters", "memory"):
            v = getattr(self, name)
            check_int(name, v)
        check_choice("hessian", self.hessian, HESSIANS)
        check_choice("combine", self.combine, COMBINES)
        check_positive(self, ("radius", "radius_min", "radius_max", "shrink", "expand"))
        check_positive(self, ("tolerance_grad", "eta"), allow_zero=True)
        if not self.radius_min <= self.radius <= self.radius_max:
            raise ValueError(f"need radius_min <= radius <= radius_max, got radius_min="
                             f"{self.radius_min!r}, radius={self.radius!r}, radius_max="
                             f"{self.radius_max!r}")
        if not 0.0 <= self.eta <= self.eta_expand <= 1.0:
            raise ValueError(f"need 0 <= eta <= eta_expand <= 1, got eta={self.eta!r}, "
                             f"eta_expand={self.eta_expand!r}")
        if not 0.0 < self.shrink < 1.0:
            raise ValueError(f"shrink must lie in (0, 1), got {self.shrink!r}")
        if self.expand < 1.0:
            raise ValueError(f"expand must be >= 1, got {self.expand!r}")
        for name in ("global_pass", "reset_local_memory", "reuse_evaluations"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        # Validates subproblem/norm against the Hessian with TrustRegionConfig's own messages.
        self.local_config()

    @property
    def policy(self) -> TrustRegionPolicy:
        """The global ratio test: accept if ``ρ > eta``, shrink if ``ρ < eta``, grow if
        ``ρ > eta_expand``, clamp to ``[radius_min, radius_max]``."""
        return TrustRegionPolicy(rho_tol=self.eta, eta1=self.eta, eta2=self.eta_expand,
                                 gamma1=self.shrink, gamma2=self.expand,
                                 radius_min=self.radius_min, radius_max=self.radius_max)

    def local_config(self) -> TrustRegionConfig:
        """The local solvers' options: the same ratio test, radius clamps left wide open (the
        local radius is set from Δ at every outer iteration)."""
        policy = TrustRegionPolicy(rho_tol=self.eta, eta1=self.eta, eta2=self.eta_expand,
                                   gamma1=self.shrink, gamma2=self.expand)
        return TrustRegionConfig(hessian=self.hessian, memory=self.memory,
                                 subproblem=self.subproblem, norm=self.norm, radius=self.radius,
                                 policy=policy, tolerance_grad=self.tolerance_grad,
                                 reuse_evaluations=True)

    def global_config(self) -> TrustRegionConfig:
        """The global pass's options (the APTS policy and clamps)."""
        return TrustRegionConfig(hessian=self.hessian, memory=self.memory,
                                 subproblem=self.subproblem, norm=self.norm, radius=self.radius,
                                 policy=self.policy, tolerance_grad=self.tolerance_grad,
                                 reuse_evaluations=True)


def _norm(v: Tensor, norm: str) -> float:
    return float(torch.linalg.vector_norm(v, ord=2 if norm == "l2" else math.inf))


# Relative slack below which a local iterate counts as on the boundary of its ball around z0.
_BOUNDARY_RTOL = 1e-12
#: consecutive iterations that leave the iterate unchanged with Δ at ``radius_min`` before APTS
#: stops ("no progress"): Δ is clamped there, so a persistent failure (every trial NaN/Inf, or
#: the stall near a minimiser described under ``radius_min``) would otherwise repeat forever.
STALL_LIMIT = 10


class APTSSolver:
    """APTS outer iterations (see the module docstring).

    Args:
        config: the options.
        executor: where the subdomains run (default :class:`SerialExecutor`).
        counters: counters of the *global* evaluations (local ones are in
            :attr:`local_counters`).

    Attributes:
        radius: the global radius Δ.
        local_solvers: ``{d: TrustRegionSolver}`` for this rank's subdomains (their memories
            persist unless ``reset_local_memory``).
        global_solver: the global pass's solver (``None`` without a global pass).
    """

    def __init__(self, config: APTSConfig, executor: Executor | None = None,
                 counters: EvalCounters | None = None) -> None:
        self.config = config
        self.executor: Executor = executor if executor is not None else SerialExecutor()
        self.counters = counters if counters is not None else EvalCounters()
        self.local_counters = EvalCounters()
        self.radius = float(config.radius)
        self.local_solvers: dict[int, TrustRegionSolver] = {}
        self.global_solver = (TrustRegionSolver(config.global_config(), counters=self.counters)
                              if config.global_pass else None)
        self.current: Evaluation | None = None
        self.n_iter = 0
        self.n_accepted = 0
        self.n_rejected = 0
        self.local_cost = 0.0
        self.local_cost_max_rank = 0.0
        self.n_stalled = 0  # consecutive iterations that stayed put with Δ at radius_min
        self.stop_reason: str | None = None

    def reset(self) -> None:
        """Forget memories and cached evaluations (radius and counters are kept)."""
        for solver in self.local_solvers.values():
            solver.reset()
        if self.global_solver is not None:
            self.global_solver.reset()
        self.current = None
        self.stop_reason = None

    # ------------------------------------------------------------------ the iteration
    def iterate(self, problem: SubdomainProblem, x: Tensor) -> IterationResult:
        """One APTS outer iteration from ``x`` (a collective: every rank must call it)."""
        cfg = self.config
        ex = self.executor
        owned = ex.owns(problem.n_subdomains)
        glob = EvaluatorObjective(problem, ex, owned, counters=self.counters, dtype=x.dtype,
                                  device=x.device)
        ev = self._start(glob, problem, x, owned)
        info: dict[str, Any] = {"loss": ev.f, "accepted": False, "rho": float("nan"),
                                "radius": self.radius, "n_subdomains": problem.n_subdomains,
                                "decomposition": problem.kind}
        if not is_finite(ev.f, ev.g):
            self.current = None
            return self._finish(x, ev.f, ev.g, info, "the loss or gradient at the current "
                                "parameters is NaN/Inf; nothing to step from")
        if float(torch.linalg.vector_norm(ev.g)) <= cfg.tolerance_grad:
            return self._finish(x, ev.f, ev.g, info,
                                f"gradient norm <= tolerance_grad={cfg.tolerance_grad:g}")

        radius = self.radius
        local_radius = radius * problem.radius_scale(cfg.norm)
        n, N = problem.n, problem.n_subdomains
        contribution = ex.guarded(lambda: self._local_phase(problem, ev, owned, local_radius))
        total = ex.all_reduce_sum(contribution)
        s = total[:n]
        pred = float(total[n:n + N].sum())
        work = total[n + N:n + N + ex.world_size]
        n_local_accepted = int(total[-1])
        self.local_cost += float(work.sum())
        self.local_cost_max_rank += float(work.max())

        step_norm = _norm(s, cfg.norm)
        trial: Evaluation | None = None
        if pred > 0.0 and math.isfinite(pred):
            trial = glob.evaluate(x + s)
            ared = (ev.f - trial.f) if is_finite(trial.f, trial.g) else math.nan
        else:  # every local solve was rejected: the trial would be x_k itself
            ared = math.nan
        decision = cfg.policy.decide(radius, ared, pred, step_norm >= radius * (1 - 1e-9))
        if (self.global_solver is not None and self.global_solver.memory is not None
                and trial is not None and is_finite(trial.f, trial.g)):
            self.global_solver.memory.update(s, trial.g - ev.g)
        self.n_iter += 1
        self.radius = decision.radius
        info.update(rho=decision.rho, step_norm=step_norm, predicted_reduction=pred,
                    actual_reduction=ared, local_radius=local_radius,
                    local_accepted=n_local_accepted)
        x_new, current = x, ev
        if decision.accepted:
            assert trial is not None
            self.n_accepted += 1
            x_new, current = x + s, trial
            info.update(loss=trial.f, accepted=True)
        else:
            self.n_rejected += 1
        self.current = current
        if self.global_solver is not None:
            x_new = self._global_pass(glob, x_new, info)
        assert self.current is not None
        reason = None
        if x_new is x and self.radius <= cfg.radius_min:
            # Δ cannot shrink further, so without a change of batch or local memories the
            # next iteration would try much the same step (every trial NaN, or a stall).
            self.n_stalled += 1
            if self.n_stalled >= STALL_LIMIT:
                reason = (f"no progress: {self.n_stalled} consecutive rejected steps at "
                          f"radius_min={cfg.radius_min:g}")
        else:
            self.n_stalled = 0
        return self._finish(x_new, ev.f, self.current.g, info, reason)

    def _start(self, glob: EvaluatorObjective, problem: SubdomainProblem, x: Tensor,
               owned: list[int]) -> Evaluation:
        """``f_k, g_k`` (and this rank's shard values) at ``x``: cached or evaluated."""
        cur = self.current
        if (self.config.reuse_evaluations and cur is not None and cur.x.shape == x.shape
                and torch.equal(cur.x, x)
                and (problem.kind != "data" or all(d in cur.shards for d in owned))):
            glob.history = [cur]
            return cur
        return glob.evaluate(x)

    def _local_phase(self, problem: SubdomainProblem, ev: Evaluation, owned: list[int],
                     local_radius: float) -> Tensor:
        """This rank's local solves; returns ``[Σ shares of s, p_d·weight, work, #accepted]``."""
        ex = self.executor
        n, N = problem.n, problem.n_subdomains
        out = ev.g.new_zeros(n + N + ex.world_size + 1)
        work = 0.0
        for d in owned:
            lm = problem.local_model(d, ev, self.local_counters)
            solver = self._local_solver(d)
            before = self.local_counters.n_g
            z, f_z, n_acc = self._local_solve(solver, lm.objective, lm.z0, lm.f0, lm.g0,
                                              local_radius)
            work += (self.local_counters.n_g - before) * problem.local_cost(d)
            problem.add_step(out[:n], d, z - lm.z0)
            out[n + d] = problem.pred_weight(d) * (lm.f0 - f_z)
            out[-1] += n_acc
        out[n + N + ex.rank] = work
        return out

    def _local_solver(self, d: int) -> TrustRegionSolver:
        solver = self.local_solvers.get(d)
        if solver is None:
            solver = TrustRegionSolver(self.config.local_config(), counters=self.local_counters)
            self.local_solvers[d] = solver
        return solver

    def _local_solve(self, solver: TrustRegionSolver, phi: Any, z0: Tensor, f0: float,
                     g0: Tensor, local_radius: float) -> tuple[Tensor, float, int]:
        """``local_iters`` TR iterations on ``phi`` from ``z0``, inside ``‖z − z0‖ ≤ Δ_loc``."""
        cfg = self.config
        if cfg.reset_local_memory and solver.memory is not None:
            solver.memory.reset()
        solver.cache.put(z0, f0, g0)
        solver.stop_reason = None
        solver.radius = local_radius
        z, f_z, n_acc = z0, f0, 0
        for _ in range(cfg.local_iters):
            budget = local_radius - _norm(z - z0, cfg.norm)
            if budget <= _BOUNDARY_RTOL * local_radius:
                break
            solver.radius = min(solver.radius, budget)
            res = solver.iterate(phi, z)
            if res.info["accepted"]:
                z, f_z = res.x, float(res.info["loss"])
                n_acc += 1
            if solver.stop_reason is not None:
                break
        return z, f_z, n_acc

    def _global_pass(self, glob: EvaluatorObjective, x: Tensor, info: dict[str, Any]) -> Tensor:
        """One global trust-region iteration from ``x`` with the APTS radius."""
        solver = self.global_solver
        assert solver is not None and self.current is not None
        solver.radius = self.radius
        solver.cache.put(x, self.current.f, self.current.g)
        res = solver.iterate(glob, x)
        self.radius = solver.radius
        info.update(global_accepted=bool(res.info["accepted"]), global_rho=res.info["rho"])
        if res.info["accepted"]:
            found = glob.find(res.x)
            assert found is not None
            self.current = found
            info["loss"] = found.f
            return res.x
        return x

    def _finish(self, x: Tensor, f_start: float, g: Tensor, info: dict[str, Any],
                reason: str | None) -> IterationResult:
        self.stop_reason = reason
        global_evals = float(self.counters.n_g)
        info.update(
            grad_norm=float(torch.linalg.vector_norm(g)),
            radius_next=self.radius,
            iteration=self.n_iter,
            n_accepted=self.n_accepted,
            n_rejected=self.n_rejected,
            stop_reason=reason,
            n_f=self.counters.n_f + self.local_counters.n_f,
            n_g=self.counters.n_g + self.local_counters.n_g,
            global_grad_evals=global_evals,
            local_grad_evals=self.local_cost,
            local_grad_evals_max_rank=self.local_cost_max_rank,
            grad_evals=global_evals + self.local_cost,
        )
        return IterationResult(x, f_start, info)

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """All algorithm state: radius, local and global memories, cached evaluation, counters."""
        return {
            "config": asdict(self.config),
            "radius": self.radius,
            "local_solvers": {d: s.state_dict() for d, s in self.local_solvers.items()},
            "global_solver": (None if self.global_solver is None
                              else self.global_solver.state_dict()),
            "current": None if self.current is None else self.current.state_dict(),
            "counters": self.counters.as_dict(),
            "local_counters": self.local_counters.as_dict(),
            "n_iter": self.n_iter,
            "n_accepted": self.n_accepted,
            "n_rejected": self.n_rejected,
            "local_cost": self.local_cost,
            "local_cost_max_rank": self.local_cost_max_rank,
            "n_stalled": self.n_stalled,
            "stop_reason": self.stop_reason,
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.radius = float(d["radius"])
        self.local_solvers = {}
        for k, sd in d["local_solvers"].items():
            self._local_solver(int(k)).load_state_dict(sd)
        if self.global_solver is not None and d["global_solver"] is not None:
            self.global_solver.load_state_dict(d["global_solver"])
        self.current = None if d["current"] is None else Evaluation.from_state_dict(d["current"])
        self.counters.load(d["counters"])
        self.local_counters.load(d["local_counters"])
        self.n_iter = int(d["n_iter"])
        self.n_accepted = int(d["n_accepted"])
        self.n_rejected = int(d["n_rejected"])
        self.local_cost = float(d["local_cost"])
        self.local_cost_max_rank = float(d["local_cost_max_rank"])
        self.n_stalled = int(d.get("n_stalled", 0))
        self.stop_reason = d["stop_reason"]
