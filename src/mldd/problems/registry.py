"""Name → problem builder. The only place where problem names users type are resolved."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from mldd.problems.base import Problem

_REGISTRY: dict[str, Callable[..., Problem]] = {}
_DESCRIPTIONS: dict[str, str] = {}


Builder = Callable[..., Problem]


def register(name: str, description: str = "") -> Callable[[Builder], Builder]:
    """Decorator registering a problem class or factory under ``name``."""

    def deco(builder: Callable[..., Problem]) -> Callable[..., Problem]:
        if name in _REGISTRY:
            raise ValueError(f"problem {name!r} is already registered")
        _REGISTRY[name] = builder
        doc = (builder.__doc__ or "").strip().splitlines()
        _DESCRIPTIONS[name] = description or (doc[0] if doc else "")
        return builder

    return deco


def available() -> list[str]:
    """The registered problem names, sorted."""
    return sorted(_REGISTRY)


def describe_all() -> dict[str, str]:
    """Name → one-line description of every registered problem."""
    return {k: _DESCRIPTIONS[k] for k in available()}


def get(name: str, **options: Any) -> Problem:
    """Build the problem ``name`` with keyword ``options``.

    Raises:
        KeyError: for an unknown name; the message lists the known names.
        TypeError: for an option the problem does not take; the message lists those it takes.
    """
    if name not in _REGISTRY:
        raise KeyError(f"unknown problem {name!r}; known problems: {', '.join(available())}")
    builder = _REGISTRY[name]
    try:
        params = inspect.signature(builder).parameters.values()
    except (TypeError, ValueError):  # no signature to check against
        params = None
    if params is not None and not any(p.kind == p.VAR_KEYWORD for p in params):
        names = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        for k in options:
            if k not in names:
                raise TypeError(f"problem {name!r} has no option {k!r}; allowed: "
                                f"{', '.join(names) or '(none)'}")
    return builder(**options)
