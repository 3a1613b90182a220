"""Readers for image data sets kept on the local disk: idx (MNIST, Fashion-MNIST) and CIFAR-10.

mldd never downloads data: every reader takes a path and raises :class:`FileNotFoundError`
naming the exact file it looked for when that file is missing, and :class:`ValueError` for a
file that exists but is not in the expected format (bad magic number, truncated data, mismatched
counts).

Formats:

* **idx** (LeCun's MNIST format, also used by Fashion-MNIST): big-endian header
  ``0x00 0x00 <type code> <ndim>``, then ``ndim`` big-endian ``uint32`` dimensions, then the
  data in row-major order. Files may be gzip-compressed (``.gz``).
* **CIFAR-10, python version**: pickled dicts with ``data`` (``uint8``, ``(N, 3072)``, channel-major
  ``R…G…B``) and ``labels``; batches ``data_batch_1`` … ``data_batch_5`` and ``test_batch``.
  They are read with a restricted unpickler that only rebuilds numpy arrays, so a tampered
  file cannot run code.
* **npz** (Keras-style ``mnist.npz``): arrays ``x_train, y_train, x_test, y_test``.
"""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

NO_DOWNLOAD = "mldd never downloads data: place the files there yourself"

# idx type codes (http://yann.lecun.com/exdb/mnist/), all big-endian.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = "test_batch"

Split = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    # Detect gzip by its magic bytes rather than the suffix, so renamed files still load.
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (plain or gzip-compressed) into a numpy array of its stored shape.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: for a bad magic number, unknown type code, or a data size that does not
            match the header.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"idx file not found: {path} ({NO_DOWNLOAD})")
    raw = _read_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ValueError(
            f"{path}: not an idx file (magic number must start with two zero bytes, "
            f"got {raw[:4].hex() or 'an empty file'})"
        )
    code, ndim = raw[2], raw[3]
    if code not in _IDX_DTYPES:
        raise ValueError(
            f"{path}: unknown idx type code 0x{code:02x}; "
            f"known: {', '.join(f'0x{c:02x}' for c in _IDX_DTYPES)}"
        )
    if ndim < 1:
        raise ValueError(f"{path}: idx header declares {ndim} dimensions; need at least 1")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes, need {header})")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"{path}: idx data size mismatch: header shape {shape} of {dtype.name} needs "
            f"{expected} bytes, file holds {len(raw) - header}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an idx file (gzip-compressed if ``path`` ends with ``.gz``).

    The inverse of :func:`read_idx`; used by the tests and to export subsets.
    """
    codes = {v.newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    dt = np.dtype(array.dtype).newbyteorder("=")
    if dt not in codes:
        raise ValueError(f"dtype {array.dtype} has no idx type code; use one of {list(codes)}")
    head = bytes([0, 0, codes[dt], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = np.ascontiguousarray(array, dtype=_IDX_DTYPES[codes[dt]]).tobytes()
    data = head + body
    path = Path(path)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"missing data file {directory / name} (or {name}.gz) in {directory}; {NO_DOWNLOAD}"
    )


def _check_split(x: np.ndarray, y: np.ndarray, where: str, image_ndim: int) -> None:
    if x.ndim != image_ndim:
        raise ValueError(f"{where}: images must have {image_ndim} dimensions, got shape {x.shape}")
    if y.ndim != 1:
        raise ValueError(f"{where}: labels must be 1-D, got shape {y.shape}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{where}: {x.shape[0]} images but {y.shape[0]} labels")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and y.min() < 0):
        raise ValueError(f"{where}: labels must be non-negative integers")


def load_idx_dataset(path: str | Path) -> Split:
    """MNIST-format data from ``path``: a directory with the four standard idx files, or a
    Keras-style ``.npz`` file.

    Returns:
        ``(x_train, y_train, x_test, y_test)`` as numpy arrays, images ``(N, H, W)``.

    Raises:
        FileNotFoundError: naming the first missing file.
        ValueError: for corrupt files or inconsistent shapes.
    """
    path = Path(path)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"npz file not found: {path} ({NO_DOWNLOAD})")
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in IDX_FILES if k not in npz.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}; has {npz.files}")
            xtr, ytr, xte, yte = (np.asarray(npz[k]) for k in IDX_FILES)
    else:
        if not path.is_dir():
            raise FileNotFoundError(
                f"data directory not found: {path} (expected the idx files "
                f"{', '.join(IDX_FILES.values())}, optionally .gz); {NO_DOWNLOAD}"
            )
        xtr, ytr, xte, yte = (read_idx(_find(path, name)) for name in IDX_FILES.values())
    _check_split(xtr, ytr, f"{path} (train)", 3)
    _check_split(xte, yte, f"{path} (test)", 3)
    if xtr.shape[1:] != xte.shape[1:]:
        raise ValueError(f"{path}: train images {xtr.shape[1:]} but test images {xte.shape[1:]}")
    return xtr, ytr, xte, yte


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds only numpy arrays, dtypes and builtin containers."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} from a data pickle (only numpy arrays are allowed)"
        )


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        # latin1 decodes the Python-2 pickles of the official archive.
        obj = _ArrayUnpickler(io.BytesIO(_read_bytes(path)), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
        raise ValueError(f"{path}: not a CIFAR-10 python batch ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: a CIFAR-10 batch is a dict, got {type(obj).__name__}")
    d = {k.decode() if isinstance(k, bytes) else k: v for k, v in obj.items()}
    if "data" not in d or "labels" not in d:
        raise ValueError(f"{path}: CIFAR-10 batch lacks 'data' or 'labels' (keys: {sorted(d)})")
    data = np.asarray(d["data"])
    labels = np.asarray(d["labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.dtype != np.uint8:
        raise ValueError(
            f"{path}: CIFAR-10 data must be uint8 of shape (N, 3072), "
            f"got {data.dtype} {data.shape}"
        )
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {data.shape[0]} images but labels of shape {labels.shape}")
    return data.reshape(-1, 3, 32, 32), labels


def load_cifar10(path: str | Path) -> Split:
    """CIFAR-10 from the directory of python batches (``cifar-10-batches-py``).

    Returns:
        ``(x_train, y_train, x_test, y_test)``, images ``uint8`` of shape ``(N, 3, 32, 32)``.

    Raises:
        FileNotFoundError: naming the first missing batch file.
        ValueError: for a corrupt batch.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"CIFAR-10 directory not found: {path} (expected {', '.join(CIFAR10_TRAIN)}, "
            f"{CIFAR10_TEST}); {NO_DOWNLOAD}"
        )
    files = [_find(path, n) for n in (*CIFAR10_TRAIN, CIFAR10_TEST)]
    train = [_read_cifar_batch(f) for f in files[:-1]]
    xte, yte = _read_cifar_batch(files[-1])
    xtr = np.concatenate([x for x, _ in train])
    ytr = np.concatenate([y for _, y in train])
    return xtr, ytr, xte, yte
