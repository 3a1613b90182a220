"""The decomposition and multilevel methods through the registry and the trainer (end to end)."""

from __future__ import annotations

from typing import Any

import pytest

from mldd import problems
from mldd.train import Trainer
from mldd.train.methods import MethodError, build_optimizer, get_method

POISSON = {"n_collocation": 64, "width": 6, "depth": 2, "reference_options": {"n_eval": 11}}

CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("mspqn", {}, {}),
    ("aspqn", {"combine": "subspace"}, {}),
    ("apts", {}, {}),
    ("apts", {"decomposition": "data", "n_shards": 2}, {}),
    ("rmtr", {}, {}),  # default: 2-level data hierarchy, works with the plain MLP
    ("rmtr", {"coarsen": "depth", "levels": 2}, {"network": "resmlp", "depth": 3}),
    ("mgopt", {"coarsen": "data", "levels": 2}, {}),
    ("moffo", {"coarsen": "data", "levels": 2, "batch_size": None}, {}),
    ("adagrad", {"lr": 0.1, "batch_size": None}, {}),
]


@pytest.mark.parametrize(("name", "options", "popts"), CASES)
def test_method_trains_a_small_pinn(name: str, options: dict[str, Any],
                                    popts: dict[str, Any]) -> None:
    p = problems.get("poisson2d", **{**POISSON, **popts})
    model = p.build_model(seed=0)
    opt = build_optimizer(name, model.parameters(), p, options, {"model": model})
    spec = get_method(name)
    bs = {**spec.defaults, **options}.get("batch_size")
    t = Trainer(p, model, opt, batch_size=bs, max_iters=4, log_every=0.0)
    start = float(p.loss(model).detach())
    res = t.run()
    assert res.stop_reason == "max_iters"
    # The method trained, through the trainer's closure.
    assert float(p.loss(model).detach()) < start


def test_methods_that_run_distributed_are_marked() -> None:
    assert get_method("aspqn").distributed and get_method("apts").distributed
    assert not get_method("mspqn").distributed and not get_method("rmtr").distributed


def test_depth_hierarchy_on_a_plain_mlp_is_a_clear_error() -> None:
    p = problems.get("poisson2d", **POISSON)
    model = p.build_model(seed=0)
    with pytest.raises((MethodError, ValueError), match="depth"):
        build_optimizer("rmtr", model.parameters(), p, {"coarsen": "depth", "levels": 3},
                        {"model": model})


@pytest.mark.parametrize(("name", "popts", "batch", "expected"), [
    ("mgopt", {}, None, "data"),  # plain MLP, full batch
    ("moffo", {}, 16, "width"),  # plain MLP, mini-batches (the last may be smaller)
    ("moffo", {"network": "resmlp", "depth": 5}, 16, "depth"),  # 5 → 3 → 2 blocks
    ("mgopt", {"network": "resmlp", "depth": 4}, None, "data"),  # 4 blocks: not coarsenable
])
def test_auto_coarsening_falls_back_when_depth_levels_cannot_be_built(
        name: str, popts: dict[str, Any], batch: int | None, expected: str) -> None:
    p = problems.get("poisson2d", **{**POISSON, **popts})
    model = p.build_model(seed=0)
    assert get_method(name).defaults["coarsen"] == "auto"
    opt = build_optimizer(name, model.parameters(), p, {"batch_size": batch}, {"model": model})
    assert opt.n_levels == 3
    assert [lev.kind for lev in opt.hierarchy.levels[:-1]] == [expected] * 2
    res = Trainer(p, model, opt, batch_size=batch, max_iters=6, log_every=0.0).run()
    assert res.stop_reason == "max_iters"
