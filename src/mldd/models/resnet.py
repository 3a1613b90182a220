"""BatchNorm-free convolutional ResNet with an explicit ODE step size.

Notation: ``K = depth`` blocks, step ``h``, horizon ``T``, activation ``σ``, ``C_k`` a 3×3
convolution with bias:

.. math::

    y_0 = σ(\\text{stem}(x)), \\qquad y_{k+1} = y_k + h\\,σ(C_k * y_k), \\qquad
    \\text{out} = W\\,\\text{avgpool}(y_K) + b.

No batch normalisation: its running statistics would make the network depend on the batch and
break both the ODE view and function-preserving depth transfers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mldd.models.cnn import image_hw
from mldd.models.mlp import activation as _activation
from mldd.models.residual_mlp import _check_step
from mldd.validation import as_int


class ConvResNet(nn.Module):
    """Convolutional residual network ``y ← y + h·σ(conv3x3(y))`` with global average pooling.

    Layout: a stem ``conv3x3(in_channels → width)`` followed by ``σ`` and, if
    ``downsample > 1``, an average pooling by that factor (cheaper blocks on large images);
    ``depth`` residual blocks, each one ``nn.Conv2d(width, width, 3, padding=1)`` kept in
    :attr:`blocks`; global average pooling; a linear head ``width → num_classes``.

    The step size :attr:`h` follows :class:`mldd.models.ResidualMLP`: default ``T/(K−1)``
    (``T`` for ``K = 1``) so that the blocks discretise an ODE on ``[0, T]`` [HR17] and a depth
    refinement ``K → 2K−1`` (which halves ``h``) nearly preserves the function [KK22]; ``h=1.0``
    gives the classic (BN-free) ResNet [HZRS16]. :attr:`h` is a plain, reassignable attribute.
    Convolutions use PyTorch's default initialisation; the head is Xavier-normal with zero bias.

    Args:
        in_channels: image channels.
        num_classes: number of classes.
        image_size: ``H`` or ``(H, W)`` (must be >= ``downsample``).
        width: channels of the residual stream.
        depth: number of residual blocks ``K`` (>= 1).
        h: step size (> 0), ``None`` for ``T/(K−1)``.
        T: time horizon (> 0).
        activation: name of ``σ``; ``"relu"`` default.
        downsample: average-pooling factor after the stem (>= 1; 1 = none).
        dtype: parameter dtype.

    Attributes:
        depth, width, h, T: the knobs multilevel transfers read.
        stem, blocks, head: the layers.

    References:
        [HZRS16] He, Zhang, Ren, Sun. Deep residual learning for image recognition. CVPR 2016.
        [HR17] Haber, Ruthotto. Stable architectures for deep neural networks. Inverse Problems
        34(1), 2017. arXiv:1705.03341.
        [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
        networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        width: int = 16,
        depth: int = 4,
        h: float | None = None,
        T: float = 1.0,
        activation: str = "relu",
        downsample: int = 1,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        owner = "ConvResNet"
        self.in_channels = as_int(f"{owner} in_channels", in_channels)
        self.num_classes = as_int(f"{owner} num_classes", num_classes)
        self.width = as_int(f"{owner} width", width)
        self.depth = as_int(f"{owner} depth", depth)
        self.downsample = as_int(f"{owner} downsample", downsample)
        self.image_size = image_hw(image_size, owner)
        if min(self.image_size) < downsample:
            raise ValueError(
                f"ConvResNet image_size {image_size!r} is smaller than downsample={downsample}"
            )
        self.h = _check_step(owner, h, T, depth)
        self.T = float(T)
        self.activation_name = activation
        self.act = _activation(activation)
        self.stem = nn.Conv2d(in_channels, width, kernel_size=3, padding=1, dtype=dtype)
        self.blocks = nn.ModuleList(
            nn.Conv2d(width, width, kernel_size=3, padding=1, dtype=dtype) for _ in range(depth)
        )
        self.head = nn.Linear(width, num_classes, dtype=dtype)
        nn.init.xavier_normal_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        y = self.act(self.stem(x))
        if self.downsample > 1:
            y = nn.functional.avg_pool2d(y, self.downsample)
        for block in self.blocks:
            y = y + self.h * self.act(block(y))
        out: Tensor = self.head(y.mean(dim=(2, 3)))
        return out

    def extra_repr(self) -> str:
        return (
            f"depth={self.depth}, width={self.width}, h={self.h:g}, T={self.T:g}, "
            f"activation={self.activation_name}"
        )
