"""The derivatives a PINN residual needs, by forward jets (fast) or by nested autograd (general).

A PINN problem of this package writes its solution as an affine *ansatz* in the network output,

.. math::  u(x) = g(x) + c(x)\\,N(x),

(hard constraints: ``g`` carries the initial/boundary data, ``c`` vanishes where they are
imposed), and its residual needs ``u``, the gradient ``∇u`` and a few second-order operators
``L_j u = Σ_i a_{ji} ∂_ii u`` (``u_xx``, the Laplacian, ``u_tt − u_xx``). Two ways to get them:

* :func:`jet_derivatives` — the network's jet ``(N, ∂_i N, L_j N)`` in one forward pass
  (:mod:`mldd.models.jets`) and the product rule for the ansatz::

      u     = g + c N
      ∂_i u = ∂_i g + (∂_i c) N + c ∂_i N
      L_j u = L_j g + (L_j c) N + 2 Σ_i a_{ji} (∂_i c)(∂_i N) + c L_j N

  ``g``, ``c`` and their derivatives depend on the points only: they are computed once per point
  set by autograd on the problem's own ``transform`` with constant "networks" ``N ≡ 0`` and
  ``N ≡ 1`` (so the ansatz is written once, in ``transform``), checked to be affine with a third
  constant, and cached (:class:`AnsatzCache`).
* :func:`autograd_derivatives` — nested ``torch.autograd.grad(create_graph=True)`` on
  ``transform``; works for any model and any ansatz.

Both return a :class:`PointDerivatives`; the problems' ``pde_residual`` reads only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from mldd.models.jets import JetSpec, has_jets, make_spec, network_jet


@dataclass(frozen=True)
class PointDerivatives:
    """The solution and its derivatives at ``N`` points.

    Attributes:
        u: ``(N,)`` values.
        grad: ``(N, K)`` first derivatives, column ``i`` = ``∂u/∂x_i``.
        second: operator name ↦ ``(N,)`` values of ``Σ_i a_i ∂_ii u``.
    """

    u: Tensor
    grad: Tensor
    second: Mapping[str, Tensor]


class AnsatzProblem(Protocol):
    """What the derivative routines need from a problem."""

    @property
    def second_order(self) -> Mapping[str, tuple[float, ...]]: ...

    def transform(self, model: nn.Module, x: Tensor) -> Tensor: ...


class NonAffineAnsatzError(ValueError):
    """``transform`` is not of the form ``g(x) + c(x)·N(x)``."""


def operator_spec(problem: AnsatzProblem, n_inputs: int) -> JetSpec:
    """The :class:`~mldd.models.jets.JetSpec` of a problem's ``second_order`` operators."""
    return make_spec(n_inputs, list(problem.second_order.values()))


# ------------------------------------------------------------------------------ ansatz
class _Constant(nn.Module):
    """A stand-in network ``N ≡ value`` used to read ``g`` and ``c`` off ``transform``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x: Tensor) -> Tensor:
        return torch.full((x.shape[0], 1), self.value, dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class ScalarJet:
    """A scalar field's ``value (N,)``, ``first (K, N)`` and operator values ``second (m, N)``."""

    value: Tensor
    first: Tensor
    second: Tensor


def _scalar_jet(u: Tensor, X: Tensor, spec: JetSpec) -> ScalarJet:
    """``u``'s jet at the leaf ``X`` by nested autograd (detached: it is data, not weights)."""
    N, K = X.shape
    zeros = torch.zeros(N, dtype=X.dtype, device=X.device)
    if not u.requires_grad:
        first = torch.zeros(K, N, dtype=X.dtype, device=X.device)
        none = torch.zeros(len(spec.operators), N, dtype=X.dtype, device=X.device)
        return ScalarJet(u.detach(), first, none)
    (g,) = torch.autograd.grad(u.sum(), X, create_graph=True, allow_unused=True)
    g = torch.zeros_like(X) if g is None else g
    diag: dict[int, Tensor] = {}
    for i in sorted({i for op in spec.operators for i, c in enumerate(op) if c != 0.0}):
        if g.requires_grad:
            (h,) = torch.autograd.grad(g[:, i].sum(), X, retain_graph=True, allow_unused=True)
        else:
            h = None
        diag[i] = zeros if h is None else h[:, i]
    second = [sum((c * diag[i] for i, c in enumerate(op) if c != 0.0), zeros)
              for op in spec.operators]
    sec = torch.stack(second) if second else torch.zeros(0, N, dtype=X.dtype, device=X.device)
    return ScalarJet(u.detach(), g.detach().T.contiguous(), sec.detach())


