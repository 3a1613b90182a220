"""Decompositions: index sets, coverage checks, overlap weights, restriction/extension, tables."""

import pytest
import torch
from torch import nn

from mldd.decomposition import (
    Decomposition,
    Subdomain,
    SubspaceObjective,
    bias_space,
    data_shards,
    first_layers_space,
    layer_space,
)
from mldd.decomposition.local import ParamsSubspaceObjective, local_objective
from mldd.models import MLP, ResidualMLP
from mldd.objective import EvalCounters, FunctionObjective, ParamsObjective


def _resnet() -> ResidualMLP:
    torch.manual_seed(0)
    return ResidualMLP(2, 1, width=4, depth=3)  # layers: 12, 20, 20, 20, 5 parameters


def _layer_sizes(model: nn.Module) -> list[int]:
    return [sum(p.numel() for p in m.parameters(recurse=False))
            for m in model.modules() if list(m.parameters(recurse=False))]


# ------------------------------------------------------------------------------ by_layers
def test_one_subdomain_per_layer_is_the_default_for_residual_networks() -> None:
    m = _resnet()
    dec = Decomposition.by_layers(m)
    assert len(dec) == 5
    assert [s.layers for s in dec.subdomains] == [
        ("input_layer",), ("blocks.0",), ("blocks.1",), ("blocks.2",), ("output_layer",)]
    sizes = _layer_sizes(m)
    assert [len(s) for s in dec.subdomains] == sizes == [12, 20, 20, 20, 5]
    # Contiguous, in parameter order: the weight and the bias of a layer together.
    start = 0
    for s, k in zip(dec.subdomains, sizes, strict=True):
        assert torch.equal(s.index, torch.arange(start, start + k))
        assert s.span == (start, start + k)
        start += k
    assert dec.n == start and dec.disjoint
    assert torch.equal(dec.multiplicity, torch.ones(dec.n, dtype=torch.float64))


def test_contiguous_blocks_of_layers() -> None:
    m = _resnet()
    dec = Decomposition.by_layers(m, blocks=2)
    assert [s.layers for s in dec.subdomains] == [
        ("input_layer", "blocks.0", "blocks.1"), ("blocks.2", "output_layer")]
    dec = Decomposition.by_layers(m, blocks=[1, 4])
    assert [len(s) for s in dec.subdomains] == [12, 65]
    with pytest.raises(ValueError, match="between 1 and the number of layers"):
        Decomposition.by_layers(m, blocks=6)
    with pytest.raises(ValueError, match="summing to the number of layers"):
        Decomposition.by_layers(m, blocks=[2, 2])


def test_overlap_extends_blocks_and_sets_multiplicity_weights() -> None:
    m = _resnet()
    dec = Decomposition.by_layers(m, overlap=1)
    assert [s.layers for s in dec.subdomains][:2] == [
        ("input_layer", "blocks.0"), ("input_layer", "blocks.0", "blocks.1")]
    # Layer l is held by its own subdomain and by each neighbour's: 2 at the ends, 3 inside.
    expected = torch.cat([torch.full((k,), float(mult), dtype=torch.float64) for k, mult in
                          zip(_layer_sizes(m), [2, 3, 3, 3, 2], strict=True)])
    assert torch.equal(dec.multiplicity, expected)
    assert torch.allclose(dec.weights, 1.0 / expected)
    assert not dec.disjoint


def test_combine_divides_summed_corrections_by_the_multiplicity() -> None:
    # Entries: 0,1 only in S0; 2,3 in S0 and S1; 4 in S1 and S2; 5 only in S2.
    dec = Decomposition.from_indices(6, [[0, 1, 2, 3], [2, 3, 4], [4, 5]])
    assert dec.multiplicity.tolist() == [1, 1, 2, 2, 2, 1]
    c = [torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64),
         torch.tensor([10.0, 20.0, 30.0], dtype=torch.float64),
         torch.tensor([100.0, 200.0], dtype=torch.float64)]
    d = dec.combine(c)
    assert d.tolist() == [1.0, 2.0, (3 + 10) / 2, (4 + 20) / 2, (30 + 100) / 2, 200.0]
    # Identical corrections on the overlap combine to that same value (partition of unity).
    x = torch.arange(6, dtype=torch.float64)
    same = dec.combine([dec.restrict(s, x) for s in range(3)])
    assert torch.equal(same, x)
    # A dict of some subdomains (one rank's share) gives the partial sum.
    part = dec.combine({1: c[1]})
    assert part.tolist() == [0.0, 0.0, 5.0, 10.0, 15.0, 0.0]
    assert torch.equal(dec.combine({0: c[0], 2: c[2]}) + part, d)


