"""Training problems: PINNs with reference solutions, image classification, test functions."""

from mldd.problems.base import ClassificationProblem, PINNProblem, Problem
from mldd.problems.registry import available, describe_all, get, register

__all__ = [
    "ClassificationProblem",
    "PINNProblem",
    "Problem",
    "available",
    "describe_all",
    "get",
    "register",
]

# Importing a family's subpackage registers its problems with the registry.
from mldd.problems import images, pinn  # noqa: F401
