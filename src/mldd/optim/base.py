"""A thin ``torch.optim.Optimizer`` shell over a flat-vector solver of :mod:`mldd.solvers`.

All parameters of all groups form **one** flat vector ``x`` (the order of ``param_groups`` and of
the parameters inside them). Hyper-parameters live in ``defaults`` / ``param_groups`` as torch
users expect; because the algorithm works on the concatenated vector, every group must carry the
same values. ``state_dict()`` holds every piece of algorithm state (radius, quasi-Newton memory,
cached evaluation, counters), so a resumed run continues bit-identically.
"""

from __future__ import annotations

import copy
import functools
import itertools
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim import optimizer as _torch_optimizer

from mldd import closures
from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.objective import ClosureError, EvalCounters, ParamsObjective
from mldd.solvers.base import IterationResult


class Solver(Protocol):
    """What the shell needs from a solver."""

    counters: EvalCounters
    stop_reason: str | None

    def iterate(self, objective: Any, x: Tensor) -> IterationResult: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, d: dict[str, Any]) -> None: ...


_STATE_KEY = "solver"
_OWNER_KEY = "saved_by"


def _hooked_step(func: Callable[..., Any]) -> Callable[..., Any]:
    """``step`` with torch's step hooks, opening a profiler range only while a profiler runs.

    The same contract as ``torch.optim.Optimizer.profile_hook_step`` (global and per-optimizer
    pre-hooks, which may replace the arguments, then the step, then the post-hooks), minus
    torch's unconditional ``record_function``: that costs about 9 µs per call, which torch pays
    once per ``LBFGS.step`` (a whole solve) and mldd once per iteration — on extended Rosenbrock
    (n = 1000, ~0.8 ms per iteration) a quarter of the gap to torch's per-iteration time.
    """

    @functools.wraps(func)
    def wrapper(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if torch._C._autograd._profiler_enabled():
            with torch.autograd.profiler.record_function(
                    f"Optimizer.step#{type(self).__name__}.step"):
                return _run_step_hooks(func, self, args, kwargs)
        return _run_step_hooks(func, self, args, kwargs)

    wrapper.hooked = True  # type: ignore[attr-defined]  # torch's marker: do not wrap again
    return wrapper


def _run_step_hooks(func: Callable[..., Any], opt: Optimizer, args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
    for pre_hook in itertools.chain(_torch_optimizer._global_optimizer_pre_hooks.values(),
                                    opt._optimizer_step_pre_hooks.values()):
        res = pre_hook(opt, args, kwargs)
        if res is not None:
            if isinstance(res, tuple) and len(res) == 2:
                args, kwargs = res
            else:
                raise RuntimeError(f"{func} must return None or a tuple of (new_args, "
                                   f"new_kwargs), but got {res}.")
    out = func(opt, *args, **kwargs)
    opt._optimizer_step_code()
    for post_hook in itertools.chain(opt._optimizer_step_post_hooks.values(),
                                     _torch_optimizer._global_optimizer_post_hooks.values()):
        post_hook(opt, args, kwargs)
    return out


def _require_plain(closure: Callable[..., Tensor], method: str) -> None:
    """A :class:`ClosureError` unless ``closure`` can be called without arguments."""
    n_args = closures.required_args(closure)
    if n_args > 0:
        raise ClosureError(
            f"{method}.step needs a plain closure() -> loss, got one that takes "
            f"{n_args} argument(s) (closure(model) and "
            "closure(model, rows) are for multilevel and data-decomposition methods); "
            "e.g. `optimizer.step(lambda: loss_fn(model(x), y))`")


class FlatOptimizer(Optimizer, ABC):
    """Base of the single-vector optimizers; subclasses implement :meth:`_build_solver`.

    After each :meth:`step`, :attr:`last_info` describes what happened (loss, gradient norm,
    accepted/rejected, radius or step length, cumulative evaluation counts ``n_f``/``n_g``, and
    ``stop_reason``: ``None`` while the method can continue, else why it stopped).
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]],
                 defaults: dict[str, Any]) -> None:
        # torch adds its own keys to `defaults` (e.g. "differentiable"); remember ours.
        self._hyper_keys = tuple(defaults)
        super().__init__(params, defaults)
        self._params: list[Tensor] = [p for g in self.param_groups for p in g["params"]]
        if not self._params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1:
            raise ValueError(f"{type(self).__name__} needs all parameters in one dtype, "
                             f"got {sorted(map(str, dtypes))}")
        if not self._params[0].dtype.is_floating_point:
            raise ValueError(f"{type(self).__name__} needs floating-point parameters, "
                             f"got {self._params[0].dtype}")
        for i, group in enumerate(self.param_groups[1:], start=1):
            for k in self._hyper_keys:
                if group[k] != self.param_groups[0][k]:
                    raise ValueError(
                        f"{type(self).__name__} treats all parameter groups as one vector, so "
                        f"hyper-parameters must agree across groups; group {i} has {k}="
                        f"{group[k]!r} but group 0 has {self.param_groups[0][k]!r}")
        self.counters = EvalCounters()
        self._solver: Solver = self._build_solver(self._hyper())
        self.last_info: dict[str, Any] = {}
        self._plain_closure: Any = None

    def _hyper(self) -> dict[str, Any]:
        return {k: self.param_groups[0][k] for k in self._hyper_keys}

    def _patch_step_function(self) -> None:
        # Called by torch's Optimizer.__init__: wrap the class's `step` once, as torch does,
        # but with the lighter wrapper above (one step is one iteration here, not one solve).
        self._zero_grad_profile_name = f"Optimizer.zero_grad#{type(self).__name__}.zero_grad"
        cls = type(self)
        if not getattr(cls.step, "hooked", None):
            cls.step = _hooked_step(cls.step)  # type: ignore[method-assign]

    @abstractmethod
    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        """The solver for the hyper-parameters ``hyper`` (one entry per constructor option)."""

    @property
    def stop_reason(self) -> str | None:
        """Why the method stopped (``None`` while it can continue)."""
        return self._solver.stop_reason

    @property
    def converged(self) -> bool:
        """Whether the last step reported a stop reason."""
        return self._solver.stop_reason is not None

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One iteration of the method.

        Args:
            closure: returns the loss at the current parameters (see :mod:`mldd.objective` for
                the rule: it may call ``backward()`` unless the method needs second derivatives).

        Returns:
            The loss at the parameters the step started from (a 0-d tensor), as
            ``torch.optim.LBFGS`` does. The new loss is ``last_info["loss"]``.
        """
        if closure is None:
            raise ClosureError(
                f"{type(self).__name__}.step needs a closure that re-evaluates the loss, e.g. "
                "`optimizer.step(lambda: loss_fn(model(x), y))`")
        if closure is not self._plain_closure:  # checked once per closure object
            _require_plain(closure, type(self).__name__)
            self._plain_closure = closure
        objective = self._objective(closure)
        x = params_to_vector(self._params)
        result = self._iterate_or_restore(objective, x)
        self._write_back(result.x, objective)
        self.last_info = result.info
        # scalar_tensor: a fifth of torch.tensor's cost, paid once per iteration.
        return torch.scalar_tensor(result.f_start, dtype=self._params[0].dtype)

    def _iterate_or_restore(self, objective: Any, x: Tensor) -> IterationResult:
        """``self._solver.iterate(objective, x)``; if it raises (the closure failed, Ctrl-C), the
        parameters are put back to ``x``, the last accepted iterate, before re-raising: a trial
        point the closure was evaluating must not stay in the model."""
        try:
            return self._solver.iterate(objective, x)
        except BaseException:
            vector_to_params(x, self._params)
            raise

    def _write_back(self, x: Tensor, objective: Any) -> None:
        """Put the new iterate ``x`` into the parameters, unless the objective shows that its
        last evaluation left exactly ``x`` there (an accepted trial point): one pass saved."""
        holds = getattr(objective, "holds", None)
        if holds is None or not holds(x):
            vector_to_params(x, self._params)

    def _objective(self, closure: Callable[..., Tensor]) -> Any:
        """The objective the solver iterates on for this step's ``closure``."""
        return ParamsObjective(self._params, closure, counters=self.counters)

    def _n_params(self) -> int:
        return sum(p.numel() for p in self._params)

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with the whole solver state under the first parameter's entry
        (and the optimizer's class and flat length, which :meth:`load_state_dict` checks)."""
        entry = self.state[self._params[0]]
        entry[_STATE_KEY] = self._solver.state_dict()
        entry["last_info"] = dict(self.last_info)
        entry[_OWNER_KEY] = {"optimizer": type(self).__name__, "n_params": self._n_params()}
        return super().state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore hyper-parameters and the full solver state.

        Raises:
            ValueError: the state was saved by another optimizer class or for a different number
                of parameters (nothing is changed then).
        """
        # torch's loader casts nested values (and mangles strings), so the solver state is taken
        # out before handing the rest to torch, and restored from an exact deep copy.
        state = dict(state_dict.get("state", {}))
        entry = dict(state.get(0, {}))
        if _STATE_KEY not in entry:
            raise ValueError(f"this state_dict has no {type(self).__name__} solver state; "
                             "was it saved by a different optimizer?")
        owner = entry.pop(_OWNER_KEY, None)  # absent in checkpoints of mldd before 2026-11-25
        if owner is not None:
            name, n = owner["optimizer"], int(owner["n_params"])
            if name != type(self).__name__:
                raise ValueError(f"this state_dict was saved by {name}, not "
                                 f"{type(self).__name__}; load it into {name}")
            if n != self._n_params():
                raise ValueError(
                    f"this state_dict was saved for {n} parameters (the flat vector's length); "
                    f"this {type(self).__name__} has {self._n_params()}: is it the same model?")
        solver_state = copy.deepcopy(entry.pop(_STATE_KEY))
        last_info = copy.deepcopy(entry.pop("last_info", {}))
        state[0] = entry
        super().load_state_dict({**state_dict, "state": state})
        self._solver = self._build_solver(self._hyper())
        self._solver.load_state_dict(solver_state)
        self.counters = self._solver.counters
        self.last_info = dict(last_info)
