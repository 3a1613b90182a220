"""Benchmark harness: a tiny suite end to end (runs, report, plots), targets and speed-ups."""

from __future__ import annotations

import json
import math

from mldd.train.bench import expand_methods, run_suite
from mldd.train.plots import median_curve
from mldd.train.report import time_to
from mldd.train.suites import SUITES, check_suite, get_suite


def tiny_suite(name: str) -> dict:
    return {
        "description": "tiny test suite",
        "budget_s": 0.4,
        "seeds": 2,
        "threads": 1,
        "dtype": None,
        "groups": [{
            "problems": {name: {}},
            "methods": [
                {"label": "adam", "method": "adam", "options": {"lr_grid": [1e-3, 1e-2]}},
                {"label": "torch-lbfgs-h3", "method": "torch-lbfgs", "options": {"history": 3}},
                {"label": "broken", "method": "torch-lbfgs", "options": {"history": -1}},
            ],
            "baseline": "torch-lbfgs-h3",
            "targets": [{"name": "L-BFGS h3", "labels": ["torch-lbfgs-h3"]},
                        {"name": "best Adam", "labels": ["adam"]}],
        }],
        "quick": {"budget_factor": 2, "problem_options": {"n": 32, "n_collocation": 9}},
    }


def test_builtin_suites_are_consistent() -> None:
    for name in SUITES:
        check_suite(get_suite(name))
    d = get_suite("default")
    labels = [m["label"] for m in d["groups"][0]["methods"]]
    assert {"trust-region", "lbfgs", "adam", "torch-lbfgs-h3", "torch-lbfgs-h50"} <= set(labels)
    assert list(d["groups"][0]["problems"]) == ["burgers"]


def test_expand_lr_grid() -> None:
    entry = {"label": "adam", "method": "adam", "options": {"lr_grid": [1e-3, 0.1]}}
    runs = expand_methods([entry])
    assert [r["label"] for r in runs] == ["adam-lr0.001", "adam-lr0.1"]
    assert runs[1]["options"] == {"lr": 0.1} and runs[1]["group_label"] == "adam"


def test_time_to_and_median_curve() -> None:
    rows = [{"time_s": 0.0, "e": 1.0}, {"time_s": 1.0, "e": 0.5}, {"time_s": 2.0, "e": 0.1}]
    assert time_to(rows, "e", 0.5, False) == 1.0
    assert time_to(rows, "e", 0.01, False) == math.inf
    import numpy as np

    g, y = median_curve([(np.array([0.0, 1.0]), np.array([1.0, 0.5])),
                         (np.array([0.0, 2.0]), np.array([3.0, 0.1]))], n=3)
    assert g.tolist() == [0.0, 1.0, 2.0]
    assert y.tolist() == [2.0, 0.5 * (0.5 + 3.0), 0.5 * (0.5 + 0.1)]


def test_run_suite_report_and_plots(tmp_path, tiny: str) -> None:
    out = tmp_path / "bench"
    index = run_suite(tiny_suite(tiny), out, progress=False, quick=True)
    assert index["budget_s"] == 0.2  # quick: budget / 2
    recs = index["records"]
    assert len(recs) == 2 * 4  # seeds × (2 Adam lrs + L-BFGS + broken)
    broken = [r for r in recs if r["label"] == "broken"]
    assert all(r["error"] and "history" in r["error"] for r in broken)
    ok = [r for r in recs if r["summary"]]
    # Same initial weights per seed: the first logged metric is equal across methods.
    for seed in (0, 1):
        first = {json.dumps((out / r["dir"] / "metrics.csv").read_text().splitlines()[1]
                            .split(",")[4]) for r in ok if r["seed"] == seed}
        assert len(first) == 1
    text = (out / "report.md").read_text()
    assert "## " + tiny in text
    assert "time to L-BFGS h3" in text and "speed-up" in text
    assert "`adam (lr=" in text and "`torch-lbfgs-h3`" in text
    assert "1.00×" in text  # the baseline against itself
    assert "Failed runs" in text and "broken" in text
    assert "Threads per run: 1" in text
    for suffix in ("vs_time", "vs_grad_evals"):
        assert (out / f"{tiny}_{suffix}.png").stat().st_size > 1000
    summary = json.loads((out / recs[0]["dir"] / "summary.json").read_text())
    assert summary["threads"] == 1 and summary["seed"] == 0


def test_filter_suite_selects_and_validates() -> None:
    import pytest

    from mldd.train.suites import filter_suite, get_suite

    spec = filter_suite(get_suite("baselines"), ["burgers"], ["adam", "torch-lbfgs-h3"])
    assert len(spec["groups"]) == 1
    g = spec["groups"][0]
    assert list(g["problems"]) == ["burgers"]
    assert [m["label"] for m in g["methods"]] == ["adam", "torch-lbfgs-h3"]
    assert all(set(t["labels"]) <= {"adam", "torch-lbfgs-h3"} for t in g["targets"])
    with pytest.raises(ValueError, match="unknown problem 'nope'"):
        filter_suite(get_suite("baselines"), ["nope"], None)
    with pytest.raises(ValueError, match="unknown method 'sgdd'"):
        filter_suite(get_suite("baselines"), None, ["sgdd"])
    with pytest.raises(ValueError, match="no problem"):
        filter_suite(get_suite("baselines"), ["digits"], ["torch-lbfgs-h3"])


