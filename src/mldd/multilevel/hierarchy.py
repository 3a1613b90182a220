"""Multilevel hierarchies as data: a list of :class:`Level` objects, coarsest first.

A hierarchy (docs/algorithms.md §2.1) is what a multilevel method walks through: level ``l = 0`` is
the coarsest, level ``L−1`` the finest (the network being trained). Each level holds its network,
the transfer to the next *finer* level, the rows of the batch it evaluates, its cost share and
its own smoother options — the pyamg ``Level`` idea. Three ways to make a coarser level:

* ``"depth"`` — a residual network with ``(K+1)/2`` blocks and twice the step size
  (:class:`~mldd.multilevel.transfers.DepthTransfer`, [KK22]);
* ``"width"`` — the same network with fewer neurons
  (:class:`~mldd.multilevel.transfers.WidthTransfer`, [CGS16]);
* ``"data"`` — the *same module* (shared parameters, ``P = R = Π = I``) evaluated on a subset of
  the batch rows. Data levels are evaluated as ``closure(model, rows)`` (the *rows* closure of
  :mod:`mldd.closures`; ``rows`` is a LongTensor of row indices into the current batch, ``None``
  for all of it). The rows of a coarser level are a subset of those of the next finer level.

and combinations such as ``"depth+data"`` (fewer blocks *and* fewer rows in one step).

Cost (docs/algorithms.md §1.5): one evaluation on level ``l`` costs about
``(parameters_l / parameters_fine) × (rows_l / rows_fine)`` fine evaluations — the parameter-count
proxy for coarse networks times the data fraction.

References:
    [KK22] Kopaničáková, Krause. Globally convergent multilevel training of deep residual
    networks. SIAM J. Sci. Comput., 2022. arXiv:2107.07572.
    [CGS16] Chen, Goodfellow, Shlens. Net2Net. ICLR 2016. arXiv:1511.05641.
    [BO22] Bell, Olson, Schroder. PyAMG: algebraic multigrid solvers in Python. JOSS 7(72), 2022
    (hierarchies as a list of levels, per-level options, the complexity table).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from mldd.closures import bind
from mldd.linalg.flat import params_to_vector, vector_to_params
from mldd.multilevel.transfers import DepthTransfer, IdentityTransfer, Transfer, WidthTransfer
from mldd.validation import check_int, is_int, is_number

__all__ = [
    "Hierarchy",
    "Level",
    "coarse_depth_model",
    "coarse_width_model",
    "per_level",
    "valid_depths",
]

_COARSENINGS = ("depth", "width", "data")


def per_level(value: Any, n_levels: int, name: str) -> list[Any]:
    """A per-level option as a list of ``n_levels`` values, coarsest level first.

    A ``list`` or ``tuple`` is taken as one value per level; anything else (numbers, strings,
    dicts, ``None``) is repeated on every level. Wrap an option whose value is itself a tuple in
    a list (``[(a, b)] * n_levels``).

    Raises:
        ValueError: if a list has the wrong length (the message names the option).
    """
    check_int("n_levels", n_levels)
    if isinstance(value, list | tuple):
        if len(value) != n_levels:
            raise ValueError(
                f"{name}: got {len(value)} values for {n_levels} levels; give one value for "
                f"every level or a list of {n_levels} (coarsest level first)"
            )
        return list(value)
    return [value] * n_levels


def _n_params(model: nn.Module | None) -> int:
    return 0 if model is None else sum(p.numel() for p in model.parameters())


@dataclass
class Level:
    """One level of a :class:`Hierarchy`.

    Attributes:
        model: the level's network, or ``None`` for a level defined by its loss alone. Data
            levels share the module of the next finer level.
        transfer: transfer to the next *finer* level (``None`` on the finest level).
        rows: 1-D LongTensor of the batch rows this level evaluates, or ``None`` for all.
        cost: one evaluation here in fine-evaluation equivalents; ``None`` lets
            :class:`Hierarchy` compute ``parameter ratio × data fraction``.
        options: per-level settings for the smoother (e.g. ``{"trials": 3}``).
        kind: how the level was made from the next finer one (``"depth"``, ``"width"``,
            ``"data"``, ``"depth+data"``, …); ``"fine"`` on the finest level, ``"custom"`` for
            hand-built levels.
    """

    model: nn.Module | None
    transfer: Transfer | None = None
    rows: Tensor | None = None
    cost: float | None = None
    options: dict[str, Any] = field(default_factory=dict)
    kind: str = "custom"

    @property
    def n_params(self) -> int:
        """Number of parameters of :attr:`model` (0 without a model)."""
        return _n_params(self.model)

    def parameters(self) -> list[nn.Parameter]:
        """The model's parameters as a list (the order of the flat vectors)."""
        if self.model is None:
            raise ValueError("this level has no model")
        return list(self.model.parameters())

    def vector(self) -> Tensor:
        """A detached flat copy of the model's parameters."""
        return params_to_vector(self.parameters())

    def load_vector(self, x: Tensor) -> None:
        """Write the flat vector ``x`` into the model's parameters."""
        vector_to_params(x, self.parameters())

    def bind(self, closure: Callable[..., Tensor]) -> Callable[[], Tensor]:
        """A plain closure evaluating ``closure`` on this level's model and rows.

        ``closure`` must be a *rows* closure ``closure(model, rows)`` on a level with rows, a
        *model* closure suffices otherwise (see :mod:`mldd.closures`).
        """
        return bind(closure, self.model, self.rows)


