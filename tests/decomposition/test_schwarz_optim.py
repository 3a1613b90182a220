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
    "aspqn-sweep-2groups": lambda m, **kw: mldd.optim.ASPQN(
        m.parameters(), model=m, local_iters=2, local_sweep=True, groups=2, **kw),
}


def test_aspqn_local_sweep_in_one_process_is_mspqn() -> None:
    runs = []
    for make in (lambda m: mldd.optim.ASPQN(m.parameters(), model=m, local_sweep=True),
                 lambda m: mldd.optim.MSPQN(m.parameters(), model=m)):
        model, X, y = _setup()
        opt = make(model)
        closure = _torch_closure(opt, model, X, y)
        for _ in range(3):
            opt.step(closure)
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])


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


def _check_resume(make, keys: tuple[str, ...]):
    """3 steps, checkpoint, 3 more; a fresh model and optimizer loaded from the checkpoint must
    take the same 3 steps bit for bit. Returns the first optimizer (for further checks)."""
    model, X, y = _setup()
    opt = make(model)
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
    opt2 = make(model2)
    opt2.load_state_dict(saved_opt)
    closure2 = _torch_closure(opt2, model2, X, y)
    for _ in range(3):
        opt2.step(closure2)
    assert torch.equal(_flat(model2), reference)
    for key in keys:
        assert opt2.last_info[key] == ref_info[key]
    return opt


@pytest.mark.parametrize("name", list(MAKERS))
def test_state_dict_resume_is_bit_identical(name) -> None:
    _check_resume(lambda m: MAKERS[name](m, momentum=0.3),
                  ("loss", "n_g", "local_n_g", "coarse_n_g", "iteration"))


def test_state_dict_holds_global_and_kept_local_memories() -> None:
    model, X, y = _setup()
    opt = MAKERS["aspqn-subspace-keep-2level"](model)
    opt.step(_torch_closure(opt, model, X, y))
    state = opt.state_dict()["state"][0]["solver"]
    # One pair per global L-BFGS step (global_iters of them unless a line search failed).
    assert 1 <= len(state["global_step"]["memory"]["s"]) == opt.last_info["global_iters"]
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


def _tiny_burgers():
    return problems.get("burgers", n_collocation=120, width=6, depth=3,
                        reference_options={"n_x": 33, "n_t": 11, "dt": 0.1, "n_quad": 100})


@pytest.mark.parametrize("cls", ["MSPQN", "ASPQN"])
def test_pinn_layer_block_objectives_give_the_same_iterates_at_lower_cost(cls) -> None:
    from mldd.problems.pinn.prefix import PINNLocalObjectives

    p = _tiny_burgers()
    runs = {}
    for name in ("generic", "blocks"):
        model = p.build_model(seed=3)
        extra = {"local_objective": PINNLocalObjectives(p, model)} if name == "blocks" else {}
        opt = getattr(mldd.optim, cls)(model.parameters(), model=model, local_iters=3, **extra)
        for _ in range(2):
            opt.step(lambda m=model: p.loss(m))
        runs[name] = (_flat(model), dict(opt.last_info))
    torch.testing.assert_close(runs["blocks"][0], runs["generic"][0], rtol=1e-8, atol=1e-10)
    generic, blocks = runs["generic"][1], runs["blocks"][1]
    assert generic["local_grad_evals"] == generic["local_n_g"]  # generic: 1 per local gradient
    # Blocks of a 4-layer net cost (4 − a)/4 of a gradient: on average well below 1.
    assert 0.25 * blocks["local_n_g"] <= blocks["local_grad_evals"] < 0.8 * blocks["local_n_g"]
    assert blocks["grad_evals"] == pytest.approx(blocks["global_n_g"] + blocks["local_grad_evals"])


def test_resume_with_pinn_block_objectives_is_bit_identical() -> None:
    from mldd.problems.pinn.prefix import PINNLocalObjectives

    p = _tiny_burgers()
    model = p.build_model(seed=1)

    def make(m):
        return mldd.optim.MSPQN(m.parameters(), model=m, local_iters=2, keep_local_memory=True,
                                memory=5, global_iters=2,
                                local_objective=PINNLocalObjectives(p, m))

    opt = make(model)
    for _ in range(2):
        opt.step(lambda: p.loss(model))
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    for _ in range(2):
        opt.step(lambda: p.loss(model))
    model2 = p.build_model(seed=2)
    model2.load_state_dict(saved_model)
    opt2 = make(model2)
    opt2.load_state_dict(saved_opt)
    for _ in range(2):
        opt2.step(lambda: p.loss(model2))
    assert torch.equal(_flat(model2), _flat(model))
    assert opt2.last_info["grad_evals"] == opt.last_info["grad_evals"]


