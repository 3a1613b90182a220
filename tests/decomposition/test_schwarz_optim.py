"""The torch.optim shells ASPQN and MSPQN: contract, options, checkpoints, a tiny PINN."""

import copy

import pytest
import torch

import mldd.optim
from mldd import problems
from mldd.decomposition import Decomposition
from mldd.models import ResidualMLP
from mldd.objective import ClosureError


def _setup(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(48, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, :1]) * X[:, 1:]
    torch.manual_seed(seed)
    return ResidualMLP(2, 1, width=5, depth=2), X, y


def _torch_closure(opt, model, X, y):
    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss
    return closure


def _flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


MAKERS = {
    "aspqn": lambda m, **kw: mldd.optim.ASPQN(m.parameters(), model=m, local_iters=3, **kw),
    "aspqn-subspace-keep-2level": lambda m, **kw: mldd.optim.ASPQN(
        m.parameters(), model=m, local_iters=3, combine="subspace", keep_local_memory=True,
        two_level=True, overlap=1, **kw),
    "aspqn-per-subdomain": lambda m, **kw: mldd.optim.ASPQN(
        m.parameters(), model=m, local_iters=2, combine="per_subdomain", **kw),
    "mspqn-keep": lambda m, **kw: mldd.optim.MSPQN(m.parameters(), model=m, local_iters=3,
                                                   keep_local_memory=True, **kw),
}


@pytest.mark.parametrize("name", ["aspqn", "mspqn-keep"])
def test_torch_contract_with_a_backward_calling_closure(name) -> None:
    model, X, y = _setup()
    opt = MAKERS[name](model)
    assert isinstance(opt, torch.optim.Optimizer)
    closure = _torch_closure(opt, model, X, y)
    with torch.no_grad():
        loss0 = float(((model(X) - y) ** 2).mean())
    out = opt.step(closure)
    assert out.dim() == 0 and float(out) == pytest.approx(loss0)
    for key in ("loss", "grad_norm", "accepted", "n_f", "n_g", "local_n_g", "stop_reason",
                "step_length", "local_iters"):
        assert key in opt.last_info
    for _ in range(5):
        opt.step(closure)
    assert opt.last_info["loss"] < 0.5 * loss0
    with torch.no_grad():
        assert float(((model(X) - y) ** 2).mean()) == pytest.approx(opt.last_info["loss"])


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_resume_is_bit_identical(name) -> None:
    model, X, y = _setup()
    opt = MAKERS[name](model, momentum=0.3)
    closure = _torch_closure(opt, model, X, y)
    for _ in range(3):
        opt.step(closure)
    saved_model = copy.deepcopy(model.state_dict())
    saved_opt = copy.deepcopy(opt.state_dict())
    for _ in range(3):
        opt.step(closure)
    reference, ref_info = _flat(model), dict(opt.last_info)

    model2, _, _ = _setup(seed=1)
    model2.load_state_dict(saved_model)
    opt2 = MAKERS[name](model2, momentum=0.3)
    opt2.load_state_dict(saved_opt)
    closure2 = _torch_closure(opt2, model2, X, y)
    for _ in range(3):
        opt2.step(closure2)
    assert torch.equal(_flat(model2), reference)
    for key in ("loss", "n_g", "local_n_g", "coarse_n_g", "iteration"):
        assert opt2.last_info[key] == ref_info[key]


def test_state_dict_holds_global_and_kept_local_memories() -> None:
    model, X, y = _setup()
    opt = MAKERS["aspqn-subspace-keep-2level"](model)
    opt.step(_torch_closure(opt, model, X, y))
    state = opt.state_dict()["state"][0]["solver"]
    assert len(state["global_step"]["memory"]["s"]) == 1
    assert state["global_step"]["v"] is not None
    assert set(state["local_solvers"]) == set(range(len(opt.solver.decomposition)))
    assert all(len(sd["memory"]["s"]) > 0 for sd in state["local_solvers"].values())
    assert state["coarse_solver"] is not None
    assert state["local_counters"]["n_g"] == opt.last_info["local_n_g"]
    # A checkpoint of another decomposition is refused.
    other = mldd.optim.ASPQN(model.parameters(), model=model, blocks=2)
    with pytest.raises(ValueError, match="saved for 4 subdomains"):
        other.load_state_dict(opt.state_dict())


