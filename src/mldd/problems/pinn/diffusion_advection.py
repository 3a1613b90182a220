"""Stationary diffusion–advection with boundary layers [KKKK24].

``−∇·(ε∇u) + b·∇u = 1`` on ``(0, 1)²`` with ``ε = 0.01``, ``b = (1, 1)``, ``u = 0`` on the
boundary. Away from the walls ``u ≈ min(x, y)``; exponential boundary layers of width ``O(ε)``
form at the outflow walls ``x = 1`` and ``y = 1`` and a parabolic layer of width ``O(√ε)``
along the diagonal — the reason L-BFGS stagnates on this problem in [KKKK24].

Hard constraint: ``u = x(1 − x) y(1 − y) · N(x, y)`` (the product of the distances to the four
walls, zero on the whole boundary).
Reference: Chebyshev collocation of degree 256 per direction solved as a Sylvester equation,
interpolated to a 101 × 101 grid
(:func:`mldd.problems.pinn.references.diffusion_advection_reference`), cached on disk.

References:
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, SIAM J. Sci. Comput.
    2024, arXiv:2306.17648.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from mldd.problems.pinn.common import Array, UnitSquareDirichletPINN
from mldd.problems.pinn.jet_residuals import PointDerivatives
from mldd.problems.pinn.references import diffusion_advection_reference
from mldd.problems.registry import register


@register("diffusion-advection")
class DiffusionAdvection(UnitSquareDirichletPINN):
    """Diffusion–advection ``−0.01 Δu + (1,1)·∇u = 1`` on (0,1)², ``u = 0`` on ∂ (10 × 50)."""

    name = "diffusion-advection"
    variables = ("x", "y")
    bounds = ((0.0, 1.0), (0.0, 1.0))
    default_width = 50
    default_depth = 10
    diffusion: float = 0.01
    velocity: tuple[float, float] = (1.0, 1.0)
    source: float = 1.0

    @classmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        return diffusion_advection_reference

    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """``−ε(u_xx + u_yy) + b·∇u − 1`` (shape ``(N,)``)."""
        bx, by = self.velocity
        g = d.grad
        return -self.diffusion * d.second["laplacian"] + bx * g[:, 0] + by * g[:, 1] - self.source
