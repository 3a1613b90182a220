"""mldd.linalg.small: small dense LAPACK through torch, NumPy in and out."""

from __future__ import annotations

import numpy as np

from mldd.linalg import small


def test_small_factorizations_reconstruct_their_input():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 6))
    A = X @ X.T + 6.0 * np.eye(6)  # symmetric positive definite
    np.testing.assert_allclose(small.inv(A) @ A, np.eye(6), atol=1e-12)
    lam, V = small.eigh(A)
    np.testing.assert_allclose(V @ np.diag(lam) @ V.T, A, atol=1e-12)
    np.testing.assert_allclose(small.eigvalsh(A), lam, atol=1e-12)
    U, sig, Vh = small.svd(X)
    np.testing.assert_allclose(U @ np.diag(sig) @ Vh, X, atol=1e-12)
    L = small.cholesky(A)
    assert L is not None
    np.testing.assert_allclose(L @ L.T, A, atol=1e-12)
    assert small.cholesky(A - 100.0 * np.eye(6)) is None  # indefinite: no factor, no exception
