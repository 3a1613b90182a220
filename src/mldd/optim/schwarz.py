"""``mldd.optim.ASPQN`` and ``mldd.optim.MSPQN``: Schwarz-preconditioned L-BFGS [KKKK24].

Thin ``torch.optim`` shells over :class:`mldd.decomposition.spqn.SPQNSolver`; one :meth:`step` is
one outer iteration (local phase + combination + global L-BFGS step). See the solver module for
the algorithm and docs/algorithms.md §3.2–3.3.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from torch import Tensor, nn

from mldd import closures
from mldd.decomposition.data_parallel import (
    DataParallelObjective,
    check_loss_reduction,
    shard_weight,
)
from mldd.decomposition.executors import Executor
from mldd.decomposition.spqn import (
    LocalObjectiveFactory,
    LocalObjectiveProvider,
    SPQNConfig,
    SPQNSolver,
)
from mldd.decomposition.subdomains import Decomposition, Subdomain, data_shards
from mldd.decomposition.two_level import bias_space, first_layers_space
from mldd.objective import ClosureError, EvalCounters, Objective, ParamsObjective
from mldd.optim.base import FlatOptimizer, Solver
from mldd.validation import check_int

logger = logging.getLogger(__name__)

DecompositionSpec = str | Decomposition | Callable[[Any], Decomposition]
CoarseSpec = str | Subdomain | Tensor | Callable[[nn.Module], Subdomain]
LocalObjective = LocalObjectiveFactory | LocalObjectiveProvider


class _SPQN(FlatOptimizer):
    """Shared construction of ASPQN and MSPQN (see their docstrings)."""

    _variant = "additive"

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *,
                 model: nn.Module | None, decomposition: DecompositionSpec,
                 blocks: int | list[int] | None, overlap: int, weights: str,
                 two_level: bool, coarse: CoarseSpec, executor: Executor | None,
                 local_objective: LocalObjective | None, config: SPQNConfig,
                 data_parallel: bool = False, n_rows: int | None = None,
                 loss_reduction: str = "mean") -> None:
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be an nn.Module, got {type(model).__name__}")
        if not isinstance(data_parallel, bool):
            raise ValueError(f"data_parallel must be True or False, got {data_parallel!r}")
        if data_parallel and model is None:
            raise ValueError(f"{type(self).__name__}(data_parallel=True) evaluates shards of "
                             "the batch with closure(model, rows), so it needs model=model")
        check_int("n_rows", n_rows, allow_none=True)
        check_loss_reduction(loss_reduction)
        self._data_parallel, self._n_rows = data_parallel, n_rows
        self._loss_reduction = loss_reduction
        self._rows_closure: Callable[..., Tensor] | None = None
        self._model = model
        self._decomposition_spec = decomposition
        self._blocks, self._overlap, self._weights = blocks, overlap, weights
        self._two_level = bool(two_level)
        self._coarse_spec = coarse
        self._executor = executor
        self._local_objective = local_objective
        self.decomposition: Decomposition | None = None
        self.coarse_space: Subdomain | Tensor | None = None
        super().__init__(params, asdict(config))

    # ------------------------------------------------------------------ construction
    def _resolve_decomposition(self) -> Decomposition:
        spec, name = self._decomposition_spec, type(self).__name__
        if isinstance(spec, Decomposition):
            dec = spec
        elif spec == "layers":
            if self._model is None:
                raise ValueError(
                    f"{name}(decomposition='layers') needs the module structure to find the "
                    f"layers, but it was given only parameters; pass model=model, or "
                    f"decomposition=Decomposition.by_layers(model, ...), or "
                    f"decomposition='param_groups' (one subdomain per parameter group)")
            dec = Decomposition.by_layers(self._model, params=self._params, blocks=self._blocks,
                                          overlap=self._overlap, weights=self._weights)
        elif spec == "param_groups":
            dec = Decomposition.by_param_groups(self.param_groups, self._params,
                                                model=self._model)
        elif callable(spec) and not isinstance(spec, str):
            dec = spec(self._model if self._model is not None else self._params)
            if not isinstance(dec, Decomposition):
                raise ValueError(f"the decomposition callable returned {type(dec).__name__}; "
                                 "it must return a Decomposition")
        else:
            raise ValueError(f"decomposition={spec!r} is not allowed; pass 'layers' (with "
                             "model=), 'param_groups', a Decomposition, or a callable "
                             "returning one")
        n = sum(p.numel() for p in self._params)
        if dec.n != n:
            raise ValueError(f"the decomposition is over a vector of length {dec.n}, but the "
                             f"optimizer's parameters have {n} entries")
        logger.info("%s decomposition (%d subdomains):\n%s", name, len(dec), dec.table())
        return dec

    def _resolve_coarse(self, dec: Decomposition) -> Subdomain | Tensor | None:
        if not self._two_level:
            return None
        spec, name = self._coarse_spec, type(self).__name__
        if isinstance(spec, Subdomain | Tensor):
            return spec
        if isinstance(spec, str):
            if spec not in ("biases", "first_layers"):
                raise ValueError(f"coarse={spec!r} is not allowed; choose 'biases', "
                                 "'first_layers', a Subdomain, an index tensor or a callable")
            if self._model is None:
                raise ValueError(f"{name}(two_level=True, coarse={spec!r}) needs model=model "
                                 "to find the coarse parameters; or pass coarse=Subdomain(...)")
            space = (bias_space(self._model, self._params) if spec == "biases"
                     else first_layers_space(dec, self._model, self._params))
        elif callable(spec):
            if self._model is None:
                raise ValueError(f"{name}: a coarse-space callable receives the model; pass "
                                 "model=model")
            space = spec(self._model)
        else:
            raise ValueError(f"coarse must be 'biases', 'first_layers', a Subdomain, an index "
                             f"tensor or a callable, got {type(spec).__name__}")
        logger.info("%s coarse space %s: %d parameters", name,
                    getattr(space, "name", "custom"), len(space))
        return space

    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        if self.decomposition is None:
            self.decomposition = self._resolve_decomposition()
            self.coarse_space = self._resolve_coarse(self.decomposition)
        return SPQNSolver(SPQNConfig(**hyper), self.decomposition, executor=self._executor,
                          local_objective=self._local_objective, coarse=self.coarse_space,
                          counters=self.counters)

    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One outer iteration; ``closure()`` returns the loss (it may call ``backward()``).

        A closure that needs the model (``closure(model)`` or ``closure(model, rows)``, see
        :mod:`mldd.closures`) is bound to ``model=`` and called with the whole batch.
        """
        self._rows_closure = None
        ex = self._executor
        if closure is not None and self._data_parallel and ex is not None and ex.world_size > 1:
            closures.require_kind(closure, "rows", f"{type(self).__name__}(data_parallel=True)")
            self._rows_closure = closure
            return super().step(closures.bind(closure, self._model))
        if closure is not None and not _callable_without_arguments(closure):
            closure = closures.bind(closure, self._model)
        return super().step(closure)

    def _objective(self, closure: Callable[..., Tensor]) -> Objective:
        rows_closure, ex = self._rows_closure, self._executor
        if rows_closure is None or ex is None:
            return super()._objective(closure)
        # Data-parallel global phase: this rank evaluates its shard of the rows; the
        # all-reduced sum is the whole loss (mldd.decomposition.data_parallel).
        n_rows = getattr(rows_closure, "n_rows", None)
        n_rows = self._n_rows if n_rows is None else int(n_rows)
        if n_rows is None:
            raise ClosureError(
                f"{type(self).__name__}(data_parallel=True) needs the number of rows of the "
                "batch to shard it: pass n_rows= to the optimizer or set closure.n_rows")
        if n_rows < ex.world_size:
            raise ValueError(f"cannot shard {n_rows} rows over {ex.world_size} processes")
        rows = data_shards(n_rows, ex.world_size)[ex.rank]
        weight = shard_weight(len(rows), n_rows, self._loss_reduction)
        shard_loss = closures.bind(rows_closure, self._model, rows)

        def shard_closure() -> Tensor:
            return shard_loss() * weight

        shard = ParamsObjective(self._params, shard_closure, counters=EvalCounters())
        # Rank-local whole-batch evaluations (secants of the subspace combination) count as
        # global gradients, as without data parallelism; subdomain solves count their own.
        full = ParamsObjective(self._params, closure, counters=self.counters)
        return DataParallelObjective(shard, ex, full, counters=self.counters)

    @property
    def solver(self) -> SPQNSolver:
        """The functional core (its counters, memories and decomposition)."""
        assert isinstance(self._solver, SPQNSolver)
        return self._solver


