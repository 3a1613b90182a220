"""Name → optimizer builder: the methods ``mldd train`` and ``mldd bench`` know.

A method is a :class:`MethodSpec`: a builder ``(params, problem, options) -> optimizer``, its
allowed option names with defaults, whether it trains on mini-batches or on the full batch, and a
one-line description. The registry lives here, at the command-line edge (ARCHITECTURE.md,
principle 4); the optimizers themselves take explicit keyword arguments.

Conventions shared by every method:

* One call of ``optimizer.step(closure)`` is one iteration of the method, except for
  ``torch-lbfgs``, which is used as people use it: one ``step`` runs up to ``max_iter=20``
  iterations (torch's default). ``torch.optim.LBFGS`` re-evaluates the closure at the start of every
  ``step``, so ``max_iter=1`` would cost it an extra gradient per iteration (measured: 127 instead
  of 70 evaluations for the same 60 iterations on Burgers), and with torch's derived
  ``max_eval = max_iter·5//4 = 1`` its line search stalls at ``t = 0``. The trainer therefore
  checks budgets between blocks of at most 20 iterations (about 3 s on Burgers), and
  :class:`BudgetedLBFGS` shortens the last blocks so that they end within the time budget.
* ``batch_size`` (every method accepts it) selects mini-batches on problems that have them
  (classification); ``None`` means the full batch. Adam and SGD default to 128, the quasi-Newton
  and trust-region methods to the full batch. PINN problems are always full batch.
* The trainer gives context (the wall-clock and iteration budgets, the model) in
  ``options["_context"]``; builders that need it (``adam-lbfgs``; the decomposition and
  multilevel methods, which need the module structure) read it, the others ignore it.
* Under ``mldd train --nproc N`` the decomposition methods get the ``torch.distributed``
  executor (:func:`mldd.train.launch.current_executor`); elsewhere they run serially.

Other methods plug in with :func:`register_method`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mldd.multilevel.moffo import DEFAULT_LR as MOFFO_DEFAULT_LR
from mldd.problems.base import Problem
from mldd.validation import is_int

Opts = dict[str, Any]
Builder = Callable[[list[Tensor], Problem, dict[str, Any]], Any]


class MethodError(ValueError):
    """A bad method name or option; the message names it and lists what is allowed."""


@dataclass(frozen=True)
class MethodSpec:
    """A registered training method.

    Attributes:
        name: the name users type (``"adam"``, ``"trust-region"``, ...).
        builder: ``(params, problem, options) -> optimizer``; ``options`` already holds the
            defaults merged with the user's values (validated) plus ``"_context"``.
        defaults: allowed option names with their defaults (``None`` = unset/automatic).
        full_batch: True when the method trains on the full batch unless ``batch_size`` is set.
        description: one line for ``mldd methods``.
        extra_options: a callable returning more allowed option names, evaluated lazily (used
            to accept every keyword of an optimizer class that may not be importable yet).
        distributed: True when the method runs its subdomains on the ``torch.distributed``
            executor under ``mldd train --nproc N`` (otherwise every process would repeat the
            same serial run).
    """

    name: str
    builder: Builder
    defaults: dict[str, Any]
    full_batch: bool
    description: str
    extra_options: Callable[[], Iterable[str]] | None = field(default=None, compare=False)
    distributed: bool = False

    def allowed(self) -> list[str]:
        """The option names this method accepts, sorted."""
        names = set(self.defaults)
        if self.extra_options is not None:
            # The optimizer module may not be there yet: the static list is all we know then.
            with contextlib.suppress(ImportError):
                names |= set(self.extra_options())
        return sorted(names)

    def resolve(self, options: dict[str, Any] | None) -> dict[str, Any]:
        """The defaults updated with ``options``, after checking every key.

        Raises:
            MethodError: for an unknown key (the message lists the allowed ones).
        """
        options = dict(options or {})
        allowed = self.allowed()
        for key in options:
            if key not in allowed:
                raise MethodError(
                    f"method {self.name!r} has no option {key!r} "
                    f"(value {options[key]!r}); allowed: {', '.join(allowed)}"
                )
        out = dict(self.defaults)
        out.update(options)
        return out


_METHODS: dict[str, MethodSpec] = {}


def register_method(
    name: str,
    builder: Builder,
    *,
    defaults: dict[str, Any] | None = None,
    full_batch: bool = True,
    description: str = "",
    extra_options: Callable[[], Iterable[str]] | None = None,
    distributed: bool = False,
) -> MethodSpec:
    """Register a training method under ``name``.

    Args:
        name: the name users type.
        builder: ``(params, problem, options) -> optimizer`` with ``optimizer.step(closure)``
            doing one iteration; may expose ``last_info`` (dict) and a ``grad_evals`` entry in it.
        defaults: allowed options with their defaults; ``batch_size`` is added if missing.
        full_batch: whether the method uses the full batch unless ``batch_size`` is given.
        description: one line for ``mldd methods``.
        extra_options: lazily evaluated extra allowed option names.
        distributed: whether the method uses the distributed executor under ``--nproc``.

    Returns:
        The registered :class:`MethodSpec`.

    Raises:
        ValueError: if ``name`` is already registered.
    """
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered")
    d = dict(defaults or {})
    d.setdefault("batch_size", None if full_batch else 128)
    spec = MethodSpec(name, builder, d, full_batch, description, extra_options, distributed)
    _METHODS[name] = spec
    return spec


def unregister_method(name: str) -> None:
    """Remove a method (for tests and plug-ins that replace a builder)."""
    _METHODS.pop(name, None)


def available_methods() -> list[str]:
    """Registered method names, sorted."""
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    """The :class:`MethodSpec` of ``name``.

    Raises:
        MethodError: for an unknown name (the message lists the known ones).
    """
    if name not in _METHODS:
        known = ", ".join(available_methods())
        raise MethodError(f"unknown method {name!r}; known methods: {known}")
    return _METHODS[name]


def describe_methods() -> dict[str, str]:
    """Name → one-line description of every method."""
    return {k: _METHODS[k].description for k in available_methods()}


def build_optimizer(
    name: str,
    params: Iterable[Tensor],
    problem: Problem,
    options: dict[str, Any] | None = None,
    context: dict[str, Any] | None = None,
) -> Any:
    """Build the optimizer of method ``name`` for ``params``.

    Args:
        name: a registered method name.
        params: the model parameters.
        problem: the problem being trained (some builders look at it).
        options: the user's method options (validated against the method's allowed keys).
        context: trainer facts a builder may need (``budget_s``, ``max_iters``).

    Returns:
        The optimizer (a ``torch.optim.Optimizer`` or an object with the same ``step``,
        ``zero_grad``, ``state_dict``, ``load_state_dict`` methods).

    Raises:
        MethodError: unknown method or option, or an option value the method rejects.
    """
    spec = get_method(name)
    opts = spec.resolve(options)
    opts["_context"] = dict(context or {})
    try:
        return spec.builder(list(params), problem, opts)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, MethodError):
            raise
        raise MethodError(f"method {name!r}: {exc}") from exc


def _kw(opts: dict[str, Any], *skip: str) -> dict[str, Any]:
    """Options without the trainer-level ones and without unset (``None``) values."""
    drop = {"batch_size", "_context", "lr_grid", *skip}
    return {k: v for k, v in opts.items() if k not in drop and v is not None}


def _positive(name: str, key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        raise MethodError(
            f"method {name!r}: option {key!r} must be a positive number, got {value!r}"
        )


# ---------------------------------------------------------------------------- baselines


def _build_adam(params: list[Tensor], problem: Problem, opts: Opts) -> torch.optim.Optimizer:
    _positive("adam", "lr", opts["lr"])
    betas = opts.get("betas")
    if betas is not None and not (
            isinstance(betas, list | tuple) and len(betas) == 2
            and all(isinstance(b, int | float) and not isinstance(b, bool) for b in betas)):
        raise MethodError(f"method 'adam': option 'betas' must be two numbers such as "
                          f"[0.9, 0.999], got {betas!r}")
    return torch.optim.Adam(params, **_kw(opts))


def _build_sgd(params: list[Tensor], problem: Problem, opts: Opts) -> torch.optim.Optimizer:
    _positive("sgd", "lr", opts["lr"])
    return torch.optim.SGD(params, **_kw(opts))


class BudgetedLBFGS(torch.optim.LBFGS):
    """``torch.optim.LBFGS`` whose block of iterations per ``step`` never overruns a time budget.

    One ``step`` runs up to ``max_iter`` iterations. Near the end of the trainer's wall-clock
    budget a full block would overrun it (measured: 254 s instead of 240 s on Klein–Gordon), so
    before every step the block is capped at ``⌊remaining time / time per iteration⌋`` (at
    least 1), with the time per iteration measured on the previous block. The algorithm is
    torch's, unchanged; only the block length adapts.
    """

    def __init__(self, params: list[Tensor], *, budget_s: float | None = None,
                 **kwargs: Any) -> None:
        super().__init__(params, **kwargs)
        self.budget_s = budget_s
        self.block_max_iter = int(self.param_groups[0]["max_iter"])
        self._elapsed = 0.0
        self._s_per_iter: float | None = None

    def set_progress(self, elapsed_s: float, iteration: int) -> None:
        """Trainer hook: training time used so far (before the next step)."""
        self._elapsed = float(elapsed_s)

    def _n_iter(self) -> int:
        return int(self.state[self._params[0]].get("n_iter", 0))

    def step(self, closure: Callable[[], Tensor]) -> Tensor:  # type: ignore[override]
        """torch's L-BFGS step with the block length capped by the remaining budget."""
        n = self.block_max_iter
        if self.budget_s is not None and self._s_per_iter:
            remaining = self.budget_s - self._elapsed
            n = max(1, min(n, int(remaining / self._s_per_iter)))
        group = self.param_groups[0]
        group["max_iter"], group["max_eval"] = n, 25 * n
        n0, t0 = self._n_iter(), time.perf_counter()
        out = super().step(closure)
        done = self._n_iter() - n0
        if done > 0:
            self._s_per_iter = (time.perf_counter() - t0) / done
        return out


