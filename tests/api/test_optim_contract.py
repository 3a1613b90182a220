"""The torch.optim contract of mldd's single-level optimizers."""

import copy
import math

import pytest
import torch
from torch.optim.optimizer import (
    register_optimizer_step_post_hook,
    register_optimizer_step_pre_hook,
)

import mldd.optim
from mldd.objective import ClosureError

OPTIMIZERS = {
    "lbfgs": lambda p, **kw: mldd.optim.LBFGS(p, memory=5, **kw),
    "tr-lsr1": lambda p, **kw: mldd.optim.TrustRegion(p, **kw),
    "tr-lbfgs-cg": lambda p, **kw: mldd.optim.TrustRegion(p, hessian="lbfgs", **kw),
    "tr-lsr1-linf": lambda p, **kw: mldd.optim.TrustRegion(p, norm="linf", radius=0.1, **kw),
    "tr-none": lambda p, **kw: mldd.optim.TrustRegion(p, hessian="none", **kw),
}


def _setup(dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(64, 3, generator=g, dtype=dtype)
    y = torch.sin(X.sum(1, keepdim=True))
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(3, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 1)).to(dtype)
    return model, X, y


def _closure(opt, model, X, y):
    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss
    return closure


def _built(name):
    """``(model, X, y, opt, closure)``: the optimizer ``name`` on the default problem."""
    model, X, y = _setup()
    opt = OPTIMIZERS[name](model.parameters())
    return model, X, y, opt, _closure(opt, model, X, y)


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_is_torch_optimizer_and_step_returns_loss(name):
    model, X, y = _setup()
    opt = OPTIMIZERS[name](model.parameters())
    assert isinstance(opt, torch.optim.Optimizer)
    closure = _closure(opt, model, X, y)
    with torch.no_grad():
        loss0 = float(((model(X) - y) ** 2).mean())
    out = opt.step(closure)
    assert isinstance(out, torch.Tensor) and out.dim() == 0
    assert float(out) == pytest.approx(loss0)
    info = opt.last_info
    for key in ("loss", "grad_norm", "accepted", "n_f", "n_g", "stop_reason"):
        assert key in info
    for _ in range(20):
        opt.step(closure)
    assert opt.last_info["loss"] < loss0


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_state_dict_resume_is_bit_identical(name):
    model, X, y, opt, closure = _built(name)
    for _ in range(7):
        opt.step(closure)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    for _ in range(8):
        opt.step(closure)
    reference = _flat(model)

    model2, _, _ = _setup(seed=1)  # different initial weights, overwritten by the checkpoint
    model2.load_state_dict(saved_model)
    opt2 = OPTIMIZERS[name](model2.parameters())
    opt2.load_state_dict(saved_opt)
    closure2 = _closure(opt2, model2, X, y)
    for _ in range(8):
        opt2.step(closure2)
    assert torch.equal(_flat(model2), reference)
    assert opt2.last_info["n_g"] == opt.last_info["n_g"]


def test_state_dict_round_trip_through_torch_save(tmp_path):
    model, X, y = _setup()
    opt = mldd.optim.TrustRegion(model.parameters())
    closure = _closure(opt, model, X, y)
    for _ in range(5):
        opt.step(closure)
    torch.save(opt.state_dict(), tmp_path / "opt.pt")
    sd = torch.load(tmp_path / "opt.pt", weights_only=False)
    opt2 = mldd.optim.TrustRegion(model.parameters())
    opt2.load_state_dict(sd)
    assert opt2.radius == opt.radius
    assert opt2.state_dict()["state"][0]["solver"]["n_accepted"] == opt._solver.n_accepted


def test_load_foreign_state_dict_is_an_error():
    model, _, _ = _setup()
    adam = torch.optim.Adam(model.parameters())
    opt = mldd.optim.TrustRegion(model.parameters())
    with pytest.raises(ValueError):
        opt.load_state_dict(adam.state_dict())


@pytest.mark.parametrize("name", ["lbfgs", "tr-lsr1"])
def test_step_hooks_fire(name):
    model, X, y = _setup()
    opt = OPTIMIZERS[name](model.parameters())
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    opt.step(_closure(opt, model, X, y))
    assert calls == ["pre", "post"]