def test_restricted_weighting_gives_each_entry_to_its_core_subdomain() -> None:
    dec = Decomposition.from_sizes([2, 3, 2], overlap=1, weights="restricted")
    assert dec.multiplicity.tolist() == [2, 2, 3, 3, 3, 2, 2]
    c = [torch.ones(len(s), dtype=torch.float64) * (s_i + 1)
         for s_i, s in enumerate(dec.subdomains)]
    assert dec.combine(c).tolist() == [1, 1, 2, 2, 2, 3, 3]


def test_custom_weights_must_be_a_partition_of_unity() -> None:
    idx = [[0, 1, 2], [1, 2, 3]]
    w = [torch.tensor([1.0, 0.25, 0.5]), torch.tensor([0.75, 0.5, 1.0])]
    dec = Decomposition.from_indices(4, idx, weights=w)
    assert dec.weighting == "custom"
    assert dec.combine([torch.ones(3), torch.ones(3)]).tolist() == [1, 1, 1, 1]
    with pytest.raises(ValueError, match="partition of unity"):
        Decomposition.from_indices(4, idx, weights=[torch.ones(3), torch.ones(3)])
    with pytest.raises(ValueError, match="is not allowed; choose one of"):
        Decomposition.from_indices(4, idx, weights="smooth")


def test_restrict_extend_replace() -> None:
    dec = Decomposition.from_indices(5, [[0, 3], [1, 2, 4]])
    x = torch.tensor([10.0, 11.0, 12.0, 13.0, 14.0], dtype=torch.float64)
    assert dec.restrict(0, x).tolist() == [10.0, 13.0]
    assert dec.extend(1, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)).tolist() == [
        0, 1, 2, 0, 3]
    y = dec.replace(0, x, torch.tensor([-1.0, -2.0], dtype=torch.float64))
    assert y.tolist() == [-1.0, 11.0, 12.0, -2.0, 14.0] and x[0] == 10.0
    with pytest.raises(ValueError, match="has 2 entries"):
        dec.extend(0, torch.zeros(3))


# ------------------------------------------------------------------------------ coverage
def test_labels_param_groups_and_coverage_errors_name_the_parameters() -> None:
    m = _resnet()
    dec = Decomposition.by_labels(m, lambda name, p: name.rsplit(".", 1)[-1])
    assert [s.name for s in dec.subdomains] == ["weight", "bias"]
    assert sum(len(s) for s in dec.subdomains) == dec.n and dec.disjoint
    assert dec[0].span is None  # weights of all layers: not one contiguous range
    with pytest.raises(ValueError, match=r"uncovered parameters: blocks\.1\.weight, blocks\.1\."
                       "bias"):
        Decomposition.by_labels(m, lambda name, p: None if name.startswith("blocks.1") else 0)

    groups = [{"params": [m.input_layer.weight, m.input_layer.bias], "name": "in"},
              {"params": [p for b in m.blocks for p in b.parameters()]},
              {"params": list(m.output_layer.parameters())}]
    dec = Decomposition.by_param_groups(groups, list(m.parameters()), model=m)
    assert [s.name for s in dec.subdomains] == ["in", "group1", "group2"]
    assert dec[0].layers == ("input_layer.weight", "input_layer.bias")
    with pytest.raises(ValueError, match=r"uncovered parameters: output_layer\.weight, "
                       r"output_layer\.bias"):
        Decomposition.by_param_groups(groups[:2], list(m.parameters()), model=m)
    with pytest.raises(ValueError, match=r"do not cover 1 of 4 entries: .*positions \[3\]"):
        Decomposition.from_indices(4, [[0, 1], [1, 2]])


def test_layers_follow_the_optimizers_parameter_order() -> None:
    m = MLP(2, 1, width=3, depth=1)
    params = list(m.parameters())[::-1]  # output bias, output weight, input bias, input weight
    dec = Decomposition.by_layers(m, params=params)
    # Layer order stays the model's; positions are where the optimizer put them.
    assert dec[0].layers == ("layers.0",) and torch.equal(dec[0].index, torch.arange(4, 13))
    assert torch.equal(dec[1].index, torch.arange(0, 4))
    with pytest.raises(ValueError, match="not among"):
        Decomposition.by_param_groups([[nn.Parameter(torch.zeros(2))]], params)


def test_invalid_subdomains_are_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        Decomposition([Subdomain("a", torch.tensor([1, 0]))], 2)
    with pytest.raises(ValueError, match="outside"):
        Decomposition([Subdomain("a", torch.tensor([0, 2]))], 2)
    with pytest.raises(ValueError, match="overlap must be"):
        Decomposition.from_sizes([2, 2], overlap=-1)
    with pytest.raises(ValueError, match="at least one subdomain"):
        Decomposition([], 3)


def test_table_lists_subdomains_layers_and_counts() -> None:
    dec = Decomposition.by_layers(_resnet(), blocks=2, overlap=1)
    text = str(dec)
    lines = text.splitlines()
    assert lines[0].split() == ["subdomain", "layers", "params", "shared"]
    assert "S0" in lines[2] and "input_layer, blocks.0, blocks.1, blocks.2" in lines[2]
    assert lines[2].split()[-2:] == ["72", "40"]  # 12+20+20+20 params, blocks.1-2 shared
    assert "total" in lines[-1] and "(n=77)" in lines[-1]


