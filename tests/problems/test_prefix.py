"""Layer-block PINN losses with a cached prefix (mldd.problems.pinn.prefix)."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mldd.problems as problems
from mldd.decomposition.local import SubspaceObjective
from mldd.decomposition.spqn import SPQNConfig, SPQNSolver
from mldd.decomposition.subdomains import Decomposition
from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.models import MLP, ResidualMLP
from mldd.objective import EvalCounters, ParamsObjective
from mldd.problems.pinn import GridPINN
from mldd.problems.pinn.prefix import (
    BlockNetwork,
    BlockObjective,
    LayerBlockLoss,
    layer_block_of,
    layer_slices,
    local_objective_factory,
)

COARSE: dict[str, dict[str, Any]] = {
    "burgers": {"n_x": 33, "n_t": 11, "dt": 0.1, "n_quad": 100},
    "klein-gordon": {"n_x": 17, "n_t": 13},
    "poisson2d": {"n_eval": 21},
}


def make(name: str, **kw: Any) -> GridPINN:
    opts: dict[str, Any] = {"n_collocation": 150, "reference_options": COARSE[name], "width": 8,
                            "depth": 4, **kw}
    p = problems.get(name, **opts)
    assert isinstance(p, GridPINN)
    return p


def randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in model.modules():
            if isinstance(lin, nn.Linear):
                assert lin.bias is not None
                lin.bias.copy_(0.3 * torch.randn(lin.bias.shape, generator=g,
                                                 dtype=lin.bias.dtype))
    return model


def reference(problem: GridPINN, model: nn.Module, x: Tensor, index: Tensor
              ) -> SubspaceObjective:
    """The full network's loss restricted to ``index`` (nested autograd, no caching)."""
    auto = make(problem.name, derivatives="autograd", n_collocation=problem.n_collocation,
                width=problem.width, depth=problem.depth)
    params = list(model.parameters())
    return SubspaceObjective(ParamsObjective(params, lambda: auto.loss(model)), x, index)


def rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max()) / max(float(b.abs().max()), 1e-300)


