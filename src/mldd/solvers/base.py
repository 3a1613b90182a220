"""Shared pieces of the single-level solvers: results, cached evaluations, config checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from mldd.linalg.flat import all_finite
from mldd.objective import EvalCounters, Objective


@dataclass
class IterationResult:
    """What one iteration did.

    Attributes:
        x: the iterate after the iteration (the input ``x`` itself when rejected or stopped).
        f_start: the loss at the starting point.
        info: loss, gradient norm, step data, accepted flag, counters, stop reason.
    """

    x: Tensor
    f_start: float
    info: dict[str, Any] = field(default_factory=dict)


class EvaluationCache:
    """The loss and gradient at the current iterate, kept so the next iteration need not re-run
    the closure (the trial evaluation that accepted a point already computed them).

    Valid only for deterministic closures; solvers bypass it when ``reuse_evaluations=False``.
    """

    def __init__(self) -> None:
        self.x: Tensor | None = None
        self.f: float | None = None
        self.g: Tensor | None = None
        self._x_version = 0

    def get(self, x: Tensor) -> tuple[float, Tensor] | None:
        """The cached ``(f, g)`` if they were computed at exactly ``x``."""
        if self.x is None or self.f is None or self.g is None:
            return None
        if self.x._version != self._x_version:  # modified in place since put(): unusable
            self.clear()
            return None
        if self.x is not x and (self.x.shape != x.shape or not torch.equal(self.x, x)):
            return None
        return self.f, self.g

    def put(self, x: Tensor, f: float, g: Tensor | None) -> None:
        """Remember ``(f, g)`` at ``x`` (``g=None`` clears the cache).

        ``x`` is kept by reference, not copied (a pass over ``n`` per iteration saved): solvers
        never modify their iterates in place, and if anything does, the version counter
        recorded here invalidates the entry.
        """
        if g is None:
            self.clear()
            return
        self.x, self.f, self.g = x, f, g
        self._x_version = x._version

    def clear(self) -> None:
        """Forget the cached evaluation."""
        self.x = self.f = self.g = None

    def state_dict(self) -> dict[str, Any]:
        """Cached tensors (cloned) for checkpoints."""
        return {
            "x": None if self.x is None else self.x.clone(),
            "f": self.f,
            "g": None if self.g is None else self.g.clone(),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.x = None if d["x"] is None else d["x"].clone()
        self.f = None if d["f"] is None else float(d["f"])
        self.g = None if d["g"] is None else d["g"].clone()
        self._x_version = 0 if self.x is None else self.x._version


def evaluate_at(objective: Objective, cache: EvaluationCache, x: Tensor,
                reuse: bool) -> tuple[float, Tensor]:
    """``(f(x), ∇f(x))``, from the cache when allowed and valid."""
    hit = cache.get(x) if reuse else None
    if hit is not None:
        return hit
    f, g = objective.value_and_grad(x)
    fv = float(f)
    cache.put(x, fv, g)
    return fv, g


def is_finite(f: float, g: Tensor | None = None) -> bool:
    """Whether the loss (and gradient, when given) are finite."""
    if not math.isfinite(f):
        return False
    return g is None or all_finite(g)


def counters_info(counters: EvalCounters) -> dict[str, int]:
    """The counters as info entries."""
    return counters.as_dict()


def check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    """Raise a ValueError naming ``value`` and the allowed choices when it is not one of them."""
    if value not in allowed:
        choices = ", ".join(map(repr, allowed))
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {choices}")


def check_positive(config: object, names: tuple[str, ...], *, allow_zero: bool = False) -> None:
    """Raise a ValueError for any listed numeric field of ``config`` that is not positive."""
    for n in names:
        v = getattr(config, n)
        ok = (v >= 0) if allow_zero else (v > 0)
        if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or not ok:
            bound = ">= 0" if allow_zero else "> 0"
            raise ValueError(f"{n} must be a finite number {bound}, got {v!r}")


def check_bools(config: object) -> None:
    """Raise a ValueError for any field of the dataclass ``config`` whose default is a bool but
    whose value is not (``"no"`` would otherwise count as true)."""
    for f in fields(config):  # type: ignore[arg-type]
        v = getattr(config, f.name)
        if isinstance(f.default, bool) and not isinstance(v, bool):
            raise ValueError(f"{f.name} must be True or False, got {v!r}")


def config_keys(cls: type) -> tuple[str, ...]:
    """The field names of a config dataclass (the keyword options an optimizer accepts)."""
    return tuple(f.name for f in fields(cls))
