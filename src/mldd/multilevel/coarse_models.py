"""First-order coherent coarse models: what a coarse level minimises on behalf of a finer one.

Notation (docs/algorithms.md §2.2): the finer level is at ``x_l`` with loss ``f_l`` and gradient
``g_l``; ``R`` restricts gradients and ``Π`` injects iterates, so the coarse level starts at
``x_c0 = Π x_l`` with the *restricted gradient* ``g_R = R g_l``. The coarse network's own loss is
``f_c`` with ``f_c0 = f_c(x_c0)``, ``g_c0 = ∇f_c(x_c0)``, and ``s = x − x_c0``.

A coarse model ``h`` is *first-order coherent* when ``∇h(x_c0) = g_R``: the coarse level then sees
the fine gradient (as the restriction sees it) at its starting point, so a coarse decrease of
``h`` is, to first order, a fine decrease along the prolongated step [GST08]. Three models:

==============  ===========================================================  ================
model           ``h(x)``                                                     ``h(x_c0)``
==============  ===========================================================  ================
additive        ``f_c(x) + ⟨g_R − g_c0, s⟩ [+ (f_l − f_c0)]``                 ``f_c0`` [``f_l``]
multiplicative  ``(e + ⟨δ, s⟩)·f_c(x)``, ``e = f_l/f_c0``,                    ``f_l``
                ``δ = g_R/f_c0 − (f_l/f_c0²)·g_c0``
hybrid          ``γ·additive + (1 − γ)·multiplicative``                      ``γ·add + (1−γ)f_l``
==============  ===========================================================  ================

(the bracketed zeroth-order term of the additive model is optional; with it, every model has
``h(x_c0) = f_l``). The models are :class:`~mldd.objective.Objective` objects wrapping the coarse
objective ``f_c``; the evaluations they trigger are counted on ``f_c``'s counters (the cost of
the coarse level), each model keeping its own counters of calls made to it.

References:
    [GST08] Gratton, Sartenaer, Toint. Recursive trust-region methods for multiscale nonlinear
    optimization. SIAM J. Optim. 19(1), 2008.
    [K23] Kopaničáková. On the use of hybrid coarse-level models in multilevel minimization
    methods. Domain Decomposition Methods in Science and Engineering XXVII, 2023.
    arXiv:2211.15078.
    [N00] Nash. A multigrid approach to discretized optimization problems. Optim. Methods
    Softw. 14, 2000 (the additive τ-correction of MG/OPT).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from mldd.objective import EvalCounters, MatVec, Objective

__all__ = [
    "COARSE_MODELS",
    "AdditiveCoarseModel",
    "CoarseModel",
    "HybridCoarseModel",
    "MultiplicativeCoarseModel",
    "build_coarse_model",
]

#: The coarse-model kinds :func:`build_coarse_model` knows.
COARSE_MODELS: tuple[str, ...] = ("additive", "multiplicative", "hybrid")


class CoarseModel(Objective):
    """Base of the coherent coarse models: ``h`` built around ``x_c0`` from a coarse ``f_c``.

    Attributes:
        base: the coarse objective ``f_c``.
        x0: the coarse starting point ``x_c0``.
        g_restricted: the restricted fine gradient ``g_R = R g_l``.
        f0, g0: ``f_c(x_c0)`` and ``∇f_c(x_c0)`` (``f0`` is ``nan`` when the model needed only
            the gradient, i.e. the additive model without its zeroth-order term).
        value_at_start: ``h(x_c0)`` (known in closed form, no evaluation needed).
    """

    value_at_start: float

    def __init__(self, base: Objective, x0: Tensor, g_restricted: Tensor,
                 f0: float, g0: Tensor) -> None:
        super().__init__(EvalCounters())
        if g_restricted.shape != x0.shape or g0.shape != x0.shape:
            raise ValueError(
                f"coarse model: x0 {tuple(x0.shape)}, restricted gradient "
                f"{tuple(g_restricted.shape)} and coarse gradient {tuple(g0.shape)} must have "
                "the same shape (the coarse level's flat parameter vector)")
        self.base = base
        self.n = base.n
        self.dtype = base.dtype
        self.device = base.device
        self.x0 = x0.detach().clone()
        self.g_restricted = g_restricted.detach().clone()
        self.f0 = float(f0)
        self.g0 = g0.detach().clone()

    def describe(self) -> dict[str, Any]:
        """A small dict for logs: the model's kind and its scalars."""
        return {"kind": type(self).__name__, "f0": self.f0,
                "value_at_start": self.value_at_start}