# ------------------------------------------------------------------------------ data shards
def test_data_shards_partition_the_rows() -> None:
    shards = data_shards(10, 3)
    assert [s.tolist() for s in shards] == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    a, b = data_shards(10, 3, shuffle=True, generator=g1), data_shards(10, 3, shuffle=True,
                                                                      generator=g2)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    assert [len(s) for s in a] == [4, 3, 3]
    with pytest.raises(ValueError, match="n_shards"):
        data_shards(3, 4)


# ------------------------------------------------------------------------------ local objective
def test_subspace_objective_is_f_with_frozen_entries() -> None:
    A = torch.tensor([[4.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 2.0]], dtype=torch.float64)
    f = FunctionObjective(lambda x: 0.5 * x @ A @ x + x[0] ** 3, 3)
    x_base = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    counters = EvalCounters()
    sub = SubspaceObjective(f, x_base, torch.tensor([0, 2]), counters=counters)
    z = torch.tensor([0.5, 0.25], dtype=torch.float64)
    full = torch.tensor([0.5, -1.0, 0.25], dtype=torch.float64)
    fv, g = sub.value_and_grad(z)
    fr, gr = FunctionObjective(lambda x: 0.5 * x @ A @ x + x[0] ** 3, 3).value_and_grad(full)
    assert float(fv) == float(fr) and torch.equal(g, gr[[0, 2]])
    H = A.clone()
    H[0, 0] += 6 * 0.5
    v = torch.tensor([1.0, -2.0], dtype=torch.float64)
    assert torch.allclose(sub.hvp(z, v), H[[0, 2]][:, [0, 2]] @ v)
    # Counted once, on the given counters; the wrapped objective's stay untouched.
    assert counters.as_dict() == {"n_f": 2, "n_g": 2, "n_hvp": 1}
    assert f.counters.as_dict() == {"n_f": 0, "n_g": 0, "n_hvp": 0}
    ev = sub.full_evaluation(z)
    assert ev is not None and torch.allclose(ev[1], gr)
    assert sub.full_evaluation(z + 1) is None


# ------------------------------------------------------------------------------ coarse spaces
def test_coarse_spaces() -> None:
    m = _resnet()
    c = bias_space(m)
    assert len(c) == 4 + 3 * 4 + 1
    names = dict(m.named_parameters())
    assert c.layers == tuple(n for n in names if n.endswith("bias"))
    dec = Decomposition.by_layers(m, blocks=2)
    fl = first_layers_space(dec, m)
    assert fl.layers == ("input_layer", "blocks.2") and len(fl) == 12 + 20
    with pytest.raises(ValueError, match="no module named"):
        layer_space(m, ["nope"])


@pytest.mark.parametrize("calls_backward", [False, True])
def test_params_subspace_objective_differentiates_only_the_subdomain(calls_backward) -> None:
    m = _resnet()
    m.blocks[2].weight.requires_grad_(False)  # a parameter the user froze stays frozen
    params = [p for p in m.parameters()]
    X = torch.randn(16, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def closure():
        loss = (m(X) ** 2).mean()
        if calls_backward:
            loss.backward()
        return loss

    full = ParamsObjective(params, closure)
    dec = Decomposition.by_layers(m)
    x = full.current()
    m.blocks[2].weight.requires_grad_(True)
    f_ref, g_ref = ParamsObjective(params, closure).value_and_grad(x)
    m.blocks[2].weight.requires_grad_(False)
    for s in (1, 2, 4):  # blocks.0, blocks.1, output layer
        counters = EvalCounters()
        local = local_objective(full, x, dec[s].index, counters)
        assert isinstance(local, ParamsSubspaceObjective)
        f, g = local.value_and_grad(dec.restrict(s, x).clone())
        assert float(f) == pytest.approx(float(f_ref), rel=1e-14)
        torch.testing.assert_close(g, dec.restrict(s, g_ref), rtol=1e-12, atol=1e-14)
        assert counters.n_g == 1 and full.counters.n_g == 0
        assert local.full_evaluation(dec.restrict(s, x).clone()) is None
        # Frozen parameters got no gradient; requires_grad is restored everywhere.
        frozen = [p for p in params if all(p is not a for a in local.active)]
        assert all(p.grad is None for p in frozen)
    assert [p.requires_grad for p in m.parameters()] == [
        n != "blocks.2.weight" for n, _ in m.named_parameters()]
    assert isinstance(local_objective(FunctionObjective(lambda v: v.sum(), 3),
                                      torch.zeros(3, dtype=torch.float64), torch.tensor([1])),
                      SubspaceObjective)
