"""mldd: multilevel and domain-decomposition trust-region training of neural networks.

``import mldd`` gives the public subpackages :mod:`mldd.optim`, :mod:`mldd.problems`,
:mod:`mldd.models` and :mod:`mldd.objective`; the trainer and CLI live in :mod:`mldd.train`
(imported on demand because it pulls in plotting).
"""

from mldd import models, objective, optim, problems

__version__ = "0.1.0"

__all__ = ["__version__", "models", "objective", "optim", "problems"]
