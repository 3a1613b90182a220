"""Performance benchmarks of the optimizers themselves (not of training problems)."""

from mldd.perf.core import run_core_benchmark

__all__ = ["run_core_benchmark"]
