"""Trainer callbacks: metrics CSV, progress display, in-memory history.

A callback subclasses :class:`Callback` and overrides any of its hooks. The trainer calls
``on_train_begin`` once, ``on_step`` after every iteration (keep it cheap: it is not charged to
the training-time budget, but it lengthens the run's wall time), ``on_log`` for every metrics
row (every ``log_every`` seconds of training time, plus the first and last), and
``on_train_end`` once. A callback stops the run with ``trainer.request_stop(reason)``.
"""

from __future__ import annotations

import csv
import logging
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mldd.train.trainer import Trainer, TrainResult

logger = logging.getLogger("mldd.train")


class Callback:
    """Base class with no-op hooks."""

    def on_train_begin(self, trainer: Trainer) -> None:
        """Called once before the first iteration (also after a resume)."""

    def on_step(self, trainer: Trainer) -> None:
        """Called after every iteration."""

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None:
        """Called with each metrics row."""

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        """Called once when the run stops."""


def row_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The union of the rows' keys, in first-seen order."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    return cols


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write metrics rows to ``path`` (missing entries left empty)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=row_columns(rows), restval="")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    # Rename so a reader (or a crash) never sees a half-written file.
    tmp.replace(path)


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a metrics CSV back, numbers as floats (empty cells as NaN, booleans kept as str)."""
    out: list[dict[str, Any]] = []
    with Path(path).open(newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if v is None or v == "":
                    row[k] = math.nan
                    continue
                try:
                    row[k] = float(v)
                except ValueError:
                    row[k] = v
            out.append(row)
    return out


class CSVLogger(Callback):
    """Keeps ``path`` equal to all metrics rows so far (rewritten at every row, so a resumed run
    whose rows come back from the checkpoint writes a consistent file)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None:
        write_csv(self.path, trainer.rows)


class History(Callback):
    """Collects the rows in memory (the trainer keeps them too; handy for custom loops)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None:
        self.rows.append(dict(row))


def format_evals(n: float) -> str:
    """A gradient-evaluation count for people: whole numbers without a decimal point,
    fractional fine-gradient equivalents (coarse levels) with one decimal."""
    n = float(n)
    return f"{n:.0f}" if n.is_integer() else f"{n:.1f}"


def _fmt(row: dict[str, Any], metric: str) -> str:
    parts = [
        f"t={row['time_s']:.1f}s",
        f"it={row['iteration']}",
        f"evals={format_evals(row['grad_evals'])}",
        f"loss={row['loss']:.3e}",
        f"{metric}={row[metric]:.4g}",
    ]
    for k in ("radius", "step_length", "lr"):
        v = row.get(k)
        if isinstance(v, float):
            parts.append(f"{k}={v:.3g}")
    return " ".join(parts)


class LogLines(Callback):
    """One ``logging`` INFO line per metrics row (for logs and non-terminal output)."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None:
        logger.info("%s%s", self.prefix, _fmt(row, trainer.problem.metric_name))

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        logger.info("%sstopped: %s", self.prefix, result.stop_reason)


class RichProgress(Callback):
    """A rich progress bar over the budget (the largest used fraction of time, evaluations or
    iterations), with the latest metrics as its description."""

    def __init__(self, label: str = "train") -> None:
        self.label = label
        self._progress: Any = None
        self._task: Any = None

    def on_train_begin(self, trainer: Trainer) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        # The bar, the share of the budget used and the elapsed time come first with fixed
        # widths, so that on an 80-column terminal the metrics text is what gets cut.
        self._progress = Progress(
            BarColumn(bar_width=24), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
            TextColumn("{task.description}"), transient=False
        )
        self._progress.start()
        self._task = self._progress.add_task(self.label, total=1.0)

    def on_step(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=trainer.budget_fraction())

    def on_log(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if self._progress is not None:
            desc = f"{self.label} {_fmt(row, trainer.problem.metric_name)}"
            self._progress.update(self._task, description=desc, completed=trainer.budget_fraction())

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=1.0)
            self._progress.stop()
            self._progress = None


def default_progress(label: str = "train") -> Callback:
    """A rich progress bar on a terminal, plain log lines otherwise."""
    return RichProgress(label) if sys.stdout.isatty() else LogLines(f"[{label}] ")
