"""Transfer operators between the flat parameter vectors of a coarse and a fine level.

Notation (docs/algorithms.md §2.1): ``n_c``/``n_f`` the lengths of the coarse/fine flat parameter
vectors (in the order of ``model.parameters()``), ``prolong = P ∈ R^{n_f×n_c}`` (coarse correction
→ fine correction), ``restrict = R ∈ R^{n_c×n_f}`` (fine gradient → coarse; ``R = s·Pᵀ`` with
``s = restriction_scale``, 1 by default), ``inject = Π ∈ R^{n_c×n_f}`` (fine iterate → coarse
starting point).

Every operator here is **linear**, so it is equally valid for corrections and for iterates.
:meth:`prolong_params` (coarse *parameters* → fine parameters, what nested iteration uses) is
therefore the same map as :meth:`prolong` for every class in this module; it exists as a separate
name so that a future transfer whose parameter map is affine or nonlinear can differ.

Classes:

* :class:`MatrixTransfer` — explicit dense ``P`` (and optional ``R``, ``Π``); tests, small problems.
* :class:`IdentityTransfer` — ``P = R = Π = I`` (data / collocation hierarchies share parameters).
* :class:`DepthTransfer` — residual networks in the ODE view, ``K → 2K−1`` blocks [KK22].
* :class:`WidthTransfer` — MLP / ResidualMLP with fewer neurons, function-preserving widening
  (Net2Net [CGS16]) which is linear in the parameters.

The structured transfers store ``P`` and ``Π`` as sparse index maps (every fine entry is a short
weighted sum of coarse entries), so applying them costs ``O(nnz) = O(n_f)``, and ``R = s·Pᵀ`` is
applied with the transposed index map of ``P`` — the exact adjoint. Products are bitwise
deterministic on CPU and GPU (no atomic scatter-adds). All maps accept a vector of shape
``(n,)`` or a matrix of shape ``(n, k)`` (``k`` vectors as columns), in any floating dtype and on
any device, and return a new tensor.

References:
    [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
    networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
    [GST08] Gratton, Sartenaer, Toint. Recursive trust-region methods for multiscale nonlinear
    optimization. SIAM J. Optim. 19(1), 2008.
    [CGS16] Chen, Goodfellow, Shlens. Net2Net: accelerating learning via knowledge transfer.
    ICLR 2016. arXiv:1511.05641.
    [BHM00] Briggs, Henson, McCormick. A Multigrid Tutorial, 2nd ed., SIAM 2000 (full weighting).
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from mldd.validation import as_int, is_int, is_number

__all__ = [
    "DepthTransfer",
    "IdentityTransfer",
    "MatrixTransfer",
    "SparseTransfer",
    "Transfer",
    "WidthTransfer",
    "param_layout",
]


@runtime_checkable
class Transfer(Protocol):
    """What a multilevel method needs from the transfer between two adjacent levels.

    Attributes:
        n_coarse: length of the coarse flat parameter vector.
        n_fine: length of the fine flat parameter vector.
    """

    n_coarse: int
    n_fine: int

    def prolong(self, v_c: Tensor) -> Tensor:
        """Coarse correction → fine correction, ``P v_c``."""
        ...

    def restrict(self, g_f: Tensor) -> Tensor:
        """Fine gradient → coarse, ``R g_f``."""
        ...

    def inject(self, x_f: Tensor) -> Tensor:
        """Fine iterate → coarse starting point, ``Π x_f``."""
        ...


def _check_scale(owner: str, value: object) -> float:
    if not is_number(value) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{owner} restriction_scale must be a finite number > 0, got {value!r}")
    return float(value)


def _check_input(v: Tensor, n: int, owner: str, op: str, side: str) -> None:
    if not isinstance(v, Tensor):
        raise TypeError(f"{owner}.{op} expects a torch.Tensor, got {type(v).__name__}")
    if v.dim() not in (1, 2) or v.shape[0] != n:
        raise ValueError(
            f"{owner}.{op} expects a {side} vector of shape ({n},) or a matrix ({n}, k), "
            f"got shape {tuple(v.shape)}"
        )
    if not v.dtype.is_floating_point:
        raise ValueError(f"{owner}.{op} expects a floating-point tensor, got {v.dtype}")


def param_layout(model: nn.Module) -> dict[str, tuple[int, torch.Size]]:
    """Where each parameter of ``model`` sits in its flat vector.

    Returns:
        ``name → (offset, shape)`` in the order of ``model.parameters()`` (which is the order of
        ``named_parameters()``; shared parameters appear once, as in ``parameters()``).
    """
    layout: dict[str, tuple[int, torch.Size]] = {}
    offset = 0
    for name, p in model.named_parameters():
        layout[name] = (offset, p.shape)
        offset += p.numel()
    return layout


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _SparseMap:
    """``y = A x`` for a sparse ``A ∈ R^{m×n}`` given as COO triplets (duplicates add up).

    Stored row-bucketed: the rows with exactly ``k`` entries form one bucket with a ``(rows, k)``
    matrix of column indices and one of weights, so a product is a gather, a fixed-order sum over
    ``k`` and a copy into distinct output rows. Unlike a scatter-add (``index_add_``, atomic on
    GPUs) the result is bitwise deterministic on every device, which resumable runs need.
    """

    def __init__(self, rows: Tensor, cols: Tensor, vals: Tensor, shape: tuple[int, int]) -> None:
        self.rows = rows.to(torch.long)
        self.cols = cols.to(torch.long)
        self.vals = vals.to(torch.float64)
        self.shape = shape
        self._buckets: list[tuple[Tensor | None, Tensor, Tensor]] | None = None
        self._cache: dict[tuple[torch.device, torch.dtype],
                          list[tuple[Tensor | None, Tensor, Tensor]]] = {}

    def _bucketed(self) -> list[tuple[Tensor | None, Tensor, Tensor]]:
        """``(output rows or None for all rows in order, (rows, k) columns, (rows, k) weights)``.

        Built on first use: structured transfers with a fast path never need it.
        """
        if self._buckets is None:
            r, c, v = self.rows, self.cols, self.vals
            if r.numel() > 1 and not bool((r[1:] >= r[:-1]).all()):
                order = torch.argsort(r, stable=True)
                r, c, v = r[order], c[order], v[order]
            counts = torch.bincount(r, minlength=self.shape[0])
            starts = torch.cumsum(counts, 0) - counts
            sizes = torch.nonzero(torch.bincount(counts)).squeeze(1).tolist()
            self._buckets = []
            for k in sizes:
                if k == 0:
                    continue
                out_rows = torch.nonzero(counts == k).squeeze(1)
                entries = starts[out_rows].unsqueeze(1) + torch.arange(k)
                every_row = out_rows.numel() == self.shape[0]  # then out_rows == arange(m)
                self._buckets.append((None if every_row else out_rows, c[entries], v[entries]))
        return self._buckets

    def _on(self, device: torch.device,
            dtype: torch.dtype) -> list[tuple[Tensor | None, Tensor, Tensor]]:
        key = (device, dtype)
        if key not in self._cache:
            self._cache[key] = [
                (None if r is None else r.to(device), c.to(device),
                 w.to(device=device, dtype=dtype))
                for r, c, w in self._bucketed()
            ]
        return self._cache[key]

    def apply(self, x: Tensor) -> Tensor:
        buckets = self._on(x.device, x.dtype)
        if len(buckets) == 1 and buckets[0][0] is None:
            _, cols, w = buckets[0]
            return (x[cols] * (w if x.dim() == 1 else w.unsqueeze(2))).sum(dim=1)
        out = torch.zeros((self.shape[0], *x.shape[1:]), dtype=x.dtype, device=x.device)
        for rows, cols, w in buckets:
            gathered = x[cols]  # (bucket rows, k) or (bucket rows, k, columns of x)
            weighted = gathered * (w if x.dim() == 1 else w.unsqueeze(2))
            assert rows is not None
            out.index_copy_(0, rows, weighted.sum(dim=1))
        return out

    def transpose(self) -> _SparseMap:
        return _SparseMap(self.cols, self.rows, self.vals, (self.shape[1], self.shape[0]))

    def dense(self) -> Tensor:
        out = torch.zeros(self.shape, dtype=torch.float64)
        return out.index_put_((self.rows, self.cols), self.vals, accumulate=True)


class _Triplets:
    """Accumulates COO triplets block by block while a structured transfer is built."""

    def __init__(self) -> None:
        self.rows: list[Tensor] = []
        self.cols: list[Tensor] = []
        self.vals: list[Tensor] = []

    def add(self, rows: Tensor, cols: Tensor, vals: Tensor | float) -> None:
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        v = (vals.reshape(-1).to(torch.float64) if isinstance(vals, Tensor)
             else torch.full((rows.numel(),), float(vals), dtype=torch.float64))
        self.rows.append(rows)
        self.cols.append(cols)
        self.vals.append(v.expand(rows.numel()) if v.numel() == 1 else v)

    def add_range(self, row0: int, col0: int, n: int, w: float) -> None:
        """``A[row0 + i, col0 + i] += w`` for ``i < n`` (one parameter tensor copied / weighted)."""
        self.add(torch.arange(row0, row0 + n), torch.arange(col0, col0 + n), w)

    def build(self) -> tuple[Tensor, Tensor, Tensor]:
        if not self.rows:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty, torch.zeros(0, dtype=torch.float64)
        return torch.cat(self.rows), torch.cat(self.cols), torch.cat(self.vals)


class SparseTransfer:
    """A transfer given by sparse ``P`` and ``Π``; ``R = s·Pᵀ`` applied as the exact adjoint.

    Base of :class:`DepthTransfer` and :class:`WidthTransfer`; usable directly for any hand-built
    sparse transfer.

    Args:
        n_coarse: ``n_c``.
        n_fine: ``n_f``.
        prolongation: ``(rows, cols, vals)`` COO triplets of ``P`` (``rows`` index fine entries,
            ``cols`` coarse entries; duplicates add up).
        injection: ``(rows, cols, vals)`` of ``Π`` (``rows`` coarse, ``cols`` fine).
        restriction_scale: ``s`` in ``R = s·Pᵀ`` (> 0, default 1: the Galerkin choice that makes
            ``R ∇f_f(P x_c) = ∇(f_f∘P)(x_c)`` exact, [GST08]).
    """

    kind = "sparse"

    def __init__(
        self,
        n_coarse: int,
        n_fine: int,
        prolongation: tuple[Tensor, Tensor, Tensor],
        injection: tuple[Tensor, Tensor, Tensor],
        *,
        restriction_scale: float = 1.0,
    ) -> None:
        owner = type(self).__name__
        self.n_coarse = as_int(f"{owner} n_coarse", n_coarse)
        self.n_fine = as_int(f"{owner} n_fine", n_fine)
        self.restriction_scale = _check_scale(owner, restriction_scale)
        self._P = self._checked_map(prolongation, (n_fine, n_coarse), "prolongation")
        self._Pi = self._checked_map(injection, (n_coarse, n_fine), "injection")
        self._PT: _SparseMap | None = None

    def _checked_map(self, triplets: tuple[Tensor, Tensor, Tensor], shape: tuple[int, int],
                     what: str) -> _SparseMap:
        rows, cols, vals = (torch.as_tensor(t) for t in triplets)
        if not (rows.shape == cols.shape == vals.shape and rows.dim() == 1):
            raise ValueError(f"{type(self).__name__} {what} triplets must be three 1-D tensors of "
                             f"equal length, got shapes {rows.shape}, {cols.shape}, {vals.shape}")
        if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= shape[0]
                             or int(cols.min()) < 0 or int(cols.max()) >= shape[1]):
            raise ValueError(f"{type(self).__name__} {what} indices out of range for a "
                             f"{shape[0]}×{shape[1]} matrix")
        return _SparseMap(rows, cols, vals, shape)

    # Hooks that subclasses with a structured fast path override; the sparse maps stay the
    # reference (and serve matrices()).
    def _apply_P(self, x: Tensor) -> Tensor:
        return self._P.apply(x)

    def _apply_PT(self, x: Tensor) -> Tensor:
        if self._PT is None:
            self._PT = self._P.transpose()
        return self._PT.apply(x)

    def _apply_Pi(self, x: Tensor) -> Tensor:
        return self._Pi.apply(x)

    def prolong(self, v_c: Tensor) -> Tensor:
        """``P v_c`` (coarse correction → fine correction)."""
        _check_input(v_c, self.n_coarse, type(self).__name__, "prolong", "coarse")
        return self._apply_P(v_c)

    def prolong_params(self, x_c: Tensor) -> Tensor:
        """Coarse parameters → fine parameters; ``P x_c`` (the map is linear)."""
        _check_input(x_c, self.n_coarse, type(self).__name__, "prolong_params", "coarse")
        return self._apply_P(x_c)

    def restrict(self, g_f: Tensor) -> Tensor:
        """``R g_f = s·Pᵀ g_f`` (fine gradient → coarse)."""
        _check_input(g_f, self.n_fine, type(self).__name__, "restrict", "fine")
        out = self._apply_PT(g_f)
        return out if self.restriction_scale == 1.0 else out.mul_(self.restriction_scale)

    def inject(self, x_f: Tensor) -> Tensor:
        """``Π x_f`` (fine iterate → coarse starting point)."""
        _check_input(x_f, self.n_fine, type(self).__name__, "inject", "fine")
        return self._apply_Pi(x_f)

    def matrices(self) -> tuple[Tensor, Tensor, Tensor]:
        """Dense float64 ``(P, R, Π)`` — for tests and inspection of small transfers only."""
        P = self._P.dense()
        return P, self.restriction_scale * P.T.contiguous(), self._Pi.dense()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(n_coarse={self.n_coarse}, n_fine={self.n_fine}, "
                f"restriction_scale={self.restriction_scale:g})")


class MatrixTransfer:
    """A transfer given by explicit dense matrices (tests and small problems).

    Args:
        P: prolongation, shape ``(n_f, n_c)``.
        R: restriction, shape ``(n_c, n_f)``; default ``restriction_scale · Pᵀ``.
        Pi: injection ``Π``, shape ``(n_c, n_f)``; default the Moore–Penrose pseudo-inverse
            ``P⁺ = (PᵀP)⁻¹Pᵀ``, which satisfies ``Π P = I`` when ``P`` has full column rank.
        restriction_scale: ``s`` in the default ``R = s·Pᵀ`` (> 0; ignored when ``R`` is given).

    Vectors are cast to the matrices' dtype/device on the fly; results have the input's dtype.
    """

    kind = "matrix"

    def __init__(self, P: Tensor, R: Tensor | None = None, Pi: Tensor | None = None, *,
                 restriction_scale: float = 1.0) -> None:
        if not isinstance(P, Tensor) or P.dim() != 2 or 0 in P.shape:
            raise ValueError(f"MatrixTransfer P must be a non-empty 2-D tensor (n_fine, n_coarse), "
                             f"got {getattr(P, 'shape', type(P).__name__)}")
        self.n_fine, self.n_coarse = int(P.shape[0]), int(P.shape[1])
        self.restriction_scale = _check_scale("MatrixTransfer", restriction_scale)
        self.P = P.detach().clone()
        self.R = (self.restriction_scale * self.P.T if R is None else R.detach()).clone()
        self.Pi = (torch.linalg.pinv(self.P) if Pi is None else Pi.detach()).clone()
        for name, M in (("R", self.R), ("Pi", self.Pi)):
            if M.shape != (self.n_coarse, self.n_fine):
                raise ValueError(f"MatrixTransfer {name} must have shape ({self.n_coarse}, "
                                 f"{self.n_fine}) for P of shape {tuple(P.shape)}, "
                                 f"got {tuple(M.shape)}")

    @staticmethod
    def _mul(M: Tensor, v: Tensor) -> Tensor:
        return (M.to(device=v.device, dtype=v.dtype) @ v).contiguous()

    def prolong(self, v_c: Tensor) -> Tensor:
        """``P v_c``."""
        _check_input(v_c, self.n_coarse, "MatrixTransfer", "prolong", "coarse")
        return self._mul(self.P, v_c)

    def prolong_params(self, x_c: Tensor) -> Tensor:
        """``P x_c`` (linear, the same map as :meth:`prolong`)."""
        _check_input(x_c, self.n_coarse, "MatrixTransfer", "prolong_params", "coarse")
        return self._mul(self.P, x_c)

    def restrict(self, g_f: Tensor) -> Tensor:
        """``R g_f``."""
        _check_input(g_f, self.n_fine, "MatrixTransfer", "restrict", "fine")
        return self._mul(self.R, g_f)

    def inject(self, x_f: Tensor) -> Tensor:
        """``Π x_f``."""
        _check_input(x_f, self.n_fine, "MatrixTransfer", "inject", "fine")
        return self._mul(self.Pi, x_f)

    def __repr__(self) -> str:
        return f"MatrixTransfer(n_coarse={self.n_coarse}, n_fine={self.n_fine})"


class IdentityTransfer:
    """``P = R = Π = I`` on vectors of length ``n``: levels that share their parameters.

    The transfer of data (loss) hierarchies, where a coarse level evaluates the same network on
    fewer samples or collocation points (docs/algorithms.md §2.1). Every map returns a copy, so a
    caller may modify the result in place.
    """

    kind = "identity"

    def __init__(self, n: int) -> None:
        self.n_coarse = self.n_fine = as_int("IdentityTransfer n", n)
        self.restriction_scale = 1.0

    def _copy(self, v: Tensor, op: str) -> Tensor:
        _check_input(v, self.n_fine, "IdentityTransfer", op, "")
        return v.clone()

    def prolong(self, v_c: Tensor) -> Tensor:
        """``v_c`` (a copy)."""
        return self._copy(v_c, "prolong")

    def prolong_params(self, x_c: Tensor) -> Tensor:
        """``x_c`` (a copy)."""
        return self._copy(x_c, "prolong_params")

    def restrict(self, g_f: Tensor) -> Tensor:
        """``g_f`` (a copy)."""
        return self._copy(g_f, "restrict")

    def inject(self, x_f: Tensor) -> Tensor:
        """``x_f`` (a copy)."""
        return self._copy(x_f, "inject")

    def __repr__(self) -> str:
        return f"IdentityTransfer(n={self.n_fine})"


# ------------------------------------------------------------------------------------- depth


def _block_suffixes(layout: dict[str, tuple[int, torch.Size]], k: int) -> dict[str, torch.Size]:
    prefix = f"blocks.{k}."
    return {n[len(prefix):]: s for n, (_, s) in layout.items() if n.startswith(prefix)}


def _check_depth_model(model: nn.Module, role: str) -> int:
    blocks = getattr(model, "blocks", None)
    depth = getattr(model, "depth", None)
    h = getattr(model, "h", None)
    if not isinstance(blocks, nn.ModuleList) or not isinstance(depth, int) or not isinstance(
        h, int | float
    ):
        raise ValueError(
            f"DepthTransfer needs residual networks in the ODE view (attributes `blocks` "
            f"(nn.ModuleList), `depth` and step size `h`, e.g. mldd.models.ResidualMLP or "
            f"ConvResNet); the {role} model is a {type(model).__name__} without them"
        )
    if len(blocks) != depth:
        raise ValueError(f"DepthTransfer: the {role} {type(model).__name__} has depth={depth} but "
                         f"{len(blocks)} blocks")
    return depth


class DepthTransfer(SparseTransfer):
    """Depth transfer of residual networks in the ODE view: ``K`` coarse → ``2K−1`` fine blocks.

    A block is a forward-Euler step ``y ← y + h·σ(W_k y + b_k)`` at time ``t_k = k·h``; halving
    ``h`` doubles the number of time steps on the same horizon, so the two networks approximate
    the same ODE map [KK22]. With coarse blocks ``c_j`` (``j < K``) and fine blocks ``f_i``
    (``i < 2K−1``), each a block's whole parameter set:

    * prolongation ``P`` (linear interpolation in time): ``f_{2j} = c_j``,
      ``f_{2j+1} = ½(c_j + c_{j+1})``; every other parameter (input/stem, output/head) copied.
    * restriction ``R = s·Pᵀ``: ``r_j = f_{2j} + ½ f_{2j−1} + ½ f_{2j+1}`` (missing neighbours
      dropped at the ends), times ``s``. With ``s = 1`` (default) ``R`` is the exact gradient of
      the Galerkin coarse objective ``f_f∘P``: since a fine block's gradient carries the factor
      ``h_f = h_c/2``, ``Pᵀ`` (weights summing to 2) returns it to the coarse scale ``h_c``.
    * injection ``Π``: ``"injection"`` (default) ``c_j = f_{2j}``, for which ``Π P = I``;
      ``"full_weighting"`` ``c_j = ¼ f_{2j−1} + ½ f_{2j} + ¼ f_{2j+1}`` [BHM00], with the end
      blocks renormalised to ``c_0 = ⅔ f_0 + ⅓ f_1`` (and symmetrically at ``K−1``) so that
      constant profiles are reproduced; there ``Π P ≠ I`` (it is ``⅛, ¾, ⅛`` smoothing).

    ``P`` is linear, so :meth:`prolong_params` (nested iteration) is the same map: a coarse
    network with a smooth parameter profile ``W(t)`` is turned into a fine network computing
    the same function up to the ``O(h)`` Euler error (the difference shrinks about 2× per
    refinement), not exactly.

    Args:
        coarse_model: residual network with ``K >= 2`` blocks (attributes ``blocks``, ``depth``,
            ``h``), e.g. :class:`mldd.models.ResidualMLP` or :class:`mldd.models.ConvResNet`.
        fine_model: a network of the same type and sizes with ``2K−1`` blocks and
            ``h_f = h_c / 2``.
        injection: ``"injection"`` (default) or ``"full_weighting"``.
        restriction_scale: ``s`` in ``R = s·Pᵀ`` (> 0, default 1, the Galerkin scaling).
        check_step: require ``fine.h == coarse.h / 2`` (relative tolerance 1e-9), default True.
            The map itself does not read ``h``, but without this relation the two networks do
            not approximate the same ODE and the transfer loses its meaning.

    Raises:
        ValueError: for models of different types, without the ODE attributes, with depths other
            than ``K`` and ``2K−1``, different layer shapes, or a step size mismatch.

    References:
        [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
        networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
        [BHM00] Briggs, Henson, McCormick. A Multigrid Tutorial, 2nd ed., SIAM 2000.
    """

    kind = "depth"
    INJECTIONS = ("injection", "full_weighting")

    def __init__(
        self,
        coarse_model: nn.Module,
        fine_model: nn.Module,
        *,
        injection: str = "injection",
        restriction_scale: float = 1.0,
        check_step: bool = True,
    ) -> None:
        if injection not in self.INJECTIONS:
            raise ValueError(f"DepthTransfer injection must be one of {self.INJECTIONS}, "
                             f"got {injection!r}")
        if type(coarse_model) is not type(fine_model):
            raise ValueError(f"DepthTransfer needs two networks of the same type, got coarse "
                             f"{type(coarse_model).__name__} and fine {type(fine_model).__name__}")
        K = _check_depth_model(coarse_model, "coarse")
        Kf = _check_depth_model(fine_model, "fine")
        if K < 2:
            raise ValueError(f"DepthTransfer needs a coarse network with at least 2 blocks "
                             f"(K → 2K−1 refines nothing for K=1), got depth {K}")
        if Kf != 2 * K - 1:
            raise ValueError(f"DepthTransfer refines K coarse blocks into 2K−1 fine blocks: a "
                             f"coarse depth {K} needs a fine depth {2 * K - 1}, got {Kf}")
        for attr in ("width", "in_features", "out_features", "in_channels", "num_classes",
                     "image_size", "activation_name", "T", "flatten", "downsample"):
            a, b = getattr(coarse_model, attr, None), getattr(fine_model, attr, None)
            if a != b:
                raise ValueError(f"DepthTransfer: coarse and fine networks differ in {attr} "
                                 f"({a!r} vs {b!r}); only the depth may differ")
        hc, hf = float(coarse_model.h), float(fine_model.h)  # type: ignore[arg-type]
        if check_step and not math.isclose(hf, hc / 2, rel_tol=1e-9):
            raise ValueError(
                f"DepthTransfer: the fine step size must be half the coarse one (h_f = h_c/2 = "
                f"{hc / 2:g}), got h_f = {hf:g}; set fine_model.h = coarse_model.h / 2 or pass "
                "check_step=False")
        lc, lf = param_layout(coarse_model), param_layout(fine_model)
        shapes = _block_suffixes(lc, 0)
        for model_layout, depth, role in ((lc, K, "coarse"), (lf, Kf, "fine")):
            for k in range(depth):
                if _block_suffixes(model_layout, k) != shapes:
                    raise ValueError(f"DepthTransfer: block {k} of the {role} network has "
                                     f"parameters {_block_suffixes(model_layout, k)}, expected "
                                     f"{shapes} (all blocks must be alike)")
        other_c = {n: s for n, (_, s) in lc.items() if not n.startswith("blocks.")}
        other_f = {n: s for n, (_, s) in lf.items() if not n.startswith("blocks.")}
        if other_c != other_f:
            raise ValueError(f"DepthTransfer: the non-block parameters differ between the coarse "
                             f"({other_c}) and fine ({other_f}) networks (widths or in/out sizes)")
        self.coarse_depth, self.fine_depth, self.injection = K, Kf, injection

        P, Pi = _Triplets(), _Triplets()
        for name, (off_f, shape) in lf.items():
            n = shape.numel()
            if not name.startswith("blocks."):
                off_c = lc[name][0]
                P.add_range(off_f, off_c, n, 1.0)
                Pi.add_range(off_c, off_f, n, 1.0)
                continue
            i, suffix = name[len("blocks."):].split(".", 1)
            i_f = int(i)
            # P: fine 2j <- coarse j; fine 2j+1 <- mean of coarse j, j+1.
            j = i_f // 2
            if i_f % 2 == 0:
                P.add_range(off_f, lc[f"blocks.{j}.{suffix}"][0], n, 1.0)
            else:
                P.add_range(off_f, lc[f"blocks.{j}.{suffix}"][0], n, 0.5)
                P.add_range(off_f, lc[f"blocks.{j + 1}.{suffix}"][0], n, 0.5)
        for k in range(K):
            for suffix, shape in shapes.items():
                off_c, n = lc[f"blocks.{k}.{suffix}"][0], shape.numel()
                for i_f, w in self._injection_weights(k, K, injection):
                    Pi.add_range(off_c, lf[f"blocks.{i_f}.{suffix}"][0], n, w)
        super().__init__(_n_params(coarse_model), _n_params(fine_model), P.build(), Pi.build(),
                         restriction_scale=restriction_scale)
        self._segments = self._contiguous_blocks(lc, lf, shapes, K, Kf)

    @staticmethod
    def _injection_weights(k: int, K: int, injection: str) -> list[tuple[int, float]]:
        """``(fine block, weight)`` pairs that make coarse block ``k``."""
        if injection == "injection":
            return [(2 * k, 1.0)]
        if k == 0:
            return [(0, 2 / 3), (1, 1 / 3)]
        if k == K - 1:
            return [(2 * k, 2 / 3), (2 * k - 1, 1 / 3)]
        return [(2 * k - 1, 0.25), (2 * k, 0.5), (2 * k + 1, 0.25)]

    @staticmethod
    def _contiguous_blocks(lc: dict[str, tuple[int, torch.Size]],
                           lf: dict[str, tuple[int, torch.Size]], shapes: dict[str, torch.Size],
                           K: int, Kf: int) -> tuple[int, int, int] | None:
        """``(a_c, a_f, b)`` if block ``k`` occupies ``[a + k·b, a + (k+1)·b)`` of both flat
        vectors with one internal layout and the other parameters sit at the same offsets
        before the blocks and at offsets shifted by ``(Kf − K)·b`` after them (true for
        ResidualMLP and ConvResNet); else ``None`` (the sparse maps are used)."""
        b = sum(s.numel() for s in shapes.values())
        first = next(iter(shapes), None)
        if first is None or b == 0:
            return None
        a_c, a_f = lc[f"blocks.0.{first}"][0], lf[f"blocks.0.{first}"][0]
        rel = {sfx: lc[f"blocks.0.{sfx}"][0] - a_c for sfx in shapes}
        for layout, a, depth in ((lc, a_c, K), (lf, a_f, Kf)):
            for k in range(depth):
                for sfx in shapes:
                    if layout[f"blocks.{k}.{sfx}"][0] != a + k * b + rel[sfx]:
                        return None
        if a_c != a_f:
            return None
        for name, (off_c, _) in lc.items():
            if name.startswith("blocks."):
                continue
            if lf[name][0] != (off_c if off_c < a_c else off_c + (Kf - K) * b):
                return None
        return a_c, a_f, b

    def _split(self, x: Tensor, depth: int) -> tuple[Tensor, Tensor, Tensor]:
        assert self._segments is not None
        a, _, b = self._segments
        head, blocks, tail = x[:a], x[a:a + depth * b], x[a + depth * b:]
        return head, blocks.reshape(depth, b, *x.shape[1:]), tail

    def _apply_P(self, x: Tensor) -> Tensor:
        if self._segments is None:
            return super()._apply_P(x)
        head, C, tail = self._split(x, self.coarse_depth)
        F = torch.empty((self.fine_depth, *C.shape[1:]), dtype=x.dtype, device=x.device)
        F[0::2] = C
        F[1::2] = 0.5 * C[:-1] + 0.5 * C[1:]  # the same rounding as the sparse map
        return torch.cat((head, F.reshape(-1, *x.shape[1:]), tail))

    def _apply_PT(self, x: Tensor) -> Tensor:
        if self._segments is None:
            return super()._apply_PT(x)
        head, F, tail = self._split(x, self.fine_depth)
        E, O = F[0::2], 0.5 * F[1::2]
        R = E.clone()
        R[:-1] += O
        R[1:] += O
        return torch.cat((head, R.reshape(-1, *x.shape[1:]), tail))

    def _apply_Pi(self, x: Tensor) -> Tensor:
        if self._segments is None:
            return super()._apply_Pi(x)
        head, F, tail = self._split(x, self.fine_depth)
        E, O = F[0::2], F[1::2]
        if self.injection == "injection":
            C = E.clone()
        else:
            C = torch.empty_like(E)
            C[1:-1] = 0.25 * O[:-1] + 0.5 * E[1:-1] + 0.25 * O[1:]
            C[0] = (2 / 3) * E[0] + (1 / 3) * O[0]
            C[-1] = (2 / 3) * E[-1] + (1 / 3) * O[-1]
        return torch.cat((head, C.reshape(-1, *x.shape[1:]), tail))

    def __repr__(self) -> str:
        return (f"DepthTransfer(blocks {self.coarse_depth} → {self.fine_depth}, "
                f"injection={self.injection!r}, restriction_scale={self.restriction_scale:g})")


# ------------------------------------------------------------------------------------- width


def _width_roles(model: nn.Module) -> dict[str, tuple[bool, ...]]:
    """For each parameter name, which of its dimensions run over hidden neurons."""
    from mldd.models import MLP, ResidualMLP

    roles: dict[str, tuple[bool, ...]] = {}
    if isinstance(model, ResidualMLP):
        roles["input_layer.weight"], roles["input_layer.bias"] = (True, False), (True,)
        for k in range(len(model.blocks)):
            roles[f"blocks.{k}.weight"], roles[f"blocks.{k}.bias"] = (True, True), (True,)
        roles["output_layer.weight"], roles["output_layer.bias"] = (False, True), (False,)
    elif isinstance(model, MLP):
        last = len(model.layers) - 1
        for k in range(last + 1):
            roles[f"layers.{k}.weight"] = (k < last, k > 0)
            roles[f"layers.{k}.bias"] = (k < last,)
    else:
        raise ValueError(f"WidthTransfer supports mldd.models.MLP and ResidualMLP, "
                         f"got {type(model).__name__}")
    names = [n for n, _ in model.named_parameters()]
    if sorted(names) != sorted(roles):
        raise ValueError(f"WidthTransfer: {type(model).__name__} has unexpected parameters "
                         f"{sorted(set(names) ^ set(roles))} (only plain MLP/ResidualMLP layouts "
                         "are supported)")
    return roles


class WidthTransfer(SparseTransfer):
    """Width transfer: a coarse MLP / ResidualMLP with ``n_c`` hidden neurons, a fine one with
    ``n_f >= n_c``, related by function-preserving widening (Net2Net [CGS16]).

    Neuron map ``g: {0..n_f−1} → {0..n_c−1}``, ``g(i) = i`` for ``i < n_c`` and the extra fine
    neurons duplicating coarse ones (``mapping="cyclic"``: ``g(i) = (i − n_c) mod n_c``;
    ``"random"``: uniform draws from ``seed``). Cluster ``C_m = g⁻¹(m)``, size ``|C_m|``. Split
    weights ``λ_k > 0`` with ``Σ_{k∈C_m} λ_k = 1`` (``split="uniform"``: ``1/|C_m|``;
    ``"random"`` (default): ``u_k / Σ_{C_m} u`` with ``u ~ U(0.5, 1.5)`` from ``seed``).

    * **Prolongation** ``P`` (the widening): every weight ``W[i, k]`` with ``i`` a hidden output
      neuron and/or ``k`` a hidden input neuron is ``W_f[i, k] = W_c[g(i), g(k)]·λ_k``
      (a fixed input/output dimension keeps its index and weight 1); hidden biases
      ``b_f[i] = b_c[g(i)]``. Each fine entry is a *fixed* multiple of one coarse entry, so
      ``P`` is **linear** in the parameters. It is also **function preserving for every**
      ``x_c``: by induction every fine neuron ``i`` (and for ResidualMLP every component of the
      residual stream) carries the value of coarse neuron ``g(i)``, because
      ``Σ_k W_c[g(i), g(k)]·λ_k·y_c[g(k)] = Σ_m W_c[g(i), m]·y_c[m]``. Hence the network with
      parameters ``P x_c`` computes exactly the function of ``x_c``, i.e. ``f_f∘P = f_c`` as
      functions of ``x_c``. Applied to a *correction* ``s_c`` at a fine iterate ``x_f`` that is
      not of the form ``P x_c``, ``P s_c`` is just a linear subspace correction (no function is
      preserved there — nor is it needed).
    * **Restriction** ``R = s·Pᵀ``. With ``s = 1`` (default) ``R ∇f_f(P x_c) = ∇f_c(x_c)``
      exactly (chain rule on ``f_c = f_f∘P``): the coarse network *is* the Galerkin model.
    * **Injection** ``Π`` (neuron aggregation): rows of a cluster averaged, columns of a
      cluster summed, hidden biases averaged: ``W_c[m, n] = (1/|C_m|) Σ_{i∈C_m} Σ_{k∈C_n}
      W_f[i, k]``. Then ``Π P = I`` (for every split), and ``Π`` maps a widened network back to
      its coarse original.

    Why ``split="random"`` by default: with uniform splits duplicated neurons are exact copies
    (same incoming *and* outgoing weights), so every gradient — and every quasi-Newton step built
    from gradients — keeps them identical and the widened network never uses its extra neurons.
    Unequal ``λ`` give duplicates different outgoing weights, hence different gradients, while
    keeping ``P`` linear and function preserving. (Net2Net instead adds noise, which is neither.)
    :meth:`prolong_params` is the same map as :meth:`prolong`.

    Args:
        coarse_model: :class:`mldd.models.MLP` or :class:`mldd.models.ResidualMLP`.
        fine_model: the same type with equal depth, in/out sizes, activation (and ``h``, ``T``
            for ResidualMLP) and width ``>=`` the coarse width.
        mapping: ``"cyclic"`` (default) or ``"random"``.
        split: ``"random"`` (default) or ``"uniform"``.
        seed: seed of the random mapping/split (default 0); the transfer is deterministic.
        restriction_scale: ``s`` in ``R = s·Pᵀ`` (> 0, default 1).

    Attributes:
        neuron_map: ``g`` as a LongTensor of length ``n_f``.
        split_weights: ``λ`` (float64, length ``n_f``).

    References:
        [CGS16] Chen, Goodfellow, Shlens. Net2Net: accelerating learning via knowledge transfer.
        ICLR 2016. arXiv:1511.05641.
    """

    kind = "width"
    MAPPINGS = ("cyclic", "random")
    SPLITS = ("random", "uniform")

    def __init__(
        self,
        coarse_model: nn.Module,
        fine_model: nn.Module,
        *,
        mapping: str = "cyclic",
        split: str = "random",
        seed: int = 0,
        restriction_scale: float = 1.0,
    ) -> None:
        if mapping not in self.MAPPINGS:
            raise ValueError(f"WidthTransfer mapping must be one of {self.MAPPINGS}, "
                             f"got {mapping!r}")
        if split not in self.SPLITS:
            raise ValueError(f"WidthTransfer split must be one of {self.SPLITS}, got {split!r}")
        if not is_int(seed):
            raise ValueError(f"WidthTransfer seed must be an int, got {seed!r}")
        if type(coarse_model) is not type(fine_model):
            raise ValueError(f"WidthTransfer needs two networks of the same type, got coarse "
                             f"{type(coarse_model).__name__} and fine {type(fine_model).__name__}")
        roles = _width_roles(fine_model)
        _width_roles(coarse_model)
        for attr in ("in_features", "out_features", "depth", "activation_name", "h", "T",
                     "flatten"):
            a, b = getattr(coarse_model, attr, None), getattr(fine_model, attr, None)
            if a != b:
                raise ValueError(f"WidthTransfer: coarse and fine networks differ in {attr} "
                                 f"({a!r} vs {b!r}); only the width may differ")
        n_c, n_f = int(coarse_model.width), int(fine_model.width)  # type: ignore[arg-type]
        if n_c > n_f:
            raise ValueError(f"WidthTransfer: the coarse width ({n_c}) must not exceed the fine "
                             f"width ({n_f})")
        gen = torch.Generator().manual_seed(seed)
        g = torch.arange(n_f)
        if n_f > n_c:
            g[n_c:] = (torch.arange(n_f - n_c) % n_c if mapping == "cyclic"
                       else torch.randint(n_c, (n_f - n_c,), generator=gen))
        counts = torch.bincount(g, minlength=n_c).to(torch.float64)
        if split == "uniform":
            lam = 1.0 / counts[g]
        else:
            u = 0.5 + torch.rand(n_f, generator=gen, dtype=torch.float64)
            lam = u / torch.zeros(n_c, dtype=torch.float64).index_add_(0, g, u)[g]
        self.neuron_map, self.split_weights = g, lam
        self.coarse_width, self.fine_width, self.mapping, self.split = n_c, n_f, mapping, split
        avg = 1.0 / counts[g]  # Π averages the rows of a cluster

        lc, lf = param_layout(coarse_model), param_layout(fine_model)
        P, Pi = _Triplets(), _Triplets()
        for name, (off_f, shape_f) in lf.items():
            off_c, shape_c = lc[name]
            hidden = roles[name]
            # Per dimension: the coarse index of each fine index, P's and Π's factor.
            idx, pw, qw = [], [], []
            for d, is_hidden in enumerate(hidden):
                col = d == 1
                if is_hidden:
                    idx.append(g)
                    pw.append(lam if col else torch.ones(n_f, dtype=torch.float64))
                    qw.append(torch.ones(n_f, dtype=torch.float64) if col else avg)
                else:
                    m = shape_f[d]
                    idx.append(torch.arange(m))
                    pw.append(torch.ones(m, dtype=torch.float64))
                    qw.append(torch.ones(m, dtype=torch.float64))
            if len(hidden) == 1:
                fine_i = off_f + torch.arange(shape_f[0])
                coarse_i = off_c + idx[0]
                p_val, q_val = pw[0], qw[0]
            else:
                fine_i = off_f + torch.arange(shape_f.numel()).reshape(shape_f)
                coarse_i = off_c + idx[0][:, None] * shape_c[1] + idx[1][None, :]
                p_val, q_val = pw[0][:, None] * pw[1][None, :], qw[0][:, None] * qw[1][None, :]
            P.add(fine_i, coarse_i, p_val)
            Pi.add(coarse_i, fine_i, q_val)
        super().__init__(_n_params(coarse_model), _n_params(fine_model), P.build(), Pi.build(),
                         restriction_scale=restriction_scale)

    def __repr__(self) -> str:
        return (f"WidthTransfer(width {self.coarse_width} → {self.fine_width}, "
                f"mapping={self.mapping!r}, split={self.split!r}, "
                f"restriction_scale={self.restriction_scale:g})")
