"""Hierarchies: builders for depth/width/data coarsening, costs, the table, validation."""

from __future__ import annotations

import pytest
import torch

from mldd.linalg.flat import params_to_vector
from mldd.models import MLP, ConvResNet, ResidualMLP
from mldd.multilevel import (
    DepthTransfer,
    Hierarchy,
    IdentityTransfer,
    Level,
    MatrixTransfer,
    WidthTransfer,
    coarse_depth_model,
    coarse_width_model,
    per_level,
    valid_depths,
)

D = torch.float64


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ------------------------------------------------------------------------------------ per_level


def test_per_level() -> None:
    assert per_level(3, 2, "trials") == [3, 3]
    assert per_level("tr", 3, "solver") == ["tr"] * 3
    assert per_level({"a": 1}, 2, "opts") == [{"a": 1}, {"a": 1}]
    assert per_level([1, 2, 3], 3, "trials") == [1, 2, 3]
    assert per_level((1, 2), 2, "trials") == [1, 2]
    with pytest.raises(ValueError, match="trials: got 2 values for 3 levels"):
        per_level([1, 2], 3, "trials")
    with pytest.raises(ValueError, match="n_levels"):
        per_level(1, 0, "x")


def test_valid_depths() -> None:
    assert valid_depths(2, 8) == [5, 9]
    assert valid_depths(1, 8) == [7, 9]
    assert valid_depths(3, 2) == [9, 17]


# ---------------------------------------------------------------------------------------- depth


def test_build_depth_hierarchy_residual_mlp() -> None:
    torch.manual_seed(0)
    fine = ResidualMLP(3, 2, width=6, depth=9)
    state = torch.get_rng_state()
    h = Hierarchy.build(fine, levels=3, coarsen="depth", options={"trials": [1, 2, 3], "nu": 2})
    assert torch.equal(torch.get_rng_state(), state)  # building leaves the global RNG alone
    assert len(h) == 3 and h.finest.model is fine and h.coarsest is h[0]
    assert [lev.model.depth for lev in h] == [3, 5, 9]  # type: ignore[union-attr]
    assert [lev.model.h for lev in h] == pytest.approx([4 * fine.h, 2 * fine.h, fine.h])  # type: ignore[union-attr]
    assert [lev.kind for lev in h] == ["depth", "depth", "fine"]
    assert all(isinstance(lev.transfer, DepthTransfer) for lev in h.levels[:2])
    assert h.finest.transfer is None
    assert [lev.options for lev in h] == [{"trials": 1, "nu": 2}, {"trials": 2, "nu": 2},
                                          {"trials": 3, "nu": 2}]
    # Coarse networks are initialised by injection of the next finer level.
    for lev, finer in zip(h.levels[:2], h.levels[1:], strict=True):
        assert lev.transfer is not None
        torch.testing.assert_close(lev.vector(), lev.transfer.inject(finer.vector()),
                                   rtol=0, atol=0)
        assert lev.transfer.n_coarse == lev.n_params and lev.transfer.n_fine == finer.n_params
    assert h[0].model.blocks[1].weight.dtype == D  # type: ignore[union-attr,index]
    costs = [lev.cost for lev in h]
    assert costs == pytest.approx([h[0].n_params / n_params(fine),
                                   h[1].n_params / n_params(fine), 1.0])
    assert h.complexity == pytest.approx(sum(costs))  # type: ignore[arg-type]


def test_build_depth_hierarchy_conv_resnet_and_full_weighting() -> None:
    torch.manual_seed(0)
    fine = ConvResNet(1, 3, 6, width=3, depth=5, dtype=D)
    h = Hierarchy.build(fine, levels=2, injection="full_weighting", restriction_scale=0.5)
    coarse = h[0].model
    assert isinstance(coarse, ConvResNet) and coarse.depth == 3 and coarse.h == 2 * fine.h
    t = h[0].transfer
    assert isinstance(t, DepthTransfer) and t.injection == "full_weighting"
    assert t.restriction_scale == 0.5
    fb = fine.blocks
    torch.testing.assert_close(coarse.blocks[1].weight,  # type: ignore[index]
                               fb[1].weight / 4 + fb[2].weight / 2 + fb[3].weight / 4)


