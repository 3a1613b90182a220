"""LAPACK on small dense float64 matrices, for quasi-Newton memories and subproblem solvers.

The ``k×k`` algebra of a limited-memory method is held in NumPy (cheap indexing and products on
tiny arrays), but its factorizations run through torch: NumPy's bundled OpenBLAS starts its own
thread pool for ``getrf``/``gesdd``/``syevd`` even on small matrices, and its threads, spinning
after the call, compete with torch's OpenMP threads for the cores. On a 2-core machine a 100×100
inverse then took 8 ms instead of 0.4 ms and delayed the next torch operation by as much; a 5×5 SVD
1.4 ms instead of 40 µs. torch's LAPACK runs in torch's own pool, so nothing contends.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["cholesky", "eigh", "inv", "inv_lower", "svd", "sym_inv_eig"]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float64))


def inv(a: np.ndarray) -> np.ndarray:
    """``a⁻¹``."""
    return torch.linalg.inv(_t(a)).numpy()


def inv_lower(a: np.ndarray) -> np.ndarray:
    """``a⁻¹`` for a lower-triangular ``a`` by triangular substitution (a tenth of the cost of a
    general inverse at ``k = 5``: no LU, no pivoting)."""
    t = _t(a)
    eye = torch.eye(t.shape[0], dtype=torch.float64)
    return torch.linalg.solve_triangular(t, eye, upper=False).numpy()


def sym_inv_eig(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(λ, a⁻¹)`` of the symmetric ``a`` from one eigendecomposition ``a = V diag(λ) Vᵀ``:
    ``a⁻¹ = V diag(1/λ) Vᵀ``. For callers that test the spectrum before inverting (one LAPACK
    call instead of two); ``a⁻¹`` holds Inf/NaN when some ``λ = 0``, so test ``λ`` first.
    """
    lam_np, v_np = eigh(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = (v_np / lam_np) @ v_np.T
    return lam_np, 0.5 * (inv + inv.T)


def eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(λ, V)`` of the symmetric ``a``, ``λ`` ascending."""
    lam, v = torch.linalg.eigh(_t(a))
    return lam.numpy(), v.numpy()


def svd(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, σ, Vᵀ)`` with ``a = U diag(σ) Vᵀ`` (full matrices)."""
    u, s, vh = torch.linalg.svd(_t(a))
    return u.numpy(), s.numpy(), vh.numpy()


def cholesky(a: np.ndarray) -> np.ndarray | None:
    """Lower Cholesky factor of ``a``, or ``None`` when ``a`` is not (numerically) positive
    definite."""
    L, info = torch.linalg.cholesky_ex(_t(a))
    return None if int(info) != 0 else L.numpy()
