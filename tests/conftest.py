"""Shared test settings: small thread count so the suite behaves the same on CI's 2 cores."""

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("MLDD_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Reference solutions go to a per-session cache, never to the user's home."""
    cache = tmp_path_factory.getbasetemp() / "mldd-cache"
    monkeypatch.setenv("MLDD_CACHE_DIR", os.environ.get("MLDD_TEST_CACHE", str(cache)))