def _callable_without_arguments(fn: Callable[..., Tensor]) -> bool:
    try:
        inspect.signature(fn).bind()
    except TypeError:
        return False
    except ValueError:  # no signature (builtins): assume a torch-style closure
        return True
    return True


_COMMON_ARGS = """
        params: parameters or parameter groups (all groups form one flat vector).
        model: the module the parameters belong to; needed by ``decomposition="layers"`` and by
            the default coarse spaces.
        decomposition: ``"layers"`` (default: one subdomain per layer, see ``blocks``),
            ``"param_groups"`` (one subdomain per parameter group), a
            :class:`~mldd.decomposition.Decomposition`, or a callable receiving the model
            (or, without a model, the parameter list) and returning one.
        blocks: for ``"layers"``: ``None`` (one subdomain per layer [KKKK24]), an int ``N``
            (contiguous blocks), or a list of layer counts.
        overlap: for ``"layers"``: layers shared with each neighbour (default 0).
        weights: overlap weighting, ``"multiplicity"`` (default) or ``"restricted"``.
        local_iters: ``k_s`` (default 3; 50 [KKKK24]).
        local_memory: local L-BFGS memory (3 [KKKK24]).
        keep_local_memory: keep each subdomain's (and the coarse) L-BFGS memory between outer
            iterations instead of restarting it (default True; False is the paper's restart).
        memory: global L-BFGS memory (default 50; 3 [KKKK24]).
        momentum: ``β`` in ``v ← βv + (1−β)p`` on the global direction (default 0.1 with the
            line search, the group's ``μ = 0.9``; 0 disables it; the trust-region global step
            has none).
        global_step: take the global L-BFGS step (default True).
        global_iters: global L-BFGS steps per outer iteration (default 20; 1 [KKKK24]).
        globalization: ``"line_search"`` (default, strong Wolfe [KKKK24]) or ``"trust_region"``:
            each global step is one trust-region iteration on the global L-BFGS model
            (Steihaug CG, ratio test; the radius persists across outer iterations).
        radius: initial radius of the trust-region global step (default 1).
        two_level: add the coarse step before the local phase [LKK24] (default False).
        coarse: the coarse space: ``"biases"`` (default), ``"first_layers"``, a
            :class:`~mldd.decomposition.Subdomain`, an index tensor, or ``model -> Subdomain``.
        coarse_iters: L-BFGS iterations of the coarse step (3).
        local_objective: ``(objective, s, x_base, counters) -> Objective`` for subdomain ``s``,
            or an object with ``for_decomposition(decomposition)`` returning one (default
            ``None``: the full loss restricted to the subdomain); plug in a cheaper evaluation.
            For PINNs, :class:`mldd.problems.pinn.prefix.PINNLocalObjectives` caches the
            frozen layers before each layer block (``mldd train`` passes it automatically:
            method option ``local_objective="auto"``).
        c1, c2, max_ls: strong-Wolfe constants (1e-4, 0.9) and budget (25) of every search.
        tolerance_grad, tolerance_change: global stopping tests (1e-7, 1e-9).
        local_tolerance_grad, local_tolerance_change: local stopping tests (1e-7, 1e-9).
        curvature_eps: L-BFGS pair-skipping threshold (1e-10).
        reuse_evaluations: reuse the last global evaluation at the next step (True).
"""

