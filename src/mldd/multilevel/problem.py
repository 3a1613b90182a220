"""What a multilevel cycle runs on: one objective per level and the transfers between them.

The functional cores of RMTR, MG/OPT and MOFFO (:mod:`mldd.multilevel.rmtr`, ``mgopt``,
``moffo``) take a :class:`MultilevelProblem` — plain data, built once per optimizer step by the
``torch.optim`` shells (the objectives wrap the step's closure) or by hand in tests. Levels are
numbered ``0 … L−1``, coarsest first, as in :mod:`mldd.multilevel.hierarchy`; ``transfers[i]``
maps between level ``i`` (coarse) and level ``i+1`` (fine).

Also here: the descent test that decides whether a coarse level is worth visiting, and the cost
accounting in fine-gradient equivalents (docs/algorithms.md §1.5).

Notation: ``P`` prolongation (coarse → fine corrections), ``R`` restriction (fine → coarse
gradients), ``Π`` injection (fine → coarse iterates), ``κ_g`` the descent-test constant.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch
from torch import Tensor

from mldd.multilevel.coarse_models import CoarseModel, build_coarse_model
from mldd.multilevel.transfers import Transfer
from mldd.objective import EvalCounters, Objective

C = TypeVar("C")

__all__ = ["DESCENT_REFERENCES", "MultilevelProblem", "descent_test", "evaluation_cost",
           "per_level_configs"]

#: What the restricted gradient is compared with in the descent test.
DESCENT_REFERENCES: tuple[str, ...] = ("fine", "coarse")


@dataclass
class MultilevelProblem:
    """The objectives of all levels (coarsest first) and the transfers between neighbours.

    Attributes:
        objectives: ``f_0 … f_{L−1}``; ``f_{L−1}`` is the loss being minimised, the coarser ones
            are the coarse networks' (or coarse data sets') losses from which coherent coarse
            models are built.
        transfers: ``L − 1`` transfers; ``transfers[i]`` between levels ``i`` and ``i+1``.
        costs: cost of one evaluation at each level in fine-gradient equivalents (default: the
            ratio of parameter counts, docs/algorithms.md §1.5; the finest level costs 1).

    Raises:
        ValueError: inconsistent lengths or dimensions.
    """

    objectives: list[Objective]
    transfers: list[Transfer] = field(default_factory=list)
    costs: list[float] | None = None

    def __post_init__(self) -> None:
        self.objectives = list(self.objectives)
        self.transfers = list(self.transfers)
        L = len(self.objectives)
        if L < 1:
            raise ValueError("a multilevel problem needs at least one level")
        if len(self.transfers) != L - 1:
            raise ValueError(f"{L} levels need {L - 1} transfers, got {len(self.transfers)}")
        for i, t in enumerate(self.transfers):
            nc, nf = self.objectives[i].n, self.objectives[i + 1].n
            if (int(t.n_coarse), int(t.n_fine)) != (nc, nf):
                raise ValueError(
                    f"transfers[{i}] maps {t.n_coarse} ↔ {t.n_fine} entries, but level {i} has "
                    f"{nc} parameters and level {i + 1} has {nf}")
        n_fine = self.objectives[-1].n
        if self.costs is None:
            self.costs = [obj.n / n_fine for obj in self.objectives]
        self.costs = [float(c) for c in self.costs]
        if len(self.costs) != L or not all(math.isfinite(c) and c >= 0 for c in self.costs):
            raise ValueError(f"costs must be {L} finite numbers >= 0, got {self.costs!r}")

    @property
    def n_levels(self) -> int:
        """The number of levels ``L``."""
        return len(self.objectives)

    @property
    def fine(self) -> Objective:
        """The finest objective ``f_{L−1}``."""
        return self.objectives[-1]

    def counters(self) -> list[EvalCounters]:
        """Each level's evaluation counters (coarsest first)."""
        return [obj.counters for obj in self.objectives]

    def cost(self) -> float:
        """Total evaluation cost so far in fine-gradient equivalents (:func:`evaluation_cost`)."""
        assert self.costs is not None
        return evaluation_cost(self.counters(), self.costs)


def evaluation_cost(counters: Sequence[EvalCounters], costs: Sequence[float]) -> float:
    """``Σ_i cost_i · (max(n_f,i, n_g,i) + n_hvp,i)`` — evaluations in fine-gradient equivalents.

    Every evaluation of a level, with or without its gradient, counts as one gradient of that
    level, and a Hessian-vector product as one more (docs/algorithms.md §1.5). ``max(n_f, n_g)`` is
    the number of closure runs for the methods here: loss+gradient evaluations count in both
    ``n_f`` and ``n_g``, gradient-only ones (MOFFO) in ``n_g`` only. Counting a loss-only
    evaluation as a full gradient over-states its cost, which keeps comparisons conservative.
    """
    return float(sum(c * (max(k.n_f, k.n_g) + k.n_hvp) for k, c in zip(counters, costs,
                                                                      strict=True)))


