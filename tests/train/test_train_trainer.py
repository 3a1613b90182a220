"""Trainer: budget stops, target, NaN handling, metrics rows/CSV, checkpoint/resume exactness."""

from __future__ import annotations

import csv
import math
from typing import Any

import pytest
import torch
from tiny_problem import TinyLeastSquares

from mldd.train import CSVLogger, History, Trainer
from mldd.train.callbacks import format_evals
from mldd.train.methods import build_optimizer


def make(method: str = "adam", options: dict[str, Any] | None = None, seed: int = 0,
         problem: TinyLeastSquares | None = None, **kw: Any) -> Trainer:
    problem = problem or TinyLeastSquares()
    model = problem.build_model(seed)
    opt = build_optimizer(method, model.parameters(), problem, options or {},
                          {"budget_s": kw.get("budget_s"), "max_iters": kw.get("max_iters")})
    kw.setdefault("log_every", 0.0)
    return Trainer(problem, model, opt, seed=seed, **kw)


def test_needs_a_budget() -> None:
    with pytest.raises(ValueError, match="at least one budget"):
        make()
    with pytest.raises(ValueError, match="max_iters must be positive"):
        make(max_iters=0)


def test_max_iters_stop_and_rows() -> None:
    res = make(max_iters=7).run()
    assert res.stop_reason == "max_iters"
    assert res.iterations == 7
    assert res.grad_evals == 7  # Adam: one closure call per step
    row0 = res.rows[0]
    assert row0["iteration"] == 0 and row0["grad_evals"] == 0 and row0["time_s"] == 0
    assert math.isfinite(row0["loss"])
    assert res.rows[-1]["iteration"] == 7
    assert set(row0) >= {"time_s", "iteration", "grad_evals", "loss", "rel_l2", "lr"}
    assert res.best_metric <= row0["rel_l2"]


def test_grad_eval_budget_counts_closure_calls() -> None:
    res = make("torch-lbfgs", {"history": 3}, max_grad_evals=20).run()
    assert res.stop_reason == "max_grad_evals"
    assert res.grad_evals >= 20
    # An L-BFGS iteration with a line search may take several evaluations.
    assert res.iterations <= res.grad_evals


def test_wall_clock_budget() -> None:
    res = make(budget_s=0.3).run()
    assert res.stop_reason == "budget_s"
    assert 0.3 <= res.time_s < 1.5
    assert res.wall_s >= res.time_s


def test_target_stop() -> None:
    first = make(max_iters=1).run().rows[0]["rel_l2"]
    res = make("torch-lbfgs", max_iters=500, target=0.5 * first).run()
    assert res.stop_reason == "target"
    assert res.final_metric <= 0.5 * first
    assert res.time_to_target is not None


def test_nonfinite_loss_stops_cleanly() -> None:
    res = make(problem=TinyLeastSquares(nan_after=5), max_iters=50).run()
    assert res.stop_reason == "nonfinite_loss"
    assert res.iterations == 5 + 1
    assert math.isfinite(res.final_loss)


class _Stub(torch.optim.Optimizer):
    """Reports grad_evals and a stop reason through last_info."""

    def __init__(self, params: Any, evals_per_step: float = 3) -> None:
        super().__init__(params, {"lr": 0.0})
        self.n = 0
        self.evals_per_step = evals_per_step
        self.last_info: dict[str, Any] = {}

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = closure()
        self.n += 1
        self.last_info = {"loss": float(loss.detach()), "grad_evals": self.evals_per_step * self.n,
                          "radius": 0.5,
                          "accepted": True, "stop_reason": "converged" if self.n == 4 else None}
        return loss


def test_optimizer_grad_evals_and_stop_reason() -> None:
    p = TinyLeastSquares()
    m = p.build_model(0)
    res = Trainer(p, m, _Stub(m.parameters()), max_iters=100, log_every=0.0).run()
    assert res.stop_reason == "optimizer: converged"
    assert res.iterations == 4 and res.grad_evals == 12
    assert res.rows[-1]["radius"] == 0.5 and res.rows[-1]["accepted"] is True


def test_fractional_fine_gradient_equivalents_are_kept() -> None:
    # A multilevel step costs e.g. 1 fine + 3 coarse gradients at 1/8: 1.375 equivalents.
    p = TinyLeastSquares()
    m = p.build_model(0)
    res = Trainer(p, m, _Stub(m.parameters(), 1.375), max_iters=100, log_every=0.0).run()
    assert res.grad_evals == 5.5 and res.rows[-1]["grad_evals"] == 5.5
    assert format_evals(5.5) == "5.5" and format_evals(12.0) == "12"


def test_csv_columns(tmp_path) -> None:
    hist = History()
    t = make(max_iters=5, callbacks=[CSVLogger(tmp_path / "metrics.csv"), hist])
    t.run()
    with (tmp_path / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(hist.rows) == 6
    assert {"time_s", "grad_evals", "loss", "rel_l2", "iteration"} <= set(rows[0])


def _params(t: Trainer) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in t.model.parameters()])


@pytest.mark.parametrize(
    ("method", "options"),
    [("adam", {"batch_size": 24}), ("torch-lbfgs", {"history": 5}), ("adam-lbfgs",
                                                                       {"switch_iters": 6})],
)
def test_checkpoint_resume_is_exact(tmp_path, method: str, options: dict[str, Any]) -> None:
    k = 10
    bs = options.get("batch_size")
    full = make(method, options, max_iters=2 * k, batch_size=bs)
    full.run()
    first = make(method, options, max_iters=k, batch_size=bs, out=tmp_path,
                 checkpoint_every=1e9)
    first.run()
    assert (tmp_path / "checkpoint.pt").is_file()
    # Fresh objects, as a new process would build them; the other seed proves the load works.
    torch.manual_seed(123)
    second = make(method, options, max_iters=2 * k, batch_size=bs, seed=0)
    second.resume(tmp_path / "checkpoint.pt")
    res = second.run()
    assert res.iterations == 2 * k
    assert torch.equal(_params(second), _params(full))
    assert second.grad_evals == full.grad_evals


def test_resume_on_another_device_is_refused(tmp_path) -> None:
    first = make("adam", {"batch_size": 24}, max_iters=3, batch_size=24, out=tmp_path,
                 checkpoint_every=1e9)
    first.run()
    ck = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    # stands in for a checkpoint written on a GPU (this machine may have none)
    ck["model"] = {k: v.to("meta") for k, v in ck["model"].items()}
    torch.save(ck, tmp_path / "elsewhere.pt")
    second = make("adam", {"batch_size": 24}, max_iters=6, batch_size=24)
    before = _params(second)
    with pytest.raises(ValueError, match="written on meta; this run is on cpu"):
        second.resume(tmp_path / "elsewhere.pt")
    assert torch.equal(_params(second), before)