def test_registry_satisfies_local_objective_auto_for_pinns() -> None:
    from mldd.problems.pinn.prefix import PINNLocalObjectives
    from mldd.train.methods import MethodError, build_optimizer

    p = _tiny_burgers()
    model = p.build_model(seed=0)
    for method in ("aspqn", "mspqn"):
        opt = build_optimizer(method, model.parameters(), p, {"local_iters": 2},
                              {"model": model})
        assert isinstance(opt._local_objective, PINNLocalObjectives)
        opt = build_optimizer(method, model.parameters(), p,
                              {"local_iters": 2, "local_objective": "generic"}, {"model": model})
        assert opt._local_objective is None
    # No jets on the autograd route, and none for a problem that is not a PINN.
    p_ad = problems.get("burgers", n_collocation=50, width=6, depth=3, derivatives="autograd")
    opt = build_optimizer("mspqn", model.parameters(), p_ad, {}, {"model": model})
    assert opt._local_objective is None
    reg = problems.get("digits")
    net = ResidualMLP(64, 10, width=5, depth=2)
    opt = build_optimizer("aspqn", net.parameters(), reg, {}, {"model": net})
    assert opt._local_objective is None
    with pytest.raises(MethodError, match="'auto' or 'generic'"):
        build_optimizer("mspqn", model.parameters(), p, {"local_objective": "fast"},
                        {"model": model})


class _TwoRanks:
    """Executor stand-in reporting rank 0 of 2 (for checks that fail before any collective)."""

    rank, world_size = 0, 2

    def owns(self, n: int) -> list[int]:
        return list(range(0, n, 2))


def test_data_parallel_options_and_errors() -> None:
    model, X, y = _setup()
    with pytest.raises(ValueError, match="needs model=model"):
        mldd.optim.ASPQN(model.parameters(), data_parallel=True, decomposition="param_groups")
    with pytest.raises(ValueError, match="data_parallel must be True or False, got 'yes'"):
        mldd.optim.ASPQN(model.parameters(), model=model, data_parallel="yes")
    with pytest.raises(ValueError, match="n_rows must be None or an integer >= 1, got 0"):
        mldd.optim.ASPQN(model.parameters(), model=model, data_parallel=True, n_rows=0)
    with pytest.raises(ValueError, match=r"loss_reduction must be one of \('mean', 'sum'\)"):
        mldd.optim.ASPQN(model.parameters(), model=model, loss_reduction="max")
    # With two ranks a plain closure cannot be sharded, and the row count must be known.
    opt = mldd.optim.ASPQN(model.parameters(), model=model, data_parallel=True,
                           executor=_TwoRanks())  # type: ignore[arg-type]
    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        opt.step(_torch_closure(opt, model, X, y))
    with pytest.raises(ClosureError, match="needs the number of rows"):
        opt.step(lambda m, rows: ((m(X if rows is None else X[rows]) - y) ** 2).mean())


def test_data_parallel_is_a_no_op_in_one_process() -> None:
    """Serially the option changes nothing: same iterates, bit for bit."""
    runs = []
    for dp in (False, True):
        model, X, y = _setup()
        opt = mldd.optim.ASPQN(model.parameters(), model=model, local_iters=3,
                               data_parallel=dp, n_rows=X.shape[0])

        def closure(m, rows, X=X, y=y):
            r = slice(None) if rows is None else rows
            return ((m(X[r]) - y[r]) ** 2).mean()

        for _ in range(3):
            opt.step(closure)
        runs.append(_flat(model))
    assert torch.equal(runs[0], runs[1])


def test_shard_weight() -> None:
    from mldd.decomposition.data_parallel import shard_weight

    assert shard_weight(3, 12, "mean") == 0.25 and shard_weight(3, 12, "sum") == 1.0
    with pytest.raises(ValueError, match="does not fit a batch of 2 rows"):
        shard_weight(3, 2, "mean")


def test_registry_turns_data_parallel_on_for_problems_with_rows() -> None:
    from mldd.train.methods import build_optimizer

    p = _tiny_burgers()
    model = p.build_model(seed=0)
    opt = build_optimizer("aspqn", model.parameters(), p, {}, {"model": model})
    assert opt._data_parallel is True
    opt = build_optimizer("aspqn", model.parameters(), p, {"data_parallel": False},
                          {"model": model})
    assert opt._data_parallel is False


@pytest.mark.parametrize("cls", ["ASPQN", "MSPQN"])
def test_trust_region_global_step_resumes_bit_identically(cls) -> None:
    def make(m):
        return getattr(mldd.optim, cls)(m.parameters(), model=m, local_iters=2, global_iters=3,
                                        globalization="trust_region", radius=0.1)

    opt = _check_resume(make, ("loss", "n_g", "radius", "global_rejected", "iteration"))
    state = opt.state_dict()["state"][0]["solver"]["global_step"]
    assert state["radius"] == opt.last_info["radius"] and len(state["memory"]["s"]) > 0
    assert opt.solver.global_step.solver.n_accepted > 0
    model, X, y = _setup()
    with torch.no_grad():
        assert opt.last_info["loss"] < 0.5 * float(((model(X) - y) ** 2).mean())
