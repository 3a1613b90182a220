"""Viscous Burgers equation [RPK19], the flagship PINN benchmark of [KKKK24].

``u_t + u u_x − ν u_xx = 0``, ``ν = 0.01/π``, ``x ∈ [−1, 1]``, ``t ∈ [0, 1]``,
``u(0, x) = −sin(πx)``, ``u(t, ±1) = 0``; a shock forms at ``x = 0`` (steepest slope
``|u_x| ≈ 152.005`` at ``t ≈ 0.5105`` [Bas86]).

Hard constraint: ``u = −sin(πx) + (1 + x)(1 − x) · t · N(x, t)``.
Reference: Cole–Hopf formula by Gauss–Hermite quadrature on the classic 256 × 100 grid
(:func:`mldd.problems.pinn.references.burgers_reference`), cached on disk.

References:
    [RPK19] M. Raissi, P. Perdikaris, G. E. Karniadakis, J. Comput. Phys. 378 (2019) 686–707.
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, SIAM J. Sci. Comput.
    2024, arXiv:2306.17648.
    [Bas86] C. Basdevant et al., Computers & Fluids 14 (1986) 23–41.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from mldd.problems.pinn.common import Array, GridPINN
from mldd.problems.pinn.jet_residuals import PointDerivatives
from mldd.problems.pinn.references import BURGERS_NU, burgers_reference
from mldd.problems.registry import register


@register("burgers")
class Burgers(GridPINN):
    """Burgers ``u_t + u u_x = (0.01/π) u_xx`` on [−1,1]×[0,1] (8 hidden layers × 20)."""

    name = "burgers"
    variables = ("x", "t")
    bounds = ((-1.0, 1.0), (0.0, 1.0))
    default_width = 20
    default_depth = 8
    nu: float = BURGERS_NU
    second_order: ClassVar[dict[str, tuple[float, ...]]] = {"u_xx": (1.0, 0.0)}

    @classmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        return burgers_reference

    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        """``u = −sin(πx) + (1 − x²) t N(x, t)``, shape ``(N,)``."""
        xs, t = x[:, 0:1], x[:, 1:2]
        u = -torch.sin(math.pi * xs) + (1.0 - xs * xs) * t * self._net(model, x)
        return u.reshape(-1)

    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """``u_t + u u_x − ν u_xx`` (shape ``(N,)``)."""
        u_x, u_t = d.grad[:, 0], d.grad[:, 1]
        return u_t + d.u * u_x - self.nu * d.second["u_xx"]

