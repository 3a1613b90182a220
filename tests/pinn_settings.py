"""Coarse reference-solver settings of the PINN problems, shared by the tests that build them:
the real solver code paths at a fraction of the cost (importable from any test module, as
``tests/`` is on ``sys.path`` through its ``conftest.py``)."""

from __future__ import annotations

from typing import Any

COARSE: dict[str, dict[str, Any]] = {
    "burgers": {"n_x": 33, "n_t": 11, "dt": 0.1, "n_quad": 100},
    "klein-gordon": {"n_x": 17, "n_t": 13},
    "allen-cahn": {"n_cheb": 64, "n_x": 33, "n_t": 11},
    "diffusion-advection": {"n_cheb": 48, "n_eval": 21},
    "poisson2d": {"n_eval": 21},
}
