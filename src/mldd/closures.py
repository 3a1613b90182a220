"""The closure conventions of mldd's optimizers: one rule, checked, with clear errors.

Three kinds of closure exist, told apart by how many positional arguments they take:

=========  ==============================  ==================================================
kind       signature                       who needs it
=========  ==============================  ==================================================
plain      ``closure() -> loss``           methods that only evaluate the optimizer's own
                                           parameters on the whole batch: ``TrustRegion``,
                                           ``LBFGS``, ``ASPQN``, ``MSPQN``, ``APTS`` with a
                                           parameter decomposition. May call ``backward()``
                                           (torch style) where the method needs gradients only.
model      ``closure(model) -> loss``      multilevel methods with depth/width hierarchies:
                                           they evaluate *other* networks (coarse levels) on
                                           the same batch. Must not call ``backward()``.
rows       ``closure(model, rows) -> loss``  methods that evaluate subsets of the batch (data
                                           hierarchies, ``APTS`` with data shards,
                                           ``ASPQN(data_parallel=True)``). ``rows``
                                           is a 1-D ``LongTensor`` of row indices into the
                                           current batch, or ``None`` for all of it.
=========  ==============================  ==================================================

A closure of a richer kind works wherever a poorer one is needed: a *rows* closure serves a
method that needs a *model* closure (it gets ``rows=None``), and a *model* or *rows* closure
serves a method that needs a *plain* one (it gets the optimizer's own model). A poorer closure
where a richer one is needed is an error that says which signature to pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import Tensor, nn

from mldd.objective import ClosureError

#: The closure kinds, poorest first.
KINDS: tuple[str, ...] = ("plain", "model", "rows")

_SIGNATURES = {
    "plain": "closure() -> loss",
    "model": "closure(model) -> loss",
    "rows": "closure(model, rows) -> loss",
}


def required_args(closure: Any) -> int:
    """The number of positional arguments ``closure`` needs (those without defaults)."""
    try:
        sig = inspect.signature(closure)
    except (TypeError, ValueError):
        return 0
    return sum(
        1 for p in sig.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and p.default is inspect.Parameter.empty
    )


def closure_kind(closure: Any) -> str:
    """Classify ``closure`` by the number of positional arguments it accepts.

    Returns:
        ``"plain"`` (0 arguments), ``"model"`` (1) or ``"rows"`` (2 or more, or ``*args``).

    Raises:
        ClosureError: if ``closure`` is not callable or needs more than two arguments.
    """
    if not callable(closure):
        raise ClosureError(f"closure must be callable, got {type(closure).__name__}")
    try:
        sig = inspect.signature(closure)
    except (TypeError, ValueError):  # builtins without a signature: assume torch style
        return "plain"
    required = 0
    accepted = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return "rows"
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            accepted += 1
            if p.default is inspect.Parameter.empty:
                required += 1
    if required > 2:
        raise ClosureError(
            f"closure takes {required} required arguments; mldd closures take at most two: "
            + ", ".join(_SIGNATURES.values())
        )
    return KINDS[min(accepted, 2)]


def require_kind(closure: Any, needed: str, method: str) -> str:
    """Check that ``closure`` can serve a method that needs closures of kind ``needed``.

    Args:
        closure: the user's closure.
        needed: one of :data:`KINDS`.
        method: the method's name, for the error message.

    Returns:
        The closure's own kind.

    Raises:
        ClosureError: naming the signature the method needs.
    """
    if needed not in KINDS:
        raise ValueError(f"needed must be one of {KINDS}, got {needed!r}")
    kind = closure_kind(closure)
    if KINDS.index(kind) < KINDS.index(needed):
        raise ClosureError(
            f"{method} needs a closure of the form {_SIGNATURES[needed]} "
            f"(it evaluates {'coarse networks' if needed == 'model' else 'subsets of the batch'}"
            f"), got one of the form {_SIGNATURES[kind]}; see mldd.closures"
        )
    return kind


def call(closure: Callable[..., Tensor], model: nn.Module | None = None,
         rows: Tensor | None = None) -> Tensor:
    """Call ``closure`` with as many of ``(model, rows)`` as its kind takes.

    A plain closure can only evaluate its own model on the whole batch: calling it with
    ``rows`` is an error (the caller should have used :func:`require_kind`). A closure whose
    arguments all have defaults (such as the trainer's ``closure(model=None, rows=None)``) is
    called bare when neither ``model`` nor ``rows`` is given.
    """
    kind = closure_kind(closure)
    if kind == "plain":
        if rows is not None:
            raise ClosureError(
                "a plain closure() cannot evaluate a subset of the batch; pass "
                + _SIGNATURES["rows"]
            )
        return closure()
    if model is None and rows is None and required_args(closure) == 0:
        # e.g. the trainer's closure(model=None, rows=None): called bare, it is torch style.
        return closure()
    if model is None:
        raise ClosureError(f"a closure of the form {_SIGNATURES[kind]} needs the model to "
                           "evaluate; the optimizer was given none")
    if kind == "model":
        if rows is not None:
            raise ClosureError(
                "a closure(model) cannot evaluate a subset of the batch; pass "
                + _SIGNATURES["rows"]
            )
        return closure(model)
    return closure(model, rows)


def bind(closure: Callable[..., Tensor], model: nn.Module | None = None,
         rows: Tensor | None = None) -> Callable[[], Tensor]:
    """A plain closure evaluating ``closure`` on ``model`` (and ``rows``)."""
    closure_kind(closure)  # validate early
    return lambda: call(closure, model, rows)
