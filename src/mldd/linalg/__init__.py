"""Flat-vector helpers: a point in parameter space is one 1-D tensor."""

from mldd.linalg.flat import (
    flat_grad,
    flatten,
    numel,
    params_to_vector,
    to_numpy64,
    vector_to_params,
)

__all__ = ["flat_grad", "flatten", "numel", "params_to_vector", "to_numpy64", "vector_to_params"]
