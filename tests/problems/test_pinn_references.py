"""Reference solvers checked independently of any network.

Each reference is checked against properties it must have: initial and boundary data, the PDE
residual by finite differences, convergence under refinement, symmetries, known values from the
literature, and (diffusion–advection) agreement with an independent finite-difference solver.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import scipy.sparse.linalg as spl
from scipy.optimize import minimize_scalar

from mldd.problems.pinn.references import (
    BURGERS_NU,
    allen_cahn_reference,
    barycentric_matrix,
    burgers_cole_hopf,
    burgers_reference,
    chebyshev_diff_matrix,
    chebyshev_points,
    diffusion_advection_reference,
    klein_gordon_exact,
    klein_gordon_reference,
    poisson_exact,
    poisson_reference,
    poisson_source,
)


# ------------------------------------------------------------------------------ Chebyshev tools
def test_chebyshev_differentiation_and_interpolation_are_exact_on_polynomials() -> None:
    D, x = chebyshev_diff_matrix(12)
    assert x[0] == 1.0 and x[-1] == -1.0
    np.testing.assert_allclose(chebyshev_points(12), x)
    p = np.polynomial.Polynomial([0.3, -1.0, 2.0, 0.5, 0.0, 1.5, -0.7])
    np.testing.assert_allclose(D @ p(x), p.deriv()(x), atol=1e-12)
    xe = np.linspace(-1, 1, 37)
    np.testing.assert_allclose(barycentric_matrix(x, xe) @ p(x), p(xe), atol=1e-13)
    # spectral accuracy on an analytic non-polynomial function
    D, x = chebyshev_diff_matrix(40)
    np.testing.assert_allclose(D @ np.exp(np.sin(2 * x)), 2 * np.cos(2 * x) * np.exp(np.sin(2 * x)),
                               atol=1e-10)
    with pytest.raises(ValueError):
        chebyshev_points(0)


# ------------------------------------------------------------------------------ Burgers
def test_burgers_initial_boundary_and_symmetry() -> None:
    ref = burgers_reference(n_x=64, n_t=20, dt=0.05, n_quad=200)
    x, t, u = ref["x"], ref["t"], ref["u"]
    assert u.shape == (64, 20) and t[0] == 0.0
    np.testing.assert_array_equal(u[:, 0], -np.sin(np.pi * x))
    assert np.abs(u[[0, -1], :]).max() < 1e-13  # u(t, ±1) = 0
    np.testing.assert_allclose(u[::-1], -u, atol=1e-13)  # odd in x
    assert np.abs(u).max() <= 1.0 + 1e-12  # maximum principle


def test_burgers_default_grid_is_the_classic_one() -> None:
    ref = burgers_reference(n_quad=100)
    assert ref["u"].shape == (256, 100)
    assert ref["t"][-1] == pytest.approx(0.99)
    assert ref["x"][0] == -1.0 and ref["x"][-1] == 1.0


def test_burgers_quadrature_converged() -> None:
    # Dense in x around the shock, where the integrand is most sharply peaked.
    x = np.concatenate([np.linspace(-1, 1, 101), np.linspace(-0.02, 0.02, 41)])
    for t in (1e-4, 0.05, 0.3, 0.51, 0.8, 1.0):
        fine = burgers_cole_hopf(x, t, n_quad=1500)
        assert np.abs(burgers_cole_hopf(x, t, n_quad=400) - fine).max() < 1e-12
        assert np.abs(burgers_cole_hopf(x, t, n_quad=200) - fine).max() < 1e-10


def test_burgers_fd_residual_small() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.95, 0.95, 200)
    t = rng.uniform(0.05, 1.0, 200)
    h = k = 1e-4

    def u(dx: float, dt: float) -> np.ndarray:
        return burgers_cole_hopf(x + dx, t + dt, n_quad=400)

    u0 = u(0, 0)
    u_t = (u(0, k) - u(0, -k)) / (2 * k)
    u_x = (u(h, 0) - u(-h, 0)) / (2 * h)
    u_xx = (u(h, 0) - 2 * u0 + u(-h, 0)) / h**2
    res = u_t + u0 * u_x - BURGERS_NU * u_xx
    scale = np.abs(u_t) + np.abs(u0 * u_x) + np.abs(BURGERS_NU * u_xx)
    # measured ≈ 3e-5, dominated by the O(h²) FD error at points near the shock
    assert np.linalg.norm(res) / np.linalg.norm(scale) < 1e-4


def test_burgers_steepest_slope_matches_basdevant() -> None:
    # Basdevant et al. (1986): max |u_x(0, t)| = 152.00516 at t = 1.6037/π for ν = 0.01/π.
    h = 1e-6

    def neg_slope(t: float) -> float:
        v = burgers_cole_hopf(np.array([-h, h]), t, n_quad=400)
        return float((v[1] - v[0]) / (2 * h))

    res = minimize_scalar(neg_slope, bracket=(0.45, 0.5, 0.55), tol=1e-9)
    assert -res.fun == pytest.approx(152.00516, rel=2e-6)
    assert res.x * math.pi == pytest.approx(1.6037, abs=2e-4)


def test_burgers_input_validation() -> None:
    with pytest.raises(ValueError):
        burgers_cole_hopf(0.0, -1.0)
    with pytest.raises(ValueError):
        burgers_cole_hopf(0.0, 1.0, nu=0.0)


# ------------------------------------------------------------------------------ Allen–Cahn
@pytest.fixture(scope="module")
def allen_cahn_384() -> dict[str, np.ndarray]:
    return allen_cahn_reference(n_cheb=384)


def test_allen_cahn_initial_boundary_symmetry(allen_cahn_384: dict[str, np.ndarray]) -> None:
    x, t, u = allen_cahn_384["x"], allen_cahn_384["t"], allen_cahn_384["u"]
    assert u.shape == (512, 201) and t[0] == 0.0 and t[-1] == 1.0
    np.testing.assert_allclose(u[:, 0], x**2 * np.cos(np.pi * x), atol=1e-12)
    np.testing.assert_array_equal(u[[0, -1], :], -1.0)
    np.testing.assert_allclose(u[::-1], u, atol=1e-9)  # even initial datum stays even
    assert np.abs(u).max() <= 1.0 + 1e-8  # maximum principle: values stay in [−1, 1]


def test_allen_cahn_converged_under_refinement(allen_cahn_384: dict[str, np.ndarray]) -> None:
    fine = allen_cahn_reference(n_cheb=512)["u"]
    coarse = allen_cahn_384["u"]
    assert np.abs(fine - coarse).max() / np.abs(fine).max() < 2e-6
    assert np.linalg.norm(fine - coarse) / np.linalg.norm(fine) < 1e-7
    # the interfaces are under-resolved at N = 128: refinement must matter there
    assert np.abs(allen_cahn_reference(n_cheb=128)["u"] - fine).max() > 1e-3


def test_allen_cahn_fd_residual_small(allen_cahn_384: dict[str, np.ndarray]) -> None:
    x, t, U = allen_cahn_384["x"], allen_cahn_384["t"], allen_cahn_384["u"]
    dx, dt = x[1] - x[0], t[1] - t[0]
    u = U[1:-1, 1:-1]
    u_t = (U[1:-1, 2:] - U[1:-1, :-2]) / (2 * dt)
    u_xx = (U[2:, 1:-1] - 2 * u + U[:-2, 1:-1]) / dx**2
    react = 5 * (u - u**3)
    res = u_t - 1e-3 * u_xx - react
    scale = np.abs(u_t) + np.abs(1e-3 * u_xx) + np.abs(react)
    # second-order FD truncation on the 512 × 201 grid dominates this number (≈ 5e-4)
    assert np.linalg.norm(res) / np.linalg.norm(scale) < 2e-3


# ------------------------------------------------------------------------------ diffusion–advection
def _fd_diffusion_advection(n: int, eps: float = 0.01) -> np.ndarray:
    """Independent solver: 2nd-order central differences on a uniform (n+1)² grid."""
    h, m = 1.0 / n, n - 1
    e = np.ones(m)
    D2 = sp.diags([e[:-1], -2 * e, e[:-1]], [-1, 0, 1]) / h**2
    D1 = sp.diags([-e[:-1], e[:-1]], [-1, 1]) / (2 * h)
    A1 = -eps * D2 + D1
    eye = sp.identity(m)
    A = (sp.kron(A1, eye) + sp.kron(eye, A1)).tocsc()
    U = np.zeros((n + 1, n + 1))
    U[1:-1, 1:-1] = spl.spsolve(A, np.ones(m * m)).reshape(m, m)
    return U


def test_diffusion_advection_boundary_and_convergence() -> None:
    ref = diffusion_advection_reference(n_cheb=128, n_eval=65)
    u = ref["u"]
    assert u.shape == (65, 65)
    assert np.abs(u[[0, -1], :]).max() < 1e-12 and np.abs(u[:, [0, -1]]).max() < 1e-12
    np.testing.assert_allclose(u, u.T, atol=1e-10)  # symmetric data, symmetric solution
    coarse = diffusion_advection_reference(n_cheb=96, n_eval=65)["u"]
    assert np.abs(coarse - u).max() / np.abs(u).max() < 1e-7
    # outer solution min(x, y) in the interior, below the layers
    assert u[32, 32] == pytest.approx(0.5 - 0.0558, abs=0.02)


def test_diffusion_advection_matches_independent_fd_at_second_order() -> None:
    ref = diffusion_advection_reference(n_cheb=128, n_eval=65)["u"]
    e128 = np.abs(_fd_diffusion_advection(128)[::2, ::2] - ref).max()
    e256 = np.abs(_fd_diffusion_advection(256)[::4, ::4] - ref).max()
    assert e256 < 1e-2
    assert 3.5 < e128 / e256 < 4.6  # the FD error shrinks as h²: the two solvers agree


# ------------------------------------------------------------------------------ closed forms
def test_klein_gordon_exact_solves_the_pde() -> None:
    ref = klein_gordon_reference()
    x, t, u = ref["x"], ref["t"], ref["u"]
    assert u.shape == (256, 100) and t[-1] == 12.0
    np.testing.assert_allclose(u[:, 0], x)  # u(0, x) = x
    np.testing.assert_allclose(u[-1], np.cos(t))  # u(t, 1) = cos t
    np.testing.assert_allclose(u[0], -np.cos(t))
    rng = np.random.default_rng(1)
    xs, ts, h = rng.uniform(-1, 1, 50), rng.uniform(0.1, 12, 50), 1e-4

    def U(dx: float, dt: float) -> np.ndarray:
        return klein_gordon_exact(xs + dx, ts + dt)

    u_tt = (U(0, h) - 2 * U(0, 0) + U(0, -h)) / h**2
    u_xx = (U(h, 0) - 2 * U(0, 0) + U(-h, 0)) / h**2
    u_t0 = (klein_gordon_exact(xs, h) - klein_gordon_exact(xs, -h)) / (2 * h)
    f = -xs * np.cos(ts) + xs**2 * np.cos(ts) ** 2
    np.testing.assert_allclose(u_tt - u_xx + U(0, 0) ** 2, f, atol=1e-6)
    np.testing.assert_allclose(u_t0, 0.0, atol=1e-10)


def test_poisson_exact_matches_source() -> None:
    ref = poisson_reference()
    u = ref["u"]
    assert u.shape == (101, 101)
    assert np.abs(u[[0, -1], :]).max() < 1e-14 and np.abs(u[:, [0, -1]]).max() < 1e-14
    rng = np.random.default_rng(2)
    x, y, h = rng.uniform(0, 1, 50), rng.uniform(0, 1, 50), 1e-4
    lap = (poisson_exact(x + h, y) + poisson_exact(x - h, y) + poisson_exact(x, y + h)
           + poisson_exact(x, y - h) - 4 * poisson_exact(x, y)) / h**2
    np.testing.assert_allclose(-lap, poisson_source(x, y), atol=1e-4, rtol=1e-6)