class AdditiveCoarseModel(CoarseModel):
    """``h(x) = f_c(x) + ⟨v, x − x_c0⟩ + c`` with ``v = g_R − g_c0`` (the τ-correction).

    ``c = f_l − f_c0`` when ``f_fine`` is given (the optional zeroth-order term, so that
    ``h(x_c0) = f_l``), else ``c = 0``. ``∇h = ∇f_c + v`` and ``∇²h = ∇²f_c``, so the model adds
    no cost to an evaluation of ``f_c`` and Hessian-vector products pass through.

    Args:
        base: the coarse objective ``f_c``.
        x0: ``x_c0``.
        g_restricted: ``g_R``.
        g0: ``∇f_c(x_c0)``.
        f0: ``f_c(x_c0)``; needed only with ``f_fine`` (``nan`` otherwise).
        f_fine: the finer level's loss ``f_l`` for the zeroth-order term, or ``None``.

    References:
        [GST08] §2; [N00] (MG/OPT).
    """

    def __init__(self, base: Objective, x0: Tensor, g_restricted: Tensor, g0: Tensor,
                 f0: float = math.nan, f_fine: float | None = None) -> None:
        super().__init__(base, x0, g_restricted, f0, g0)
        self.v = self.g_restricted - self.g0
        self.zeroth_order = f_fine is not None
        if f_fine is not None:
            if not math.isfinite(self.f0):
                raise ValueError("the additive model's zeroth-order term f_l − f_c0 needs a "
                                 f"finite f_c(x_c0), got f0={f0!r}")
            self.shift = float(f_fine) - self.f0
            self.value_at_start = float(f_fine)
        else:
            self.shift = 0.0
            self.value_at_start = self.f0

    def _correction(self, x: Tensor) -> Tensor:
        return torch.dot(self.v, x - self.x0) + self.shift

    def _value(self, x: Tensor) -> Tensor:
        return self.base.value(x) + self._correction(x)

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.base.value_and_grad(x)
        return f + self._correction(x), g + self.v

    def _grad(self, x: Tensor) -> Tensor:
        return self.base.grad(x) + self.v

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        f, g, hv = self.base.linearize(x)
        return f + self._correction(x), g + self.v, hv


def _check_f0(f0: float, f_fine: float, min_abs_f0: float, kind: str) -> None:
    if not (math.isfinite(f0) and math.isfinite(f_fine)):
        raise ValueError(f"the {kind} coarse model needs finite f_l and f_c(x_c0), got "
                         f"f_l={f_fine!r}, f_c0={f0!r}")
    if abs(f0) <= min_abs_f0 * max(1.0, abs(f_fine)):
        raise ValueError(
            f"the {kind} coarse model divides by f_c(x_c0) = {f0!r}, which is zero or too small "
            f"(|f_c0| <= min_abs_f0·max(1, |f_l|) with min_abs_f0={min_abs_f0:g}); use the "
            "additive model, or shift the loss away from zero")


