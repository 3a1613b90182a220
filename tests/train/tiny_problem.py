"""A tiny least-squares problem under a test-only name (shared by tests/train and tests/cli)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor, nn

from mldd.problems import registry
from mldd.problems.base import Problem

TINY = "test-tiny-lsq"


class TinyLeastSquares(Problem):
    """Least squares with a 2-layer tanh network on 64 points (test only)."""

    name = TINY
    metric_name = "rel_l2"
    higher_is_better = False

    def __init__(self, *, n: int = 64, dim: int = 4, seed: int = 0,
                 dtype: torch.dtype = torch.float64, nan_after: int | None = None) -> None:
        self.dtype = dtype
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g, dtype=dtype)
        w = torch.randn(dim, 1, generator=g, dtype=dtype)
        self.y = torch.sin(self.x @ w)
        self.nan_after = nan_after
        self.calls = 0

    def build_model(self, seed: int | None = None) -> nn.Module:
        if seed is not None:
            torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(self.x.shape[1], 8), nn.Tanh(), nn.Linear(8, 1))
        return net.to(self.dtype)

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None = None) -> Tensor:
        self.calls += 1
        x, y = (self.x, self.y) if batch is None else batch
        loss = ((model(x) - y) ** 2).mean()
        if self.nan_after is not None and self.calls > self.nan_after:
            return loss * float("nan")
        return loss

    def metric(self, model: nn.Module) -> float:
        with torch.no_grad():
            return float(torch.linalg.vector_norm(model(self.x) - self.y)
                         / torch.linalg.vector_norm(self.y))

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[
            tuple[Tensor, Tensor]]:
        perm = torch.randperm(self.x.shape[0], generator=generator)
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            yield self.x[idx], self.y[idx]


@pytest.fixture
def tiny() -> Iterator[str]:
    """Register the tiny problem for one test, remove it afterwards."""
    registry.register(TINY)(TinyLeastSquares)
    try:
        yield TINY
    finally:
        registry._REGISTRY.pop(TINY, None)
        registry._DESCRIPTIONS.pop(TINY, None)
