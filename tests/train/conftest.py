"""Fixtures for the trainer tests."""

from tiny_problem import tiny  # noqa: F401  (fixture)
