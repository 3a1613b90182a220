"""The one training loop: ``optimizer.step(closure)`` until a budget, a target or the optimizer
says stop.

Timing rule (docs/benchmarks.md, equal budgets): ``time_s`` is *training time* — the wall time spent
in ``optimizer.step`` and in drawing mini-batches. Metric evaluations, logging, callbacks'
``on_log`` and checkpoints are timed separately and excluded, so that a method is not charged
for how often it is observed and equal budgets stay fair. ``wall_s`` in the result is the
full wall time.

Gradient evaluations: if the optimizer reports ``last_info["grad_evals"]`` (cumulative, in
fine-gradient equivalents — multilevel methods do), that number is used; otherwise the trainer
counts calls of the closure it hands to ``step``. The count is a float: a coarse level's
gradient is a fraction of a fine one
(:func:`~mldd.train.callbacks.format_evals` prints it).

Stop reasons: ``"budget_s"``, ``"max_grad_evals"``, ``"max_iters"``, ``"target"``,
``"nonfinite_loss"``, ``"optimizer: <reason>"`` (from ``last_info["stop_reason"]``),
``"interrupted"`` (Ctrl-C) or a callback's reason.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mldd.problems.base import Problem
from mldd.train.callbacks import Callback

#: Optimizer state copied from ``last_info`` into metrics rows when present.
STATE_KEYS = ("radius", "accepted", "step_length", "lr", "phase")


@dataclass
class TrainResult:
    """What a run did.

    Attributes:
        stop_reason: why it stopped (see the module docstring).
        iterations: optimizer steps taken.
        grad_evals: gradient evaluations (fine-gradient equivalents).
        time_s: training time (excludes metric evaluation and logging).
        wall_s: wall time of the whole run, including metric evaluation.
        final_metric: metric at the end.
        best_metric: best metric seen at any logged row.
        final_loss: the last finite loss reported.
        time_to_target: first ``time_s`` at which the target was reached (None if never/no target).
        rows: the logged metrics rows.
    """

    stop_reason: str
    iterations: int
    grad_evals: float
    time_s: float
    wall_s: float
    final_metric: float
    best_metric: float
    final_loss: float
    time_to_target: float | None
    rows: list[dict[str, Any]] = field(default_factory=list)


def _to_float(x: Any) -> float:
    if x is None:
        return math.nan
    if isinstance(x, Tensor):
        return float(x.detach())
    return float(x)


def _reached(value: float, target: float, higher_is_better: bool) -> bool:
    if not math.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


class Trainer:
    """Runs an optimizer on a problem under budgets, logging metrics and checkpointing.

    Args:
        problem: the :class:`~mldd.problems.base.Problem`.
        model: the network (built by ``problem.build_model(seed)``).
        optimizer: anything with ``step(closure)``, ``zero_grad()``, ``state_dict()`` and
            ``load_state_dict()``; may expose ``last_info`` and ``set_progress(time_s, iteration)``.
        batch_size: mini-batch size, or ``None`` for the full batch (``batch=None``).
        budget_s: training-time budget in seconds.
        max_grad_evals: gradient-evaluation budget.
        max_iters: iteration budget.
        target: stop once the metric reaches this value (≤ for errors, ≥ for accuracy); checked
            at every logged row.
        log_every: seconds of training time between metrics rows (default 2).
        checkpoint_every: seconds of wall time between checkpoints to ``out/checkpoint.pt``;
            ``None`` disables periodic checkpoints (a final one is still written when ``out`` is
            given and ``checkpoint_every`` is not None).
        out: run directory for checkpoints.
        seed: seeds the mini-batch generator.
        callbacks: :class:`~mldd.train.callbacks.Callback` objects.

    Raises:
        ValueError: if no budget at all is given, or a budget is not positive.
    """

    def __init__(
        self,
        problem: Problem,
        model: nn.Module,
        optimizer: Any,
        *,
        batch_size: int | None = None,
        budget_s: float | None = None,
        max_grad_evals: int | None = None,
        max_iters: int | None = None,
        target: float | None = None,
        log_every: float = 2.0,
        checkpoint_every: float | None = None,
        out: str | Path | None = None,
        seed: int = 0,
        callbacks: Sequence[Callback] = (),
    ) -> None:
        if budget_s is None and max_grad_evals is None and max_iters is None:
            raise ValueError("give at least one budget: budget_s, max_grad_evals or max_iters")
        for name, v in (("budget_s", budget_s), ("max_grad_evals", max_grad_evals),
                        ("max_iters", max_iters), ("batch_size", batch_size)):
            if v is not None and v <= 0:
                raise ValueError(f"{name} must be positive, got {v!r}")
        if log_every < 0:
            raise ValueError(f"log_every must be >= 0, got {log_every!r}")
        self.problem = problem
        self.model = model
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.budget_s = budget_s
        self.max_grad_evals = max_grad_evals
        self.max_iters = max_iters
        self.target = target
        self.log_every = log_every
        self.checkpoint_every = checkpoint_every
        self.out = Path(out) if out is not None else None
        self.seed = seed
        #: what the run is (``problem``, ``method`` names): saved in checkpoints, and
        #: :meth:`resume` refuses a checkpoint of another run. Set by :func:`build_trainer`.
        self.run_info: dict[str, Any] = {}
        self.callbacks = list(callbacks)

        # Counters: everything below goes into the checkpoint.
        self.iteration = 0
        self.closure_calls = 0
        self.grad_evals: float = 0
        self.time_s = 0.0
        self.rows: list[dict[str, Any]] = []
        self.best_metric = math.nan
        self.time_to_target: float | None = None
        self.last_loss = math.nan
        self._last_log_time = 0.0
        self._generator = torch.Generator().manual_seed(seed)
        self._epoch_state: Tensor | None = None
        self._epoch_pos = 0
        self._batches: Iterator[Any] | None = None
        self._stop: str | None = None
        self._wall_offset = 0.0

    # ------------------------------------------------------------------ helpers

    def request_stop(self, reason: str) -> None:
        """Stop after the current iteration with ``reason``."""
        self._stop = reason

    def budget_fraction(self) -> float:
        """Largest used fraction of the budgets (for progress bars), in [0, 1]."""
        fr = 0.0
        if self.budget_s:
            fr = max(fr, self.time_s / self.budget_s)
        if self.max_grad_evals:
            fr = max(fr, self.grad_evals / self.max_grad_evals)
        if self.max_iters:
            fr = max(fr, self.iteration / self.max_iters)
        return min(fr, 1.0)

    def _next_batch(self) -> Any:
        if self.batch_size is None:
            return None
        while True:
            if self._batches is None:
                # Remember the generator state at the epoch start: a resume replays the epoch's
                # permutation from it and skips the batches already used.
                self._epoch_state = self._generator.get_state()
                self._epoch_pos = 0
                self._batches = iter(self.problem.batches(self.batch_size, self._generator))
            try:
                b = next(self._batches)
            except StopIteration:
                self._batches = None
                continue
            self._epoch_pos += 1
            return b

    def _closure_for(self, batch: Any) -> Any:
        """A closure serving every convention of :mod:`mldd.closures`.

        Called with no argument it is a torch-style closure (zero_grad, loss, backward) on the
        trained model; called as ``closure(model, rows)`` (multilevel and data-sharded methods)
        it returns the loss of ``model`` on rows ``rows`` of the batch, without ``backward()``.
        """

        def closure(model: nn.Module | None = None, rows: Tensor | None = None) -> Tensor:
            self.closure_calls += 1
            if model is None and rows is None:
                self.optimizer.zero_grad()
                loss = self.problem.loss(self.model, batch)
                loss.backward()
                return loss
            sub = self.problem.select_rows(batch, rows)
            return self.problem.loss(self.model if model is None else model, sub)

        # Data-sharded methods read how many rows they may shard; problems without row access
        # (user-defined ones) still train with every method that does not need rows.
        with contextlib.suppress(NotImplementedError):
            closure.n_rows = self.problem.n_rows(batch)  # type: ignore[attr-defined]
        return closure

    def _info(self) -> dict[str, Any]:
        info = getattr(self.optimizer, "last_info", None)
        return info if isinstance(info, dict) else {}

    def _budget_stop(self) -> str | None:
        if self.budget_s is not None and self.time_s >= self.budget_s:
            return "budget_s"
        if self.max_grad_evals is not None and self.grad_evals >= self.max_grad_evals:
            return "max_grad_evals"
        if self.max_iters is not None and self.iteration >= self.max_iters:
            return "max_iters"
        return None

    def _make_row(self, loss: float) -> dict[str, Any]:
        metric = float(self.problem.metric(self.model))
        row: dict[str, Any] = {
            "time_s": round(self.time_s, 6),
            "iteration": self.iteration,
            "grad_evals": self.grad_evals,
            "loss": loss,
            self.problem.metric_name: metric,
        }
        info = self._info()
        for k in STATE_KEYS:
            if k in info and info[k] is not None:
                v = info[k]
                row[k] = float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
        if "lr" not in row:
            groups = getattr(self.optimizer, "param_groups", None)
            if groups and "lr" in groups[0]:
                row["lr"] = float(groups[0]["lr"])
        return row

    def _log(self, row: dict[str, Any]) -> None:
        m = row[self.problem.metric_name]
        hib = self.problem.higher_is_better
        if math.isfinite(m) and (
            not math.isfinite(self.best_metric)
            or (m > self.best_metric if hib else m < self.best_metric)
        ):
            self.best_metric = m
        if (
            self.target is not None
            and self.time_to_target is None
            and _reached(m, self.target, hib)
        ):
            self.time_to_target = row["time_s"]
        self.rows.append(row)
        self._last_log_time = self.time_s
        for cb in self.callbacks:
            cb.on_log(self, row)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly: model, optimizer, counters, RNG states."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "trainer": {
                "iteration": self.iteration,
                "closure_calls": self.closure_calls,
                "grad_evals": self.grad_evals,
                "time_s": self.time_s,
                "rows": self.rows,
                "best_metric": self.best_metric,
                "time_to_target": self.time_to_target,
                "last_loss": self.last_loss,
                "last_log_time": self._last_log_time,
                "epoch_state": self._epoch_state,
                "epoch_pos": self._epoch_pos if self._batches is not None else 0,
                "in_epoch": self._batches is not None,
                "generator": self._generator.get_state(),
                "wall_s": self._wall_offset,
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
            "run": dict(self.run_info),
        }

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` to ``path`` (default ``out/checkpoint.pt``)."""
        if path is None:
            if self.out is None:
                raise ValueError("save_checkpoint needs a path or a trainer with out=")
            path = self.out / "checkpoint.pt"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        return path

    def resume(self, path: str | Path) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`; :meth:`run` then continues it.

        The trainer must have been built like the one that wrote it (same problem, model
        architecture, method and options); budgets may differ (they are totals, not increments).
        A run on the CPU reads a checkpoint written on a GPU (every tensor mapped to the CPU); a
        run on a GPU needs a checkpoint written on that device.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a trainer checkpoint, or it was written by a run of
                another problem or method (:attr:`run_info`), or for another network or
                optimizer, or on another device than this GPU run's; nothing is loaded then.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
        mine_devices = {str(v.device) for v in self.model.state_dict().values()}
        # A CPU run maps everything to the CPU, so a checkpoint written on a GPU continues on a
        # machine without one; a GPU run keeps the devices the file names (checked below).
        on_cpu = mine_devices <= {"cpu"}
        try:
            ck = torch.load(path, weights_only=False, map_location="cpu" if on_cpu else None)
        except Exception as exc:  # unpickling errors have many types
            raise ValueError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
        if not isinstance(ck, dict) or not {"model", "optimizer", "trainer", "rng"} <= set(ck):
            raise ValueError(f"{str(path)!r} is not a checkpoint written by mldd's Trainer")
        saved = ck.get("run") or {}
        for key in ("problem", "method"):
            mine = self.run_info.get(key)
            if key in saved and mine is not None and saved[key] != mine:
                raise ValueError(f"checkpoint {str(path)!r} was written by a run with {key} "
                                 f"{saved[key]!r}; this run's {key} is {mine!r}")
        saved_devices = {str(v.device) for v in ck["model"].values()
                         if isinstance(v, torch.Tensor)}
        if saved_devices and saved_devices != mine_devices:
            # the optimizer state (memories, per-level vectors) lives where it was written;
            # moving it piecemeal would mix devices in the next step (its small k×k matrices
            # must stay on the CPU)
            raise ValueError(f"checkpoint {str(path)!r} was written on "
                             f"{', '.join(sorted(saved_devices))}; this run is on "
                             f"{', '.join(sorted(mine_devices))}. Resume on the device that "
                             "wrote it (the problem's device option), or on the CPU")
        backup = {k: v.clone() for k, v in self.model.state_dict().items()}
        try:
            self.model.load_state_dict(ck["model"])
        except RuntimeError as exc:
            raise ValueError(f"checkpoint {str(path)!r} holds another network than this run's "
                             f"(different architecture or options): {exc}") from exc
        try:
            self.optimizer.load_state_dict(ck["optimizer"])
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            self.model.load_state_dict(backup)
            raise ValueError(f"checkpoint {str(path)!r}: its optimizer state does not fit this "
                             f"run's {type(self.optimizer).__name__} ({exc!r}); resume with the "
                             "method and options that wrote it") from exc
        t = ck["trainer"]
        self.iteration = int(t["iteration"])
        self.closure_calls = int(t["closure_calls"])
        self.grad_evals = float(t["grad_evals"])
        self.time_s = float(t["time_s"])
        self.rows = list(t["rows"])
        self.best_metric = float(t["best_metric"])
        self.time_to_target = t["time_to_target"]
        self.last_loss = float(t["last_loss"])
        self._last_log_time = float(t["last_log_time"])
        self._wall_offset = float(t.get("wall_s", 0.0))
        self._batches = None
        if t["in_epoch"] and t["epoch_state"] is not None:
            # Replay the interrupted epoch's permutation and skip the batches already used.
            self._generator.set_state(t["epoch_state"])
            self._epoch_state = t["epoch_state"]
            self._batches = iter(self.problem.batches(self.batch_size or 1, self._generator))
            for _ in range(int(t["epoch_pos"])):
                next(self._batches)
            self._epoch_pos = int(t["epoch_pos"])
        self._generator.set_state(t["generator"])
        rng = ck["rng"]
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    # ------------------------------------------------------------------ the loop

    def run(self) -> TrainResult:
        """Train until a stop condition; returns a :class:`TrainResult`."""
        wall0 = time.perf_counter()
        last_ck = wall0
        self._stop = None
        for cb in self.callbacks:
            cb.on_train_begin(self)
        pending: dict[str, Any] | None = None
        if not self.rows:
            # The first row shows the initial model; its loss is the loss at the initial point,
            # which the first step returns, so the row is emitted after that step.
            pending = self._make_row(math.nan)
        reason: str | None = None
        try:
            while True:
                reason = self._stop or self._budget_stop()
                if reason is not None:
                    break
                set_progress = getattr(self.optimizer, "set_progress", None)
                if callable(set_progress):
                    set_progress(self.time_s, self.iteration)
                t0 = time.perf_counter()
                batch = self._next_batch()
                out = self.optimizer.step(self._closure_for(batch))
                self.time_s += time.perf_counter() - t0
                self.iteration += 1
                info = self._info()
                ge = info.get("grad_evals")
                self.grad_evals = float(ge) if ge is not None else self.closure_calls
                # step() returns the loss where the step started (torch's convention); mldd
                # optimizers also report the new loss in last_info, which is fresher.
                start = _to_float(out)
                loss = _to_float(info.get("loss", out))
                if pending is not None:
                    pending["loss"] = start
                    self._log(pending)
                    pending = None
                if not math.isfinite(loss):
                    reason = "nonfinite_loss"
                    break
                self.last_loss = loss
                for cb in self.callbacks:
                    cb.on_step(self)
                opt_reason = info.get("stop_reason")
                if opt_reason:
                    reason = f"optimizer: {opt_reason}"
                    break
                if self.time_s - self._last_log_time >= self.log_every:
                    self._log(self._make_row(loss))
                    if self.target is not None and self.time_to_target is not None:
                        reason = "target"
                        break
                if (
                    self.checkpoint_every is not None
                    and self.out is not None
                    and time.perf_counter() - last_ck >= self.checkpoint_every
                ):
                    self.save_checkpoint()
                    last_ck = time.perf_counter()
        except KeyboardInterrupt:
            reason = "interrupted"
        reason = reason or "stopped"
        if pending is not None:
            self._log(pending)
        if not self.rows or self.rows[-1]["iteration"] != self.iteration:
            last = self.last_loss if reason != "nonfinite_loss" else math.nan
            self._log(self._make_row(last))
        self._wall_offset += time.perf_counter() - wall0
        if self.checkpoint_every is not None and self.out is not None:
            self.save_checkpoint()
        final_metric = float(self.rows[-1][self.problem.metric_name])
        result = TrainResult(
            stop_reason=reason,
            iterations=self.iteration,
            grad_evals=self.grad_evals,
            time_s=self.time_s,
            wall_s=self._wall_offset,
            final_metric=final_metric,
            best_metric=self.best_metric,
            final_loss=self.last_loss,
            time_to_target=self.time_to_target,
            rows=self.rows,
        )
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result
