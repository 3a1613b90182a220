"""Public optimizers: ``torch.optim.Optimizer`` subclasses over mldd's functional core."""

from mldd.optim.base import FlatOptimizer
from mldd.optim.lbfgs import LBFGS
from mldd.optim.trust_region import TrustRegion

__all__ = ["LBFGS", "FlatOptimizer", "TrustRegion"]
