"""The Markdown report of a benchmark directory (``bench.json`` + run directories).

Per problem, one table: method, final and best metric (median over seeds, with the min–max
spread), gradient evaluations, milliseconds per gradient evaluation, iterations, stop reasons,
and for each target of the suite the time to reach it and the speed-up
``time_baseline / time_method``.

Targets are defined in :mod:`mldd.train.suites`: the best metric (median over seeds) that the
target's runs reach within the budget, the strongest when several are listed. A seed reaches a
target at the first logged row whose metric is at least as good; the time shown is the median over
the seeds that reach it, followed by ``(k/n)`` when only k of n seeds do; "never" when none does.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from mldd.train.callbacks import read_csv


def load_bench(out: str | Path) -> dict[str, Any]:
    """``bench.json`` with each successful record's ``rows`` read from its ``metrics.csv``."""
    out = Path(out)
    index: dict[str, Any] = json.loads((out / "bench.json").read_text())
    for rec in index["records"]:
        csv_path = out / rec["dir"] / "metrics.csv"
        rec["rows"] = read_csv(csv_path) if rec.get("summary") and csv_path.is_file() else []
    return index


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    return float(np.median(xs)) if xs else math.nan


def _better(a: float, b: float, hib: bool) -> bool:
    if not math.isfinite(b):
        return math.isfinite(a)
    return a > b if hib else a < b


