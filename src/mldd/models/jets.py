"""Forward propagation of input derivatives ("jets") through MLPs, for cheap PINN residuals.

A PINN residual needs the network value and some of its derivatives with respect to the *inputs*
(``N_x``, ``N_t``, ``N_xx``, ...). Nested ``torch.autograd.grad(create_graph=True)`` computes them
by differentiating backward passes, and the loss gradient then differentiates those again. Here
the derivatives are instead carried forward, layer by layer, in one pass (Taylor-mode / forward
propagation of a second-order jet [GW08, BJD19]); the loss gradient is then ONE ordinary backward
pass through that forward pass.

Channels. For inputs ``x ∈ R^K`` a jet of a hidden vector ``h(x)`` holds

* channel 0: the value ``h``;
* channels ``1 … K``: the first derivatives ``∂_i h`` (all input directions);
* channels ``K+1 … K+m``: ``m`` second-order operators ``L_j h = Σ_i c_{ji} ∂_ii h``, linear
  combinations of *diagonal* second derivatives (``u_xx``: ``c = (1, 0)``; the Laplacian
  ``c = (1, 1)``; the wave operator ``u_tt − u_xx``: ``c = (−1, 1)``). One channel per operator,
  not per second derivative, so a Laplacian costs one channel, not two (as in the "forward
  Laplacian" of [LWY+23]).

Propagation rules (applied to every channel at once):

* affine ``z = W h + b``: ``z = W h + b``, ``∂_i z = W ∂_i h``, ``L_j z = W L_j h`` — ONE matmul
  for all channels (the bias only enters channel 0);
* activation ``a = σ(z)`` (elementwise): ``a = σ(z)``, ``∂_i a = σ'(z) ∂_i z``,
  ``L_j a = σ'(z) L_j z + σ''(z) Σ_i c_{ji} (∂_i z)²``;
* residual block ``y + h σ(W y + b)``: channel-wise sum.

Layout. A jet is stored *feature-major* as a ``(features, channels, points)`` tensor, so each
affine layer is the single GEMM ``W @ H.reshape(features, channels·points)`` whose long dimension
is the points. With the narrow layers of PINNs (20–64 neurons) this product ran about 1.7×
faster on the project's 2-core CPU than the ``(points, features) @ Wᵀ`` of ``nn.Linear``, and the
jet loss gradient about 1.8× slower with a channel-first ``(channels, features, points)``
layout (measured side by side). The activation step is one :class:`torch.autograd.Function`
with a hand-written backward (formulas in :class:`_ActivationJet`): the ordinary gradient uses a
fast branch that reuses ``σ'``, ``σ''`` from the forward pass and writes into one buffer; when a
graph of the backward is requested (Hessian-vector products), a branch made of differentiable
torch operations on the saved inputs and output runs instead, so double backward is exact.

Cost. Per hidden layer and ``C = 1 + K + m`` channels the loss gradient takes ``3C`` matrix
products the size of one ``nn.Linear`` over the points (forward, input and weight gradients:
12 for Burgers) and about 30 elementwise passes over ``width × N`` arrays; nested autograd on
Burgers takes about 10.5 such products and 40 passes (profiler counts). The jet wins by its
layout and its fewer passes, moderately for one second derivative (Burgers, Allen–Cahn:
1.3–1.4× on the project's 2-core machine, parity on a 16-core Xeon) and more when the
residual needs several (Klein–Gordon: 1.8–1.9× on both), see
:mod:`mldd.problems.pinn.derivative_timing`. The jet also makes the input derivatives at a
hidden layer an explicit tensor, which is what lets layer-local solves cache them
(:mod:`mldd.problems.pinn.prefix`).

Supported models: :class:`~mldd.models.MLP` and :class:`~mldd.models.ResidualMLP` with the
activations in :data:`JET_ACTIVATIONS` (:func:`supports_jets`). Others must use autograd.

References:
    [GW08] A. Griewank, A. Walther, Evaluating Derivatives, 2nd ed., SIAM 2008 (ch. 13, Taylor
    propagation).
    [BJD19] J. Bettencourt, M. J. Johnson, D. Duvenaud, Taylor-mode automatic differentiation
    for higher-order derivatives in JAX, NeurIPS 2019 Program Transformations workshop.
    [LWY+23] R. Li et al., Forward Laplacian: a new computational framework for neural
    network-based variational Monte Carlo, arXiv:2307.08214, 2023.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mldd.models.mlp import MLP
from mldd.models.residual_mlp import ResidualMLP
from mldd.validation import check_int

_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ------------------------------------------------------------------------------ activations
# Each activation gives σ(a), then (σ', σ'') from (a, σ(a)) and σ''' from (a, σ(a), σ'(a)).
# tanh and sigmoid need σ(a) alone: their transcendental function runs once per layer.
def _tanh_d12(a: Tensor | None, f0: Tensor) -> tuple[Tensor, Tensor]:
    f1 = 1.0 - f0 * f0  # σ' = 1 − t²
    return f1, (f0 * f1).mul_(-2.0)  # σ'' = −2tσ'


def _tanh_d3(a: Tensor | None, f0: Tensor, f1: Tensor) -> Tensor:
    return (4.0 - 6.0 * f1).mul_(f1)  # σ''' = σ'(6t² − 2) = σ'(4 − 6σ')


def _sin_d12(a: Tensor | None, f0: Tensor) -> tuple[Tensor, Tensor]:
    assert a is not None
    return torch.cos(a), -f0


def _sin_d3(a: Tensor | None, f0: Tensor, f1: Tensor) -> Tensor:
    return -f1


def _sigmoid_d12(a: Tensor | None, f0: Tensor) -> tuple[Tensor, Tensor]:
    f1 = f0 * (1.0 - f0)  # σ' = p(1 − p)
    return f1, f1 * (1.0 - 2.0 * f0)  # σ'' = σ'(1 − 2p)


def _sigmoid_d3(a: Tensor | None, f0: Tensor, f1: Tensor) -> Tensor:
    return f1 * (1.0 - 6.0 * f1)  # σ''' = σ'(1 − 6p + 6p²) = σ'(1 − 6σ')


def _gelu_d12(a: Tensor | None, f0: Tensor) -> tuple[Tensor, Tensor]:
    # Exact GELU a·Φ(a) (torch's default): σ' = Φ + aφ, σ'' = φ(2 − a²).
    assert a is not None
    phi = torch.exp(-0.5 * a * a) * _INV_SQRT_2PI
    cdf = 0.5 * (1.0 + torch.erf(a * (1.0 / math.sqrt(2.0))))
    return cdf + a * phi, phi * (2.0 - a * a)


def _gelu_d3(a: Tensor | None, f0: Tensor, f1: Tensor) -> Tensor:
    assert a is not None
    a2 = a * a
    return a * torch.exp(-0.5 * a2) * _INV_SQRT_2PI * (a2 - 4.0)  # σ''' = aφ(a² − 4)


@dataclass(frozen=True)
class _Activation:
    name: str
    value: Callable[[Tensor], Tensor]
    #: ``(a, σ(a)) ↦ (σ'(a), σ''(a))``.
    d12: Callable[[Tensor | None, Tensor], tuple[Tensor, Tensor]]
    #: ``(a, σ(a), σ'(a)) ↦ σ'''(a)``.
    d3: Callable[[Tensor | None, Tensor, Tensor], Tensor]
    #: whether the derivatives need the pre-activation ``a`` (else ``σ(a)`` suffices).
    uses_input: bool
    #: ``σ`` with an ``out=`` argument (writes straight into the jet), when torch has one.
    value_out: Callable[..., Tensor] | None = None


_JET_ACTIVATIONS: dict[str, _Activation] = {
    "tanh": _Activation("tanh", torch.tanh, _tanh_d12, _tanh_d3, False, torch.tanh),
    "sin": _Activation("sin", torch.sin, _sin_d12, _sin_d3, True, torch.sin),
    "sigmoid": _Activation("sigmoid", torch.sigmoid, _sigmoid_d12, _sigmoid_d3, False,
                           torch.sigmoid),
    "gelu": _Activation("gelu", nn.functional.gelu, _gelu_d12, _gelu_d3, True),
}

#: Activation names whose jets are implemented.
JET_ACTIVATIONS: tuple[str, ...] = tuple(_JET_ACTIVATIONS)


# ------------------------------------------------------------------------------ specification
class JetSpec(NamedTuple):
    """Which derivatives a jet carries.

    Attributes:
        n_inputs: input dimension ``K``.
        first: carry the ``K`` first derivatives (required when ``operators`` is not empty).
        operators: second-order operators, each the ``K`` coefficients ``c_j`` of
            ``L_j = Σ_i c_{ji} ∂_ii``.
    """

    n_inputs: int
    first: bool = True
    operators: tuple[tuple[float, ...], ...] = ()

    @property
    def n_first(self) -> int:
        """Number of first-derivative channels (``K`` or 0)."""
        return self.n_inputs if self.first else 0

    @property
    def channels(self) -> int:
        """``1 + n_first + m``."""
        return 1 + self.n_first + len(self.operators)


def make_spec(
    n_inputs: int, operators: Sequence[Sequence[float]] = (), *, first: bool = True
) -> JetSpec:
    """A validated :class:`JetSpec`.

    Raises:
        ValueError: for a non-positive ``n_inputs``, an operator of the wrong length or without a
            non-zero coefficient, or operators without first derivatives.
    """
    check_int("n_inputs", n_inputs)
    ops = tuple(tuple(float(c) for c in op) for op in operators)
    for op in ops:
        if len(op) != n_inputs:
            raise ValueError(
                f"each operator needs {n_inputs} coefficients (one per input), got {op}"
            )
        if not any(c != 0.0 for c in op):
            raise ValueError(f"operator {op} has no non-zero coefficient")
    if ops and not first:
        raise ValueError("second-order operators need the first derivatives (first=True)")
    return JetSpec(n_inputs, bool(first), ops)


class Jet(NamedTuple):
    """A network output and its input derivatives.

    Attributes:
        value: ``(N, out)``.
        first: ``(K, N, out)`` first derivatives ``∂_i`` (``(0, N, out)`` if not carried).
        second: ``(m, N, out)``, one slice per operator of the spec.
    """

    value: Tensor
    first: Tensor
    second: Tensor


# ------------------------------------------------------------------------------ the activation step
class _ActivationJet(torch.autograd.Function):
    """``H = σ-jet(Y + b e_0)`` on a ``(d, C, N)`` jet, with a hand-written backward.

    Forward, with ``a = Y_0 + b``, ``Z_i`` the first-derivative channels, ``Z_j`` the operator
    channels and ``q_j = Σ_i c_{ji} Z_i²``::

        H_0 = σ(a),  H_i = σ'(a) Z_i,  H_j = σ'(a) Z_j + σ''(a) q_j.

    Backward, for output gradients ``G``::

        ∂a  = σ' G_0 + σ'' Σ_{c ≥ 1} G_c Z_c + σ''' Σ_j G_j q_j
        ∂Z_i = σ' G_i + 2 σ'' Z_i Σ_j c_{ji} G_j
        ∂Z_j = σ' G_j,                ∂b = Σ_points ∂a.

    Only torch operations on saved inputs/outputs are used, so the backward is itself
    differentiable (double backward for Hessian-vector products).
    """

    @staticmethod
    def forward(
        ctx: Any, Y: Tensor, b: Tensor, act: _Activation, spec: JetSpec
    ) -> Tensor:
        a = Y[:, 0] + b[:, None]
        out = torch.empty_like(Y)
        f0 = out[:, 0]
        if act.value_out is not None:
            act.value_out(a, out=f0)
        else:
            f0.copy_(act.value(a))
        ctx.act, ctx.spec = act, spec
        ctx.save_for_backward(Y, b, out)
        ctx.fast = None
        if Y.shape[1] == 1:
            return out
        f1, f2 = act.d12(a, f0)
        torch.mul(Y[:, 1:], f1[:, None], out=out[:, 1:])
        k = spec.n_first
        qs = []
        for j, op in enumerate(spec.operators):
            q = _quadratic(Y, op)
            out[:, 1 + k + j].addcmul_(f2, q)
            qs.append(q)
        # Kept for the ordinary (first-order) backward; the double-differentiable branch
        # recomputes them from the saved inputs and output instead.
        ctx.fast = (a if act.uses_input else None, f1, f2, qs)
        return out

    @staticmethod
    def backward(ctx: Any, G: Tensor) -> tuple[Tensor | None, ...]:
        act: _Activation = ctx.act
        spec: JetSpec = ctx.spec
        if ctx.fast is not None and not torch.is_grad_enabled():
            Y, _, out = ctx.saved_tensors
            a, f1, f2, qs = ctx.fast
            f3 = act.d3(a, out[:, 0], f1) if qs else None
            dY, db = _activation_backward_inplace(G, Y, f1, f2, f3, qs, spec)
            return dY, db, None, None
        Y, b, out = ctx.saved_tensors
        a = Y[:, 0] + b[:, None] if act.uses_input else None
        f0 = out[:, 0]
        f1, f2 = act.d12(a, f0)
        if Y.shape[1] == 1:
            da = f1 * G[:, 0]
            return da[:, None], da.sum(1), None, None
        Gr, Yr = G[:, 1:], Y[:, 1:]
        da = f1 * G[:, 0] + f2 * (Gr * Yr).sum(1)
        k = spec.n_first
        weights: list[Tensor | None] = [None] * k
        f3 = act.d3(a, f0, f1) if spec.operators else None
        for j, op in enumerate(spec.operators):
            assert f3 is not None
            Gj = G[:, 1 + k + j]
            da = da + f3 * Gj * _quadratic(Y, op)
            for i, c in enumerate(op):
                if c != 0.0:
                    w = Gj if c == 1.0 else c * Gj
                    prev = weights[i]
                    weights[i] = w if prev is None else prev + w
        dYr = f1[:, None] * Gr
        if any(w is not None for w in weights):
            parts = [dYr[:, i] if w is None else dYr[:, i] + 2.0 * f2 * Y[:, 1 + i] * w
                     for i, w in enumerate(weights)]
            dYr = torch.cat([torch.stack(parts, 1), dYr[:, k:]], 1)
        dY = torch.cat([da[:, None], dYr], 1)
        return dY, da.sum(1), None, None


def _activation_backward_inplace(
    G: Tensor, Y: Tensor, f1: Tensor, f2: Tensor, f3: Tensor | None, qs: list[Tensor],
    spec: JetSpec,
) -> tuple[Tensor, Tensor]:
    """The backward of :class:`_ActivationJet` written into one preallocated buffer.

    Same formulas as the differentiable branch, from the forward's saved ``σ'``, ``σ''`` and
    ``q_j``; used when no graph of the backward is needed (the ordinary gradient), where it
    saves the recomputations, temporaries and concatenations.
    """
    dY = torch.empty_like(Y)
    da = dY[:, 0]
    C = Y.shape[1]
    acc = G[:, 1] * Y[:, 1]
    for ch in range(2, C):
        acc.addcmul_(G[:, ch], Y[:, ch])
    torch.mul(f2, acc, out=da)
    da.addcmul_(f1, G[:, 0])
    torch.mul(G[:, 1:], f1[:, None], out=dY[:, 1:])
    k = spec.n_first
    for j, op in enumerate(spec.operators):
        assert f3 is not None
        Gj = G[:, 1 + k + j]
        torch.mul(Gj, qs[j], out=acc)
        da.addcmul_(f3, acc)
        torch.mul(f2, Gj, out=acc)
        for i, c in enumerate(op):
            if c != 0.0:
                dY[:, 1 + i].addcmul_(acc, Y[:, 1 + i], value=2.0 * c)
    return dY, da.sum(1)


def _quadratic(Y: Tensor, op: tuple[float, ...]) -> Tensor:
    """``Σ_i c_i Z_i²`` over the first-derivative channels ``Z_i = Y[:, 1 + i]``."""
    q: Tensor | None = None
    for i, c in enumerate(op):
        if c == 0.0:
            continue
        zi = Y[:, 1 + i]
        term = zi * zi if c == 1.0 else c * zi * zi
        q = term if q is None else q + term
    assert q is not None  # make_spec rejects all-zero operators
    return q


# ------------------------------------------------------------------------------ models
def supports_jets(model: nn.Module) -> bool:
    """Whether :func:`forward_jet` handles ``model``: an :class:`~mldd.models.MLP` or a
    :class:`~mldd.models.ResidualMLP` with an activation in :data:`JET_ACTIVATIONS`."""
    return (
        type(model) in (MLP, ResidualMLP)
        and getattr(model, "activation_name", None) in _JET_ACTIVATIONS
    )


def _check(model: nn.Module) -> None:
    if not supports_jets(model):
        name = getattr(model, "activation_name", None)
        raise ValueError(
            f"jets support MLP and ResidualMLP with activation in {list(JET_ACTIVATIONS)}; got "
            f"{type(model).__name__}" + (f" with activation {name!r}" if name else "")
        )


def layer_modules(model: nn.Module) -> list[nn.Linear]:
    """The affine layers of a supported model in forward (and ``parameters()``) order.

    For :class:`~mldd.models.MLP`: ``model.layers``; for :class:`~mldd.models.ResidualMLP`:
    ``[input_layer, *blocks, output_layer]``. "Layer ``i``" in this module means entry ``i``.

    Raises:
        ValueError: for an unsupported model.
    """
    _check(model)
    if isinstance(model, ResidualMLP):
        mods: list[Any] = [model.input_layer, *model.blocks, model.output_layer]
    else:
        mods = list(model.layers)  # type: ignore[arg-type]
    return mods


def input_jet(x: Tensor, spec: JetSpec) -> Tensor:
    """The jet of the identity map at points ``x`` (``(N, K)``): a ``(K, C, N)`` tensor.

    Value channel ``xᵀ``, first-derivative channel ``i`` the unit vector ``e_i``, operator
    channels zero.

    Raises:
        ValueError: if ``x`` is not ``(N, spec.n_inputs)``.
    """
    if x.dim() != 2 or x.shape[1] != spec.n_inputs:
        raise ValueError(
            f"points must have shape (N, {spec.n_inputs}), got {tuple(x.shape)}"
        )
    K, N = spec.n_inputs, x.shape[0]
    H = torch.zeros(K, spec.channels, N, dtype=x.dtype, device=x.device)
    H[:, 0] = x.detach().T
    for i in range(spec.n_first):
        H[i, 1 + i] = 1.0
    return H


def _affine(H: Tensor, W: Tensor) -> Tensor:
    d_in, C, N = H.shape
    return (W @ H.reshape(d_in, C * N)).view(W.shape[0], C, N)


def _params(lin: nn.Linear, frozen: bool) -> tuple[Tensor, Tensor]:
    W, b = lin.weight, lin.bias
    assert b is not None
    return (W.detach(), b.detach()) if frozen else (W, b)


def propagate(
    model: nn.Module,
    H: Tensor,
    spec: JetSpec,
    start: int = 0,
    stop: int | None = None,
    *,
    frozen: Callable[[int], bool] | None = None,
) -> Tensor:
    """Push a jet through layers ``start … stop−1`` of ``model`` (see :func:`layer_modules`).

    ``H`` is the jet at the input of layer ``start`` (``(d, C, N)``); the result is the jet at the
    input of layer ``stop`` — for ``stop = L`` (default) the output ``(out, C, N)``, bias included.

    Args:
        model: a supported model.
        H: the input jet of layer ``start``.
        spec: the jet's channels (must match ``H``).
        start: first layer to apply.
        stop: one past the last layer to apply (default: all).
        frozen: ``frozen(i)`` true means layer ``i``'s weights enter as constants (detached):
            the backward then propagates through the layer but computes no weight gradient.

    Raises:
        ValueError: for an unsupported model or an invalid layer range.
    """
    layers = layer_modules(model)
    L = len(layers)
    stop = L if stop is None else stop
    if not 0 <= start <= stop <= L:
        raise ValueError(f"need 0 <= start <= stop <= {L}, got start={start}, stop={stop}")
    if H.dim() != 3 or H.shape[1] != spec.channels:
        raise ValueError(
            f"jet must have shape (features, {spec.channels}, N), got {tuple(H.shape)}"
        )
    act = _JET_ACTIVATIONS[model.activation_name]  # type: ignore[index]
    step = float(model.h) if isinstance(model, ResidualMLP) else None
    for i in range(start, stop):
        W, b = _params(layers[i], frozen is not None and frozen(i))
        Y = _affine(H, W)
        if i == L - 1:
            # Output layer: no activation; the bias enters the value channel only.
            H = torch.cat([(Y[:, 0] + b[:, None])[:, None], Y[:, 1:]], 1)
        elif step is not None and i > 0:
            H = H + step * _ActivationJet.apply(Y, b, act, spec)
        else:
            H = _ActivationJet.apply(Y, b, act, spec)
    return H


def split_output(H: Tensor, spec: JetSpec) -> Jet:
    """Split an output jet ``(out, C, N)`` into a :class:`Jet` (views, no copies)."""
    k = spec.n_first
    return Jet(
        value=H[:, 0].T,
        first=H[:, 1 : 1 + k].permute(1, 2, 0),
        second=H[:, 1 + k :].permute(1, 2, 0),
    )


def forward_jet(model: nn.Module, x: Tensor, spec: JetSpec) -> Jet:
    """The network output at ``x`` with the input derivatives of ``spec``, in one forward pass.

    Equals ``model(x)``, ``∂_i model(x)`` and ``Σ_i c_{ji} ∂_ii model(x)`` (computed by autograd)
    to rounding; the result is differentiable with respect to the weights (and twice).

    Args:
        model: a supported model (:func:`supports_jets`).
        x: points ``(N, K)``; derivatives are taken with respect to them, but ``x`` itself is
            treated as data (no gradient flows to it).
        spec: the derivatives to carry (:func:`make_spec`).

    Raises:
        ValueError: for an unsupported model or points of the wrong shape.
    """
    _check(model)
    return split_output(propagate(model, input_jet(x, spec), spec), spec)


@runtime_checkable
class JetModel(Protocol):
    """A module that computes its own jets (e.g. a network seen from a layer block,
    :mod:`mldd.problems.pinn.prefix`)."""

    def forward_jet(self, x: Tensor, spec: JetSpec) -> Jet: ...


def has_jets(model: nn.Module) -> bool:
    """Whether :func:`network_jet` can serve ``model``."""
    return supports_jets(model) or isinstance(model, JetModel)


def network_jet(model: nn.Module, x: Tensor, spec: JetSpec) -> Jet:
    """``model.forward_jet(x, spec)`` for a :class:`JetModel`, else :func:`forward_jet`."""
    if isinstance(model, JetModel):
        return model.forward_jet(x, spec)
    return forward_jet(model, x, spec)