_DEFAULTS_NOTE = """
    Defaults are mldd's tuned settings, not the paper's: ``local_iters=3``,
    ``keep_local_memory=True``, ``memory=50``, ``global_iters=20`` (measured side by side on
    Burgers, see :class:`mldd.decomposition.spqn.SPQNConfig`). The paper's settings [KKKK24]
    are ``local_iters=50, keep_local_memory=False, memory=3, global_iters=1``
    (``**mldd.decomposition.spqn.PAPER_SETTINGS``).
"""

_ADDITIVE_ARGS = """        combine: ``"line_search"`` (default, the paper: one step length along
            the summed correction), ``"per_subdomain"`` (one step length per subdomain by
            successive line searches) or ``"subspace"`` (minimise the loss over the span of
            the corrections).
        subspace_iters: BFGS iterations of the subspace combination (1).
        executor: where the subdomains run (default serial; see
            :mod:`mldd.decomposition.executors`).
        data_parallel: with a distributed executor, split the rows of the batch over the ranks
            for the global phase (combination line search, global L-BFGS steps, coarse step):
            each rank evaluates its shard and one all-reduce of ``(f_r, ∇f_r)`` gives every rank
            the whole loss (:mod:`mldd.decomposition.data_parallel`). The subdomain solves still
            see the whole batch. Needs ``model=`` and a rows closure ``closure(model, rows)``
            (:mod:`mldd.closures`) whose loss is a mean (or, with ``loss_reduction="sum"``, a
            sum) over rows. Iterates equal the serial ones up to rounding. Default False; no
            effect in one process.
        n_rows: rows of the batch when the closure has no ``n_rows`` attribute.
        loss_reduction: ``"mean"`` (default) or ``"sum"``: how the loss reduces over rows.
        ownership: with several processes, ``"balanced"`` (default: subdomains dealt by
            estimated local-gradient cost, longest first to the least-loaded rank) or
            ``"round_robin"`` (rank ``r`` of ``p`` solves ``r, r + p, …``).
        local_sweep: hybrid Schwarz (default False): each process sweeps its own subdomains
            multiplicatively (each starts where the previous one ended, as in MSPQN), and the
            processes' corrections are combined additively. In one process this is exactly
            MSPQN; with ``p`` processes the sweep is ``p`` times shorter.
        groups: with ``local_sweep``: the number of groups (default: the number of
            processes); ``groups=p`` in one process reproduces a ``p``-process run serially.
"""


