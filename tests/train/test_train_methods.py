"""Method registry: construction of every baseline, option validation, plug-in registration."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from tiny_problem import TinyLeastSquares

from mldd.train import Trainer
from mldd.train.methods import (
    AdamThenLBFGS,
    MethodError,
    available_methods,
    build_optimizer,
    get_method,
    register_method,
    unregister_method,
)


def _build(name: str, options: dict[str, Any] | None = None, **ctx: Any) -> Any:
    p = TinyLeastSquares()
    m = p.build_model(0)
    return build_optimizer(name, m.parameters(), p, options, ctx)


def test_names() -> None:
    assert {"adam", "sgd", "torch-lbfgs", "adam-lbfgs", "lbfgs", "trust-region"} <= set(
        available_methods()
    )
    assert get_method("adam").full_batch is False
    assert get_method("torch-lbfgs").full_batch is True
    assert get_method("adam").defaults["batch_size"] == 128
    assert get_method("trust-region").defaults["batch_size"] is None


def test_baselines_build_with_defaults() -> None:
    adam = _build("adam")
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["lr"] == 1e-3
    sgd = _build("sgd")
    assert sgd.param_groups[0]["momentum"] == 0.9 and sgd.param_groups[0]["lr"] == 1e-2
    lb = _build("torch-lbfgs", {"history": 3})
    g = lb.param_groups[0]
    assert g["max_iter"] == 20 and g["max_eval"] == 500
    assert g["history_size"] == 3 and g["line_search_fn"] == "strong_wolfe"
    assert _build("torch-lbfgs").param_groups[0]["history_size"] == 50


def test_unknown_method_lists_known() -> None:
    with pytest.raises(MethodError, match=r"known methods: .*adam"):
        get_method("adamw-nope")


def test_bad_option_names_key_and_allowed() -> None:
    with pytest.raises(MethodError, match=r"no option 'histroy'.*allowed: .*history"):
        _build("torch-lbfgs", {"histroy": 3})
    with pytest.raises(MethodError, match="'lr' must be a positive number, got -1"):
        _build("adam", {"lr": -1})
    with pytest.raises(MethodError, match="'history' must be an integer >= 1, got 0"):
        _build("torch-lbfgs", {"history": 0})
    with pytest.raises(MethodError, match="switch_fraction"):
        _build("adam-lbfgs", {"switch_fraction": 2.0})


def test_adam_lbfgs_switch_rules() -> None:
    opt = _build("adam-lbfgs", {"switch_iters": 3})
    assert isinstance(opt, AdamThenLBFGS) and opt.switch_iters == 3
    # From the time budget: 20% of 10 s.
    opt = _build("adam-lbfgs", budget_s=10.0)
    assert opt.switch_s == pytest.approx(2.0) and opt.switch_iters is None
    opt = _build("adam-lbfgs", max_iters=50)
    assert opt.switch_iters == 10
    p = TinyLeastSquares()
    m = p.build_model(0)
    opt = build_optimizer("adam-lbfgs", m.parameters(), p, {"switch_iters": 4})
    Trainer(p, m, opt, max_iters=6, log_every=0.0).run()
    assert opt.switched and opt.last_info["phase"] == "lbfgs"


def test_register_method_plugin() -> None:
    calls: list[dict[str, Any]] = []

    def builder(params: list[torch.Tensor], problem: Any, opts: dict[str, Any]) -> Any:
        calls.append(opts)
        return torch.optim.SGD(params, lr=opts["lr"])

    register_method("test-plugin", builder, defaults={"lr": 0.5}, description="test")
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_method("test-plugin", builder)
        opt = _build("test-plugin", {"lr": 0.25})
        assert opt.param_groups[0]["lr"] == 0.25
        assert calls[0]["_context"] == {}
        with pytest.raises(MethodError, match="allowed: batch_size, lr"):
            _build("test-plugin", {"momentum": 0.9})
    finally:
        unregister_method("test-plugin")


@pytest.mark.parametrize("name", ["lbfgs", "trust-region"])
def test_mldd_optimizers_train(name: str) -> None:
    optim = pytest.importorskip("mldd.optim")
    if not hasattr(optim, "LBFGS") or not hasattr(optim, "TrustRegion"):
        pytest.skip("mldd.optim.LBFGS/TrustRegion not available yet")
    p = TinyLeastSquares()
    m = p.build_model(0)
    opt = build_optimizer(name, m.parameters(), p, {})
    res = Trainer(p, m, opt, max_iters=30, log_every=0.0).run()
    assert res.final_metric < 0.5 * res.rows[0]["rel_l2"]
    assert res.grad_evals >= res.iterations or res.stop_reason.startswith("optimizer")
    state = {"radius"} if name == "trust-region" else {"step_length"}
    assert state & set(res.rows[-1]) or name == "lbfgs"
    with pytest.raises(MethodError, match="no option 'bogus'"):
        build_optimizer(name, m.parameters(), p, {"bogus": 1})
    # Mini-batches: cached evaluations must be switched off.
    opt = build_optimizer(name, m.parameters(), p, {"batch_size": 16})
    if hasattr(opt, "_solver"):
        assert opt._solver.config.reuse_evaluations is False


def test_effective_options_list_defaults_and_leave_objects_out() -> None:
    from torch import nn

    from mldd.optim import RMTR, TrustRegion
    from mldd.train.run import effective_options

    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    tr = effective_options(TrustRegion(net.parameters(), memory=3))
    assert tr["class"] == "TrustRegion"
    assert tr["hyper_parameters"]["memory"] == 3 and tr["hyper_parameters"]["hessian"] == "lsr1"
    rmtr = effective_options(RMTR(net.parameters(), model=net, levels=1))
    hyper = rmtr["hyper_parameters"]
    assert hyper["cycle"] == "V" and "radius" in hyper
    assert all(v is None or isinstance(v, bool | int | float | str | list | tuple)
               for v in hyper.values())
