"""Data-parallel evaluation of the global loss across ``torch.distributed`` ranks.

In the additive Schwarz methods every rank holds a full replica and solves its own subdomains;
the global work (the combination line search and the global L-BFGS steps) is the same on every
rank. Repeating it on each rank wastes ``(p − 1)/p`` of that work. When the loss is a mean (or a
sum) over rows of the batch — samples or collocation points,

    f(x) = Σ_i w_i ℓ_i(x),   w_i = 1/n (mean) or 1 (sum),

the rows can be split into ``p`` shards ``I_0 … I_{p−1}`` (:func:`~mldd.decomposition.data_shards`)
and each rank evaluates only its share ``f_r(x) = Σ_{i ∈ I_r} w_i ℓ_i(x)``; one ``all_reduce`` of
``(f_r, ∇f_r)`` then gives every rank ``(f, ∇f)``:

    f = Σ_r f_r,   ∇f = Σ_r ∇f_r.

All ranks receive the same numbers, so their decisions stay identical (the executor's invariant),
and a rank whose evaluation raises makes every rank raise :class:`ExecutorError` in that same
collective (no rank is left waiting for a partner that will not come),
and the result equals the one-process evaluation up to the rounding of the summation order. The
rank-local work (the subdomain solves) still needs the *whole* loss: :class:`DataParallelObjective`
carries it as :attr:`~DataParallelObjective.full`, which the solvers use for local objectives.

Cost per global evaluation: ``1/p`` of a full gradient per rank plus one all-reduce of
``n + 1`` numbers.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mldd.decomposition.executors import Executor, ExecutorError
from mldd.objective import EvalCounters, MatVec, Objective

__all__ = ["LOSS_REDUCTIONS", "DataParallelObjective", "check_loss_reduction", "shard_weight"]

#: How the loss reduces over rows: ``"mean"`` (a shard's loss is weighted by its share of the
#: rows) or ``"sum"`` (shard losses add up as they are).
LOSS_REDUCTIONS: tuple[str, ...] = ("mean", "sum")


def check_loss_reduction(loss_reduction: str) -> None:
    """Raise ``ValueError`` unless ``loss_reduction`` is one of :data:`LOSS_REDUCTIONS`."""
    if loss_reduction not in LOSS_REDUCTIONS:
        raise ValueError(f"loss_reduction must be one of {LOSS_REDUCTIONS}, got "
                         f"{loss_reduction!r}")


def shard_weight(n_shard: int, n_rows: int, loss_reduction: str) -> float:
    """The factor that turns a shard's loss into its share of the full loss.

    Args:
        n_shard: rows in the shard.
        n_rows: rows in the whole batch.
        loss_reduction: ``"mean"`` (``n_shard/n_rows``) or ``"sum"`` (1).

    Raises:
        ValueError: unknown ``loss_reduction`` or inconsistent counts.
    """
    check_loss_reduction(loss_reduction)
    if not 0 < n_shard <= n_rows:
        raise ValueError(f"a shard of {n_shard} rows does not fit a batch of {n_rows} rows")
    return n_shard / n_rows if loss_reduction == "mean" else 1.0


class DataParallelObjective(Objective):
    """``f = Σ_ranks f_r``: this rank's share of the loss, all-reduced over the executor.

    Every call is a collective: all ranks must evaluate at the same points in the same order
    (true for the global phase of the Schwarz methods, whose decisions are shared).

    Args:
        shard: this rank's share ``f_r`` (already weighted, see :func:`shard_weight`).
        executor: the executor whose ranks hold the other shares.
        full: the whole loss on this rank, for rank-local work (subdomain solves).
        counters: where to count the (global) evaluations.

    Attributes:
        full: the whole-batch objective (not all-reduced).
        agrees_on_failure: True: every evaluation is a collective after which all ranks either
            have the same numbers or all raise, so callers need no failure flag of their own.
    """

    agrees_on_failure = True

    def __init__(self, shard: Objective, executor: Executor, full: Objective,
                 counters: EvalCounters | None = None) -> None:
        super().__init__(counters)
        if shard.n != full.n:
            raise ValueError(f"the shard objective has {shard.n} variables but the full one "
                             f"{full.n}")
        self.shard = shard
        self.executor = executor
        self.full = full
        self.n, self.dtype, self.device = shard.n, shard.dtype, shard.device

    def _reduce(self, compute: Callable[[], Tensor], size: int) -> Tensor:
        """All-reduce ``[failed, f, ∇f…]``; a rank whose evaluation raised sends ``failed = 1``
        so that every rank raises together instead of waiting in a mismatched collective."""
        error: Exception | None = None
        try:
            values = compute()
            buf = torch.cat([values.new_zeros(1), values])
        except Exception as exc:  # the other ranks must learn of it in this very collective
            error = exc
            buf = torch.zeros(size + 1, dtype=self.dtype, device=self.device)
            buf[0] = 1.0
        out = self.executor.all_reduce_sum(buf)
        failed = int(out[0].item())
        if failed:
            here = ("" if error is None
                    else f"; on rank {self.executor.rank}: {type(error).__name__}: {error}")
            raise ExecutorError(
                f"the data-parallel loss evaluation failed on {failed} of "
                f"{self.executor.world_size} rank(s){here}",
                ranks=[self.executor.rank] if error is not None else []) from error
        return out[1:]

    def _value(self, x: Tensor) -> Tensor:
        return self._reduce(lambda: self.shard._value(x).reshape(1), 1)[0]

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        def compute() -> Tensor:
            f, g = self.shard._value_and_grad(x)
            return torch.cat([f.reshape(1).to(g.dtype), g])

        both = self._reduce(compute, self.n + 1)
        return both[0], both[1:]

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        box: list[MatVec] = []

        def compute() -> Tensor:
            f, g, hv = self.shard._linearize(x)
            box.append(hv)
            return torch.cat([f.reshape(1).to(g.dtype), g])

        both = self._reduce(compute, self.n + 1)

        def matvec(v: Tensor) -> Tensor:
            return self._reduce(lambda: box[0](v), self.n)

        return both[0], both[1:], matvec
