"""Performance benchmarks of the optimizers themselves (not of training problems)."""

from mldd.perf.core import compare_lbfgs, measure_overhead, paired_time_ratio, run_core_benchmark

__all__ = ["compare_lbfgs", "measure_overhead", "paired_time_ratio", "run_core_benchmark"]
