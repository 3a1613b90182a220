"""`mldd bench paper`: the suite, parallel jobs, per-group budgets, overhead/memory and the report.

Everything runs on Poisson 2-D with a few hundred collocation points and sub-second budgets: the
tests check the plumbing and the report's content, not the numbers.
"""

from __future__ import annotations

import json
import math

import pytest

from mldd.perf import footprint as fp
from mldd.train.bench import run_suite
from mldd.train.paper import PUBLISHED_SPQN, best_runs, footprint_specs, run_paper
from mldd.train.report import load_bench
from mldd.train.suites import get_suite

POISSON = {"poisson2d": {"n_collocation": 200, "width": 8, "depth": 3}}


def poisson_suite(**extra: object) -> dict:
    return {
        "name": "paper",
        "description": "tiny paper-like suite",
        "budget_s": 0.3,
        "seeds": 1,
        "threads": 1,
        "dtype": "float64",
        "groups": [{
            "problems": POISSON,
            "methods": [
                {"label": "adam", "method": "adam", "options": {"lr": 1e-3}},
                {"label": "torch-lbfgs-h3", "method": "torch-lbfgs", "options": {"history": 3}},
                {"label": "mspqn", "method": "mspqn", "options": {}},
            ],
            "baseline": "torch-lbfgs-h3",
            "targets": [{"name": "L-BFGS h3 (float64)", "labels": ["torch-lbfgs-h3"]}],
        }],
        **extra,
    }


def test_paper_suite_covers_every_family() -> None:
    spec = get_suite("paper")
    pinn, cls = spec["groups"]
    assert set(pinn["problems"]) == {"burgers", "klein-gordon", "allen-cahn",
                                     "diffusion-advection"}
    assert set(cls["problems"]) == {"digits", "mnist5k"}
    methods = {m["method"] for g in spec["groups"] for m in g["methods"]}
    assert {"adam", "torch-lbfgs", "trust-region", "mspqn", "aspqn", "apts", "rmtr",
            "sgd"} <= methods
    assert spec["seeds"] >= 2 and spec["jobs"] * spec["threads"] <= 2
    assert cls["budget_s"] < spec["budget_s"]
    assert set(PUBLISHED_SPQN) == set(pinn["problems"])


def test_jobs_pool_gives_the_same_records_as_serial(tmp_path) -> None:
    """Runs in 2 worker processes: every record comes back, in plan order, with its summary;
    the iteration counts are budget-dependent, but the initial metric (same seed, same weights)
    is the same as in a serial run."""
    serial = run_suite(poisson_suite(), tmp_path / "a", progress=False, plots=False)
    pooled = run_suite(poisson_suite(), tmp_path / "b", progress=False, plots=False, jobs=2)
    assert pooled["jobs"] == 2
    assert [r["label"] for r in pooled["records"]] == [r["label"] for r in serial["records"]]
    for a, b in zip(serial["records"], pooled["records"], strict=True):
        assert b["error"] is None and b["summary"]["iterations"] >= 1
        first_a = (tmp_path / "a" / a["dir"] / "metrics.csv").read_text().splitlines()[1]
        first_b = (tmp_path / "b" / b["dir"] / "metrics.csv").read_text().splitlines()[1]
        assert first_a.split(",")[4] == first_b.split(",")[4]  # initial rel_l2
    assert "Runs at a time: 2" in (tmp_path / "b" / "report.md").read_text()


def test_group_budgets_and_quick_overrides(tmp_path) -> None:
    spec = poisson_suite(quick={"budget_factor": 2, "seeds": 1, "log_every": 0.05})
    spec["seeds"] = 3
    spec["groups"].append({**spec["groups"][0], "budget_s": 0.2,
                           "problems": {"poisson2d": {"n_collocation": 100}}})
    # Its own label: the same problem and label in two groups would share a run directory.
    spec["groups"][1]["methods"] = [{**spec["groups"][1]["methods"][0], "label": "adam-small"}]
    spec["groups"][1]["targets"] = []
    spec["groups"][1]["baseline"] = "adam-small"
    index = run_suite(spec, tmp_path, progress=False, plots=False, quick=True)
    assert index["seeds"] == 1  # quick.seeds wins over the suite's 3
    assert index["group_budgets_s"] == [0.15, 0.1]
    budgets = {(r["group"], r["label"]): r["budget_s"] for r in index["records"]}
    assert budgets[(1, "adam-small")] == 0.1 and budgets[(0, "mspqn")] == 0.15
    assert "0.15 s (poisson2d); 0.1 s (poisson2d)" in (tmp_path / "report.md").read_text()


def test_bad_jobs_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="jobs must be >= 1, got 0"):
        run_suite(poisson_suite(), tmp_path, progress=False, plots=False, jobs=0)


def test_threads_override_reaches_every_run(tmp_path) -> None:
    """``threads=`` replaces the suite's threads in every run config, the index and the report."""
    import yaml

    index = run_suite(poisson_suite(), tmp_path, progress=False, plots=False, threads=3)
    assert index["spec"]["threads"] == 3
    configs = sorted(tmp_path.glob("runs/*/*/*/config.yaml"))
    assert configs and all(yaml.safe_load(c.read_text())["threads"] == 3 for c in configs)
    assert "Threads per run: 3" in (tmp_path / "report.md").read_text()
    with pytest.raises(ValueError, match="threads must be >= 1, got 0"):
        run_suite(poisson_suite(), tmp_path / "x", progress=False, plots=False, threads=0)