def ansatz_jets(problem: AnsatzProblem, x: Tensor, spec: JetSpec) -> tuple[ScalarJet, ScalarJet]:
    """The jets of ``g`` and ``c`` in ``transform(model, x) = g(x) + c(x)·model(x)``.

    Raises:
        NonAffineAnsatzError: if ``transform`` at ``N ≡ 0.37`` differs from ``g + 0.37 c``
            (then the jet route does not apply; use autograd).
    """
    with torch.enable_grad():
        X = x.detach().requires_grad_(True)
        g = problem.transform(_Constant(0.0), X).reshape(-1)
        gc = problem.transform(_Constant(1.0), X).reshape(-1)
        c = gc - g
        probe = problem.transform(_Constant(0.37), X).reshape(-1).detach()
        scale = float(g.detach().abs().max()) + float(c.detach().abs().max()) + 1.0
        tol = 1e3 * torch.finfo(x.dtype).eps * scale
        if float((probe - (g + 0.37 * c).detach()).abs().max()) > tol:
            raise NonAffineAnsatzError(
                f"{type(problem).__name__}.transform is not affine in the network output "
                "(u = g(x) + c(x)·N(x)); the jet route does not apply"
            )
        return _scalar_jet(g, X, spec), _scalar_jet(c, X, spec)


class AnsatzCache:
    """The ansatz jets of the last point set seen, reused while that tensor is unchanged.

    Keyed by tensor identity and version (the collocation points of a run are one tensor);
    another tensor recomputes (cheap: a few elementwise operations).
    """

    def __init__(self) -> None:
        self._key: tuple[Tensor, int, JetSpec] | None = None
        self._value: tuple[ScalarJet, ScalarJet] | None = None

    def get(self, problem: AnsatzProblem, x: Tensor, spec: JetSpec) -> tuple[ScalarJet, ScalarJet]:
        """``ansatz_jets(problem, x, spec)``, cached."""
        key = self._key
        if (self._value is not None and key is not None and key[0] is x
                and key[1] == x._version and key[2] == spec):
            return self._value
        value = ansatz_jets(problem, x, spec)
        self._key, self._value = (x, x._version, spec), value
        return value


# ------------------------------------------------------------------------------ derivatives
def jet_derivatives(
    problem: AnsatzProblem, model: nn.Module, x: Tensor, cache: AnsatzCache | None = None
) -> PointDerivatives:
    """``u``, ``∇u`` and the ``second_order`` operators by forward jets (see the module doc).

    Raises:
        ValueError: if ``model`` has no jets (:func:`mldd.models.jets.has_jets`).
        NonAffineAnsatzError: if the ansatz is not affine in the network output.
    """
    if not has_jets(model):
        raise ValueError(f"{type(model).__name__} has no jet implementation; use autograd")
    spec = operator_spec(problem, x.shape[1])
    g, c = (cache or AnsatzCache()).get(problem, x, spec)
    J = network_jet(model, x, spec)
    if J.value.shape[1] != 1:
        raise ValueError(f"a PINN network has one output, got {J.value.shape[1]}")
    n = J.value[:, 0]
    dn = J.first[:, :, 0]  # (K, N)
    u = g.value + c.value * n
    du = g.first + c.first * n + c.value * dn  # (K, N)
    second: dict[str, Tensor] = {}
    for j, (name, op) in enumerate(problem.second_order.items()):
        cross = sum((2.0 * a * c.first[i] * dn[i] for i, a in enumerate(op) if a != 0.0),
                    torch.zeros_like(n))
        second[name] = g.second[j] + c.second[j] * n + cross + c.value * J.second[j, :, 0]
    return PointDerivatives(u=u, grad=du.T, second=second)


def autograd_derivatives(
    problem: AnsatzProblem, model: nn.Module, x: Tensor
) -> tuple[Tensor, PointDerivatives]:
    """``(X, derivatives)`` by nested autograd; ``X`` is the leaf they were taken against.

    One ``torch.autograd.grad`` of ``u.sum()`` gives ``∇u``; one more per input direction that
    an operator uses gives ``∂_ii u``; all with ``create_graph=True`` so that the residual stays
    differentiable in the weights.
    """
    with torch.enable_grad():
        X = x.detach().requires_grad_(True)
        u = problem.transform(model, X).reshape(-1)
        (g,) = torch.autograd.grad(u.sum(), X, create_graph=True)
        ops = problem.second_order
        dirs = sorted({i for op in ops.values() for i, a in enumerate(op) if a != 0.0})
        diag = {i: torch.autograd.grad(g[:, i].sum(), X, create_graph=True)[0][:, i]
                for i in dirs}
        second = {
            name: sum((a * diag[i] if a != 1.0 else diag[i]
                       for i, a in enumerate(op) if a != 0.0), torch.zeros_like(u))
            for name, op in ops.items()
        }
    return X, PointDerivatives(u=u, grad=g, second=second)
