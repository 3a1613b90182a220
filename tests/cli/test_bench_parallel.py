"""`mldd bench parallel`: serial vs 2-process ASPQN, same iterates, a readable report."""

from __future__ import annotations

import math

import pytest

from mldd.perf.parallel import format_parallel, measure_parallel_efficiency


@pytest.mark.parametrize("sweep", [False, True])
def test_parallel_measurement_reproduces_the_serial_iterates(sweep: bool) -> None:
    # sweep=True: the hybrid, whose serial run sweeps the two processes' groups one after another.
    r = measure_parallel_efficiency(
        problem="poisson2d",
        problem_options={"n_collocation": 64, "width": 6, "depth": 2,
                         "reference_options": {"n_eval": 11}},
        # Replicated global phase: the iterates are then bit-identical. With the data-parallel
        # one (the default) they agree to rounding only, and on this tiny, badly scaled problem
        # a local line search branches differently on last-bit differences (the identity to
        # 1e-10 is tested on a better-scaled problem in tests/distributed).
        method_options={"local_iters": 2, "data_parallel": False, "local_sweep": sweep},
        nproc=2, outer_iters=1, timeout_s=120,
        baseline=not sweep,  # the machine-ceiling copies once are enough
    )
    assert not r.data_parallel
    assert r.max_iterate_diff < 1e-10
    # 3 layers dealt by estimated cost (1, 2/3, 1/3 of a gradient): the first alone on rank 0.
    assert r.subdomains_per_rank == [1, 2]
    assert r.bytes_per_iter > 0 and r.collectives_per_iter >= 1
    assert r.serial_s > 0 and r.parallel_s > 0
    assert abs(r.efficiency - r.speedup / 2) < 1e-12
    assert len(r.collective_s_per_rank) == 2 and min(r.collective_s_per_rank) >= 0
    assert r.collective_s_per_rank[0] < r.parallel_s
    assert r.work_inflation > 0 and 0 <= r.idle_share < 1
    text = format_parallel(r)
    assert "| speed-up | efficiency |" in text and "KiB" in text and "poisson2d" in text
    assert "Where the ideal is lost" in text
    if sweep:
        assert r.copies_s != r.copies_s and "Machine ceiling" not in text  # NaN: not measured
    else:
        assert r.copies_s > 0 and r.ceiling > 0
        assert abs(r.efficiency_of_ceiling - r.efficiency / r.ceiling) < 1e-12
        assert "Machine ceiling" in text


def test_parallel_measurement_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="nproc must be >= 2"):
        measure_parallel_efficiency(nproc=1)
    with pytest.raises(ValueError, match="outer_iters must be >= 1"):
        measure_parallel_efficiency(outer_iters=0)


@pytest.mark.parametrize("extra, baseline", [([], True), (["--no-ceiling"], False)])
def test_cli_passes_options_and_writes_the_report(tmp_path, monkeypatch, extra: list[str],
                                                  baseline: bool) -> None:
    # The measurement itself is tested above; here only the CLI's wiring (variants, --quick,
    # --no-ceiling) and the report it writes.
    import mldd.perf.parallel as parallel
    from mldd.train.cli import main

    calls: list[dict] = []
    real = parallel.measure_parallel_efficiency

    def fake(**kw):
        calls.append(kw)
        return parallel.ParallelResult(
            method=kw["method"], problem=kw["problem"], nproc=kw["nproc"],
            outer_iters=kw["outer_iters"], serial_s=2.0, parallel_s=1.25, speedup=1.6,
            efficiency=0.8, bytes_per_iter=1024.0, collectives_per_iter=3.0,
            max_iterate_diff=0.0, subdomains_per_rank=[1, 1],
            options={"method": kw["method_options"]}, collective_s_per_rank=[0.1, 0.05],
            work_inflation=1.2, idle_share=0.06, copies_s=2.2 if kw["baseline"] else math.nan)

    monkeypatch.setattr(parallel, "measure_parallel_efficiency", fake)
    out = tmp_path / "par"
    assert main(["-q", "bench", "parallel", "--quick", "--methods", "aspqn,aspqn-sweep",
                 "--out", str(out), *extra]) == 0
    assert real is not fake
    assert [c["method_options"] for c in calls] == [{}, {"local_sweep": True}]
    assert all(c["baseline"] is baseline and c["outer_iters"] == 2 for c in calls)
    assert calls[0]["problem_options"] == {"n_collocation": 2000}
    text = (out / "report.md").read_text()
    assert text.count("Where the ideal is lost") == 2
    assert ("Machine ceiling" in text) is baseline
    if baseline:
        assert "at most 91% here" in text and "88% of that ceiling" in text


def test_cli_rejects_one_process(tmp_path, capsys) -> None:
    from mldd.train.cli import main

    assert main(["-q", "bench", "parallel", "--nproc", "1", "--out", str(tmp_path)]) == 2
    assert "--nproc must be >= 2" in capsys.readouterr().err
