"""The objective ``f: R^n -> R`` every mldd algorithm minimises, on flat parameter vectors.

An :class:`Objective` hides where the loss comes from — a plain function of a vector, or a
``torch.nn.Module``'s parameters plus a closure — and counts every evaluation, so that each
method's cost can be reported honestly (docs/algorithms.md §1.5).

Closure rule (one rule for the whole library):

* A closure takes no argument and returns the loss as a 0-d tensor.
* It **may** call ``backward()`` itself, as torch closures do (``zero_grad(); loss = ...;
  loss.backward(); return loss``). mldd sets every ``.grad`` to ``None`` before calling it and
  reads the gradients it left behind. That is enough for every method that needs only gradients.
* Methods that need Hessian-vector products (``TrustRegion(hessian="exact")``) must differentiate
  the loss twice, so their closure must return the loss **without** calling ``backward()``; mldd
  then differentiates it itself. A closure that did call ``backward()`` there raises
  :class:`ClosureError` explaining this.

Notation: ``x`` the flat parameter vector, ``f = f(x)``, ``g = ∇f(x)``, ``Hv = ∇²f(x) v``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mldd.linalg.flat import flat_grad, flatten, numel, params_to_vector, vector_to_params

Closure = Callable[[], Tensor]
MatVec = Callable[[Tensor], Tensor]


class ClosureError(TypeError):
    """A closure that cannot serve the method that called it (wrong return type, wrong kind)."""


@dataclass
class EvalCounters:
    """How many times the objective was evaluated.

    Attributes:
        n_f: loss evaluations (every closure call or function call, except the gradient-only
            evaluations of :meth:`Objective.grad`, which objective-function-free methods use).
        n_g: gradient evaluations (a loss+gradient evaluation counts once here and once in n_f).
        n_hvp: Hessian-vector products.
    """

    n_f: int = 0
    n_g: int = 0
    n_hvp: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dict (for logs and ``state_dict``)."""
        return {"n_f": self.n_f, "n_g": self.n_g, "n_hvp": self.n_hvp}

    def load(self, d: dict[str, int]) -> None:
        """Restore counters saved by :meth:`as_dict`."""
        self.n_f, self.n_g, self.n_hvp = int(d["n_f"]), int(d["n_g"]), int(d["n_hvp"])


def _check_loss(loss: object) -> Tensor:
    if not isinstance(loss, Tensor):
        raise ClosureError(
            f"the closure returned {type(loss).__name__}; it must return the loss as a 0-d "
            "torch.Tensor (e.g. `return loss`, not `return loss.item()`)"
        )
    if loss.numel() != 1:
        raise ClosureError(
            f"the closure returned a tensor of shape {tuple(loss.shape)}; the loss must be a "
            "scalar (reduce it with .mean() or .sum())"
        )
    return loss.reshape(())


