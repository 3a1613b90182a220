"""Local objectives: ``f`` restricted to one subdomain's entries, the others frozen.

For a subdomain ``S`` with restriction ``R`` and extension ``E = Rᵀ`` and a base point ``x̄``
(the outer iterate), the local objective of [KKKK24 §3] is ::

    f_S(z) = f(x̄ + E(z − R x̄)),     ∇f_S(z) = R ∇f(x̄ + E(z − R x̄)),
    ∇²f_S(z) v = R ∇²f(·) E v,

so ``z = R x̄`` is the local starting point and a local correction is ``z* − R x̄``.

Each evaluation is counted exactly once: on the ``counters`` given here (to report local and
global work separately) or, by default, on the wrapped objective's own counters.

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. SIAM J. Sci. Comput. 46(5), 2024.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from mldd.objective import (
    ClosureError,
    EvalCounters,
    MatVec,
    Objective,
    ParamsObjective,
    grads_wrt,
)
from mldd.solvers.lbfgs import LBFGSSolver


class SubspaceObjective(Objective):
    """``z ↦ f(x̄ with x̄[index] = z)`` (see the module docstring).

    Args:
        objective: the global objective ``f``.
        x_base: the frozen point ``x̄`` (copied).
        index: sorted 1-D ``int64`` positions of the free entries.
        counters: where to count this objective's evaluations (default: ``objective.counters``).

    Attributes:
        x_base: the frozen point.
        index: the free positions.
        z0: ``R x̄``, the local starting point.
    """

    def __init__(self, objective: Objective, x_base: Tensor, index: Tensor,
                 counters: EvalCounters | None = None) -> None:
        super().__init__(counters if counters is not None else objective.counters)
        if x_base.dim() != 1:
            raise ValueError(f"x_base must be a flat 1-D vector, got shape {tuple(x_base.shape)}")
        if index.dim() != 1 or index.numel() == 0:
            raise ValueError("index must be a non-empty 1-D tensor of positions")
        self.objective = objective
        self.x_base = x_base.detach().clone()
        self.index = index.to(device=x_base.device, dtype=torch.int64)
        k = self.index.numel()
        start, stop = int(self.index[0]), int(self.index[-1]) + 1
        # A contiguous range (one layer block) lets us write and read by slicing.
        self._span = (start, stop) if stop - start == k else None
        self.n = k
        self.dtype = x_base.dtype
        self.device = x_base.device
        self.z0 = self.restrict(self.x_base)
        self._last: tuple[Tensor, float, Tensor] | None = None  # (z, f, full ∇f) of the last eval

    def restrict(self, v: Tensor) -> Tensor:
        """``R v`` (a copy)."""
        if self._span is not None:
            return v[self._span[0]:self._span[1]].clone()
        return v.index_select(0, self.index)

    def full(self, z: Tensor) -> Tensor:
        """``x̄ + E(z − R x̄)``: the full vector with the free entries set to ``z``."""
        if z.shape != (self.n,):
            raise ValueError(f"local vector has shape {tuple(z.shape)}, expected ({self.n},)")
        x = self.x_base.clone()
        if self._span is not None:
            x[self._span[0]:self._span[1]] = z
        else:
            x.index_copy_(0, self.index, z)
        return x

    # The wrapped objective's uncounted methods are used so that each evaluation is counted once
    # (here), not also on the global counters when separate local counters are given.
    def _value(self, z: Tensor) -> Tensor:
        return self.objective._value(self.full(z))

    def _value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.objective._value_and_grad(self.full(z))
        self._last = (z.clone(), float(f), g)
        return f, self.restrict(g)

    def full_evaluation(self, z: Tensor) -> tuple[float, Tensor] | None:
        """``(f, ∇f)`` of the *full* vector at ``x̄ + E(z − R x̄)`` if the last gradient
        evaluation was at exactly ``z`` (it is free: the global gradient was computed anyway).

        The multiplicative sweep uses it to start the next subdomain without re-evaluating, and
        the subspace combination to get its secants.
        """
        if self._last is None or not torch.equal(self._last[0], z):
            return None
        return self._last[1], self._last[2]

    def _linearize(self, z: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        f, g, hv = self.objective._linearize(self.full(z))

        def local_hv(v: Tensor) -> Tensor:
            e = torch.zeros_like(self.x_base)
            if self._span is not None:
                e[self._span[0]:self._span[1]] = v
            else:
                e.index_copy_(0, self.index, v)
            return self.restrict(hv(e))

        return f, self.restrict(g), local_hv


class ParamsSubspaceObjective(SubspaceObjective):
    """:class:`SubspaceObjective` over a module's parameters that differentiates only the
    parameters overlapping the subdomain.

    While it evaluates, every other parameter has ``requires_grad`` switched off (and restored
    afterwards), so autograd neither records nor runs the backward paths that lead only to frozen
    parameters: for a layer subdomain the backward pass stops at that layer. This works for
    torch-style closures that call ``backward()`` as well as for closures that return the loss.
    Measured on Burgers (8×20 MLP, 2,000 points, 1 thread): a layer gradient costs 0.35–1.0× a
    full gradient (later layers are cheaper), about 0.65× on average over the 9 layers.

    The full gradient is not computed, so :meth:`full_evaluation` always returns ``None``.

    Args:
        objective: a :class:`~mldd.objective.ParamsObjective`.
        x_base, index, counters: as for :class:`SubspaceObjective`.
    """

    def __init__(self, objective: ParamsObjective, x_base: Tensor, index: Tensor,
                 counters: EvalCounters | None = None) -> None:
        super().__init__(objective, x_base, index, counters)
        self.params_objective = objective
        held = torch.zeros(objective.n, dtype=torch.bool)
        held[self.index.cpu()] = True
        self.active: list[Tensor] = []
        self.frozen: list[Tensor] = []
        ranges = []
        offset = 0
        for p in objective.params:
            k = p.numel()
            if bool(held[offset:offset + k].any()):
                self.active.append(p)
                ranges.append(torch.arange(offset, offset + k))
            else:
                self.frozen.append(p)
            offset += k
        # Positions of the subdomain inside the concatenated gradient of the active parameters.
        active_pos = torch.cat(ranges)
        lookup = torch.full((objective.n,), -1, dtype=torch.int64)
        lookup[active_pos] = torch.arange(active_pos.numel())
        self._pick = lookup[self.index.cpu()].to(x_base.device)

    def _evaluate(self, z: Tensor, need_grad: bool) -> tuple[Tensor, Tensor | None]:
        obj = self.params_objective
        switched = [p for p in self.frozen if p.requires_grad]
        for p in switched:
            p.requires_grad_(False)
        try:
            loss, did_backward = obj._run(self.full(z))
            if not need_grad:
                return loss.detach(), None
            if did_backward:
                grads = [p.grad for p in self.active]
            else:
                if not loss.requires_grad:
                    raise ClosureError(
                        "the closure neither called backward() nor returned a loss attached to "
                        "the parameters' graph; return the loss tensor computed from the model")
                grads = grads_wrt(loss, self.active)
        finally:
            for p in switched:
                p.requires_grad_(True)
        flat = torch.cat([torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if g is None
                          else g.reshape(-1) for p, g in zip(self.active, grads, strict=True)])
        return loss.detach(), flat.index_select(0, self._pick)

    def _value(self, z: Tensor) -> Tensor:
        return self._evaluate(z, need_grad=False)[0]

    def _value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self._evaluate(z, need_grad=True)
        assert g is not None
        return f, g


def local_objective(objective: Objective, x_base: Tensor, index: Tensor,
                    counters: EvalCounters | None = None) -> SubspaceObjective:
    """The default local objective: :class:`ParamsSubspaceObjective` for a module's parameters
    (cheaper backward), :class:`SubspaceObjective` otherwise."""
    if isinstance(objective, ParamsObjective):
        return ParamsSubspaceObjective(objective, x_base, index, counters)
    return SubspaceObjective(objective, x_base, index, counters)


@runtime_checkable
class FullEvaluation(Protocol):
    """A local objective that can hand back the full gradient of its last evaluation."""

    def full_evaluation(self, z: Tensor) -> tuple[float, Tensor] | None: ...


@dataclass
class LocalSolve:
    """The outcome of :func:`lbfgs_iterations` on one subspace.

    Attributes:
        z0: the local starting point ``R x̄``.
        z: the local end point.
        f: the loss at the end point.
        iterations: iterations run (≤ the budget; fewer when the local solver stopped).
        full: ``(f, ∇f)`` of the full vector at the end point when the local objective knows it.
        stop_reason: why the local solver stopped early (``None`` when it used its budget).
    """

    z0: Tensor
    z: Tensor
    f: float
    iterations: int
    full: tuple[float, Tensor] | None
    stop_reason: str | None

    @property
    def correction(self) -> Tensor:
        """``z − z0``."""
        return self.z - self.z0


def lbfgs_iterations(solver: LBFGSSolver, objective: Objective, z0: Tensor, iters: int, *,
                     f0: float | None = None, g0: Tensor | None = None) -> LocalSolve:
    """Run up to ``iters`` iterations of ``solver`` on ``objective`` from ``z0``.

    When ``(f0, g0)`` at ``z0`` are known (the outer iterate's loss and restricted gradient),
    they seed the solver's evaluation cache so the first iteration costs no evaluation. The
    solver's memory is used as it is: reset it before the call for the paper's restart.
    """
    z0 = z0.detach().clone()  # callers often pass a view of the outer iterate
    solver.stop_reason = None
    if f0 is not None and g0 is not None:
        solver.cache.put(z0, float(f0), g0)
    else:
        solver.cache.clear()
    z, f, done = z0, (float(f0) if f0 is not None else float("nan")), 0
    for _ in range(iters):
        r = solver.iterate(objective, z)
        z, f, done = r.x, float(r.info["loss"]), done + 1
        if solver.stop_reason is not None:
            break
    full = objective.full_evaluation(z) if isinstance(objective, FullEvaluation) else None
    if done == 0 and f0 is None:
        f = float(objective.value(z))
    return LocalSolve(z0, z, f, done, full, solver.stop_reason)
