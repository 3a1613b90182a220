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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mldd.linalg import small
from mldd.linalg.flat import to_numpy64 as _to_numpy
from mldd.validation import check_int

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

    Storage: one tensor per vector until the first product with ``B`` (:meth:`matvec`,
    :meth:`span_operator`), then, for good, one row-major ``(2·history × n)`` ring buffer with
    ``S`` in the first half and ``Y`` in the second, so that :meth:`matvec` is two matrix-vector
    products (``[S; Y]v`` and ``[S; Y]ᵀc``) whatever ``k``. Line-search L-BFGS never multiplies by
    ``B`` and keeps the separate tensors, on which the two-loop recursion's dot products ran up to
    3× faster than on rows of one buffer. In buffer storage the Gram matrices ``SᵀS, SᵀY, YᵀY``
    are brought up to date lazily, one matrix-vector product per new pair, at the first product
    after an update, and the middle matrix is inverted once per memory state. A trust-region step
    with Steihaug CG multiplies by ``B`` 10–20 times per iteration; re-stacking ``S, Y`` and
    forming ``SᵀS, SᵀY`` by GEMM at every memory change used to cost more than all those
    products together.

    Args:
        history: number of pairs kept (the oldest is dropped beyond it). Default 10
            (torch.optim.LBFGS uses 100; the SPQN papers [KKKK24] use 3 — pass it explicitly there).
        curvature_eps: relative curvature threshold ε. Default 1e-10.
    """

    def __init__(self, history: int = 10, *, curvature_eps: float = 1e-10) -> None:
        check_int("history", history)
        if not math.isfinite(curvature_eps) or curvature_eps < 0:
            raise ValueError(f"curvature_eps must be finite and >= 0, got {curvature_eps!r}")
        self.history = history
        self.curvature_eps = float(curvature_eps)
        self._rho: list[float] = []  # 1 / yᵢᵀsᵢ, oldest first, for the two-loop recursion
        # List storage (one tensor per vector, oldest first) until the first product with B:
        # the two-loop recursion's dot products run up to 3× faster on separate allocations
        # than on the rows of one large buffer.
        self._s_list: list[Tensor] = []
        self._y_list: list[Tensor] = []
        # Buffer storage from then on: (2·history × n), rows [0, h) hold s, [h, 2h) hold y;
        # ``_slots`` are the rows in use, oldest first.
        self._buffered = False
        self._buf: Tensor | None = None
        self._slots: list[int] = []
        # Gram entries by buffer slot: SS[i, j] = s_iᵀs_j, SY[i, j] = s_iᵀy_j, YY[i, j] = y_iᵀy_j;
        # rows in ``_gram_pending`` (oldest first) have not been multiplied yet.
        self._SS = np.zeros((history, history))
        self._SY = np.zeros((history, history))
        self._YY = np.zeros((history, history))
        self._gram_pending: list[int] = []
        self._Kinv: np.ndarray | None = None  # inverse middle matrix for the current pairs
        self._Rinv: np.ndarray | None = None  # R⁻¹ (compact inverse form) for the current pairs
        self._yy_newest = 1.0  # y_kᵀy_k of the newest pair, from update(): γ needs no pass

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self._rho)

    def _pair(self, i: int) -> tuple[Tensor, Tensor]:
        """``(s_i, y_i)`` by age (0 the oldest, −1 the newest); views, not copies."""
        if self._buf is None:
            return self._s_list[i], self._y_list[i]
        j = self._slots[i]
        return self._buf[j], self._buf[self.history + j]

    @property
    def gamma(self) -> float:
        """Initial inverse-Hessian scaling ``γ = sᵀy / yᵀy`` of the newest pair (1 when empty)."""
        if not self._rho:
            return 1.0
        return 1.0 / (self._rho[-1] * self._yy_newest)

    def pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """Copies of the stored ``(s_i)`` and ``(y_i)``, oldest first."""
        both = [self._pair(i) for i in range(len(self))]
        return [s.clone() for s, _ in both], [y.clone() for _, y in both]

    def reset(self) -> None:
        """Forget all pairs (``H = I`` afterwards). A buffer is kept, so a reset costs nothing."""
        self._s_list.clear()
        self._y_list.clear()
        self._slots.clear()
        self._rho.clear()
        self._gram_pending.clear()
        self._Kinv = self._Rinv = None

    def update(self, s: Tensor, y: Tensor) -> bool:
        """Store the pair ``(s, y)`` if it has safely positive curvature.

        Args:
            s: step ``x_{k+1} − x_k`` (1-D).
            y: gradient change ``g_{k+1} − g_k`` (1-D, same shape).

        Returns:
            ``True`` if the pair was stored (``yᵀs > ε‖s‖‖y‖``, everything finite).

        Raises:
            ValueError: ``s``, ``y`` not flat vectors of one shape, or of another length, dtype
                or device than the stored pairs (an empty memory takes any).
        """
        _check_pair(s, y)
        if self._rho:
            ref = self._pair(0)[0]
            if s.numel() != ref.numel():
                raise ValueError(
                    f"pair length {s.numel()} differs from the stored pairs' {ref.numel()}"
                )
            if (s.dtype, s.device) != (ref.dtype, ref.device):
                raise ValueError(
                    f"pair of dtype {s.dtype} on {s.device} differs from the stored pairs' "
                    f"{ref.dtype} on {ref.device}; reset() the memory first"
                )
        sy = float(torch.dot(s, y))
        s_norm = float(torch.linalg.vector_norm(s))
        yy = float(torch.dot(y, y))  # kept for γ, so that γ costs no pass per product
        if not (math.isfinite(sy) and math.isfinite(s_norm) and math.isfinite(yy)):
            return False
        if not sy > self.curvature_eps * s_norm * math.sqrt(yy):
            return False
        self._yy_newest = yy
        if not self._buffered:
            self._s_list.append(s.detach().clone())
            self._y_list.append(y.detach().clone())
            self._rho.append(1.0 / sy)
            if len(self._rho) > self.history:
                del self._s_list[0], self._y_list[0], self._rho[0]
            return True
        buf = self._buf
        if buf is None or (buf.shape[1], buf.dtype, buf.device) != (s.numel(), s.dtype,
                                                                    s.device):
            self._store([], [], [], like=s)  # empty memory (checked above): a buffer like s
        assert self._buf is not None
        if len(self._slots) >= self.history:
            old = self._slots.pop(0)
            del self._rho[0]
            if old in self._gram_pending:
                self._gram_pending.remove(old)
        slot = min(set(range(self.history)) - set(self._slots))
        self._buf[slot] = s.detach()
        self._buf[self.history + slot] = y.detach()
        self._slots.append(slot)
        self._rho.append(1.0 / sy)
        self._gram_pending.append(slot)
        self._Kinv = self._Rinv = None
        return True

    def _to_buffer(self) -> None:
        """Switch to buffer storage (at the first product with ``B``; for good)."""
        if self._buffered:
            return
        self._buffered = True
        self._store(list(range(len(self._s_list))), self._s_list, self._y_list)
        self._s_list, self._y_list = [], []
        self._Kinv = self._Rinv = None

    def _store(self, slots: list[int], s_list: list[Tensor], y_list: list[Tensor],
               like: Tensor | None = None) -> None:
        """A new buffer holding the pairs (oldest first) in rows ``slots``, all Gram entries
        pending; ``like`` gives length, dtype and device when there are no pairs."""
        ref = s_list[0] if s_list else like
        self._buf = None if ref is None else torch.zeros(
            (2 * self.history, ref.numel()), dtype=ref.dtype, device=ref.device)
        for j, sj, yj in zip(slots, s_list, y_list, strict=True):
            assert self._buf is not None
            self._buf[j] = sj
            self._buf[self.history + j] = yj
        self._slots = list(slots)
        self._gram_pending = list(slots)

    # ------------------------------------------------------------------ operators
    def apply_inverse(self, g: Tensor, *, negate: bool = False) -> Tensor:
        """``H g`` with ``H0 = γI``: by the two-loop recursion [NW06, Alg. 7.4] in list storage,
        by the compact form (:meth:`_apply_inverse_compact`) in buffer storage.

        Args:
            g: 1-D vector (typically the gradient; the L-BFGS direction is ``−H g``).
            negate: return ``−H g``, the sign folded into the existing operations (no extra
                pass over ``n``; negation is exact, so the result is bit for bit ``−(H g)``).

        Returns:
            A new tensor ``H g`` (``−H g`` with ``negate``).
        """
        sign = -1.0 if negate else 1.0
        if self._buffered and self._slots:
            return self._apply_inverse_compact(g, sign)
        q = g.detach().clone()
        k = len(self)
        both = [self._pair(i) for i in range(k)]
        alpha = [0.0] * k
        for i in range(k - 1, -1, -1):
            alpha[i] = self._rho[i] * float(torch.dot(both[i][0], q))
            q.add_(both[i][1], alpha=-alpha[i])
        # With negate, q holds −r from here on (r the recursion's vector), so each β comes out
        # negated and r's update r += (α − β)s becomes q += (−α − β')s.
        q.mul_(sign * self.gamma)
        for i in range(k):
            beta = self._rho[i] * float(torch.dot(both[i][1], q))
            q.add_(both[i][0], alpha=sign * alpha[i] - beta)
        return q

    def _apply_inverse_compact(self, g: Tensor, sign: float = 1.0) -> Tensor:
        """``H g`` from the compact representation [BNS94, eq. (3.13)], [NW06, eq. (7.24)]::

            H = γI + [S  γY] [[R⁻ᵀ(D + γYᵀY)R⁻¹, −R⁻ᵀ], [−R⁻¹, 0]] [Sᵀ; γYᵀ],

        ``R`` the upper triangle of ``SᵀY`` (``R_ij = s_iᵀy_j``, ``i ≤ j``) and ``D`` its diagonal.
        With ``a = Sᵀg``, ``b = Yᵀg``: ``H g = γg + S p + γY q``, ``q = −R⁻¹a``,
        ``p = R⁻ᵀ((D + γYᵀY)R⁻¹a − γb)``. Two passes over the pair buffer, each one BLAS call:
        ``[S; Y]g`` (fused with the newest pair's Gram entries, see :meth:`_update_gram`) and
        ``[S; Y]ᵀc``. The two-loop recursion also reads every pair twice, but in ``4k`` separate
        dot/axpy operations, each waiting for the previous one; with the pairs out of cache (the
        closure's forward and backward evict them). Used once the memory is in buffer storage,
        where the two-loop recursion's dot products on buffer rows were up to 3× slower than on
        separate tensors; in list storage the two-loop recursion stays (at 10 pairs × 100k
        float32 the two take about the same time: 0.85 ms). Returns ``sign · H g`` (the sign
        folded into the coefficients and ``β``).
        """
        w = self._update_gram(g)
        assert w is not None and self._buf is not None
        h, slots = self.history, self._slots
        rows_y = [h + j for j in slots]
        idx = np.ix_(slots, slots)
        a, b = w[slots], w[rows_y]
        if self._Rinv is None:
            self._Rinv = small.inv_lower(np.triu(self._SY[idx]).T).T
        Rinv = self._Rinv
        gamma = self.gamma
        Ra = Rinv @ a
        p = Rinv.T @ (np.diag(self._SY)[slots] * Ra + gamma * (self._YY[idx] @ Ra) - gamma * b)
        coef = np.zeros(2 * h)
        coef[slots] = sign * p
        coef[rows_y] = -sign * gamma * Ra
        c = torch.from_numpy(coef).to(dtype=g.dtype, device=g.device)
        return torch.addmv(g.detach(), self._buf.T, c, beta=sign * gamma)

    def _update_gram(self, g: Tensor | None = None) -> np.ndarray | None:
        """Gram entries of the pending rows against every older row; with ``g``, also
        ``[S; Y] g`` (all buffer rows), returned.

        Entry ``(i, j)`` always comes from the products with the newer pair's vectors. Each
        pending row takes one product with two columns ``[s_j, y_j]``: it reads the buffer once,
        where two matrix-vector products read it twice (6 against 9 ms at 50 pairs × 98k
        float64). With ``g`` the newest pending row's product takes ``g`` as a third column, so
        a trust-region iteration (one new pair, then ``[S; Y] g``) reads the buffer once instead
        of twice. Checkpoints hold the Gram matrices and the pending rows, so a resumed run makes
        the same products and stays bit-identical.
        """
        buf = self._buf
        if buf is None:
            assert not self._gram_pending and g is None
            return None
        h = self.history
        w: np.ndarray | None = None
        for n, j in enumerate(self._gram_pending):
            older = self._slots[: self._slots.index(j) + 1]
            # [S; Y] s_j gives s_iᵀs_j and y_iᵀs_j (= SY[j, i]); [S; Y] y_j gives s_iᵀy_j and
            # y_iᵀy_j.
            if g is not None and n == len(self._gram_pending) - 1:
                # Stacked as rows and transposed: BLAS sees C = A·Bᵀ with both operands
                # contiguous along n. Stacked as columns (n×3, row-major) the same product ran
                # 1.4× slower in float64 (100 × 98k: 14.3 against 10.1 ms) and 3× in float32.
                cols = _to_numpy(buf @ torch.stack([buf[j], buf[h + j], g.detach()]).T)
                w = cols[:, 2]
            else:
                cols = _to_numpy(buf @ buf[[j, h + j]].T)
            col_s, col_y = cols[:, 0], cols[:, 1]
            older_y = [h + i for i in older]
            self._SS[older, j] = col_s[older]
            self._SS[j, older] = col_s[older]
            self._SY[j, older] = col_s[older_y]
            self._SY[older, j] = col_y[older]
            self._YY[older, j] = col_y[older_y]
            self._YY[j, older] = col_y[older_y]
        self._gram_pending.clear()
        if g is not None and w is None:
            w = _to_numpy(buf @ g.detach())
        return w

    def _middle_inverse(self) -> np.ndarray:
        if self._Kinv is None:
            self._update_gram()
            idx = np.ix_(self._slots, self._slots)
            SS, SY = self._SS[idx], self._SY[idx]
            delta = 1.0 / self.gamma
            L = np.tril(SY, -1)
            K = np.block([[delta * SS, L], [L.T, -np.diag(np.diag(SY))]])
            self._Kinv = small.inv(K)
        return self._Kinv

    def matvec(self, v: Tensor) -> Tensor:
        """``B v`` for the direct L-BFGS matrix in compact form [NW06, eq. (7.24)], ``B0 = I/γ``.

        Used by trust-region methods that need the model Hessian (e.g. with Steihaug-CG).

        Args:
            v: 1-D vector.

        Returns:
            A new tensor ``B v`` (``v`` itself when the memory is empty).
        """
        self._to_buffer()
        if not self._slots or self._buf is None:
            return v.detach().clone()
        Kinv = self._middle_inverse()
        h = self.history
        delta = 1.0 / self.gamma
        rows_s = self._slots
        rows_y = [h + j for j in self._slots]
        # All 2h rows are multiplied (unused ones are finite): no gathered n×k copies.
        w_all = _to_numpy(self._buf @ v.detach())
        c = Kinv @ np.concatenate([delta * w_all[rows_s], w_all[rows_y]])
        k = len(rows_s)
        coef = np.zeros(2 * h)
        coef[rows_s] = delta * c[:k]
        coef[rows_y] = c[k:]
        return delta * v.detach() - self._buf.T @ torch.from_numpy(coef).to(dtype=v.dtype,
                                                                           device=v.device)

    def span_operator(self, g: Tensor) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray]]:
        """``B`` restricted to ``span(V)``, ``V = [g, s_1 … s_k, y_1 … y_k]`` (oldest first).

        ``B`` maps ``span(V)`` into itself (``B = δI − U K⁻¹ Uᵀ``, ``U = [δS, Y] = V E``), so
        ``B(Vz) = V(δz − E K⁻¹ Eᵀ (VᵀV) z)``. Cost: one pass over the pairs (``[S; Y]g``);
        everything else is ``O(k²)``. Used by
        :func:`~mldd.subproblem.steihaug_cg.steihaug_cg_in_span`.

        Args:
            g: the first basis vector (1-D, the pairs' length, dtype and device).

        Returns:
            ``(VᵀV, z ↦ coefficients of B(Vz))``, both of size ``2k+1`` (float64 NumPy).

        Raises:
            ValueError: the memory is empty.
        """
        self._to_buffer()
        if not self._slots or self._buf is None:
            raise ValueError("span_operator needs a non-empty memory")
        w = self._update_gram(g)  # [S; Y] g, in the same pass as the newest pair's Gram entries
        assert w is not None
        Kinv = self._middle_inverse()
        h, k = self.history, len(self._slots)
        slots = self._slots
        idx = np.ix_(slots, slots)
        gS, gY = w[slots], w[[h + j for j in slots]]
        G = np.empty((2 * k + 1, 2 * k + 1))
        G[0, 0] = float(torch.dot(g, g))
        G[0, 1:k + 1] = G[1:k + 1, 0] = gS
        G[0, k + 1:] = G[k + 1:, 0] = gY
        G[1:k + 1, 1:k + 1] = self._SS[idx]
        G[1:k + 1, k + 1:] = self._SY[idx]
        G[k + 1:, 1:k + 1] = self._SY[idx].T
        G[k + 1:, k + 1:] = self._YY[idx]
        delta = 1.0 / self.gamma

        def apply(z: np.ndarray) -> np.ndarray:
            # Matrix-vector products only: NumPy's OpenBLAS threads a (2k+1)² GEMM (see
            # mldd.linalg.small), not a GEMV.
            vz = G @ z
            c = Kinv @ np.concatenate([delta * vz[1:k + 1], vz[k + 1:]])
            out = delta * z
            out[1:k + 1] -= delta * c[:k]
            out[k + 1:] -= c[k:]
            return out

        return G, apply

    def span_vector(self, z: np.ndarray, g: Tensor) -> Tensor:
        """``Vz`` for ``V = [g, S, Y]`` as in :meth:`span_operator`: one pass over the pairs."""
        assert self._buf is not None
        h, k = self.history, len(self._slots)
        coef = np.zeros(2 * h)
        coef[self._slots] = z[1:k + 1]
        coef[[h + j for j in self._slots]] = z[k + 1:]
        out = self._buf.T @ torch.from_numpy(coef).to(dtype=g.dtype, device=g.device)
        return out.add_(g.detach(), alpha=float(z[0]))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce the operators bit for bit (tensors are cloned)."""
        s, y = self.pairs()
        return {
            "history": self.history,
            "curvature_eps": self.curvature_eps,
            "s": s,
            "y": y,
            "rho": list(self._rho),
            "yy_newest": self._yy_newest,
            # The storage, and the buffer rows of the pairs: the same layout gives the same bits
            # in the products.
            "layout": "buffer" if self._buffered else "list",
            "slots": list(self._slots),
            # The Gram matrices as computed so far and the rows not yet multiplied: restoring
            # them (instead of recomputing) keeps every later product the same.
            # (Tensors, so that torch.load(weights_only=True) accepts the checkpoint.)
            "gram": {"SS": torch.from_numpy(self._SS.copy()),
                     "SY": torch.from_numpy(self._SY.copy()),
                     "YY": torch.from_numpy(self._YY.copy()),
                     "pending": list(self._gram_pending)},
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (tensors are cloned)."""
        s_list = [t.detach() for t in d["s"]]
        y_list = [t.detach() for t in d["y"]]
        k = len(s_list)
        history = int(d["history"])
        if len(y_list) != k or k > history:
            raise ValueError("inconsistent L-BFGS state: s, y and history do not match")
        layout = d.get("layout", "list")
        if layout not in ("list", "buffer"):
            raise ValueError(f"unknown L-BFGS memory layout {layout!r}; expected list or buffer")
        self.history = history
        self.curvature_eps = float(d["curvature_eps"])
        self._SS = np.zeros((history, history))
        self._SY = np.zeros((history, history))
        self._YY = np.zeros((history, history))
        self._Kinv = self._Rinv = None
        self._buf = None
        self._buffered = layout == "buffer"
        self._s_list, self._y_list, self._slots, self._gram_pending = [], [], [], []
        if self._buffered:
            slots = [int(j) for j in d.get("slots", range(k))]
            if len(slots) != k or len(set(slots)) != k or not all(0 <= j < history
                                                                   for j in slots):
                raise ValueError(f"invalid L-BFGS buffer slots {slots} for history {history}")
            self._store(slots, s_list, y_list)
            gram = d.get("gram")
            if gram is not None:
                shape = (history, history)
                arrays = [_to_numpy(torch.as_tensor(gram[key])).copy()
                          for key in ("SS", "SY", "YY")]
                pending = [int(j) for j in gram["pending"]]
                if any(a.shape != shape for a in arrays) or not set(pending) <= set(slots):
                    raise ValueError("inconsistent L-BFGS state: Gram matrices or pending rows "
                                     f"do not fit history {history} and slots {slots}")
                self._SS, self._SY, self._YY = arrays
                self._gram_pending = [j for j in slots if j in pending]
        else:
            self._s_list = [t.clone() for t in s_list]
            self._y_list = [t.clone() for t in y_list]
        if "rho" in d:
            self._rho = [float(r) for r in d["rho"]]
        else:
            pairs = zip(s_list, y_list, strict=True)
            self._rho = [1.0 / float(torch.dot(s, y)) for s, y in pairs]
        if len(self._rho) != k:
            raise ValueError("inconsistent L-BFGS state: s, y and rho differ in length")
        if "yy_newest" in d:
            self._yy_newest = float(d["yy_newest"])
        elif k:  # a checkpoint from before yy_newest was kept
            self._yy_newest = float(torch.dot(y_list[-1], y_list[-1]))
