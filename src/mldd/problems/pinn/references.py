"""Reference solutions of the PINN benchmark problems, computed by the package (never downloaded).

Notation: ``x`` space, ``t`` time, ``ν`` viscosity, ``ε`` diffusion coefficient, ``N`` the
polynomial degree of a Chebyshev discretisation (``N + 1`` Gauss–Lobatto points).

* **Burgers** — the Cole–Hopf formula [Bas86] evaluated by Gauss–Hermite quadrature in log-space
  (:func:`burgers_cole_hopf`); converged to rounding with a few hundred nodes (see the tests).
* **Allen–Cahn** — Chebyshev collocation in space (Dirichlet ``u = −1``) and the stiff implicit
  Radau IIA integrator of :func:`scipy.integrate.solve_ivp` with an analytic Jacobian and tight
  tolerances (method of lines; cf. the Chebfun/ETDRK4 reference of [RPK19]); the values on the
  uniform output grid come from barycentric interpolation, which keeps spectral accuracy.
* **Diffusion–advection** — Chebyshev collocation in both directions: the operator
  ``−εΔ + b·∇`` is a Kronecker sum, so the discrete problem is the Sylvester equation
  ``A U + U Aᵀ = F`` solved by Bartels–Stewart in ``O(N³)`` (:func:`scipy.linalg.solve_sylvester`).
  Chebyshev points cluster at the walls, which resolves the ``O(ε)`` boundary layers at
  ``x = 1`` and ``y = 1`` with a modest ``N``; the tests confirm the result against an independent
  second-order finite-difference solve.
* **Klein–Gordon**, **Poisson** — closed-form solutions.

References:
    [Bas86] C. Basdevant, M. Deville, P. Haldenwang, J. Lacroix, J. Ouazzani, R. Peyret,
    P. Orlandi, A. Patera, "Spectral and finite difference solutions of the Burgers equation",
    Computers & Fluids 14 (1986) 23–41.
    [RPK19] M. Raissi, P. Perdikaris, G. E. Karniadakis, "Physics-informed neural networks",
    J. Comput. Phys. 378 (2019) 686–707.
    [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, "Enhancing training of
    physics-informed neural networks using domain-decomposition based preconditioning
    strategies", SIAM J. Sci. Comput. 2024, arXiv:2306.17648.
    [Tre00] L. N. Trefethen, *Spectral Methods in MATLAB*, SIAM 2000 (``cheb``, ch. 6).
    [BT04] J.-P. Berrut, L. N. Trefethen, "Barycentric Lagrange interpolation", SIAM Rev. 46
    (2004) 501–517.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.integrate import solve_ivp
from scipy.linalg import solve_sylvester
from scipy.special import roots_hermite

logger = logging.getLogger(__name__)

Array = NDArray[np.float64]

#: Burgers viscosity of [RPK19]: ``ν = 0.01/π``.
BURGERS_NU = 0.01 / math.pi


# --------------------------------------------------------------------------------------------
# Chebyshev tools
# --------------------------------------------------------------------------------------------
def chebyshev_points(n: int) -> Array:
    """The ``n + 1`` Chebyshev–Gauss–Lobatto points ``cos(πj/n)``, ``j = 0..n`` (descending)."""
    if n < 1:
        raise ValueError(f"Chebyshev degree must be >= 1, got {n}")
    # sin form of cos(πj/n): exactly antisymmetric, so symmetric problems stay symmetric.
    j = np.arange(n + 1)
    return np.sin(np.pi * (n - 2 * j) / (2 * n))


def chebyshev_diff_matrix(n: int) -> tuple[Array, Array]:
    """The Chebyshev differentiation matrix ``D`` on :func:`chebyshev_points` ([Tre00], ``cheb``).

    The diagonal uses the negative-sum trick (rows of ``D`` annihilate constants exactly), which
    is markedly more accurate than the closed-form diagonal for large ``n``.

    Returns:
        ``(D, x)`` with ``D`` of shape ``(n + 1, n + 1)``.
    """
    x = chebyshev_points(n)
    c = np.ones(n + 1)
    c[0] = c[-1] = 2.0
    c *= (-1.0) ** np.arange(n + 1)
    dx = x[:, None] - x[None, :]
    D = np.outer(c, 1.0 / c) / (dx + np.eye(n + 1))
    D -= np.diag(D.sum(axis=1))
    return D, x


def barycentric_matrix(nodes: Array, x: ArrayLike) -> Array:
    """Matrix ``B`` with ``B @ f(nodes) = p(x)``, ``p`` the interpolant on Chebyshev–Lobatto nodes.

    Uses the second (true) barycentric formula with the Chebyshev weights ``(−1)^j``, halved at
    the end points [BT04], which is numerically stable for any number of nodes. Evaluation points
    that coincide with a node copy the nodal value.
    """
    xe = np.asarray(x, dtype=np.float64).reshape(-1)
    n = nodes.size - 1
    w = (-1.0) ** np.arange(n + 1)
    w[0] *= 0.5
    w[-1] *= 0.5
    d = xe[:, None] - nodes[None, :]
    hit = d == 0.0
    d[hit] = 1.0
    B = w / d
    B /= B.sum(axis=1, keepdims=True)
    rows, cols = np.nonzero(hit)
    B[rows] = 0.0
    B[rows, cols] = 1.0
    return B


# --------------------------------------------------------------------------------------------
# Burgers
# --------------------------------------------------------------------------------------------
def burgers_cole_hopf(
    x: ArrayLike, t: ArrayLike, nu: float = BURGERS_NU, n_quad: int = 400, chunk: int = 4096
) -> Array:
    """Exact solution of ``u_t + u u_x = ν u_xx``, ``u(0,x) = −sin(πx)``, ``u(t,±1) = 0``.

    By the Cole–Hopf transform [Bas86]

    ``u(x,t) = −∫ sin(π(x−η)) f(x−η) e^{−η²/4νt} dη / ∫ f(x−η) e^{−η²/4νt} dη``,
    ``f(y) = exp(−cos(πy) / (2πν))``.

    With ``η = √(4νt) z`` both integrals have the Gauss–Hermite weight ``e^{−z²}``. The factor
    ``f`` spans ``e^{±1/(2πν)} = e^{±50}``, so the sums are formed in log-space: the exponents
    ``log w_i − cos(π(x − √(4νt) z_i))/(2πν)`` are shifted by their maximum before
    exponentiating (log-sum-exp), and the common factor cancels in the ratio. At ``t = 0`` the
    initial condition is returned.

    Args:
        x, t: broadcastable arrays of points.
        nu: viscosity ``ν``.
        n_quad: Gauss–Hermite nodes (400 is converged to rounding for ``ν = 0.01/π``,
            ``t ≤ 1``; the tests check this against 1,500 nodes).
        chunk: points per vectorised block (bounds the memory to ``chunk × n_quad`` doubles).

    Returns:
        ``u`` with the broadcast shape of ``x`` and ``t``.
    """
    if nu <= 0:
        raise ValueError(f"nu must be positive, got {nu}")
    if n_quad < 2:
        raise ValueError(f"n_quad must be >= 2, got {n_quad}")
    xb, tb = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(t, dtype=np.float64))
    if np.any(tb < 0):
        raise ValueError("Cole–Hopf solution needs t >= 0")
    xf, tf = xb.reshape(-1), tb.reshape(-1)
    z, w = roots_hermite(n_quad)
    # Far nodes have weights that underflow to 0; they carry no mass, and log(0) is avoided.
    keep = w > 0
    z, logw = z[keep], np.log(w[keep])
    out = -np.sin(np.pi * xf)  # t = 0 rows keep the initial condition
    pos = np.nonzero(tf > 0)[0]
    for s in range(0, pos.size, chunk):
        idx = pos[s : s + chunk]
        y = xf[idx, None] - np.sqrt(4.0 * nu * tf[idx, None]) * z[None, :]
        a = logw[None, :] - np.cos(np.pi * y) / (2.0 * math.pi * nu)
        e = np.exp(a - a.max(axis=1, keepdims=True))
        out[idx] = -(np.sin(np.pi * y) * e).sum(axis=1) / e.sum(axis=1)
    return out.reshape(xb.shape)


def burgers_reference(
    n_x: int = 256, n_t: int = 100, dt: float = 0.01, n_quad: int = 400
) -> dict[str, Array]:
    """Burgers solution on the grid of the classic data set of [RPK19].

    ``x = linspace(−1, 1, n_x)``, ``t = 0, dt, ..., (n_t − 1)·dt`` (256 × 100 with ``t ≤ 0.99``).

    Returns:
        ``{"x": (n_x,), "t": (n_t,), "u": (n_x, n_t)}``.
    """
    x = np.linspace(-1.0, 1.0, n_x)
    t = dt * np.arange(n_t, dtype=np.float64)
    u = burgers_cole_hopf(x[:, None], t[None, :], n_quad=n_quad)
    return {"x": x, "t": t, "u": u}


# --------------------------------------------------------------------------------------------
# Allen–Cahn
# --------------------------------------------------------------------------------------------
def allen_cahn_reference(
    n_cheb: int = 512,
    n_x: int = 512,
    n_t: int = 201,
    t_end: float = 1.0,
    diffusion: float = 1e-3,
    reaction: float = 5.0,
    rtol: float = 1e-10,
    atol: float = 1e-12,
) -> dict[str, Array]:
    """Allen–Cahn ``u_t = d u_xx + r (u − u³)``, ``u(0,x) = x² cos(πx)``, ``u(t,±1) = −1``.

    Method of lines: Chebyshev collocation of degree ``n_cheb`` in ``x`` (the boundary values are
    fixed at −1 and enter the interior equations through the boundary columns of ``D²``), then
    Radau IIA (order 5, L-stable) with the exact Jacobian ``d D² + diag(r (1 − 3u²))``. Values on
    the uniform output grid by barycentric interpolation. Default accuracy (checked against
    ``n_cheb = 768``): about 3e-9 in max-norm; ``n_cheb = 384`` gives about 6e-7.

    Args:
        n_cheb: Chebyshev degree.
        n_x, n_t: output grid ``x = linspace(−1, 1, n_x)``, ``t = linspace(0, t_end, n_t)``.
        t_end: final time.
        diffusion, reaction: ``d = 0.001`` and ``r = 5`` in [KKKK24]/[RPK19].
        rtol, atol: tolerances of the time integrator.

    Returns:
        ``{"x": (n_x,), "t": (n_t,), "u": (n_x, n_t)}``.
    """
    if n_cheb < 4:
        raise ValueError(f"n_cheb must be >= 4, got {n_cheb}")
    D, xc = chebyshev_diff_matrix(n_cheb)
    D2full = D @ D
    A = diffusion * D2full[1:-1, 1:-1]
    # u = −1 at both walls: their contribution to the interior rows of d·D² is constant.
    bc = -diffusion * (D2full[1:-1, 0] + D2full[1:-1, -1])
    xi = xc[1:-1]

    def rhs(_t: float, v: Array) -> Array:
        out: Array = A @ v + bc + reaction * (v - v**3)
        return out

    def jac(_t: float, v: Array) -> Array:
        J = A.copy()
        J[np.diag_indices_from(J)] += reaction * (1.0 - 3.0 * v * v)
        return J

    t_out = np.linspace(0.0, t_end, n_t)
    start = time.perf_counter()
    sol = solve_ivp(
        rhs, (0.0, t_end), xi**2 * np.cos(np.pi * xi), method="Radau", t_eval=t_out,
        jac=jac, rtol=rtol, atol=atol,
    )
    if not sol.success:
        raise RuntimeError(f"Allen–Cahn reference integration failed: {sol.message}")
    logger.info(
        "Allen–Cahn reference: N=%d, %d RHS evaluations, %.2fs",
        n_cheb, sol.nfev, time.perf_counter() - start,
    )
    U = np.vstack([-np.ones(n_t), sol.y, -np.ones(n_t)])
    x = np.linspace(-1.0, 1.0, n_x)
    return {"x": x, "t": t_out, "u": barycentric_matrix(xc, x) @ U}


# --------------------------------------------------------------------------------------------
# Diffusion–advection
# --------------------------------------------------------------------------------------------
def diffusion_advection_reference(
    n_cheb: int = 256,
    n_eval: int = 101,
    diffusion: float = 0.01,
    velocity: tuple[float, float] = (1.0, 1.0),
    source: float = 1.0,
) -> dict[str, Array]:
    """``−ε Δu + b·∇u = s`` on ``(0,1)²``, ``u = 0`` on the boundary (constant ``b``, ``s``).

    Chebyshev collocation of degree ``n_cheb`` in each direction on ``x = (1 + ξ)/2``. With
    ``A_k = (−ε D_k² + b_k D_k)`` restricted to the interior nodes, the discrete equations read
    ``A_x U + U A_yᵀ = S`` (``U[i, j] = u(x_i, y_j)``), solved by Bartels–Stewart. Default
    accuracy (checked against ``n_cheb = 512``): about 2e-11 relative in max-norm.

    Args:
        n_cheb: Chebyshev degree per direction.
        n_eval: output grid ``linspace(0, 1, n_eval)`` in each direction.
        diffusion: ``ε = 0.01`` [KKKK24].
        velocity: ``b = (1, 1)``.
        source: right-hand side ``s = 1``.

    Returns:
        ``{"x": (n_eval,), "y": (n_eval,), "u": (n_eval, n_eval)}``.
    """
    if n_cheb < 4:
        raise ValueError(f"n_cheb must be >= 4, got {n_cheb}")
    D, xi = chebyshev_diff_matrix(n_cheb)
    Dx = 2.0 * D  # d/dx = 2 d/dξ on x = (1 + ξ)/2
    D2 = Dx @ Dx
    nodes = (1.0 + xi) / 2.0
    Ax = (-diffusion * D2 + velocity[0] * Dx)[1:-1, 1:-1]
    Ay = (-diffusion * D2 + velocity[1] * Dx)[1:-1, 1:-1]
    S = np.full((n_cheb - 1, n_cheb - 1), float(source))
    U = np.zeros((n_cheb + 1, n_cheb + 1))
    U[1:-1, 1:-1] = solve_sylvester(Ax, Ay.T, S)
    xe = np.linspace(0.0, 1.0, n_eval)
    B = barycentric_matrix(nodes, xe)
    return {"x": xe, "y": xe.copy(), "u": B @ U @ B.T}


# --------------------------------------------------------------------------------------------
# Closed forms
# --------------------------------------------------------------------------------------------
def klein_gordon_exact(x: ArrayLike, t: ArrayLike) -> Array:
    """``u = x cos t``, solution of ``u_tt − u_xx + u² = −x cos t + x² cos² t``."""
    return np.asarray(x, dtype=np.float64) * np.cos(np.asarray(t, dtype=np.float64))


def klein_gordon_reference(n_x: int = 256, n_t: int = 100, t_end: float = 12.0) -> dict[str, Array]:
    """Klein–Gordon exact solution on ``linspace(−1,1,n_x) × linspace(0,t_end,n_t)``."""
    x = np.linspace(-1.0, 1.0, n_x)
    t = np.linspace(0.0, t_end, n_t)
    return {"x": x, "t": t, "u": klein_gordon_exact(x[:, None], t[None, :])}


def poisson_exact(x: ArrayLike, y: ArrayLike) -> Array:
    """Manufactured solution ``u = sin(πx) sin(πy) + ¼ sin(4πx) sin(2πy)`` (zero on ∂(0,1)²)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    pi = np.pi
    return np.sin(pi * x) * np.sin(pi * y) + 0.25 * np.sin(4 * pi * x) * np.sin(2 * pi * y)


def poisson_source(x: ArrayLike, y: ArrayLike) -> Array:
    """``f = −Δu = 2π² sin(πx) sin(πy) + 5π² sin(4πx) sin(2πy)`` for :func:`poisson_exact`."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    pi = np.pi
    return 2 * pi**2 * np.sin(pi * x) * np.sin(pi * y) + 5 * pi**2 * np.sin(4 * pi * x) * np.sin(
        2 * pi * y
    )


def poisson_reference(n_eval: int = 101) -> dict[str, Array]:
    """Poisson exact solution on the ``n_eval × n_eval`` uniform grid of ``[0,1]²``."""
    x = np.linspace(0.0, 1.0, n_eval)
    return {"x": x, "y": x.copy(), "u": poisson_exact(x[:, None], x[None, :])}
