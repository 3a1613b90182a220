"""Decompositions of the flat parameter vector into subdomains (and of the data into shards).

Notation [KKKK24 §3]: the flat vector ``x ∈ Rⁿ`` is split into index sets ``S_1 … S_N`` (they may
overlap); ``R_s x = x[S_s]`` is the restriction, ``E_s = R_sᵀ`` the extension by zeros. Each entry
``i`` is held by ``m_i = #{s : i ∈ S_s} ≥ 1`` subdomains (its *multiplicity*). Local corrections
``c_s ∈ R^{|S_s|}`` are combined as ::

    d = Σ_s E_s (w_s ⊙ c_s),      with   Σ_{s ∋ i} w_s[i] = 1   for every entry i,

a partition of unity. The default weights are ``w_s[i] = 1/m_i`` ("multiplicity": the summed
corrections divided by the multiplicity, as in [KKKK24]); ``"restricted"`` gives each overlapped
entry weight 1 in the subdomain that owns it in the non-overlapping partition and 0 elsewhere
(restricted additive Schwarz [CS99]: the overlap enlarges the local problems but each entry is
updated by one subdomain only). Without overlap both are the plain sum.

A *layer* is a module's own parameters (``module.parameters(recurse=False)``) — for ``nn.Linear``
and ``nn.Conv*`` the weight and the bias together — taken in ``model.named_modules()`` order. For
:class:`~mldd.models.ResidualMLP` this gives the input layer, each residual block and the output
layer; one subdomain per layer is the papers' best choice for PINNs [KKKK24].

References:
    [KKKK24] Kopaničáková, Kothari, Karniadakis, Krause. Enhancing training of physics-informed
    neural networks using domain-decomposition based preconditioning strategies. SIAM J. Sci.
    Comput. 46(5), 2024. arXiv:2306.17648.
    [CS99] Cai, Sarkis. A restricted additive Schwarz preconditioner for general sparse linear
    systems. SIAM J. Sci. Comput. 21(2), 1999.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from mldd.validation import check_int, is_int

WEIGHTINGS = ("multiplicity", "restricted")


@dataclass(frozen=True, eq=False)
class Subdomain:
    """One index set ``S_s`` of the flat parameter vector.

    Attributes:
        name: a short label for tables and logs.
        index: sorted 1-D ``int64`` tensor of distinct positions in the flat vector.
        layers: names of the layers (or parameters, or blocks) it holds.
    """

    name: str
    index: Tensor
    layers: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.index.numel())

    @property
    def span(self) -> tuple[int, int] | None:
        """``(start, stop)`` when ``index`` is one contiguous range (restriction is then a view)."""
        k = self.index.numel()
        if k == 0:
            return None
        start, stop = int(self.index[0]), int(self.index[-1]) + 1
        return (start, stop) if stop - start == k else None


@dataclass(frozen=True)
class Segment:
    """A named contiguous range ``[start, stop)`` of the flat vector (one parameter or block)."""

    name: str
    start: int
    stop: int


class Decomposition:
    """Subdomains ``S_1 … S_N`` of a flat vector of length ``n`` with partition-of-unity weights.

    Every builder checks that the subdomains cover every entry; an uncovered entry raises a
    ``ValueError`` naming the parameters (segments) it belongs to.

    Args:
        subdomains: the index sets (each sorted, distinct, inside ``[0, n)``, non-empty).
        n: length of the flat vector.
        segments: named ranges of the flat vector (the parameters), used in error messages;
            default one segment ``"x"`` covering everything.
        weights: ``"multiplicity"`` (default, ``w_s = 1/m`` [KKKK24]), ``"restricted"`` (needs
            ``core``), or one tensor per subdomain of length ``|S_s|``; in every case the weights
            must sum to 1 over the subdomains holding each entry.
        core: for ``"restricted"``: one index tensor per subdomain, a non-overlapping partition
            with ``core[s] ⊆ S_s`` (the part of ``S_s`` before overlap was added).

    Attributes:
        n: length of the flat vector.
        subdomains: the list of :class:`Subdomain`.
        multiplicity: ``(n,)`` float tensor ``m_i``.
        weights: ``(n,)`` tensor ``1/m_i`` (the default weighting).
        local_weights: per subdomain, the weights ``w_s`` actually used by :meth:`combine`.
        weighting: the name of the weighting (``"custom"`` for explicit tensors).
    """

    def __init__(
        self,
        subdomains: Sequence[Subdomain],
        n: int,
        *,
        segments: Sequence[Segment] | None = None,
        weights: str | Sequence[Tensor] = "multiplicity",
        core: Sequence[Tensor] | None = None,
    ) -> None:
        check_int("n (length of the flat vector)", n)
        if len(subdomains) == 0:
            raise ValueError("a decomposition needs at least one subdomain")
        self.n = n
        self._named_segments = segments is not None
        self.segments: tuple[Segment, ...] = (
            tuple(segments) if segments is not None else (Segment("x", 0, n),)
        )
        self.subdomains: list[Subdomain] = []
        for s, sub in enumerate(subdomains):
            self.subdomains.append(_checked(sub, s, n))
        counts = torch.zeros(n, dtype=torch.float64)
        for sub in self.subdomains:
            counts.index_add_(0, sub.index, torch.ones(len(sub), dtype=torch.float64))
        self.multiplicity = counts
        self._check_coverage()
        self.weights = 1.0 / counts
        self.local_weights: list[Tensor]
        if isinstance(weights, str):
            if weights == "multiplicity":
                self.local_weights = [self.weights[sub.index] for sub in self.subdomains]
            elif weights == "restricted":
                self.local_weights = self._restricted_weights(core)
            else:
                raise ValueError(f"weights={weights!r} is not allowed; choose one of "
                                 f"{', '.join(map(repr, WEIGHTINGS))} or pass one tensor per "
                                 "subdomain")
            self.weighting = weights
        else:
            self.local_weights = self._custom_weights(weights)
            self.weighting = "custom"
        self._uniform = self.weighting == "multiplicity" and bool((counts == 1).all())

    # ------------------------------------------------------------------ construction checks
    def _check_coverage(self) -> None:
        missing = self.multiplicity == 0
        if not bool(missing.any()):
            return
        names = [seg.name for seg in self.segments if bool(missing[seg.start:seg.stop].any())
                 ] if self._named_segments else []
        where = torch.nonzero(missing).flatten()
        raise ValueError(
            f"the subdomains do not cover {int(where.numel())} of {self.n} entries: "
            + (f"uncovered parameters: {', '.join(names)}" if names else
               f"positions {where[:10].tolist()}")
            + "; every trainable parameter must belong to at least one subdomain"
        )

    def _restricted_weights(self, core: Sequence[Tensor] | None) -> list[Tensor]:
        if core is None or len(core) != len(self.subdomains):
            raise ValueError('weights="restricted" needs `core`: one non-overlapping index '
                             "tensor per subdomain")
        out = []
        for sub, c in zip(self.subdomains, core, strict=True):
            mask = torch.zeros(self.n, dtype=torch.bool)
            mask[c.to(torch.int64)] = True
            out.append(mask[sub.index].to(torch.float64))
        return self._validated_partition(out, "restricted (core) weights")

    def _custom_weights(self, weights: Sequence[Tensor]) -> list[Tensor]:
        if len(weights) != len(self.subdomains):
            raise ValueError(f"got {len(weights)} weight tensors for {len(self.subdomains)} "
                             "subdomains; pass one per subdomain")
        out = []
        for s, (sub, w) in enumerate(zip(self.subdomains, weights, strict=True)):
            w = torch.as_tensor(w, dtype=torch.float64).flatten()
            if w.numel() != len(sub):
                raise ValueError(f"weights of subdomain {s} ({sub.name}) have {w.numel()} "
                                 f"entries, the subdomain has {len(sub)}")
            if not bool(torch.isfinite(w).all()) or bool((w < 0).any()):
                raise ValueError(f"weights of subdomain {s} ({sub.name}) must be finite and >= 0")
            out.append(w)
        return self._validated_partition(out, "weights")

    def _validated_partition(self, ws: list[Tensor], what: str) -> list[Tensor]:
        total = torch.zeros(self.n, dtype=torch.float64)
        for sub, w in zip(self.subdomains, ws, strict=True):
            total.index_add_(0, sub.index, w)
        if not torch.allclose(total, torch.ones_like(total), rtol=0.0, atol=1e-12):
            bad = torch.nonzero((total - 1).abs() > 1e-12).flatten()[:10].tolist()
            raise ValueError(f"{what} must sum to 1 over the subdomains holding each entry "
                             f"(a partition of unity); they do not at positions {bad}")
        return ws

    # ------------------------------------------------------------------ operators
    def __len__(self) -> int:
        return len(self.subdomains)

    def __getitem__(self, s: int) -> Subdomain:
        return self.subdomains[s]

    def restrict(self, s: int, v: Tensor) -> Tensor:
        """``R_s v = v[S_s]`` (a view when ``S_s`` is one contiguous range)."""
        sub = self.subdomains[s]
        span = sub.span
        if span is not None:
            return v[span[0]:span[1]]
        return v.index_select(0, sub.index.to(v.device))

    def extend(self, s: int, v_s: Tensor) -> Tensor:
        """``E_s v_s``: a new length-``n`` vector with ``v_s`` on ``S_s`` and zeros elsewhere."""
        out = v_s.new_zeros(self.n)
        return self.add_extended(out, s, v_s)

    def add_extended(self, out: Tensor, s: int, v_s: Tensor, alpha: float = 1.0) -> Tensor:
        """``out += alpha · E_s v_s`` in place; returns ``out``."""
        sub = self.subdomains[s]
        if v_s.numel() != len(sub):
            raise ValueError(f"subdomain {s} ({sub.name}) has {len(sub)} entries, got a local "
                             f"vector of {v_s.numel()}")
        span = sub.span
        if span is not None:
            out[span[0]:span[1]].add_(v_s, alpha=alpha)
        else:
            out.index_add_(0, sub.index.to(out.device), v_s, alpha=alpha)
        return out

    def replace(self, s: int, x: Tensor, v_s: Tensor) -> Tensor:
        """A copy of ``x`` with the entries of ``S_s`` set to ``v_s`` (exactly, no rounding)."""
        sub = self.subdomains[s]
        out = x.clone()
        span = sub.span
        if span is not None:
            out[span[0]:span[1]] = v_s
        else:
            out.index_copy_(0, sub.index.to(x.device), v_s)
        return out

    @property
    def disjoint(self) -> bool:
        """Whether no entry is shared (then every weight is 1 and ``D_s = E_s R_s d``)."""
        return bool((self.multiplicity == 1).all())

    def weight(self, s: int, like: Tensor | None = None) -> Tensor:
        """The partition-of-unity weights ``w_s`` of subdomain ``s`` (in ``like``'s dtype)."""
        w = self.local_weights[s]
        return w if like is None else w.to(dtype=like.dtype, device=like.device)

    def combine(self, local_corrections: Mapping[int, Tensor] | Sequence[Tensor]) -> Tensor:
        """``Σ_s E_s(w_s ⊙ c_s)`` over the given corrections.

        Args:
            local_corrections: ``{s: c_s}`` for some subdomains (a rank's own; the caller sums
                the ranks' results) or a sequence with one ``c_s`` per subdomain.

        Returns:
            A new length-``n`` tensor.
        """
        items: Iterable[tuple[int, Tensor]]
        if isinstance(local_corrections, Mapping):
            items = local_corrections.items()
        else:
            if len(local_corrections) != len(self.subdomains):
                raise ValueError(f"got {len(local_corrections)} corrections for "
                                 f"{len(self.subdomains)} subdomains; pass one per subdomain "
                                 "or a dict {subdomain: correction}")
            items = enumerate(local_corrections)
        out: Tensor | None = None
        for s, c in items:
            if out is None:
                out = c.new_zeros(self.n)
            if self._uniform:
                self.add_extended(out, s, c)
            else:
                self.add_extended(out, s, c * self.weight(s, c))
        if out is None:
            raise ValueError("combine needs at least one correction")
        return out

    # ------------------------------------------------------------------ display
    def table(self) -> str:
        """A text table: subdomain, layers, parameter count, entries shared with others."""
        rows = [("subdomain", "layers", "params", "shared")]
        for sub in self.subdomains:
            shared = int((self.multiplicity[sub.index] > 1).sum())
            layers = ", ".join(sub.layers) if sub.layers else "-"
            if len(layers) > 60:
                layers = layers[:57] + "..."
            rows.append((sub.name, layers, str(len(sub)), str(shared)))
        total = sum(len(sub) for sub in self.subdomains)
        rows.append(("total", f"{len(self.subdomains)} subdomains, weights={self.weighting}",
                     f"{total} (n={self.n})", f"{int((self.multiplicity > 1).sum())}"))
        widths = [max(len(r[j]) for r in rows) for j in range(4)]
        lines = []
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) if j == 1 or j == 0 else c.rjust(w)
                                   for j, (c, w) in enumerate(zip(r, widths, strict=True))))
            if i == 0 or i == len(rows) - 2:
                lines.append("  ".join("-" * w for w in widths))
        return "\n".join(line.rstrip() for line in lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"Decomposition(n={self.n}, subdomains={len(self.subdomains)}, "
                f"weighting={self.weighting!r})")

    # ------------------------------------------------------------------ builders
    @classmethod
    def from_sizes(cls, sizes: Sequence[int], *, overlap: int = 0,
                   weights: str = "multiplicity") -> Decomposition:
        """Contiguous blocks of a flat vector (for plain functions such as Rosenbrock).

        Args:
            sizes: block lengths (positive); ``n = sum(sizes)``.
            overlap: each block extended by this many neighbouring *blocks* on each side.
            weights: ``"multiplicity"`` or ``"restricted"``.
        """
        sizes = [int(k) for k in sizes]
        if not sizes or any(k < 1 for k in sizes):
            raise ValueError(f"sizes must be a non-empty list of positive integers, got {sizes}")
        bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
        units = [(f"block{i}", [Segment(f"block{i}", bounds[i], bounds[i + 1])])
                 for i in range(len(sizes))]
        return _from_units(units, int(bounds[-1]), None, overlap, weights, prefix="S")

    @classmethod
    def from_indices(cls, n: int, indices: Sequence[Tensor | Sequence[int]], *,
                     names: Sequence[str] | None = None,
                     weights: str | Sequence[Tensor] = "multiplicity") -> Decomposition:
        """Subdomains given directly as index sets of a flat vector of length ``n``."""
        subs = []
        for s, idx in enumerate(indices):
            t = torch.as_tensor(idx, dtype=torch.int64).flatten()
            subs.append(Subdomain(names[s] if names else f"S{s}", torch.unique(t), ()))
        return cls(subs, n, weights=weights)

    @classmethod
    def by_layers(cls, model: nn.Module, *, blocks: int | Sequence[int] | None = None,
                  overlap: int = 0, weights: str = "multiplicity",
                  params: Sequence[Tensor] | None = None) -> Decomposition:
        """Contiguous blocks of layers (one subdomain per layer by default) [KKKK24].

        Args:
            model: the network; its layers are its modules' own parameters in module order.
            blocks: ``None`` (one subdomain per layer), an int ``N`` (``N`` contiguous blocks of
                nearly equal numbers of layers), or a list of layer counts per block.
            overlap: each block extended by ``overlap`` layers into each neighbour.
            weights: ``"multiplicity"`` (default) or ``"restricted"`` for the overlap.
            params: the parameters in the order of the flat vector (default
                ``list(model.parameters())``, the order an optimizer built on
                ``model.parameters()`` uses).
        """
        layout = ParamLayout(params if params is not None else list(model.parameters()),
                             model)
        units = layout.layers(model)
        return _from_units(units, layout.n, blocks, overlap, weights, prefix="S",
                           segments=layout.segments)

    @classmethod
    def by_param_groups(cls, param_groups: Sequence[Mapping[str, Any] | Sequence[Tensor]],
                        params: Sequence[Tensor] | None = None, *,
                        model: nn.Module | None = None) -> Decomposition:
        """One subdomain per parameter group (torch's own way to name subsets).

        Args:
            param_groups: ``optimizer.param_groups``-like dicts with a ``"params"`` list (an
                optional ``"name"`` names the subdomain) or plain lists of tensors.
            params: the flat vector's parameters in order (default: the groups' concatenation).
            model: optional, only to print parameter names.
        """
        groups: list[tuple[str, list[Tensor]]] = []
        for i, g in enumerate(param_groups):
            if isinstance(g, Mapping):
                groups.append((str(g.get("name", f"group{i}")), list(g["params"])))
            else:
                groups.append((f"group{i}", list(g)))
        if params is None:
            params = [p for _, ps in groups for p in ps]
        layout = ParamLayout(params, model)
        units = [(name, [layout.segment_of(p) for p in ps]) for name, ps in groups]
        return _from_units(units, layout.n, None, 0, "multiplicity", prefix="",
                           segments=layout.segments, unit_names_are_subdomains=True)

    @classmethod
    def by_labels(cls, model: nn.Module, label_fn: Callable[[str, Tensor], Hashable | None], *,
                  params: Sequence[Tensor] | None = None) -> Decomposition:
        """One subdomain per distinct label ``label_fn(name, param)`` (first-appearance order).

        A parameter labelled ``None`` belongs to no subdomain (which is an error unless it is not
        among ``params``). A label may be a tuple/list/set of labels to put a parameter into
        several subdomains (overlap).
        """
        layout = ParamLayout(params if params is not None else list(model.parameters()), model)
        labelled: dict[Hashable, list[Segment]] = {}
        for name, p in model.named_parameters():
            if not layout.holds(p):
                continue
            lab = label_fn(name, p)
            labs = lab if isinstance(lab, tuple | list | set | frozenset) else (lab,)
            for one in labs:
                if one is not None:
                    labelled.setdefault(one, []).append(layout.segment_of(p))
        units = [(str(k), segs) for k, segs in labelled.items()]
        if not units:
            raise ValueError("label_fn labelled no parameter; return a label for each one")
        return _from_units(units, layout.n, None, 0, "multiplicity", prefix="",
                           segments=layout.segments, unit_names_are_subdomains=True)


