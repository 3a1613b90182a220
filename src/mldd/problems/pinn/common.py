"""Shared plumbing of the 2-D PINN problems: options, collocation points, models, references.

A concrete problem sets the class attributes (name, variables, box, default network size, the
reference solver, the second-order operators of its PDE) and defines
:meth:`~mldd.problems.base.PINNProblem.transform` (an ansatz ``g(x) + c(x)·N(x)`` affine in the
network output ``N``) and :meth:`GridPINN.pde_residual`. Inputs are ``(N, 2)`` tensors with
columns ordered ``(x, t)`` for time-dependent problems and ``(x, y)`` otherwise.

Residuals are the hot path of every PINN run. A problem declares the second-order operators it
needs (:attr:`GridPINN.second_order`, e.g. ``{"u_xx": (1.0, 0.0)}``) and writes its PDE once, in
:meth:`GridPINN.pde_residual`, in terms of ``u``, ``∇u`` and those operators
(:class:`~mldd.problems.pinn.jet_residuals.PointDerivatives`). :meth:`GridPINN.derivatives_at`
computes them either by forward jets (``derivatives="jet"``, the default: one forward pass that
carries the input derivatives, then one ordinary backward for the loss gradient;
:mod:`mldd.problems.pinn.jet_residuals`) or by nested ``torch.autograd.grad(create_graph=True)``
(``derivatives="autograd"``, and the automatic fallback for models without jets).
"""

from __future__ import annotations

import inspect
import logging
from abc import abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from mldd.models import MLP, ResidualMLP
from mldd.models import activation as activation_function
from mldd.models.jets import has_jets
from mldd.problems.base import PINNProblem
from mldd.problems.cache import load_or_compute
from mldd.problems.pinn.jet_residuals import (
    AnsatzCache,
    NonAffineAnsatzError,
    PointDerivatives,
    autograd_derivatives,
    jet_derivatives,
)
from mldd.problems.samplers import SAMPLERS, sample
from mldd.validation import as_device

Array = np.ndarray

#: The values of the ``network`` option.
NETWORKS = ("mlp", "resmlp")
#: The values of the ``derivatives`` option.
DERIVATIVES = ("jet", "autograd")

