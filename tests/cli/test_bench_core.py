"""`mldd bench core` (quick) writes its report; mldd L-BFGS matches torch's iteration count."""

import json

import pytest

from mldd.perf.core import _rosenbrock_case, compare_lbfgs, measure_overhead
from mldd.train.cli import main


def test_lbfgs_iterations_match_torch_on_rosenbrock():
    mine, theirs = compare_lbfgs("rosenbrock", _rosenbrock_case(100), memory=10, tol=1e-6,
                                 max_iter=2000, repeats=2)
    assert mine.converged and theirs.converged
    assert mine.iterations <= 1.1 * theirs.iterations, (mine, theirs)
    for r in (mine, theirs):  # alternating repeats: the median lies in the measured range
        assert 0 < r.time_min_s <= r.time_s <= r.time_max_s


def test_bench_core_quick_cli(tmp_path, capsys):
    out = tmp_path / "core"
    assert main(["bench", "core", "--quick", "--threads", "1", "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    # The report is printed as written: brackets are not taken for console markup.
    assert "median [min, max]" in report and "median [min, max]" in capsys.readouterr().out
    assert "Optimizer overhead" in report and "torch.optim.LBFGS" in report
    assert "torch's, paired" in report
    data = json.loads((out / "results.json").read_text())
    assert {r["method"] for r in data["overhead"]} == {
        "TrustRegion(hessian='lsr1')", "mldd LBFGS", "torch.optim.LBFGS"}
    assert all(r["grad_evals"] > 0 for r in data["convergence"])


def test_interleaving_in_chunks_changes_no_iterate_and_no_count():
    # torch's LBFGS advanced 3 iterations per step makes the same iterates as one long step,
    # and the re-evaluation at the start of each step is left out of the count.
    short = compare_lbfgs("rosenbrock", _rosenbrock_case(100), memory=10, tol=1e-6,
                          max_iter=2000, repeats=1, chunk=3)
    long = compare_lbfgs("rosenbrock", _rosenbrock_case(100), memory=10, tol=1e-6,
                         max_iter=2000, repeats=1, chunk=5000)
    for a, b in zip(short, long, strict=True):
        assert (a.method, a.iterations, a.grad_evals, a.final_loss) == (
            b.method, b.iterations, b.grad_evals, b.final_loss)


def test_overhead_repeats_give_medians_with_their_range():
    results = measure_overhead(n_iter=2, repeats=3)
    assert [r.method for r in results] == [
        "TrustRegion(hessian='lsr1')", "mldd LBFGS", "torch.optim.LBFGS"]
    for r in results:
        assert r.repeats == 3
        assert 0 < r.overhead_fraction_min <= r.overhead_fraction <= r.overhead_fraction_max
        assert r.overhead_ms_per_iter > 0 and r.ms_per_grad_eval > 0
    with pytest.raises(ValueError, match="repeats must be an integer >= 1, got 0"):
        measure_overhead(repeats=0)
