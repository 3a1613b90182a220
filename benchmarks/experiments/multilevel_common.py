"""Shared harness of the multilevel experiment scripts (``benchmarks/experiments/multilevel_*``).

Runs an optimizer on a problem for a budget of fine-gradient equivalents and records, after every
step, the cumulative cost (fine-gradient equivalents, docs/algorithms.md §1.5), the wall time, the
training loss and (optionally) the problem's metric. Methods are compared by the cost to reach a
target loss (the loss the single-level trust-region method reaches within its budget), and
secondarily by wall time, measured interleaved in one process with one torch thread.

Run the scripts from the repository root with ``.venv/bin/python benchmarks/experiments/...``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mldd.models import ResidualMLP


@dataclass
class Trace:
    """One run: per-step cost, wall time, loss (and a few events)."""

    name: str
    cost: list[float] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    metric: float = math.nan
    metrics: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def loss_at(self, cost: float) -> float:
        """The best loss recorded with at most ``cost`` fine-gradient equivalents spent."""
        vals = [f for c, f in zip(self.cost, self.loss, strict=True) if c <= cost]
        return min(vals) if vals else math.nan

    def metric_at(self, cost: float, higher_is_better: bool) -> float:
        """The best metric recorded with at most ``cost`` fine-gradient equivalents spent."""
        vals = [v for c, v in zip(self.cost, self.metrics, strict=False) if c <= cost]
        return (max if higher_is_better else min)(vals) if vals else math.nan

    def first_reaching(self, target: float) -> tuple[float, float]:
        """``(cost, seconds)`` at which the loss first drops to ``target`` (inf if never)."""
        for c, t, f in zip(self.cost, self.time, self.loss, strict=True):
            if f <= target:
                return c, t
        return math.inf, math.inf

    def first_metric(self, target: float, higher_is_better: bool) -> tuple[float, float]:
        """``(cost, seconds)`` at which the metric first reaches ``target`` (inf if never)."""
        for c, t, v in zip(self.cost, self.time, self.metrics, strict=False):
            if (v >= target) if higher_is_better else (v <= target):
                return c, t
        return math.inf, math.inf

    def best_metric(self, higher_is_better: bool) -> float:
        return (max if higher_is_better else min)(self.metrics)

    @property
    def final(self) -> float:
        return self.loss[-1] if self.loss else math.nan


def cost_of(opt: Any) -> float:
    """Cumulative fine-gradient equivalents of an optimizer (mldd shells and torch optimizers)."""
    info = getattr(opt, "last_info", None) or {}
    if "grad_evals" in info:
        return float(info["grad_evals"])
    counters = getattr(opt, "counters", None)
    if counters is not None:
        return float(max(counters.n_f, counters.n_g) + counters.n_hvp)
    raise ValueError("unknown optimizer cost")


def run(name: str, model: nn.Module, opt: Any, closure: Callable[..., torch.Tensor],
        loss_fn: Callable[[nn.Module], float], budget: float, *, max_steps: int = 100000,
        time_limit: float = 120.0, cost_fn: Callable[[Any], float] = cost_of,
        metric: Callable[[nn.Module], float] | None = None, metric_every: int = 1) -> Trace:
    """Step ``opt`` with ``closure`` until ``budget`` fine-gradient equivalents are spent.

    ``loss_fn(model)`` is the loss recorded after each step (evaluated outside the timer and not
    counted: it is the observer's, not the method's).
    """
    tr = Trace(name)
    elapsed = 0.0
    tr.cost.append(0.0)
    tr.time.append(0.0)
    tr.loss.append(loss_fn(model))
    if metric is not None:
        tr.metrics.append(metric(model))
    for k in range(max_steps):
        t0 = time.perf_counter()
        opt.step(closure)
        elapsed += time.perf_counter() - t0
        c = cost_fn(opt)
        tr.cost.append(c)
        tr.time.append(elapsed)
        tr.loss.append(loss_fn(model))
        if metric is not None:
            tr.metrics.append(metric(model) if (k + 1) % metric_every == 0 else tr.metrics[-1])
        if c >= budget or elapsed > time_limit or not math.isfinite(tr.loss[-1]):
            break
    if metric is not None:
        tr.metric = metric(model)
        tr.metrics[-1] = tr.metric
    return tr


def resmlp_like(model: nn.Module, depth: int, width: int | None = None,
                seed: int = 0) -> ResidualMLP:
    """A seeded :class:`ResidualMLP` with the input/output sizes of ``model`` (a ResidualMLP)."""
    assert isinstance(model, ResidualMLP)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResidualMLP(model.in_features, model.out_features, width=width or model.width,
                           depth=depth, activation=model.activation_name, T=model.T,
                           dtype=next(model.parameters()).dtype, flatten=model.flatten)


@torch.no_grad()
def eval_loss(loss: Callable[[nn.Module], torch.Tensor]) -> Callable[[nn.Module], float]:
    def f(m: nn.Module) -> float:
        return float(loss(m))
    return f


def _ratio(ref: float, other: float) -> float:
    """``ref / other``: how many times sooner ``other`` got there (NaN when ``other`` is 0)."""
    return ref / other if other > 0 else math.nan


def table(traces: list[Trace], target: float, ref: Trace | None = None) -> str:
    """Markdown table: cost and seconds to reach ``target``, final loss, ratios to ``ref``."""
    budget = max(ref.cost) if ref is not None else max(traces[0].cost)
    marks = [budget / 8, budget / 4, budget / 2]
    rows = ["| method | cost to target | s to target | final loss | cost ratio | time ratio | "
            + " | ".join(f"loss@{m:g}" for m in marks) + " |",
            "|---|---:|---:|---:|---:|---:|" + "---:|" * len(marks)]
    rc, rt = ref.first_reaching(target) if ref is not None else (math.nan, math.nan)
    for tr in traces:
        c, t = tr.first_reaching(target)
        rows.append(f"| {tr.name} | {c:.1f} | {t:.2f} | {tr.final:.4g} | "
                    f"{_ratio(rc, c):.2f} | {_ratio(rt, t):.2f} | "
                    + " | ".join(f"{tr.loss_at(m):.3g}" for m in marks) + " |")
    return "\n".join(rows)


def metric_table(traces: list[Trace], higher_is_better: bool, ref: Trace) -> str:
    """Markdown table by the problem's metric: the target is ``ref``'s best metric."""
    target = ref.best_metric(higher_is_better)
    rc, rt = ref.first_metric(target, higher_is_better)
    rows = [f"target metric {target:.4g} (best of {ref.name})",
            "| method | cost to target | s to target | best metric | final metric | cost ratio "
            "| time ratio |", "|---|---:|---:|---:|---:|---:|---:|"]
    for tr in traces:
        c, t = tr.first_metric(target, higher_is_better)
        rows.append(f"| {tr.name} | {c:.1f} | {t:.2f} | {tr.best_metric(higher_is_better):.4g} | "
                    f"{tr.metric:.4g} | {_ratio(rc, c):.2f} | {_ratio(rt, t):.2f} |")
    return "\n".join(rows)


def horizon_table(traces: list[Trace], ref: Trace, horizons: Sequence[float], *,
                  by_metric: bool = False, higher_is_better: bool = False) -> str:
    """Markdown table: for each budget ``B``, the target is the best loss (or metric) ``ref``
    reaches with at most ``B`` fine-gradient equivalents, and each method's entry is
    ``ref``'s cost to that target ÷ the method's (its time ratio in brackets).

    One budget gives one number; this table shows how the speed-up depends on the horizon, so a
    method that is ahead early and caught up late is seen as such.
    """
    def reach(tr: Trace, target: float) -> tuple[float, float]:
        return (tr.first_metric(target, higher_is_better) if by_metric
                else tr.first_reaching(target))

    others = [tr for tr in traces if tr is not ref]
    rows = [f"| budget | {ref.name}'s best | " + " | ".join(tr.name for tr in others) + " |",
            "|---:|---:|" + "---|" * len(others)]
    for b in horizons:
        target = ref.metric_at(b, higher_is_better) if by_metric else ref.loss_at(b)
        if math.isnan(target) or b > max(ref.cost) * (1 + 1e-9):
            continue
        rc, rt = reach(ref, target)
        if rc <= 0:  # the baseline never improved on its starting value: no speed-up to show
            rows.append(f"| {b:g} | {target:.4g} | " + " | ".join(["at start"] * len(others))
                        + " |")
            continue
        cells = []
        for tr in others:
            c, t = reach(tr, target)
            cells.append(f"{_ratio(rc, c):.2f}× ({_ratio(rt, t):.2f}×)" if math.isfinite(c)
                         else "never")
        rows.append(f"| {b:g} | {target:.4g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def save_traces(path: str | Path, traces: Sequence[Trace]) -> None:
    """Write ``traces`` as JSON (one object per run) for :func:`load_traces`."""
    Path(path).write_text(json.dumps([asdict(tr) for tr in traces]))


def load_traces(paths: Sequence[str | Path]) -> list[Trace]:
    """The traces saved by :func:`save_traces` in ``paths``, in order."""
    out: list[Trace] = []
    for p in paths:
        out.extend(Trace(**d) for d in json.loads(Path(p).read_text()))
    return out
