"""``mldd.optim.LBFGS``: a dependable L-BFGS where one ``step`` is one iteration."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from typing import Any

from torch import Tensor

from mldd.optim.base import FlatOptimizer, Solver
from mldd.solvers.lbfgs import LBFGSConfig, LBFGSSolver


class LBFGS(FlatOptimizer):
    """Limited-memory BFGS with a strong-Wolfe line search.

    Direction ``d = −H g`` by the two-loop recursion (``H₀ = γI``, ``γ = sᵀy/yᵀy``), step
    length by a strong-Wolfe line search with cubic interpolation (c1 = 1e-4, c2 = 0.9), pairs
    stored when ``yᵀs > ε‖s‖‖y‖``. Unlike ``torch.optim.LBFGS``, one :meth:`step` is exactly one
    iteration, the loss/gradient found by the line search are reused (no extra closure call per
    step), NaN/Inf trial points are backed off from, and :attr:`last_info` reports what happened
    and why the method stopped.

    Args:
        params: parameters or parameter groups (all groups form one vector).
        memory: number of stored pairs (default 10).
        line_search: ``"strong_wolfe"`` (default) or ``"backtracking"``.
        lr: initial trial step (default 1).
        c1, c2: Wolfe constants (1e-4, 0.9).
        max_ls: evaluations per line search (25).
        tolerance_grad: stop when ``max|g| ≤`` this (1e-7).
        tolerance_change: stop when the step or loss change is below this (1e-9).
        curvature_eps: pair-skipping threshold (1e-10).
        reuse_evaluations: reuse the line search's last evaluation at the next step (True);
            set False when the closure draws a new mini-batch at each call.

    Example:
        >>> opt = mldd.optim.LBFGS(model.parameters(), memory=20)
        >>> def closure():
        ...     opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); return loss
        >>> for _ in range(100):
        ...     opt.step(closure)
        ...     if opt.converged: break

    References:
        Nocedal, Wright. Numerical Optimization, 2nd ed., Alg. 3.5, 3.6, 7.4, 7.5.
    """

    def __init__(self, params: Iterable[Tensor] | Iterable[dict[str, Any]], *, memory: int = 10,
                 line_search: str = "strong_wolfe", lr: float = 1.0, c1: float = 1e-4,
                 c2: float = 0.9, max_ls: int = 25, tolerance_grad: float = 1e-7,
                 tolerance_change: float = 1e-9, curvature_eps: float = 1e-10,
                 reuse_evaluations: bool = True) -> None:
        cfg = LBFGSConfig(memory=memory, line_search=line_search, lr=lr, c1=c1, c2=c2,
                          max_ls=max_ls, tolerance_grad=tolerance_grad,
                          tolerance_change=tolerance_change, curvature_eps=curvature_eps,
                          reuse_evaluations=reuse_evaluations)
        super().__init__(params, asdict(cfg))

    def _build_solver(self, hyper: dict[str, Any]) -> Solver:
        return LBFGSSolver(LBFGSConfig(**hyper), counters=self.counters)