def _torch_lbfgs(
    params: list[Tensor], history: Any, lr: Any, line_search: Any, max_iter: Any = 20,
    budget_s: float | None = None,
) -> BudgetedLBFGS:
    if not is_int(history, 1):
        raise MethodError(f"torch-lbfgs: option 'history' must be an integer >= 1, got {history!r}")
    _positive("torch-lbfgs", "lr", lr)
    if line_search not in ("strong_wolfe", None, "none"):
        raise MethodError(
            "torch-lbfgs: option 'line_search' must be 'strong_wolfe' or 'none', "
            f"got {line_search!r}"
        )
    if not is_int(max_iter, 1):
        raise MethodError(
            f"torch-lbfgs: option 'max_iter' must be an integer >= 1, got {max_iter!r}")
    # Up to max_iter iterations per step (see the module docstring for why not 1); max_eval is
    # set explicitly because torch derives 1 from max_iter=1, which stalls its line search.
    return BudgetedLBFGS(
        params,
        budget_s=budget_s,
        lr=lr,
        max_iter=max_iter,
        max_eval=25 * max_iter,
        history_size=history,
        line_search_fn=None if line_search in (None, "none") else "strong_wolfe",
        tolerance_grad=1e-12,
        tolerance_change=1e-14,
    )


def _build_torch_lbfgs(params: list[Tensor], problem: Problem, opts: dict[str, Any]) -> Any:
    return _torch_lbfgs(params, opts["history"], opts["lr"], opts["line_search"], opts["max_iter"],
                        budget_s=opts["_context"].get("budget_s"))


