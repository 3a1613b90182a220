"""Timings of PINN loss gradients: forward jets vs nested autograd, layer-block vs full.

Run ``python -m mldd.problems.pinn.derivative_timing [--threads 2] [--repeats 9]`` to print the
two Markdown tables of the jets work (docs/benchmarks.md protocol: side by side, interleaved, in one
process, pinned threads, medians of several repeats):

1. :func:`time_derivative_routes` — one loss + gradient evaluation with ``derivatives="jet"``
   and ``derivatives="autograd"`` on the same network, points and dtype;
2. :func:`time_layer_blocks` — the gradient with respect to one layer ``s`` by
   :class:`~mldd.problems.pinn.prefix.BlockObjective` (prefix cached) against the full gradient.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

import mldd.problems as problems
from mldd.linalg.flat import params_to_vector
from mldd.problems.pinn.common import GridPINN
from mldd.problems.pinn.jet_residuals import operator_spec
from mldd.problems.pinn.prefix import BlockObjective


@dataclass
class Timing:
    """Medians and minima (milliseconds) of interleaved repeats."""

    label: str
    median_ms: float
    min_ms: float


def _loss_and_grad(problem: GridPINN, model: nn.Module) -> Callable[[], None]:
    params = list(model.parameters())

    def run() -> None:
        loss = problem.loss(model)
        torch.autograd.grad(loss, params)

    return run


def _interleaved(cases: dict[str, Callable[[], None]], repeats: int, warmup: int = 1
                 ) -> dict[str, Timing]:
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            samples[k].append(1e3 * (time.perf_counter() - t0))
    return {k: Timing(k, statistics.median(v), min(v)) for k, v in samples.items()}


class _Threads:
    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def time_derivative_routes(
    names: Sequence[str] = ("burgers", "klein-gordon", "allen-cahn"),
    *,
    repeats: int = 9,
    threads: int = 2,
    dtype: torch.dtype = torch.float64,
    n_collocation: int = 10_000,
    seed: int = 0,
) -> list[tuple[str, Timing, Timing]]:
    """``[(problem, jet timing, autograd timing)]`` of one loss + gradient evaluation.

    Each problem at its default network size (Burgers 8×20, Klein–Gordon 6×50, Allen–Cahn
    6×64), Hammersley points, the same seeded network for both routes.
    """
    out = []
    with _Threads(threads):
        for name in names:
            jet = problems.get(name, n_collocation=n_collocation, dtype=dtype)
            auto = problems.get(name, n_collocation=n_collocation, dtype=dtype,
                                derivatives="autograd")
            assert isinstance(jet, GridPINN) and isinstance(auto, GridPINN)
            model = jet.build_model(seed)
            t = _interleaved({"jet": _loss_and_grad(jet, model),
                              "autograd": _loss_and_grad(auto, model)}, repeats)
            out.append((name, t["jet"], t["autograd"]))
    return out


def time_layer_blocks(
    name: str = "burgers",
    *,
    repeats: int = 9,
    threads: int = 2,
    dtype: torch.dtype = torch.float64,
    n_collocation: int = 10_000,
    seed: int = 0,
) -> tuple[Timing, Timing, list[Timing], list[Timing]]:
    """``(full jet, full autograd, [layer s], [prefix s])``: one-layer blocks vs full gradient.

    A layer's time is one ``BlockObjective.value_and_grad`` with the prefix cached (every
    evaluation of a local solve but its first); the prefix time is the one-off computation of
    the cached jet (a forward pass through layers ``0 … s−1`` without a graph).
    """
    with _Threads(threads):
        jet = problems.get(name, n_collocation=n_collocation, dtype=dtype)
        auto = problems.get(name, n_collocation=n_collocation, dtype=dtype,
                            derivatives="autograd")
        assert isinstance(jet, GridPINN) and isinstance(auto, GridPINN)
        model = jet.build_model(seed)
        x = params_to_vector(list(model.parameters()))
        n_layers = jet.depth + 1
        objs = [BlockObjective(jet, model, [s], x) for s in range(n_layers)]
        spec = operator_spec(jet, jet.collocation.shape[1])
        cases: dict[str, Callable[[], None]] = {}
        for s, obj in enumerate(objs):
            z = obj.z0

            def local(obj: BlockObjective = obj, z: torch.Tensor = z) -> None:
                obj.value_and_grad(z)

            def prefix(obj: BlockObjective = obj) -> None:
                net = obj.block.network
                net.clear()
                net.prefix_jet(jet.collocation, spec)

            cases[f"layer {s}"] = local
            cases[f"prefix {s}"] = prefix
        # The block objectives write the same x into the model, so the full cases see it too.
        cases["full (jet)"] = _loss_and_grad(jet, model)
        cases["full (autograd)"] = _loss_and_grad(auto, model)
        t = _interleaved(cases, repeats)
    return (t["full (jet)"], t["full (autograd)"], [t[f"layer {s}"] for s in range(n_layers)],
            [t[f"prefix {s}"] for s in range(n_layers)])


def main(argv: Sequence[str] | None = None) -> str:
    """Parse ``argv`` and return the two Markdown tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--float32", action="store_true")
    ap.add_argument("--points", type=int, default=10_000, help="collocation points")
    args = ap.parse_args(argv)
    dtype = torch.float32 if args.float32 else torch.float64
    lines = [f"threads={args.threads}, repeats={args.repeats}, dtype={dtype}, "
             f"points={args.points}", "",
             "| problem | jet ms (median / min) | autograd ms (median / min) | speed-up |",
             "|---|---|---|---|"]
    for name, j, a in time_derivative_routes(repeats=args.repeats, threads=args.threads,
                                             dtype=dtype, n_collocation=args.points):
        lines.append(f"| {name} | {j.median_ms:.1f} / {j.min_ms:.1f} | "
                     f"{a.median_ms:.1f} / {a.min_ms:.1f} | {a.median_ms / j.median_ms:.2f}× |")
    full, auto, layers, prefixes = time_layer_blocks(repeats=args.repeats,
                                                     threads=args.threads, dtype=dtype,
                                                     n_collocation=args.points)
    lines += ["", "| burgers gradient | ms (median / min) | vs full jet | vs full autograd "
              "| prefix ms (once per solve) |", "|---|---|---|---|---|"]
    for t, pre in [(auto, None), (full, None), *zip(layers, prefixes, strict=True)]:
        lines.append(f"| {t.label} | {t.median_ms:.1f} / {t.min_ms:.1f} | "
                     f"{t.median_ms / full.median_ms:.2f} | {t.median_ms / auto.median_ms:.2f} | "
                     + ("" if pre is None else f"{pre.median_ms:.1f}") + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    sys.stdout.write(main() + "\n")
