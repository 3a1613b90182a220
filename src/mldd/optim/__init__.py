"""Public optimizers: ``torch.optim.Optimizer`` subclasses over mldd's functional core.

Single level: :class:`TrustRegion`, :class:`LBFGS`. Domain decomposition: :class:`ASPQN`,
:class:`MSPQN` (Schwarz-preconditioned L-BFGS), :class:`APTS` (additively preconditioned trust
region). Multilevel: :class:`RMTR`, :class:`MGOpt`, :class:`MOFFO`.
"""

from mldd.optim.apts import APTS
from mldd.optim.base import FlatOptimizer
from mldd.optim.lbfgs import LBFGS
from mldd.optim.mgopt import MGOpt
from mldd.optim.moffo import MOFFO
from mldd.optim.multilevel import MultilevelOptimizer
from mldd.optim.rmtr import RMTR
from mldd.optim.schwarz import ASPQN, MSPQN
from mldd.optim.trust_region import TrustRegion

__all__ = [
    "APTS",
    "ASPQN",
    "LBFGS",
    "MOFFO",
    "MSPQN",
    "RMTR",
    "FlatOptimizer",
    "MGOpt",
    "MultilevelOptimizer",
    "TrustRegion",
]
