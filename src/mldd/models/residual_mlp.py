"""Residual MLP whose blocks are forward-Euler steps of an ODE (what the depth hierarchy refines).

Notation: ``K = depth`` residual blocks, step size ``h``, time horizon ``T``, activation ``σ``.

.. math::

    y_0 = σ(W_{in} x + b_{in}), \\qquad
    y_{k+1} = y_k + h\\,σ(W_k y_k + b_k)\\;(k = 0,…,K-1), \\qquad
    \\text{out} = W_{out} y_K + b_{out}.

With the default ``h = T/(K−1)`` the blocks are an explicit Euler discretisation of
``dy/dt = σ(W(t) y + b(t))`` on ``[0, T]`` (block ``k`` sits at ``t_k = k·h``), so networks of
different depth approximate the same map and a depth refinement ``K → 2K−1`` halves ``h``
[KK22, HR17].
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mldd.models.mlp import activation as _activation
from mldd.validation import as_int


def default_step(depth: int, T: float = 1.0) -> float:
    """The ODE step size ``h = T/(K−1)`` for ``K = depth`` blocks (``h = T`` when ``K = 1``).

    Raises:
        ValueError: if ``depth < 1`` or ``T <= 0``.
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth must be an integer >= 1, got {depth!r}")
    if not T > 0:
        raise ValueError(f"T (time horizon) must be > 0, got {T!r}")
    return float(T) / (depth - 1) if depth > 1 else float(T)


def _check_step(owner: str, h: float | None, T: float, depth: int) -> float:
    if not (isinstance(T, int | float) and T > 0):
        raise ValueError(f"{owner} T (time horizon) must be a number > 0, got {T!r}")
    if h is None:
        return default_step(depth, T)
    if not (isinstance(h, int | float) and h > 0):
        raise ValueError(
            f"{owner} h (step size) must be a number > 0, or None for T/(depth-1); got {h!r}"
        )
    return float(h)


class ResidualMLP(nn.Module):
    """Fully connected residual network ``y ← y + h·σ(W_k y + b_k)`` with an explicit step size.

    Layout: an input layer ``Linear(in_features, width)`` followed by ``σ``; ``depth`` residual
    blocks, each one ``nn.Linear(width, width)`` kept in :attr:`blocks`; an output layer
    ``Linear(width, out_features)``. Weights are Xavier-normal, biases zero.

    The step size :attr:`h` is a plain attribute read at every forward pass. Its default
    ``h = T/(K−1)`` (``h = T`` for ``K = 1``) makes the blocks a forward-Euler discretisation of an
    ODE on ``[0, T]`` [HR17], which is what lets a depth transfer ``K → 2K−1`` (fine block ``2j`` ←
    coarse ``j``, fine ``2j+1`` ← mean of coarse ``j, j+1``) produce a network computing nearly
    the same function [KK22]; the transfer must then set ``h`` to half the coarse value. Pass
    ``h=1.0`` for the classic ResNet of [HZRS16].

    Args:
        in_features: input dimension (after flattening when ``flatten=True``).
        out_features: output dimension.
        width: neurons per residual block.
        depth: number of residual blocks ``K`` (>= 1).
        activation: name of ``σ`` (see :func:`mldd.models.activation`); ``"tanh"`` default.
        T: time horizon of the ODE view (> 0).
        h: step size (> 0); ``None`` gives ``T/(K−1)``.
        dtype: parameter dtype.
        flatten: flatten every input to ``(N, -1)`` first (for images), so image problems need no
            wrapper module and transfers see the blocks directly.

    Attributes:
        depth, width, h, T: the knobs multilevel transfers read (``h`` may be reassigned).
        input_layer, blocks, output_layer: the affine maps.

    References:
        [HZRS16] He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016.
        [HR17] Haber, Ruthotto. Stable architectures for deep neural networks. Inverse Problems
        34(1), 2017. arXiv:1705.03341.
        [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
        networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        width: int = 32,
        depth: int = 4,
        activation: str = "tanh",
        T: float = 1.0,
        h: float | None = None,
        dtype: torch.dtype = torch.float64,
        flatten: bool = False,
    ) -> None:
        super().__init__()
        owner = "ResidualMLP"
        self.in_features = as_int(f"{owner} in_features", in_features)
        self.out_features = as_int(f"{owner} out_features", out_features)
        self.width = as_int(f"{owner} width", width)
        self.depth = as_int(f"{owner} depth", depth)
        self.h = _check_step(owner, h, T, depth)
        self.T = float(T)
        self.activation_name = activation
        self.act = _activation(activation)
        self.flatten = bool(flatten)
        self.input_layer = nn.Linear(in_features, width, dtype=dtype)
        self.blocks = nn.ModuleList(nn.Linear(width, width, dtype=dtype) for _ in range(depth))
        self.output_layer = nn.Linear(width, out_features, dtype=dtype)
        for lin in (self.input_layer, *self.blocks, self.output_layer):
            assert isinstance(lin, nn.Linear)
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.flatten:
            x = x.flatten(1)
        y = self.act(self.input_layer(x))
        for block in self.blocks:
            y = y + self.h * self.act(block(y))
        out: Tensor = self.output_layer(y)
        return out

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, width={self.width}, h={self.h:g}, T={self.T:g}, "
            f"activation={self.activation_name}"
        )
