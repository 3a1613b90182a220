"""Nested iteration (cascadic start): train coarse to fine, prolonging the parameters.

docs/algorithms.md §2.5: train level 0 (the coarsest) for a budget of iterations, map its parameters
to level 1 with ``prolong_params`` (``x_1 = P x_0``; for depth and width transfers this is the
linear prolongation, for data levels the identity), train level 1, … up to the finest. The finest
network ends with the result written into its parameters — a warm start for any fine-level
method, or (with a budget on the finest level) a complete, cheap multilevel baseline.

Any ``torch.optim.Optimizer`` works on every level: the optimizer is made by a factory
``optimizer(params) -> Optimizer`` per level, and stepped with a closure built from the user's
*model* closure ``closure(model)`` or *rows* closure ``closure(model, rows)`` (data levels need
the latter; see :mod:`mldd.closures`). Torch optimizers get a torch-style closure
(``zero_grad(); loss.backward()``); mldd's :class:`~mldd.optim.base.FlatOptimizer` shells get
the loss without ``backward()`` so that methods with Hessian-vector products work too.

A non-finite loss never stays in the parameters: the loop remembers the last point whose loss
was finite and returns to it (with a warning) if a step produces non-finite parameters or loss.

References:
    [BD96] Bornemann, Deuflhard. The cascadic multigrid method for elliptic problems.
    Numer. Math. 75, 1996.
    [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
    networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from mldd.closures import call, require_kind
from mldd.linalg.flat import all_finite
from mldd.multilevel.hierarchy import Hierarchy, Level, per_level
from mldd.validation import is_int

__all__ = ["NestedRecord", "NestedResult", "nested_iteration"]

OptimizerFactory = Callable[[list[nn.Parameter]], Optimizer]


@dataclass
class NestedRecord:
    """What happened on one level.

    Attributes:
        level: level index (0 = coarsest).
        kind: how the level was made (:attr:`Level.kind`).
        iterations: optimizer steps taken (fewer than the budget after a non-finite step).
        loss_start: loss at the level's starting point (for ``level > 0`` the prolonged
            parameters of the level below).
        loss_end: loss at the level's final point.
        evaluations: closure calls made on this level (the loss checks included).
        cost: ``evaluations × level cost`` in fine-evaluation equivalents.
        seconds: wall time spent on the level.
    """

    level: int
    kind: str
    iterations: int
    loss_start: float
    loss_end: float
    evaluations: int
    cost: float
    seconds: float


@dataclass
class NestedResult:
    """The outcome of :func:`nested_iteration`.

    Attributes:
        x: the finest level's flat parameters (also written into its model).
        history: one :class:`NestedRecord` per level, coarsest first.
    """

    x: Tensor
    history: list[NestedRecord] = field(default_factory=list)

    @property
    def cost(self) -> float:
        """Total cost in fine-evaluation equivalents."""
        return float(sum(r.cost for r in self.history))


def _prolong_params(transfer: Any, x_c: Tensor) -> Tensor:
    fn = getattr(transfer, "prolong_params", None)
    return fn(x_c) if callable(fn) else transfer.prolong(x_c)


def _is_flat_optimizer(opt: Optimizer) -> bool:
    from mldd.optim.base import FlatOptimizer

    return isinstance(opt, FlatOptimizer)


def nested_iteration(
    hierarchy: Hierarchy,
    closure: Callable[..., Tensor],
    optimizer: OptimizerFactory | Sequence[OptimizerFactory],
    *,
    iterations: int | Sequence[int],
    backward: bool | None = None,
    callback: Callable[[int, int, float], None] | None = None,
) -> NestedResult:
    """Train the levels of ``hierarchy`` from coarsest to finest, prolonging in between.

    Level ``l`` starts from ``P_{l−1} x_{l−1}`` (``prolong_params`` of the transfer below it;
    level 0 from its current parameters), runs ``iterations[l]`` optimizer steps on
    ``closure(level.model, level.rows)``, and hands its parameters up. Levels that share a module
    (data levels) simply continue with the same parameters.

    Args:
        hierarchy: the levels (every level needs a model).
        closure: ``closure(model)`` or ``closure(model, rows)`` returning the loss (a rows closure
            is required if any level has rows). It must not call ``backward()`` itself.
        optimizer: factory ``optimizer(params) -> torch.optim.Optimizer``, or a list with one
            factory per level (coarsest first). A fresh optimizer is made on every level.
        iterations: optimizer steps per level, an int >= 0 or a list (coarsest first); use 0
            on the finest level for a pure warm start.
        backward: whether the step closure calls ``backward()`` (torch style). Default ``None``:
            no for :class:`mldd.optim.base.FlatOptimizer` shells (they differentiate the loss
            themselves), yes for every other optimizer.
        callback: called as ``callback(level, iteration, loss)`` after every step with the loss
            the optimizer returned (the loss where the step started).

    Returns:
        A :class:`NestedResult`; the finest model holds ``result.x``.

    Raises:
        ValueError: for a level without a model, or invalid ``iterations``.
        mldd.objective.ClosureError: for a closure of the wrong kind.
    """
    L = len(hierarchy)
    for i, lev in enumerate(hierarchy):
        if lev.model is None:
            raise ValueError(f"nested_iteration needs a model on every level; level {i} has none")
    needs_rows = any(lev.rows is not None for lev in hierarchy)
    require_kind(closure, "rows" if needs_rows else "model", "nested_iteration")
    budgets = per_level(iterations, L, "iterations")
    for i, b in enumerate(budgets):
        if not is_int(b, 0):
            raise ValueError(f"iterations must be integers >= 0, got {b!r} for level {i}")
    factories = per_level(optimizer if not callable(optimizer) else [optimizer] * L, L,
                          "optimizer")
    for i, fac in enumerate(factories):
        if not callable(fac):
            raise ValueError(f"optimizer must be a factory params -> torch.optim.Optimizer (or a "
                             f"list of them); got {type(fac).__name__} for level {i}")
    if backward is not None and not isinstance(backward, bool):
        raise ValueError(f"backward must be True, False or None, got {backward!r}")

    history: list[NestedRecord] = []
    for l, lev in enumerate(hierarchy):
        if l > 0:
            below = hierarchy[l - 1]
            lev.load_vector(_prolong_params(below.transfer, below.vector()))
        history.append(_train_level(l, lev, closure, factories[l], budgets[l], backward,
                                    callback))
    return NestedResult(hierarchy.finest.vector(), history)


def _train_level(l: int, lev: Level, closure: Callable[..., Tensor], factory: OptimizerFactory,
                 budget: int, backward: bool | None,
                 callback: Callable[[int, int, float], None] | None) -> NestedRecord:
    t0 = time.perf_counter()
    model, rows = lev.model, lev.rows
    params = lev.parameters()
    n_eval = 0

    def loss_now() -> float:
        nonlocal n_eval
        n_eval += 1
        # Not no_grad: PINN losses differentiate the network with respect to its inputs.
        with torch.enable_grad():
            return float(call(closure, model, rows).detach())

    f_start = loss_now()
    x_good, f_good = lev.vector(), f_start
    steps = 0
    if budget > 0:
        opt = factory(params)
        if not isinstance(opt, Optimizer):
            raise ValueError(f"the optimizer factory of level {l} returned "
                             f"{type(opt).__name__}, expected a torch.optim.Optimizer")
        use_backward = (not _is_flat_optimizer(opt)) if backward is None else backward

        def step_closure() -> Tensor:
            nonlocal n_eval
            n_eval += 1
            if use_backward:
                opt.zero_grad(set_to_none=True)
                with torch.enable_grad():
                    loss = call(closure, model, rows)
                    loss.backward()
                return loss
            return call(closure, model, rows)

        for k in range(budget):
            x_before = lev.vector()
            out: Any = opt.step(cast(Callable[[], float], step_closure))
            steps += 1
            # torch convention: the returned loss is the one where the step started.
            if isinstance(out, Tensor):
                out = out.detach()
            f_before = float(out) if out is not None else math.nan
            if out is not None and not math.isfinite(f_before):
                # The previous step led to a non-finite loss: go back to the last good point.
                _rollback(lev, x_good, l, k, "loss")
                break
            if out is not None:
                x_good, f_good = x_before, f_before
            if not all_finite(lev.vector()):
                _rollback(lev, x_good, l, k, "parameters")
                break
            if callback is not None:
                callback(l, k, f_before)
    f_end = loss_now()
    if not math.isfinite(f_end):
        _rollback(lev, x_good, l, steps, "loss")
        f_end = f_good
    return NestedRecord(level=l, kind=lev.kind, iterations=steps, loss_start=f_start,
                        loss_end=f_end, evaluations=n_eval, cost=n_eval * float(lev.cost or 1.0),
                        seconds=time.perf_counter() - t0)


def _rollback(lev: Level, x_good: Tensor, l: int, k: int, what: str) -> None:
    warnings.warn(f"nested_iteration: non-finite {what} on level {l} after step {k}; restoring "
                  "the last point with a finite loss and moving on", RuntimeWarning, stacklevel=3)
    lev.load_vector(x_good)