class ASPQN(_SPQN):
    __doc__ = """Additive Schwarz-preconditioned L-BFGS (ASPQN) [KKKK24] — no learning rate.

    One :meth:`step` = one outer iteration: every subdomain runs ``local_iters`` L-BFGS
    iterations from the current point (in parallel across ranks with a distributed executor),
    the corrections are combined (``combine``), and ``global_iters`` global L-BFGS steps follow.
    The closure is a plain ``closure() -> loss`` and may call ``backward()``.
""" + _DEFAULTS_NOTE + """
    Args:""" + _COMMON_ARGS + _ADDITIVE_ARGS + """
    After each step :attr:`last_info` reports the loss, the combination weights
    (``combine_weights``), the global step length, the local iterations, and the global
    (``n_f``, ``n_g``), local (``local_n_f``, ``local_n_g``) and coarse evaluation counts.

    Example:
        >>> opt = mldd.optim.ASPQN(model.parameters(), model=model)
        >>> for _ in range(100):
        ...     opt.step(lambda: problem.loss(model))

    References:
        [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. SIAM J. Sci. Comput. 46(5), 2024.
        [LKK24] Lee, Kopaničáková, Karniadakis. arXiv:2406.10997 (two-level).
    """

    _variant = "additive"

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *,
                 model: nn.Module | None = None, decomposition: DecompositionSpec = "layers",
                 blocks: int | list[int] | None = None, overlap: int = 0,
                 weights: str = "multiplicity", local_iters: int = 3, local_memory: int = 3,
                 keep_local_memory: bool = True, combine: str = "line_search",
                 subspace_iters: int = 1, memory: int = 50, momentum: float | None = None,
                 global_step: bool = True, global_iters: int = 20,
                 globalization: str = "line_search", radius: float = 1.0,
                 two_level: bool = False,
                 coarse: CoarseSpec = "biases",
                 coarse_iters: int = 3, executor: Executor | None = None,
                 local_objective: LocalObjective | None = None, c1: float = 1e-4,
                 c2: float = 0.9, max_ls: int = 25, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, local_tolerance_grad: float = 1e-7,
                 local_tolerance_change: float = 1e-9, curvature_eps: float = 1e-10,
                 reuse_evaluations: bool = True, data_parallel: bool = False,
                 n_rows: int | None = None, loss_reduction: str = "mean",
                 ownership: str = "balanced", local_sweep: bool = False,
                 groups: int | None = None) -> None:
        config = SPQNConfig(
            variant="additive", local_iters=local_iters, local_memory=local_memory,
            keep_local_memory=keep_local_memory, combine=combine, subspace_iters=subspace_iters,
            memory=memory, momentum=momentum, global_step=global_step, global_iters=global_iters,
            globalization=globalization, radius=radius, coarse_iters=coarse_iters,
            c1=c1, c2=c2, max_ls=max_ls, tolerance_grad=tolerance_grad,
            tolerance_change=tolerance_change, local_tolerance_grad=local_tolerance_grad,
            local_tolerance_change=local_tolerance_change, curvature_eps=curvature_eps,
            reuse_evaluations=reuse_evaluations, ownership=ownership,
            local_sweep=local_sweep, groups=groups)
        super().__init__(params, model=model, decomposition=decomposition, blocks=blocks,
                         overlap=overlap, weights=weights, two_level=two_level, coarse=coarse,
                         executor=executor, local_objective=local_objective, config=config,
                         data_parallel=data_parallel, n_rows=n_rows,
                         loss_reduction=loss_reduction)


