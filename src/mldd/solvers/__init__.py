"""The functional core of the single-level methods.

One iteration on an :class:`~mldd.objective.Objective`.

Each solver holds its configuration and algorithm state and advances a flat iterate ``x`` by one
iteration with ``iterate(objective, x)``. The public optimizers in :mod:`mldd.optim` are thin
``torch.optim.Optimizer`` shells over these; the multilevel and Schwarz methods reuse them on
coarse levels and subdomains.
"""

from mldd.solvers.base import IterationResult
from mldd.solvers.lbfgs import LBFGSConfig, LBFGSSolver
from mldd.solvers.trust_region import TrustRegionConfig, TrustRegionSolver

__all__ = [
    "IterationResult",
    "LBFGSConfig",
    "LBFGSSolver",
    "TrustRegionConfig",
    "TrustRegionSolver",
]
