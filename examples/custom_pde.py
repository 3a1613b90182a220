"""A PDE of your own, trained with mldd: the heat equation as a PINN problem.

    u_t = κ u_xx  on  x ∈ (0, 1), t ∈ (0, 1],   u(0, x) = sin(πx),   u(t, 0) = u(t, 1) = 0,

with the exact solution ``u = exp(−κ π² t) sin(πx)``. The problem is a subclass of
``mldd.problems.base.PINNProblem`` with four methods — the network, the hard-constrained
ansatz, the residual (``torch.autograd.grad(create_graph=True)``) and the reference — and is
registered under a name, so the trainer, ``mldd.train.Trainer`` and every method of the package
can use it. The script trains it with torch's L-BFGS and with mldd's MSPQN (one subdomain per
layer) for the same wall-clock budget and prints both errors. Run::

    python examples/custom_pde.py --budget 20

or use the registered problem from the command line, with any method::

    mldd train --import examples/custom_pde.py --problem heat1d --method trust-region
"""

from __future__ import annotations

import argparse
import math

import torch
from torch import Tensor, nn

import mldd
from mldd.problems.base import PINNProblem
from mldd.problems.registry import register
from mldd.problems.samplers import sample
from mldd.train import Trainer
from mldd.train.methods import build_optimizer


@register("heat1d", "heat equation u_t = κ u_xx with an exact solution (example)")
class Heat1D(PINNProblem):
    """Heat equation on (0,1)×(0,1] with ``u = exp(−κπ²t) sin(πx)``."""

    name = "heat1d"

    def __init__(self, *, kappa: float = 0.1, n_collocation: int = 2000, width: int = 20,
                 depth: int = 4, dtype: torch.dtype = torch.float64) -> None:
        if not kappa > 0:
            raise ValueError(f"kappa must be positive, got {kappa!r}")
        self.kappa, self.width, self.depth, self.dtype = float(kappa), width, depth, dtype
        # Hammersley points in (x, t) ∈ [0,1]² (the package's default sampler).
        self.collocation = sample("hammersley", n_collocation, [(0.0, 1.0), (0.0, 1.0)],
                                  seed=0, dtype=dtype)
        g = torch.linspace(0.0, 1.0, 101, dtype=dtype)
        xx, tt = torch.meshgrid(g, g, indexing="ij")
        self._ref_pts = torch.stack([xx.reshape(-1), tt.reshape(-1)], 1)
        self._ref = self.exact(self._ref_pts)

    def exact(self, p: Tensor) -> Tensor:
        return torch.exp(-self.kappa * math.pi**2 * p[:, 1]) * torch.sin(math.pi * p[:, 0])

    def build_model(self, seed: int | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        # mldd's MLP (tanh) exposes `.layers`, which the layer decompositions of ASPQN/MSPQN read.
        return mldd.models.MLP(2, 1, width=self.width, depth=self.depth, dtype=self.dtype)

    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        # u = sin(πx) + t·x(1−x)·N(x, t): initial and boundary conditions hold exactly.
        xs, t = x[:, 0:1], x[:, 1:2]
        return (torch.sin(math.pi * xs) + t * xs * (1 - xs) * model(x)).reshape(-1)

    def residual(self, model: nn.Module, x: Tensor) -> Tensor:
        x = x.detach().requires_grad_(True)
        u = self.transform(model, x)
        (du,) = torch.autograd.grad(u.sum(), x, create_graph=True)
        (d2u,) = torch.autograd.grad(du[:, 0].sum(), x, create_graph=True)
        return du[:, 1] - self.kappa * d2u[:, 0]

    def reference(self) -> tuple[Tensor, Tensor]:
        return self._ref_pts, self._ref


def train(method: str, options: dict, budget_s: float) -> float:
    problem = mldd.problems.get("heat1d")
    model = problem.build_model(seed=0)
    opt = build_optimizer(method, model.parameters(), problem, options,
                          {"budget_s": budget_s, "model": model})
    result = Trainer(problem, model, opt, budget_s=budget_s, log_every=budget_s / 5).run()
    print(f"{method:12s} {result.iterations:5d} iterations, {result.grad_evals:8.1f} gradient "
          f"evaluations, relative L2 error {result.final_metric:.2e}")
    return result.final_metric


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per method")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"heat1d: {args.budget:g} s per method, 1 thread, float64")
    train("torch-lbfgs", {"history": 50}, args.budget)
    train("mspqn", {}, args.budget)


if __name__ == "__main__":
    main()
