"""A fixed reference workload that measures how fast the machine is *right now*.

Wall-clock benchmarks compare runs made one after another. On a shared machine (a cloud VM whose
host is busy with other guests) the speed of the same computation can drift between those runs:
on the 2-core benchmark machine one Burgers trust-region run took 120 ms per iteration in one
session and 175 ms in the next, on bit-identical iterates. :func:`machine_probe` times a small
PINN-like computation — a tanh MLP's value, input gradient by double backward, and the
parameter gradient of a loss on it, the mix of GEMMs and element-wise kernels of the PINN
benchmarks — so that each run records the machine's speed at its start and end
(``summary.json``: ``machine_probe_ms``) and a report can say by how much its wall-clock
comparisons may be off. Comparisons at equal gradient evaluations are immune to the drift.
"""

from __future__ import annotations

import itertools
import time

import torch

from mldd.validation import check_int

#: Problem size of the probe: points, width, hidden layers (a few ms per evaluation).
PROBE_POINTS, PROBE_WIDTH, PROBE_LAYERS = 1024, 48, 3


def _probe_once(weights: list[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> None:
    h = x
    for i, (w, b) in enumerate(weights):
        h = h @ w + b
        if i < len(weights) - 1:
            h = torch.tanh(h)
    (du,) = torch.autograd.grad(h.sum(), x, create_graph=True)
    loss = (du ** 2).mean() + (h ** 2).mean()
    loss.backward()


def machine_probe(repeats: int = 7, dtype: torch.dtype = torch.float64) -> float:
    """Fastest wall time, in milliseconds, of one fixed PINN-like gradient evaluation.

    The workload is fixed (weights and points from a private generator, so the global random
    state is untouched) and runs with the current ``torch.get_num_threads()``: call it where the
    run's thread count is already set. One warm-up call, then the minimum of ``repeats``: noise
    (a scheduler tick, another process) only adds time, so the minimum estimates the speed the
    machine offers more steadily than the median (on the idle 2-core VM, 15 probes spread by
    13% with the minimum of 7 against 18% with the median).

    Args:
        repeats: timed repetitions (at least 1).
        dtype: floating type of the workload (float64, as the PINN benchmarks).

    Returns:
        Milliseconds per evaluation (the fastest of ``repeats``).
    """
    check_int("repeats", repeats)
    gen = torch.Generator().manual_seed(1234)
    sizes = [2] + [PROBE_WIDTH] * PROBE_LAYERS + [1]
    weights = []
    for a, b in itertools.pairwise(sizes):
        w = (torch.randn(a, b, generator=gen, dtype=dtype) / a ** 0.5).requires_grad_()
        weights.append((w, torch.zeros(b, dtype=dtype, requires_grad=True)))
    x = torch.rand(PROBE_POINTS, 2, generator=gen, dtype=dtype).requires_grad_()
    times = []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        _probe_once(weights, x)
        if i:  # the first call warms the allocator and the kernels
            times.append(time.perf_counter() - t0)
    return 1e3 * min(times)