class AdamThenLBFGS:
    """Adam for a warm-up phase, then ``torch.optim.LBFGS`` (the common PINN recipe).

    The switch happens at the first iteration at which either ``iteration >= switch_iters``
    (when given) or the trainer's training time reaches ``switch_fraction × budget_s``. The
    trainer reports its progress through :meth:`set_progress` before every step. With neither
    a wall-clock budget nor ``switch_iters``, the switch is at ``switch_fraction × max_iters``,
    or after 1000 iterations when no budget is known.

    Attributes:
        last_info: ``phase`` ("adam" or "lbfgs"), ``lr`` and ``stop_reason`` (always None).
    """

    def __init__(
        self,
        params: list[Tensor],
        *,
        lr: float = 1e-3,
        switch_iters: int | None = None,
        switch_fraction: float = 0.2,
        history: int = 50,
        budget_s: float | None = None,
        max_iters: int | None = None,
    ) -> None:
        if not 0.0 <= switch_fraction <= 1.0:
            raise MethodError(
                f"adam-lbfgs: option 'switch_fraction' must lie in [0, 1], got {switch_fraction!r}"
            )
        if switch_iters is not None and not is_int(switch_iters, 0):
            raise MethodError(
                f"adam-lbfgs: option 'switch_iters' must be an integer >= 0, got {switch_iters!r}"
            )
        self.params = params
        self.adam = torch.optim.Adam(params, lr=lr)
        self.lbfgs = _torch_lbfgs(params, history, 1.0, "strong_wolfe", budget_s=budget_s)
        self.switch_iters = switch_iters
        self.switch_s: float | None = None
        if switch_iters is None:
            if budget_s is not None:
                self.switch_s = switch_fraction * budget_s
            else:
                self.switch_iters = int(switch_fraction * max_iters) if max_iters else 1000
        self.switched = False
        self.last_info: dict[str, Any] = {"phase": "adam", "lr": lr, "stop_reason": None}
        self._iteration = 0
        self._elapsed = 0.0

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The param groups of the active optimizer."""
        return (self.lbfgs if self.switched else self.adam).param_groups

    def set_progress(self, elapsed_s: float, iteration: int) -> None:
        """Trainer hook: training time and iteration count before the next step."""
        self._elapsed, self._iteration = elapsed_s, iteration
        self.lbfgs.set_progress(elapsed_s, iteration)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients of the parameters."""
        self.adam.zero_grad(set_to_none=set_to_none)

    def step(self, closure: Callable[[], Tensor]) -> Tensor | None:
        """One Adam or one L-BFGS iteration, depending on the phase."""
        if not self.switched:
            due_iter = self.switch_iters is not None and self._iteration >= self.switch_iters
            due_time = self.switch_s is not None and self._elapsed >= self.switch_s
            if due_iter or due_time:
                self.switched = True
        if self.switched:
            self.last_info = {"phase": "lbfgs", "lr": 1.0, "stop_reason": None}
            return self.lbfgs.step(closure)
        return self.adam.step(closure)

    def state_dict(self) -> dict[str, Any]:
        """Both optimizers' states and the phase."""
        return {
            "adam": self.adam.state_dict(),
            "lbfgs": self.lbfgs.state_dict(),
            "switched": self.switched,
            "switch_iters": self.switch_iters,
            "switch_s": self.switch_s,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        self.adam.load_state_dict(state["adam"])
        self.lbfgs.load_state_dict(state["lbfgs"])
        self.switched = bool(state["switched"])
        self.switch_iters = state["switch_iters"]
        self.switch_s = state["switch_s"]


def _build_adam_lbfgs(params: list[Tensor], problem: Problem, opts: Opts) -> AdamThenLBFGS:
    ctx = opts["_context"]
    _positive("adam-lbfgs", "lr", opts["lr"])
    return AdamThenLBFGS(
        params,
        lr=opts["lr"],
        switch_iters=opts["switch_iters"],
        switch_fraction=opts["switch_fraction"],
        history=opts["history"],
        budget_s=ctx.get("budget_s"),
        max_iters=ctx.get("max_iters"),
    )


# ---------------------------------------------------------------------------- mldd optimizers


_NOT_OPTIONS = ("self", "params", "model", "executor", "hierarchy")


def _init_params(cls_path: str) -> list[str]:
    """Every keyword of ``mldd.optim.<cls_path>.__init__`` (ImportError if absent)."""
    import mldd.optim as optim

    cls = getattr(optim, cls_path, None)
    if cls is None:
        raise ImportError(f"mldd.optim.{cls_path} is not available")
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "params")]


