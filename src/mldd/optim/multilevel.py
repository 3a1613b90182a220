"""The shared ``torch.optim`` shell of the multilevel optimizers (RMTR, MG/OPT, MOFFO).

A multilevel optimizer trains the parameters of the *finest* level of a
:class:`~mldd.multilevel.Hierarchy` and, at every ``step``, evaluates the coarse levels too. The
shell turns the user's closure into one :class:`~mldd.objective.ParamsObjective` per level,

    ``ParamsObjective(level.model.parameters(), bind(closure, level.model, level.rows))``,

packs them with the hierarchy's transfers and costs into a
:class:`~mldd.multilevel.problem.MultilevelProblem`, and runs one iteration (one cycle) of the
functional core on the flat vector of the fine parameters.

Closure rule (:mod:`mldd.closures`): hierarchies with coarse *networks* (depth, width) need
``closure(model) -> loss``; hierarchies with *data* levels need ``closure(model, rows) -> loss``;
one level accepts a plain ``closure()`` (torch style, ``backward()`` allowed). A closure of the
wrong kind raises :class:`~mldd.objective.ClosureError` naming the signature to pass. A multilevel
step holds its batch fixed: every evaluation of one ``step`` must see the same data.

State: ``state_dict()`` holds the core's whole state (fine radius, every level's solver state
and memory, accumulators, counters, batch-size schedule), every level's evaluation counters, and,
with a ``row_growth`` rule, the levels' rows and cost shares and the rule's state (data levels
may grow, :mod:`mldd.multilevel.row_growth`).
The coarse networks' parameters are *not* state: every cycle restarts each coarse level from
the injection ``Π x`` of the finer iterate, so they never carry information between steps.
"""

from __future__ import annotations

import inspect
import logging
from abc import abstractmethod
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from mldd.closures import bind, require_kind
from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.multilevel.hierarchy import Hierarchy
from mldd.multilevel.problem import MultilevelProblem
from mldd.multilevel.row_growth import RowGrowth
from mldd.objective import ClosureError, EvalCounters, ParamsObjective
from mldd.optim.base import FlatOptimizer, Solver
from mldd.solvers.base import IterationResult

__all__ = ["MultilevelOptimizer", "resolve_hierarchy"]

logger = logging.getLogger(__name__)


def resolve_hierarchy(
    params: list[Tensor],
    hierarchy: Hierarchy | None,
    model: nn.Module | None,
    levels: int | None,
    coarsen: str | Iterable[str],
    n_rows: int | None,
    build_options: Mapping[str, Any] | None,
    owner: str,
) -> Hierarchy | None:
    """The hierarchy an optimizer runs on: the one given, one built from ``model``, or ``None``
    (one level on ``params``, no model known).

    ``levels=None`` means 3 when a hierarchy is built from ``model``, one level without it.

    Raises:
        ValueError: both ``hierarchy`` and ``model`` given, ``levels > 1`` or hierarchy options
            without either, or ``params`` are not exactly the finest level's
            ``model.parameters()`` (same tensors, same order).
    """
    if hierarchy is not None and model is not None:
        raise ValueError(f"{owner}: pass either hierarchy= or model= (to build one), not both")
    if hierarchy is None and model is None:
        if build_options:
            raise ValueError(f"{owner}: hierarchy options {sorted(build_options)} need model=")
        if levels is not None and levels != 1:
            raise ValueError(
                f"{owner}: levels={levels!r} needs model= (the network to coarsen) or "
                "hierarchy=; without them the method runs on one level (levels=1)")
        return None
    if hierarchy is None:
        assert model is not None
        coarsen_arg = coarsen if isinstance(coarsen, str) else tuple(coarsen)
        known = set(inspect.signature(Hierarchy.build).parameters) - {
            "cls", "model", "levels", "coarsen", "n_rows"}
        unknown = sorted(set(build_options or {}) - known)
        if unknown:
            raise ValueError(f"{owner}: unknown hierarchy option(s) {unknown}; allowed: "
                             f"{sorted(known)} (see Hierarchy.build)")
        hierarchy = Hierarchy.build(model, 3 if levels is None else levels, coarsen_arg,
                                    n_rows=n_rows, **dict(build_options or {}))
    if not isinstance(hierarchy, Hierarchy):
        raise ValueError(f"{owner}: hierarchy must be a mldd.multilevel.Hierarchy, got "
                         f"{type(hierarchy).__name__}")
    for i, lev in enumerate(hierarchy):
        if lev.model is None:
            raise ValueError(f"{owner}: level {i} of the hierarchy has no model; every level "
                             "needs a network to evaluate")
    fine = hierarchy.finest.parameters()
    if [id(p) for p in params] != [id(p) for p in fine]:
        raise ValueError(
            f"{owner}: the parameters given must be exactly the finest level's "
            "model.parameters(), in that order (the transfers use that flat layout); pass "
            "hierarchy.finest.model.parameters()")
    return hierarchy


