"""PNG plots of a run directory or a benchmark directory (matplotlib, Agg backend).

Run: ``vs_time.png`` and ``vs_grad_evals.png``, each with the loss and the metric.
Benchmark: ``<problem>_vs_time.png`` and ``<problem>_vs_grad_evals.png``, one line per method
(median over seeds of the logged metric, as step curves), log-scale y for errors.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

# Agg: plots are files; no display is needed (or available) on the benchmark machines.
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from mldd.train.callbacks import read_csv


def _series(rows: list[dict[str, Any]], x: str, y: str) -> tuple[np.ndarray, np.ndarray]:
    xs = np.array([float(r.get(x, math.nan)) for r in rows], dtype=float)
    ys = np.array([float(r.get(y, math.nan)) if isinstance(r.get(y), float) else math.nan
                   for r in rows], dtype=float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    return xs[keep], ys[keep]


def _log_ok(ys: np.ndarray) -> bool:
    return ys.size > 0 and bool(np.all(ys > 0))


def plot_run(run_dir: str | Path) -> list[Path]:
    """Draw a run's plots from ``metrics.csv`` (and ``summary.json`` for the metric's name).

    Returns:
        The written PNG paths.
    """
    run_dir = Path(run_dir)
    rows = read_csv(run_dir / "metrics.csv")
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        s = json.loads(summary_path.read_text())
        metric, hib = s["metric"], bool(s["higher_is_better"])
        title = f"{s['problem']} / {s['method']}"
    else:
        base = {"time_s", "iteration", "grad_evals", "loss", "radius", "accepted", "step_length",
                "lr", "phase"}
        metric = next((k for k in (rows[0] if rows else {}) if k not in base), "loss")
        hib, title = metric == "accuracy", run_dir.name
    written = []
    for x, xlabel, fname in (("time_s", "training time [s]", "vs_time.png"),
                             ("grad_evals", "gradient evaluations", "vs_grad_evals.png")):
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for ax, y in zip(axes, ("loss", metric), strict=True):
            xs, ys = _series(rows, x, y)
            ax.plot(xs, ys, marker=".")
            if _log_ok(ys) and (y == "loss" or not hib):
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(y)
            ax.grid(True, alpha=0.3)
        fig.suptitle(title)
        fig.tight_layout()
        path = run_dir / fname
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def median_curve(
    curves: list[tuple[np.ndarray, np.ndarray]], n: int = 200
) -> tuple[np.ndarray, np.ndarray]:
    """Median over seeds of step curves, on a common grid up to the longest run.

    Each curve is held at its last value after it ends (the run is over; its result stands).
    """
    curves = [(x, y) for x, y in curves if x.size]
    if not curves:
        return np.array([]), np.array([])
    xmax = max(float(x[-1]) for x, _ in curves)
    grid = np.linspace(0.0, xmax, n) if xmax > 0 else np.array([0.0])
    vals = []
    for x, y in curves:
        idx = np.searchsorted(x, grid, side="right") - 1
        vals.append(y[np.clip(idx, 0, len(y) - 1)])
    return grid, np.median(np.vstack(vals), axis=0)


def plot_bench(bench_dir: str | Path) -> list[Path]:
    """Draw a benchmark's per-problem plots from ``bench.json`` and the run directories.

    Returns:
        The written PNG paths.
    """
    from mldd.train.report import load_bench, select_runs

    bench_dir = Path(bench_dir)
    index = load_bench(bench_dir)
    written: list[Path] = []
    for problem, runs in select_runs(index).items():
        first = next(iter(runs.values()))[0]["summary"]
        metric, hib = first["metric"], bool(first["higher_is_better"])
        for x, xlabel, suffix in (("time_s", "training time [s]", "vs_time"),
                                  ("grad_evals", "gradient evaluations", "vs_grad_evals")):
            fig, ax = plt.subplots(figsize=(7, 4.5))
            logy = not hib
            for label, recs in runs.items():
                gx, gy = median_curve([_series(r["rows"], x, metric) for r in recs])
                if gx.size:
                    ax.plot(gx, gy, label=label, drawstyle="steps-post")
                    logy = logy and _log_ok(gy)
            if logy:
                ax.set_yscale("log")
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"{metric} (median over seeds)")
            ax.set_title(problem)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
            fig.tight_layout()
            path = bench_dir / f"{problem}_{suffix}.png"
            fig.savefig(path, dpi=100)
            plt.close(fig)
            written.append(path)
    return written


def plot_dir(path: str | Path) -> list[Path]:
    """Re-draw the plots of a run directory or a benchmark directory.

    Raises:
        FileNotFoundError: ``path`` holds neither ``bench.json`` nor ``metrics.csv``.
    """
    path = Path(path)
    if (path / "bench.json").is_file():
        return plot_bench(path)
    if (path / "metrics.csv").is_file():
        return plot_run(path)
    raise FileNotFoundError(f"{path} is neither a run directory (metrics.csv) nor a benchmark "
                            "directory (bench.json)")


def plot_pinn_solution(problem: Any, model: Any, path: str | Path, title: str) -> Path:
    """Heat maps of a PINN's solution, the reference and the pointwise error.

    Args:
        problem: a grid PINN problem (``reference_grid()``, ``reference()``, ``predict``,
            ``variables``).
        model: the trained network.
        path: the PNG to write.
        title: the figure's title (problem, method, error).

    Returns:
        ``path``.
    """
    a0, a1, ref = problem.reference_grid()
    pts, _ = problem.reference()
    u = problem.predict(model, pts).reshape(ref.shape).cpu().numpy()
    err = np.abs(u - ref)
    extent = (float(a0[0]), float(a0[-1]), float(a1[0]), float(a1[-1]))
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    lo, hi = float(min(u.min(), ref.min())), float(max(u.max(), ref.max()))
    panels = (("network", u, "viridis", (lo, hi)), ("reference", ref, "viridis", (lo, hi)),
              ("|network − reference|", err, "magma", (0.0, float(err.max()))))
    for ax, (name, data, cmap, (vmin, vmax)) in zip(axes, panels, strict=True):
        # The grid is U[i, j] = u(a0[i], a1[j]): a0 along the horizontal axis.
        im = ax.imshow(data.T, origin="lower", extent=extent, aspect="auto", cmap=cmap,
                       vmin=vmin, vmax=vmax)
        ax.set_xlabel(problem.variables[0])
        ax.set_ylabel(problem.variables[1])
        ax.set_title(name)
        fig.colorbar(im, ax=ax)
    fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
