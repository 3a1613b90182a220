"""Limited-memory BFGS memory: inverse (two-loop) and direct (compact) products.

Notation: ``s_i = x_{i+1} - x_i``, ``y_i = g_{i+1} - g_i`` (flat 1-D vectors),
``S = [s_0 … s_{k-1}]``, ``Y = [y_0 … y_{k-1}]`` (oldest first), ``H ≈ ∇²f⁻¹``,
``B = H⁻¹ ≈ ∇²f``, ``γ`` the initial inverse scaling ``H0 = γI`` (so ``B0 = I/γ``).

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed., Springer 2006: Alg. 7.4 (two-loop
    recursion), eq. (7.20) (scaling γ), §7.2 eq. (7.24) (compact form of B).
    [BNS94] Byrd, Nocedal, Schnabel. Representations of quasi-Newton matrices and their use in
    limited memory methods. Math. Program. 63, 1994.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["LBFGSMemory"]


def _check_pair(s: Tensor, y: Tensor) -> None:
    if s.dim() != 1 or y.dim() != 1 or s.shape != y.shape:
        raise ValueError(
            f"s and y must be flat 1-D vectors of the same length, got shapes "
            f"{tuple(s.shape)} and {tuple(y.shape)}"
        )


class LBFGSMemory:
    """The last ``history`` curvature pairs ``(s_i, y_i)`` and the L-BFGS operators built on them.

    * :meth:`apply_inverse` returns ``H g`` by the two-loop recursion [NW06, Alg. 7.4] with
      ``H0 = γI``, ``γ = s_kᵀy_k / y_kᵀy_k`` of the newest pair [NW06, eq. (7.20)] (``γ = 1`` when
      the memory is empty, so ``H = I``).
    * :meth:`matvec` returns ``B v`` with the compact representation [NW06, eq. (7.24)], [BNS94]::

          B = δI − [δS  Y] [[δSᵀS, L], [Lᵀ, −D]]⁻¹ [δSᵀ; Yᵀ],   δ = 1/γ,

      ``L`` the strictly lower triangle of ``SᵀY`` and ``D`` its diagonal. With the same pairs and
      γ, ``B = H⁻¹`` exactly (in exact arithmetic).

    A pair is stored only if ``yᵀs > curvature_eps·‖s‖‖y‖`` (keeps ``H`` positive definite; the
    relative form makes the test invariant to the scaling of ``s`` and ``y``). Cost per product:
    ``O(n·k)`` with ``k ≤ history``; the ``2k×2k`` middle matrix is solved in float64.

    Args:
        history: number of pairs kept (the oldest is dropped beyond it). Default 10
            (torch.optim.LBFGS uses 100; the SPQN papers [KKKK24] use 3 — pass it explicitly there).
        curvature_eps: relative curvature threshold ε. Default 1e-10.
    """

    def __init__(self, history: int = 10, *, curvature_eps: float = 1e-10) -> None:
        if not isinstance(history, int) or history < 1:
            raise ValueError(f"history must be an integer >= 1, got {history!r}")
        if not math.isfinite(curvature_eps) or curvature_eps < 0:
            raise ValueError(f"curvature_eps must be finite and >= 0, got {curvature_eps!r}")
        self.history = history
        self.curvature_eps = float(curvature_eps)
        self._s: list[Tensor] = []
        self._y: list[Tensor] = []
        self._rho: list[float] = []  # 1 / yᵢᵀsᵢ, cached for the two-loop recursion
        self._compact: tuple[Tensor, Tensor, Tensor] | None = None  # (S, Y, K⁻¹) for matvec

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self._s)

    @property
    def gamma(self) -> float:
        """Initial inverse-Hessian scaling ``γ = sᵀy / yᵀy`` of the newest pair (1 when empty)."""
        if not self._s:
            return 1.0
        y = self._y[-1]
        return 1.0 / (self._rho[-1] * float(torch.dot(y, y)))

    def pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """Copies of the stored ``(s_i)`` and ``(y_i)``, oldest first."""
        return [t.clone() for t in self._s], [t.clone() for t in self._y]

    def reset(self) -> None:
        """Forget all pairs (``H = I`` afterwards)."""
        self._s.clear()
        self._y.clear()
        self._rho.clear()
        self._compact = None

    def update(self, s: Tensor, y: Tensor) -> bool:
        """Store the pair ``(s, y)`` if it has safely positive curvature.

        Args:
            s: step ``x_{k+1} − x_k`` (1-D).
            y: gradient change ``g_{k+1} − g_k`` (1-D, same shape).

        Returns:
            ``True`` if the pair was stored (``yᵀs > ε‖s‖‖y‖``, everything finite).
        """
        _check_pair(s, y)
        if self._s and (s.shape != self._s[0].shape):
            raise ValueError(
                f"pair length {s.numel()} differs from the stored pairs' {self._s[0].numel()}"
            )
        sy = float(torch.dot(s, y))
        s_norm = float(torch.linalg.vector_norm(s))
        y_norm = float(torch.linalg.vector_norm(y))
        if not (math.isfinite(sy) and math.isfinite(s_norm) and math.isfinite(y_norm)):
            return False
        if not sy > self.curvature_eps * s_norm * y_norm:
            return False
        self._s.append(s.detach().clone())
        self._y.append(y.detach().clone())
        self._rho.append(1.0 / sy)
        if len(self._s) > self.history:
            del self._s[0], self._y[0], self._rho[0]
        self._compact = None
        return True

    # ------------------------------------------------------------------ operators
    def apply_inverse(self, g: Tensor) -> Tensor:
        """``H g`` by the two-loop recursion [NW06, Alg. 7.4] with ``H0 = γI``.

        Args:
            g: 1-D vector (typically the gradient; the L-BFGS direction is ``−H g``).

        Returns:
            A new tensor ``H g``.
        """
        q = g.detach().clone()
        k = len(self._s)
        alpha = [0.0] * k
        for i in range(k - 1, -1, -1):
            alpha[i] = self._rho[i] * float(torch.dot(self._s[i], q))
            q.add_(self._y[i], alpha=-alpha[i])
        q.mul_(self.gamma)
        for i in range(k):
            beta = self._rho[i] * float(torch.dot(self._y[i], q))
            q.add_(self._s[i], alpha=alpha[i] - beta)
        return q

    def _compact_factors(self) -> tuple[Tensor, Tensor, Tensor]:
        if self._compact is None:
            S = torch.stack(self._s, dim=1)
            Y = torch.stack(self._y, dim=1)
            delta = 1.0 / self.gamma
            SS = (S.T @ S).double().cpu()
            SY = (S.T @ Y).double().cpu()
            L = torch.tril(SY, diagonal=-1)
            D = torch.diag(torch.diagonal(SY))
            K = torch.cat([torch.cat([delta * SS, L], 1), torch.cat([L.T, -D], 1)], 0)
            self._compact = (S, Y, torch.linalg.inv(K))
        return self._compact

    def matvec(self, v: Tensor) -> Tensor:
        """``B v`` for the direct L-BFGS matrix in compact form [NW06, eq. (7.24)], ``B0 = I/γ``.

        Used by trust-region methods that need the model Hessian (e.g. with Steihaug-CG).

        Args:
            v: 1-D vector.

        Returns:
            A new tensor ``B v`` (``v`` itself when the memory is empty).
        """
        if not self._s:
            return v.detach().clone()
        S, Y, Kinv = self._compact_factors()
        delta = 1.0 / self.gamma
        w = torch.cat([delta * (S.T @ v), Y.T @ v]).double().cpu()
        c = (Kinv @ w).to(dtype=v.dtype, device=v.device)
        k = S.shape[1]
        return delta * v - (delta * (S @ c[:k]) + Y @ c[k:])

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the operators bit for bit (tensors are cloned)."""
        return {
            "history": self.history,
            "curvature_eps": self.curvature_eps,
            "s": [t.clone() for t in self._s],
            "y": [t.clone() for t in self._y],
            "rho": list(self._rho),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (tensors are cloned)."""
        self.history = int(d["history"])
        self.curvature_eps = float(d["curvature_eps"])
        self._s = [t.detach().clone() for t in d["s"]]
        self._y = [t.detach().clone() for t in d["y"]]
        if "rho" in d:
            self._rho = [float(r) for r in d["rho"]]
        else:
            pairs = zip(self._s, self._y, strict=True)
            self._rho = [1.0 / float(torch.dot(s, y)) for s, y in pairs]
        if not (len(self._s) == len(self._y) == len(self._rho)):
            raise ValueError("inconsistent L-BFGS state: s, y and rho differ in length")
        self._compact = None
