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
    U, sig, Vh = small.svd(X)
    np.testing.assert_allclose(U @ np.diag(sig) @ Vh, X, atol=1e-12)
    L = small.cholesky(A)
    assert L is not None
    np.testing.assert_allclose(L @ L.T, A, atol=1e-12)
    assert small.cholesky(A - 100.0 * np.eye(6)) is None  # indefinite: no factor, no exception


def test_triangular_and_symmetric_inverses():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((5, 5))
    L = np.tril(X) + 5.0 * np.eye(5)
    np.testing.assert_allclose(small.inv_lower(L) @ L, np.eye(5), atol=1e-12)
    # Symmetric indefinite (as the L-SR1 middle matrix M may be): eigenvalues and inverse.
    A = X + X.T
    lam, Ainv = small.sym_inv_eig(A)
    np.testing.assert_allclose(lam, np.linalg.eigvalsh(A), atol=1e-12)
    assert lam.min() < 0 < lam.max()
    np.testing.assert_allclose(Ainv @ A, np.eye(5), atol=1e-10)
    np.testing.assert_array_equal(Ainv, Ainv.T)