def test_step_hooks_global_and_argument_replacement_and_profiler_range():
    # mldd's own step wrapper keeps torch's contract: global hooks fire, a pre-hook may replace
    # the arguments, a bad pre-hook result is an error, and a profiler sees the step's range.
    model, X, y = _setup()
    opt = OPTIMIZERS["lbfgs"](model.parameters())
    closure = _closure(opt, model, X, y)
    seen = []
    handles = [register_optimizer_step_pre_hook(
                   lambda o, a, k: seen.append(("global-pre", type(o).__name__))),
               register_optimizer_step_post_hook(
                   lambda o, a, k: seen.append(("global-post", type(o).__name__)))]
    replaced = []

    def swap(o, args, kwargs):
        def counting():
            replaced.append(1)
            return closure()
        return (counting,), kwargs

    local = opt.register_step_pre_hook(swap)
    try:
        opt.step()  # no closure given: the pre-hook supplies one
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            opt.step()
    finally:
        for h in handles:
            h.remove()
    assert replaced and seen[0] == ("global-pre", "LBFGS") and seen[-1] == ("global-post", "LBFGS")
    assert any(e.name == "Optimizer.step#LBFGS.step" for e in prof.events())
    local.remove()
    opt.register_step_pre_hook(lambda o, a, k: "not a tuple")
    with pytest.raises(RuntimeError, match="must return None or a tuple"):
        opt.step(closure)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", ["lbfgs", "tr-lsr1"])
def test_float32_and_float64(dtype, name):
    model, X, y = _setup(dtype)
    opt = OPTIMIZERS[name](model.parameters())
    closure = _closure(opt, model, X, y)
    l0 = float(closure().detach())
    for _ in range(30):
        opt.step(closure)
    assert all(p.dtype == dtype for p in model.parameters())
    assert opt.last_info["loss"] < 0.5 * l0


def test_param_groups_are_one_vector():
    model, X, y = _setup()
    groups = [{"params": list(model[0].parameters())}, {"params": list(model[2].parameters())}]
    opt = mldd.optim.LBFGS(groups, memory=5)
    closure = _closure(opt, model, X, y)
    model_b, _, _ = _setup()
    opt_b = mldd.optim.LBFGS(model_b.parameters(), memory=5)
    closure_b = _closure(opt_b, model_b, X, y)
    for _ in range(5):
        opt.step(closure)
        opt_b.step(closure_b)
    assert torch.equal(_flat(model), _flat(model_b))


def test_param_groups_with_different_hyperparameters_rejected():
    model, _, _ = _setup()
    groups = [{"params": list(model[0].parameters()), "radius": 0.1},
              {"params": list(model[2].parameters())}]
    with pytest.raises(ValueError, match="hyper-parameters must agree"):
        mldd.optim.TrustRegion(groups)


@pytest.mark.parametrize("kwargs, match", [
    ({"hessian": "bfgs"}, "hessian='bfgs' is not allowed"),
    ({"subproblem": "dogleg"}, "subproblem='dogleg' is not allowed"),
    ({"norm": "l1"}, "norm='l1' is not allowed"),
    ({"hessian": "lbfgs", "subproblem": "obs"}, "needs hessian='lsr1'"),
    ({"radius": -1.0}, "radius must be"),
    ({"radius": math.nan}, "radius must be"),
    ({"memory": 0}, "memory must be"),
    ({"gamma1": 2.0}, "gamma1"),
])
def test_trust_region_construction_errors(kwargs, match):
    model, _, _ = _setup()
    with pytest.raises(ValueError, match=match):
        mldd.optim.TrustRegion(model.parameters(), **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"line_search": "wolfe"}, "line_search='wolfe' is not allowed"),
    ({"memory": 0}, "memory must be"),
    ({"lr": 0.0}, "lr must be"),
    ({"c1": 0.95}, "c1 < c2"),
])
def test_lbfgs_construction_errors(kwargs, match):
    model, _, _ = _setup()
    with pytest.raises(ValueError, match=match):
        mldd.optim.LBFGS(model.parameters(), **kwargs)


def test_empty_and_integer_params_rejected():
    with pytest.raises(ValueError):
        mldd.optim.LBFGS([])
    with pytest.raises(ValueError, match="floating-point"):
        mldd.optim.LBFGS([torch.zeros(3, dtype=torch.long)])