def _kwonly(cls_path: str) -> Callable[[], list[str]]:
    """The options of ``mldd.optim.<cls_path>`` a user can set: its keywords, less the objects
    the trainer passes itself (the network, the distributed executor) or that cannot be written
    on a command line."""

    def names() -> list[str]:
        return [p for p in _init_params(cls_path) if p not in _NOT_OPTIONS]

    return names


def _mldd_optimizer(cls_name: str, params: list[Tensor], opts: dict[str, Any]) -> Any:
    # Imported lazily: the trainer and the baselines must work without mldd.optim.
    import mldd.optim as optim

    cls = getattr(optim, cls_name, None)
    if cls is None:
        raise MethodError(f"mldd.optim.{cls_name} is not available in this installation")
    kw = _kw(opts)
    accepted = _kwonly(cls_name)()
    if opts.get("batch_size") is not None and "reuse_evaluations" in accepted:
        # Mini-batches change the closure between calls: cached evaluations would be stale.
        kw.setdefault("reuse_evaluations", False)
    return cls(params, **kw)


def _build_lbfgs(params: list[Tensor], problem: Problem, opts: dict[str, Any]) -> Any:
    return _mldd_optimizer("LBFGS", params, opts)


def _build_trust_region(params: list[Tensor], problem: Problem, opts: dict[str, Any]) -> Any:
    return _mldd_optimizer("TrustRegion", params, opts)


