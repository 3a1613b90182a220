"""Image-classification problems (registered on import) and local-file readers."""

from mldd.problems.images.datasets import (
    CIFAR10,
    MODELS,
    Digits,
    FashionMNIST,
    IdxImages,
    ImageClassificationProblem,
    MNIST5k,
    SyntheticImages,
    as_dtype,
    make_image_model,
    synthetic_images,
)
from mldd.problems.images.loaders import load_cifar10, load_idx_dataset, read_idx, write_idx

__all__ = [
    "CIFAR10",
    "MODELS",
    "Digits",
    "FashionMNIST",
    "IdxImages",
    "ImageClassificationProblem",
    "MNIST5k",
    "SyntheticImages",
    "as_dtype",
    "load_cifar10",
    "load_idx_dataset",
    "make_image_model",
    "read_idx",
    "synthetic_images",
    "write_idx",
]