def descent_test(g_fine: Tensor, g_restricted: Tensor, *, kappa_g: float, tol: float,
                 g_coarse: Tensor | None = None, reference: str = "fine") -> bool:
    """Whether a coarse step is worth trying: ``‖R g‖ ≥ κ_g·‖ref‖`` and ``‖R g‖ > ε``.

    ``reference="fine"`` compares with the fine gradient ``‖g_l‖`` — [GST08, eq. (2.14)], where
    the coarse model's initial gradient ``g_{i−1,0}`` *is* ``R g_{i,k}``: the restriction keeps a
    fair part of the gradient, so the coarse level can make progress. ``reference="coarse"``
    compares with ``‖∇f_c(x_c0)‖`` (the literal reading of docs/algorithms.md §2.3, which writes
    ``g_c0``); it needs the coarse gradient, i.e. an evaluation of the coarse level. Norms are
    Euclidean at every level.

    Args:
        g_fine: the fine gradient ``g_l``.
        g_restricted: ``R g_l``.
        kappa_g: ``κ_g`` (1/8 in docs/algorithms.md §2.3).
        tol: ``ε`` (absolute).
        g_coarse: ``∇f_c(x_c0)`` (needed for ``reference="coarse"``).
        reference: ``"fine"`` or ``"coarse"``.
    """
    rg = float(torch.linalg.vector_norm(g_restricted))
    if not math.isfinite(rg) or rg <= tol:
        return False
    if reference == "fine":
        ref = float(torch.linalg.vector_norm(g_fine))
    elif reference == "coarse":
        if g_coarse is None:
            raise ValueError("descent_test(reference='coarse') needs g_coarse")
        ref = float(torch.linalg.vector_norm(g_coarse))
    else:
        raise ValueError(f"reference must be one of {DESCENT_REFERENCES}, got {reference!r}")
    return rg >= kappa_g * ref


def per_level_configs(config: C, n_levels: int, options: Sequence[Mapping[str, Any]] | None,
                      allowed: tuple[str, ...], owner: str) -> list[C]:
    """One copy of ``config`` per level (coarsest first) with that level's overrides applied.

    This is how the per-level ``options`` of a :class:`~mldd.multilevel.hierarchy.Level` reach a
    cycle (pyamg's per-level smoother options): e.g. ``{"pre_smoothing": 5}`` on one level.
    Each copy goes through the config's own validation.

    Raises:
        ValueError: a wrong number of option dicts, or a key not in ``allowed``.
    """
    if options is None:
        return [config] * n_levels
    options = list(options)
    if len(options) != n_levels:
        raise ValueError(f"{owner}: got per-level options for {len(options)} levels, the "
                         f"solver has {n_levels}")
    out = []
    for i, opts in enumerate(options):
        bad = sorted(set(opts) - set(allowed))
        if bad:
            raise ValueError(f"{owner}: level {i} has unknown per-level options {bad}; allowed: "
                             + ", ".join(allowed))
        out.append(replace(config, **dict(opts)) if opts else config)  # type: ignore[type-var]
    return out


class CycleCounters:
    """What every cycle solver (RMTR, MG/OPT) shares: its checkpointed bookkeeping and the
    construction of the coherent coarse model.

    Subclasses set ``label`` (for messages), ``config`` (with ``coarse_model``,
    ``hybrid_gamma``, ``zeroth_order``), ``n_levels``, ``n_cycles``, ``n_coarse_accepted``,
    ``n_coarse_rejected``, ``n_coarse_skipped``, ``stop_reason`` and ``batch_schedule``.
    """

    label: str
    config: Any

    n_levels: int
    n_cycles: int
    n_coarse_accepted: int
    n_coarse_rejected: int
    n_coarse_skipped: int
    stop_reason: str | None
    batch_schedule: Any

    def _build_model(self, level: int, base: Objective, x_c0: Tensor, g_r: Tensor,
                     f: float) -> CoarseModel | None:
        """The coarse model of the configured kind, or ``None`` (with a warning) when it
        cannot be built at this point (e.g. a multiplicative model with ``f_c0 ≈ 0``)."""
        cfg = self.config
        try:
            return build_coarse_model(cfg.coarse_model, base, x_c0, g_r, f,
                                      gamma=cfg.hybrid_gamma, zeroth_order=cfg.zeroth_order)
        except ValueError as err:
            warnings.warn(f"{self.label}: no coarse correction from level {level}: {err}",
                          RuntimeWarning, stacklevel=4)
            return None

    def _counters_state(self) -> dict[str, Any]:
        return {
            "n_levels": self.n_levels,
            "n_cycles": self.n_cycles,
            "n_coarse_accepted": self.n_coarse_accepted,
            "n_coarse_rejected": self.n_coarse_rejected,
            "n_coarse_skipped": self.n_coarse_skipped,
            "stop_reason": self.stop_reason,
            "batch_schedule": (None if self.batch_schedule is None
                               else self.batch_schedule.state_dict()),
        }

    def _check_levels(self, d: Mapping[str, Any]) -> None:
        if int(d["n_levels"]) != self.n_levels:
            raise ValueError(f"state_dict is for {d['n_levels']} levels, this solver has "
                             f"{self.n_levels}")

    def _load_counters_state(self, d: Mapping[str, Any]) -> None:
        self.n_cycles = int(d["n_cycles"])
        self.n_coarse_accepted = int(d["n_coarse_accepted"])
        self.n_coarse_rejected = int(d["n_coarse_rejected"])
        self.n_coarse_skipped = int(d["n_coarse_skipped"])
        self.stop_reason = d["stop_reason"]
        if self.batch_schedule is not None and d.get("batch_schedule") is not None:
            self.batch_schedule.load_state_dict(d["batch_schedule"])
