"""Where the subdomains' work runs: in one process, or across ``torch.distributed`` ranks.

Every additive method (ASPQN, two-level Schwarz, APTS) is written once against
:class:`Executor`: each rank solves the subdomains it :meth:`~Executor.owns`, the extended
corrections are summed with :meth:`~Executor.all_reduce_sum`, and every accept/reject or
line-search decision is taken from all-reduced (hence identical) numbers, so all ranks always
take the same branch [KKKK24 §4]. :class:`SerialExecutor` runs all subdomains one after another in
one process; it defines the iterates the distributed executor
(:class:`mldd.decomposition.distributed.DistributedExecutor`) must reproduce.

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. SIAM J. Sci. Comput. 46(5), 2024.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar, runtime_checkable

from torch import Tensor

T = TypeVar("T")


class ExecutorError(RuntimeError):
    """Local work failed on some rank; raised on *every* rank so that none waits forever.

    Also raised when a collective fails (a rank crashed) or times out (a rank hung); see
    :mod:`mldd.decomposition.distributed`.

    Args:
        message: what failed, where, and what to do.
        ranks: the ranks whose local work failed (empty when not known).

    Attributes:
        ranks: as given.
    """

    def __init__(self, message: str, *, ranks: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.ranks: list[int] = list(ranks)


@runtime_checkable
class Executor(Protocol):
    """What the additive methods need from an execution back-end.

    Attributes:
        rank: this process's rank (0 in serial).
        world_size: number of processes (1 in serial).
    """

    rank: int
    world_size: int

    def owns(self, n_subdomains: int) -> list[int]:
        """The subdomain indices this rank solves (all of them in serial)."""
        ...

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """The elementwise sum of ``t`` over all ranks (a new tensor; ``t`` is not modified)."""
        ...

    def guarded(self, fn: Callable[[], T]) -> T:
        """Run local work ``fn``; if it raises on any rank, raise :class:`ExecutorError` on all.

        Must be called by every rank at the same point (it is a collective).
        """
        ...


class SerialExecutor:
    """All subdomains, one after another, in this process (rank 0 of a world of size 1).

    ``bytes_communicated`` and ``n_collectives`` are always 0 (nothing is communicated); they
    exist so that reports can read them from any executor.
    """

    rank = 0
    world_size = 1
    bytes_communicated = 0
    n_collectives = 0

    def owns(self, n_subdomains: int) -> list[int]:
        """Every subdomain: ``[0, …, n_subdomains − 1]``."""
        if n_subdomains < 1:
            raise ValueError(f"n_subdomains must be >= 1, got {n_subdomains}")
        return list(range(n_subdomains))

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """``t`` itself, copied (the sum over one rank)."""
        return t.clone()

    def guarded(self, fn: Callable[[], T]) -> T:
        """Run ``fn``; its exception propagates unchanged (there is no other rank to warn)."""
        return fn()

    def __repr__(self) -> str:
        return "SerialExecutor()"


def owned_round_robin(rank: int, world_size: int, n_subdomains: int) -> list[int]:
    """Subdomains ``rank, rank + world_size, …`` — the distributed ownership rule.

    With contiguous layer subdomains and ``n_subdomains`` a multiple of ``world_size`` this gives
    every rank the same number of subdomains. Raises if a rank would own none.
    """
    if n_subdomains < world_size:
        raise ValueError(
            f"{n_subdomains} subdomains cannot be shared by {world_size} processes: every "
            "process needs at least one; use fewer processes or more subdomains"
        )
    return list(range(rank, n_subdomains, world_size))


def owned_balanced(rank: int, world_size: int, costs: Sequence[float]) -> list[int]:
    """Subdomains of ``rank`` when subdomain ``s`` costs ``costs[s]``: longest-first greedy.

    Subdomains are taken in order of decreasing cost (ties: lower index first) and each goes to
    the rank with the least total cost so far (ties: lower rank) — the LPT rule, whose makespan is
    at most ``4/3`` of the optimum [Gra69]. Every rank computes the same assignment from the same
    costs. Layer subdomains of a network are a case in point: a local gradient of an early layer
    runs through more of the network than one of a late layer, so round robin gives rank 0 the
    heavier share.

    Raises:
        ValueError: fewer subdomains than ranks, or a cost that is not finite and > 0.

    References:
        [Gra69] Graham. Bounds on multiprocessing timing anomalies. SIAM J. Appl. Math. 17, 1969.
    """
    n = len(costs)
    if n < world_size:
        raise ValueError(
            f"{n} subdomains cannot be shared by {world_size} processes: every "
            "process needs at least one; use fewer processes or more subdomains"
        )
    if not all(math.isfinite(c) and c > 0 for c in costs):
        raise ValueError(f"subdomain costs must be finite and > 0, got {list(costs)}")
    load = [0.0] * world_size
    count = [0] * world_size
    owner = [0] * n
    for s in sorted(range(n), key=lambda i: (-costs[i], i)):
        # Every rank must own at least one subdomain: the last ones go to empty ranks first.
        empty = [r for r in range(world_size) if count[r] == 0]
        remaining = n - sum(count)
        pool = empty if len(empty) >= remaining else range(world_size)
        r = min(pool, key=lambda q: (load[q], q))
        owner[s] = r
        load[r] += costs[s]
        count[r] += 1
    return [s for s in range(n) if owner[s] == rank]