def test_footprint_of_adam_and_a_failure() -> None:
    """A fresh process measures Adam: one gradient per iteration, small overhead, a peak above
    the baseline; a broken method comes back as an error, not an exception."""
    base = {"problem": "poisson2d", "problem_options": {"n_collocation": 200}, "dtype": "float64",
            "threads": 1, "seconds": 0.3, "seed": 0}
    good, bad = fp.measure_all([
        {**base, "label": "adam", "method": "adam", "options": {"lr": 1e-3}},
        {**base, "label": "broken", "method": "torch-lbfgs", "options": {"history": -1}},
    ], jobs=2)
    assert good.error is None and good.iterations >= 1
    assert good.evals_per_iter == 1.0
    assert good.batch_rows == 200  # a PINN has no mini-batches: Adam gets all points
    assert good.grad_eval_ms > 0 and math.isfinite(good.overhead)
    assert -0.5 < good.overhead < 5.0
    assert good.peak_mib >= good.baseline_mib > 50
    assert bad.error is not None and "history" in bad.error
    assert math.isnan(bad.overhead)


def test_footprint_save_load_round_trip(tmp_path) -> None:
    r = fp.Footprint("p", "l", "m", iterations=3, grad_evals=3.0, time_s=1.0, grad_eval_ms=2.0,
                     ms_per_iter=3.0, evals_per_iter=1.0, overhead=0.5, baseline_mib=10.0,
                     peak_mib=12.0)
    e = fp.Footprint("p", "x", "m", error="boom")
    fp.save([r, e], tmp_path / "f.json")
    r2, e2 = fp.load(tmp_path / "f.json")
    assert r2 == r and e2.error == "boom" and math.isnan(e2.peak_mib)
    assert r2.added_mib == 2.0


def test_run_paper_writes_report_heat_map_and_footprint(tmp_path) -> None:
    report = run_paper(tmp_path, suite=poisson_suite(), footprint_s=0.2, progress=False)
    text = report.read_text()
    for section in ("## Headline", "Speed-up to the target", "## Beside the published figures",
                    "## Optimizer overhead and memory", "## Per problem", "What differs"):
        assert section in text, section
    assert "| poisson2d |" in text and "`mspqn`" in text
    assert "cores" in text.split("## Headline")[0]  # the machine is named in the header
    assert (tmp_path / "poisson2d_solution.png").stat().st_size > 10_000
    assert "![poisson2d_solution](poisson2d_solution.png)" in text
    foot = json.loads((tmp_path / "footprint.json").read_text())
    assert [f["label"] for f in foot] == ["adam", "torch-lbfgs-h3", "mspqn"]
    assert all(f["error"] is None for f in foot)
    index = load_bench(tmp_path)
    ((label, rec),) = best_runs(index).values()
    assert rec["summary"]["final_metric"] == min(
        r["summary"]["final_metric"] for r in index["records"])
    assert label in {"adam", "torch-lbfgs-h3", "mspqn"}


def test_footprint_specs_take_one_lr_and_skip_multi_process() -> None:
    spec = poisson_suite()
    spec["groups"][0]["methods"] += [
        {"label": "adam-grid", "method": "adam", "options": {"lr_grid": [1e-4, 1e-3, 1e-2]}},
        {"label": "aspqn-2proc", "method": "aspqn", "options": {}, "nproc": 2},
    ]
    specs = footprint_specs({"spec": spec, "quick": False}, 1.0)
    labels = [s["label"] for s in specs]
    assert "aspqn-2proc" not in labels
    grid = next(s for s in specs if s["label"] == "adam-grid")
    assert grid["options"] == {"lr": 1e-3} and grid["seconds"] == 1.0


def test_footprint_times_a_mini_batch_for_mini_batch_methods() -> None:
    r = fp.measure({"problem": "digits", "label": "adam", "method": "adam",
                    "options": {"lr": 1e-3, "batch_size": 32}, "threads": 1, "seconds": 0.2})
    assert r.error is None and r.batch_rows == 32


def test_reuse_of_every_run_keeps_the_suite_timing(tmp_path) -> None:
    first = run_suite(poisson_suite(), tmp_path, progress=False, plots=False)
    again = run_suite(poisson_suite(), tmp_path, progress=False, plots=False, reuse=True)
    assert again["started"] == first["started"] and again["elapsed_s"] == first["elapsed_s"]
    assert [r["summary"] for r in again["records"]] == [r["summary"] for r in first["records"]]


def test_speedup_is_not_shown_when_the_baseline_meets_the_target_at_start() -> None:
    from mldd.train.paper import _speedup_cells

    def rec(times_values: list[tuple[float, float]]) -> dict:
        rows = [{"time_s": t, "rel_l2": v} for t, v in times_values]
        return {"rows": rows, "summary": {"metric": "rel_l2",
                                          "best_metric": min(v for _, v in times_values)}}

    group = {"baseline": "base", "targets": [{"name": "base's best", "labels": ["base"]}]}
    # The baseline never improves on its starting error: it is "at" its target at t = 0.
    runs = {"base": [rec([(0.0, 0.5), (10.0, 0.6)])], "fast": [rec([(0.0, 0.9), (4.0, 0.4)])]}
    _, value, cells = _speedup_cells(runs, group, hib=False)
    assert value == 0.5
    assert cells["fast"][0] == "4.0 s" and math.isnan(cells["fast"][1])
    # A baseline that needs time to reach its target gives a finite speed-up.
    runs["base"] = [rec([(0.0, 0.9), (8.0, 0.5)])]
    _, _, cells = _speedup_cells(runs, group, hib=False)
    assert cells["fast"][1] == 2.0
