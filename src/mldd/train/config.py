"""Run configuration: a dataclass, loaded from YAML/TOML, overridden by ``--set key=value``.

A config file looks like::

    problem: {name: burgers, options: {n_collocation: 2000}}
    method:  {name: adam, options: {lr: 1.0e-3}}
    budget_s: 60
    seed: 0

``problem``/``method`` may also be a bare name, or a mapping whose keys other than ``name`` and
``options`` are options (``method: {name: adam, lr: 1e-3}``). Overrides use dotted keys:
``method.lr=1e-2`` (same as ``method.options.lr=1e-2``), ``problem.name=poisson2d``,
``budget_s=30``; values are parsed by ``yaml.safe_load`` (so ``1e-2`` is a float, ``[3, 10]`` a
list, ``null`` is None).

Every key is validated: the error names the bad key and value and lists what is allowed — the
top-level fields, the method's options (:mod:`mldd.train.methods`) and the problem's keyword
arguments (read from its builder's signature).
"""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mldd.train.methods import MethodError, get_method


class ConfigError(ValueError):
    """A bad configuration key or value; the message says which and what is allowed."""


@dataclass
class ComponentConfig:
    """A named component (problem or method) with its options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunConfig:
    """Everything one training run needs.

    Attributes:
        problem: problem name and options (``mldd problems`` lists the names).
        method: method name and options (``mldd methods`` lists them).
        budget_s: training-time budget in seconds (metric evaluation excluded); None = no limit.
        max_grad_evals: gradient-evaluation budget; None = no limit.
        max_iters: iteration budget; None = no limit.
        target: stop when the metric reaches it; None = never.
        seed: seeds torch, numpy, random, the model's initial weights and the batch order.
        threads: ``torch.set_num_threads`` (default 2, the benchmark machine's cores).
        dtype: ``"float32"`` or ``"float64"`` passed to the problem; None = the problem's default.
        log_every: seconds of training time between metrics rows.
        checkpoint_every: seconds of wall time between checkpoints to ``out/checkpoint.pt``
            (None = no checkpoints; otherwise a final one is written too).
        out: run directory.
    """

    problem: ComponentConfig
    method: ComponentConfig
    budget_s: float | None = 60.0
    max_grad_evals: int | None = None
    max_iters: int | None = None
    target: float | None = None
    seed: int = 0
    threads: int = 2
    dtype: str | None = None
    log_every: float = 2.0
    checkpoint_every: float | None = None
    out: str = "runs/latest"


# key -> (accepted python types, allow None, description of allowed values)
_SCALARS: dict[str, tuple[tuple[type, ...], bool, str]] = {
    "budget_s": ((int, float), True, "a positive number of seconds or null"),
    "max_grad_evals": ((int,), True, "a positive integer or null"),
    "max_iters": ((int,), True, "a positive integer or null"),
    "target": ((int, float), True, "a number or null"),
    "seed": ((int,), False, "an integer"),
    "threads": ((int,), False, "a positive integer"),
    "dtype": ((str,), True, "'float32', 'float64' or null"),
    "log_every": ((int, float), False, "a number of seconds >= 0"),
    "checkpoint_every": ((int, float), True, "a positive number of seconds or null"),
    "out": ((str,), False, "a directory path"),
}
TOP_KEYS = ("problem", "method", *_SCALARS)
DTYPES = ("float32", "float64")


def _component(key: str, value: Any) -> ComponentConfig:
    if isinstance(value, ComponentConfig):
        return ComponentConfig(value.name, dict(value.options))
    if isinstance(value, str):
        return ComponentConfig(value, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a name or a mapping with 'name', got {value!r}")
    value = dict(value)
    name = value.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"{key}.name: expected a name (string), got {name!r}")
    options = value.pop("options", None) or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{key}.options: expected a mapping, got {options!r}")
    options = {**options, **value}
    return ComponentConfig(name, options)


def from_dict(data: dict[str, Any]) -> RunConfig:
    """Build and type-check a :class:`RunConfig` from a plain mapping (no registry checks).

    Raises:
        ConfigError: unknown key, missing problem/method, or a value of the wrong type.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"a config must be a mapping, got {type(data).__name__}")
    for k in data:
        if k not in TOP_KEYS:
            raise ConfigError(
                f"unknown config key {k!r} (value {data[k]!r}); allowed: {', '.join(TOP_KEYS)}"
            )
    for k in ("problem", "method"):
        if data.get(k) is None:
            raise ConfigError(f"config needs a {k!r} (give --{k} NAME or set it in the config)")
    kw: dict[str, Any] = {
        "problem": _component("problem", data["problem"]),
        "method": _component("method", data["method"]),
    }
    for k, (types, nullable, allowed) in _SCALARS.items():
        if k not in data:
            continue
        v = data[k]
        if v is None and nullable:
            kw[k] = None
            continue
        if isinstance(v, bool) or not isinstance(v, types):
            raise ConfigError(f"config key {k!r}: bad value {v!r}; expected {allowed}")
        kw[k] = float(v) if float in types and isinstance(v, (int, float)) else v
    cfg = RunConfig(**kw)
    _check_values(cfg)
    return cfg