class MultiplicativeCoarseModel(CoarseModel):
    """``h(x) = (e + ⟨δ, x − x_c0⟩)·f_c(x)`` with ``e = f_l/f_c0``,
    ``δ = g_R/f_c0 − (f_l/f_c0²)·g_c0`` [K23].

    Then ``h(x_c0) = f_l`` and ``∇h(x_c0) = δ f_c0 + e g_c0 = g_R``. Derivatives:
    ``∇h = δ f_c + (e + ⟨δ, s⟩) ∇f_c`` and
    ``∇²h v = δ (∇f_cᵀv) + ∇f_c (δᵀv) + (e + ⟨δ, s⟩) ∇²f_c v``.

    Args:
        base, x0, g_restricted, g0, f0: as for :class:`AdditiveCoarseModel` (``f0`` required).
        f_fine: ``f_l`` (required).
        min_abs_f0: refuse ``|f_c0| ≤ min_abs_f0·max(1, |f_l|)`` (default 1e-12): the model
            divides by ``f_c0``.

    Raises:
        ValueError: ``f_c0`` zero or too small, or non-finite values.

    References:
        [K23] Kopaničáková, arXiv:2211.15078.
    """

    def __init__(self, base: Objective, x0: Tensor, g_restricted: Tensor, g0: Tensor,
                 f0: float, f_fine: float, *, min_abs_f0: float = 1e-12) -> None:
        super().__init__(base, x0, g_restricted, f0, g0)
        _check_f0(self.f0, float(f_fine), min_abs_f0, "multiplicative")
        self.e = float(f_fine) / self.f0
        self.delta = self.g_restricted / self.f0 - (float(f_fine) / self.f0 ** 2) * self.g0
        self.value_at_start = float(f_fine)

    def _factor(self, x: Tensor) -> Tensor:
        return self.e + torch.dot(self.delta, x - self.x0)

    def _value(self, x: Tensor) -> Tensor:
        return self._factor(x) * self.base.value(x)

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.base.value_and_grad(x)
        a = self._factor(x)
        return a * f, self.delta * f + a * g

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        f, g, hv_base = self.base.linearize(x)
        a = self._factor(x)
        delta = self.delta

        def hv(v: Tensor) -> Tensor:
            return delta * torch.dot(g, v) + g * torch.dot(delta, v) + a * hv_base(v)

        return a * f, delta * f + a * g, hv


