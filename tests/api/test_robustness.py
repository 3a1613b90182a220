"""Robustness of every public optimizer against failing closures, mismatched checkpoints, frozen
parameters and bad arguments (the 2026-11-25 audit: each test failed before its fix)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.nn.utils import parameters_to_vector

import mldd
from mldd.decomposition.apts import STALL_LIMIT
from mldd.multilevel.moffo import SKIP_LIMIT
from mldd.objective import ClosureError

O = mldd.optim
_G = torch.Generator().manual_seed(0)
X = torch.rand(64, 2, generator=_G, dtype=torch.float64) * 2 - 1
Y = torch.sin(3 * X[:, :1]) * X[:, 1:]


def net(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return mldd.models.ResidualMLP(2, 1, width=width, depth=5, dtype=torch.float64)


def vec(m: torch.nn.Module) -> torch.Tensor:
    return parameters_to_vector(m.parameters()).detach().clone()


def mse(m: torch.nn.Module) -> torch.Tensor:
    return torch.nn.functional.mse_loss(m(X), Y)


#: name → (factory, whether its closure takes the model)
MAKERS: dict[str, tuple[Callable[[torch.nn.Module], Any], bool]] = {
    "TrustRegion": (lambda n: O.TrustRegion(n.parameters()), False),
    "LBFGS": (lambda n: O.LBFGS(n.parameters()), False),
    "RMTR": (lambda n: O.RMTR(n.parameters(), model=n, levels=2), True),
    "MGOpt": (lambda n: O.MGOpt(n.parameters(), model=n, levels=2), True),
    "MOFFO": (lambda n: O.MOFFO(n.parameters(), model=n, levels=2), True),
    "ASPQN": (lambda n: O.ASPQN(n.parameters(), model=n, global_iters=3), False),
    "MSPQN": (lambda n: O.MSPQN(n.parameters(), model=n, global_iters=3), False),
    "APTS": (lambda n: O.APTS(n.parameters(), model=n), False),
}


class _NaNGrad(torch.autograd.Function):
    """Identity forward, NaN backward: a finite loss with a NaN gradient."""

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor) -> torch.Tensor:
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("nan")


@pytest.mark.parametrize("name", ["TrustRegion", "RMTR", "MSPQN-tr", "APTS-global"])
def test_trial_with_finite_loss_and_nan_gradient_is_rejected(name: str) -> None:
    m = net()
    v0 = vec(m)
    opt = {
        "TrustRegion": lambda: O.TrustRegion(m.parameters(), hessian="lbfgs"),
        "RMTR": lambda: O.RMTR(m.parameters(), model=m, levels=2),
        "MSPQN-tr": lambda: O.MSPQN(m.parameters(), model=m, globalization="trust_region",
                                    global_iters=3),
        "APTS-global": lambda: O.APTS(m.parameters(), model=m, global_pass=True),
    }[name]()

    def loss(mod: torch.nn.Module) -> torch.Tensor:
        value = mse(mod)
        far = mod is m and float((vec(m) - v0).abs().max()) > 0.3
        return _NaNGrad.apply(value) if far else value

    closure = (lambda mod: loss(mod)) if name == "RMTR" else (lambda: loss(m))
    for _ in range(12):
        opt.step(closure)
        assert float((vec(m) - v0).abs().max()) <= 0.3, "stepped onto a NaN-gradient point"
        assert "NaN" not in str(opt.stop_reason)


@pytest.mark.parametrize("name", list(MAKERS))
def test_exception_in_closure_leaves_the_last_accepted_iterate(name: str) -> None:
    make, takes_model = MAKERS[name]
    m = net()
    opt = make(m)
    calls = {"n": 0}

    def loss(mod: torch.nn.Module) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt
        return mse(mod)

    closure = (lambda mod: loss(mod)) if takes_model else (lambda: loss(m))
    last = vec(m)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(50):
            opt.step(closure)
            last = vec(m)
    assert torch.equal(vec(m), last)


def test_apts_stops_when_every_trial_fails() -> None:
    m = net()
    opt = O.APTS(m.parameters(), model=m)
    calls = {"n": 0}

    def closure() -> torch.Tensor:
        calls["n"] += 1
        return mse(m) * float("nan") if calls["n"] >= 8 else mse(m)

    for i in range(100):  # noqa: B007 - `i` checked after the loop
        all_nan = calls["n"] >= 8
        before = vec(m)
        opt.step(closure)
        if all_nan:
            assert torch.equal(vec(m), before)
        if opt.stop_reason:
            break
    assert opt.stop_reason is not None and "no progress" in opt.stop_reason
    assert i < 40
    assert opt.state_dict()["state"][0]["solver"]["n_stalled"] == STALL_LIMIT


def test_moffo_refuses_nan_and_inf_losses() -> None:
    m = net()
    v0 = vec(m)
    opt = O.MOFFO(m.parameters(), model=m, levels=2)
    out = opt.step(lambda mod: mse(mod) + float("inf"))
    assert torch.equal(vec(m), v0) and opt.last_info["accepted"] is False
    assert torch.isinf(out) and opt.stop_reason is None
    for i in range(SKIP_LIMIT - 2):  # the Inf step above was the first skip of the run
        opt.step(lambda mod: mse(mod) * float("nan"))
        assert opt.stop_reason is None, i
    opt.step(lambda mod: mse(mod) * float("nan"))
    assert opt.converged and "NaN/Inf" in str(opt.stop_reason)
    assert torch.equal(vec(m), v0)
    opt.step(lambda mod: mse(mod))  # a good batch clears the stop
    assert opt.stop_reason is None and not torch.equal(vec(m), v0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_of_another_size_is_refused(name: str) -> None:
    make, takes_model = MAKERS[name]
    big, small = net(8), net(4)
    a = make(big)
    a.step((lambda mod: mse(mod)) if takes_model else (lambda: mse(big)))
    b = make(small)
    with pytest.raises(ValueError, match=r"saved for 393 parameters.*has 117"):
        b.load_state_dict(a.state_dict())


def test_state_dict_of_another_optimizer_is_refused_and_changes_nothing() -> None:
    m = net()
    lb = O.LBFGS(m.parameters())
    lb.step(lambda: mse(m))
    tr = O.TrustRegion(m.parameters())
    with pytest.raises(ValueError, match="saved by LBFGS, not TrustRegion"):
        tr.load_state_dict(lb.state_dict())
    assert tr.param_groups[0]["hessian"] == "lsr1"
    O.TrustRegion(m.parameters()).load_state_dict(tr.state_dict())
    a = O.ASPQN(m.parameters(), model=m)
    with pytest.raises(ValueError, match="saved by ASPQN, not MSPQN"):
        O.MSPQN(m.parameters(), model=m).load_state_dict(a.state_dict())


@pytest.mark.parametrize("name", ["TrustRegion", "LBFGS", "ASPQN", "MSPQN", "APTS", "exact"])
def test_frozen_parameters_stay_put_with_loss_only_closures(name: str) -> None:
    m = net()
    m.input_layer.weight.requires_grad_(False)
    w0 = m.input_layer.weight.detach().clone()
    opt = (O.TrustRegion(m.parameters(), hessian="exact") if name == "exact"
           else MAKERS[name][0](m))
    first = float(opt.step(lambda: mse(m)))
    for _ in range(3):
        opt.step(lambda: mse(m))
    assert torch.equal(m.input_layer.weight, w0)
    assert float(mse(m).detach()) < first


@pytest.mark.parametrize("name", ["RMTR", "MGOpt", "MOFFO"])
def test_multilevel_methods_refuse_frozen_parameters(name: str) -> None:
    m = net()
    m.input_layer.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"requires_grad=False \(input_layer.weight\)"):
        MAKERS[name][0](m)


def test_mgopt_torch_smoother_returns_from_a_nan_region_and_stops() -> None:
    m = net()
    v0 = vec(m)
    opt = O.MGOpt(m.parameters(), model=m, levels=3,
                  smoother=lambda p: torch.optim.Adam(p, 0.1))

    def loss(mod: torch.nn.Module) -> torch.Tensor:
        value = mse(mod)
        if mod is m and float((vec(m) - v0).abs().max()) > 0.3:
            return value * float("nan")
        return value

    for _ in range(10):
        opt.step(loss)
        if opt.stop_reason:
            break
    assert opt.stop_reason is not None and "returned to the point" in opt.stop_reason
    assert torch.isfinite(loss(m).detach()) and float((vec(m) - v0).abs().max()) <= 0.3
    assert opt.last_info["loss"] == pytest.approx(float(loss(m).detach()))


def test_spqn_never_moves_to_a_point_whose_evaluation_was_nan() -> None:
    m = net()
    opt = O.MSPQN(m.parameters(), model=m)
    calls = {"n": 0}

    def closure() -> torch.Tensor:  # NaN on every odd call from the third on
        calls["n"] += 1
        return mse(m) * float("nan") if calls["n"] >= 3 and calls["n"] % 2 else mse(m)

    for _ in range(3):
        opt.step(closure)
        assert opt.stop_reason is None
        assert opt.last_info["loss"] == pytest.approx(float(mse(m).detach()), rel=1e-12)


def test_bad_arguments_get_clear_errors() -> None:
    m = net()
    with pytest.raises(ClosureError, match=r"plain closure\(\) -> loss, got one that takes 1"):
        O.TrustRegion(m.parameters()).step(lambda mod: mse(mod))
    with pytest.raises(ClosureError, match=r"plain closure\(\)"):
        O.LBFGS(m.parameters()).step(lambda mod: mse(mod))
    with pytest.raises(ValueError, match="levels=3 needs model="):
        O.RMTR(m.parameters(), levels=3, coarsen="width")
    assert O.RMTR(m.parameters()).n_levels == 1
    for make in (lambda: O.TrustRegion(m.parameters(), memory=True),
                 lambda: O.RMTR(m.parameters(), model=m, memory=True)):
        with pytest.raises(ValueError, match="memory must be an integer >= 1, got True"):
            make()
    with pytest.raises(ValueError, match=r"unknown hierarchy option\(s\) \['data_ration'\].*"
                                         r"'data_ratio'"):
        O.RMTR(m.parameters(), model=m, hierarchy_options={"data_ration": 0.25})
