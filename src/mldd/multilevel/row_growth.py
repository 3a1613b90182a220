"""Data levels that grow: more rows for a coarse level whose corrections keep failing.

A data (collocation) level evaluates the loss on a fixed subset of the fine batch's rows, and the
first-order coherent model (:mod:`mldd.multilevel.coarse_models`) makes its gradient agree with the
fine one at the start of every visit. Its *curvature* is the subset's, though, and that matters
more as training proceeds: measured on Burgers (issue 5, ``benchmarks/results/rmtr-horizon``),
RMTR with the coarse loss on 1/8 of the collocation points had every coarse correction accepted
for the first ~170 fine-gradient equivalents, then 27 of the next 40 rejected by the fine ratio
test, and fell behind single-level TrustRegion between 300 and 500 on two of three seeds.

:class:`RowGrowth` is the remedy of dynamic sample-size methods [BCNW12] applied to a level of the
hierarchy, with the fine ratio test as the signal: once ``rejections`` of a data level's last
``window`` corrections were rejected, its rows are multiplied by ``factor`` (the new rows drawn at
random from the next finer level's rows that it does not hold yet, so the old rows stay and every
coarser level's rows remain a subset), up to ``max_fraction`` of the finer level's rows. The
level's cost share grows in proportion, and the optimizer keeps charging earlier evaluations at
the old share.

References:
    [BCNW12] Byrd, Chin, Nocedal, Wu. Sample size selection in optimization methods for machine
    learning. Math. Program. 134, 2012.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mldd.multilevel.hierarchy import Hierarchy
from mldd.multilevel.problem import evaluation_cost
from mldd.objective import EvalCounters
from mldd.validation import check_int, is_number

__all__ = ["Growth", "RowGrowth", "as_row_growth", "growable_levels"]


@dataclass(frozen=True)
class Growth:
    """One growth event: level ``level`` went from ``old`` to ``new`` rows."""

    level: int
    old: int
    new: int


def growable_levels(hierarchy: Hierarchy) -> list[int]:
    """Indices (coarsest first) of the levels that evaluate fewer rows than the next finer one
    (a level under an all-rows level counts only when the hierarchy knows ``n_rows``, the pool
    its new rows are drawn from)."""
    out = []
    for i, (lev, finer) in enumerate(zip(hierarchy.levels[:-1], hierarchy.levels[1:],
                                         strict=True)):
        if lev.rows is None:
            continue
        pool = hierarchy.n_rows if finer.rows is None else finer.rows.numel()
        if pool is not None and lev.rows.numel() < pool:
            out.append(i)
    return out


class RowGrowth:
    """Multiply a data level's rows by ``factor`` when its coarse corrections keep failing.

    Args:
        factor: growth factor of the rows, > 1 (default 2).
        rejections: grow once this many of the level's last ``window`` coarse corrections were
            rejected by the fine ratio test (default 2).
        window: how many recent corrections count (default 3; ``rejections <= window``).
        max_fraction: a level never holds more than this fraction of the next finer level's rows,
            in (0, 1] (default 0.5: the coarse level stays at most half as costly).
        seed: seeds the choice of the added rows (the ``k``-th growth of level ``l`` draws from
            ``seed + 1000·l + k``, so a resumed run adds the same rows).

    Raises:
        ValueError: for values outside these ranges (the message names the value).
    """

    def __init__(self, factor: float = 2.0, rejections: int = 2, window: int = 3,
                 max_fraction: float = 0.5, seed: int = 0) -> None:
        if not is_number(factor) or not (math.isfinite(factor) and factor > 1.0):
            raise ValueError(f"RowGrowth: factor must be a number > 1, got {factor!r}")
        check_int("RowGrowth: window", window)
        check_int("RowGrowth: rejections", rejections)
        if rejections > window:
            raise ValueError(f"RowGrowth: rejections={rejections} cannot exceed "
                             f"window={window} (the corrections it counts)")
        if not is_number(max_fraction) or not 0.0 < max_fraction <= 1.0:
            raise ValueError(f"RowGrowth: max_fraction must lie in (0, 1], got {max_fraction!r}")
        check_int("RowGrowth: seed", seed, 0)
        self.factor = float(factor)
        self.rejections = int(rejections)
        self.window = int(window)
        self.max_fraction = float(max_fraction)
        self.seed = int(seed)
        #: per level: the outcomes (True = rejected) of its corrections since its last growth
        self.history: dict[int, list[bool]] = {}
        #: per level: how many times it grew
        self.n_grown: dict[int, int] = {}

    def __repr__(self) -> str:
        return (f"RowGrowth(factor={self.factor:g}, rejections={self.rejections}, "
                f"window={self.window}, max_fraction={self.max_fraction:g}, seed={self.seed})")

    def observe(self, hierarchy: Hierarchy, corrections: Sequence[Sequence[Any]],
                counters: Sequence[EvalCounters]) -> tuple[list[Growth], float]:
        """Record one cycle's corrections and grow the levels that failed too often.

        Args:
            hierarchy: the optimizer's hierarchy (its levels' ``rows`` and ``cost`` change).
            corrections: ``(level, accepted)`` of each coarse correction of the cycle, ``level``
                being the finer level that tested it (the core's ``info["corrections"]``).
            counters: every level's evaluation counters (coarsest first).

        Returns:
            The growth events and the cost, in fine-gradient equivalents, that the levels' past
            evaluations lose by the new shares: add it to a running offset so that the total cost
            still charges them at the old shares.
        """
        growable = set(growable_levels(hierarchy))
        due = []
        for level, accepted in corrections:
            coarse = int(level) - 1
            if coarse not in growable:
                continue
            recent = self.history.setdefault(coarse, [])
            recent.append(not bool(accepted))
            del recent[:-self.window]
            if sum(recent) >= self.rejections and coarse not in due:
                due.append(coarse)
        events: list[Growth] = []
        offset = 0.0
        for i in sorted(due):
            event, delta = self._grow(hierarchy, i, counters[i])
            self.history[i] = []
            if event is not None:
                events.append(event)
                offset += delta
        return events, offset

    def _grow(self, hierarchy: Hierarchy, i: int,
              counters: EvalCounters) -> tuple[Growth | None, float]:
        lev, finer = hierarchy.levels[i], hierarchy.levels[i + 1]
        assert lev.rows is not None and lev.cost is not None
        if finer.rows is None:
            assert hierarchy.n_rows is not None  # growable_levels checked it
            pool = torch.arange(hierarchy.n_rows)
        else:
            pool = finer.rows.cpu()
        old = lev.rows.numel()
        new = min(math.ceil(old * self.factor), math.floor(self.max_fraction * pool.numel()))
        if new <= old:
            return None, 0.0
        rows = lev.rows.cpu()
        fresh = pool[~torch.isin(pool, rows)]
        k = self.n_grown.get(i, 0)
        gen = torch.Generator().manual_seed(self.seed + 1000 * i + k)
        added = fresh[torch.randperm(fresh.numel(), generator=gen)[: new - old]]
        lev.rows = torch.cat([rows, added]).sort().values.to(lev.rows.device)
        old_cost = float(lev.cost)
        lev.cost = old_cost * new / old
        self.n_grown[i] = k + 1
        return Growth(i, old, new), evaluation_cost([counters], [old_cost - lev.cost])

    def state_dict(self) -> dict[str, Any]:
        """The rule's state: recent outcomes and growth counts per level."""
        return {"history": {int(k): list(v) for k, v in self.history.items()},
                "n_grown": {int(k): int(v) for k, v in self.n_grown.items()}}

    def load_state_dict(self, d: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        self.history = {int(k): [bool(b) for b in v] for k, v in d["history"].items()}
        self.n_grown = {int(k): int(v) for k, v in d["n_grown"].items()}


def as_row_growth(value: object) -> RowGrowth | None:
    """``None``/``False`` → off; ``True`` → the defaults; a dict → ``RowGrowth(**dict)``; a
    :class:`RowGrowth` as is (what the optimizers' ``row_growth`` argument accepts)."""
    if value is None or value is False:
        return None
    if value is True:
        return RowGrowth()
    if isinstance(value, RowGrowth):
        return value
    if isinstance(value, Mapping):
        try:
            return RowGrowth(**value)
        except TypeError as e:
            raise ValueError(f"row_growth: {e}; the options are factor, rejections, window, "
                             "max_fraction and seed") from None
    raise ValueError(f"row_growth must be None, a bool, a dict of RowGrowth options or a "
                     f"RowGrowth, got {value!r}")