def test_depth_errors_say_which_depths_work() -> None:
    with pytest.raises(ValueError, match=r"depth 8 cannot be coarsened 2 time.*: 5, 9"):
        Hierarchy.build(ResidualMLP(2, 1, depth=8), levels=3)
    with pytest.raises(ValueError, match=r"depth 6 cannot be coarsened 1 time.*: 5, 7"):
        Hierarchy.build(ResidualMLP(2, 1, depth=6), levels=2)
    with pytest.raises(ValueError, match="residual network with blocks"):
        Hierarchy.build(MLP(2, 1, depth=5), levels=2)
    with pytest.raises(ValueError, match="odd depth"):
        coarse_depth_model(ResidualMLP(2, 1, depth=4))
    with pytest.raises(ValueError, match="ResidualMLP and ConvResNet"):
        coarse_depth_model(MLP(2, 1, depth=5))
    # Only depth steps need odd depths: depth 5 allows one depth step below a data step.
    h = Hierarchy.build(ResidualMLP(2, 1, depth=5), levels=3, coarsen=("data", "depth"),
                        n_rows=10)
    assert [lev.model.depth for lev in h] == [3, 3, 5]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------- width


@pytest.mark.parametrize("cls", [MLP, ResidualMLP])
def test_build_width_hierarchy(cls: type) -> None:
    torch.manual_seed(0)
    fine = cls(3, 2, width=16, depth=3)
    h = Hierarchy.build(fine, levels=3, coarsen="width", width_split="uniform", seed=4)
    assert [lev.model.width for lev in h] == [4, 8, 16]  # type: ignore[union-attr]
    assert all(type(lev.model) is cls for lev in h)
    t = h[1].transfer
    assert isinstance(t, WidthTransfer) and t.split == "uniform"
    torch.testing.assert_close(h[1].vector(), t.inject(params_to_vector(list(fine.parameters()))))
    X = torch.randn(5, 3, dtype=D)
    assert h[0].model(X).shape == (5, 2)  # type: ignore[misc]


def test_width_errors() -> None:
    with pytest.raises(ValueError, match=r"coarse width in \[1, 1\)"):
        Hierarchy.build(MLP(2, 1, width=1), levels=2, coarsen="width")
    with pytest.raises(ValueError, match="MLP and ResidualMLP"):
        coarse_width_model(ConvResNet(1, 2, 4))
    with pytest.raises(ValueError, match=r"got 9"):
        coarse_width_model(MLP(2, 1, width=8), width=9)
    assert coarse_width_model(MLP(2, 1, width=8), width=3).width == 3  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------------------- data


def test_build_data_hierarchy() -> None:
    fine = ResidualMLP(2, 1, width=4, depth=3)
    h = Hierarchy.build(fine, levels=3, coarsen="data", n_rows=40, data_ratio=0.25, seed=1)
    assert all(lev.model is fine for lev in h)  # shared parameters
    assert all(isinstance(lev.transfer, IdentityTransfer) for lev in h.levels[:2])
    r0, r1 = h[0].rows, h[1].rows
    assert r0 is not None and r1 is not None and h.finest.rows is None
    assert r1.numel() == 10 and r0.numel() == 2 and r0.dtype == torch.long
    assert torch.equal(r1, r1.sort().values) and set(r0.tolist()) <= set(r1.tolist())
    assert [lev.cost for lev in h] == pytest.approx([2 / 40, 10 / 40, 1.0])
    again = Hierarchy.build(fine, levels=3, coarsen="data", n_rows=40, data_ratio=0.25, seed=1)
    other = Hierarchy.build(fine, levels=3, coarsen="data", n_rows=40, data_ratio=0.25, seed=2)
    assert torch.equal(again[1].rows, r1)  # type: ignore[arg-type]
    assert not torch.equal(other[1].rows, r1)  # type: ignore[arg-type]
    # A data level evaluates closure(model, rows).
    seen = []
    h[0].bind(lambda m, rows: seen.append(rows) or torch.zeros(()))()
    assert seen[0] is r0
    with pytest.raises(ValueError, match="needs n_rows"):
        Hierarchy.build(fine, levels=2, coarsen="data")
    with pytest.raises(ValueError, match="gives 0 rows"):
        Hierarchy.build(fine, levels=2, coarsen="data", n_rows=1)


