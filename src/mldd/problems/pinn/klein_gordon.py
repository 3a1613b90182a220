"""Nonlinear Klein–Gordon equation with a manufactured solution [KKKK24].

``u_tt − u_xx + u² = −x cos t + x² cos² t``, ``x ∈ [−1, 1]``, ``t ∈ [0, 12]``, exact solution
``u = x cos t`` (initial data ``u(0, x) = x``, ``u_t(0, x) = 0``; boundary data
``u(t, ±1) = ±cos t``).

Constraints. Only the initial conditions are built into the ansatz,
``u = x + t² N(x, t)`` (this gives ``u(0, x) = x`` and ``u_t(0, x) = 0`` exactly). The boundary
conditions are enforced by a penalty on boundary points ``(±1, t_k)``:

``loss = mean(residual²) + boundary_weight · mean((u(±1, t_k) ∓ cos t_k)²)``.

Why not hard-constrain the boundary too: the natural interpolant of the boundary data,
``((1 − x)/2)·u(t, −1) + ((1 + x)/2)·u(t, 1) = x cos t``, *is* the exact solution, so such an
ansatz would hand the answer to the network and make the benchmark meaningless.

Reference: the exact solution on a 256 × 100 grid.

References:
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, SIAM J. Sci. Comput.
    2024, arXiv:2306.17648.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mldd.problems.pinn.common import Array, GridPINN, _positive_int
from mldd.problems.pinn.jet_residuals import PointDerivatives
from mldd.problems.pinn.references import klein_gordon_reference
from mldd.problems.registry import register
from mldd.problems.samplers import sample


@register("klein-gordon")
class KleinGordon(GridPINN):
    """Klein–Gordon ``u_tt − u_xx + u² = f`` on [−1,1]×[0,12], exact ``x cos t`` (6 × 50).

    Args (besides those of :class:`~mldd.problems.pinn.common.GridPINN`):
        n_boundary: boundary points per side ``x = ±1`` (times from the same sampler).
        boundary_weight: weight of the boundary penalty in :meth:`loss` (> 0).
    """

    name = "klein-gordon"
    variables = ("x", "t")
    bounds = ((-1.0, 1.0), (0.0, 12.0))
    default_width = 50
    default_depth = 6
    reference_cached = False
    #: ``u_tt − u_xx`` as one operator (one jet channel instead of two).
    second_order: ClassVar[dict[str, tuple[float, ...]]] = {"wave": (-1.0, 1.0)}

    def __init__(
        self, *, n_boundary: int = 200, boundary_weight: float = 1.0, **options: Any
    ) -> None:
        super().__init__(**options)
        self.n_boundary = _positive_int("n_boundary", n_boundary)
        if not float(boundary_weight) > 0:
            raise ValueError(f"boundary_weight must be positive, got {boundary_weight!r}")
        self.boundary_weight = float(boundary_weight)
        t = sample(self.sampler, self.n_boundary, [self.bounds[1]], seed=self.seed + 1,
                   dtype=self.dtype)
        ones = torch.ones_like(t)
        #: ``(2 n_boundary, 2)`` points on ``x = −1`` then ``x = +1``.
        self.boundary = torch.cat([torch.cat([-ones, t], 1), torch.cat([ones, t], 1)],
                                  0).to(self.device)
        #: the boundary data ``±cos t`` at :attr:`boundary`.
        self.boundary_values = self.boundary[:, 0] * torch.cos(self.boundary[:, 1])

    @classmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        return klein_gordon_reference

    @staticmethod
    def source(x: Tensor, t: Tensor) -> Tensor:
        """Right-hand side ``−x cos t + x² cos² t``."""
        c = torch.cos(t)
        return -x * c + (x * c) ** 2

    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        """``u = x + t² N(x, t)``, shape ``(N,)``."""
        xs, t = x[:, 0:1], x[:, 1:2]
        return (xs + t * t * self._net(model, x)).reshape(-1)

    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """``u_tt − u_xx + u² − f`` (shape ``(N,)``)."""
        return d.second["wave"] + d.u * d.u - self.source(x[:, 0], x[:, 1])

    def boundary_loss(self, model: nn.Module) -> Tensor:
        """Mean squared boundary mismatch ``mean((u(±1, t) ∓ cos t)²)``."""
        d = self.transform(model, self.boundary) - self.boundary_values
        return (d * d).mean()

    def loss(self, model: nn.Module, batch: Tensor | None = None) -> Tensor:
        """Mean squared residual on ``batch`` (default: all collocation points) plus
        ``boundary_weight`` × :meth:`boundary_loss` (always on all boundary points)."""
        return super().loss(model, batch) + self.boundary_weight * self.boundary_loss(model)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.update(n_boundary=self.n_boundary, boundary_weight=self.boundary_weight)
        return out