class MSPQN(_SPQN):
    __doc__ = """Multiplicative Schwarz-preconditioned L-BFGS (MSPQN) [KKKK24] — no learning rate.

    One :meth:`step` = one outer iteration: a Gauss–Seidel sweep over the subdomains (each runs
    ``local_iters`` L-BFGS iterations starting where the previous one ended), then
    ``global_iters`` global L-BFGS steps. Runs in one process. The closure is a plain
    ``closure() -> loss`` and may call ``backward()``.
""" + _DEFAULTS_NOTE + """
    Args:""" + _COMMON_ARGS + """
    Example:
        >>> opt = mldd.optim.MSPQN(model.parameters(), model=model)
        >>> for _ in range(100):
        ...     opt.step(lambda: problem.loss(model))

    References:
        [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. SIAM J. Sci. Comput. 46(5), 2024.
        [LKK24] Lee, Kopaničáková, Karniadakis. arXiv:2406.10997 (two-level).
    """

    _variant = "multiplicative"

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *,
                 model: nn.Module | None = None, decomposition: DecompositionSpec = "layers",
                 blocks: int | list[int] | None = None, overlap: int = 0,
                 weights: str = "multiplicity", local_iters: int = 3, local_memory: int = 3,
                 keep_local_memory: bool = True, memory: int = 50, momentum: float | None = None,
                 global_step: bool = True, global_iters: int = 20,
                 globalization: str = "line_search", radius: float = 1.0,
                 two_level: bool = False,
                 coarse: CoarseSpec = "biases",
                 coarse_iters: int = 3, local_objective: LocalObjective | None = None,
                 c1: float = 1e-4, c2: float = 0.9, max_ls: int = 25,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9,
                 local_tolerance_grad: float = 1e-7, local_tolerance_change: float = 1e-9,
                 curvature_eps: float = 1e-10, reuse_evaluations: bool = True) -> None:
        config = SPQNConfig(
            variant="multiplicative", local_iters=local_iters, local_memory=local_memory,
            keep_local_memory=keep_local_memory, memory=memory, momentum=momentum,
            global_step=global_step, global_iters=global_iters, globalization=globalization,
            radius=radius, coarse_iters=coarse_iters, c1=c1, c2=c2, max_ls=max_ls,
            tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
            local_tolerance_grad=local_tolerance_grad,
            local_tolerance_change=local_tolerance_change, curvature_eps=curvature_eps,
            reuse_evaluations=reuse_evaluations)
        super().__init__(params, model=model, decomposition=decomposition, blocks=blocks,
                         overlap=overlap, weights=weights, two_level=two_level, coarse=coarse,
                         executor=None, local_objective=local_objective, config=config)