class _ShellState:
    """The core solver plus every level's evaluation counters — what ``state_dict`` saves."""

    def __init__(self, core: Any, n_levels: int, hierarchy: Hierarchy | None = None,
                 row_growth: RowGrowth | None = None) -> None:
        self.core = core
        self.level_counters = [EvalCounters() for _ in range(n_levels)]
        self.hierarchy = hierarchy
        self.row_growth = row_growth
        #: cost of past evaluations not in ``Σ cost_i · count_i`` (a level whose rows grew keeps
        #: its earlier evaluations charged at the old share)
        self.cost_offset = 0.0

    @property
    def counters(self) -> EvalCounters:
        return self.level_counters[-1]

    @counters.setter
    def counters(self, value: EvalCounters) -> None:
        self.level_counters[-1] = value

    @property
    def stop_reason(self) -> str | None:
        reason: str | None = self.core.stop_reason
        return reason

    @stop_reason.setter
    def stop_reason(self, value: str | None) -> None:
        self.core.stop_reason = value

    def iterate(self, objective: Any, x: Tensor) -> IterationResult:
        result: IterationResult = self.core.iterate(objective, x)
        return result

    def state_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"core": self.core.state_dict(),
                             "level_counters": [c.as_dict() for c in self.level_counters],
                             "cost_offset": self.cost_offset}
        if self.row_growth is not None and self.hierarchy is not None:
            # growth changes the data levels' rows and costs; otherwise the build fixes them
            d["rows"] = [None if lev.rows is None else lev.rows.tolist()
                         for lev in self.hierarchy]
            d["costs"] = [lev.cost for lev in self.hierarchy]
            d["row_growth"] = self.row_growth.state_dict()
        return d

    def load_state_dict(self, d: dict[str, Any]) -> None:
        h = self.hierarchy
        if h is not None and "rows" in d and len(d["rows"]) != len(h):
            raise ValueError(f"this state_dict is for {len(d['rows'])} levels, the optimizer's "
                             f"hierarchy has {len(h)}")
        self.core.load_state_dict(d["core"])
        for c, cd in zip(self.level_counters, d["level_counters"], strict=True):
            c.load(cd)
        self.cost_offset = float(d.get("cost_offset", 0.0))
        if h is not None and "rows" in d:
            for lev, rows, cost in zip(h, d["rows"], d["costs"], strict=True):
                device = None if lev.rows is None else lev.rows.device
                lev.rows = None if rows is None else torch.tensor(rows, dtype=torch.long,
                                                                   device=device)
                lev.cost = cost
        if self.row_growth is not None and "row_growth" in d:
            self.row_growth.load_state_dict(d["row_growth"])