def select_runs(index: dict[str, Any]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """problem → display label → successful records, keeping one learning rate per grid.

    For an entry expanded from ``lr_grid``, the learning rate with the best median final metric
    is kept and shown as ``<label> (lr=<lr>)``. A problem that appears in several groups of the
    suite (with other options or methods) gets one section per group, keyed
    ``<problem>-group<k>`` (``k`` counted from 1).
    """
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    by_problem: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {}
    groups_of: dict[str, set[int]] = {}
    for rec in index["records"]:
        groups_of.setdefault(rec["problem"], set()).add(int(rec.get("group", 0)))
    for rec in index["records"]:
        if not rec.get("summary"):
            continue
        key = rec["problem"]
        if len(groups_of[key]) > 1:
            key = f"{key}-group{int(rec.get('group', 0)) + 1}"
        by_problem.setdefault(key, {}).setdefault(rec["group_label"], {}).setdefault(
            rec["label"], []
        ).append(rec)
    for problem, groups in by_problem.items():
        out[problem] = {}
        for glabel, variants in groups.items():
            if len(variants) == 1:
                (recs,) = variants.values()
                out[problem][glabel] = recs
                continue
            best_label, best_val = None, math.nan
            for label, recs in variants.items():
                hib = bool(recs[0]["summary"]["higher_is_better"])
                v = _median([r["summary"]["final_metric"] for r in recs])
                if best_label is None or _better(v, best_val, hib):
                    best_label, best_val = label, v
            assert best_label is not None
            lr = variants[best_label][0]["options"].get("lr")
            out[problem][f"{glabel} (lr={lr:g})"] = variants[best_label]
    return out


def _base_label(display: str) -> str:
    return display.split(" (lr=")[0]


def time_to(rows: list[dict[str, Any]], metric: str, target: float, hib: bool) -> float:
    """First ``time_s`` at which ``metric`` reaches ``target`` (inf if never)."""
    for r in rows:
        v = r.get(metric, math.nan)
        if isinstance(v, float) and math.isfinite(v) and (v >= target if hib else v <= target):
            return float(r["time_s"])
    return math.inf


def metric_at_evals(rows: list[dict[str, Any]], metric: str, evals: float) -> float:
    """The last logged ``metric`` with at most ``evals`` gradient evaluations (NaN if none)."""
    value = math.nan
    for r in rows:
        e, v = r.get("grad_evals", math.nan), r.get(metric, math.nan)
        if not (isinstance(e, int | float) and e <= evals):
            break
        if isinstance(v, int | float) and math.isfinite(v):
            value = float(v)
    return value


def equal_evals(runs: dict[str, list[dict[str, Any]]]) -> float:
    """The fewest gradient evaluations any run of the section made: the point at which all of
    them are compared "at equal evaluations"."""
    ends = [float(r["summary"]["grad_evals"]) for recs in runs.values() for r in recs]
    return min(ends) if ends else math.nan


def compute_targets(
    runs: dict[str, list[dict[str, Any]]], targets: list[dict[str, Any]], hib: bool
) -> list[tuple[str, float, str]]:
    """``(target name, value, label that set it)`` for each target definition."""
    out: list[tuple[str, float, str]] = []
    for t in targets:
        best, who = math.nan, ""
        for display, recs in runs.items():
            if _base_label(display) not in t["labels"]:
                continue
            v = _median([r["summary"]["best_metric"] for r in recs])
            if _better(v, best, hib):
                best, who = v, display
        out.append((t["name"], best, who))
    return out


def _fmt_metric(v: float, hib: bool) -> str:
    if not math.isfinite(v):
        return "–"
    return f"{v:.4f}" if hib else f"{v:.2e}"


def _spread(vals: list[float], hib: bool) -> str:
    vals = [v for v in vals if v is not None and math.isfinite(v)]
    if not vals:
        return "–"
    med = _fmt_metric(float(np.median(vals)), hib)
    if len(vals) == 1:
        return med
    return f"{med} [{_fmt_metric(min(vals), hib)}, {_fmt_metric(max(vals), hib)}]"


def speedup(base_time: float, time: float) -> float:
    """``base_time / time``, or NaN where it means nothing: a time that is not finite (never
    reached) or 0 — in particular a baseline that met the target with its initial weights."""
    ok = math.isfinite(time) and math.isfinite(base_time) and time > 0 and base_time > 0
    return base_time / time if ok else math.nan


def _time_cell(times: list[float]) -> tuple[str, float]:
    reached = [t for t in times if math.isfinite(t)]
    if not reached:
        return "never", math.inf
    med = float(np.median(reached))
    # A target met by the initial weights says nothing about the method.
    cell = "at start" if med == 0.0 else f"{med:.1f} s"
    if len(reached) < len(times):
        cell += f" ({len(reached)}/{len(times)})"
    return cell, med


#: Relative spread of the machine probe above which a report warns about drift. The idle 2-core
#: benchmark VM varies by 10–15% from minute to minute; the drift that misled a comparison in
#: session 8 was 30–50%.
DRIFT_WARNING = 0.25


def machine_speed_line(runs: dict[str, list[dict[str, Any]]]) -> str | None:
    """The report line on the machine's speed during the single-process runs of a section.

    Each run records :func:`~mldd.perf.probe.machine_probe` at its start and end
    (``machine_probe_ms``). Multi-process runs probe on every rank at once with fewer threads
    each, so they are left out. ``None`` when fewer than two probes exist (older runs).
    """
    probes = [float(p) for recs in runs.values() for r in recs
              if int(r["summary"].get("processes", 1)) == 1
              for p in (r["summary"].get("machine_probe_ms") or [])]
    if len(probes) < 2:
        return None
    lo, hi = min(probes), max(probes)
    spread = hi / lo - 1.0
    line = (f"- *Machine speed*: a fixed reference workload (`mldd.perf.probe`) took "
            f"{lo:.1f}–{hi:.1f} ms at the single-process runs' starts and ends")
    if spread > DRIFT_WARNING:
        return line + (f", {100 * spread:.0f}% apart: the machine's speed drifted, so times of "
                       "different runs may be off by up to that much (the \"at N evals\" "
                       "column is not).")
    return line + f" (within {100 * spread:.0f}%)."


def problem_table(
    problem: str, runs: dict[str, list[dict[str, Any]]], group: dict[str, Any]
) -> list[str]:
    """Markdown lines for one problem's section."""
    first = next(iter(runs.values()))[0]["summary"]
    metric, hib = first["metric"], bool(first["higher_is_better"])
    targets = compute_targets(runs, group.get("targets", []), hib)
    baseline = group.get("baseline")
    base_display = next((d for d in runs if _base_label(d) == baseline), None)
    lines = [f"## {problem}", ""]
    better = "higher" if hib else "lower"
    lines.append(f"Metric: `{metric}` ({better} is better), median over seeds [min, max].")
    for name, value, who in targets:
        lines.append(f"- Target *{name}*: {_fmt_metric(value, hib)} (set by `{who or '–'}`)")
    if baseline:
        lines.append(f"- Speed-ups are `time({baseline}) / time(method)` to each target.")
    n_eq = equal_evals(runs)
    lines.append(f"- *At {n_eq:,.0f} evals*: each run's {metric} after the fewest gradient "
                 "evaluations any run here made (comparison at equal evaluations).")
    speed = machine_speed_line(runs)
    if speed:
        lines.append(speed)
    lines.append("")
    head = ["method", f"final {metric}", f"best {metric}", f"at {n_eq:,.0f} evals", "grad evals",
            "ms / grad eval", "iterations", "stop"]
    for name, _, _ in targets:
        head += [f"time to {name}", "speed-up"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    base_times: dict[str, float] = {}
    if base_display is not None:
        for name, value, _ in targets:
            ts = [time_to(r["rows"], metric, value, hib) for r in runs[base_display]]
            base_times[name] = _time_cell(ts)[1]
    for display, recs in runs.items():
        s = [r["summary"] for r in recs]
        stops = sorted({x["stop_reason"] for x in s})
        cells = [
            f"`{display}`",
            _spread([x["final_metric"] for x in s], hib),
            _spread([x["best_metric"] for x in s], hib),
            _spread([metric_at_evals(r["rows"], metric, n_eq) for r in recs], hib),
            f"{_median([x['grad_evals'] for x in s]):.0f}",
            f"{_median([x['ms_per_grad_eval'] for x in s]):.1f}",
            f"{_median([x['iterations'] for x in s]):.0f}",
            ", ".join(stops),
        ]
        for name, value, _ in targets:
            if not math.isfinite(value):
                cells += ["–", "–"]
                continue
            cell, med = _time_cell([time_to(r["rows"], metric, value, hib) for r in recs])
            sp = speedup(base_times.get(name, math.inf), med)
            speed = f"{sp:.2f}×" if math.isfinite(sp) else "–"
            cells += [cell, speed]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render(index: dict[str, Any]) -> str:
    """The whole report as Markdown."""
    spec = index["spec"]
    runs = select_runs(index)
    recs = index["records"]
    any_sum = next((r["summary"] for r in recs if r.get("summary")), None)
    lines = [f"# Benchmark `{index['suite']}`", ""]
    if spec.get("description"):
        lines += [spec["description"], ""]
    when = _dt.datetime.fromtimestamp(index.get("started", 0)).strftime("%Y-%m-%d %H:%M")
    jobs = int(index.get("jobs", 1))
    lines += [
        f"- Budget: {_budget_text(index)} of training time per run (metric evaluation "
        "excluded), equal for every method" + (" — quick mode" if index.get("quick") else ""),
        f"- Seeds: {index['seeds']}; each run starts from the seed's initial weights",
        f"- Threads per run: {spec.get('threads', 2)} in total; processes per run: 1"
        + _multi_process_note(spec),
        f"- Runs at a time: {jobs}"
        + (f" (worker processes, each run pinned to {spec.get('threads', 2)} thread(s))"
           if jobs > 1 else ""),
        f"- Started {when}; total {index.get('elapsed_s', 0):.0f} s",
    ]
    if any_sum:
        v = any_sum["versions"]
        lines.append("- Versions: " + ", ".join(f"{k} {v[k]}" for k in v))
    lines.append("")
    for problem, pruns in runs.items():
        gi = int(next(iter(pruns.values()))[0].get("group", 0))
        lines += problem_table(problem, pruns, spec["groups"][gi])
        lines.append(f"![{problem} vs time]({problem}_vs_time.png) "
                     f"![{problem} vs grad evals]({problem}_vs_grad_evals.png)")
        lines.append("")
    failed = [r for r in recs if r.get("error")]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- `{r['problem']}` / `{r['label']}` seed {r['seed']}: {r['error']}")
        lines.append("")
    return "\n".join(lines)


def _budget_text(index: dict[str, Any]) -> str:
    """``"90 s"``, or per group when groups have their own budgets."""
    budgets = index.get("group_budgets_s") or [index["budget_s"]]
    if len(set(budgets)) == 1:
        return f"{budgets[0]:g} s"
    groups = index["spec"]["groups"]
    return "; ".join(f"{b:g} s ({', '.join(g['problems'])})"
                     for b, g in zip(budgets, groups, strict=True))


def _multi_process_note(spec: dict[str, Any]) -> str:
    """``" (label: N processes, …)"`` for the suite's multi-process entries."""
    multi = sorted({f"{m['label']}: {m['nproc']} processes" for g in spec.get("groups", [])
                    for m in g.get("methods", []) if int(m.get("nproc", 1)) > 1})
    if not multi:
        return ""
    return " (" + "; ".join(multi) + ", the threads shared among them)"


def write_report(out: str | Path) -> Path:
    """Write ``out/report.md`` from ``out/bench.json``."""
    out = Path(out)
    path = out / "report.md"
    path.write_text(render(load_bench(out)))
    return path