def test_run_suite_reuse_keeps_finished_runs(tmp_path, tiny: str) -> None:
    out = tmp_path / "bench"
    first = run_suite(tiny_suite(tiny), out, progress=False, quick=True, plots=False)
    again = run_suite(tiny_suite(tiny), out, progress=False, quick=True, plots=False, reuse=True)
    done = [(r["dir"], r["summary"]) for r in first["records"] if r["summary"]]
    kept = {r["dir"]: r["summary"] for r in again["records"] if r["summary"]}
    assert done and all(kept[d] == s for d, s in done)
    # a different budget is a different config: nothing is reused
    third = run_suite(tiny_suite(tiny), out, progress=False, budget_s=0.3, plots=False, reuse=True)
    assert all(r["summary"] is None or r["summary"]["time_s"] > 0.0 for r in third["records"])
    assert all(r["summary"] != kept.get(r["dir"]) for r in third["records"] if r["summary"])


def test_baseline_at_start_gives_no_speed_up() -> None:
    """A target the baseline met with its initial weights shows "at start" and no ratio (a 0 s
    baseline time would otherwise read as a 0.00× speed-up)."""
    from mldd.train.report import problem_table

    def run(errors: list[float]) -> dict:
        rows = [{"time_s": 10.0 * i, "grad_evals": i, "err": e} for i, e in enumerate(errors)]
        return {"rows": rows, "summary": {"metric": "err", "higher_is_better": False,
                                          "final_metric": errors[-1], "best_metric": min(errors),
                                          "grad_evals": len(errors), "ms_per_grad_eval": 1.0,
                                          "iterations": len(errors), "stop_reason": "budget_s"}}

    runs = {"base": [run([0.5, 0.9, 0.8])], "other": [run([0.9, 0.7, 0.4])]}
    group = {"baseline": "base", "targets": [{"name": "base", "labels": ["base"]}]}
    lines = problem_table("p", runs, group)
    table = "\n".join(lines)
    base_row = next(ln for ln in lines if ln.startswith("| `base`"))
    other_row = next(ln for ln in lines if ln.startswith("| `other`"))
    assert "at start" in base_row and "0.00×" not in table
    assert "20.0 s | – |" in other_row


def test_report_compares_at_equal_evaluations() -> None:
    """The "at N evals" column holds each run's metric after the fewest evaluations any run
    made (a run that logs more evaluations per row is read at its last row within N)."""
    from mldd.train.report import metric_at_evals, problem_table

    def run(evals: list[int], acc: list[float]) -> dict:
        rows = [{"time_s": float(i), "grad_evals": e, "acc": a}
                for i, (e, a) in enumerate(zip(evals, acc, strict=True))]
        return {"rows": rows, "summary": {"metric": "acc", "higher_is_better": True,
                                          "final_metric": acc[-1], "best_metric": max(acc),
                                          "grad_evals": evals[-1], "ms_per_grad_eval": 1.0,
                                          "iterations": len(acc), "stop_reason": "budget_s"}}

    short = run([0, 10, 20, 30], [0.1, 0.5, 0.6, 0.7])
    long = run([0, 25, 50], [0.1, 0.8, 0.95])
    assert metric_at_evals(long["rows"], "acc", 30) == 0.8
    assert metric_at_evals(short["rows"], "acc", 30) == 0.7
    assert metric_at_evals(long["rows"], "acc", -1) != metric_at_evals(long["rows"], "acc", -1)
    lines = problem_table("p", {"short": [short], "long": [long]}, {"targets": []})
    header = next(ln for ln in lines if ln.startswith("| method"))
    assert "| best acc | at 30 evals | grad evals |" in header
    long_row = next(ln for ln in lines if ln.startswith("| `long`"))
    assert long_row.split(" | ")[1:4] == ["0.9500", "0.9500", "0.8000"]


def test_a_problem_in_two_groups_gets_two_sections(tmp_path, tiny: str) -> None:
    """Runs of one problem in two groups (other options, other methods) are not merged."""
    suite = {
        "description": "two groups, one problem", "budget_s": 0.1, "seeds": 1, "threads": 1,
        "groups": [
            {"problems": {tiny: {}}, "methods": [{"label": "adam", "method": "adam",
                                                  "options": {"lr": 1e-3}}],
             "baseline": "adam", "targets": []},
            {"problems": {tiny: {}}, "methods": [{"label": "sgd", "method": "sgd",
                                                  "options": {}}],
             "baseline": "sgd", "targets": []},
        ],
    }
    out = tmp_path / "b"
    run_suite(suite, out, progress=False)
    text = (out / "report.md").read_text()
    first, second = text.index(f"## {tiny}-group1"), text.index(f"## {tiny}-group2")
    assert "`adam`" in text[first:second] and "`sgd`" not in text[first:second]
    assert "`sgd`" in text[second:] and "`adam`" not in text[second:]
    assert (out / f"{tiny}-group2_vs_time.png").is_file()


def test_two_groups_may_not_share_a_run_directory(tmp_path, tiny: str) -> None:
    import pytest

    m = [{"label": "adam", "method": "adam", "options": {}}]
    suite = {"description": "clash", "budget_s": 0.1, "seeds": 1, "threads": 1,
             "groups": [{"problems": {tiny: {}}, "methods": m, "targets": []},
                        {"problems": {tiny: {}}, "methods": m, "targets": []}]}
    with pytest.raises(ValueError, match="suite groups 0 and 1 both run method label 'adam'"):
        run_suite(suite, tmp_path, progress=False)
    assert not (tmp_path / "runs").exists()
