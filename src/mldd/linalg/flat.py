"""Conversions between lists of parameter tensors and one flat 1-D vector.

Every algorithm in mldd works on flat vectors (as ``torch.optim.LBFGS`` does): a quasi-Newton
pair, a trust-region step, a subdomain restriction are all plain 1-D tensors. These helpers are the
only place where the list-of-tensors view of a model meets the flat view.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor


def numel(params: Sequence[Tensor]) -> int:
    """Total number of entries of ``params``."""
    return sum(p.numel() for p in params)


def flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor] | None = None) -> Tensor:
    """Concatenate tensors into one flat vector; ``None`` entries become zeros shaped like ``like``.

    Args:
        tensors: tensors to concatenate (``None`` allowed when ``like`` is given).
        like: reference tensors giving shapes/dtypes for ``None`` entries.

    Returns:
        A new contiguous 1-D tensor.
    """
    parts = []
    for i, t in enumerate(tensors):
        if t is None:
            if like is None:
                raise ValueError("flatten got None without reference tensors `like`")
            parts.append(torch.zeros(like[i].numel(), dtype=like[i].dtype, device=like[i].device))
        else:
            parts.append(t.reshape(-1))
    if not parts:
        return torch.zeros(0)
    return torch.cat(parts)


def params_to_vector(params: Sequence[Tensor]) -> Tensor:
    """A detached flat copy of the parameter values."""
    with torch.no_grad():
        return flatten([p.detach() for p in params])


def vector_to_params(vec: Tensor, params: Sequence[Tensor]) -> None:
    """Write the flat vector ``vec`` into ``params`` in place (no autograd history).

    Raises:
        ValueError: if ``vec`` does not have exactly ``numel(params)`` entries.
    """
    n = numel(params)
    if vec.dim() != 1 or vec.numel() != n:
        raise ValueError(
            f"flat vector has shape {tuple(vec.shape)}, expected ({n},) for these parameters"
        )
    offset = 0
    with torch.no_grad():
        for p in params:
            k = p.numel()
            p.copy_(vec[offset : offset + k].view_as(p))
            offset += k


def flat_grad(params: Sequence[Tensor]) -> Tensor:
    """The parameters' ``.grad`` as one flat vector (zeros where a gradient is ``None``)."""
    return flatten([p.grad for p in params], like=params)


def all_finite(v: Tensor) -> bool:
    """Whether every entry of ``v`` is finite (no NaN, no ±Inf).

    One reduction pass: ``aminmax`` propagates NaN and carries ±Inf to the minimum or maximum,
    which is several times cheaper on large vectors than ``torch.isfinite(v).all()`` (that
    materialises a boolean tensor of ``v``'s size first).
    """
    if v.numel() == 0:
        return True
    lo, hi = torch.aminmax(v.detach())
    return math.isfinite(float(lo)) and math.isfinite(float(hi))


def max_abs(v: Tensor) -> float:
    """``max|v_i|`` (0 for an empty vector); NaN if any entry is NaN, Inf if any is ±Inf.

    One ``aminmax`` pass and no ``|v|`` temporary, so it doubles as a cheap finiteness test.
    """
    if v.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(v.detach())
    a, b = float(lo), float(hi)
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(-a, b)


def to_numpy64(t: Tensor) -> np.ndarray:
    """A float64 NumPy array of ``t``'s values, on the CPU.

    For the small dense algebra of quasi-Newton memories and subproblem solvers: indexing and
    products on ``k×k`` arrays cost microseconds in NumPy against tens of µs through torch's
    dispatcher, a fixed cost paid at every iteration (factorizations go back through torch:
    :mod:`mldd.linalg.small`). The array shares memory with ``t`` when ``t`` is a float64 CPU
    tensor, so pass a fresh result (a product), not state that is modified later.
    """
    return t.detach().to(device="cpu", dtype=torch.float64).numpy()