@pytest.mark.parametrize("name", ["burgers", "klein-gordon", "poisson2d"])
@pytest.mark.parametrize("block", [(0, 0), (1, 2), (2, 2), (3, 4), (4, 4), (0, 4)])
def test_block_objective_equals_the_restricted_full_objective(
    name: str, block: tuple[int, int]
) -> None:
    p = make(name)
    model = randomised(p.build_model(seed=0))
    x = params_to_vector(list(model.parameters()))
    a, b = block
    obj = BlockObjective(p, model, range(a, b + 1), x)
    sl = layer_slices(model)
    assert obj.block.slice == slice(sl[a].start, sl[b].stop)
    ref = reference(p, model, x, obj.index)
    assert torch.equal(obj.z0, ref.z0)
    z = obj.z0 + 0.05 * torch.randn(obj.n, dtype=torch.float64,
                                    generator=torch.Generator().manual_seed(1))
    v = torch.randn(obj.n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    f, g, hv = obj.linearize(z)
    hv_v = hv(v)  # before the reference writes the parameters (the graph holds them)
    fr, gr, hvr = ref.linearize(z)
    assert abs(float(f - fr)) <= 1e-10 * abs(float(fr))
    assert rel(g, gr) < 1e-10
    assert rel(hv_v, hvr(v)) < 1e-9
    f2, g2 = obj.value_and_grad(z)
    assert abs(float(f2 - fr)) <= 1e-10 * abs(float(fr)) and rel(g2, gr) < 1e-10
    assert abs(float(obj.value(z) - fr)) <= 1e-10 * abs(float(fr))
    # The model holds the last evaluated point, as ParamsObjective does.
    assert torch.equal(params_to_vector(list(model.parameters())), obj.full(z))
    assert obj.counters.n_f == 3 and obj.counters.n_g == 2 and obj.counters.n_hvp == 1


def test_prefix_is_computed_once_and_refreshed_when_it_changes() -> None:
    p = make("klein-gordon")  # collocation points (with derivatives) and boundary (values)
    model = randomised(p.build_model(seed=1))
    x = params_to_vector(list(model.parameters()))
    obj = BlockObjective(p, model, [3], x)
    net = obj.block.network
    for k in range(4):
        obj.value_and_grad(obj.z0 * (1 + 0.01 * k))
    assert net.n_prefix_computations == 2
    # Someone changes a prefix weight: the block loss must see it (no stale cache).
    block = LayerBlockLoss(p, model, 3, 3)
    with torch.no_grad():
        model.layers[1].weight.mul_(1.1)
    with torch.no_grad():
        expected = float(p.loss(model))
        assert abs(float(block.loss()) - expected) <= 1e-12 * abs(expected)
        block.loss()
        assert block.network.n_prefix_computations == 2
        model.layers[0].bias.add_(0.1)
        expected = float(p.loss(model))
        assert abs(float(block.loss()) - expected) <= 1e-12 * abs(expected)
    assert block.network.n_prefix_computations == 4


def test_only_the_block_gets_gradients() -> None:
    p = make("burgers")
    model = randomised(p.build_model(seed=2))
    block = LayerBlockLoss(p, model, 2, 3)
    block.loss().backward()
    names = {id(q): n for n, q in model.named_parameters()}
    with_grad = sorted(names[id(q)] for q in model.parameters() if q.grad is not None)
    assert with_grad == ["layers.2.bias", "layers.2.weight", "layers.3.bias", "layers.3.weight"]
    assert [id(q) for q in block.parameters] == [id(q) for q in block.network.block_parameters()]
    assert not list(block.network.parameters())  # the wrapper owns nothing


def test_residual_mlp_blocks() -> None:
    p = make("poisson2d")
    torch.manual_seed(3)
    model = randomised(ResidualMLP(2, 1, width=6, depth=3))
    x = params_to_vector(list(model.parameters()))
    for a, b in [(0, 1), (2, 3), (4, 4)]:
        obj = BlockObjective(p, model, range(a, b + 1), x)
        ref = reference(p, model, x, obj.index)
        f, g = obj.value_and_grad(obj.z0)
        fr, gr = ref.value_and_grad(obj.z0)
        assert abs(float(f - fr)) <= 1e-10 * abs(float(fr)) and rel(g, gr) < 1e-10


def test_block_network_value_path_and_autograd_inputs() -> None:
    torch.manual_seed(4)
    model = randomised(MLP(2, 1, width=5, depth=3))
    net = BlockNetwork(model, 2, 2)
    x = torch.rand(7, 2, dtype=torch.float64)
    torch.testing.assert_close(net(x), model(x), rtol=1e-13, atol=1e-14)
    X = x.clone().requires_grad_(True)  # the autograd route: gradients to the points
    (g,) = torch.autograd.grad(net(X).sum(), X)
    (gr,) = torch.autograd.grad(model(X).sum(), X)
    torch.testing.assert_close(g, gr)


def test_layer_block_of_maps_exact_layer_sets_only() -> None:
    model = MLP(2, 1, width=4, depth=3)
    sl = layer_slices(model)
    idx = torch.arange(sl[1].start, sl[2].stop)
    assert layer_block_of(model, idx) == (1, 2)
    assert layer_block_of(model, torch.arange(sl[3].start, sl[3].stop)) == (3, 3)
    assert layer_block_of(model, idx[1:]) is None  # cuts a layer
    assert layer_block_of(model, torch.cat([idx[:3], idx[4:]])) is None  # a hole
    assert layer_block_of(MLP(2, 1, activation="relu"), idx) is None
    dec = Decomposition.by_layers(model)
    assert [layer_block_of(model, dec[s].index) for s in range(len(dec))] == [
        (s, s) for s in range(4)]


def test_invalid_blocks_raise() -> None:
    p = make("burgers")
    model = p.build_model(seed=0)
    x = params_to_vector(list(model.parameters()))
    with pytest.raises(ValueError, match="first_layer"):
        LayerBlockLoss(p, model, 3, 2)
    with pytest.raises(ValueError, match="last_layer"):
        LayerBlockLoss(p, model, 0, 5)
    with pytest.raises(ValueError, match="contiguous"):
        BlockObjective(p, model, [1, 3], x)
    with pytest.raises(ValueError, match="x_base"):
        BlockObjective(p, model, [1], x[:-1])
    with pytest.raises(ValueError, match="SubspaceObjective"):
        LayerBlockLoss(p, MLP(2, 1, width=4, depth=4, activation="relu"), 0, 0)
    with pytest.raises(ValueError, match="PINNProblem"):
        LayerBlockLoss(object(), model, 0, 0)  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", ["multiplicative", "additive"])
def test_spqn_with_block_objectives_gives_the_same_iterates(variant: str) -> None:
    p = make("burgers", width=6, depth=3, n_collocation=100)
    model = randomised(p.build_model(seed=5))
    params = list(model.parameters())
    x0 = params_to_vector(params)
    dec = Decomposition.by_layers(model)
    factory = local_objective_factory(p, model, dec)
    made = []

    def spy(objective: Any, s: int, x_base: Tensor, counters: EvalCounters) -> Any:
        local = factory(objective, s, x_base, counters)
        made.append(type(local).__name__)
        return local

    xs = []
    for hook in (None, spy):
        vector_to_params(x0, params)
        objective = ParamsObjective(params, lambda: p.loss(model))
        solver = SPQNSolver(SPQNConfig(variant=variant, local_iters=3), dec,
                            local_objective=hook)
        x = x0.clone()
        for _ in range(2):
            x = solver.iterate(objective, x).x
        xs.append(x)
    assert set(made) == {"BlockObjective"} and len(made) == 2 * len(dec)
    torch.testing.assert_close(xs[1], xs[0], rtol=1e-8, atol=1e-10)
    assert not torch.equal(xs[0], x0)


def test_factory_falls_back_for_non_layer_subdomains() -> None:
    p = make("burgers", width=4, depth=2)
    model = p.build_model(seed=0)
    n = sum(q.numel() for q in model.parameters())
    dec = Decomposition.from_sizes([5, n - 5])  # cuts the first layer
    factory = local_objective_factory(p, model, dec)
    x = params_to_vector(list(model.parameters()))
    objective = ParamsObjective(list(model.parameters()), lambda: p.loss(model))
    local = factory(objective, 0, x, EvalCounters())
    assert isinstance(local, SubspaceObjective)


def test_timing_tables_smoke() -> None:
    from mldd.problems.pinn.derivative_timing import main

    out = main(["--threads", "1", "--repeats", "1", "--points", "64"])
    assert "| burgers |" in out and "| klein-gordon |" in out and "| allen-cahn |" in out
    assert "| layer 8 |" in out and "| full (autograd) |" in out
