"""What a training problem is: a model to build, a loss, a metric, and (for PINNs) a reference.

Every problem the trainer, the CLI and the benchmarks use is a :class:`Problem`. Two families:

* :class:`PINNProblem` — a PDE residual on collocation points with hard-constrained
  initial/boundary conditions; metric: relative L2 error against a reference solution that the
  package computes itself (never downloaded).
* :class:`ClassificationProblem` — images and labels; loss: cross-entropy; metric: test accuracy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

Batch = Any


class Problem(ABC):
    """A training problem.

    Attributes:
        name: the registry name (``"burgers"``, ``"digits"``, ...).
        metric_name: name of the error/accuracy metric (``"rel_l2"`` or ``"accuracy"``).
        higher_is_better: whether larger metric values are better (accuracy) or worse (error).
        dtype: dtype of the data and of the models the problem builds.
        device: where the data and the models the problem builds live (problems that take a
            ``device`` option; the others stay on the CPU).
    """

    name: str = "problem"
    metric_name: str = "metric"
    higher_is_better: bool = False
    dtype: torch.dtype = torch.float64
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def build_model(self, seed: int | None = None) -> nn.Module:
        """The default network for this problem (in :attr:`dtype`), seeded if ``seed`` given."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: Batch | None = None) -> Tensor:
        """The training loss of ``model`` (0-d tensor with its graph; no ``backward()``).

        ``batch=None`` means the full training set / all collocation points.
        """

    @abstractmethod
    def metric(self, model: nn.Module) -> float:
        """The problem's error metric (or accuracy) for ``model``, evaluated without gradients
        to the parameters."""

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[Batch]:
        """One epoch of mini-batches in random order; full-batch problems yield ``None`` once."""
        yield None

    def full_batch(self) -> Batch:
        """The whole training set / all collocation points as an explicit batch."""
        raise NotImplementedError(f"{type(self).__name__} does not define full_batch()")

    def n_rows(self, batch: Batch | None = None) -> int:
        """Number of rows (samples or collocation points) in ``batch`` (``None`` = all)."""
        b = self.full_batch() if batch is None else batch
        return int(b[0].shape[0] if isinstance(b, tuple | list) else b.shape[0])

    def select_rows(self, batch: Batch | None, rows: Tensor | None) -> Batch:
        """The sub-batch of ``batch`` (``None`` = all) at row indices ``rows`` (``None`` = all).

        This is what a ``closure(model, rows)`` (see :mod:`mldd.closures`) evaluates: data
        hierarchies and data-sharded methods ask for subsets of the current batch.
        """
        if rows is None:
            return batch
        b = self.full_batch() if batch is None else batch
        if isinstance(b, tuple | list):
            return type(b)(t[rows] for t in b)
        return b[rows]

    def describe(self) -> dict[str, Any]:
        """A small dict of the problem's settings (for configs and reports)."""
        return {"name": self.name, "metric": self.metric_name, "dtype": str(self.dtype),
                "device": str(self.device)}


class PINNProblem(Problem):
    """A physics-informed problem with hard-constrained initial/boundary conditions.

    Subclasses define :meth:`transform` (network output ↦ solution satisfying the constraints),
    :meth:`residual` (PDE residual by ``torch.autograd.grad(create_graph=True)``) and
    :meth:`reference`. The loss is the mean squared residual on :attr:`collocation`.
    """

    metric_name = "rel_l2"
    higher_is_better = False
    collocation: Tensor

    @abstractmethod
    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        """The solution ``u(x)`` built from the network output with the constraints built in."""

    @abstractmethod
    def residual(self, model: nn.Module, x: Tensor) -> Tensor:
        """The PDE residual at points ``x`` (shape ``(N,)`` or ``(N, 1)``)."""

    @abstractmethod
    def reference(self) -> tuple[Tensor, Tensor]:
        """``(points, values)``: the evaluation grid and the reference solution on it."""

    def full_batch(self) -> Tensor:
        """All collocation points."""
        return self.collocation

    def loss(self, model: nn.Module, batch: Tensor | None = None) -> Tensor:
        """Mean squared PDE residual on ``batch`` (default: all collocation points)."""
        x = self.collocation if batch is None else batch
        r = self.residual(model, x)
        return (r * r).mean()

    def predict(self, model: nn.Module, x: Tensor) -> Tensor:
        """The constrained solution at ``x``, detached."""
        with torch.no_grad():
            return self.transform(model, x).reshape(-1)

    def metric(self, model: nn.Module) -> float:
        """Relative L2 error ``‖u_NN − u_ref‖₂ / ‖u_ref‖₂`` on the reference grid."""
        pts, ref = self.reference()
        u = self.predict(model, pts.to(self.dtype))
        ref = ref.reshape(-1).to(u.dtype)
        return float(torch.linalg.vector_norm(u - ref) / torch.linalg.vector_norm(ref))


class ClassificationProblem(Problem):
    """Images/features with integer labels, a train/test split, cross-entropy and accuracy.

    Attributes:
        x_train, y_train, x_test, y_test: the data as tensors (images as ``(N, C, H, W)``).
    """

    metric_name = "accuracy"
    higher_is_better = True
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor

    def full_batch(self) -> tuple[Tensor, Tensor]:
        """The whole training set ``(x_train, y_train)``."""
        return self.x_train, self.y_train

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """Mean cross-entropy on ``batch = (x, y)`` (default: the whole training set)."""
        x, y = (self.x_train, self.y_train) if batch is None else batch
        return nn.functional.cross_entropy(model(x), y)

    def metric(self, model: nn.Module) -> float:
        """Test accuracy in [0, 1]."""
        with torch.no_grad():
            pred = model(self.x_test).argmax(dim=1)
        return float((pred == self.y_test).to(torch.float64).mean())

    def batches(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One epoch of shuffled ``(x, y)`` mini-batches (the last may be smaller)."""
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        n = self.x_train.shape[0]
        perm = torch.randperm(n, generator=generator)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            yield self.x_train[idx], self.y_train[idx]
