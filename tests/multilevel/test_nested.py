"""Nested iteration: identity with one level, warm-start quality, data levels, NaN guard, errors."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn

from mldd.linalg.flat import params_to_vector
from mldd.models import ResidualMLP
from mldd.multilevel import Hierarchy, nested_iteration
from mldd.objective import ClosureError
from mldd.optim import LBFGS, TrustRegion

D = torch.float64
_gen = torch.Generator().manual_seed(0)
X = torch.rand(128, 2, generator=_gen, dtype=D) * 2 - 1
Y = torch.sin(math.pi * X[:, :1]) * torch.cos(2 * X[:, 1:])


def mse(model: nn.Module, rows: Tensor | None = None) -> Tensor:
    x, y = (X, Y) if rows is None else (X[rows], Y[rows])
    return ((model(x) - y) ** 2).mean()


def model_closure(model: nn.Module) -> Tensor:
    return mse(model)


def flat(m: nn.Module) -> Tensor:
    return params_to_vector(list(m.parameters()))


def test_one_level_is_the_plain_optimizer_loop() -> None:
    """With one level, nested iteration is exactly the optimizer run on the model (bit-equal)."""
    torch.manual_seed(0)
    model = ResidualMLP(2, 1, width=6, depth=3)
    twin = copy.deepcopy(model)
    res = nested_iteration(Hierarchy.build(model, levels=1), model_closure,
                           lambda p: torch.optim.Adam(p, lr=1e-2), iterations=7)
    opt = torch.optim.Adam(twin.parameters(), lr=1e-2)
    for _ in range(7):
        def closure() -> Tensor:
            opt.zero_grad()
            loss = mse(twin)
            loss.backward()
            return loss
        opt.step(closure)
    assert torch.equal(res.x, flat(twin)) and torch.equal(flat(model), flat(twin))
    (rec,) = res.history
    assert rec.iterations == 7 and rec.evaluations == 7 + 2 and rec.cost == 9.0
    assert rec.loss_end == pytest.approx(float(mse(twin).detach()), rel=1e-14)


@pytest.mark.parametrize("seed", [0, 1])
def test_nested_iteration_beats_the_same_fine_budget_from_scratch(seed: int) -> None:
    """Depth hierarchy 3 → 5 → 9 blocks, 30 L-BFGS iterations per level, vs 30 on the fine
    network from the same initialisation. Measured final losses (seed 0/1): nested 1.95e-3 /
    1.55e-3, scratch 4.1e-3 / 4.1e-3."""
    torch.manual_seed(seed)
    fine = ResidualMLP(2, 1, width=12, depth=9)
    scratch = copy.deepcopy(fine)
    f_init = float(mse(fine).detach())
    h = Hierarchy.build(fine, levels=3, coarsen="depth")
    res = nested_iteration(h, model_closure, lambda p: LBFGS(p), iterations=30)
    alone = nested_iteration(Hierarchy.build(scratch, levels=1), model_closure,
                             lambda p: LBFGS(p), iterations=30)
    nested_end, scratch_end = res.history[-1].loss_end, alone.history[0].loss_end
    assert nested_end < 0.6 * scratch_end, (nested_end, scratch_end)
    assert torch.equal(res.x, flat(fine))  # the result is in the fine model
    assert float(mse(fine).detach()) == pytest.approx(nested_end, rel=1e-12)
    # Each level starts where the level below ended, up to the Euler error of the prolongation:
    # well below the initial loss, and far below a prolongation that forgets to halve h.
    for below, rec in zip(res.history, res.history[1:], strict=False):
        assert rec.loss_start < 0.3 * f_init
        assert rec.loss_start < 25 * below.loss_end
    wrong = copy.deepcopy(h[1].model)
    assert wrong is not None
    wrong.load_state_dict(h[1].model.state_dict())  # type: ignore[union-attr]
    wrong.h = h[0].model.h  # type: ignore[union-attr,assignment]
    assert res.history[1].loss_start < 0.1 * float(mse(wrong).detach())
    assert res.cost == pytest.approx(sum(r.evaluations * h[r.level].cost for r in res.history))


def test_warm_start_only_and_trust_region_without_backward() -> None:
    """iterations=0 on the finest level gives a pure warm start; mldd's TrustRegion with exact
    Hessian-vector products works because its closure is not given backward()."""
    torch.manual_seed(0)
    fine = ResidualMLP(2, 1, width=6, depth=5)
    h = Hierarchy.build(fine, levels=2)
    res = nested_iteration(h, model_closure, lambda p: TrustRegion(p, hessian="exact"),
                           iterations=[10, 0])
    assert res.history[1].iterations == 0 and res.history[1].evaluations == 2
    assert res.history[0].loss_end < 0.5 * res.history[0].loss_start
    torch.testing.assert_close(res.x, h[0].transfer.prolong_params(h[0].vector()))  # type: ignore[union-attr]


def test_data_levels_get_their_rows_and_need_a_rows_closure() -> None:
    torch.manual_seed(0)
    fine = ResidualMLP(2, 1, width=6, depth=5)
    h = Hierarchy.build(fine, levels=3, coarsen=("depth", "data"), n_rows=128)
    sizes: list[int] = []

    def rows_closure(model: nn.Module, rows: Tensor | None) -> Tensor:
        sizes.append(len(X) if rows is None else rows.numel())
        return mse(model, rows)

    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        nested_iteration(h, model_closure, lambda p: torch.optim.SGD(p, lr=0.1), iterations=2)
    res = nested_iteration(h, rows_closure, lambda p: torch.optim.SGD(p, lr=0.1),
                           iterations=[3, 2, 1])
    assert sizes == [64] * 5 + [64] * 4 + [128] * 3
    assert [r.kind for r in res.history] == ["depth", "data", "fine"]
    assert res.history[1].cost == pytest.approx(4 * 0.5)


class _Poison(torch.optim.Optimizer):
    """SGD that writes NaN into the parameters at its third step."""

    def __init__(self, params: object) -> None:
        super().__init__(params, {"lr": 0.05})  # type: ignore[arg-type]
        self.calls = 0

    @torch.no_grad()
    def step(self, closure):  # type: ignore[no-untyped-def,override]
        with torch.enable_grad():
            loss = closure()
        self.calls += 1
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"]) if self.calls != 3 else p.fill_(math.nan)
        return loss


def test_non_finite_parameters_never_stay() -> None:
    torch.manual_seed(0)
    model = ResidualMLP(2, 1, width=4, depth=3)
    h = Hierarchy.build(model, levels=1)
    seen: list[Tensor] = []
    with pytest.warns(RuntimeWarning, match="non-finite parameters on level 0 after step 2"):
        res = nested_iteration(h, model_closure, _Poison, iterations=10,
                               callback=lambda l, k, f: seen.append(flat(model)))
    assert torch.isfinite(res.x).all() and res.history[0].iterations == 3
    assert math.isfinite(res.history[0].loss_end)
    # Back at the point where the poisoned step started (the last one with a finite loss).
    torch.testing.assert_close(res.x, seen[1], rtol=0, atol=0)


def test_argument_errors() -> None:
    model = ResidualMLP(2, 1, width=4, depth=3)
    h = Hierarchy.build(model, levels=2)
    sgd = lambda p: torch.optim.SGD(p, lr=0.1)  # noqa: E731
    with pytest.raises(ValueError, match="iterations must be integers >= 0"):
        nested_iteration(h, model_closure, sgd, iterations=-1)
    with pytest.raises(ValueError, match="iterations: got 3 values for 2 levels"):
        nested_iteration(h, model_closure, sgd, iterations=[1, 2, 3])
    with pytest.raises(ValueError, match="optimizer: got 1 values"):
        nested_iteration(h, model_closure, [sgd], iterations=1)
    with pytest.raises(ValueError, match=r"expected a torch\.optim\.Optimizer"):
        nested_iteration(h, model_closure, lambda p: None, iterations=1)  # type: ignore[arg-type,return-value]
    with pytest.raises(ClosureError, match=r"closure\(model\)"):
        nested_iteration(h, lambda: mse(model), sgd, iterations=1)
    with pytest.raises(ValueError, match="backward must be"):
        nested_iteration(h, model_closure, sgd, iterations=1, backward="yes")  # type: ignore[arg-type]