# ---------------------------------------------------------------------- helpers
class ParamLayout:
    """Where each parameter lies in the flat vector ``x`` (the optimizer's parameter order)."""

    def __init__(self, params: Sequence[Tensor], model: nn.Module | None = None) -> None:
        params = list(params)
        if not params:
            raise ValueError("a decomposition needs at least one parameter")
        names = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
        self._where: dict[int, Segment] = {}
        segs = []
        offset = 0
        for i, p in enumerate(params):
            if id(p) in self._where:
                raise ValueError(f"parameter {names.get(id(p), f'#{i}')} appears twice")
            seg = Segment(names.get(id(p), f"param{i}"), offset, offset + p.numel())
            self._where[id(p)] = seg
            segs.append(seg)
            offset += p.numel()
        self.segments = tuple(segs)
        self.n = offset

    def holds(self, p: Tensor) -> bool:
        """Whether ``p`` is part of the flat vector."""
        return id(p) in self._where

    def segment_of(self, p: Tensor) -> Segment:
        """The range of ``p`` in the flat vector."""
        try:
            return self._where[id(p)]
        except KeyError:
            raise ValueError(f"a parameter of shape {tuple(p.shape)} is not among the "
                             "optimizer's parameters") from None

    def layers(self, model: nn.Module) -> list[tuple[str, list[Segment]]]:
        """The model's layers (modules' own parameters, module order) held in the vector."""
        out = []
        for name, module in model.named_modules():
            segs = [self._where[id(p)] for p in module.parameters(recurse=False)
                    if id(p) in self._where]
            if segs:
                out.append((name or type(module).__name__, segs))
        if not out:
            raise ValueError("the model has no layer holding the optimizer's parameters")
        return out


