"""Networks with explicit depth/width knobs that multilevel transfers and decompositions read."""

from mldd.models.mlp import MLP, activation

__all__ = ["MLP", "activation"]