class Objective(ABC):
    """Base class: ``f``, ``(f, ∇f)`` and Hessian-vector products at a flat point ``x``.

    Subclasses implement :meth:`_value`, :meth:`_value_and_grad` and :meth:`_linearize`; this
    class counts the evaluations. Values are returned as detached 0-d tensors in the objective's
    dtype so that no host synchronisation is forced where none is needed.
    """

    n: int
    dtype: torch.dtype
    device: torch.device

    def __init__(self, counters: EvalCounters | None = None) -> None:
        # Optimizers pass their own counters so that counts survive across closures and steps.
        self.counters = counters if counters is not None else EvalCounters()

    # -- public API -------------------------------------------------------------------------
    def value(self, x: Tensor) -> Tensor:
        """``f(x)`` (detached 0-d tensor)."""
        self.counters.n_f += 1
        return self._value(x)

    def value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x), ∇f(x))``; the gradient is a new flat tensor."""
        self.counters.n_f += 1
        self.counters.n_g += 1
        return self._value_and_grad(x)

    def linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        """``(f(x), ∇f(x), v ↦ ∇²f(x) v)`` by double backward.

        The returned matvec reuses one retained graph, so several products at the same ``x``
        (as in truncated CG) cost one backward each, not a full re-evaluation.
        """
        self.counters.n_f += 1
        self.counters.n_g += 1
        f, g, hv = self._linearize(x)

        def counted(v: Tensor) -> Tensor:
            self.counters.n_hvp += 1
            return hv(v)

        return f, g, counted

    def hvp(self, x: Tensor, v: Tensor) -> Tensor:
        """One Hessian-vector product ``∇²f(x) v``."""
        return self.linearize(x)[2](v)

    def grad(self, x: Tensor) -> Tensor:
        """``∇f(x)`` alone, for methods that never use the loss value (objective-function-free
        methods such as MOFFO). Counts a gradient evaluation (``n_g``) but no loss evaluation:
        ``n_f`` counts the loss values an algorithm *uses*, and such a method uses none (the
        closure still runs its forward pass, as every gradient needs one).
        """
        self.counters.n_g += 1
        return self._grad(x)

    def grad_and_value(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x), ∇f(x))`` counted like :meth:`grad` (``n_g`` only): the value comes with the
        gradient anyway, and an objective-function-free method looks at it only to refuse a
        NaN/Inf loss, never to decide a step.
        """
        self.counters.n_g += 1
        return self._value_and_grad(x)

    def _grad(self, x: Tensor) -> Tensor:
        """``∇f(x)`` without counting (default: from :meth:`_value_and_grad`)."""
        return self._value_and_grad(x)[1]

    # -- to implement -------------------------------------------------------------------------
    @abstractmethod
    def _value(self, x: Tensor) -> Tensor:
        """``f(x)`` without counting."""

    @abstractmethod
    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(x), ∇f(x))`` without counting."""

    @abstractmethod
    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        """``(f, g, v ↦ Hv)`` without counting."""


class FunctionObjective(Objective):
    """An objective given as a plain differentiable function of a flat vector.

    Args:
        fn: ``fn(x) -> 0-d tensor``, differentiable by autograd.
        n: dimension of ``x``.
        dtype: dtype of ``x``.
        device: device of ``x``.

    Example:
        >>> obj = FunctionObjective(lambda x: (x ** 2).sum(), n=3, dtype=torch.float64)
        >>> obj.value_and_grad(torch.ones(3, dtype=torch.float64))[1]
        tensor([2., 2., 2.], dtype=torch.float64)
    """

    def __init__(
        self,
        fn: Callable[[Tensor], Tensor],
        n: int,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
        counters: EvalCounters | None = None,
    ) -> None:
        super().__init__(counters)
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.n = int(n)
        self.dtype = dtype
        self.device = torch.device(device)

    def _call(self, x: Tensor) -> Tensor:
        return _check_loss(self.fn(x))

    def _value(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self._call(x).detach()

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            f = self._call(xr)
            (g,) = torch.autograd.grad(f, xr, allow_unused=True)
        if g is None:
            g = torch.zeros_like(x)
        return f.detach(), g

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        with torch.enable_grad():
            xr = x.detach().requires_grad_(True)
            f = self._call(xr)
            (g,) = torch.autograd.grad(f, xr, create_graph=True)

        def hv(v: Tensor) -> Tensor:
            with torch.enable_grad():
                (out,) = torch.autograd.grad(g, xr, grad_outputs=v, retain_graph=True,
                                             allow_unused=True)
            return torch.zeros_like(v) if out is None else out.detach()

        return f.detach(), g.detach(), hv


def grads_wrt(output: Tensor, params: Sequence[Tensor], **kwargs: Any) -> list[Tensor | None]:
    """``torch.autograd.grad(output, params)`` with ``None`` for parameters that do not require
    gradients (frozen ones): their gradient is zero, as when a closure's ``backward()`` leaves
    their ``.grad`` unset, so no method moves them."""
    if all(p.requires_grad for p in params):
        return list(torch.autograd.grad(output, params, allow_unused=True, **kwargs))
    live = [i for i, p in enumerate(params) if p.requires_grad]
    out: list[Tensor | None] = [None] * len(params)
    if live:
        got = torch.autograd.grad(output, [params[i] for i in live], allow_unused=True, **kwargs)
        for i, g in zip(live, got, strict=True):
            out[i] = g
    return out


class ParamsObjective(Objective):
    """An objective over a list of parameters, evaluated by a closure (see the module's rule).

    Evaluating at ``x`` first writes ``x`` into the parameters; after any evaluation the
    parameters hold the last evaluated point (the optimizers write the accepted point back).

    Args:
        params: the parameters (all in one dtype and on one device).
        closure: a zero-argument callable returning the loss as a 0-d tensor.
        counters: counters to add to (a new set by default).
    """

    def __init__(
        self, params: Sequence[Tensor], closure: Closure, counters: EvalCounters | None = None
    ) -> None:
        super().__init__(counters)
        if not callable(closure):
            raise ClosureError(
                f"closure must be a callable returning the loss, got {type(closure).__name__}"
            )
        self.params = list(params)
        if not self.params:
            raise ValueError("ParamsObjective needs at least one parameter")
        dtypes = {p.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"all parameters must share one dtype, got {sorted(map(str, dtypes))}")
        self.closure = closure
        self.n = numel(self.params)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        # What the parameters hold since the last :meth:`set`: the vector written and the
        # version counters (of that vector and of every parameter) right after the write.
        self._written: tuple[Tensor, int, tuple[int, ...]] | None = None

    def current(self) -> Tensor:
        """A flat copy of the parameters' current values."""
        return params_to_vector(self.params)

    def set(self, x: Tensor) -> None:
        """Write ``x`` into the parameters."""
        vector_to_params(x, self.params)
        self._written = (x, x._version, tuple(p._version for p in self.params))

    def holds(self, x: Tensor) -> bool:
        """Whether the parameters provably hold ``x``: it was the last vector :meth:`set` wrote,
        and neither it nor any parameter has been modified in place since (version counters).

        Lets the optimizers skip writing back a point that the last evaluation left in place
        (an accepted trial). ``False`` only means "not known"; writing then is always correct.
        """
        w = self._written
        return (w is not None and w[0] is x and w[1] == x._version
                and w[2] == tuple(p._version for p in self.params))

    def _run(self, x: Tensor) -> tuple[Tensor, bool]:
        """Call the closure at ``x``; returns the loss and whether the closure ran backward."""
        self.set(x)
        for p in self.params:
            p.grad = None
        with torch.enable_grad():
            loss = _check_loss(self.closure())
        did_backward = any(p.grad is not None for p in self.params)
        return loss, did_backward

    def _value(self, x: Tensor) -> Tensor:
        loss, _ = self._run(x)
        return loss.detach()

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        loss, did_backward = self._run(x)
        if did_backward:
            return loss.detach(), flat_grad(self.params)
        if not loss.requires_grad:
            raise ClosureError(
                "the closure neither called backward() nor returned a loss attached to the "
                "parameters' graph; return the loss tensor computed from the model"
            )
        grads = grads_wrt(loss, self.params)
        return loss.detach(), flatten(grads, like=self.params)

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        loss, did_backward = self._run(x)
        if did_backward:
            raise ClosureError(
                "this method needs Hessian-vector products, so its closure must return the loss "
                "WITHOUT calling loss.backward() (mldd differentiates it twice itself); "
                "write `def closure(): return loss_fn(model(x), y)`"
            )
        if not loss.requires_grad:
            raise ClosureError("the closure returned a loss that does not depend on the parameters")
        params = self.params
        with torch.enable_grad():
            grads = grads_wrt(loss, params, create_graph=True)
        gflat = flatten(grads, like=params)

        def hv(v: Tensor) -> Tensor:
            if not gflat.requires_grad:  # the loss is linear in the parameters
                return torch.zeros_like(v)
            with torch.enable_grad():
                out = grads_wrt(gflat, params, grad_outputs=v, retain_graph=True)
            return flatten(out, like=params).detach()

        return loss.detach(), gflat.detach(), hv
