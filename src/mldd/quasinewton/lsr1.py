"""Limited-memory symmetric rank-one (L-SR1) memory in compact form.

Notation: pairs ``(s_i, y_i)`` as flat 1-D vectors, ``S = [s_0 … s_{k-1}]``, ``Y = [y_0 … y_{k-1}]``
(oldest first), ``SᵀY = L + D + U`` (strictly lower, diagonal, strictly upper), ``B0 = γI``::

    B = γI + Ψ M⁻¹ Ψᵀ,   Ψ = Y − γS,   M = D + L + Lᵀ − γ SᵀS.

This is the SR1 recursion started from ``γI`` written in closed form [BNS94, Thm 5.1], [NW06, §7.2
eq. (7.29)]. ``B`` may be indefinite: that is why L-SR1 is paired with a trust region and the exact
OBS subproblem solver (:func:`mldd.subproblem.solve_obs`) [BEM16]. The newest secant condition
``B s_k = y_k`` always holds; all of ``B s_i = y_i`` hold when ``SᵀY`` is symmetric (e.g. the pairs
come from a quadratic) — the hereditary property of SR1.

References:
    [NW06] Nocedal, Wright. Numerical Optimization, 2nd ed. §6.2 (SR1, skip rule eq. (6.26)),
    §7.2 (compact forms).
    [BNS94] Byrd, Nocedal, Schnabel. Representations of quasi-Newton matrices and their use in
    limited memory methods. Math. Program. 63, 1994.
    [BEM16] Brust, Erway, Marcia. On solving L-SR1 trust-region subproblems. arXiv:1506.07222.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mldd.linalg import small
from mldd.linalg.flat import to_numpy64 as _to_numpy
from mldd.validation import check_int

__all__ = ["LSR1Memory"]

_GAMMA_RULES = ("fixed", "yy_sy")
# ΨᵀΨ comes from the Gram matrices unless a diagonal entry ψᵀψ has cancelled below this share of
# yᵀy + γ²sᵀs (see LSR1Memory.psi_gram).
_PP_CANCEL = 1e-2


class LSR1Memory:
    """The last ``history`` pairs and the compact L-SR1 matrix ``B = γI + Ψ M⁻¹ Ψᵀ``.

    Skip rule [NW06, eq. (6.26)]: a pair is rejected when
    ``|sᵀ(y − Bs)| ≤ skip_tol·‖s‖‖y − Bs‖`` (``B`` the current matrix) or anything is non-finite.
    The test uses ``≤`` so that a pair with ``y = Bs`` (nothing to learn, zero denominator) is
    skipped too.

    Scaling ``γ`` (``gamma_rule``):

    * ``"fixed"`` (default): ``γ = gamma_init`` (default 1). With a fixed ``B0`` the skip test
      guarantees that ``M`` stays nonsingular (``det M_new = det M · sᵀ(y − Bs)``), the compact
      form equals the SR1 recursion, and no pair is silently lost; ``B`` is then a pure
      SR1 model whose indefiniteness the trust region handles. This is why it is the default.
    * ``"yy_sy"``: ``γ = yᵀy/sᵀy`` of the newest stored pair (scale-invariant, the usual L-BFGS-like
      choice); a non-positive or non-finite value keeps the previous ``γ``. Changing ``γ`` changes
      ``Ψ`` and ``M`` for *all* pairs, so ``M`` can become (nearly) singular; the oldest pairs are
      then dropped until it is well conditioned.

    In both rules the same safeguard runs after dropping the oldest pair beyond ``history``
    (a principal submatrix of a nonsingular ``M`` may be singular). Small ``k×k`` algebra is done in
    float64 NumPy on the CPU (indexing and products on tiny arrays cost microseconds there, a
    fixed cost of every iteration), its factorizations through torch's LAPACK
    (:mod:`mldd.linalg.small`); products with ``Ψ`` stay in the pairs' dtype and device. Cost of
    :meth:`matvec`: ``O(n·k)``.

    Args:
        history: number of pairs kept. Default 5 (the papers use 3–5 [KK22, GKT23]).
        skip_tol: relative skip tolerance ``r``. Default 1e-8 [NW06, §6.2].
        gamma_init: initial (and, for ``"fixed"``, permanent) ``γ > 0``. Default 1.
        gamma_rule: ``"fixed"`` or ``"yy_sy"``. Default ``"fixed"``.
    """

    def __init__(
        self,
        history: int = 5,
        *,
        skip_tol: float = 1e-8,
        gamma_init: float = 1.0,
        gamma_rule: str = "fixed",
    ) -> None:
        check_int("history", history)
        if not math.isfinite(skip_tol) or skip_tol < 0:
            raise ValueError(f"skip_tol must be finite and >= 0, got {skip_tol!r}")
        if not math.isfinite(gamma_init) or gamma_init <= 0:
            raise ValueError(f"gamma_init must be finite and > 0, got {gamma_init!r}")
        if gamma_rule not in _GAMMA_RULES:
            raise ValueError(f"gamma_rule must be one of {_GAMMA_RULES}, got {gamma_rule!r}")
        self.history = history
        self.skip_tol = float(skip_tol)
        self.gamma_init = float(gamma_init)
        self.gamma_rule = gamma_rule
        self._gamma = float(gamma_init)
        # Pairs live in row-major ring buffers (history × n): appending writes one row, dropping
        # the oldest frees a slot, and no O(n·k) stacking happens per update. ``_slots`` lists the
        # rows in use, oldest first. Ψ rows are kept in the same slots. S and Y are the two
        # halves of one (2·history × n) buffer, so one matrix-vector product gives Sᵀs and Yᵀs.
        self._SYbuf: Tensor | None = None
        self._Sbuf: Tensor | None = None
        self._Ybuf: Tensor | None = None
        self._Pbuf: Tensor | None = None
        self._slots: list[int] = []
        self._psi_gamma: float | None = None  # γ the Ψ rows were computed with
        # Gram matrices in float64 (CPU), oldest first, grown incrementally so an update costs
        # O(n·k): SS[i, j] = s_iᵀs_j, SY[i, j] = s_iᵀy_j, YY[i, j] = y_iᵀy_j.
        self._SS = np.zeros((0, 0))
        self._SY = np.zeros((0, 0))
        self._YY = np.zeros((0, 0))
        self._Minv: np.ndarray | None = None
        # ``(version, ΨᵀΨ)`` of the last :meth:`psi_gram` call (the OBS solver's CholeskyQR).
        self._pp_cache: tuple[int, np.ndarray] | None = None
        self._version = 0
        # ``(v, v._version, memory version, Ψᵀv)`` of the last two :meth:`quad` calls: the trust
        # region offers its step to :meth:`update` right after the model value was computed from
        # it, so the skip test can reuse ``Ψᵀs`` instead of another pass over Ψ.
        self._quad_memo: list[tuple[Tensor, int, int, np.ndarray]] = []

    # ------------------------------------------------------------------ bookkeeping
    def __len__(self) -> int:
        return len(self._slots)

    @property
    def gamma(self) -> float:
        """Current ``γ`` of ``B0 = γI``."""
        return self._gamma

    @property
    def version(self) -> int:
        """A counter that changes whenever ``B`` changes (lets solvers cache factorizations)."""
        return self._version

    def pairs(self) -> tuple[list[Tensor], list[Tensor]]:
        """Copies of the stored ``(s_i)`` and ``(y_i)``, oldest first."""
        if self._Sbuf is None or self._Ybuf is None:
            return [], []
        return (
            [self._Sbuf[j].clone() for j in self._slots],
            [self._Ybuf[j].clone() for j in self._slots],
        )

    def reset(self) -> None:
        """Forget all pairs and return ``γ`` to ``gamma_init`` (``B = γ_init·I``).

        The buffers are kept (zeroed rows are simply unused), so a reset costs nothing.
        """
        self._slots.clear()
        self._gamma = self.gamma_init
        self._psi_gamma = None
        self._SS = np.zeros((0, 0))
        self._SY = np.zeros((0, 0))
        self._YY = np.zeros((0, 0))
        self._Minv = None
        self._version += 1
        self._quad_memo.clear()

    def _rcond_tol(self) -> float:
        # Relative eigenvalue floor for M: the Gram entries carry rounding of the pairs' dtype.
        eps = torch.finfo(self._Sbuf.dtype).eps if self._Sbuf is not None else 2.2e-16
        return max(1e-12, 10.0 * eps)

    def _drop_oldest(self) -> None:
        del self._slots[0]
        self._SS = self._SS[1:, 1:].copy()
        self._SY = self._SY[1:, 1:].copy()
        self._YY = self._YY[1:, 1:].copy()

    def _rows_dot(self, buf: Tensor, v: Tensor) -> np.ndarray:
        """``(Xᵀv)`` for the stored rows of ``buf``, oldest first, float64 NumPy."""
        # All rows are multiplied (unused ones are finite) to avoid gathering an n×k copy.
        return _to_numpy(buf @ v)[self._slots]

    def _rows_combine(self, buf: Tensor, c: np.ndarray, like: Tensor) -> Tensor:
        """``X c`` for the stored rows of ``buf`` and coefficients ``c`` (oldest first)."""
        full = np.zeros(buf.shape[0])
        full[self._slots] = c
        return buf.T @ torch.from_numpy(full).to(dtype=like.dtype, device=like.device)

    def _rebuild(self) -> None:
        """Recompute Ψ and M⁻¹, dropping the oldest pairs while M is ill-conditioned."""
        self._version += 1
        self._quad_memo.clear()
        while self._slots:
            SY = self._SY
            L = np.tril(SY, -1)
            M = L + L.T + np.diag(np.diag(SY)) - self._gamma * self._SS
            if np.isfinite(M).all():
                # One eigendecomposition gives both the conditioning test and M⁻¹.
                lam, Minv = small.sym_inv_eig(M)
                mu = np.abs(lam)
                if mu.min() > self._rcond_tol() * mu.max():
                    self._Minv = Minv
                    return
            self._drop_oldest()
        self._Minv = None

    def _set_psi_rows(self, slots: list[int] | None) -> None:
        """Ψ rows ``y − γ s`` for the given buffer rows (``None``: the whole buffer)."""
        assert self._Sbuf is not None and self._Ybuf is not None and self._Pbuf is not None
        # Written straight into the buffer: no gather/scatter copies. Unused rows are zero (or
        # stale but finite), so recomputing them too is harmless and cheaper than indexing.
        # ``γ·s`` then ``y − ·`` as two exactly rounded elementwise ops (not a fused
        # ``sub(alpha=γ)``, whose vectorised FMA and scalar tail round differently): a row then
        # gets the same bits whether computed alone (update) or with the whole buffer
        # (load_state_dict), so resumed runs stay bit-identical.
        rows: list[int | slice] = [slice(None)] if slots is None else list(slots)
        for j in rows:
            out = self._Pbuf[j]
            torch.mul(self._Sbuf[j], self._gamma, out=out)
            torch.sub(self._Ybuf[j], out, out=out)

    def psi_gram(self) -> np.ndarray | None:
        """ΨᵀΨ for the rows :meth:`compact_rows` returns, in their order (float64 NumPy).

        From the Gram matrices the memory keeps anyway, with no pass over ``Ψ``::

            ΨᵀΨ = YᵀY − γ(SᵀY + YᵀS) + γ²SᵀS.

        The expansion loses accuracy where ``Ψ``'s columns are much shorter than ``Y``'s and
        ``γS``'s (``y_i ≈ γ s_i``): entry ``(i, j)`` carries a rounding error of about
        ``ε·√(c_i c_j)``, ``c_i = y_iᵀy_i + γ² s_iᵀs_i``. Where a diagonal entry has cancelled
        below ``c_i/100`` (an error above ``100·ε`` relative to ``ψ_iᵀψ_i``, the order of a float32
        dot product's own rounding at ``n ~ 10⁵``), ΨᵀΨ is computed from the stored rows instead
        (one ``k×n`` by ``n×k`` product). With ``γ = yᵀy/sᵀy`` every entry changes at every
        update; at 100k float32 parameters and ``k = 5`` the expansion saves about 0.5 ms there.
        """
        if not self._slots or self._Pbuf is None:
            return None
        if self._pp_cache is None or self._pp_cache[0] != self._version:
            self._pp_cache = (self._version, self._psi_gram())
        return self._pp_cache[1].copy()

    def _psi_gram(self) -> np.ndarray:
        assert self._Pbuf is not None
        g = self._gamma
        full = len(self._slots) == self.history
        PP = self._YY - g * (self._SY + self._SY.T) + (g * g) * self._SS
        scale = np.diag(self._YY) + (g * g) * np.diag(self._SS)
        if np.isfinite(PP).all() and (np.diag(PP) >= _PP_CANCEL * scale).all():
            if not full:
                return PP
            # compact_rows returns the whole buffer then: ΨᵀΨ indexed by buffer slot.
            out = np.empty_like(PP)
            out[np.ix_(self._slots, self._slots)] = PP
            return out
        rows = self._Pbuf if full else self._Pbuf[self._slots]
        G = _to_numpy(rows @ rows.T)
        return 0.5 * (G + G.T)

    def _allocate(self, like: Tensor) -> None:
        h = self.history
        self._SYbuf = torch.zeros((2 * h, like.numel()), dtype=like.dtype, device=like.device)
        self._Sbuf = self._SYbuf[:h]
        self._Ybuf = self._SYbuf[h:]
        self._Pbuf = torch.zeros_like(self._Sbuf)

    def update(self, s: Tensor, y: Tensor) -> bool:
        """Add the pair ``(s, y)`` unless the SR1 skip rule rejects it.

        Cost ``O(n·k)``: one matvec for the skip test (none when :meth:`quad` has just seen
        ``s``), one product ``[S; Y]·[s, y]`` for the Gram matrices and one row of Ψ (all rows
        when ``γ`` changes).

        Args:
            s: step (1-D).
            y: gradient change (1-D, same shape).

        Returns:
            ``True`` if the pair is in the memory after the update.
        """
        if s.dim() != 1 or y.dim() != 1 or s.shape != y.shape:
            raise ValueError(
                f"s and y must be flat 1-D vectors of the same length, got shapes "
                f"{tuple(s.shape)} and {tuple(y.shape)}"
            )
        if self._Sbuf is not None and s.numel() != self._Sbuf.shape[1]:
            raise ValueError(
                f"pair length {s.numel()} differs from the stored pairs' {self._Sbuf.shape[1]}"
            )
        w = self._memo_lookup(s)
        s = s.detach()
        y = y.detach()
        if w is None or self._Pbuf is None or self._Minv is None:
            r = y - self.matvec(s)
        else:
            # Same arithmetic as ``matvec`` (so the same bits), with ``Ψᵀs`` from :meth:`quad`.
            r = y - (self._gamma * s + self._rows_combine(self._Pbuf, self._Minv @ w, s))
        srr = float(torch.dot(s, r))
        s_norm = float(torch.linalg.vector_norm(s))
        r_norm = float(torch.linalg.vector_norm(r))
        if not (math.isfinite(srr) and math.isfinite(s_norm) and math.isfinite(r_norm)):
            return False
        if abs(srr) <= self.skip_tol * s_norm * r_norm:
            return False
        if self._SYbuf is None or self._Sbuf is None or self._Ybuf is None or self._Pbuf is None:
            self._allocate(s)
        assert self._SYbuf is not None and self._Sbuf is not None and self._Ybuf is not None
        if len(self._slots) >= self.history:
            self._drop_oldest()
        old = list(self._slots)
        slot = min(set(range(self.history)) - set(old))
        h = self.history
        self._Sbuf[slot] = s
        self._Ybuf[slot] = y
        # Two matrix-vector products (memory-bound, one pass each): [S; Y]s and [S; Y]y, the new
        # slot included (sᵀs, sᵀy, yᵀy). Rows [0, h) of the buffer are S, [h, 2h) Y.
        SYs = _to_numpy(self._SYbuf @ s)
        SYy = _to_numpy(self._SYbuf @ y)
        Yold = [h + j for j in old]
        Ss, Sy, Ys, Yy = SYs[old], SYy[old], SYs[Yold], SYy[Yold]
        ss, sy, yy = SYs[slot], SYy[slot], SYy[h + slot]
        self._SS = _bordered(self._SS, Ss, Ss, ss)
        self._SY = _bordered(self._SY, Sy, Ys, sy)
        self._YY = _bordered(self._YY, Yy, Yy, yy)
        self._slots.append(slot)
        if self.gamma_rule == "yy_sy":
            # sᵀy is exactly 0 when x + s rounded to x (y = 0): keep γ rather than divide by 0.
            sy_f = float(sy)
            g_new = float(yy) / sy_f if sy_f != 0.0 else math.nan
            if math.isfinite(g_new) and g_new > 0:
                self._gamma = g_new
        if self._psi_gamma != self._gamma:
            self._set_psi_rows(None)
            self._psi_gamma = self._gamma
        else:
            self._set_psi_rows([slot])
        self._rebuild()
        return bool(self._slots) and self._slots[-1] == slot

    # ------------------------------------------------------------------ operators
    def compact(self) -> tuple[float, Tensor | None, Tensor | None]:
        """The compact factors ``(γ, Ψ, M⁻¹)`` with ``B = γI + Ψ M⁻¹ Ψᵀ``.

        ``Ψ`` is gathered into a new ``n×k`` tensor (an ``O(n·k)`` copy), columns oldest first.

        Returns:
            ``γ``; ``Ψ`` (``n×k``, dtype/device of the pairs); ``M⁻¹`` (``k×k``, float64, CPU).
            ``(γ, None, None)`` when the memory is empty.
        """
        if not self._slots or self._Pbuf is None or self._Minv is None:
            return self._gamma, None, None
        idx = torch.tensor(self._slots, dtype=torch.long, device=self._Pbuf.device)
        return self._gamma, self._Pbuf[idx].T.contiguous(), torch.from_numpy(self._Minv.copy())

    def compact_rows(self) -> tuple[float, Tensor | None, list[int], np.ndarray | None]:
        """The compact factors like :meth:`compact`, but ``Ψᵀ`` without an ``n×k`` copy.

        Returns ``(γ, rows, cols, M⁻¹)``: ``rows`` is ``m×n`` (row-major, dtype/device of the
        pairs) and column ``j`` of ``Ψ`` (oldest first) is ``rows[cols[j]]``; ``M⁻¹`` is a float64
        NumPy array (read-only for callers). When the ring buffer
        is full, ``rows`` *is* the buffer (read-only for callers, valid until the next
        :meth:`update`), so ``rows @ v`` and ``rows.T @ c`` are single BLAS calls on memory
        already in place. ``(γ, None, [], None)`` when the memory is empty.
        """
        if not self._slots or self._Pbuf is None or self._Minv is None:
            return self._gamma, None, [], None
        if len(self._slots) == self._Pbuf.shape[0]:
            return self._gamma, self._Pbuf, list(self._slots), self._Minv
        idx = torch.tensor(self._slots, dtype=torch.long, device=self._Pbuf.device)
        return self._gamma, self._Pbuf[idx], list(range(len(self._slots))), self._Minv

    def _memo_lookup(self, v: Tensor) -> np.ndarray | None:
        """``Ψᵀv`` if :meth:`quad` computed it for this very tensor, unmodified, with this ``B``."""
        for t, t_version, version, w in self._quad_memo:
            if t is v and t_version == v._version and version == self._version:
                return w
        return None

    def matvec(self, v: Tensor) -> Tensor:
        """``B v = γv + Ψ (M⁻¹ (Ψᵀ v))`` in ``O(n·k)``.

        Args:
            v: 1-D vector.

        Returns:
            A new tensor ``B v``.
        """
        if not self._slots or self._Pbuf is None or self._Minv is None:
            return self._gamma * v.detach()
        c = self._Minv @ self._rows_dot(self._Pbuf, v)
        return self._gamma * v.detach() + self._rows_combine(self._Pbuf, c, v)

    def quad(self, v: Tensor, vv: float | None = None) -> float:
        """``vᵀBv = γ vᵀv + wᵀM⁻¹w`` with ``w = Ψᵀv``: one pass over Ψ instead of the two of
        ``dot(v, matvec(v))`` (for model values, where only the scalar is needed).

        Args:
            v: 1-D vector.
            vv: ``vᵀv`` when the caller has it already (saves a pass over ``v``).

        Returns:
            ``vᵀBv`` as a float.
        """
        if vv is None:
            vv = float(torch.dot(v, v))
        if not self._slots or self._Pbuf is None or self._Minv is None:
            return self._gamma * vv
        w = self._rows_dot(self._Pbuf, v.detach())
        self._quad_memo = [*self._quad_memo[-1:], (v, v._version, self._version, w)]
        return self._gamma * vv + float(w @ (self._Minv @ w))

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to reproduce ``B`` bit for bit (tensors are cloned).

        Holds the pairs (oldest first), ``γ`` and the float64 Gram matrices.
        """
        s, y = self.pairs()
        return {
            "history": self.history,
            "skip_tol": self.skip_tol,
            "gamma_init": self.gamma_init,
            "gamma_rule": self.gamma_rule,
            "gamma": self._gamma,
            "s": s,
            "y": y,
            "SS": torch.from_numpy(self._SS.copy()),
            "SY": torch.from_numpy(self._SY.copy()),
            "YY": torch.from_numpy(self._YY.copy()),
            # Buffer rows of the pairs: restoring the same layout keeps products bit-identical
            # (the row order fixes the summation order in Ψc).
            "slots": list(self._slots),
        }

    def load_state_dict(self, d: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (tensors are cloned)."""
        if d["gamma_rule"] not in _GAMMA_RULES:
            raise ValueError(f"gamma_rule must be one of {_GAMMA_RULES}, got {d['gamma_rule']!r}")
        s_list = [t.detach() for t in d["s"]]
        y_list = [t.detach() for t in d["y"]]
        k = len(s_list)
        if len(y_list) != k or k > int(d["history"]):
            raise ValueError("inconsistent L-SR1 state: s, y and history do not match")
        self.history = int(d["history"])
        self.skip_tol = float(d["skip_tol"])
        self.gamma_init = float(d["gamma_init"])
        self.gamma_rule = str(d["gamma_rule"])
        self._gamma = float(d["gamma"])
        self._SYbuf = self._Sbuf = self._Ybuf = self._Pbuf = None
        self._slots = []
        self._psi_gamma = None
        if k:
            self._allocate(s_list[0])
            assert self._Sbuf is not None and self._Ybuf is not None
            slots = [int(j) for j in d.get("slots", range(k))]
            if (
                len(slots) != k
                or len(set(slots)) != k
                or not all(0 <= j < self.history for j in slots)
            ):
                raise ValueError(f"invalid L-SR1 buffer slots {slots} for history {self.history}")
            for j, sj in enumerate(slots):
                self._Sbuf[sj] = s_list[j]
                self._Ybuf[sj] = y_list[j]
            self._slots = slots
            self._set_psi_rows(None)
            self._psi_gamma = self._gamma
        # The saved Gram matrices keep a resumed run bit-identical; checkpoints written before a
        # matrix was kept (YY before 2026-11-25) get it from the pairs.
        S = torch.stack(s_list, dim=1) if k else None
        Y = torch.stack(y_list, dim=1) if k else None
        grams = {"SS": (S, S), "SY": (S, Y), "YY": (Y, Y)}
        for key, (a, b) in grams.items():
            if key in d:
                value = _to_numpy(d[key].detach()).copy()
            elif a is not None and b is not None:
                value = _to_numpy(a.T @ b)
            else:
                value = np.zeros((0, 0))
            setattr(self, f"_{key}", value)
        self._pp_cache = None
        self._rebuild()


def _bordered(A: np.ndarray, col: np.ndarray, row: np.ndarray, corner: float) -> np.ndarray:
    """``[[A, col], [rowᵀ, corner]]`` (one allocation; ``np.block`` costs ~50 µs per call)."""
    k = A.shape[0]
    out = np.empty((k + 1, k + 1))
    out[:k, :k] = A
    out[:k, k] = col
    out[k, :k] = row
    out[k, k] = corner
    return out
