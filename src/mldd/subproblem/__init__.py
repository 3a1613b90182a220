"""Trust-region subproblem solvers: ``min_s gᵀs + ½ sᵀBs`` subject to ``‖s‖ ≤ Δ``.

* :func:`cauchy_point` — the model minimiser along ``−g`` [NW06, §4.1];
* :func:`steihaug_cg` — Steihaug–Toint truncated CG, any ``B`` as a matvec [NW06, Alg. 7.2];
* :func:`solve_obs` — exact solver for compact L-SR1 ``B`` (indefinite and hard case) [BEM16];
* :func:`solve` — dispatch by name (``"cauchy"``, ``"cg"``, ``"obs"``).

Every solver supports ``norm="l2"`` and ``norm="linf"`` (box ``|s_i| ≤ Δ``) and returns a
:class:`SubproblemResult` whose decrease is at least the Cauchy decrease.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Ch. 4 and §7.1.
    [BEM16] Brust, Erway, Marcia. On solving L-SR1 trust-region subproblems. arXiv:1506.07222.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from mldd.quasinewton.lbfgs import LBFGSMemory
from mldd.quasinewton.lsr1 import LSR1Memory
from mldd.subproblem.base import NORMS, Matvec, SubproblemResult
from mldd.subproblem.cauchy import cauchy_point
from mldd.subproblem.obs import solve_obs
from mldd.subproblem.steihaug_cg import steihaug_cg, steihaug_cg_in_span

__all__ = [
    "NORMS",
    "SOLVERS",
    "Matvec",
    "SubproblemResult",
    "cauchy_point",
    "solve",
    "solve_obs",
    "steihaug_cg",
    "steihaug_cg_in_span",
]

SOLVERS = ("cauchy", "cg", "obs")


def solve(
    kind: str,
    g: Tensor,
    radius: float,
    *,
    norm: str = "l2",
    matvec: Matvec | None = None,
    memory: LSR1Memory | LBFGSMemory | None = None,
    **opts: Any,
) -> SubproblemResult:
    """Solve the trust-region subproblem with the solver named ``kind``.

    Args:
        kind: ``"cauchy"``, ``"cg"`` (Steihaug–Toint) or ``"obs"`` (needs an L-SR1 ``memory``).
        g: gradient (1-D).
        radius: ``Δ > 0``.
        norm: ``"l2"`` or ``"linf"``.
        matvec: ``v ↦ B v`` for ``"cauchy"``/``"cg"``; when omitted, ``memory.matvec`` is used.
        memory: quasi-Newton memory (required for ``"obs"``; otherwise replaces ``matvec``).
        **opts: solver options (``rtol``, ``max_iter`` for ``"cg"``).

    Returns:
        The solver's :class:`SubproblemResult`.

    Raises:
        ValueError: unknown ``kind``, missing ``matvec``/``memory``, or unknown options.
    """
    if kind not in SOLVERS:
        raise ValueError(f"unknown subproblem solver {kind!r}; allowed: {', '.join(SOLVERS)}")
    if kind == "obs":
        if not isinstance(memory, LSR1Memory):
            raise ValueError(
                f"subproblem solver 'obs' needs memory=LSR1Memory, got {type(memory).__name__}"
            )
        if opts:
            raise ValueError(f"subproblem solver 'obs' takes no options, got {sorted(opts)}")
        return solve_obs(g, memory, radius, norm)
    if matvec is None:
        if memory is None:
            raise ValueError(f"subproblem solver {kind!r} needs matvec= or memory=")
        matvec = memory.matvec
    if kind == "cauchy":
        if opts:
            raise ValueError(f"subproblem solver 'cauchy' takes no options, got {sorted(opts)}")
        return cauchy_point(g, matvec, radius, norm)
    unknown = set(opts) - {"rtol", "max_iter"}
    if unknown:
        raise ValueError(
            f"subproblem solver 'cg' got unknown options {sorted(unknown)}; allowed: rtol, max_iter"
        )
    return steihaug_cg(g, matvec, radius, norm, **opts)
