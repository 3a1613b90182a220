"""The closure conventions (mldd.closures) and the trainer's all-kinds closure."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mldd import problems
from mldd.closures import bind, call, closure_kind, require_kind
from mldd.objective import ClosureError


def test_kinds_by_arity() -> None:
    assert closure_kind(lambda: 0) == "plain"
    assert closure_kind(lambda m: 0) == "model"
    assert closure_kind(lambda m, r: 0) == "rows"
    assert closure_kind(lambda m=None, r=None: 0) == "rows"
    assert closure_kind(lambda *a: 0) == "rows"
    with pytest.raises(ClosureError, match="at most two"):
        closure_kind(lambda a, b, c: 0)
    with pytest.raises(ClosureError, match="callable"):
        closure_kind(3)


def test_require_kind_names_the_signature() -> None:
    assert require_kind(lambda m, r: 0, "model", "RMTR") == "rows"
    assert require_kind(lambda: 0, "plain", "TR") == "plain"
    with pytest.raises(ClosureError, match=r"RMTR needs a closure of the form closure\(model\)"):
        require_kind(lambda: 0, "model", "RMTR")
    with pytest.raises(ClosureError, match=r"closure\(model, rows\)"):
        require_kind(lambda m: 0, "rows", "APTS")
    with pytest.raises(ValueError, match="needed must be one of"):
        require_kind(lambda: 0, "batch", "X")


def test_call_and_bind_pass_what_the_kind_takes() -> None:
    model = nn.Linear(2, 1)
    rows = torch.tensor([0, 2])
    seen: list[tuple] = []
    assert call(lambda: torch.tensor(1.0)) == 1.0
    call(lambda m: seen.append((m,)) or torch.tensor(0.0), model)
    call(lambda m, r: seen.append((m, r)) or torch.tensor(0.0), model, rows)
    assert seen[0][0] is model and seen[1][1] is rows
    with pytest.raises(ClosureError, match="cannot evaluate a subset"):
        call(lambda: torch.tensor(0.0), None, rows)
    with pytest.raises(ClosureError, match="cannot evaluate a subset"):
        call(lambda m: torch.tensor(0.0), model, rows)
    with pytest.raises(ClosureError, match="needs the model"):
        call(lambda m: torch.tensor(0.0))
    assert float(bind(lambda m, r: torch.tensor(float(len(r))), model, rows)()) == 2.0


def test_select_rows_on_problems() -> None:
    pinn = problems.get("poisson2d", n_collocation=50, reference_options={"n_eval": 21})
    rows = torch.arange(0, 50, 5)
    assert pinn.n_rows() == 50
    assert torch.equal(pinn.select_rows(None, rows), pinn.collocation[rows])
    assert pinn.select_rows(None, None) is None
    model = pinn.build_model(seed=0)
    full = pinn.loss(model)
    parts = [pinn.loss(model, pinn.select_rows(None, torch.arange(i, 50, 2))) for i in (0, 1)]
    torch.testing.assert_close(full, 0.5 * (parts[0] + parts[1]))


def test_call_without_model_uses_defaults_when_the_closure_has_them() -> None:
    def closure(model=None, rows=None):
        return torch.tensor(0.0 if model is None else 1.0)

    assert float(call(closure)) == 0.0
    assert float(call(closure, nn.Linear(1, 1))) == 1.0