register_method(
    "adam",
    _build_adam,
    defaults={"lr": 1e-3, "betas": None, "weight_decay": None, "lr_grid": None},
    full_batch=False,
    description="torch.optim.Adam (lr 1e-3; `lr_grid` in benchmarks: one run per lr, best kept)",
)
register_method(
    "sgd",
    _build_sgd,
    defaults={"lr": 1e-2, "momentum": 0.9, "nesterov": None, "weight_decay": None, "lr_grid": None},
    full_batch=False,
    description="torch.optim.SGD with momentum 0.9 (lr 1e-2)",
)
register_method(
    "torch-lbfgs",
    _build_torch_lbfgs,
    defaults={"history": 50, "lr": 1.0, "line_search": "strong_wolfe", "max_iter": 20},
    full_batch=True,
    description="torch.optim.LBFGS, strong Wolfe, history 50, up to 20 iterations per step",
)
register_method(
    "adam-lbfgs",
    _build_adam_lbfgs,
    defaults={"lr": 1e-3, "switch_fraction": 0.2, "switch_iters": None, "history": 50},
    full_batch=True,
    description="Adam for the first 20% of the budget (or switch_iters), then torch L-BFGS h50",
)
register_method(
    "lbfgs",
    _build_lbfgs,
    defaults={"memory": 10, "line_search": "strong_wolfe"},
    full_batch=True,
    description="mldd.optim.LBFGS (two-loop L-BFGS, strong Wolfe line search, memory 10)",
    extra_options=_kwonly("LBFGS"),
)
register_method(
    "trust-region",
    _build_trust_region,
    defaults={"hessian": "lsr1", "memory": 5, "subproblem": None, "norm": "l2", "radius": 1.0},
    full_batch=True,
    description="mldd.optim.TrustRegion (L-SR1 model, OBS subproblem, memory 5)",
    extra_options=_kwonly("TrustRegion"),
)


def _with_model(cls_name: str) -> Builder:
    """Builder of an optimizer that needs the module (``model=``) and, when launched with
    ``--nproc``, the distributed executor."""

    def build(params: list[Tensor], problem: Problem, opts: dict[str, Any]) -> Any:
        kw = dict(opts)
        model = opts["_context"].get("model")
        if model is not None:
            kw["model"] = model
        accepted = _init_params(cls_name)
        if kw.get("coarsen") == "auto":
            kw["coarsen"] = _auto_coarsen(cls_name, model, kw.get("levels"),
                                          mini_batch=opts.get("batch_size") is not None)
        wants_rows = "data" in str(kw.get("decomposition", "")) or "data" in str(
            kw.get("coarsen", ""))
        if "n_rows" in accepted and kw.get("n_rows") is None and wants_rows:
            # Data hierarchies and data shards index the rows of the batch; full-batch runs
            # know the count up front (mini-batch runs read it from the closure).
            with contextlib.suppress(NotImplementedError):
                kw["n_rows"] = problem.n_rows(None)
        if "executor" in accepted:
            from mldd.train.launch import current_executor

            kw["executor"] = current_executor()
        if cls_name in ("ASPQN", "MSPQN"):
            kw["local_objective"] = _schwarz_local_objective(
                cls_name, kw.get("local_objective"), problem, model)
        if kw.get("data_parallel") == "auto":
            # The trainer's closure is a rows closure with n_rows whenever the problem gives row
            # access (every built-in problem; its loss is a mean over rows).
            kw["data_parallel"] = model is not None and _has_rows(problem)
        return _mldd_optimizer(cls_name, params, kw)

    return build


def _auto_coarsen(cls_name: str, model: Any, levels: int | None, *, mini_batch: bool) -> str:
    """``coarsen="auto"``: ``"depth"`` when ``model`` is a residual network deep enough for
    ``levels`` levels (the hierarchy the multilevel papers use), else, saying so on the log,
    ``"data"`` for full-batch runs (coarse losses on subsets of the rows) and ``"width"`` for
    mini-batch runs (whose last batch of an epoch may be smaller than the rows a data level
    indexes); both work with any network."""
    from mldd.multilevel.hierarchy import check_depth_coarsenable

    n = (3 if levels is None else int(levels)) - 1
    if n < 1:
        return "depth"
    try:
        check_depth_coarsenable(model, n)
    except ValueError as e:
        fallback = "width" if mini_batch else "data"
        logging.getLogger("mldd.train").info(
            "%s: %s; using %s levels instead (for depth levels: problem.network=resmlp with a "
            "depth that works, and method.coarsen=depth)", cls_name.lower(), e, fallback)
        return fallback
    return "depth"


