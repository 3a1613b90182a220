"""``mldd.optim.APTS``: additively preconditioned trust region, over parameter blocks or data."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from typing import Any

import torch
from torch import Tensor, nn

from mldd.closures import bind, closure_kind, require_kind
from mldd.decomposition.apts import APTSConfig, APTSSolver
from mldd.decomposition.apts_local import (
    DataShards,
    ParameterBlocks,
    SubdomainProblem,
    check_disjoint,
)
from mldd.decomposition.data_parallel import check_loss_reduction
from mldd.decomposition.executors import Executor, SerialExecutor
from mldd.decomposition.subdomains import Decomposition, data_shards
from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.objective import ClosureError, ParamsObjective
from mldd.optim.base import FlatOptimizer, Solver
from mldd.validation import check_int

DECOMPOSITIONS = ("auto", "layers", "param_groups", "data")
_CONFIG_KEYS = tuple(f.name for f in fields(APTSConfig))
logger = logging.getLogger(__name__)


class APTS(FlatOptimizer):
    """Additively preconditioned trust region (APTS) [CTKK23, CTKK25] — no learning rate.

    Each ``step`` is one outer iteration: every subdomain (a block of layers, or a shard of the
    batch's rows) takes ``local_iters`` trust-region steps (L-SR1 + OBS) on its local model from
    the current point; the combined step is tested on the true loss by a global trust region
    (accept if ``ρ > 0.25``; radius ×0.9 on rejection, ×1.2 if ``ρ > 0.75``, ``Δ0 = 0.1``,
    ``Δ ∈ [0.01, 1]``); an optional global trust-region pass follows. See
    :mod:`mldd.decomposition.apts` for the algorithm and its guarantees (``‖s‖ ≤ Δ``, NaN
    rejection, ranks agreeing on every decision).

    The default decomposition, ``"auto"``, is chosen at the first step from the closure: data
    shards when it is a ``closure(model, rows)`` and the batch size is known (``closure.n_rows``
    or ``n_rows=``), else one subdomain per layer. Data shards were the better of the two on
    every problem measured (digits, MNIST-5k, Burgers; see the README), and they are the
    decomposition of the data-parallel APTS paper [CTKK25]; a plain closure can only serve
    layer blocks. The choice is fixed from then on and travels in ``state_dict()``.

    Closures (:mod:`mldd.closures`):

    * parameter decomposition (``"layers"``, ``"param_groups"`` or a :class:`Decomposition`):
      a plain ``closure()`` (torch style, may call ``backward()``) — a ``closure(model)`` or
      ``closure(model, rows)`` works too when ``model=`` is given;
    * ``decomposition="data"``: ``closure(model, rows)`` returning the loss of ``model`` on the
      rows ``rows`` of the current batch. The batch size is read from ``closure.n_rows`` (the
      trainer sets it) or from the ``n_rows`` option. The loss must be a mean over rows
      (``loss_reduction="mean"``, the default) or a sum (``"sum"``).

    Args:
        params: the parameters (all groups form one flat vector).
        decomposition: ``"auto"`` (default: ``"data"`` or ``"layers"`` by the closure, see
            above), ``"layers"`` (one subdomain per layer of ``model``, or ``blocks``
            contiguous blocks), ``"param_groups"`` (one subdomain per group), ``"data"``
            (``n_shards`` row shards) or a non-overlapping :class:`Decomposition` of the flat
            vector.
        model: the module holding ``params``; needed for ``"auto"``, ``"layers"`` and
            ``"data"``.
        blocks: ``"layers"`` (or ``"auto"`` resolving to it) only: ``None`` (one subdomain per
            layer), an int or a list of layer counts (see :meth:`Decomposition.by_layers`).
        n_shards: ``"data"`` (or ``"auto"``) only: number of shards (default: the executor's
            world size when distributed, else 2).
        n_rows: ``"data"`` (or ``"auto"``) only: rows of the batch when the closure has no
            ``n_rows`` attribute.
        loss_reduction: ``"data"`` (or ``"auto"``) only: ``"mean"`` (default) or ``"sum"``
            over rows.
        local_iters: local trust-region iterations per subdomain (default 3).
        memory: L-SR1 memory, local and global (default 5).
        hessian: ``"lsr1"`` (default), ``"lbfgs"`` or ``"none"``.
        subproblem: ``None`` (OBS for L-SR1, CG for L-BFGS, Cauchy for none), or a name.
        norm: ``"l2"`` (default) or ``"linf"``.
        combine: ``"data"`` only: ``"mean"`` (default) or ``"sum"`` (the paper's rule, which
            stalls near a minimiser) of the shard steps.
        radius, radius_min, radius_max: Δ0 = 0.1 and the clamps 0.01, 1.
        eta, eta_expand, shrink, expand: the ratio test (0.25, 0.75, 0.9, 1.2).
        global_pass: one global trust-region step after each combination (default False).
        reset_local_memory: restart local memories each outer iteration (default False).
        tolerance_grad: stop when ``‖∇f‖ ≤`` this (1e-9).
        reuse_evaluations: reuse the accepted trial's evaluation (True; set False for
            mini-batches drawn inside the closure).
        executor: where subdomains run (default :class:`SerialExecutor`; a distributed
            executor runs each rank's own subdomains).

    Example:
        >>> opt = mldd.optim.APTS(model.parameters(), model=model)
        >>> opt.step(lambda: loss_fn(model(x), y))                  # plain closure: layer blocks
        >>> opt = mldd.optim.APTS(model.parameters(), model=model, decomposition="data",
        ...                       n_shards=4, n_rows=len(x))
        >>> opt.step(lambda m, rows: loss_fn(m(x[rows]), y[rows]))

    References:
        [CTKK23] Cruz, Trotti, Kopaničáková, Krause. Parallel trust-region approaches in neural
        network training. arXiv:2312.13677.
        [CTKK25] Cruz Alegría et al. Data-parallel neural network training via nonlinearly
        preconditioned trust-region method. arXiv:2502.05133.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *,
                 decomposition: str | Decomposition = "auto", model: nn.Module | None = None,
                 blocks: int | list[int] | None = None, n_shards: int | None = None,
                 n_rows: int | None = None, loss_reduction: str = "mean", local_iters: int = 3,
                 memory: int = 5, hessian: str = "lsr1", subproblem: str | None = None,
                 norm: str = "l2", combine: str = "mean", radius: float = 0.1,
                 radius_min: float = 0.01, radius_max: float = 1.0, eta: float = 0.25,
                 eta_expand: float = 0.75, shrink: float = 0.9, expand: float = 1.2,
                 global_pass: bool = False, reset_local_memory: bool = False,
                 tolerance_grad: float = 1e-9, reuse_evaluations: bool = True,
                 executor: Executor | None = None) -> None:
        self.executor: Executor = executor if executor is not None else SerialExecutor()
        cfg = APTSConfig(local_iters=local_iters, memory=memory, hessian=hessian,
                         subproblem=subproblem, norm=norm, combine=combine, radius=radius,
                         radius_min=radius_min, radius_max=radius_max, eta=eta,
                         eta_expand=eta_expand, shrink=shrink, expand=expand,
                         global_pass=global_pass, reset_local_memory=reset_local_memory,
                         tolerance_grad=tolerance_grad, reuse_evaluations=reuse_evaluations)
        kind = decomposition if isinstance(decomposition, str) else "custom"
        if isinstance(decomposition, str) and decomposition not in DECOMPOSITIONS:
            raise ValueError(f"decomposition={decomposition!r} is not allowed; choose one of "
                             f"{', '.join(map(repr, DECOMPOSITIONS))} or pass a Decomposition")
        if not isinstance(decomposition, str | Decomposition):
            raise ValueError("decomposition must be a name or a mldd.decomposition.Decomposition,"
                             f" got {type(decomposition).__name__}")
        if model is not None and not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if kind in ("auto", "layers", "data") and model is None:
            raise ValueError(
                f"APTS(decomposition={kind!r}) needs the module: pass model=<the nn.Module "
                "holding the parameters> (" + ("its layers define the subdomains" if
                                              kind == "layers" else "the closure(model, rows) "
                                              "evaluates it on each shard") + ")")
        if kind in ("auto", "data"):
            if n_shards is None:
                n_shards = self.executor.world_size if self.executor.world_size > 1 else 2
            check_int("n_shards", n_shards)
        elif n_shards is not None or n_rows is not None:
            raise ValueError("n_shards and n_rows apply to decomposition='data' or 'auto' only")
        check_int("n_rows", n_rows, allow_none=True)
        check_loss_reduction(loss_reduction)
        if blocks is not None and kind not in ("auto", "layers"):
            raise ValueError("blocks applies to decomposition='layers' or 'auto' only")
        self.model = model
        self.kind = kind
        self._blocks = blocks
        self.n_shards = n_shards
        self.n_rows = n_rows
        self.loss_reduction = loss_reduction
        defaults = asdict(cfg)
        defaults["decomposition"] = kind
        super().__init__(params, defaults)
        self.decomposition: Decomposition | None = None
        if isinstance(decomposition, Decomposition):
            self.decomposition = decomposition
        elif kind in ("auto", "layers"):
            # "auto" builds its layer blocks now so that a bad model fails at construction.
            assert model is not None
            self.decomposition = Decomposition.by_layers(model, blocks=blocks,
                                                         params=self._params)
        elif kind == "param_groups":
            self.decomposition = Decomposition.by_param_groups(self.param_groups, self._params,
                                                               model=model)
        if self.decomposition is not None:
            n = sum(p.numel() for p in self._params)
            if self.decomposition.n != n:
                raise ValueError(f"the decomposition covers {self.decomposition.n} entries, "
                                 f"the parameters have {n}")
            check_disjoint(self.decomposition)
        if kind in ("auto", "data"):
            assert model is not None
            held = {id(p) for p in model.parameters()}
            if any(id(p) not in held for p in self._params):
                raise ValueError("decomposition='data' evaluates model= on each shard, so the "
                                 "optimized parameters must be parameters of that model")

    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        cfg = APTSConfig(**{k: hyper[k] for k in _CONFIG_KEYS})
        return APTSSolver(cfg, executor=self.executor, counters=self.counters)

    @property
    def radius(self) -> float:
        """The current global trust-region radius Δ."""
        solver = self._solver
        assert isinstance(solver, APTSSolver)
        return solver.radius

    def _resolve(self, closure: Callable[..., Tensor]) -> str:
        """The decomposition this step uses: ``"auto"`` is decided once, by the first closure."""
        kind = self.param_groups[0]["decomposition"]
        if kind != "auto":
            return str(kind)
        known_rows = getattr(closure, "n_rows", None) is not None or self.n_rows is not None
        kind = "data" if closure_kind(closure) == "rows" and known_rows else "layers"
        # Kept in the hyper-parameters so that state_dict() carries the choice: a resumed run
        # keeps the subdomains its local memories belong to.
        for group in self.param_groups:
            group["decomposition"] = kind
        if kind == "data":
            logger.info("APTS decomposition: %d data shards (decomposition='auto', the closure "
                        "takes rows)", self.n_shards)
        else:
            assert self.decomposition is not None
            logger.info("APTS decomposition (decomposition='auto', a closure without rows or "
                        "batch size): %d layer blocks:\n%s", len(self.decomposition),
                        self.decomposition.table())
        return kind

    @property
    def resolved_decomposition(self) -> str:
        """The decomposition in use: ``"auto"`` until the first step has chosen one."""
        return str(self.param_groups[0]["decomposition"])

    def _problem(self, closure: Callable[..., Tensor]) -> SubdomainProblem:
        cfg = self._solver.config  # type: ignore[attr-defined]
        if self._resolve(closure) == "data":
            require_kind(closure, "rows", "APTS(decomposition='data')")
            n_rows = getattr(closure, "n_rows", None)
            n_rows = self.n_rows if n_rows is None else int(n_rows)
            if n_rows is None:
                raise ClosureError(
                    "APTS(decomposition='data') needs the number of rows of the batch to shard "
                    "it: pass n_rows= to the optimizer or set closure.n_rows")
            assert self.n_shards is not None
            rows = data_shards(n_rows, self.n_shards)
            shards = [ParamsObjective(self._params, bind(closure, self.model, r),
                                      counters=self.counters) for r in rows]
            return DataShards(shards, [len(r) for r in rows], combine=cfg.combine,
                              loss_reduction=self.loss_reduction)
        require_kind(closure, "plain", "APTS")
        assert self.decomposition is not None
        objective = ParamsObjective(self._params, bind(closure, self.model),
                                    counters=self.counters)
        return ParameterBlocks(objective, self.decomposition)

    @torch.no_grad()
    def step(self, closure: Callable[..., Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One APTS outer iteration.

        Args:
            closure: see the class docstring (plain for parameter blocks, ``closure(model,
                rows)`` for data shards).

        Returns:
            The loss at the parameters the step started from (0-d tensor); the new loss is
            ``last_info["loss"]``.
        """
        if closure is None:
            raise ClosureError(
                "APTS.step needs a closure that re-evaluates the loss, e.g. "
                "`optimizer.step(lambda: loss_fn(model(x), y))` (or `lambda model, rows: ...` "
                "for decomposition='data')")
        problem = self._problem(closure)
        x = params_to_vector(self._params)
        result = self._iterate_or_restore(problem, x)
        vector_to_params(result.x, self._params)
        self.last_info = {**result.info, "decomposition": self.resolved_decomposition}
        return torch.tensor(result.f_start, dtype=self._params[0].dtype)
