"""Poisson equation with a manufactured two-scale solution.

``−Δu = f`` on ``(0, 1)²``, ``u = 0`` on the boundary, with the exact solution

``u = sin(πx) sin(πy) + ¼ sin(4πx) sin(2πy)``,
``f = 2π² sin(πx) sin(πy) + 5π² sin(4πx) sin(2πy)``.

The second, anisotropic, higher-frequency mode makes the problem less trivial than the
single-mode textbook case (spectral bias slows its capture) while keeping an exact reference.

Hard constraint: ``u = x(1 − x) y(1 − y) · N(x, y)``.
Reference: the exact solution on a 101 × 101 grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from mldd.problems.pinn.common import Array, UnitSquareDirichletPINN
from mldd.problems.pinn.jet_residuals import PointDerivatives
from mldd.problems.pinn.references import poisson_reference
from mldd.problems.registry import register


@register("poisson2d")
class Poisson2D(UnitSquareDirichletPINN):
    """Poisson ``−Δu = f`` on (0,1)², manufactured two-mode solution (4 hidden layers × 32)."""

    name = "poisson2d"
    variables = ("x", "y")
    bounds = ((0.0, 1.0), (0.0, 1.0))
    default_width = 32
    default_depth = 4
    reference_cached = False

    @classmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        return poisson_reference

    @staticmethod
    def source(x: Tensor, y: Tensor) -> Tensor:
        """``f = 2π² sin(πx) sin(πy) + 5π² sin(4πx) sin(2πy)``."""
        pi = math.pi
        return 2 * pi**2 * torch.sin(pi * x) * torch.sin(pi * y) + 5 * pi**2 * torch.sin(
            4 * pi * x
        ) * torch.sin(2 * pi * y)

    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """``−(u_xx + u_yy) − f`` (shape ``(N,)``)."""
        return -d.second["laplacian"] - self.source(x[:, 0], x[:, 1])