def _has_rows(problem: Problem) -> bool:
    try:
        problem.n_rows(None)
    except NotImplementedError:
        return False
    return True


def _schwarz_local_objective(cls_name: str, choice: Any, problem: Problem, model: Any) -> Any:
    """The ``local_objective`` of ASPQN/MSPQN for the option value ``choice``.

    ``"auto"`` (the registry default): the PINN layer-block objectives with cached prefix
    (:func:`mldd.problems.pinn.prefix.pinn_local_objectives`) when the problem and model allow
    them, else the generic restriction; ``"generic"`` (or unset): always the generic one; a
    callable or provider object is passed through.
    """
    if choice is None or choice == "generic":
        return None
    if choice == "auto":
        from mldd.problems.pinn.prefix import pinn_local_objectives

        return pinn_local_objectives(problem, model)
    if isinstance(choice, str):
        raise MethodError(f"method {cls_name.lower()!r}: option 'local_objective' must be "
                          f"'auto' or 'generic', got {choice!r}")
    return choice


register_method(
    "aspqn",
    _with_model("ASPQN"),
    defaults={"decomposition": "layers", "combine": "line_search", "local_objective": "auto",
              "data_parallel": "auto"},
    full_batch=True,
    description="mldd.optim.ASPQN: additive Schwarz-preconditioned L-BFGS, one subdomain per "
    "layer [KKKK24]; under --nproc the global steps are data-parallel (data_parallel='auto')",
    extra_options=_kwonly("ASPQN"),
    distributed=True,
)
register_method(
    "mspqn",
    _with_model("MSPQN"),
    defaults={"decomposition": "layers", "local_objective": "auto"},
    full_batch=True,
    description="mldd.optim.MSPQN: multiplicative Schwarz-preconditioned L-BFGS [KKKK24]",
    extra_options=_kwonly("MSPQN"),
)
register_method(
    "apts",
    _with_model("APTS"),
    full_batch=True,
    description="mldd.optim.APTS: additively preconditioned trust region, data shards "
    "(default under the trainer) or layer blocks [CTKK23, CTKK25]",
    extra_options=_kwonly("APTS"),
    distributed=True,
)
register_method(
    "rmtr",
    _with_model("RMTR"),
    # A 2-level data/collocation hierarchy (coarse level on 1/8 of the rows) was the fastest
    # RMTR configuration in issue 5's measurements (2–3× TrustRegion's cost on Burgers and
    # Allen–Cahn) and works with any network; depth hierarchies need a residual network with
    # 2^(L−1)(K₀−1)+1 blocks (`--set method.coarsen=depth`).
    defaults={"levels": 2, "coarsen": "data", "cycle": "V",
              "hierarchy_options": {"data_ratio": 0.125}},
    full_batch=True,
    description="mldd.optim.RMTR: recursive multilevel trust region (V-cycle; default 2 levels, "
    "coarse loss on 1/8 of the rows; coarsen=depth|width|data) [GST08, KK22]",
    extra_options=_kwonly("RMTR"),
)
register_method(
    "mgopt",
    _with_model("MGOpt"),
    defaults={"levels": 3, "coarsen": "auto"},
    full_batch=True,
    description="mldd.optim.MGOpt: multilevel cycle with a line search on the coarse correction "
    "(coarsen='auto': depth levels for a residual network deep enough, else data levels)",
    extra_options=_kwonly("MGOpt"),
)
register_method(
    "moffo",
    _with_model("MOFFO"),
    defaults={"levels": 3, "coarsen": "auto", "lr": MOFFO_DEFAULT_LR, "scale": "rms"},
    full_batch=False,
    description="mldd.optim.MOFFO: objective-function-free multilevel AdaGrad [GKT23] "
    "(coarsen='auto': depth levels for a residual network deep enough, else width levels)",
    extra_options=_kwonly("MOFFO"),
)


def _build_adagrad(params: list[Tensor], problem: Problem, opts: Opts) -> torch.optim.Optimizer:
    _positive("adagrad", "lr", opts["lr"])
    return torch.optim.Adagrad(params, **_kw(opts))


register_method(
    "adagrad",
    _build_adagrad,
    defaults={"lr": 1e-2, "eps": None, "initial_accumulator_value": None, "lr_grid": None},
    full_batch=False,
    description="torch.optim.Adagrad (lr 1e-2; the one-level method of MOFFO)",
)
