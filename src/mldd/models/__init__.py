"""Networks with explicit depth/width knobs that multilevel transfers and decompositions read."""

from mldd.models.cnn import SmallCNN
from mldd.models.mlp import MLP, activation
from mldd.models.residual_mlp import ResidualMLP, default_step
from mldd.models.resnet import ConvResNet

__all__ = ["MLP", "ConvResNet", "ResidualMLP", "SmallCNN", "activation", "default_step"]
