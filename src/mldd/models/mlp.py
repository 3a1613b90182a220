"""Fully connected networks for PINNs and regression."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn

_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "tanh": torch.tanh,
    "relu": torch.relu,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "sigmoid": torch.sigmoid,
    "sin": torch.sin,
    "softplus": nn.functional.softplus,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    """The activation function called ``name``.

    Raises:
        ValueError: for an unknown name; the message lists the known ones.
    """
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ValueError(
            f"unknown activation {name!r}; choose one of {', '.join(sorted(_ACTIVATIONS))}"
        ) from None


class MLP(nn.Module):
    """A plain multilayer perceptron ``x ↦ W_L σ(… σ(W_1 x + b_1) …) + b_L``.

    ``depth`` hidden layers of ``width`` neurons (so ``depth + 1`` affine layers), Xavier-normal
    weights and zero biases (the usual PINN initialisation). The affine layers are kept in
    :attr:`layers` so that layer-wise decompositions can read them.

    Args:
        in_features: input dimension.
        out_features: output dimension.
        width: neurons per hidden layer.
        depth: number of hidden layers (>= 1).
        activation: name of the activation (``"tanh"`` default).
        dtype: parameter dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 20,
        depth: int = 4,
        activation: str = "tanh",
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features),
                        ("width", width), ("depth", depth)):
            if int(v) < 1:
                raise ValueError(f"MLP {name} must be >= 1, got {v}")
        self.in_features, self.out_features = in_features, out_features
        self.width, self.depth, self.activation_name = width, depth, activation
        self.act = globals()["activation"](activation)
        sizes = [in_features] + [width] * depth + [out_features]
        linears = [nn.Linear(a, b, dtype=dtype) for a, b in itertools.pairwise(sizes)]
        for lin in linears:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.layers = nn.ModuleList(linears)

    def forward(self, x: Tensor) -> Tensor:
        for lin in self.layers[:-1]:
            x = self.act(lin(x))
        return self.layers[-1](x)
