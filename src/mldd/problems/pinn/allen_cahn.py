"""Allen–Cahn reaction–diffusion equation [RPK19, KKKK24].

``u_t − 0.001 u_xx − 5(u − u³) = 0``, ``x ∈ [−1, 1]``, ``t ∈ [0, 1]``,
``u(0, x) = x² cos(πx)``, ``u(t, ±1) = −1``; sharp interfaces (width ≈ 0.02) form.

Hard constraint: ``u = x² cos(πx) + (1 + x)(1 − x) · t · N(x, t)`` (valid because the initial
datum equals −1 at ``x = ±1``).
Reference: Chebyshev collocation (degree 512) + Radau IIA, on a 512 × 201 grid
(:func:`mldd.problems.pinn.references.allen_cahn_reference`), cached on disk.

References:
    [RPK19] M. Raissi, P. Perdikaris, G. E. Karniadakis, J. Comput. Phys. 378 (2019) 686–707.
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, SIAM J. Sci. Comput.
    2024, arXiv:2306.17648.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor, nn

from mldd.problems.pinn.common import Array, GridPINN
from mldd.problems.pinn.jet_residuals import PointDerivatives
from mldd.problems.pinn.references import allen_cahn_reference
from mldd.problems.registry import register


@register("allen-cahn")
class AllenCahn(GridPINN):
    """Allen–Cahn ``u_t = 0.001 u_xx + 5(u − u³)`` on [−1,1]×[0,1] (6 hidden layers × 64)."""

    name = "allen-cahn"
    variables = ("x", "t")
    bounds = ((-1.0, 1.0), (0.0, 1.0))
    default_width = 64
    default_depth = 6
    diffusion: float = 1e-3
    reaction: float = 5.0
    second_order: ClassVar[dict[str, tuple[float, ...]]] = {"u_xx": (1.0, 0.0)}

    @classmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        return allen_cahn_reference

    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        """``u = x² cos(πx) + (1 − x²) t N(x, t)``, shape ``(N,)``."""
        xs, t = x[:, 0:1], x[:, 1:2]
        x2 = xs * xs
        u = x2 * torch.cos(math.pi * xs) + (1.0 - x2) * t * self._net(model, x)
        return u.reshape(-1)

    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """``u_t − 0.001 u_xx − 5(u − u³)`` (shape ``(N,)``)."""
        u = d.u
        return d.grad[:, 1] - self.diffusion * d.second["u_xx"] - self.reaction * (u - u * u * u)