class Hierarchy:
    """A list of :class:`Level` objects, coarsest first (``hierarchy[0]``), finest last.

    Args:
        levels: the levels, coarsest first; every level but the finest needs a transfer.
        n_rows: number of batch rows of the finest level (needed to compute the cost of levels
            with rows and to check their indices; optional otherwise).

    Raises:
        ValueError: for an empty list, a missing or extra transfer, transfer sizes that do not
            match the models' parameter counts, or invalid rows.
    """

    def __init__(self, levels: Sequence[Level], *, n_rows: int | None = None) -> None:
        self.levels: list[Level] = list(levels)
        if not self.levels:
            raise ValueError("a Hierarchy needs at least one level")
        check_int("n_rows", n_rows, allow_none=True)
        self.n_rows = n_rows
        L = len(self.levels)
        for i, lev in enumerate(self.levels):
            if not isinstance(lev, Level):
                raise ValueError(f"level {i} is a {type(lev).__name__}, expected a Level")
            if i == L - 1:
                if lev.transfer is not None:
                    raise ValueError(f"the finest level ({i}) must have transfer=None")
            elif lev.transfer is None:
                raise ValueError(f"level {i} needs a transfer to level {i + 1}")
            else:
                self._check_sizes(i, lev, self.levels[i + 1])
            self._check_rows(i, lev)
        fine = self.levels[-1]
        for i, lev in enumerate(self.levels):
            if lev.cost is None:
                lev.cost = self._cost(i, lev, fine)

    def _check_sizes(self, i: int, lev: Level, finer: Level) -> None:
        t = lev.transfer
        assert t is not None
        for model, n, side, j in ((lev.model, t.n_coarse, "n_coarse", i),
                                  (finer.model, t.n_fine, "n_fine", i + 1)):
            if model is not None and _n_params(model) != n:
                raise ValueError(f"level {i}: its transfer has {side}={n} but the model of level "
                                 f"{j} has {_n_params(model)} parameters")

    def _check_rows(self, i: int, lev: Level) -> None:
        rows = lev.rows
        if rows is None:
            return
        if not isinstance(rows, Tensor) or rows.dim() != 1 or rows.dtype != torch.long:
            raise ValueError(f"level {i}: rows must be a 1-D LongTensor or None, got "
                             f"{getattr(rows, 'dtype', type(rows).__name__)} "
                             f"{tuple(getattr(rows, 'shape', ()))}")
        if rows.numel() == 0:
            raise ValueError(f"level {i}: rows is empty")
        if int(rows.min()) < 0 or (self.n_rows is not None and int(rows.max()) >= self.n_rows):
            raise ValueError(f"level {i}: rows must lie in [0, n_rows={self.n_rows})")

    def _cost(self, i: int, lev: Level, fine: Level) -> float:
        n_fine = fine.n_params
        ratio = lev.n_params / n_fine if n_fine and lev.model is not None else 1.0
        if lev.rows is None:
            return ratio
        if self.n_rows is None:
            raise ValueError(f"level {i} has rows but the Hierarchy was given no n_rows; pass "
                             "n_rows (or set the level's cost)")
        fine_rows = self.n_rows if fine.rows is None else fine.rows.numel()
        return ratio * lev.rows.numel() / fine_rows

    # -- container protocol ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.levels)

    def __iter__(self) -> Iterator[Level]:
        return iter(self.levels)

    def __getitem__(self, i: int) -> Level:
        return self.levels[i]

    @property
    def finest(self) -> Level:
        """The finest level (the network being trained)."""
        return self.levels[-1]

    @property
    def coarsest(self) -> Level:
        """The coarsest level."""
        return self.levels[0]

    @property
    def complexity(self) -> float:
        """Sum of the cost shares: one evaluation on every level, in fine equivalents."""
        return float(sum(lev.cost or 0.0 for lev in self.levels))

    # -- printing ---------------------------------------------------------------------------
    def table(self) -> str:
        """A printable table: level, how it was made, blocks×width, parameters, rows, cost."""
        header = ("level", "kind", "blocks×width", "params", "rows", "cost")
        body = []
        for i, lev in enumerate(self.levels):
            m = lev.model
            shape = (f"{m.depth}×{m.width}" if m is not None and hasattr(m, "depth")
                     and hasattr(m, "width") else "-")
            if lev.rows is not None:
                rows = str(lev.rows.numel())
            else:
                rows = "all" if self.n_rows is None else f"{self.n_rows} (all)"
            body.append((str(i), lev.kind, shape, f"{lev.n_params:,}", rows,
                         f"{lev.cost:.4f}" if lev.cost is not None else "-"))
        widths = [max(len(r[c]) for r in (header, *body)) for c in range(len(header))]
        lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True))
                 for r in (header, *body)]
        rule = "-" * len(lines[0])
        return "\n".join([f"Hierarchy: {len(self)} levels (0 = coarsest)", lines[0], rule,
                          *lines[1:], rule, f"complexity (sum of costs): {self.complexity:.4f}"])

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        kinds = ", ".join(lev.kind for lev in self.levels)
        return f"Hierarchy({len(self)} levels: {kinds})"

    # -- builder ----------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        model: nn.Module,
        levels: int = 3,
        coarsen: str | Sequence[str] = "depth",
        *,
        n_rows: int | None = None,
        data_ratio: float = 0.5,
        width_ratio: float = 0.5,
        seed: int = 0,
        injection: str = "injection",
        restriction_scale: float = 1.0,
        width_split: str = "random",
        options: Mapping[str, Any] | None = None,
    ) -> Hierarchy:
        """Make the coarse levels of ``model`` (which becomes the finest level).

        Coarse networks are new modules on ``model``'s device and dtype, initialised by
        injection ``Π`` of the next finer level's parameters (the global RNG is left untouched).

        Args:
            model: the fine network.
            levels: number of levels ``L >= 1`` (1 gives a one-level hierarchy).
            coarsen: ``"depth"``, ``"width"``, ``"data"``, a ``"+"`` combination of ``"data"``
                with one of the others (``"depth+data"``), or a sequence of ``L−1`` of these,
                coarsest first: ``coarsen[l]`` is how level ``l`` is made from level ``l+1``
                (so ``("depth", "data")`` with ``L = 3`` puts a data level under the fine
                network and a shallower network at the bottom).
            n_rows: rows of the fine batch (required for data coarsening).
            data_ratio: fraction of the next finer level's rows a data level keeps, in (0, 1);
                default 0.5. Rows are drawn without replacement from ``seed`` and sorted (CPU
                LongTensors); a depth or width step keeps the rows of the level above it.
            width_ratio: coarse width ``= round(width × width_ratio)``, in (0, 1); default 0.5.
            seed: seed for row subsets and the width transfer's random split/mapping.
            injection: ``Π`` of depth transfers (``"injection"`` or ``"full_weighting"``).
            restriction_scale: ``s`` in ``R = s·Pᵀ`` of depth/width transfers (default 1).
            width_split: split of :class:`WidthTransfer` (``"random"`` default, ``"uniform"``).
            options: per-level smoother options, each a scalar or a list of ``L`` values
                (coarsest first, see :func:`per_level`).

        Raises:
            ValueError: for unknown coarsenings, a sequence of the wrong length, depths that
                cannot be coarsened that often (the message lists depths that can), widths or
                row counts that would not shrink, or a data level without ``n_rows``.
        """
        check_int("levels", levels)
        for name, r in (("data_ratio", data_ratio), ("width_ratio", width_ratio)):
            if not is_number(r) or not 0 < r < 1:
                raise ValueError(f"{name} must be a number in (0, 1), got {r!r}")
        if not is_int(seed):
            raise ValueError(f"seed must be an int, got {seed!r}")
        steps = [_parse_coarsening(c) for c in per_level(
            coarsen if not isinstance(coarsen, str) else [coarsen] * (levels - 1),
            levels - 1, "coarsen")] if levels > 1 else []
        opts = {k: per_level(v, levels, f"options[{k!r}]") for k, v in (options or {}).items()}
        bad_rows = not is_int(n_rows, 1)
        if bad_rows and any("data" in s for s in steps):
            raise ValueError(f"data coarsening needs n_rows (the number of rows of the fine "
                                 f"batch) as an integer >= 1, got {n_rows!r}")
        n_depth = sum("depth" in s for s in steps)
        if n_depth:
            check_depth_coarsenable(model, n_depth)

        gen = torch.Generator().manual_seed(seed)
        fine = Level(model, None, None, None, {}, "fine")
        built = [fine]
        for l in range(levels - 2, -1, -1):
            finer, parts = built[0], steps[l]
            assert finer.model is not None
            rows = finer.rows
            if "data" in parts:
                assert n_rows is not None
                rows = _subset_rows(finer.rows, n_rows, data_ratio, gen, l)
            transfer: Transfer
            if "depth" in parts:
                coarse = coarse_depth_model(finer.model)
                transfer = DepthTransfer(coarse, finer.model, injection=injection,
                                         restriction_scale=restriction_scale)
            elif "width" in parts:
                coarse = coarse_width_model(finer.model, width_ratio=width_ratio)
                transfer = WidthTransfer(coarse, finer.model, split=width_split, seed=seed + l,
                                         restriction_scale=restriction_scale)
            else:
                coarse = finer.model
                transfer = IdentityTransfer(_n_params(coarse))
            if coarse is not finer.model:
                vector_to_params(transfer.inject(finer.vector()), list(coarse.parameters()))
            built.insert(0, Level(coarse, transfer, rows, None, {}, "+".join(parts)))
        for i, lev in enumerate(built):
            lev.options = {k: v[i] for k, v in opts.items()}
        return cls(built, n_rows=n_rows)