def test_missing_closure_is_a_clear_error():
    model, _, _ = _setup()
    opt = mldd.optim.TrustRegion(model.parameters())
    with pytest.raises(ClosureError, match="needs a closure"):
        opt.step()


def test_exact_hessian_needs_loss_only_closure():
    model, X, y = _setup()
    opt = mldd.optim.TrustRegion(model.parameters(), hessian="exact")
    with pytest.raises(ClosureError, match=r"WITHOUT calling loss\.backward"):
        opt.step(_closure(opt, model, X, y))
    opt.step(lambda: ((model(X) - y) ** 2).mean())
    assert opt.last_info["n_hvp"] > 0


class _NaNBeyond:
    """A loss that is NaN/Inf whenever the first weight leaves a small ball around its start."""

    def __init__(self, model, X, y, bad=math.nan, width=0.05):
        self.model, self.X, self.y, self.bad, self.width = model, X, y, bad, width
        self.w0 = model[0].weight.detach().clone()
        self.nan_calls = 0

    def __call__(self):
        loss = ((self.model(self.X) - self.y) ** 2).mean() * 100.0
        if (self.model[0].weight - self.w0).abs().max() > self.width:
            self.nan_calls += 1
            loss = loss * self.bad
        return loss


@pytest.mark.parametrize("bad", [math.nan, math.inf])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_nan_trial_never_reaches_the_parameters(name, bad):
    model, X, y = _setup()
    opt = OPTIMIZERS[name](model.parameters())
    closure = _NaNBeyond(model, X, y, bad=bad)
    for _ in range(25):
        before = _flat(model)
        opt.step(closure)
        after = _flat(model)
        assert torch.isfinite(after).all()
        # the parameters are the last good point: its loss is finite
        with torch.no_grad():
            assert math.isfinite(float(closure()))
        if not opt.last_info["accepted"]:
            assert torch.equal(before, after)
    assert closure.nan_calls > 0, "the test never produced a NaN trial"


def test_nan_at_start_stops_with_reason():
    model, X, y = _setup()
    opt = mldd.optim.TrustRegion(model.parameters())
    before = _flat(model)
    opt.step(lambda: ((model(X) - y) ** 2).mean() * math.nan)
    assert "NaN" in opt.last_info["stop_reason"]
    assert torch.equal(before, _flat(model))


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_parameters_hold_the_reported_iterate_after_every_step(name):
    # The shell skips the write-back when the last evaluation left the new iterate in place;
    # whichever branch a step takes (accepted, rejected, zoomed line search), the parameters must
    # end up holding the point whose loss the step reports.
    model, X, y, opt, closure = _built(name)
    for _ in range(15):
        opt.step(closure)
        with torch.no_grad():
            loss = float(((model(X) - y) ** 2).mean())
        assert loss == opt.last_info["loss"]


@pytest.mark.parametrize("name", ["lbfgs", "tr-lsr1"])
@pytest.mark.parametrize("how", ["no_grad", "load_state_dict"])
def test_parameters_changed_between_steps_are_respected(name, how):
    # A user edit of the parameters between steps (in place: the cached evaluation and the
    # skipped write-back must both notice) must be where the next step starts from.
    model, X, y, opt, closure = _built(name)
    for _ in range(5):
        opt.step(closure)
    target = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    if how == "no_grad":
        with torch.no_grad():
            for p in model.parameters():
                p.zero_()
    else:
        model.load_state_dict(target)
    with torch.no_grad():
        loss_at_zero = float(((model(X) - y) ** 2).mean())
    out = opt.step(closure)
    assert float(out) == loss_at_zero


@pytest.mark.parametrize("name", ["lbfgs", "tr-lsr1"])
def test_accepted_last_trial_is_not_written_back(name, monkeypatch):
    # The point the last evaluation left in the parameters is the new iterate on most steps
    # (L-BFGS's unit step, an accepted trust-region trial): no second copy into the parameters.
    import mldd.optim.base as base

    writes = []
    real = base.vector_to_params
    monkeypatch.setattr(base, "vector_to_params", lambda x, ps: (writes.append(1), real(x, ps)))
    *_, opt, closure = _built(name)
    accepted_last = 0
    for _ in range(20):
        opt.step(closure)
        info = opt.last_info
        accepted_last += bool(info["accepted"]) and info.get("line_search_evals", 1) == 1
    assert accepted_last >= 10
    assert len(writes) <= 20 - accepted_last
