"""Small float64 convergence tests of the single-level methods (docs/algorithms.md §1)."""

import pytest
import torch

import mldd.optim
from mldd.objective import FunctionObjective
from mldd.problems.functions import rosenbrock, rosenbrock_start, rotated_quadratic
from mldd.solvers import LBFGSConfig, LBFGSSolver, TrustRegionConfig, TrustRegionSolver

SOLVERS = {
    "lbfgs": lambda: LBFGSSolver(LBFGSConfig(memory=10, tolerance_change=1e-15)),
    "tr-lsr1-obs": lambda: TrustRegionSolver(TrustRegionConfig(hessian="lsr1", memory=5)),
    "tr-lsr1-cg": lambda: TrustRegionSolver(TrustRegionConfig(hessian="lsr1", subproblem="cg")),
    "tr-lbfgs-cg": lambda: TrustRegionSolver(TrustRegionConfig(hessian="lbfgs", memory=10)),
    "tr-exact-cg": lambda: TrustRegionSolver(TrustRegionConfig(hessian="exact", cg_rtol=1e-3)),
    "tr-lsr1-linf": lambda: TrustRegionSolver(TrustRegionConfig(hessian="lsr1", norm="linf")),
}


def _run(solver, obj, x, max_iter, gtol):
    for _ in range(max_iter):
        res = solver.iterate(obj, x)
        x = res.x
        if res.info["grad_norm"] < gtol or res.info["stop_reason"]:
            break
    return x


@pytest.mark.parametrize("name", list(SOLVERS))
@pytest.mark.parametrize("n", [2, 100])
def test_rosenbrock(name, n):
    obj = FunctionObjective(rosenbrock, n)
    x = _run(SOLVERS[name](), obj, rosenbrock_start(n), max_iter=3000, gtol=1e-8)
    err = float((x - 1).abs().max())
    assert err < 1e-5, err


# L-SR1 with a small memory is indefinite on ill-conditioned quadratics and needs many more
# iterations than L-BFGS there (measured: κ=1e5, n=50, 3000 iterations → 14% error with OBS);
# each method is tested up to the conditioning it handles within the budget.
MAX_CONDITION = {"tr-lsr1-obs": 1e4, "tr-lsr1-cg": 1e3, "tr-lsr1-linf": 1e3}
CASES = [(n, c) for n in SOLVERS for c in (1e2, 1e4, 1e5) if c <= MAX_CONDITION.get(n, 1e5)]


@pytest.mark.parametrize("name, condition", CASES)
def test_ill_conditioned_quadratic(name, condition):
    n = 50
    A, b = rotated_quadratic(n, condition, seed=3)
    obj = FunctionObjective(lambda x: 0.5 * x @ A @ x - b @ x, n)
    x_star = torch.linalg.solve(A, b)
    x = _run(SOLVERS[name](), obj, torch.zeros(n, dtype=torch.float64), max_iter=3000, gtol=1e-10)
    rel = float(torch.linalg.vector_norm(x - x_star) / torch.linalg.vector_norm(x_star))
    assert rel < 1e-4, rel


# Reduction of the loss reached within 300 iterations (measured: L-BFGS 2e-3, TR+L-SR1 2.5e-2 —
# L-SR1 with memory 5 accepts about 2/3 of its steps here; TR+L-BFGS 2.8e-3 to 1.2e-2 over data
# seeds 0–5, and at seed 0 anywhere in that range as the last bits of the Gram products change:
# the trajectory is chaotic, so its bound covers the seeds' spread).
@pytest.mark.parametrize("make, reduction", [
    (lambda p: mldd.optim.LBFGS(p, memory=10), 5e-3),
    (lambda p: mldd.optim.TrustRegion(p), 5e-2),
    (lambda p: mldd.optim.TrustRegion(p, hessian="lbfgs", memory=10), 1.5e-2),
], ids=["lbfgs", "tr-lsr1", "tr-lbfgs"])
def test_least_squares_mlp(make, reduction):
    g = torch.Generator().manual_seed(0)
    X = torch.rand(200, 2, generator=g, dtype=torch.float64) * 2 - 1
    y = torch.sin(torch.pi * X[:, :1]) * X[:, 1:] ** 2
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 20), torch.nn.Tanh(),
                                torch.nn.Linear(20, 20), torch.nn.Tanh(),
                                torch.nn.Linear(20, 1)).double()
    opt = make(model.parameters())

    def closure():
        opt.zero_grad()
        loss = ((model(X) - y) ** 2).mean()
        loss.backward()
        return loss

    l0 = float(closure().detach())
    for _ in range(300):
        opt.step(closure)
        if opt.converged:
            break
    assert opt.last_info["loss"] < reduction * l0, opt.last_info
