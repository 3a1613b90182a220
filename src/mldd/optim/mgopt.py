"""``mldd.optim.MGOpt``: one MG/OPT cycle per ``step``, with any smoother."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from mldd.globalization.trust_region import TrustRegionPolicy
from mldd.multilevel.batch_schedule import BatchSchedule
from mldd.multilevel.hierarchy import Hierarchy
from mldd.multilevel.mgopt import MGOptConfig, MGOptSolver, OptimizerFactory, TorchSmoother
from mldd.optim.multilevel import MultilevelOptimizer
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver

_TR_KEYS = ("hessian", "memory", "subproblem", "norm", "radius", "cg_rtol", "cg_max_iter",
            "tolerance_grad", "lsr1_gamma")


class MGOpt(MultilevelOptimizer):
    """MG/OPT [N00]: the multilevel cycle with a line search on the prolongated coarse correction.

    Each step runs ``pre_smoothing`` smoother iterations on the fine network, recursively
    minimises a first-order coherent coarse model (Nash's additive τ-correction by default) on
    the coarser networks, moves along the prolongated correction with a backtracking-Armijo or
    strong-Wolfe line search (only if it is a descent direction with sufficient decrease), then
    runs ``post_smoothing`` iterations (:mod:`mldd.multilevel.mgopt`).

    Args:
        params: the finest network's parameters (``model.parameters()``, in that order).
        hierarchy, model, levels, coarsen, n_rows, hierarchy_options: as for
            :class:`~mldd.optim.RMTR`.
        smoother: ``"tr"`` (trust region, default; options below) or a factory
            ``params -> torch.optim.Optimizer`` such as ``lambda p: torch.optim.Adam(p, 1e-3)``
            (one optimizer per level, on a flat parameter; optimizers needing a closure, like
            ``torch.optim.LBFGS``, are not supported).
        cycle, pre_smoothing, post_smoothing, coarse_iterations: ``"V"``, 1, 1, 4.
        coarse_model, hybrid_gamma, zeroth_order: the coarse model (``"additive"``).
        kappa_g, restricted_grad_tol, descent_reference: the descent test (1/8, 1e-9, "fine").
        line_search: ``"armijo"`` (default) or ``"wolfe"``; c1, c2, backtrack, initial_step,
            max_evals: its constants (1e-4, 0.9, 0.5, 1, 10).
        reuse_evaluations: reuse the last fine evaluation at the next step (True; False for
            mini-batches that change between steps).
        hessian, memory, subproblem, norm, radius, eta1, eta2, rho_tol, gamma1, gamma2,
            radius_min, radius_max, cg_rtol, cg_max_iter, tolerance_grad, lsr1_gamma: the
            trust-region smoother's options (ignored with a torch smoother).
        batch_schedule: optional :class:`~mldd.multilevel.batch_schedule.BatchSchedule`.

    Closure and per-level options (:data:`mldd.multilevel.mgopt.LEVEL_OPTIONS`): as for
    :class:`~mldd.optim.RMTR`.

    References:
        [N00] Nash. A multigrid approach to discretized optimization problems. Optim. Methods
        Softw. 14, 2000.
    """

    method_name = "MGOpt"

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        *,
        hierarchy: Hierarchy | None = None,
        model: nn.Module | None = None,
        levels: int | None = None,
        coarsen: str | Iterable[str] = "depth",
        n_rows: int | None = None,
        hierarchy_options: Mapping[str, Any] | None = None,
        smoother: str | OptimizerFactory = "tr",
        cycle: str = "V",
        pre_smoothing: int = 1,
        post_smoothing: int = 1,
        coarse_iterations: int = 4,
        coarse_model: str = "additive",
        hybrid_gamma: float = 0.5,
        zeroth_order: bool | None = None,
        kappa_g: float = 0.125,
        restricted_grad_tol: float = 1e-9,
        descent_reference: str = "fine",
        line_search: str = "armijo",
        c1: float = 1e-4,
        c2: float = 0.9,
        backtrack: float = 0.5,
        initial_step: float = 1.0,
        max_evals: int = 10,
        reuse_evaluations: bool = True,
        hessian: str = "lsr1",
        memory: int = 5,
        subproblem: str | None = None,
        norm: str = "l2",
        radius: float = 1.0,
        eta1: float = 0.05,
        eta2: float = 0.9,
        rho_tol: float = 0.005,
        gamma1: float = 0.25,
        gamma2: float = 2.5,
        radius_min: float = 1e-14,
        radius_max: float = 1e14,
        cg_rtol: float = 0.1,
        cg_max_iter: int | None = None,
        tolerance_grad: float = 1e-9,
        lsr1_gamma: str = "yy_sy",
        batch_schedule: BatchSchedule | None = None,
    ) -> None:
        if isinstance(smoother, str):
            if smoother != "tr":
                raise ValueError(f"smoother must be 'tr' or a factory params -> "
                                 f"torch.optim.Optimizer, got {smoother!r}")
            self._factory: OptimizerFactory | None = None
        elif callable(smoother):
            self._factory = smoother
        else:
            raise ValueError(f"smoother must be 'tr' or a factory params -> torch.optim."
                             f"Optimizer, got {type(smoother).__name__}")
        policy = TrustRegionPolicy(eta1=eta1, eta2=eta2, rho_tol=rho_tol, gamma1=gamma1,
                                   gamma2=gamma2, radius_min=radius_min, radius_max=radius_max)
        tr = TrustRegionConfig(hessian=hessian, memory=memory, subproblem=subproblem, norm=norm,
                               radius=radius, policy=policy, cg_rtol=cg_rtol,
                               cg_max_iter=cg_max_iter, tolerance_grad=tolerance_grad,
                               lsr1_gamma=lsr1_gamma)
        cfg = MGOptConfig(cycle=cycle, pre_smoothing=pre_smoothing,
                          post_smoothing=post_smoothing, coarse_iterations=coarse_iterations,
                          coarse_model=coarse_model, hybrid_gamma=hybrid_gamma,
                          zeroth_order=zeroth_order, kappa_g=kappa_g,
                          restricted_grad_tol=restricted_grad_tol,
                          descent_reference=descent_reference, line_search=line_search, c1=c1,
                          c2=c2, backtrack=backtrack, initial_step=initial_step,
                          max_evals=max_evals, reuse_evaluations=reuse_evaluations)
        defaults = asdict(cfg)
        defaults["smoother"] = "tr" if self._factory is None else "torch"
        defaults.update({k: getattr(tr, k) for k in _TR_KEYS})
        defaults.update(policy.as_dict())
        self._batch_schedule = batch_schedule
        super().__init__(params, defaults, hierarchy=hierarchy, model=model, levels=levels,
                         coarsen=coarsen, n_rows=n_rows, hierarchy_options=hierarchy_options)
        self._check_schedule(batch_schedule)

    def _build_core(self, hyper: dict[str, Any]) -> MGOptSolver:
        h = dict(hyper)
        h.pop("smoother")
        policy = TrustRegionPolicy(**{k: h.pop(k) for k in list(h)
                                      if k in TrustRegionPolicy.__dataclass_fields__})
        tr = TrustRegionConfig(policy=policy, **{k: h.pop(k) for k in _TR_KEYS})
        cfg = MGOptConfig(**h)
        smoothers: list[Any]
        if self._factory is None:
            smoothers = [TrustRegionSolver(tr) for _ in range(self.n_levels)]
        else:
            smoothers = [TorchSmoother(self._factory) for _ in range(self.n_levels)]
        return MGOptSolver(cfg, smoothers, batch_schedule=self._batch_schedule,
                           level_options=self.level_options())

    @property
    def batch_size(self) -> int | None:
        """The batch size to draw for the next step (``None`` without a batch schedule)."""
        return None if self._batch_schedule is None else self._batch_schedule.batch_size
