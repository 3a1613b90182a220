"""Run a function on several spawned processes (gloo, ``file://`` rendezvous) and collect what
each rank returned or raised — with a hard deadline, so that a hang can never block pytest.

Each rank runs ``target(rank, world_size, *args)`` (``target`` named by module and function so
that spawned processes can import it) after joining a process group whose collective timeout is
``timeout_s``. Its outcome is pickled to ``<dir>/rank<r>.pkl`` before the process exits; the
parent polls the processes until all have ended or ``deadline_s`` has passed, then kills any
that are still alive. A rank that left no file is reported with ``status="missing"``.
"""

from __future__ import annotations

import importlib
import os
import pickle
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp


@dataclass
class Outcome:
    """What one rank did.

    Attributes:
        rank: the rank.
        status: ``"ok"`` (returned), ``"raised"`` or ``"missing"`` (no result: killed/crashed).
        value: the returned value (``"ok"``).
        error_types: class names of the exception's MRO (``"raised"``), most derived first.
        message: the exception's message.
        ranks: the exception's ``ranks`` attribute (ExecutorError), if any.
        elapsed_s: seconds from joining the group to the end of ``target``.
        exitcode: the process's exit code (None if it was still alive at the deadline).
    """

    rank: int
    status: str
    value: Any = None
    error_types: list[str] = field(default_factory=list)
    message: str = ""
    ranks: list[int] = field(default_factory=list)
    elapsed_s: float = float("nan")
    exitcode: int | None = None

    def raised(self, name: str) -> bool:
        """True if the rank raised an exception of class ``name`` (or a subclass)."""
        return self.status == "raised" and name in self.error_types


def _entry(rank: int, world_size: int, store: str, out_dir: str, timeout_s: float,
           backend: str | None, module: str, name: str, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    from mldd.decomposition.distributed import init_process_group

    rec: dict[str, Any]
    t0 = time.monotonic()
    try:
        init_process_group(init_method=f"file://{store}", rank=rank, world_size=world_size,
                           timeout_s=timeout_s, backend=backend)
        t0 = time.monotonic()
        target = getattr(importlib.import_module(module), name)
        rec = {"status": "ok", "value": target(rank, world_size, *args)}
    except BaseException as exc:  # record everything: the parent asserts on it
        rec = {
            "status": "raised",
            "error_types": [c.__name__ for c in type(exc).__mro__],
            "message": str(exc),
            "ranks": list(getattr(exc, "ranks", [])),
        }
    rec["elapsed_s"] = time.monotonic() - t0
    path = Path(out_dir) / f"rank{rank}.pkl"
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(rec))
    tmp.replace(path)
    # After a failed collective the group's teardown may block or abort; the result is safe on
    # disk, so leave at once without running destructors.
    os._exit(0)


def run_ranks(target: Any, *args: Any, tmp_path: Path, world_size: int = 2,
              timeout_s: float = 30.0, deadline_s: float = 60.0,
              backend: str | None = "gloo") -> list[Outcome]:
    """Run ``target(rank, world_size, *args)`` on ``world_size`` spawned processes.

    Args:
        target: a module-level function (imported by name in the children).
        *args: extra picklable arguments.
        tmp_path: a fresh directory (the rendezvous file and the results go there).
        world_size: number of processes.
        timeout_s: the process group's collective timeout.
        deadline_s: wall-clock limit for the whole run; processes alive after it are killed.
        backend: the process-group back-end (None: ``default_backend()``, NCCL for CUDA tensors
            when available).

    Returns:
        One :class:`Outcome` per rank, in rank order.
    """
    out_dir = tmp_path / f"ranks-{time.monotonic_ns()}"
    out_dir.mkdir(parents=True)
    store = out_dir / "store"
    ctx = mp.start_processes(
        _entry,
        args=(world_size, str(store), str(out_dir), timeout_s, backend, target.__module__,
              target.__name__, tuple(args)),
        nprocs=world_size, join=False, start_method="spawn",
    )
    deadline = time.monotonic() + deadline_s
    procs = ctx.processes
    try:
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        for p in procs:
            p.join(5)
    outcomes = []
    for r, p in enumerate(procs):
        path = out_dir / f"rank{r}.pkl"
        if path.is_file():
            rec = pickle.loads(path.read_bytes())
            outcomes.append(Outcome(rank=r, exitcode=p.exitcode, **rec))
        else:
            outcomes.append(Outcome(rank=r, status="missing", exitcode=p.exitcode))
    return outcomes