def test_closures_that_take_the_model_are_bound_to_it() -> None:
    model, X, y = _setup()
    opt = mldd.optim.MSPQN(model.parameters(), model=model, local_iters=2)
    with torch.no_grad():
        loss0 = float(((model(X) - y) ** 2).mean())
    assert float(opt.step(lambda m: ((m(X) - y) ** 2).mean())) == pytest.approx(loss0)
    opt.step(lambda m, rows: ((m(X) - y) ** 2).mean())
    assert opt.last_info["loss"] < loss0
    opt = mldd.optim.MSPQN(model.parameters(), decomposition="param_groups", local_iters=2)
    with pytest.raises(ClosureError, match="needs the model"):
        opt.step(lambda m: ((m(X) - y) ** 2).mean())


def test_decomposition_options_and_errors(caplog) -> None:
    model, _, _ = _setup()
    with pytest.raises(ValueError, match=r"needs the module structure.*model=model"):
        mldd.optim.ASPQN(model.parameters())
    with caplog.at_level("INFO", logger="mldd.optim.schwarz"):
        opt = mldd.optim.MSPQN(model.parameters(), decomposition="param_groups")
    assert len(opt.solver.decomposition) == 1
    assert "MSPQN decomposition (1 subdomains)" in caplog.text and "subdomain" in caplog.text
    groups = [{"params": list(model.input_layer.parameters())},
              {"params": [p for b in model.blocks for p in b.parameters()]
               + list(model.output_layer.parameters())}]
    opt = mldd.optim.ASPQN(groups, decomposition="param_groups")
    assert [len(s) for s in opt.solver.decomposition.subdomains] == [15, 66]
    opt = mldd.optim.ASPQN(model.parameters(), model=model,
                           decomposition=lambda m: Decomposition.by_layers(m, blocks=[1, 3]))
    assert len(opt.solver.decomposition) == 2
    dec = Decomposition.from_sizes([10, 71])
    assert mldd.optim.MSPQN(model.parameters(), decomposition=dec).solver.decomposition is dec
    with pytest.raises(ValueError, match="length 10, but the optimizer's parameters have 81"):
        mldd.optim.ASPQN(model.parameters(), decomposition=Decomposition.from_sizes([10]))
    with pytest.raises(ValueError, match="decomposition='blocks' is not allowed"):
        mldd.optim.ASPQN(model.parameters(), model=model, decomposition="blocks")
    with pytest.raises(ValueError, match="combine='avg' is not allowed"):
        mldd.optim.ASPQN(model.parameters(), model=model, combine="avg")


def test_tiny_pinn_training_beats_lbfgs_with_the_same_number_of_outer_steps() -> None:
    p = problems.get("burgers", n_collocation=200, width=10, depth=3,
                     reference_options={"n_x": 33, "n_t": 11, "dt": 0.1, "n_quad": 100})
    results = {}
    for name, make in {
        "lbfgs": lambda m: mldd.optim.LBFGS(m.parameters(), memory=3),
        "aspqn": lambda m: mldd.optim.ASPQN(m.parameters(), model=m, local_iters=5),
        "mspqn": lambda m: mldd.optim.MSPQN(m.parameters(), model=m, local_iters=5),
    }.items():
        model = p.build_model(seed=0)
        opt = make(model)
        loss0 = float(p.loss(model).detach())
        for _ in range(6):
            opt.step(lambda m=model: p.loss(m))
        results[name] = opt.last_info["loss"]
    # Initial loss 1.55; 6 L-BFGS(3) steps reach ~0.5; the Schwarz methods well below.
    assert results["aspqn"] < 0.3 * loss0 and results["mspqn"] < 0.2 * loss0
    assert results["aspqn"] < 0.9 * results["lbfgs"] and results["mspqn"] < 0.6 * results["lbfgs"]
