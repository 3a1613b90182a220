"""Mini-batch size schedules for the stochastic use of the multilevel methods.

[KK22] trains residual networks with RMTR in a *hybrid stochastic–deterministic* regime: every
cycle uses one mini-batch (held fixed during the cycle, so that the trust-region ratio test
compares losses on the same data), and the batch grows as training proceeds, ending with full
(deterministic) batches. The exact growth rule of the paper is **unverified** (docs/algorithms.md
§2.3), so the rule is a pluggable object:

* :class:`ConstantBatchSize` — a fixed size (the plain stochastic method);
* :class:`GeometricBatchSize` — ours: multiply the size by ``factor`` (capped at ``maximum``)
  after ``patience`` consecutive *stagnating* cycles, a cycle stagnating when it reduced the loss
  **on its own batch** by less than ``rtol`` relative (no accepted step at all is the extreme
  case). Comparing losses on one batch keeps the test free of batch-to-batch noise.

An optimizer calls :meth:`BatchSchedule.update` after each cycle; the training loop reads
``optimizer.batch_size`` to draw the next batch. Schedules are plain objects with
``state_dict()``/``load_state_dict()`` so that checkpoints resume them exactly.

References:
    [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
    networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

from mldd.validation import as_int

__all__ = ["BatchSchedule", "ConstantBatchSize", "GeometricBatchSize"]


@runtime_checkable
class BatchSchedule(Protocol):
    """What an optimizer needs from a batch-size schedule."""

    @property
    def batch_size(self) -> int:
        """The batch size to draw for the next cycle."""
        ...

    def update(self, loss_start: float, loss_end: float) -> None:
        """Observe one cycle: the loss on its batch at its start and at its end."""
        ...

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, d: dict[str, Any]) -> None: ...


class ConstantBatchSize:
    """Always the same batch size.

    Args:
        size: the batch size (>= 1).
    """

    def __init__(self, size: int) -> None:
        self.size = as_int("ConstantBatchSize: size", size)

    @property
    def batch_size(self) -> int:
        """The batch size."""
        return self.size

    def update(self, loss_start: float, loss_end: float) -> None:
        """Nothing to adapt."""

    def state_dict(self) -> dict[str, Any]:
        """The size."""
        return {"size": self.size}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore the size."""
        self.size = int(d["size"])


class GeometricBatchSize:
    """Grow the batch geometrically when cycles stagnate (our rule; see the module docstring).

    After each cycle: if ``loss_start − loss_end ≤ rtol·|loss_start|`` (or a loss is non-finite)
    the stagnation count grows by one, else it resets to 0; when it reaches ``patience`` the
    size becomes ``min(ceil(size·factor), maximum)`` and the count resets.

    Args:
        initial: the first batch size.
        factor: growth factor (> 1; default 2).
        maximum: the largest size (typically the training-set size; ``None`` = unbounded).
        patience: stagnating cycles before growing (default 3).
        rtol: relative decrease below which a cycle stagnates (default 1e-3).

    Raises:
        ValueError: for any invalid option.
    """

    def __init__(self, initial: int, *, factor: float = 2.0, maximum: int | None = None,
                 patience: int = 3, rtol: float = 1e-3) -> None:
        owner = "GeometricBatchSize"
        self.size = as_int(f"{owner}: initial", initial)
        if not (isinstance(factor, int | float) and math.isfinite(factor) and factor > 1):
            raise ValueError(f"{owner}: factor must be a finite number > 1, got {factor!r}")
        if maximum is not None and as_int(f"{owner}: maximum", maximum) < self.size:
            raise ValueError(f"{owner}: maximum={maximum!r} is below initial={initial!r}")
        self.patience = as_int(f"{owner}: patience", patience)
        if not (isinstance(rtol, int | float) and math.isfinite(rtol) and rtol >= 0):
            raise ValueError(f"{owner}: rtol must be a finite number >= 0, got {rtol!r}")
        self.factor = float(factor)
        self.maximum = maximum
        self.rtol = float(rtol)
        self.stagnant = 0
        self.n_growths = 0

    @property
    def batch_size(self) -> int:
        """The batch size for the next cycle."""
        return self.size

    def update(self, loss_start: float, loss_end: float) -> None:
        """Count a stagnating cycle; grow the batch after ``patience`` of them in a row."""
        finite = math.isfinite(loss_start) and math.isfinite(loss_end)
        progressed = finite and loss_start - loss_end > self.rtol * abs(loss_start)
        self.stagnant = 0 if progressed else self.stagnant + 1
        if self.stagnant >= self.patience:
            grown = math.ceil(self.size * self.factor)
            self.size = grown if self.maximum is None else min(grown, self.maximum)
            self.stagnant = 0
            self.n_growths += 1

    def state_dict(self) -> dict[str, Any]:
        """Size, stagnation count and number of growths."""
        return {"size": self.size, "stagnant": self.stagnant, "n_growths": self.n_growths}

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.size = int(d["size"])
        self.stagnant = int(d["stagnant"])
        self.n_growths = int(d["n_growths"])
