"""Every optimizer on every available device: CUDA runs match the CPU run, state stays put.

On a machine without CUDA only the CPU cases run (they still check that no state tensor lands
on another device and that each method trains). With CUDA, each method's iterates on the GPU
must equal its CPU iterates in float64 up to the rounding of reductions (GPU sums group terms
differently), and every tensor in its ``state_dict()`` must live on the GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import mldd.optim
import mldd.problems
from mldd.decomposition import Decomposition
from mldd.models import ResidualMLP
from mldd.models.jets import forward_jet, make_spec
from mldd.multilevel import nested_iteration
from mldd.multilevel.hierarchy import Hierarchy
from mldd.problems.pinn.prefix import pinn_local_objectives
from mldd.validation import as_device
from pinn_settings import COARSE

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DT = torch.float64
STEPS = 6

Closure = Callable[..., Tensor]


def _data(device: str, dtype: torch.dtype = DT) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    X = torch.rand(96, 2, generator=g, dtype=DT) * 2 - 1
    y = torch.sin(3 * X[:, :1]) * torch.cos(2 * X[:, 1:])
    return X.to(device, dtype), y.to(device, dtype)


def _net(device: str, dtype: torch.dtype = DT) -> nn.Module:
    torch.manual_seed(0)
    return ResidualMLP(2, 1, width=12, depth=5).to(device=device, dtype=dtype)


def _mse(model: nn.Module, X: Tensor, y: Tensor) -> Tensor:
    return ((model(X) - y) ** 2).mean()


def _plain(opt: torch.optim.Optimizer, model: nn.Module, X: Tensor, y: Tensor) -> Closure:
    """A torch-style closure (zero_grad, loss, backward)."""

    def closure() -> Tensor:
        opt.zero_grad()
        loss = _mse(model, X, y)
        loss.backward()
        return loss

    return closure


def _no_backward(model: nn.Module, X: Tensor, y: Tensor) -> Closure:
    return lambda: _mse(model, X, y)


def _per_model(X: Tensor, y: Tensor) -> Closure:
    return lambda m: _mse(m, X, y)


def _per_rows(X: Tensor, y: Tensor) -> Closure:
    def closure(m: nn.Module, rows: Tensor | None = None) -> Tensor:
        if rows is None:
            return _mse(m, X, y)
        rows = rows.to(X.device)
        return _mse(m, X[rows], y[rows])

    return closure


# name -> (build(model) -> optimizer, closure kind)
Builder = Callable[[nn.Module], torch.optim.Optimizer]
CASES: dict[str, tuple[Builder, str]] = {
    "lbfgs": (lambda m: mldd.optim.LBFGS(m.parameters(), memory=5), "plain"),
    "tr-lsr1-obs": (lambda m: mldd.optim.TrustRegion(m.parameters()), "plain"),
    "tr-lbfgs-cg": (lambda m: mldd.optim.TrustRegion(m.parameters(), hessian="lbfgs"), "plain"),
    "tr-linf": (lambda m: mldd.optim.TrustRegion(m.parameters(), norm="linf", radius=0.1),
                "plain"),
    "tr-exact-cg": (lambda m: mldd.optim.TrustRegion(m.parameters(), hessian="exact"),
                    "no_backward"),
    "rmtr-depth": (lambda m: mldd.optim.RMTR(m.parameters(), model=m, levels=3,
                                             coarsen="depth"), "model"),
    "rmtr-width-hybrid": (lambda m: mldd.optim.RMTR(m.parameters(), model=m, levels=2,
                                                    coarsen="width", coarse_model="hybrid"),
                          "model"),
    "rmtr-data-grow": (lambda m: mldd.optim.RMTR(
        m.parameters(), model=m, levels=2, coarsen="data", n_rows=96, row_growth=True,
        hierarchy_options={"data_ratio": 0.25}), "rows"),
    "mgopt": (lambda m: mldd.optim.MGOpt(m.parameters(), model=m, levels=2, coarsen="depth"),
              "model"),
    "moffo": (lambda m: mldd.optim.MOFFO(m.parameters(), model=m, levels=2, coarsen="depth"),
              "model"),
    "aspqn": (lambda m: mldd.optim.ASPQN(m.parameters(), model=m), "plain"),
    "mspqn-two-level": (lambda m: mldd.optim.MSPQN(m.parameters(), model=m, two_level=True),
                        "plain"),
    "apts-layers": (lambda m: mldd.optim.APTS(m.parameters(), model=m, decomposition="layers"),
                    "plain"),
    "apts-data": (lambda m: mldd.optim.APTS(m.parameters(), model=m, decomposition="data",
                                            n_shards=2, n_rows=96), "rows"),
}


def _closure(kind: str, opt: torch.optim.Optimizer, model: nn.Module, X: Tensor,
             y: Tensor) -> Closure:
    if kind == "plain":
        return _plain(opt, model, X, y)
    if kind == "no_backward":
        return _no_backward(model, X, y)
    if kind == "model":
        return _per_model(X, y)
    return _per_rows(X, y)


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).cpu()


def _tensors(obj: Any) -> list[Tensor]:
    """Every tensor inside a nested state_dict."""
    if isinstance(obj, Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, list | tuple):
        return [t for v in obj for t in _tensors(v)]
    return []


def _train(name: str, device: str, dtype: torch.dtype = DT, steps: int = STEPS,
           model: nn.Module | None = None, state: dict[str, Any] | None = None,
           ) -> tuple[list[Tensor], list[float], torch.optim.Optimizer]:
    """``steps`` steps of method ``name``: the iterates, the losses, the optimizer. With
    ``model`` and ``state`` it continues from a checkpoint instead of a fresh start."""
    build, kind = CASES[name]
    X, y = _data(device, dtype)
    model = _net(device, dtype) if model is None else model
    opt = build(model)
    if state is not None:
        opt.load_state_dict(state)
    closure = _closure(kind, opt, model, X, y)
    iterates, losses = [], []
    for _ in range(steps):
        losses.append(float(opt.step(closure)))
        iterates.append(_flat(model))
    with torch.no_grad():
        losses.append(float(_mse(model, X, y)))
    return iterates, losses, opt


def _vector_state(opt: torch.optim.Optimizer, n: int) -> list[Tensor]:
    """The state tensors that must be on the device: those with a parameter-sized dimension
    (iterates, gradients, quasi-Newton pairs). Small bookkeeping, such as the ``k × k`` float64
    Gram matrices of a memory, is kept on the CPU on purpose."""
    return [t for t in _tensors(opt.state_dict()["state"]) if n in t.shape]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_trains_and_keeps_vectors_on_the_device(name: str, device: str,
                                                dtype: torch.dtype) -> None:
    _, losses, opt = _train(name, device, dtype)
    assert losses[-1] < 0.9 * losses[0], f"{name} on {device} did not train: {losses}"
    n = sum(p.numel() for p in _net("cpu").parameters())
    big = _vector_state(opt, n)
    # the exact-Hessian trust region keeps no vectors between steps (no memory to save)
    assert big or name == "tr-exact-cg", f"{name}: no parameter-sized tensors in the state_dict"
    wrong = {f"{t.device} {t.dtype}" for t in big
             if t.device.type != device or (t.is_floating_point() and t.dtype != dtype)}
    assert not wrong, f"{name}: parameter-sized state on {wrong}, not {device} {dtype}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["tr-lsr1-obs", "rmtr-data-grow", "mspqn-two-level",
                                  "apts-data", "moffo"])
def test_checkpoint_resumes_on_the_device(name: str, device: str) -> None:
    """state_dict after 3 steps, into a fresh optimizer on the same device: the next 3 steps
    equal those of the uninterrupted run (up to rounding: some GPU kernels, e.g. the backward
    of row indexing, sum in a varying order)."""
    full, _, _ = _train(name, device, steps=6)
    first, _, opt = _train(name, device, steps=3)
    model = _net(device)
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(first[-1].to(device), model.parameters())
    rest, _, _ = _train(name, device, steps=3, model=model, state=opt.state_dict())
    tol = 0.0 if device == "cpu" else 1e-9
    for k, (a, b) in enumerate(zip(full[3:], rest, strict=True)):
        err = float((a - b).norm() / a.norm())
        assert err <= tol, f"{name}: resumed iterate {k} differs by {err:.2e} on {device}"


#: Methods whose iterates amplify rounding: a relative perturbation of 1e-15 of the initial
#: weights moves the CPU iterates by 1e-9 to 1e-4 within these 6 steps (local line searches on
#: short secant pairs, ratio tests near their thresholds). GPU reductions round differently,
#: so for these only the first step is compared.
CHAOTIC = {"rmtr-depth", "rmtr-data-grow", "aspqn", "mspqn-two-level"}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(CASES))
def test_cuda_iterates_equal_cpu_iterates(name: str) -> None:
    cpu, cpu_losses, _ = _train(name, "cpu")
    gpu, gpu_losses, _ = _train(name, "cuda")
    steps, tol = (1, 1e-7) if name in CHAOTIC else (STEPS, 1e-8)
    for k, (a, b) in enumerate(zip(cpu[:steps], gpu[:steps], strict=True)):
        err = float((a - b).norm() / a.norm())
        assert err < tol, f"{name}: iterate {k} differs by {err:.2e} (relative) on CUDA"
    if name not in CHAOTIC:
        assert gpu_losses == pytest.approx(cpu_losses, rel=1e-8)


@pytest.mark.parametrize("device", DEVICES)
def test_nested_iteration_and_jets_on_the_device(device: str) -> None:
    X, y = _data(device)
    model = _net(device)
    h = Hierarchy.build(model, levels=2, coarsen="depth")
    res = nested_iteration(h, _per_model(X, y),
                           lambda p: mldd.optim.TrustRegion(p), iterations=[5, 3])
    assert res.x.device.type == device
    jet = forward_jet(model, X, make_spec(2, [[1.0, 1.0]]))
    assert jet.value.device.type == device
    x = X.clone().requires_grad_(True)
    u = model(x)
    (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(du[:, i].sum(), x, retain_graph=True)[0][:, i]
              for i in range(2))
    assert torch.allclose(jet.value, u) and torch.allclose(jet.first[:, :, 0].T, du)
    assert torch.allclose(jet.second[0, :, 0], lap, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_decomposition_restricts_and_combines_on_the_device(device: str) -> None:
    model = _net(device)
    dec = Decomposition.by_layers(model, blocks=3, overlap=1)
    v = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    parts = [dec.restrict(s, v) for s in range(len(dec))]
    assert all(p.device.type == device for p in parts)
    # multiplicity weights form a partition of unity, so combining the restrictions gives v back
    out = dec.combine(parts)
    assert out.device.type == device and torch.allclose(out, v)


# ------------------------------------------------------------------------------ problems



def _pinn(name: str, device: str, **kw: Any) -> Any:
    return mldd.problems.get(name, n_collocation=200, width=8, depth=3, device=device,
                             reference_options=COARSE[name], use_cache=False, **kw)


def _loss_grad_metric(problem: Any, model: nn.Module) -> tuple[float, Tensor, float]:
    loss = problem.loss(model)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    flat = torch.cat([g.reshape(-1) for g in grads]).cpu()
    return float(loss.detach()), flat, problem.metric(model)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(COARSE))
@pytest.mark.parametrize("derivatives", ["jet", "autograd"])
def test_pinn_problem_lives_on_the_device(name: str, device: str, derivatives: str) -> None:
    p = _pinn(name, device, derivatives=derivatives)
    model = p.build_model(seed=0)
    assert p.collocation.device.type == device
    assert all(t.device.type == device for t in model.parameters())
    assert all(t.device.type == device for t in p.reference())
    assert p.describe()["device"].startswith(device)
    loss, grad, metric = _loss_grad_metric(p, model)
    ref = _pinn(name, "cpu", derivatives=derivatives)
    loss0, grad0, metric0 = _loss_grad_metric(ref, ref.build_model(seed=0))
    # same points and same weights on every device: equal up to the rounding of reductions
    assert loss == pytest.approx(loss0, rel=1e-10)
    assert torch.allclose(grad, grad0, rtol=1e-8, atol=1e-12)
    assert metric == pytest.approx(metric0, rel=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_pinn_layer_block_solves_on_the_device(device: str) -> None:
    p = _pinn("burgers", device)
    model = p.build_model(seed=0)
    opt = mldd.optim.MSPQN(model.parameters(), model=model,
                           local_objective=pinn_local_objectives(p, model))
    first = float(opt.step(lambda: p.loss(model)))
    for _ in range(3):
        opt.step(lambda: p.loss(model))
    assert float(p.loss(model).detach()) < 0.5 * first
    assert all(t.device.type == device for t in model.parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_digits_on_the_device_with_rmtr_on_data_levels(device: str) -> None:
    p = mldd.problems.get("digits", device=device, dtype="float64")
    model = p.build_model(seed=0)
    X, _ = p.full_batch()
    assert X.device.type == device
    opt = mldd.optim.RMTR(model.parameters(), model=model, levels=2, coarsen="data",
                          n_rows=p.n_rows())
    first = float(opt.step(lambda m, rows: p.loss(m, p.select_rows(None, rows))))
    for _ in range(4):
        opt.step(lambda m, rows: p.loss(m, p.select_rows(None, rows)))
    assert float(p.loss(model).detach()) < 0.7 * first


def test_device_option_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match=r"'cpu', 'cuda'.*got 'gpu'"):
        as_device("gpu")
    with pytest.raises(ValueError, match="got 3"):
        as_device(3)
    with pytest.raises(ValueError, match="got 'gpu'"):
        _pinn("burgers", "gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            _pinn("burgers", "cuda")
        with pytest.raises(ValueError, match="needs CUDA"):
            mldd.problems.get("digits", device="cuda")
    else:
        count = torch.cuda.device_count()
        with pytest.raises(ValueError, match=f"{count} CUDA device"):
            as_device(f"cuda:{count}")
