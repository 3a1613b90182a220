"""Cheap layer-local PINN losses: cache what the frozen layers before a block compute.

While only a contiguous block of layers ``[a, b]`` of an MLP is optimised (a subdomain of a
layer-wise Schwarz method, docs/algorithms.md §3.2), the layers ``0 … a−1`` are frozen, so the jet
(value and input derivatives, :mod:`mldd.models.jets`) at the input of layer ``a`` is the same at
every local evaluation. It is computed once, without a graph, and reused; each local evaluation
then

* runs forward only layers ``a … L−1``,
* backpropagates only through them, and
* computes weight gradients only for the block: layers after ``b`` enter with detached weights,
  so the backward passes through them (it must: the loss depends on the block through them) but
  forms no weight gradient there; layer ``a``'s input needs no gradient either.

The prefix cache is keyed by the points tensor (identity and version) and the jet's channels, and
it is checked against a snapshot of the prefix weights at every evaluation (a few small
``torch.equal`` calls): if any prefix weight changed, it is recomputed, so a stale cache can never
be used.

API:

* :class:`BlockNetwork` — the network seen from a block (an ``nn.Module`` with ``forward_jet``);
* :class:`LayerBlockLoss` — ``problem.loss`` of that network and the block's parameters;
* :class:`BlockObjective` — an :class:`~mldd.objective.Objective` over the block's flat vector,
  a drop-in for :class:`mldd.decomposition.local.SubspaceObjective` on a layer-block subdomain;
* :func:`local_objective_factory` — the ``local_objective`` hook of
  :class:`mldd.decomposition.spqn.SPQNSolver`: a :class:`BlockObjective` for every subdomain that
  is exactly a block of layers, a :class:`~mldd.decomposition.local.SubspaceObjective` otherwise;
* :class:`PINNLocalObjectives` — the same hook before the decomposition is known (what
  ``mldd.optim.ASPQN``/``MSPQN`` accept as ``local_objective``; ``mldd train`` passes it
  automatically for PINN problems, see :func:`pinn_local_objectives`).

Cost accounting. A :class:`BlockObjective` over layers ``a … b`` of an ``L``-layer network runs
forward and backward through layers ``a … L−1`` only, so its gradient is counted as
``(L − a)/L`` of a full gradient (:func:`block_grad_cost`, the ``grad_cost`` attribute the SPQN
solver reads). Measured on Burgers (8×20, 2,000 points, 1 thread, one layer per block) the true
ratio is 0.80, 0.72, …, 0.16, 0.05 for ``a = 0 … 8`` (mean 0.43) against the estimate's
1.00, 0.89, …, 0.22, 0.11 (mean 0.56): the estimate is an upper bound, about 1.3× the measured
cost on average.

Layer ``i`` means entry ``i`` of :func:`mldd.models.jets.layer_modules` (an affine layer with its
weight and bias; for a :class:`~mldd.models.ResidualMLP`: input layer, blocks, output layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from mldd.linalg.flat import flatten, vector_to_params
from mldd.models.jets import (
    Jet,
    JetSpec,
    input_jet,
    layer_modules,
    propagate,
    split_output,
    supports_jets,
)
from mldd.objective import EvalCounters, MatVec, Objective, grads_wrt
from mldd.problems.base import PINNProblem
from mldd.validation import is_int

#: How many (points, channels) prefix jets a :class:`BlockNetwork` keeps (collocation points
#: with derivatives, boundary points without, a couple of batches).
MAX_CACHED = 4


def layer_slices(model: nn.Module, params: Sequence[Tensor] | None = None) -> list[slice]:
    """Where each layer's ``(weight, bias)`` lies in the flat vector of ``params``.

    Args:
        model: a model with jets (:func:`~mldd.models.jets.supports_jets`).
        params: the parameters in flat-vector order (default ``list(model.parameters())``).

    Raises:
        ValueError: for an unsupported model, or if a layer's weight and bias are not adjacent
            (weight first) in ``params``.
    """
    params = list(model.parameters()) if params is None else list(params)
    where: dict[int, tuple[int, int]] = {}
    offset = 0
    for p in params:
        where[id(p)] = (offset, offset + p.numel())
        offset += p.numel()
    out = []
    for i, lin in enumerate(layer_modules(model)):
        try:
            w, b = where[id(lin.weight)], where[id(lin.bias)]
        except KeyError:
            raise ValueError(f"layer {i}'s parameters are not in the parameter list") from None
        if w[1] != b[0]:
            raise ValueError(f"layer {i}'s weight and bias are not adjacent in the flat vector")
        out.append(slice(w[0], b[1]))
    return out


def layer_block_of(model: nn.Module, index: Tensor,
                   params: Sequence[Tensor] | None = None) -> tuple[int, int] | None:
    """``(first, last)`` if the flat positions ``index`` are exactly layers ``first … last``.

    ``None`` when ``index`` is anything else (not sorted and contiguous, or cutting a layer), or
    when ``model`` has no jets.
    """
    if not supports_jets(model) or index.dim() != 1 or index.numel() == 0:
        return None
    try:
        slices = layer_slices(model, params)
    except ValueError:
        return None
    start, stop = int(index[0]), int(index[-1]) + 1
    if stop - start != index.numel() or not bool((index[1:] > index[:-1]).all()):
        return None
    firsts = [i for i, s in enumerate(slices) if s.start == start]
    lasts = [i for i, s in enumerate(slices) if s.stop == stop]
    if not firsts or not lasts or firsts[0] > lasts[0]:
        return None
    a, b = firsts[0], lasts[0]
    if any(slices[i].stop != slices[i + 1].start for i in range(a, b)):
        return None
    return a, b


def block_grad_cost(n_layers: int, first_layer: int) -> float:
    """Fine-gradient equivalents of one gradient of a block starting at ``first_layer``.

    ``(L − a)/L``: the share of the network's layers the evaluation runs forward and backward
    through (the frozen prefix is cached). An upper bound of the measured ratio (see the module
    docstring): the weight gradients of the layers after the block are not formed, and the
    input layer's backward is skipped in both the block and the full gradient.
    """
    if not 0 <= first_layer < n_layers:
        raise ValueError(f"need 0 <= first_layer < n_layers, got {first_layer} and {n_layers}")
    return (n_layers - first_layer) / n_layers


def _check_block(model: nn.Module, first: int, last: int) -> int:
    if not supports_jets(model):
        raise ValueError(
            f"layer-block losses need an MLP or ResidualMLP with a jet activation, got "
            f"{type(model).__name__}; use mldd.decomposition.local.SubspaceObjective instead"
        )
    L = len(layer_modules(model))
    for name, v in (("first_layer", first), ("last_layer", last)):
        if not is_int(v):
            raise ValueError(f"{name} must be an int, got {v!r}")
    if not 0 <= first <= last < L:
        raise ValueError(
            f"need 0 <= first_layer <= last_layer < {L} (the model's number of layers), got "
            f"first_layer={first}, last_layer={last}"
        )
    return L


class BlockNetwork(nn.Module):
    """``model`` seen by a solve over layers ``first … last``: same function, cheaper derivatives.

    :meth:`forward_jet` (used by the PINN problems' jet route) starts from the cached jet at the
    input of layer ``first``. :meth:`forward` gives the plain output (value channel only, also
    from the cache), or, for points that require grad (the autograd route), the full model.

    The wrapped model is not registered as a submodule: this module owns no parameters.

    Args:
        model: an :class:`~mldd.models.MLP` or :class:`~mldd.models.ResidualMLP` with a jet
            activation.
        first: first layer of the block.
        last: last layer of the block (inclusive).

    Raises:
        ValueError: for an unsupported model or an invalid layer range.
    """

    model: nn.Module

    def __init__(self, model: nn.Module, first: int, last: int) -> None:
        super().__init__()
        self.n_layers = _check_block(model, first, last)
        object.__setattr__(self, "model", model)
        self.first, self.last = first, last
        layers = layer_modules(model)
        self._prefix: list[Tensor] = [p for lin in layers[:first] for p in lin.parameters()]
        self._snapshot: list[Tensor] = []
        self._cache: dict[tuple[int, JetSpec], tuple[Tensor, int, Tensor]] = {}
        self.n_prefix_computations = 0

    def block_parameters(self) -> list[nn.Parameter]:
        """The block's parameters in ``model.parameters()`` order."""
        layers = layer_modules(self.model)
        return [p for lin in layers[self.first : self.last + 1] for p in lin.parameters()]

    def clear(self) -> None:
        """Drop the cached prefix jets."""
        self._cache.clear()
        self._snapshot = []

    def _prefix_unchanged(self) -> bool:
        return len(self._snapshot) == len(self._prefix) and all(
            torch.equal(p, s) for p, s in zip(self._prefix, self._snapshot, strict=True)
        )

    def prefix_jet(self, x: Tensor, spec: JetSpec) -> Tensor:
        """The jet at the input of layer ``first`` (``(d, C, N)``, no graph), cached."""
        if not self._prefix_unchanged():
            self._cache.clear()
            self._snapshot = [p.detach().clone() for p in self._prefix]
        key = (id(x), spec)
        hit = self._cache.get(key)
        if hit is not None and hit[0] is x and hit[1] == x._version:
            return hit[2]
        with torch.no_grad():
            H = propagate(self.model, input_jet(x, spec), spec, 0, self.first)
        self.n_prefix_computations += 1
        if len(self._cache) >= MAX_CACHED:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = (x, x._version, H)
        return H

    def forward_jet(self, x: Tensor, spec: JetSpec) -> Jet:
        """The output jet at ``x``; a graph only through the block (and what follows it)."""
        H = self.prefix_jet(x, spec)
        last = self.last
        H = propagate(self.model, H, spec, self.first, self.n_layers, frozen=lambda i: i > last)
        return split_output(H, spec)

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad:
            out: Tensor = self.model(x)
            return out
        spec = JetSpec(n_inputs=x.shape[1], first=False)
        return self.forward_jet(x, spec).value


class LayerBlockLoss:
    """``problem.loss`` when only layers ``first_layer … last_layer`` of ``model`` change.

    Args:
        problem: a PINN problem (its ``loss(model, batch)`` is called on a :class:`BlockNetwork`).
        model: an :class:`~mldd.models.MLP` or :class:`~mldd.models.ResidualMLP`.
        first_layer: first layer of the block.
        last_layer: last layer of the block (inclusive).
        batch: points to evaluate on (default ``None``: the problem's collocation points).

    Attributes:
        network: the :class:`BlockNetwork`.
        parameters: the block's parameters (``model.parameters()`` order).
        slice: the block's range in the flat vector of ``model.parameters()``.

    Example:
        >>> block = LayerBlockLoss(problem, model, 3, 3)          # doctest: +SKIP
        >>> loss = block.loss(); loss.backward()                  # grads on layer 3 only
    """

    def __init__(self, problem: PINNProblem, model: nn.Module, first_layer: int,
                 last_layer: int, *, batch: Tensor | None = None) -> None:
        if not isinstance(problem, PINNProblem):
            raise ValueError(f"problem must be a PINNProblem, got {type(problem).__name__}")
        self.problem = problem
        self.model = model
        self.network = BlockNetwork(model, first_layer, last_layer)
        self.parameters = self.network.block_parameters()
        slices = layer_slices(model)
        self.slice = slice(slices[first_layer].start, slices[last_layer].stop)
        self.batch = batch

    def loss(self) -> Tensor:
        """The loss (0-d, with a graph to :attr:`parameters` only)."""
        return self.problem.loss(self.network, self.batch)


class BlockObjective(Objective):
    """``z ↦ f(x̄ with the block's entries = z)`` for a PINN loss, by :class:`LayerBlockLoss`.

    The same function, gradient and Hessian-vector products as
    ``SubspaceObjective(ParamsObjective(model.parameters(), lambda: problem.loss(model)), x_base,
    index)`` with ``index`` the block's positions (to rounding), at a fraction of the cost.

    Args:
        problem: the PINN problem.
        model: the network (its parameters are overwritten with ``x̄ ⊕ z`` at each evaluation
            and hold the last evaluated point afterwards).
        layer_range: the block's layers, contiguous and increasing (e.g. ``range(2, 4)``).
        x_base: the frozen point ``x̄`` (flat, ``model.parameters()`` order; copied).
        batch: points to evaluate on (default: the problem's collocation points).
        counters: where to count evaluations (default: a new set).

    Attributes:
        x_base, index, z0: as in :class:`~mldd.decomposition.local.SubspaceObjective`.
        block: the :class:`LayerBlockLoss`.
        grad_cost: fine-gradient equivalents of one gradient evaluation
            (:func:`block_grad_cost`).

    Raises:
        ValueError: for an unsupported model, a non-contiguous or out-of-range ``layer_range``,
            or an ``x_base`` of the wrong size.
    """

    def __init__(self, problem: PINNProblem, model: nn.Module, layer_range: Sequence[int],
                 x_base: Tensor, *, batch: Tensor | None = None,
                 counters: EvalCounters | None = None) -> None:
        super().__init__(counters)
        layers = [int(i) for i in layer_range]
        if not layers or layers != list(range(layers[0], layers[0] + len(layers))):
            raise ValueError(
                f"layer_range must be non-empty, contiguous and increasing, got {list(layer_range)}"
            )
        self.block = LayerBlockLoss(problem, model, layers[0], layers[-1], batch=batch)
        self._params = list(model.parameters())
        n_total = sum(p.numel() for p in self._params)
        if x_base.dim() != 1 or x_base.numel() != n_total:
            raise ValueError(
                f"x_base must be a flat vector of {n_total} entries (model.parameters() order), "
                f"got shape {tuple(x_base.shape)}"
            )
        self.x_base = x_base.detach().clone()
        sl = self.block.slice
        self._span = (int(sl.start), int(sl.stop))
        self.index = torch.arange(self._span[0], self._span[1], device=x_base.device)
        self.n = self._span[1] - self._span[0]
        self.dtype = x_base.dtype
        self.device = x_base.device
        self.z0 = self.restrict(self.x_base)
        self.grad_cost = block_grad_cost(self.block.network.n_layers, layers[0])

    def restrict(self, v: Tensor) -> Tensor:
        """``R v`` (a copy)."""
        return v[self._span[0] : self._span[1]].clone()

    def full(self, z: Tensor) -> Tensor:
        """``x̄`` with the block's entries set to ``z``."""
        if z.shape != (self.n,):
            raise ValueError(f"local vector has shape {tuple(z.shape)}, expected ({self.n},)")
        x = self.x_base.clone()
        x[self._span[0] : self._span[1]] = z
        return x

    def _load(self, z: Tensor) -> None:
        vector_to_params(self.full(z.detach()), self._params)

    def _value(self, z: Tensor) -> Tensor:
        self._load(z)
        with torch.no_grad():
            return self.block.loss().detach()

    def _value_and_grad(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self._load(z)
        params = self.block.parameters
        with torch.enable_grad():
            loss = self.block.loss()
            grads = grads_wrt(loss, params)
        return loss.detach(), flatten(grads, like=params)

    def _linearize(self, z: Tensor) -> tuple[Tensor, Tensor, MatVec]:
        self._load(z)
        params = self.block.parameters
        with torch.enable_grad():
            loss = self.block.loss()
            grads = grads_wrt(loss, params, create_graph=True)
        gflat = flatten(grads, like=params)

        def hv(v: Tensor) -> Tensor:
            if not gflat.requires_grad:
                return torch.zeros_like(v)
            with torch.enable_grad():
                out = grads_wrt(gflat, params, grad_outputs=v, retain_graph=True)
            return flatten(out, like=params).detach()

        return loss.detach(), gflat.detach(), hv


LocalObjectiveFactory = Callable[[Objective, int, Tensor, EvalCounters], Objective]


def local_objective_factory(problem: PINNProblem, model: nn.Module, decomposition: Any,
                            *, batch: Tensor | None = None) -> LocalObjectiveFactory:
    """The ``local_objective`` hook of :class:`mldd.decomposition.spqn.SPQNSolver` for a PINN.

    Subdomain ``s`` gets a :class:`BlockObjective` when ``decomposition[s].index`` is exactly a
    block of layers of ``model`` (:func:`layer_block_of`), else the generic
    :class:`~mldd.decomposition.local.SubspaceObjective` of the global objective.

    Args:
        problem: the PINN problem whose loss the global objective evaluates.
        model: the network the global objective's parameters belong to (in
            ``model.parameters()`` order).
        decomposition: a :class:`mldd.decomposition.subdomains.Decomposition` (anything whose
            ``[s].index`` is the subdomain's sorted flat positions).
        batch: points of the loss (default: the collocation points), as in the global objective.
    """
    from mldd.decomposition.local import SubspaceObjective

    blocks = [layer_block_of(model, decomposition[s].index) for s in range(len(decomposition))]

    def make(objective: Objective, s: int, x_base: Tensor, counters: EvalCounters) -> Objective:
        block = blocks[s]
        if block is None:
            return SubspaceObjective(objective, x_base, decomposition[s].index, counters=counters)
        return BlockObjective(problem, model, range(block[0], block[1] + 1), x_base,
                              batch=batch, counters=counters)

    # Estimated cost of each subdomain's local gradient (the solver balances ranks with it): a
    # block's share of the layers, a generic subdomain a whole gradient.
    n_layers = len(layer_slices(model)) if any(b is not None for b in blocks) else 1
    make.costs = [1.0 if b is None else block_grad_cost(n_layers, b[0])  # type: ignore[attr-defined]
                  for b in blocks]
    return make


class PINNLocalObjectives:
    """The PINN's layer-block objectives for a decomposition not built yet.

    ``mldd.optim.ASPQN``/``MSPQN`` build their decomposition lazily (from ``model`` and
    ``blocks``), so they accept this object as ``local_objective`` and call
    :meth:`for_decomposition` once the decomposition exists.

    Args:
        problem: the PINN problem the training closure evaluates (``problem.loss(model, batch)``).
        model: the trained network.
        batch: the points of the loss (default ``None``: the collocation points, as the
            full-batch training closure).

    Example:
        >>> opt = mldd.optim.MSPQN(model.parameters(), model=model,      # doctest: +SKIP
        ...                        local_objective=PINNLocalObjectives(problem, model))
    """

    def __init__(self, problem: PINNProblem, model: nn.Module, *,
                 batch: Tensor | None = None) -> None:
        if not isinstance(problem, PINNProblem):
            raise ValueError(f"problem must be a PINNProblem, got {type(problem).__name__}")
        self.problem, self.model, self.batch = problem, model, batch

    def for_decomposition(self, decomposition: Any) -> LocalObjectiveFactory:
        """:func:`local_objective_factory` for ``decomposition``."""
        return local_objective_factory(self.problem, self.model, decomposition, batch=self.batch)


def pinn_local_objectives(problem: Any, model: nn.Module | None) -> PINNLocalObjectives | None:
    """A :class:`PINNLocalObjectives` when it makes local solves cheaper, else ``None``.

    That is when ``problem`` is a PINN problem whose residuals use forward jets
    (``derivatives="jet"``) and ``model`` supports them: with nested autograd the cached prefix
    would not be used, and the default local objective
    (:class:`~mldd.decomposition.local.ParamsSubspaceObjective`) is as fast.
    """
    if model is None or not isinstance(problem, PINNProblem) or not supports_jets(model):
        return None
    if getattr(problem, "derivatives", "jet") != "jet":
        return None
    return PINNLocalObjectives(problem, model)