def _index_of(segs: Sequence[Segment]) -> Tensor:
    parts = [torch.arange(s.start, s.stop, dtype=torch.int64) for s in segs]
    return torch.unique(torch.cat(parts)) if parts else torch.zeros(0, dtype=torch.int64)


def _partition(n_units: int, blocks: int | Sequence[int] | None) -> list[list[int]]:
    if blocks is None:
        return [[i] for i in range(n_units)]
    if isinstance(blocks, bool):
        raise ValueError(f"blocks must be None, an int or a list of layer counts, got {blocks!r}")
    if isinstance(blocks, int):
        if not 1 <= blocks <= n_units:
            raise ValueError(f"blocks={blocks} must be between 1 and the number of layers "
                             f"({n_units})")
        base, extra = divmod(n_units, blocks)
        counts = [base + (1 if b < extra else 0) for b in range(blocks)]
    else:
        counts = [int(c) for c in blocks]
        if any(c < 1 for c in counts) or sum(counts) != n_units:
            raise ValueError(f"blocks={counts} must be positive layer counts summing to "
                             f"the number of layers ({n_units})")
    out, start = [], 0
    for c in counts:
        out.append(list(range(start, start + c)))
        start += c
    return out


def _from_units(units: list[tuple[str, list[Segment]]], n: int,
                blocks: int | Sequence[int] | None, overlap: int, weights: str, *, prefix: str,
                segments: Sequence[Segment] | None = None,
                unit_names_are_subdomains: bool = False) -> Decomposition:
    """Group consecutive units (layers, blocks) into subdomains, ``overlap`` units of overlap."""
    if not is_int(overlap, 0):
        raise ValueError(f"overlap must be an integer >= 0 (layers shared with each neighbour), "
                         f"got {overlap!r}")
    if weights not in WEIGHTINGS:
        raise ValueError(f"weights={weights!r} is not allowed; choose one of "
                         f"{', '.join(map(repr, WEIGHTINGS))}")
    groups = _partition(len(units), blocks)
    subs, cores = [], []
    for b, members in enumerate(groups):
        lo = max(0, members[0] - overlap)
        hi = min(len(units), members[-1] + 1 + overlap)
        held = list(range(lo, hi))
        name = (units[members[0]][0] if unit_names_are_subdomains and len(members) == 1
                else f"{prefix}{b}")
        segs = [s for u in held for s in units[u][1]]
        # Label/group subdomains list their parameters; layer blocks list their layers.
        layers = (tuple(s.name for s in segs) if unit_names_are_subdomains
                  else tuple(units[u][0] for u in held))
        subs.append(Subdomain(name, _index_of(segs), layers))
        cores.append(_index_of([s for u in members for s in units[u][1]]))
    return Decomposition(subs, n, segments=segments if segments is not None else
                         [s for _, segs in units for s in segs], weights=weights, core=cores)


