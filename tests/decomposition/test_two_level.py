"""Two-level SPQN: the coarse step, coarse spaces, and the two-level optimizers."""

import pytest
import torch

import mldd.optim
from mldd.decomposition import Decomposition, SPQNConfig, SPQNSolver, bias_space
from mldd.decomposition.two_level import coarse_step
from mldd.models import ResidualMLP
from mldd.objective import EvalCounters, FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start
from mldd.solvers import LBFGSConfig, LBFGSSolver


def test_coarse_step_moves_only_the_coarse_entries_and_never_increases_the_loss() -> None:
    n = 8
    obj = FunctionObjective(rosenbrock, n)
    x = rosenbrock_start(n)
    f, g = obj.value_and_grad(x)
    idx = torch.tensor([1, 4, 6])
    counters = EvalCounters()
    x1, res = coarse_step(LBFGSSolver(LBFGSConfig(memory=3)), obj, x, float(f), g, idx, 3,
                          counters)
    moved = torch.nonzero(x1 != x).flatten()
    assert set(moved.tolist()) <= set(idx.tolist()) and moved.numel() > 0
    assert res.f < float(f) and res.iterations == 3
    assert float(rosenbrock(x1)) == pytest.approx(res.f, rel=1e-14)
    # Counted on the coarse counters only; the seed (f, g) at x costs nothing.
    assert counters.n_g > 0 and obj.counters.n_g == 1


def test_two_level_runs_the_coarse_step_before_the_local_phase() -> None:
    n = 10
    obj = FunctionObjective(rosenbrock, n)
    solver = SPQNSolver(SPQNConfig(local_iters=5, coarse_iters=2),
                        Decomposition.from_sizes([2] * 5), coarse=torch.arange(0, n, 2),
                        counters=obj.counters)
    res = solver.iterate(obj, rosenbrock_start(n))
    assert res.info["coarse_iters"] == 2
    assert res.info["loss_coarse"] < res.f_start
    assert res.info["loss_half"] <= res.info["loss_coarse"]
    with pytest.raises(ValueError, match="coarse space must be a non-empty set"):
        SPQNSolver(SPQNConfig(), Decomposition.from_sizes([2]), coarse=torch.tensor([5]))


def _regression(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(48, 2, generator=g, dtype=torch.float64)
    y = torch.sin(2 * X[:, :1]) * X[:, 1:]
    torch.manual_seed(seed)
    model = ResidualMLP(2, 1, width=6, depth=2)
    return model, X, y


def test_two_level_optimizers_choose_their_coarse_space(caplog) -> None:
    model, _, _ = _regression()
    with caplog.at_level("INFO", logger="mldd.optim.schwarz"):
        opt = mldd.optim.ASPQN(model.parameters(), model=model, two_level=True, local_iters=3)
    assert "coarse space coarse(biases): 19 parameters" in caplog.text
    assert torch.equal(opt.solver.coarse_index, bias_space(model).index)
    opt = mldd.optim.MSPQN(model.parameters(), model=model, blocks=2, two_level=True,
                           coarse="first_layers", local_iters=3)
    assert opt.solver.coarse_index.numel() == 18 + 42  # input layer + blocks.1
    with pytest.raises(ValueError, match="needs model=model"):
        mldd.optim.ASPQN(model.parameters(), decomposition="param_groups", two_level=True)
    with pytest.raises(ValueError, match="coarse='all' is not allowed"):
        mldd.optim.ASPQN(model.parameters(), model=model, two_level=True, coarse="all")
    opt = mldd.optim.ASPQN(model.parameters(), decomposition="param_groups", two_level=True,
                           coarse=torch.tensor([0, 1, 2]))
    assert opt.solver.coarse_index.tolist() == [0, 1, 2]


def test_two_level_training_with_overlap_decreases_the_loss() -> None:
    model0, X, y = _regression()
    losses = {}
    for two_level in (False, True):
        model = ResidualMLP(2, 1, width=6, depth=2)
        model.load_state_dict(model0.state_dict())
        opt = mldd.optim.ASPQN(model.parameters(), model=model, overlap=1, local_iters=3,
                               two_level=two_level)
        for _ in range(8):
            opt.step(lambda m=model: ((m(X) - y) ** 2).mean())
        losses[two_level] = opt.last_info["loss"]
        assert opt.last_info["coarse_n_g"] > 0 if two_level else opt.last_info[
            "coarse_n_g"] == 0
    with torch.no_grad():
        l0 = float(((model0(X) - y) ** 2).mean())
    assert losses[True] < 0.5 * l0 and losses[False] < 0.5 * l0
