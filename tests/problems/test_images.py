"""Image-classification problems and the local-file readers (tiny files written by the tests)."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import mldd.problems as problems
from mldd.models import ConvResNet, ResidualMLP, SmallCNN
from mldd.problems.images import (
    ImageClassificationProblem,
    as_dtype,
    load_cifar10,
    load_idx_dataset,
    read_idx,
    synthetic_images,
    write_idx,
)
from mldd.problems.images.loaders import CIFAR10_TEST, CIFAR10_TRAIN, IDX_FILES


@pytest.fixture(scope="module")
def digits() -> ImageClassificationProblem:
    p = problems.get("digits")
    assert isinstance(p, ImageClassificationProblem)
    return p


@pytest.fixture(scope="module")
def mnist5k() -> ImageClassificationProblem:
    p = problems.get("mnist5k")
    assert isinstance(p, ImageClassificationProblem)
    return p


def test_registry_names_resolve() -> None:
    names = set(problems.available())
    assert {"digits", "mnist5k", "synthetic-images", "mnist", "fashion-mnist", "cifar10"} <= names
    assert all(problems.describe_all()[n] for n in ("digits", "mnist", "fashion-mnist", "cifar10"))


# ------------------------------------------------------------------------------------ digits


def test_digits_shapes_range_balance(digits: ImageClassificationProblem) -> None:
    assert digits.x_train.shape == (1347, 1, 8, 8) and digits.x_test.shape == (450, 1, 8, 8)
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    assert float(digits.x_train.min()) == 0.0 and float(digits.x_train.max()) == 1.0
    assert digits.num_classes == 10 and digits.image_shape == (1, 8, 8)
    # Stratified: every class's share in train and test matches its share overall (±1 image).
    tr = torch.bincount(digits.y_train, minlength=10).double()
    te = torch.bincount(digits.y_test, minlength=10).double()
    assert torch.all((te - 0.25 * (tr + te)).abs() <= 1)
    assert digits.describe()["n_train"] == 1347


def test_digits_split_deterministic_by_seed(digits: ImageClassificationProblem) -> None:
    again = problems.get("digits")
    assert torch.equal(again.x_train, digits.x_train)  # type: ignore[attr-defined]
    other = problems.get("digits", seed=1, test_size=0.5, dtype="float64")
    assert other.x_train.shape[0] == 898 and other.x_train.dtype == torch.float64  # type: ignore[attr-defined]
    assert not torch.equal(other.y_test[:450], digits.y_test)  # type: ignore[attr-defined]


def test_digits_models_and_options(digits: ImageClassificationProblem) -> None:
    m = digits.build_model(seed=0)
    assert isinstance(m, ResidualMLP) and m.width == 32 and m.depth == 4 and m.flatten
    assert m(digits.x_test).shape == (450, 10)
    cnn = problems.get("digits", model="cnn").build_model(0)
    assert isinstance(cnn, SmallCNN) and cnn.channels == (16, 32)
    res = problems.get("digits", model="resnet", width=4, depth=3).build_model(0)
    assert isinstance(res, ConvResNet) and (res.width, res.depth) == (4, 3)
    assert res(digits.x_test[:5]).shape == (5, 10)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"model": "vit"}, "model"),
        ({"width": 0}, "width"),
        ({"test_size": 1.5}, "test_size"),
        ({"dtype": "int8"}, "dtype"),
        ({"model": "cnn", "activation": "tanh"}, "ReLU"),
        ({"model": "cnn", "depth": 4}, "too small"),
    ],
)
def test_digits_option_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        problems.get("digits", **options)


def test_unknown_option_is_rejected() -> None:
    with pytest.raises(TypeError, match="widht"):
        problems.get("digits", widht=3)


def test_build_model_seeded_and_leaves_global_rng_alone(digits: ImageClassificationProblem) -> None:
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a, b = digits.build_model(seed=7), digits.build_model(seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)
    c = digits.build_model(seed=8)
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters(), strict=True))


def test_adam_full_batch_reduces_loss_on_digits(digits: ImageClassificationProblem) -> None:
    model = digits.build_model(seed=0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = float(digits.loss(model).detach())
    for _ in range(30):
        opt.zero_grad()
        loss = digits.loss(model)
        loss.backward()
        opt.step()
    assert float(digits.loss(model).detach()) < 0.5 * first
    acc = digits.metric(model)
    assert 0.0 <= acc <= 1.0 and acc > 0.5


def test_batches_cover_training_set_once(digits: ImageClassificationProblem) -> None:
    xs, ys = zip(*digits.batches(100, torch.Generator().manual_seed(0)), strict=True)
    assert [len(y) for y in ys] == [100] * 13 + [47]
    x, y = torch.cat(xs), torch.cat(ys)
    # Compare the batches with the training set as multisets of (image, label) rows.
    w = torch.randn(64, generator=torch.Generator().manual_seed(1)).double()
    key = (x.flatten(1).double() @ w) + 1000 * y
    ref = (digits.x_train.flatten(1).double() @ w) + 1000 * digits.y_train
    torch.testing.assert_close(torch.sort(key).values, torch.sort(ref).values)


# ----------------------------------------------------------------------------------- mnist5k


def test_mnist5k_shapes_normalisation_balance(mnist5k: ImageClassificationProblem) -> None:
    assert mnist5k.x_train.shape == (4000, 1, 28, 28) and mnist5k.x_test.shape == (1000, 1, 28, 28)
    assert abs(float(mnist5k.x_train.mean())) < 1e-4
    assert abs(float(mnist5k.x_train.std()) - 1) < 1e-3
    assert torch.equal(torch.bincount(mnist5k.y_train), torch.full((10,), 400))
    assert torch.equal(torch.bincount(mnist5k.y_test), torch.full((10,), 100))
    m = mnist5k.build_model(seed=0)
    assert isinstance(m, ResidualMLP) and m(mnist5k.x_test[:3]).shape == (3, 10)


def test_mnist5k_split_deterministic_by_seed(mnist5k: ImageClassificationProblem) -> None:
    other = problems.get("mnist5k", seed=1)
    again = problems.get("mnist5k", seed=0)
    assert torch.equal(again.x_test, mnist5k.x_test)  # type: ignore[attr-defined]
    assert not torch.equal(other.x_test, mnist5k.x_test)  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_shaped() -> None:
    kw = {"n_train": 60, "n_test": 30, "image_size": 12, "channels": 3, "n_classes": 4}
    a = problems.get("synthetic-images", **kw)
    b = problems.get("synthetic-images", **kw)
    c = problems.get("synthetic-images", **kw, seed=1)
    assert a.x_train.shape == (60, 3, 12, 12) and a.x_test.shape == (30, 3, 12, 12)  # type: ignore[attr-defined]
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)  # type: ignore[attr-defined]
    assert not torch.equal(a.x_train, c.x_train)  # type: ignore[attr-defined]
    assert torch.equal(torch.bincount(a.y_train), torch.full((4,), 15))  # type: ignore[attr-defined]
    assert a.build_model(0)(a.x_test).shape == (30, 4)  # type: ignore[attr-defined]


def test_synthetic_test_set_independent_of_n_train() -> None:
    _, _, xa, ya = synthetic_images(n_train=10, n_test=20)
    _, _, xb, yb = synthetic_images(n_train=50, n_test=20)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)


def test_synthetic_is_not_linearly_trivial_but_has_signal() -> None:
    # Class means (prototypes blurred by the shifts) are distinguishable, but individual
    # images are noisy: nearest-class-mean accuracy is clearly above chance and below 100 %.
    xtr, ytr, xte, yte = synthetic_images(n_train=1000, n_test=500, seed=0)
    means = np.stack([xtr[ytr == c].mean(0) for c in range(10)]).reshape(10, -1)
    d = ((xte.reshape(len(xte), 1, -1) - means[None]) ** 2).sum(-1)
    acc = float((d.argmin(1) == yte).mean())
    assert 0.15 < acc < 0.9


@pytest.mark.parametrize(
    ("options", "match"),
    [({"n_train": 0}, "n_train"), ({"n_classes": 1}, "n_classes"), ({"noise": -1.0}, "noise"),
     ({"image_size": 2.5}, "image_size")],
)
def test_synthetic_option_errors(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        problems.get("synthetic-images", **options)


# -------------------------------------------------------------------------------------- idx


def _idx_bytes(array: np.ndarray) -> bytes:
    """Hand-built idx encoding (independent of :func:`write_idx`)."""
    head = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    head += b"".join(struct.pack(">I", d) for d in array.shape)
    return head + array.astype(np.uint8).tobytes()


def _write_mnist_dir(root: Path, n_train: int = 12, n_test: int = 7, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_FILES.items():
        data = _idx_bytes(arrays[key])
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (root / name).write_bytes(data)
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_idx_dataset_plain_and_gz(tmp_path: Path, gz: bool) -> None:
    arrays = _write_mnist_dir(tmp_path, gz=gz)
    xtr, ytr, xte, yte = load_idx_dataset(tmp_path)
    for got, key in ((xtr, "x_train"), (ytr, "y_train"), (xte, "x_test"), (yte, "y_test")):
        np.testing.assert_array_equal(got, arrays[key])
    for name in ("mnist", "fashion-mnist"):
        p = problems.get(name, path=tmp_path)
        assert p.name == name
        assert p.x_train.shape == (12, 1, 28, 28) and p.x_test.shape == (7, 1, 28, 28)  # type: ignore[attr-defined]
        assert p.y_train.dtype == torch.int64  # type: ignore[attr-defined]
        assert abs(float(p.x_train.mean())) < 1e-4  # type: ignore[attr-defined]
    limited = problems.get("mnist", path=str(tmp_path), limit_train=5, limit_test=3)
    assert limited.x_train.shape[0] == 5 and limited.x_test.shape[0] == 3  # type: ignore[attr-defined]
    assert limited.build_model(0)(limited.x_test).shape == (3, 10)
    tiny = problems.get("mnist", path=tmp_path, limit_train=2, limit_test=1)
    assert tiny.num_classes == 10  # type: ignore[attr-defined]  # type: ignore[attr-defined]


def test_idx_write_read_roundtrip(tmp_path: Path) -> None:
    for arr in (np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
                np.linspace(-1, 1, 6).reshape(3, 2), np.arange(5, dtype=np.int32)):
        for suffix in ("", ".gz"):
            f = tmp_path / f"a{arr.dtype}{suffix}"
            write_idx(f, arr)
            out = read_idx(f)
            assert out.dtype == arr.dtype.newbyteorder("=")
            np.testing.assert_array_equal(out, arr)


def test_idx_npz(tmp_path: Path) -> None:
    arrays = _write_mnist_dir(tmp_path / "dir")
    np.savez(tmp_path / "mnist.npz", **arrays)
    p = problems.get("mnist", path=tmp_path / "mnist.npz", dtype=torch.float64)
    assert p.x_train.shape == (12, 1, 28, 28) and p.x_train.dtype == torch.float64  # type: ignore[attr-defined]


def test_idx_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        problems.get("mnist")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        problems.get("fashion-mnist", path=tmp_path / "nowhere")
    _write_mnist_dir(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as e:
        problems.get("mnist", path=tmp_path)
    assert "never downloads" in str(e.value)


def test_idx_corrupt_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="magic"):
        read_idx(bad)
    bad.write_bytes(b"\x00\x00\x07\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="type code"):
        read_idx(bad)
    bad.write_bytes(_idx_bytes(np.zeros((3, 2, 2), np.uint8))[:-1])
    with pytest.raises(ValueError, match="size mismatch"):
        read_idx(bad)
    bad.write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(ValueError, match="gzip"):
        read_idx(bad)
    _write_mnist_dir(tmp_path / "d")
    (tmp_path / "d" / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="12 images but 5 labels"):
        problems.get("mnist", path=tmp_path / "d")
    with pytest.raises(ValueError, match="limit_train"):
        problems.get("mnist", path=tmp_path / "nowhere", limit_train=0)
    with pytest.raises(ValueError, match="limit_test"):
        problems.get("cifar10", path=tmp_path / "nowhere", limit_test=-2)


# ------------------------------------------------------------------------------------ CIFAR


def _write_cifar_dir(root: Path, per_batch: int = 4, n_test: int = 3) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for name, n in [*((b, per_batch) for b in CIFAR10_TRAIN), (CIFAR10_TEST, n_test)]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": [int(v) for v in rng.integers(0, 10, n)], b"batch_label": b"x"}
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)


def test_cifar10_loads(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path)
    xtr, ytr, xte, yte = load_cifar10(tmp_path)
    assert xtr.shape == (20, 3, 32, 32) and xtr.dtype == np.uint8 and ytr.shape == (20,)
    assert xte.shape == (3, 3, 32, 32) and yte.dtype == np.int64
    p = problems.get("cifar10", path=tmp_path, limit_train=8)
    assert p.x_train.shape == (8, 3, 32, 32) and p.num_classes >= 1  # type: ignore[attr-defined]
    means = p.x_train.mean(dim=(0, 2, 3))  # type: ignore[attr-defined]
    assert torch.all(means.abs() < 1e-4)
    m = p.build_model(0)
    assert isinstance(m, ConvResNet) and m(p.x_test).shape[0] == 3  # type: ignore[attr-defined]


def test_cifar10_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="never downloads"):
        problems.get("cifar10")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_cifar10(tmp_path / "nowhere")
    _write_cifar_dir(tmp_path)
    (tmp_path / "test_batch").unlink()
    with pytest.raises(FileNotFoundError, match="test_batch"):
        load_cifar10(tmp_path)
    (tmp_path / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="test_batch"):
        load_cifar10(tmp_path)
    with open(tmp_path / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(tmp_path)


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("pwned",))


def test_cifar10_pickle_cannot_run_code(tmp_path: Path) -> None:
    _write_cifar_dir(tmp_path)
    with open(tmp_path / "data_batch_3", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": []}, f)
    with pytest.raises(ValueError, match="refusing"):
        load_cifar10(tmp_path)


def test_as_dtype() -> None:
    assert as_dtype("float64") is torch.float64 and as_dtype("torch.float32") is torch.float32
    with pytest.raises(ValueError, match="float32 or float64"):
        as_dtype(torch.int64)
