import pytest
import torch

from mldd.objective import ClosureError, FunctionObjective, ParamsObjective
from mldd.problems.functions import rosenbrock


def test_function_objective_grad_and_hvp():
    obj = FunctionObjective(rosenbrock, n=4)
    x = torch.tensor([-1.2, 1.0, 0.5, 0.3], dtype=torch.float64)
    f, g = obj.value_and_grad(x)
    H = torch.autograd.functional.hessian(rosenbrock, x)
    gx = torch.autograd.functional.jacobian(rosenbrock, x)
    assert torch.allclose(g, gx)
    v = torch.randn(4, dtype=torch.float64)
    _, _, hv = obj.linearize(x)
    assert torch.allclose(hv(v), H @ v)
    assert torch.allclose(hv(2 * v), 2 * H @ v)  # graph retained across products
    assert obj.counters.as_dict() == {"n_f": 2, "n_g": 2, "n_hvp": 2}
    assert float(obj.value(x)) == pytest.approx(float(f))


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)).double()
    X = torch.randn(7, 3, dtype=torch.float64)
    return m, X


def test_params_objective_both_closure_kinds_agree():
    m, X = _model()
    params = list(m.parameters())

    def loss_only():
        return (m(X) ** 2).mean()

    def with_backward():
        loss = (m(X) ** 2).mean()
        loss.backward()
        return loss

    o1, o2 = ParamsObjective(params, loss_only), ParamsObjective(params, with_backward)
    x = o1.current()
    f1, g1 = o1.value_and_grad(x)
    f2, g2 = o2.value_and_grad(x)
    assert torch.equal(g1, g2) and float(f1) == float(f2)
    # evaluation writes the point into the module
    o1.value(x + 1.0)
    assert torch.allclose(o1.current(), x + 1.0)


def test_hvp_needs_loss_only_closure():
    m, X = _model()

    def with_backward():
        loss = (m(X) ** 2).mean()
        loss.backward()
        return loss

    obj = ParamsObjective(list(m.parameters()), with_backward)
    with pytest.raises(ClosureError, match=r"WITHOUT calling loss\.backward"):
        obj.linearize(obj.current())


@pytest.mark.parametrize("ret, msg", [(1.0, "returned float"), (None, "returned NoneType"),
                                      (torch.ones(3), "shape")])
def test_bad_closure_returns(ret, msg):
    m, _ = _model()
    obj = ParamsObjective(list(m.parameters()), lambda: ret)
    with pytest.raises(ClosureError, match=msg):
        obj.value_and_grad(obj.current())


def test_detached_loss_is_an_error():
    m, X = _model()
    obj = ParamsObjective(list(m.parameters()), lambda: (m(X) ** 2).mean().detach())
    with pytest.raises(ClosureError, match="neither called backward"):
        obj.value_and_grad(obj.current())


def test_wrong_vector_shape():
    m, X = _model()
    obj = ParamsObjective(list(m.parameters()), lambda: (m(X) ** 2).mean())
    with pytest.raises(ValueError, match="expected"):
        obj.value(torch.zeros(3, dtype=torch.float64))


def test_params_objective_holds_tracks_in_place_changes():
    p = torch.nn.Parameter(torch.arange(4.0, dtype=torch.float64))
    obj = ParamsObjective([p], lambda: (p ** 2).sum())
    x = torch.ones(4, dtype=torch.float64)
    assert not obj.holds(x)
    obj.value(x)
    assert obj.holds(x)
    assert not obj.holds(x.clone())  # equal values, but not provably the written vector
    with torch.no_grad():
        p.add_(1.0)
    assert not obj.holds(x)
    obj.set(x)
    assert obj.holds(x)
    x.mul_(2.0)
    assert not obj.holds(x)


def test_evaluation_cache_drops_an_entry_modified_in_place():
    from mldd.solvers.base import EvaluationCache

    cache = EvaluationCache()
    x = torch.ones(3, dtype=torch.float64)
    g = torch.zeros(3, dtype=torch.float64)
    cache.put(x, 1.0, g)
    assert cache.get(x) == (1.0, g)
    assert cache.get(x.clone()) == (1.0, g)
    x.add_(1.0)
    assert cache.get(x) is None
    assert cache.get(torch.full((3,), 2.0, dtype=torch.float64)) is None