def _check_values(cfg: RunConfig) -> None:
    def bad(key: str, allowed: str) -> ConfigError:
        value = getattr(cfg, key)
        return ConfigError(f"config key {key!r}: bad value {value!r}; expected {allowed}")

    for k in ("budget_s", "max_grad_evals", "max_iters", "checkpoint_every"):
        v = getattr(cfg, k)
        if v is not None and v <= 0:
            raise bad(k, _SCALARS[k][2])
    if cfg.threads < 1:
        raise bad("threads", "a positive integer")
    if cfg.log_every < 0:
        raise bad("log_every", "a number of seconds >= 0")
    if cfg.dtype is not None and cfg.dtype not in DTYPES:
        raise bad("dtype", "'float32', 'float64' or null")
    if cfg.budget_s is None and cfg.max_grad_evals is None and cfg.max_iters is None:
        raise ConfigError("give at least one budget: budget_s, max_grad_evals or max_iters")


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config as plain data (for YAML/JSON)."""
    return asdict(cfg)


def dump_yaml(cfg: RunConfig, path: str | Path | None = None) -> str:
    """The resolved config as YAML; also written to ``path`` when given."""
    text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    return text


_SCI = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _numbers(value: Any) -> Any:
    """Turn ``"1e-3"`` into ``0.001``, recursively: YAML 1.1 (PyYAML) reads scientific notation
    without a dot as a string, and users write learning rates that way."""
    if isinstance(value, str) and _SCI.match(value.strip()):
        return float(value)
    if isinstance(value, dict):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    return value


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML (``.yaml``/``.yml``) or TOML (``.toml``) config file as a mapping.

    Raises:
        ConfigError: missing file, unknown extension or a file that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    if p.suffix == ".toml":
        with p.open("rb") as fh:
            data: Any = tomllib.load(fh)
    elif p.suffix in (".yaml", ".yml"):
        data = yaml.safe_load(p.read_text()) or {}
    else:
        raise ConfigError(
            f"config file {p}: unknown extension {p.suffix!r}; use .yaml, .yml or .toml"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level")
    return dict(_numbers(data))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"method.lr=1e-2"`` → ``(["method", "lr"], 0.01)``.

    Raises:
        ConfigError: no ``=`` or an empty key.
    """
    if "=" not in text:
        raise ConfigError(f"bad override {text!r}: expected key=value, e.g. method.lr=1e-3")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".")]
    if not key.strip() or any(not p for p in parts):
        raise ConfigError(f"bad override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"bad override {text!r}: cannot parse the value ({exc})") from exc
    return parts, _numbers(value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key=value`` overrides (dotted keys) to a raw config mapping; returns a new one.

    Raises:
        ConfigError: a bad override or an unknown top-level key.
    """
    out: dict[str, Any] = {k: v for k, v in data.items()}
    for comp in ("problem", "method"):
        if comp in out and out[comp] is not None:
            c = _component(comp, out[comp])
            out[comp] = {"name": c.name, "options": dict(c.options)}
    for text in overrides:
        parts, value = parse_override(text)
        head = parts[0]
        if head not in TOP_KEYS:
            raise ConfigError(
                f"bad override {text!r}: unknown key {head!r}; allowed: {', '.join(TOP_KEYS)}"
            )
        if head in ("problem", "method"):
            comp = out.setdefault(head, {"name": None, "options": {}})
            if len(parts) == 1:
                if not isinstance(value, str):
                    raise ConfigError(f"bad override {text!r}: {head} needs a name")
                comp["name"] = value
                continue
            rest = parts[1:]
            if rest == ["name"]:
                comp["name"] = value
                continue
            if rest[0] == "options":
                rest = rest[1:]
            if not rest:
                raise ConfigError(f"bad override {text!r}: expected {head}.OPTION=value")
            # Nested options (method.hierarchy_options.data_ratio=0.125) set one entry of a
            # mapping option and keep its other entries.
            node = comp["options"]
            for depth, k in enumerate(rest[:-1]):
                child = node.get(k)
                child = {} if child is None else child
                if not isinstance(child, dict):
                    where = ".".join([head, *rest[: depth + 1]])
                    raise ConfigError(f"bad override {text!r}: {where} is {child!r}, not a "
                                      "mapping, so it has no sub-keys")
                node[k] = dict(child)  # a copy: the caller's mapping is not modified
                node = node[k]
            node[rest[-1]] = value
        else:
            if len(parts) != 1:
                raise ConfigError(f"bad override {text!r}: {head!r} has no sub-keys")
            out[head] = value
    return out


def problem_parameters(name: str) -> tuple[list[str], bool]:
    """Keyword names the problem builder ``name`` accepts, and whether it takes ``**kwargs``."""
    from mldd.problems.registry import _REGISTRY, get

    if name not in _REGISTRY:
        get(name)  # raises KeyError listing the known problems
    sig = inspect.signature(_REGISTRY[name])
    names = [p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    var = any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var


def problem_kwargs(cfg: RunConfig) -> dict[str, Any]:
    """The keyword arguments for ``mldd.problems.get``: the options plus ``dtype`` when set.

    ``dtype`` is passed as a string if the builder's default ``dtype`` is a string, else as a
    ``torch.dtype``.

    Raises:
        ConfigError: the problem does not take a ``dtype`` option.
    """
    import torch

    from mldd.problems.registry import _REGISTRY

    kw = dict(cfg.problem.options)
    if cfg.dtype is not None:
        names, var = problem_parameters(cfg.problem.name)
        if "dtype" not in names and not var:
            raise ConfigError(f"problem {cfg.problem.name!r} has no dtype option; remove dtype")
        default = inspect.signature(_REGISTRY[cfg.problem.name]).parameters.get("dtype")
        as_str = default is not None and isinstance(default.default, str)
        kw["dtype"] = cfg.dtype if as_str else getattr(torch, cfg.dtype)
    return kw


def validate(cfg: RunConfig) -> RunConfig:
    """Check names and options against the registries (imports :mod:`mldd.problems`).

    Raises:
        ConfigError: unknown problem/method or an option they do not accept.
    """
    import mldd.problems  # noqa: F401  (registers the problems)
    from mldd.problems.registry import available

    if cfg.problem.name not in available():
        raise ConfigError(
            f"unknown problem {cfg.problem.name!r}; known problems: {', '.join(available())}"
        )
    names, var = problem_parameters(cfg.problem.name)
    if not var:
        for k, v in cfg.problem.options.items():
            if k not in names:
                raise ConfigError(
                    f"problem {cfg.problem.name!r} has no option {k!r} (value {v!r}); "
                    f"allowed: {', '.join(n for n in names if n != 'dtype') or '(none)'}"
                )
    if "dtype" in cfg.problem.options:
        raise ConfigError("set the dtype with the top-level 'dtype' key, not problem.dtype")
    try:
        get_method(cfg.method.name).resolve(cfg.method.options)
    except MethodError as exc:
        raise ConfigError(str(exc)) from exc
    return cfg


def resolve(
    file: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """File (optional) + ``base`` values + overrides → a validated :class:`RunConfig`.

    ``base`` holds values from command-line flags (``--problem``, ``--budget``, ...); they win
    over the file, and ``--set`` overrides win over both.
    """
    data: dict[str, Any] = load_file(file) if file is not None else {}
    for k, v in (base or {}).items():
        if v is None:
            continue
        if k in ("problem", "method") and isinstance(v, str) and isinstance(data.get(k), dict):
            # --method NAME keeps the file's options only if the name is the same.
            same = _component(k, data[k]).name == v
            data[k] = data[k] if same else v
        else:
            data[k] = v
    data = apply_overrides(data, list(overrides or []))
    cfg = from_dict(data)
    return validate(cfg)


__all__ = [
    "ComponentConfig",
    "ConfigError",
    "RunConfig",
    "apply_overrides",
    "dump_yaml",
    "from_dict",
    "load_file",
    "parse_override",
    "problem_kwargs",
    "resolve",
    "to_dict",
    "validate",
]
