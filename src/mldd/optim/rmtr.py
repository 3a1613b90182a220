"""``mldd.optim.RMTR``: one recursive multilevel trust-region cycle per ``step``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from mldd.globalization.trust_region import TrustRegionPolicy
from mldd.multilevel.batch_schedule import BatchSchedule
from mldd.multilevel.hierarchy import Hierarchy
from mldd.multilevel.rmtr import RMTRConfig, RMTRSolver
from mldd.multilevel.row_growth import RowGrowth, as_row_growth, growable_levels
from mldd.optim.multilevel import MultilevelOptimizer
from mldd.solvers.trust_region import TrustRegionConfig

_CYCLE_KEYS = ("cycle", "pre_smoothing", "post_smoothing", "pre_successes", "post_successes",
               "coarse_iterations", "coarse_successes", "coarse_model", "hybrid_gamma",
               "zeroth_order", "kappa_g", "restricted_grad_tol", "descent_reference",
               "boundary_fraction", "coarse_memory", "coarse_radius",
               "correction_radius")


class RMTR(MultilevelOptimizer):
    """Recursive multilevel trust region [GST08, KK22] — one V- or W-cycle per ``step``.

    Each step smooths with trust-region iterations (L-SR1 + OBS by default) on the fine network,
    descends to the coarser networks of the hierarchy through first-order coherent coarse models
    (their iterates never leave the fine trust region), accepts the prolongated coarse correction
    only if the fine ratio test gives ``ρ > ρ_tol``, and smooths again. With one level it is
    exactly :class:`~mldd.optim.TrustRegion` (see :mod:`mldd.multilevel.rmtr` for the algorithm,
    defaults and the parts that are our choices).

    Args:
        params: the finest network's parameters (``model.parameters()``, in that order).
        hierarchy: a :class:`~mldd.multilevel.Hierarchy` whose finest model owns ``params``.
        model: alternatively, the fine network; a hierarchy is built with
            ``Hierarchy.build(model, levels, coarsen, n_rows=n_rows, **hierarchy_options)``.
        levels, coarsen, n_rows, hierarchy_options: see :meth:`Hierarchy.build` (defaults 3,
            ``"depth"``). Without ``model=`` or ``hierarchy=`` the method runs on one level, and
            ``levels > 1`` is an error.
        cycle: ``"V"`` (default) or ``"W"``.
        pre_smoothing, post_smoothing: trust-region trials per smoothing phase (0, 1).
        pre_successes, post_successes: stop a phase after this many accepted steps (1, 1).
        coarse_iterations, coarse_successes: trials/successes on the coarsest level (10, 10).
        coarse_model: ``"additive"`` (default), ``"multiplicative"`` or ``"hybrid"``.
        hybrid_gamma: the hybrid model's additive weight (0.5).
        zeroth_order: the additive part's zeroth-order term (``None``: off for additive, on for
            hybrid).
        kappa_g, restricted_grad_tol, descent_reference: descent test ``‖R g‖ ≥ κ_g‖g‖``,
            ``‖R g‖ > ε`` (1/8, 1e-9, ``"fine"``).
        boundary_fraction: stop a coarse solve once ``‖P(x_c − x_c0)‖ > (1 − this)Δ`` (1e-3).
        coarse_memory: ``"keep"`` (default) or ``"reset"`` each coarse level's L-SR1 pairs
            between visits.
        coarse_radius: a visit starts from the coarse level's own last radius capped by the
            finer one (``"keep"``, default) or from the finer radius (``"fine"``).
        correction_radius: coarse corrections keep their own radius (``"separate"``, default)
            or share the smoother's (``"shared"``, [GST08]). The defaults were chosen by
            measurement (:mod:`mldd.multilevel.rmtr`, "Defaults").
        hessian, memory, subproblem, norm, radius, eta1, eta2, rho_tol, gamma1, gamma2,
            radius_min, radius_max, cg_rtol, cg_max_iter, tolerance_grad, lsr1_gamma: the
            trust-region options of every level, as for :class:`~mldd.optim.TrustRegion`.
        reuse_evaluations: reuse the last fine evaluation at the start of the next step (True);
            set False when each step's closure sees a new mini-batch.
        batch_schedule: a :class:`~mldd.multilevel.batch_schedule.BatchSchedule` (e.g.
            ``GeometricBatchSize(64, maximum=n)``); read :attr:`batch_size` before drawing the
            next batch. Its state is part of ``state_dict``.
        row_growth: let data levels grow (:class:`~mldd.multilevel.row_growth.RowGrowth`):
            ``True`` for the defaults (double a data level's rows, up to half of the finer
            level's, once 2 of its last 3 coarse corrections were rejected), a dict of
            ``RowGrowth`` options, a ``RowGrowth``, or ``None``/``False`` (default: fixed rows).
            Each growth is logged, listed in ``last_info["rows_grown"]`` and saved in
            ``state_dict`` with the new rows.

    Per-level options: a hierarchy level's ``options`` may override the smoothing counts on
    that level (:data:`mldd.multilevel.rmtr.LEVEL_OPTIONS`), e.g.
    ``Hierarchy.build(net, 3, options={"coarse_iterations": [5, 2, 2]})``.

    Closure: ``closure(model)`` for depth/width hierarchies, ``closure(model, rows)`` for data
    hierarchies, plain ``closure()`` for one level (:mod:`mldd.optim.multilevel`).

    Example:
        >>> h = mldd.multilevel.Hierarchy.build(net, levels=2, coarsen="depth")
        >>> opt = mldd.optim.RMTR(net.parameters(), hierarchy=h)
        >>> for _ in range(100):
        ...     opt.step(lambda m: loss_fn(m(x), y))
        >>> opt.last_info["coarse_accepted"], opt.last_info["grad_evals"]

    References:
        [GST08] Gratton, Sartenaer, Toint. SIAM J. Optim. 19(1), 2008.
        [KK22] Kopaničáková, Krause. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
    """

    method_name = "RMTR"

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
        cycle: str = "V",
        pre_smoothing: int = 0,
        post_smoothing: int = 1,
        pre_successes: int = 1,
        post_successes: int = 1,
        coarse_iterations: int = 10,
        coarse_successes: int = 10,
        coarse_model: str = "additive",
        hybrid_gamma: float = 0.5,
        zeroth_order: bool | None = None,
        kappa_g: float = 0.125,
        restricted_grad_tol: float = 1e-9,
        descent_reference: str = "fine",
        boundary_fraction: float = 1e-3,
        coarse_memory: str = "keep",
        coarse_radius: str = "keep",
        correction_radius: str = "separate",
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
        reuse_evaluations: bool = True,
        batch_schedule: BatchSchedule | None = None,
        row_growth: RowGrowth | Mapping[str, Any] | bool | None = None,
    ) -> None:
        policy = TrustRegionPolicy(eta1=eta1, eta2=eta2, rho_tol=rho_tol, gamma1=gamma1,
                                   gamma2=gamma2, radius_min=radius_min, radius_max=radius_max)
        tr = TrustRegionConfig(hessian=hessian, memory=memory, subproblem=subproblem, norm=norm,
                               radius=radius, policy=policy, cg_rtol=cg_rtol,
                               cg_max_iter=cg_max_iter, tolerance_grad=tolerance_grad,
                               lsr1_gamma=lsr1_gamma, reuse_evaluations=reuse_evaluations)
        cfg = RMTRConfig(trust_region=tr, cycle=cycle, pre_smoothing=pre_smoothing,
                         post_smoothing=post_smoothing, pre_successes=pre_successes,
                         post_successes=post_successes, coarse_iterations=coarse_iterations,
                         coarse_successes=coarse_successes, coarse_model=coarse_model,
                         hybrid_gamma=hybrid_gamma, zeroth_order=zeroth_order, kappa_g=kappa_g,
                         restricted_grad_tol=restricted_grad_tol,
                         descent_reference=descent_reference,
                         boundary_fraction=boundary_fraction, coarse_memory=coarse_memory,
                         coarse_radius=coarse_radius, correction_radius=correction_radius)
        defaults = asdict(cfg)
        tr_defaults = defaults.pop("trust_region")
        tr_defaults.update(tr_defaults.pop("policy"))
        defaults.update(tr_defaults)
        self._batch_schedule = batch_schedule
        self._row_growth = as_row_growth(row_growth)
        super().__init__(params, defaults, hierarchy=hierarchy, model=model, levels=levels,
                         coarsen=coarsen, n_rows=n_rows, hierarchy_options=hierarchy_options)
        self._check_schedule(batch_schedule)
        if self._row_growth is not None and (
                self.hierarchy is None or not growable_levels(self.hierarchy)):
            raise ValueError(
                f"RMTR: row_growth={row_growth!r} needs a hierarchy with data levels (e.g. "
                "coarsen='data' with n_rows=...), which evaluate a subset of the rows; this "
                f"one has none ({self.hierarchy!r})")

    def _build_core(self, hyper: dict[str, Any]) -> RMTRSolver:
        h = dict(hyper)
        cycle_opts = {k: h.pop(k) for k in _CYCLE_KEYS}
        policy = TrustRegionPolicy(**{k: h.pop(k) for k in list(h)
                                      if k in TrustRegionPolicy.__dataclass_fields__})
        tr = TrustRegionConfig(policy=policy, **h)
        return RMTRSolver(RMTRConfig(trust_region=tr, **cycle_opts), self.n_levels,
                          batch_schedule=self._batch_schedule, level_options=self.level_options())

    @property
    def radius(self) -> float:
        """The fine trust-region radius Δ."""
        core = self.core
        assert isinstance(core, RMTRSolver)
        return core.radius

    @property
    def batch_size(self) -> int | None:
        """The batch size to draw for the next step (``None`` without a batch schedule)."""
        return None if self._batch_schedule is None else self._batch_schedule.batch_size
