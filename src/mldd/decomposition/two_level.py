"""The coarse level of two-level Schwarz preconditioning [LKK24]: coarse spaces and the coarse step.

Before the local (subdomain) phase of an outer iteration, a *coarse training step* improves
``x_k`` on a small global subset ``C`` of the parameters: ``k_c`` L-BFGS iterations (memory 3,
strong Wolfe) on ``z ↦ f(x_k + E_C(z − R_C x_k))`` (a
:class:`~mldd.decomposition.SubspaceObjective`: coarse spaces such as the biases reach into
every layer, so a restricted backward pass would save little, and the full gradient at the
coarse end point is then free for the local phase). Every one of these iterations is a line
search along a correction of the coarse entries, so the coarse correction is applied with a line
search as docs/algorithms.md §3.3 asks and it never increases the loss. The local phase then starts
from the corrected point.

The coarse space is pluggable (a :class:`~mldd.decomposition.Subdomain`). Builders:

* :func:`bias_space` (the default): every bias of every layer. It touches every layer, so it
  couples all subdomains, and it is small (``Σ_l width_l`` entries) and cheap to solve;
  shifting a layer's biases is the analogue of the constant functions of a classical coarse
  space. **(unverified)**: [LKK24] describes its coarse space only as a small global subset of
  the parameters; this choice is ours.
* :func:`first_layers_space`: the first layer of each subdomain (the example in docs/algorithms.md).
* :func:`layer_space`: any named layers.

References:
    [LKK24] Lee, Kopaničáková, Karniadakis. Two-level overlapping additive Schwarz preconditioner
    for training scientific machine learning applications. arXiv:2406.10997.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mldd.decomposition.local import LocalSolve, SubspaceObjective, lbfgs_iterations
from mldd.decomposition.subdomains import Decomposition, ParamLayout, Subdomain
from mldd.objective import EvalCounters, Objective
from mldd.solvers.lbfgs import LBFGSSolver


def _space(name: str, parts: list[Tensor], layers: tuple[str, ...], what: str) -> Subdomain:
    if not parts:
        raise ValueError(f"the coarse space '{name}' is empty: {what}")
    return Subdomain(name, torch.unique(torch.cat(parts)), layers)


def bias_space(model: nn.Module, params: Sequence[Tensor] | None = None) -> Subdomain:
    """All parameters whose name ends in ``bias`` (the default coarse space).

    Args:
        model: the network.
        params: the flat vector's parameters in order (default ``list(model.parameters())``).
    """
    layout = ParamLayout(params if params is not None else list(model.parameters()), model)
    parts, names = [], []
    for name, p in model.named_parameters():
        if name.split(".")[-1] == "bias" and layout.holds(p):
            seg = layout.segment_of(p)
            parts.append(torch.arange(seg.start, seg.stop))
            names.append(name)
    return _space("coarse(biases)", parts, tuple(names), "the model has no bias parameters; "
                  "pass coarse=layer_space(model, [...]) or another Subdomain")


def layer_space(model: nn.Module, layers: Sequence[str],
                params: Sequence[Tensor] | None = None) -> Subdomain:
    """The layers (module names as in ``model.named_modules()``) listed in ``layers``."""
    layout = ParamLayout(params if params is not None else list(model.parameters()), model)
    modules = dict(model.named_modules())
    parts = []
    for name in layers:
        if name not in modules:
            raise ValueError(f"the model has no module named {name!r}; known: "
                             f"{', '.join(n for n in modules if n)}")
        for p in modules[name].parameters(recurse=False):
            if layout.holds(p):
                seg = layout.segment_of(p)
                parts.append(torch.arange(seg.start, seg.stop))
    return _space("coarse(" + ",".join(layers) + ")", parts, tuple(layers),
                  f"the layers {list(layers)} hold none of the optimizer's parameters")


def first_layers_space(decomposition: Decomposition, model: nn.Module,
                       params: Sequence[Tensor] | None = None) -> Subdomain:
    """The first layer of each subdomain of a :meth:`Decomposition.by_layers` decomposition."""
    names = []
    for sub in decomposition.subdomains:
        if not sub.layers:
            raise ValueError(f"subdomain {sub.name} lists no layers; build the decomposition "
                             "with Decomposition.by_layers")
        if sub.layers[0] not in names:
            names.append(sub.layers[0])
    return layer_space(model, names, params)


def as_index(space: Subdomain | Tensor, n: int) -> Tensor:
    """The sorted positions of a coarse space given as a Subdomain or an index tensor."""
    idx = space.index if isinstance(space, Subdomain) else torch.as_tensor(space)
    idx = torch.unique(idx.to(torch.int64).flatten())
    if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"the coarse space must be a non-empty set of positions in [0, {n})")
    return idx


def coarse_step(solver: LBFGSSolver, objective: Objective, x: Tensor, f: float, g: Tensor,
                index: Tensor, iters: int, counters: EvalCounters
                ) -> tuple[Tensor, LocalSolve]:
    """``iters`` L-BFGS iterations on the coarse entries ``index`` from ``x`` (see module doc).

    Args:
        solver: the coarse L-BFGS solver (reset it first for a restarted memory).
        objective: the global objective.
        x, f, g: the outer iterate and its loss and gradient (they seed the first iteration).
        index: the coarse positions.
        iters: ``k_c``.
        counters: where the coarse evaluations are counted.

    Returns:
        The corrected point and the :class:`LocalSolve` record.
    """
    sub = SubspaceObjective(objective, x, index, counters=counters)
    res = lbfgs_iterations(solver, sub, sub.z0, iters, f0=f, g0=sub.restrict(g))
    return sub.full(res.z), res