def test_mixed_coarsening_is_listed_coarsest_first() -> None:
    torch.manual_seed(0)
    fine = ResidualMLP(2, 1, width=8, depth=9)
    h = Hierarchy.build(fine, levels=4, coarsen=("depth", "depth+data", "data"), n_rows=100)
    assert [lev.kind for lev in h] == ["depth", "depth+data", "data", "fine"]
    assert [lev.model.depth for lev in h] == [3, 5, 9, 9]  # type: ignore[union-attr]
    assert h[2].model is fine and h[1].model is not fine
    assert [None if lev.rows is None else lev.rows.numel() for lev in h] == [25, 25, 50, None]
    assert h[1].cost == pytest.approx(h[1].n_params / n_params(fine) * 0.25)
    text = h.table()
    assert str(h) == text
    for needle in ("level", "blocks×width", "params", "rows", "cost", "5×8", "100 (all)",
                   "depth+data", "complexity"):
        assert needle in text, needle
    assert len(text.splitlines()) == 4 + 4 + 1
    assert "depth, depth+data, data, fine" in repr(h)


def test_build_argument_errors() -> None:
    m = ResidualMLP(2, 1, depth=5)
    with pytest.raises(ValueError, match="coarsen: got 1 values for 2 levels"):
        Hierarchy.build(m, levels=3, coarsen=("depth",))
    with pytest.raises(ValueError, match="unknown coarsening 'deep'"):
        Hierarchy.build(m, levels=2, coarsen="deep")
    with pytest.raises(ValueError, match="combines depth and width"):
        Hierarchy.build(m, levels=2, coarsen="depth+width")
    with pytest.raises(ValueError, match="levels must be an integer >= 1"):
        Hierarchy.build(m, levels=0)
    with pytest.raises(ValueError, match=r"data_ratio must be a number in \(0, 1\)"):
        Hierarchy.build(m, levels=2, coarsen="data", n_rows=10, data_ratio=1.0)
    with pytest.raises(ValueError, match=r"options\['lr'\]: got 3 values for 2 levels"):
        Hierarchy.build(m, levels=2, options={"lr": [1, 2, 3]})
    one = Hierarchy.build(m, levels=1)
    assert len(one) == 1 and one.finest.model is m and one.finest.cost == 1.0


# ----------------------------------------------------------------------------------- validation


def test_hierarchy_validation() -> None:
    c, f = ResidualMLP(2, 1, width=3, depth=3), ResidualMLP(2, 1, width=3, depth=5)
    t = DepthTransfer(c, f)
    h = Hierarchy([Level(c, t), Level(f)])
    assert h[0].kind == "custom" and h[0].cost == pytest.approx(n_params(c) / n_params(f))
    with pytest.raises(ValueError, match="at least one level"):
        Hierarchy([])
    with pytest.raises(ValueError, match=r"finest level .* must have transfer=None"):
        Hierarchy([Level(c, t), Level(f, t)])
    with pytest.raises(ValueError, match="level 0 needs a transfer"):
        Hierarchy([Level(c), Level(f)])
    with pytest.raises(ValueError, match=r"n_coarse=.* but the model of level 0"):
        Hierarchy([Level(c, MatrixTransfer(torch.ones(n_params(f), n_params(c) + 1))), Level(f)])
    with pytest.raises(ValueError, match=r"n_fine=.* but the model of level 1"):
        Hierarchy([Level(c, MatrixTransfer(torch.ones(n_params(f) + 1, n_params(c)))), Level(f)])
    with pytest.raises(ValueError, match="1-D LongTensor"):
        Hierarchy([Level(f, rows=torch.tensor([0.0, 1.0]))], n_rows=4)
    with pytest.raises(ValueError, match=r"lie in \[0, n_rows=4\)"):
        Hierarchy([Level(f, rows=torch.tensor([0, 4]))], n_rows=4)
    with pytest.raises(ValueError, match="no n_rows"):
        Hierarchy([Level(f, IdentityTransfer(n_params(f)), rows=torch.tensor([0])), Level(f)])
    with pytest.raises(ValueError, match="expected a Level"):
        Hierarchy([f])  # type: ignore[list-item]
    # A hand-set cost is kept; a model-less level is allowed (loss hierarchies).
    h2 = Hierarchy([Level(None, MatrixTransfer(torch.ones(5, 2, dtype=D)), cost=0.1),
                    Level(None)])
    assert h2[0].cost == 0.1 and h2.finest.n_params == 0
    assert "-" in h2.table()