class HybridCoarseModel(CoarseModel):
    """``h = γ·h_add + (1 − γ)·h_mult`` [K23] (both coherent, hence so is ``h``).

    Args:
        base, x0, g_restricted, g0, f0, f_fine: as for :class:`MultiplicativeCoarseModel`.
        gamma: the weight ``γ ∈ [0, 1]`` of the additive part (default 0.5 [K23]).
        zeroth_order: give the additive part its zeroth-order term (default True, so that
            ``h(x_c0) = f_l``).
        min_abs_f0: see :class:`MultiplicativeCoarseModel`.
    """

    def __init__(self, base: Objective, x0: Tensor, g_restricted: Tensor, g0: Tensor,
                 f0: float, f_fine: float, *, gamma: float = 0.5, zeroth_order: bool = True,
                 min_abs_f0: float = 1e-12) -> None:
        super().__init__(base, x0, g_restricted, f0, g0)
        if not (isinstance(gamma, int | float) and 0.0 <= gamma <= 1.0):
            raise ValueError(f"hybrid coarse model: gamma must lie in [0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        _check_f0(self.f0, float(f_fine), min_abs_f0, "hybrid")
        self.e = float(f_fine) / self.f0
        self.delta = self.g_restricted / self.f0 - (float(f_fine) / self.f0 ** 2) * self.g0
        self.v = self.g_restricted - self.g0
        self.shift = float(f_fine) - self.f0 if zeroth_order else 0.0
        add0 = float(f_fine) if zeroth_order else self.f0
        self.value_at_start = self.gamma * add0 + (1.0 - self.gamma) * float(f_fine)

    def _parts(self, x: Tensor) -> tuple[Tensor, Tensor]:
        s = x - self.x0
        return torch.dot(self.v, s) + self.shift, self.e + torch.dot(self.delta, s)

    def _value(self, x: Tensor) -> Tensor:
        f = self.base.value(x)
        c, a = self._parts(x)
        return self.gamma * (f + c) + (1.0 - self.gamma) * a * f

    def _value_and_grad(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f, g = self.base.value_and_grad(x)
        c, a = self._parts(x)
        gam = self.gamma
        value = gam * (f + c) + (1.0 - gam) * a * f
        grad = gam * (g + self.v) + (1.0 - gam) * (self.delta * f + a * g)
        return value, grad

    def _linearize(self, x: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        f, g, hv_base = self.base.linearize(x)
        c, a = self._parts(x)
        gam, delta = self.gamma, self.delta

        def hv(v: Tensor) -> Tensor:
            mult = delta * torch.dot(g, v) + g * torch.dot(delta, v) + a * hv_base(v)
            return gam * hv_base(v) + (1.0 - gam) * mult

        value = gam * (f + c) + (1.0 - gam) * a * f
        grad = gam * (g + self.v) + (1.0 - gam) * (delta * f + a * g)
        return value, grad, hv


def build_coarse_model(
    kind: str,
    base: Objective,
    x0: Tensor,
    g_restricted: Tensor,
    f_fine: float | None = None,
    *,
    gamma: float = 0.5,
    zeroth_order: bool | None = None,
    min_abs_f0: float = 1e-12,
    gradient_only: bool = False,
) -> CoarseModel:
    """Evaluate ``f_c`` at ``x_c0`` and build the coherent model ``kind`` around it.

    Costs one evaluation of ``f_c`` (``value_and_grad``; ``grad`` only when
    ``gradient_only=True``, which the objective-function-free methods use with the additive
    model and no zeroth-order term).

    Args:
        kind: ``"additive"``, ``"multiplicative"`` or ``"hybrid"``.
        base: the coarse objective ``f_c``.
        x0: the coarse start ``x_c0 = Π x_l``.
        g_restricted: ``g_R = R g_l``.
        f_fine: the finer level's loss ``f_l`` (required by the multiplicative and hybrid
            models and by the additive model's zeroth-order term).
        gamma: hybrid weight (default 0.5 [K23]).
        zeroth_order: give the additive model (or the hybrid model's additive part) the
            zeroth-order term ``f_l − f_c0``. ``None`` (default): False for the additive model
            (the classical τ-correction [GST08, N00]), True for the hybrid model (so that
            ``h(x_c0) = f_l`` as for the multiplicative one).
        min_abs_f0: the multiplicative/hybrid guard against ``f_c0 ≈ 0``.
        gradient_only: evaluate only ``∇f_c(x_c0)`` (additive without zeroth-order term only).

    Returns:
        The :class:`CoarseModel`.

    Raises:
        ValueError: unknown ``kind``; a missing ``f_fine``; ``gradient_only`` with a model that
            needs ``f_c0``; ``f_c0`` (nearly) zero for the multiplicative/hybrid models.
    """
    if kind not in COARSE_MODELS:
        raise ValueError(f"unknown coarse model {kind!r}; choose one of "
                         + ", ".join(map(repr, COARSE_MODELS)))
    if zeroth_order is None:
        zeroth_order = kind == "hybrid"
    needs_value = kind != "additive" or zeroth_order
    if needs_value and f_fine is None:
        raise ValueError(f"the {kind} coarse model"
                         + (" with its zeroth-order term" if kind == "additive" else "")
                         + " needs the finer level's loss f_fine")
    if gradient_only and needs_value:
        raise ValueError(f"gradient_only=True evaluates no loss, but the {kind} coarse model"
                         + (" with its zeroth-order term" if kind == "additive" else "")
                         + " needs f_c(x_c0); use kind='additive', zeroth_order=False")
    if gradient_only:
        g0 = base.grad(x0)
        return AdditiveCoarseModel(base, x0, g_restricted, g0)
    f0t, g0 = base.value_and_grad(x0)
    f0 = float(f0t)
    if kind == "additive":
        return AdditiveCoarseModel(base, x0, g_restricted, g0, f0,
                                   f_fine if zeroth_order else None)
    assert f_fine is not None
    if kind == "multiplicative":
        return MultiplicativeCoarseModel(base, x0, g_restricted, g0, f0, f_fine,
                                         min_abs_f0=min_abs_f0)
    return HybridCoarseModel(base, x0, g_restricted, g0, f0, f_fine, gamma=gamma,
                             zeroth_order=zeroth_order, min_abs_f0=min_abs_f0)
