"""The machine-speed probe: a fixed workload, recorded around every run, read by the report."""

from __future__ import annotations

import math

import pytest
import torch

from mldd.perf.probe import machine_probe
from mldd.train.report import machine_speed_line


def test_probe_is_positive_and_leaves_the_random_state_alone() -> None:
    state = torch.random.get_rng_state()
    ms = machine_probe(repeats=2)
    assert math.isfinite(ms) and ms > 0.0
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        machine_probe(repeats=0)


def _runs(probes: dict[str, list[list[float] | None]], processes: int = 1) -> dict:
    return {label: [{"summary": {"machine_probe_ms": p, "processes": processes}} for p in ps]
            for label, ps in probes.items()}


def test_report_line_warns_when_the_machine_drifted() -> None:
    steady = machine_speed_line(_runs({"a": [[10.0, 10.4]], "b": [[10.2, 11.9]]}))
    assert steady is not None and "10.0–11.9 ms" in steady and "within 19%" in steady
    drifted = machine_speed_line(_runs({"a": [[10.0, 10.2]], "b": [[14.5, 15.0]]}))
    assert drifted is not None and "50% apart" in drifted and "drifted" in drifted
    # Multi-process runs (every rank probing at once) and runs from before the probe are left out.
    runs = {**_runs({"a": [[10.0, 10.1]]}), **_runs({"p": [[40.0, 41.0]]}, processes=2),
            **_runs({"old": [None]})}
    line = machine_speed_line(runs)
    assert line is not None and "10.0–10.1 ms" in line
    assert machine_speed_line(_runs({"old": [None, None]})) is None


def test_a_run_records_the_probe_and_the_report_shows_it(tmp_path, tiny: str) -> None:
    from mldd.train.bench import run_suite

    suite = {"description": "probe", "budget_s": 0.1, "seeds": 2, "threads": 1,
             "groups": [{"problems": {tiny: {}},
                         "methods": [{"label": "adam", "method": "adam", "options": {}}],
                         "baseline": "adam", "targets": []}]}
    index = run_suite(suite, tmp_path, progress=False, plots=False)
    for rec in index["records"]:
        probe = rec["summary"]["machine_probe_ms"]
        assert len(probe) == 2 and all(p > 0 for p in probe)
    assert "*Machine speed*" in (tmp_path / "report.md").read_text()