def _parse_coarsening(spec: object) -> tuple[str, ...]:
    if not isinstance(spec, str):
        raise ValueError(f"a coarsening must be a string such as 'depth', 'width', 'data' or "
                         f"'depth+data', got {spec!r}")
    parts = tuple(p.strip() for p in spec.split("+"))
    bad = [p for p in parts if p not in _COARSENINGS]
    if bad or len(set(parts)) != len(parts):
        raise ValueError(f"unknown coarsening {spec!r}: use 'depth', 'width', 'data' or 'data' "
                         "combined with one of the others, e.g. 'depth+data'")
    if "depth" in parts and "width" in parts:
        raise ValueError(f"coarsening {spec!r} combines depth and width in one step; use two "
                         "levels, e.g. coarsen=('depth', 'width')")
    order = {name: i for i, name in enumerate(_COARSENINGS)}
    return tuple(sorted(parts, key=order.__getitem__))


def valid_depths(n_coarsenings: int, near: int, count: int = 2) -> list[int]:
    """Depths ``K = 2^d·m + 1`` (``m >= 1``) that survive ``d`` depth coarsenings
    ``K → (K+1)/2``, the ``count`` nearest to ``near`` (ascending)."""
    step = 2 ** n_coarsenings
    cands = [step * m + 1 for m in range(1, max(2, near // step + count + 2))]
    return sorted(sorted(cands, key=lambda k: (abs(k - near), k))[:count])


def check_depth_coarsenable(model: nn.Module, n: int) -> None:
    """Raise a ValueError (naming depths that work) unless ``model`` is a residual network
    whose depth survives ``n`` coarsenings ``K → (K+1)/2``."""
    depth = getattr(model, "depth", None)
    if not isinstance(getattr(model, "blocks", None), nn.ModuleList) or not isinstance(depth, int):
        raise ValueError(f"depth coarsening needs a residual network with blocks "
                         f"(mldd.models.ResidualMLP or ConvResNet), got {type(model).__name__}")
    step = 2 ** n
    if depth < step + 1 or (depth - 1) % step:
        works = ", ".join(map(str, valid_depths(n, depth)))
        raise ValueError(
            f"{type(model).__name__} depth {depth} cannot be coarsened {n} time(s) by "
            f"K → (K+1)/2: that needs K = {step}·m + 1 with m >= 1 (odd at every level); "
            f"depths that work near {depth}: {works}"
        )


def _subset_rows(rows: Tensor | None, n_rows: int, ratio: float, gen: torch.Generator,
                 level: int) -> Tensor:
    pool = torch.arange(n_rows) if rows is None else rows.cpu()
    k = round(pool.numel() * ratio)
    if k < 1 or k >= pool.numel():
        raise ValueError(f"data coarsening of level {level}: {pool.numel()} rows × data_ratio "
                         f"{ratio:g} gives {k} rows; a data level needs between 1 and "
                         f"{pool.numel() - 1}")
    pick = torch.randperm(pool.numel(), generator=gen)[:k]
    return pool[pick].sort().values


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def coarse_depth_model(model: nn.Module) -> nn.Module:
    """A copy of a residual network with ``(K+1)/2`` blocks and step size ``2h``.

    Supports :class:`mldd.models.ResidualMLP` and :class:`mldd.models.ConvResNet`; the new
    module is freshly initialised (the global RNG state is preserved) on ``model``'s device and
    dtype — callers load injected parameters into it.

    Raises:
        ValueError: for other types or an even depth / depth < 3.
    """
    from mldd.models import ConvResNet, ResidualMLP

    K = getattr(model, "depth", None)
    if not isinstance(model, ResidualMLP | ConvResNet):
        raise ValueError(f"depth coarsening supports mldd.models.ResidualMLP and ConvResNet, got "
                         f"{type(model).__name__}")
    assert isinstance(K, int)
    if K < 3 or K % 2 == 0:
        raise ValueError(f"depth coarsening K → (K+1)/2 needs an odd depth K >= 3, got {K}; "
                         f"depths that work near it: "
                         f"{', '.join(map(str, valid_depths(1, K)))}")
    device, dtype = _model_device_dtype(model)
    with torch.random.fork_rng(devices=[]):
        coarse: nn.Module
        if isinstance(model, ResidualMLP):
            coarse = ResidualMLP(model.in_features, model.out_features, width=model.width,
                                 depth=(K + 1) // 2, activation=model.activation_name, T=model.T,
                                 h=2 * model.h, dtype=dtype, flatten=model.flatten)
        else:
            coarse = ConvResNet(model.in_channels, model.num_classes, model.image_size,
                                width=model.width, depth=(K + 1) // 2, h=2 * model.h, T=model.T,
                                activation=model.activation_name, downsample=model.downsample,
                                dtype=dtype)
    return coarse.to(device)


def coarse_width_model(model: nn.Module, *, width: int | None = None,
                       width_ratio: float = 0.5) -> nn.Module:
    """A copy of an MLP / ResidualMLP with fewer neurons per hidden layer.

    Args:
        model: :class:`mldd.models.MLP` or :class:`mldd.models.ResidualMLP`.
        width: the coarse width; default ``round(model.width × width_ratio)``.
        width_ratio: used when ``width`` is None, in (0, 1).

    Raises:
        ValueError: for other types, or a coarse width that is not in ``[1, model.width)``.
    """
    from mldd.models import MLP, ResidualMLP

    if not isinstance(model, MLP | ResidualMLP):
        raise ValueError(f"width coarsening supports mldd.models.MLP and ResidualMLP, got "
                         f"{type(model).__name__}")
    w = round(model.width * width_ratio) if width is None else width
    if not is_int(w, 1) or w >= model.width:
        raise ValueError(f"width coarsening of a {type(model).__name__} of width {model.width} "
                         f"needs a coarse width in [1, {model.width}), got {w!r} "
                         f"(width_ratio={width_ratio:g})")
    device, dtype = _model_device_dtype(model)
    with torch.random.fork_rng(devices=[]):
        coarse: nn.Module
        if isinstance(model, ResidualMLP):
            coarse = ResidualMLP(model.in_features, model.out_features, width=w,
                                 depth=model.depth, activation=model.activation_name, T=model.T,
                                 h=model.h, dtype=dtype, flatten=model.flatten)
        else:
            coarse = MLP(model.in_features, model.out_features, width=w, depth=model.depth,
                         activation=model.activation_name, dtype=dtype)
    return coarse.to(device)
