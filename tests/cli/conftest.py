"""Fixtures for the CLI tests: the tiny problem lives next to the trainer tests."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))

from tiny_problem import tiny  # noqa: F401  (fixture)