class MultilevelOptimizer(FlatOptimizer):
    """Base of :class:`~mldd.optim.RMTR`, :class:`~mldd.optim.MGOpt`, :class:`~mldd.optim.MOFFO`.

    Subclasses implement :meth:`_build_core` (the functional-core solver for the hyper-parameters
    and ``self.n_levels``). ``last_info`` after a step holds the core's info plus ``grad_evals``
    (cumulative cost in fine-gradient equivalents, which :class:`mldd.train.Trainer` reads).
    """

    #: the method's name in error messages.
    method_name = "multilevel optimizer"

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]],
                 defaults: dict[str, Any], *, hierarchy: Hierarchy | None,
                 model: nn.Module | None, levels: int | None, coarsen: str | Iterable[str],
                 n_rows: int | None, hierarchy_options: Mapping[str, Any] | None) -> None:
        groups: list[Any] = []
        flat: list[Tensor] = []
        for g in params:
            if isinstance(g, dict):
                # a group's params may be a generator: materialise it once for both uses
                ps = g["params"]
                ps = [ps] if isinstance(ps, Tensor) else list(ps)
                groups.append({**g, "params": ps})
                flat.extend(ps)
            else:
                groups.append(g)
                flat.append(g)
        self.hierarchy = resolve_hierarchy(flat, hierarchy, model, levels, coarsen, n_rows,
                                           hierarchy_options, self.method_name)
        self.n_levels = 1 if self.hierarchy is None else len(self.hierarchy)
        if self.n_levels > 1:
            assert self.hierarchy is not None and self.hierarchy.finest.model is not None
            frozen = [name for name, p in self.hierarchy.finest.model.named_parameters()
                      if not p.requires_grad]
            if frozen:
                # Coarse corrections are prolongated onto every fine parameter (a coarse block
                # mixes its neighbours), so a frozen one would move.
                raise ValueError(
                    f"{self.method_name}: the model has parameters with requires_grad=False "
                    f"({', '.join(frozen[:5])}{', …' if len(frozen) > 5 else ''}); multilevel "
                    "methods train every parameter of a hierarchy. Unfreeze them, or use a "
                    "single-level method (TrustRegion, LBFGS) on the trainable ones")
        super().__init__(groups, defaults)

    def _check_schedule(self, schedule: Any) -> None:
        """Data levels hold fixed row indices into a batch of ``n_rows`` rows, so the batch size
        must not change under them."""
        from mldd.multilevel.batch_schedule import ConstantBatchSize

        h = self.hierarchy
        if schedule is None or h is None or all(lev.rows is None for lev in h):
            return
        if not (isinstance(schedule, ConstantBatchSize) and schedule.size == h.n_rows):
            raise ValueError(
                f"{self.method_name}: this hierarchy has data levels, which evaluate fixed rows "
                f"of a batch of n_rows={h.n_rows}; a batch schedule that changes the batch size "
                "would invalidate them (use depth/width levels with a batch schedule)")

    def level_options(self) -> list[dict[str, Any]] | None:
        """The hierarchy's per-level ``options`` (coarsest first), or ``None`` for one level."""
        if self.hierarchy is None:
            return None
        return [dict(lev.options) for lev in self.hierarchy]

    @property
    def needed_closure(self) -> str:
        """The closure kind this optimizer needs (``"plain"``, ``"model"`` or ``"rows"``)."""
        h = self.hierarchy
        if h is None:
            return "plain"
        if any(lev.rows is not None for lev in h):
            return "rows"
        return "model" if len(h) > 1 else "plain"

    @abstractmethod
    def _build_core(self, hyper: dict[str, Any]) -> Any:
        """The functional-core solver for ``hyper``."""

    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        state = _ShellState(self._build_core(hyper), self.n_levels, self.hierarchy,
                            getattr(self, "_row_growth", None))
        # FlatOptimizer created self.counters before calling us: make it the fine counters.
        if hasattr(self, "counters") and not hasattr(self, "_solver"):
            state.counters = self.counters
        return state

    @property
    def core(self) -> Any:
        """The functional-core solver (e.g. :class:`~mldd.multilevel.rmtr.RMTRSolver`)."""
        solver = self._solver
        assert isinstance(solver, _ShellState)
        return solver.core

    @property
    def level_counters(self) -> list[EvalCounters]:
        """Every level's evaluation counters, coarsest first."""
        solver = self._solver
        assert isinstance(solver, _ShellState)
        return solver.level_counters

    def _fine_closure(self, closure: Callable[..., Tensor], kind: str) -> Callable[[], Tensor]:
        h = self.hierarchy
        if h is None:
            if kind != "plain":
                raise ClosureError(
                    f"{type(self).__name__} was built from parameters alone, so it has no model to "
                    f"pass to a closure(model...); pass a plain closure() or build the optimizer "
                    f"with model= or hierarchy=")
            return closure
        return h.finest.bind(closure)

    def _problem(self, closure: Callable[..., Tensor]) -> MultilevelProblem:
        """Check the closure's kind and make this step's multilevel problem."""
        if closure is None:
            needed = self.needed_closure
            raise ClosureError(
                f"{type(self).__name__}.step needs a closure of the form "
                + {"plain": "closure() -> loss, e.g. `opt.step(lambda: loss_fn(model(x), y))`",
                   "model": "closure(model) -> loss, e.g. "
                            "`opt.step(lambda m: loss_fn(m(x), y))`",
                   "rows": "closure(model, rows) -> loss, e.g. "
                           "`opt.step(lambda m, rows: loss_fn(m(x[rows]), y[rows]))` "
                           "(rows=None means the whole batch)"}[needed])
        kind = require_kind(closure, self.needed_closure, type(self).__name__)
        counters = self.level_counters
        fine = ParamsObjective(self._params, self._wrap_fine(self._fine_closure(closure, kind)),
                               counters=counters[-1])
        h = self.hierarchy
        if h is None:
            return MultilevelProblem([fine])
        objectives = [ParamsObjective(lev.parameters(), bind(closure, lev.model, lev.rows),
                                      counters=counters[i])
                      for i, lev in enumerate(h.levels[:-1])]
        objectives.append(fine)
        transfers = [lev.transfer for lev in h.levels[:-1]]
        costs = [float(lev.cost if lev.cost is not None else 1.0) for lev in h]
        return MultilevelProblem(objectives, transfers, costs)  # type: ignore[arg-type]

    def _wrap_fine(self, closure: Callable[[], Tensor]) -> Callable[[], Tensor]:
        """Hook: MOFFO wraps the fine closure to report the loss it never uses."""
        return closure

    def _after_step(self, info: dict[str, Any], state: _ShellState) -> None:
        """Hook run after every step with its info: data levels grow here (``row_growth``)."""
        growth = state.row_growth
        if growth is None or self.hierarchy is None or not info.get("corrections"):
            return
        events, offset = growth.observe(self.hierarchy, info["corrections"], state.level_counters)
        state.cost_offset += offset
        if events:
            info["rows_grown"] = [(e.level, e.old, e.new) for e in events]
            for e in events:
                logger.info("%s: level %d now evaluates %d rows (was %d): %d of its last %d "
                            "coarse corrections were rejected", self.method_name, e.level, e.new,
                            e.old, growth.rejections, growth.window)

    def _before_step(self) -> None:
        """Hook run at the start of every step (MOFFO reads a scheduler's ``lr`` here)."""

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One cycle of the method.

        Args:
            closure: ``closure()``, ``closure(model)`` or ``closure(model, rows)`` returning the
                loss on this step's batch (see the module docstring for which one is needed).

        Returns:
            The loss at the parameters the step started from (0-d tensor; torch's convention).
            The new loss is ``last_info["loss"]`` when the method knows it.
        """
        problem = self._problem(closure)  # type: ignore[arg-type]
        self._before_step()
        x = params_to_vector(self._params)
        result = self._iterate_or_restore(problem, x)
        vector_to_params(result.x, self._params)
        info = dict(result.info)
        state = self._solver
        assert isinstance(state, _ShellState)
        cost = float(info.get("cost", problem.cost())) + state.cost_offset
        if "cost" in info:
            info["cost"] = cost
        info["grad_evals"] = cost
        self._after_step(info, state)
        self.last_info = info
        return torch.tensor(self._start_loss(result), dtype=self._params[0].dtype)

    def _start_loss(self, result: IterationResult) -> float:
        return float(result.f_start)

    def __repr__(self) -> str:
        h = "one level" if self.hierarchy is None else repr(self.hierarchy)
        return f"{type(self).__name__}({h})"
