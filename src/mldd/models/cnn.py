"""A small plain convolutional network: ``(conv3x3 → ReLU → maxpool2) × stages → linear``."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mldd.validation import check_int, is_int


def image_hw(image_size: int | Sequence[int], owner: str) -> tuple[int, int]:
    """``image_size`` as ``(height, width)``; an int means a square image.

    Raises:
        ValueError: unless it is a positive int or a pair of positive ints.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        hw: tuple[int, ...] = (image_size, image_size)
    else:
        hw = tuple(image_size) if isinstance(image_size, Sequence) else ()
    if len(hw) != 2 or not all(is_int(v, 1) for v in hw):
        raise ValueError(
            f"{owner} image_size must be a positive int or a (height, width) pair, "
            f"got {image_size!r}"
        )
    return hw[0], hw[1]


class SmallCNN(nn.Module):
    """Plain CNN: for each entry ``c`` of ``channels`` a 3×3 convolution (padding 1) to ``c``
    channels, ReLU and 2×2 max-pooling; then a linear classifier on the flattened features.

    PyTorch's default (Kaiming-uniform) initialisation is kept: it is the usual one for ReLU
    convolutions. Convolutions are in :attr:`convs`, the classifier is :attr:`head`.

    Args:
        in_channels: image channels ``C``.
        num_classes: number of classes (outputs).
        image_size: ``H`` (square) or ``(H, W)``; each stage halves it (floor), so it must be at
            least ``2**len(channels)``.
        channels: output channels of the stages, default ``(16, 32)``.
        dtype: parameter dtype.

    References:
        LeCun, Bottou, Bengio, Haffner. Gradient-based learning applied to document recognition.
        Proc. IEEE, 1998.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int | Sequence[int],
        channels: Sequence[int] = (16, 32),
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        for name, v in (("in_channels", in_channels), ("num_classes", num_classes)):
            check_int(f"SmallCNN {name}", v)
        chans = tuple(channels)
        if not chans or not all(is_int(c, 1) for c in chans):
            raise ValueError(
                f"SmallCNN channels must be a non-empty sequence of integers >= 1, got {channels!r}"
            )
        H, W = image_hw(image_size, "SmallCNN")
        for _ in chans:
            H, W = H // 2, W // 2
        if H < 1 or W < 1:
            raise ValueError(
                f"SmallCNN image_size {image_size!r} is too small for {len(chans)} pooling stages; "
                f"it must be at least {2 ** len(chans)}"
            )
        self.in_channels, self.num_classes, self.channels = in_channels, num_classes, chans
        self.image_size = image_hw(image_size, "SmallCNN")
        sizes = (in_channels, *chans)
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=3, padding=1, dtype=dtype)
            for a, b in itertools.pairwise(sizes)
        )
        self.head = nn.Linear(chans[-1] * H * W, num_classes, dtype=dtype)

    def forward(self, x: Tensor) -> Tensor:
        for conv in self.convs:
            x = nn.functional.max_pool2d(torch.relu(conv(x)), 2)
        out: Tensor = self.head(x.flatten(1))
        return out