def _checked(sub: Subdomain, s: int, n: int) -> Subdomain:
    idx = sub.index
    if not isinstance(idx, Tensor) or idx.dim() != 1:
        raise ValueError(f"subdomain {s} ({sub.name}): index must be a 1-D tensor")
    if idx.dtype != torch.int64:
        idx = idx.to(torch.int64)
    if idx.numel() == 0:
        raise ValueError(f"subdomain {s} ({sub.name}) is empty")
    if int(idx.min()) < 0 or int(idx.max()) >= n:
        raise ValueError(f"subdomain {s} ({sub.name}) has positions outside [0, {n})")
    if idx.numel() > 1 and not bool((idx[1:] > idx[:-1]).all()):
        raise ValueError(f"subdomain {s} ({sub.name}): index must be sorted without repeats "
                         "(use torch.unique)")
    idx = idx.cpu()
    return sub if idx is sub.index else Subdomain(sub.name, idx, tuple(sub.layers))


def data_shards(n_rows: int, n_shards: int, *, shuffle: bool = False,
                generator: torch.Generator | None = None) -> list[Tensor]:
    """Row-index shards of a data set: ``n_shards`` disjoint, nearly equal sets covering all rows.

    Args:
        n_rows: number of rows (samples or collocation points).
        n_shards: number of shards (``1 ≤ n_shards ≤ n_rows``).
        shuffle: assign rows at random (by ``generator``) instead of contiguous ranges.
        generator: the random generator used when ``shuffle``.

    Returns:
        A list of sorted 1-D ``int64`` tensors; the first ``n_rows mod n_shards`` have one more row.
    """
    check_int("n_rows", n_rows)
    if not is_int(n_shards, 1) or n_shards > n_rows:
        raise ValueError(f"n_shards must be an integer in [1, n_rows={n_rows}], got {n_shards!r}")
    order = (torch.randperm(n_rows, generator=generator) if shuffle
             else torch.arange(n_rows))
    base, extra = divmod(n_rows, n_shards)
    out, start = [], 0
    for k in range(n_shards):
        size = base + (1 if k < extra else 0)
        out.append(torch.sort(order[start:start + size]).values)
        start += size
    return out
