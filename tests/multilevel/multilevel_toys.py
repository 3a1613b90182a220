"""Small deterministic multilevel problems shared by the RMTR / MG/OPT / MOFFO tests.

* :func:`laplace_problem` — a 1-D nonlinear "Poisson" energy ``½xᵀAx − bᵀx + α Σ x⁴`` on
  ``2^k·n0 + 2^k − 1`` unknowns, with linear-interpolation prolongations between levels and the
  Galerkin coarse objectives ``f_c = f∘P`` (so a coarse model is exact to first order and
  informative far from ``x_c0``). ``p_scale`` multiplies every ``P`` (``‖P‖ > 1`` makes the
  fine-trust-region bookkeeping non-trivial).
* :func:`regression_data`, :func:`resmlp` — a tiny regression set and residual networks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mldd.models import ResidualMLP
from mldd.multilevel.problem import MultilevelProblem
from mldd.multilevel.transfers import MatrixTransfer
from mldd.objective import FunctionObjective

DT = torch.float64


def laplacian(n: int) -> Tensor:
    """``(n+1)²·tridiag(−1, 2, −1)``."""
    A = 2 * torch.eye(n, dtype=DT) - torch.diag(torch.ones(n - 1, dtype=DT), 1) \
        - torch.diag(torch.ones(n - 1, dtype=DT), -1)
    return A * (n + 1) ** 2


def interpolation(nc: int) -> Tensor:
    """Linear interpolation from ``nc`` to ``2nc + 1`` interior grid points."""
    P = torch.zeros(2 * nc + 1, nc, dtype=DT)
    for j in range(nc):
        P[2 * j + 1, j] = 1.0
        P[2 * j, j] += 0.5
        P[2 * j + 2, j] += 0.5
    return P


def laplace_problem(levels: int = 3, n0: int = 7, alpha: float = 10.0,
                    p_scale: float = 1.0) -> tuple[Callable[[], MultilevelProblem], int]:
    """``(make, n_fine)``: ``make()`` returns a fresh problem (fresh counters) each call."""
    sizes = [n0]
    for _ in range(levels - 1):
        sizes.append(2 * sizes[-1] + 1)
    n = sizes[-1]
    A = laplacian(n)
    b = torch.ones(n, dtype=DT)

    def f(x: Tensor) -> Tensor:
        return 0.5 * x @ A @ x - b @ x + alpha * (x ** 4).sum()

    Ps = [p_scale * interpolation(sizes[i]) for i in range(levels - 1)]
    transfers = [MatrixTransfer(P, R=P.T.clone(), Pi=torch.linalg.pinv(P)) for P in Ps]
    # Galerkin coarse objectives: f_i = f ∘ P_{L-2} ∘ … ∘ P_i.
    maps: list[Tensor] = []
    M = torch.eye(n, dtype=DT)
    for P in reversed(Ps):
        M = M @ P
        maps.insert(0, M.clone())

    def make() -> MultilevelProblem:
        objs = [FunctionObjective(lambda y, M=M: f(M @ y), M.shape[1]) for M in maps]
        objs.append(FunctionObjective(f, n))
        return MultilevelProblem(objs, transfers)

    return make, n


def regression_data(n: int = 48, d: int = 3, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs and a smooth nonlinear target."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=DT)
    return X, torch.sin(X.sum(1, keepdim=True)) + 0.1 * X[:, :1] ** 2


def resmlp(depth: int = 5, width: int = 6, d_in: int = 3, d_out: int = 1,
           seed: int = 1, **kw: object) -> ResidualMLP:
    """A seeded float64 :class:`ResidualMLP`."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ResidualMLP(d_in, d_out, width=width, depth=depth, dtype=DT, **kw)  # type: ignore[arg-type]
