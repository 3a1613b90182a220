"""On-disk cache of reference solutions (``.npz`` files).

Reference solutions are computed by the package itself (nothing is downloaded) and some take
seconds to compute, so they are stored once per machine in

* ``$MLDD_CACHE_DIR`` if that environment variable is set, else
* ``~/.cache/mldd/references``,

under the file name ``<name>-<hash>.npz`` where the hash covers the problem name, the solver
parameters and a solver version string: changing any of them computes a new file. Files are
written atomically (temporary file in the same directory, then :func:`os.replace`), so an
interrupted run never leaves a half-written file under the final name; a file that cannot be
read back (corrupted, truncated, missing arrays) is recomputed with a warning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

ENV_VAR = "MLDD_CACHE_DIR"


def cache_dir() -> Path:
    """The directory holding cached references (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "mldd" / "references"


def _jsonable(value: Any) -> Any:
    """Canonical JSON-friendly form of solver parameters (tuples → lists, numpy → Python)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return repr(value)


def cache_key(name: str, params: Mapping[str, Any]) -> str:
    """A stable hex digest of ``name`` and the solver ``params``."""
    blob = json.dumps({"name": name, "params": _jsonable(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_path(name: str, params: Mapping[str, Any]) -> Path:
    """The file the reference ``name`` with ``params`` is (or would be) cached in."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name)
    return cache_dir() / f"{safe}-{cache_key(name, params)}.npz"


def _write_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            payload: dict[str, Any] = dict(arrays)
            np.savez(fh, **payload)
        os.replace(tmp, path)
    except BaseException:
        # Leave no temporary debris behind, whatever went wrong (disk full, interrupt).
        Path(tmp).unlink(missing_ok=True)
        raise


def _read(path: Path, keys: tuple[str, ...] | None) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        out = {k: np.array(data[k]) for k in data.files}
    if keys is not None:
        missing = [k for k in keys if k not in out]
        if missing:
            raise KeyError(f"cached file lacks arrays {missing}")
    return out


def load_or_compute(
    name: str,
    params: Mapping[str, Any],
    compute: Callable[[], Mapping[str, np.ndarray]],
    *,
    keys: tuple[str, ...] | None = None,
    use_cache: bool = True,
) -> dict[str, np.ndarray]:
    """The arrays cached for ``(name, params)``, computing and storing them on a miss.

    Args:
        name: the reference's name (problem name).
        params: every parameter the result depends on (solver resolution, tolerances, version);
            hashed into the file name.
        compute: zero-argument function returning the arrays (called only on a cache miss).
        keys: array names the cached file must contain; a file lacking one counts as corrupted.
        use_cache: ``False`` computes without reading or writing the cache.

    Returns:
        Name → array dict.
    """
    if not use_cache:
        return {k: np.asarray(v) for k, v in compute().items()}
    path = cache_path(name, params)
    if path.exists():
        try:
            out = _read(path, keys)
            logger.debug("reference %s read from %s", name, path)
            return out
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            warnings.warn(
                f"cached reference {path} is unreadable ({err}); recomputing it",
                RuntimeWarning,
                stacklevel=2,
            )
    logger.info("computing reference %s (cache miss: %s)", name, path)
    arrays = {k: np.asarray(v) for k, v in compute().items()}
    try:
        _write_atomic(path, arrays)
    except OSError as err:
        # A read-only or full disk must not stop training: the reference is still returned.
        warnings.warn(f"could not cache reference at {path}: {err}", RuntimeWarning, stacklevel=2)
    return arrays