_log = logging.getLogger(__name__)


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def gradient(u: Tensor, x: Tensor) -> Tensor:
    """``∂(Σ u)/∂x`` with the graph kept (so ``u_x`` rows are the per-point derivatives)."""
    (g,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    return g


class GridPINN(PINNProblem):
    """Base class of the PINN problems on a 2-D box with a tensor-grid reference solution.

    Args:
        n_collocation: number of collocation points (10,000 in [KKKK24]).
        sampler: collocation sampler, one of ``"hammersley"`` (default), ``"sobol"``,
            ``"uniform"``, ``"grid"`` (:mod:`mldd.problems.samplers`).
        width: neurons per hidden layer (default: the problem's paper size).
        depth: number of hidden layers (default: the problem's paper size).
        activation: activation name of :class:`mldd.models.MLP` (``"tanh"``).
        dtype: ``torch.float64`` (default) or ``torch.float32``.
        device: where the collocation points, the reference and the networks of
            :meth:`build_model` live (``"cpu"`` default, ``"cuda"``, ``"cuda:N"``); the points are
            drawn on the CPU first, so every device gets the same ones.
        seed: seed of the random samplers (``"sobol"``, ``"uniform"``).
        reference_options: keyword arguments of the reference solver (resolution, tolerances),
            e.g. a coarser setting for quick tests; they are part of the cache key.
        use_cache: read/write the on-disk reference cache (:mod:`mldd.problems.cache`).
        network: ``"mlp"`` (default; :class:`~mldd.models.MLP` with ``depth`` hidden layers, the
            papers' network) or ``"resmlp"`` (:class:`~mldd.models.ResidualMLP` with ``depth``
            residual blocks of ``width`` neurons and step ``h = 1/(depth−1)``: the network the
            depth hierarchies of the multilevel methods refine, ``K → 2K−1`` blocks).
        derivatives: how the residual's input derivatives are computed: ``"jet"`` (default;
            forward jets, :mod:`mldd.problems.pinn.jet_residuals`, used when the model supports
            them — :class:`~mldd.models.MLP`/:class:`~mldd.models.ResidualMLP` with tanh, sin,
            sigmoid or gelu — and nested autograd otherwise) or ``"autograd"`` (always nested
            autograd). Both give the same residual to rounding. ``"jet"`` is the default because
            it was the faster one for every benchmark PINN on the project's 2-core machine
            (1.3–1.9× per loss gradient; ``python -m mldd.problems.pinn.derivative_timing``)
            and because layer-block solves can cache it (:mod:`mldd.problems.pinn.prefix`).

    Raises:
        ValueError: for any invalid option.

    References:
        [KKKK24] A. Kopaničáková, H. Kothari, G. E. Karniadakis, R. Krause, SIAM J. Sci. Comput.
        2024, arXiv:2306.17648.
    """

    name = "pinn"
    variables: ClassVar[tuple[str, str]] = ("x", "t")
    bounds: ClassVar[tuple[tuple[float, float], tuple[float, float]]] = ((-1.0, 1.0), (0.0, 1.0))
    default_width: ClassVar[int] = 20
    default_depth: ClassVar[int] = 4
    #: Bump when a solver changes its output, so stale cached files are not reused.
    reference_version: ClassVar[str] = "1"
    #: Cheap closed-form references skip the disk cache.
    reference_cached: ClassVar[bool] = True
    #: Second-order operators the residual needs: name ↦ coefficients ``a`` of
    #: ``Σ_i a_i ∂²u/∂x_i²`` (``{"u_xx": (1.0, 0.0)}``, ``{"laplacian": (1.0, 1.0)}``).
    second_order: ClassVar[dict[str, tuple[float, ...]]] = {}

    def __init__(
        self,
        *,
        n_collocation: int = 10_000,
        sampler: str = "hammersley",
        width: int | None = None,
        depth: int | None = None,
        activation: str = "tanh",
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
        seed: int = 0,
        reference_options: Mapping[str, Any] | None = None,
        use_cache: bool = True,
        derivatives: str = "jet",
        network: str = "mlp",
    ) -> None:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}")
        self.network = network
        if derivatives not in DERIVATIVES:
            raise ValueError(
                f"unknown derivatives {derivatives!r}; choose one of {', '.join(DERIVATIVES)}"
            )
        self.derivatives = derivatives
        self._ansatz_cache = AnsatzCache()
        self.n_collocation = _positive_int("n_collocation", n_collocation)
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        self.sampler = sampler
        self.width = _positive_int("width", self.default_width if width is None else width)
        self.depth = _positive_int("depth", self.default_depth if depth is None else depth)
        activation_function(activation)  # raises ValueError listing the known names
        self.activation = activation
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        self.dtype = dtype
        self.device = as_device(device)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {seed!r}")
        self.seed = int(seed)
        opts = dict(reference_options or {})
        allowed = set(inspect.signature(self.reference_solver()).parameters)
        unknown = sorted(set(opts) - allowed)
        if unknown:
            raise ValueError(
                f"unknown reference_options {unknown} for {self.name!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )
        self.reference_options = opts
        self.use_cache = bool(use_cache)
        self.collocation = sample(
            sampler, self.n_collocation, list(self.bounds), seed=self.seed, dtype=dtype
        ).to(self.device)
        self._reference: tuple[Tensor, Tensor] | None = None
        self._reference_grid: tuple[Array, Array, Array] | None = None

    # ----------------------------------------------------------------------------- model
    def build_model(self, seed: int | None = None) -> nn.Module:
        """The problem's network ``(2 → width × depth → 1)`` in :attr:`dtype` on :attr:`device`: an
        :class:`~mldd.models.MLP`, or a :class:`~mldd.models.ResidualMLP` with ``network="resmlp"``.

        With ``seed`` the weights are drawn under ``torch.manual_seed(seed)`` inside
        :func:`torch.random.fork_rng`, so the global RNG state is left untouched.
        """
        if seed is None:
            return self._make_mlp()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._make_mlp()

    def _make_mlp(self) -> nn.Module:
        # built on the CPU and then moved, so a seed gives the same weights on every device
        net: nn.Module
        if self.network == "resmlp":
            net = ResidualMLP(2, 1, width=self.width, depth=self.depth,
                              activation=self.activation, dtype=self.dtype)
        else:
            net = MLP(2, 1, width=self.width, depth=self.depth, activation=self.activation,
                      dtype=self.dtype)
        return net.to(self.device)

    @staticmethod
    def _net(model: nn.Module, x: Tensor) -> Tensor:
        """Network output as an ``(N, 1)`` column."""
        return model(x).reshape(-1, 1)

    # ----------------------------------------------------------------------------- residual
    def derivatives_at(self, model: nn.Module, x: Tensor) -> tuple[Tensor, PointDerivatives]:
        """``(X, D)``: ``u``, ``∇u`` and the :attr:`second_order` operators at ``x``.

        ``X`` holds the points (the autograd leaf on the autograd route). The jet route is taken
        when :attr:`derivatives` is ``"jet"``, the model has jets and ``transform`` is affine in
        the network output; otherwise nested autograd.
        """
        if self.derivatives == "jet" and has_jets(model):
            try:
                return x, jet_derivatives(self, model, x, self._ansatz_cache)
            except NonAffineAnsatzError as err:
                _log.debug("%s; falling back to autograd", err)
        return autograd_derivatives(self, model, x)

    def residual(self, model: nn.Module, x: Tensor) -> Tensor:
        """The PDE residual at ``x`` (shape ``(N,)``), differentiable in the weights."""
        X, D = self.derivatives_at(model, x)
        return self.pde_residual(X, D)

    @abstractmethod
    def pde_residual(self, x: Tensor, d: PointDerivatives) -> Tensor:
        """The PDE residual from the points ``x`` and the derivatives ``d`` at them."""

    # ----------------------------------------------------------------------------- reference
    @classmethod
    @abstractmethod
    def reference_solver(cls) -> Callable[..., dict[str, Array]]:
        """The function computing ``{variables[0]: axis, variables[1]: axis, "u": grid}``."""

    def reference_grid(self) -> tuple[Array, Array, Array]:
        """``(axis0, axis1, U)`` as float64 arrays, ``U[i, j] = u(axis0[i], axis1[j])``."""
        if self._reference_grid is None:
            a, b = self.variables
            solver = self.reference_solver()

            def compute() -> dict[str, Array]:
                return solver(**self.reference_options)

            if self.reference_cached:
                params = {"version": self.reference_version, **self.reference_options}
                arrays = load_or_compute(
                    self.name, params, compute, keys=(a, b, "u"), use_cache=self.use_cache
                )
            else:
                arrays = compute()
            self._reference_grid = (arrays[a], arrays[b], arrays["u"])
        return self._reference_grid

    def reference(self) -> tuple[Tensor, Tensor]:
        """``(points (M, 2), values (M,))`` on the reference grid, in :attr:`dtype`.

        Points are ordered with the second variable varying fastest (``meshgrid(indexing="ij")``).
        """
        if self._reference is None:
            a0, a1, U = self.reference_grid()
            g0, g1 = np.meshgrid(a0, a1, indexing="ij")
            pts = np.stack([g0.reshape(-1), g1.reshape(-1)], axis=1)
            self._reference = (
                torch.as_tensor(pts, dtype=self.dtype, device=self.device),
                torch.as_tensor(U.reshape(-1), dtype=self.dtype, device=self.device),
            )
        return self._reference

    def describe(self) -> dict[str, Any]:
        """The problem's settings (for configs and reports)."""
        out = super().describe()
        out.update(
            variables=list(self.variables),
            bounds=[list(b) for b in self.bounds],
            n_collocation=self.n_collocation,
            sampler=self.sampler,
            width=self.width,
            depth=self.depth,
            activation=self.activation,
            seed=self.seed,
            reference_options=dict(self.reference_options),
            derivatives=self.derivatives,
            network=self.network,
        )
        return out


class UnitSquareDirichletPINN(GridPINN):
    """A 2-D problem on (0,1)² with ``u = 0`` on the boundary, hard-constrained by the distance
    factor ``u = x(1 − x) y(1 − y) N(x, y)`` (zero on ∂Ω, no knowledge of the interior)."""

    second_order: ClassVar[dict[str, tuple[float, ...]]] = {"laplacian": (1.0, 1.0)}

    def transform(self, model: nn.Module, x: Tensor) -> Tensor:
        """``u = x(1 − x) y(1 − y) N(x, y)``, shape ``(N,)``."""
        xs, ys = x[:, 0:1], x[:, 1:2]
        return (xs * (1.0 - xs) * ys * (1.0 - ys) * self._net(model, x)).reshape(-1)

    def gradient_and_laplacian(self, model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(X, ∇u, Δu)`` at ``x`` (``X``: the points the derivatives belong to)."""
        X, d = self.derivatives_at(model, x)
        return X, d.grad, d.second["laplacian"]
