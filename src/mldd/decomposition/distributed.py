"""The ``torch.distributed`` execution back-end: subdomains spread over processes (ranks).

Every rank holds a full replica of the parameters and solves the subdomains it
:meth:`~DistributedExecutor.owns` (round robin: rank ``r`` of ``p`` owns ``r, r + p, …``). The
extended corrections are summed with one ``all_reduce`` per combination; every accept/reject and
line-search decision is taken from all-reduced numbers, so all ranks take the same branch
[KKKK24 §4]. Two guarantees make a distributed run end instead of deadlocking:

* **Failures**: :meth:`~DistributedExecutor.guarded` runs local work, all-reduces a failure flag
  and, if any rank failed, raises :class:`~mldd.decomposition.executors.ExecutorError` on every
  rank, naming the failing rank(s) and their messages.
* **Hangs**: every collective is bounded by the process-group timeout (``timeout_s``; default
  :data:`DEFAULT_TIMEOUT_S` = 300 s, overridden by the environment variable ``MLDD_DIST_TIMEOUT``).
  The timeout bounds how long one rank *waits for the others inside a collective*, i.e. the load
  imbalance between two synchronisation points, not the length of the local work. A rank that does
  not arrive in time makes the waiting ranks raise :class:`ExecutorTimeoutError`; a rank that
  crashed makes them raise :class:`ExecutorError` at once (gloo reports the closed connection).
  Under ``torchrun`` the failing worker's exit then makes the launcher stop the others.

Back-ends: gloo on CPU; when CUDA and NCCL are available and there is one GPU per local process
the group is created with ``"cpu:gloo,cuda:nccl"``, so that each collective goes to NCCL for
CUDA tensors and to gloo for CPU tensors (:func:`default_backend`). Gloo raises on its timeout
(tested); NCCL's watchdog instead aborts the process after the timeout
(``TORCH_NCCL_ASYNC_ERROR_HANDLING``), which ends the run as well but without the
:class:`ExecutorTimeoutError` message (not tested: it needs two GPUs).

Communication volume: :attr:`DistributedExecutor.bytes_communicated` counts the payload bytes of
every collective issued through the executor (``numel · element_size`` of each all-reduced
tensor, i.e. what one rank contributes, not the bytes on the wire: a ring all-reduce of ``B``
bytes over ``p`` ranks sends ``2B(p − 1)/p`` per rank) and :attr:`n_collectives` counts the
collectives. Benchmarks difference them around an outer iteration.

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. Enhancing training of physics-informed
        neural networks using domain-decomposition based preconditioning strategies.
        SIAM J. Sci. Comput. 46(5), 2024.
    PyTorch documentation, ``torch.distributed`` (``init_process_group(timeout=)``,
        ``monitored_barrier``, ``all_gather_object``), version 2.x.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from mldd.decomposition.executors import ExecutorError, owned_round_robin

T = TypeVar("T")

#: Default bound (seconds) on how long a rank waits for the others inside one collective.
DEFAULT_TIMEOUT_S = 300.0
#: Environment variable overriding :data:`DEFAULT_TIMEOUT_S` (seconds, a positive number).
TIMEOUT_ENV = "MLDD_DIST_TIMEOUT"
_LAUNCH_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# The timeout of the default process group when this module created it (None otherwise): an
# executor built on that group can name the bound in its messages without creating a new group.
_initialised_timeout_s: float | None = None


class ExecutorTimeoutError(ExecutorError):
    """A collective did not complete within the process-group timeout (some rank hung)."""


def resolve_timeout(timeout_s: float | None = None) -> float:
    """The collective timeout in seconds: ``timeout_s``, else ``$MLDD_DIST_TIMEOUT``, else 300.

    Raises:
        ValueError: if the value (or the environment variable) is not a positive finite number.
    """
    source = "timeout_s"
    value: Any = timeout_s
    if value is None:
        env = os.environ.get(TIMEOUT_ENV)
        if env is None or not env.strip():
            return DEFAULT_TIMEOUT_S
        source = f"environment variable {TIMEOUT_ENV}"
        try:
            value = float(env)
        except ValueError:
            raise ValueError(
                f"{source} must be a positive number of seconds, got {env!r}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{source} must be a positive number of seconds, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{source} must be a positive number of seconds, got {value!r}")
    return float(value)


def default_backend() -> str:
    """``"cpu:gloo,cuda:nccl"`` when NCCL can give every local process its own GPU, else gloo.

    NCCL needs one GPU per process, so with fewer GPUs than local processes
    (``LOCAL_WORLD_SIZE``, as ``torchrun`` sets it; 1 if unset) the run uses gloo alone and CPU
    tensors.
    """
    if torch.cuda.is_available() and dist.is_nccl_available():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        if torch.cuda.device_count() >= local:
            return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_process_group(
    *,
    init_method: str = "env://",
    rank: int | None = None,
    world_size: int | None = None,
    timeout_s: float | None = None,
    backend: str | None = None,
) -> bool:
    """Initialise the default process group unless it already exists.

    Args:
        init_method: ``"env://"`` (``torchrun``'s variables), ``"file:///path"`` or
            ``"tcp://host:port"``.
        rank: this process's rank (read from ``RANK`` with ``env://``).
        world_size: the number of processes (read from ``WORLD_SIZE`` with ``env://``).
        timeout_s: collective timeout (see :func:`resolve_timeout`).
        backend: default :func:`default_backend`.

    Returns:
        True if this call created the group, False if it existed already (left unchanged).

    Raises:
        ValueError: for a bad timeout.
        RuntimeError: if ``env://`` is used outside a launcher (the variables are missing).
    """
    global _initialised_timeout_s
    timeout = resolve_timeout(timeout_s)
    if dist.is_initialized():
        return False
    if init_method == "env://":
        missing = [k for k in _LAUNCH_ENV if k not in os.environ]
        if missing:
            raise RuntimeError(
                f"cannot join a process group: environment variable(s) {', '.join(missing)} "
                "not set; start the processes with `torchrun` or `mldd train --nproc N`"
            )
    backend = backend or default_backend()
    if "nccl" in backend and torch.cuda.is_available():
        # One GPU per process: NCCL needs the current device set before the group is created.
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank or 0)))
    kwargs: dict[str, Any] = {}
    if rank is not None:
        kwargs["rank"] = rank
    if world_size is not None:
        kwargs["world_size"] = world_size
    dist.init_process_group(
        backend, init_method=init_method, timeout=timedelta(seconds=timeout), **kwargs
    )
    _initialised_timeout_s = timeout
    return True


def init_from_env(*, timeout_s: float | None = None, backend: str | None = None) -> bool:
    """:func:`init_process_group` from the variables ``torchrun`` sets (``env://``)."""
    return init_process_group(init_method="env://", timeout_s=timeout_s, backend=backend)


def shutdown() -> None:
    """Destroy the default process group if it exists (call once, at the end of a worker)."""
    global _initialised_timeout_s
    if dist.is_initialized():
        dist.destroy_process_group()
    _initialised_timeout_s = None


def _is_timeout(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "timed out" in text or "timeout" in text


class DistributedExecutor:
    """Subdomains spread over ``torch.distributed`` ranks (see the module docstring).

    The executor joins the default process group, initialising it from ``torchrun``'s
    environment variables (:func:`init_from_env`) if nobody has. If the group was created by
    someone else, the executor makes its own subgroup with ``timeout_s`` (``dist.new_group`` is a
    collective: build the executor at the same point on every rank).

    Args:
        group: use this process group as it is (its own timeout applies).
        timeout_s: collective timeout in seconds (:func:`resolve_timeout`: default 300 s or
            ``$MLDD_DIST_TIMEOUT``).

    Attributes:
        rank: this process's rank in the group.
        world_size: the number of ranks in the group.
        timeout_s: the collective timeout (None when an unknown ``group`` was given).
        backend: the group's back-end string (``"gloo"``, ``"cpu:gloo,cuda:nccl"``, ``"nccl"``).
        bytes_communicated: payload bytes of all collectives issued through this executor.
        n_collectives: number of collectives issued through this executor.
        collective_s: wall seconds this rank spent inside those collectives: the transfer itself
            plus waiting for slower ranks, so it shows load imbalance.
    """

    def __init__(self, *, group: Any = None, timeout_s: float | None = None) -> None:
        self.timeout_s: float | None
        if group is not None:
            self.group = group
            self.timeout_s = None if timeout_s is None else resolve_timeout(timeout_s)
        elif not dist.is_initialized():
            init_from_env(timeout_s=timeout_s)
            self.group = dist.group.WORLD
            self.timeout_s = _initialised_timeout_s
        elif _initialised_timeout_s is not None and (
            timeout_s is None or resolve_timeout(timeout_s) == _initialised_timeout_s
        ):
            self.group = dist.group.WORLD
            self.timeout_s = _initialised_timeout_s
        else:
            self.timeout_s = resolve_timeout(timeout_s)
            self.group = dist.new_group(timeout=timedelta(seconds=self.timeout_s))
        self.rank: int = dist.get_rank(self.group)
        self.world_size: int = dist.get_world_size(self.group)
        self.backend: str = str(dist.get_backend(self.group))
        # Pure NCCL groups have no CPU path: the failure flag must live on the GPU.
        self._flag_device = (
            torch.device("cuda", torch.cuda.current_device())
            if self.backend == "nccl"
            else torch.device("cpu")
        )
        self.bytes_communicated = 0
        self.n_collectives = 0
        self.collective_s = 0.0
        self._broken: str | None = None

    # ------------------------------------------------------------------ the Executor protocol

    def owns(self, n_subdomains: int) -> list[int]:
        """Subdomains ``rank, rank + world_size, …`` (:func:`owned_round_robin`)."""
        return owned_round_robin(self.rank, self.world_size, n_subdomains)

    def all_reduce_sum(self, t: Tensor) -> Tensor:
        """The elementwise sum of ``t`` over all ranks, as a new tensor (``t`` is not modified).

        Same dtype and device as ``t``, no autograd history. Every rank must pass a tensor of
        the same shape and dtype; all ranks receive bitwise the same result. A collective.

        Raises:
            ExecutorTimeoutError: if some rank did not join within the timeout.
            ExecutorError: if the collective failed otherwise (e.g. a rank crashed).
        """
        with torch.no_grad():
            out = t.detach().clone(memory_format=torch.contiguous_format)
        if out.numel() == 0:
            return out
        self._all_reduce_(out, "all_reduce_sum")
        return out

    def guarded(self, fn: Callable[[], T]) -> T:
        """Run local work ``fn``; if it raises on any rank, raise :class:`ExecutorError` on all.

        ``fn`` must not itself issue collectives (a rank that fails before them would leave the
        others waiting until the timeout). One 8-byte all-reduce on success; on failure the
        messages are gathered (``all_gather_object``) so that every rank's error names every
        failing rank. A collective.

        Returns:
            ``fn()``.

        Raises:
            ExecutorError: on every rank if ``fn`` raised on at least one; ``.ranks`` lists the
                failing ranks and, on a failing rank, ``__cause__`` is its own exception.
            ExecutorTimeoutError: if some rank did not reach this call within the timeout.
        """
        error: Exception | None = None
        result: Any = None
        try:
            result = fn()
        except Exception as exc:  # every failure must reach the other ranks
            error = exc
        flag = torch.tensor([0.0 if error is None else 1.0], dtype=torch.float64,
                            device=self._flag_device)
        self._all_reduce_(flag, "guarded() failure flag")
        if float(flag.item()) == 0.0:
            return result
        mine = None if error is None else f"{type(error).__name__}: {error}"
        messages: list[Any] = [None] * self.world_size
        self._collective(
            "guarded() error messages",
            lambda: dist.all_gather_object(messages, mine, group=self.group),
        )
        self.n_collectives += 1
        failed = [r for r, m in enumerate(messages) if m is not None]
        details = "; ".join(f"rank {r}: {messages[r]}" for r in failed)
        names = ", ".join(str(r) for r in failed)
        raise ExecutorError(
            f"local work failed on rank(s) {names} of {self.world_size} (this is rank "
            f"{self.rank}): {details}",
            ranks=failed,
        ) from error

    # ------------------------------------------------------------------ extras

    def barrier(self) -> None:
        """Wait until every rank arrives (bounded by the timeout). A collective.

        On gloo this is ``dist.monitored_barrier(wait_all_ranks=True)``, whose error names the
        ranks that did not arrive.
        """
        if self.backend == "gloo":
            kwargs: dict[str, Any] = {"wait_all_ranks": True}
            if self.timeout_s is not None:
                kwargs["timeout"] = timedelta(seconds=self.timeout_s)
            self._collective("barrier", lambda: dist.monitored_barrier(self.group, **kwargs))
        else:
            self._collective("barrier", lambda: dist.barrier(self.group))
        self.n_collectives += 1

    def reset_counters(self) -> None:
        """Zero :attr:`bytes_communicated`, :attr:`n_collectives` and :attr:`collective_s`."""
        self.bytes_communicated = 0
        self.n_collectives = 0
        self.collective_s = 0.0

    def __repr__(self) -> str:
        return (
            f"DistributedExecutor(rank={self.rank}, world_size={self.world_size}, "
            f"backend={self.backend!r}, timeout_s={self.timeout_s})"
        )

    # ------------------------------------------------------------------ internals

    def _all_reduce_(self, t: Tensor, what: str) -> None:
        self._collective(what, lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM, group=self.group))
        self.bytes_communicated += t.numel() * t.element_size()
        self.n_collectives += 1

    def _collective(self, what: str, op: Callable[[], Any]) -> Any:
        if self._broken is not None:
            # After a timeout gloo's connections are closed; say why instead of a socket error.
            raise ExecutorError(
                f"rank {self.rank}: {what} refused: an earlier collective failed "
                f"({self._broken}); the process group cannot be used any more, end the run"
            )
        t0 = time.perf_counter()
        try:
            return op()
        except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
            self._broken = what
            raise self._translate(what, exc) from exc
        finally:
            self.collective_s += time.perf_counter() - t0

    def _translate(self, what: str, exc: RuntimeError) -> ExecutorError:
        where = f"rank {self.rank} of {self.world_size}"
        if _is_timeout(exc):
            bound = (
                "the process group's timeout"
                if self.timeout_s is None
                else f"the {self.timeout_s:g} s timeout"
            )
            return ExecutorTimeoutError(
                f"{where}: {what} did not complete within {bound}: another process is hung, "
                "far slower than this one, or took a different branch (a decision not computed "
                "from all-reduced numbers). If a process legitimately needs longer between two "
                f"synchronisation points, raise the limit with {TIMEOUT_ENV}=<seconds> (or "
                "timeout_s=); otherwise look at the other processes' logs. "
                f"Original error: {exc}"
            )
        return ExecutorError(
            f"{where}: {what} failed, most likely because another process crashed or exited "
            f"(see its log). Original error: {exc}"
        )
