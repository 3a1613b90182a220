"""PINN benchmark problems with hard-constrained initial/boundary conditions.

Importing this package registers ``"burgers"``, ``"klein-gordon"``, ``"allen-cahn"``,
``"diffusion-advection"`` and ``"poisson2d"`` in :mod:`mldd.problems.registry`. The reference
solvers live in :mod:`mldd.problems.pinn.references`.
"""

from mldd.problems.pinn.allen_cahn import AllenCahn
from mldd.problems.pinn.burgers import Burgers
from mldd.problems.pinn.common import GridPINN
from mldd.problems.pinn.diffusion_advection import DiffusionAdvection
from mldd.problems.pinn.klein_gordon import KleinGordon
from mldd.problems.pinn.poisson import Poisson2D

__all__ = [
    "AllenCahn",
    "Burgers",
    "DiffusionAdvection",
    "GridPINN",
    "KleinGordon",
    "Poisson2D",
]
