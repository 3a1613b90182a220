"""torch-lbfgs under a time budget: the iteration blocks shrink near the end."""

from __future__ import annotations

import torch


def test_torch_lbfgs_blocks_end_within_the_budget() -> None:
    """The last iteration blocks shrink so that torch-lbfgs does not overrun its time budget."""
    import time as _time

    from mldd.train.methods import BudgetedLBFGS

    x = torch.zeros(50, dtype=torch.float64, requires_grad=True)
    a = torch.linspace(1.0, 1e3, 50, dtype=torch.float64)
    opt = BudgetedLBFGS([x], budget_s=1.0, max_iter=20, history_size=3,
                        line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)

    def closure() -> torch.Tensor:
        _time.sleep(0.005)  # every evaluation costs ~5 ms: 20 iterations cost > 0.1 s
        opt.zero_grad()
        loss = (a * (x - 1) ** 2).sum() + (x ** 4).sum()
        loss.backward()
        return loss

    opt.set_progress(0.0, 0)
    opt.step(closure)  # measures the time per iteration
    assert opt.param_groups[0]["max_iter"] == 20
    opt.set_progress(0.97, 1)  # 30 ms left: a block of 1–6 iterations, not 20
    opt.step(closure)
    assert 1 <= opt.param_groups[0]["max_iter"] <= 6
    opt.set_progress(2.0, 2)  # past the budget: still at least one iteration
    opt.step(closure)
    assert opt.param_groups[0]["max_iter"] == 1
