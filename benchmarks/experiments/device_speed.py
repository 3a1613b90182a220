"""PINN training speed on the CPU and on a CUDA GPU: one loss gradient, and whole optimizer steps.

Usage (from the repository root; the ``cuda`` rows need a GPU)::

    .venv/bin/python benchmarks/experiments/device_speed.py --devices cpu,cuda \\
        --points 10000,100000 --threads 2 --save gpu.json

For each problem (the paper's networks, float64 by default), number of collocation points and
device, the script reports

* ``grad ms``: the median time of one loss and gradient (forward jets, the default route);
* ``TR ms/step``: the median time of a :class:`mldd.optim.TrustRegion` step (L-SR1 + OBS);
* ``RMTR ms/step``: the median time of an :class:`mldd.optim.RMTR` cycle on a 2-level
  collocation hierarchy (coarse level on 1/8 of the points);
* the loss after ``--steps`` steps of each, which must agree across devices up to rounding
  (the same points and the same initial weights on every device).

Every CUDA timing ends with ``torch.cuda.synchronize()``; the optimizers read the loss as a
Python float each step, which synchronises as well. ``--threads`` pins the CPU's torch threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

import mldd.problems
from mldd.optim import RMTR, TrustRegion


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_ms(fn: Callable[[], Any], device: str, repeats: int) -> float:
    fn()  # warm-up: allocator, kernels, caches
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def _steps(opt: torch.optim.Optimizer, closure: Callable[..., Any], device: str,
           steps: int) -> tuple[float, float]:
    """Median ms per step (after one warm-up step) and the final loss."""
    times = []
    loss = float(opt.step(closure))
    for _ in range(steps - 1):
        _sync(device)
        t0 = time.perf_counter()
        loss = float(opt.step(closure))
        _sync(device)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times), loss


def measure(name: str, n: int, device: str, dtype: str, steps: int,
            repeats: int) -> dict[str, Any]:
    """One row of the table."""
    problem = mldd.problems.get(name, n_collocation=n, device=device,
                                dtype=getattr(torch, dtype))
    model = problem.build_model(seed=0)
    params = list(model.parameters())

    def grad() -> None:
        torch.autograd.grad(problem.loss(model), params)

    row: dict[str, Any] = {"problem": name, "points": n, "device": device, "dtype": dtype,
                           "params": sum(p.numel() for p in params),
                           "grad_ms": _median_ms(grad, device, repeats)}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    tr = TrustRegion(params)
    row["tr_ms"], row["tr_loss"] = _steps(tr, lambda: problem.loss(model), device, steps)
    model.load_state_dict(state)
    rmtr = RMTR(params, model=model, levels=2, coarsen="data", n_rows=n,
                hierarchy_options={"data_ratio": 0.125})

    def rows_closure(m: torch.nn.Module, rows: torch.Tensor | None = None) -> torch.Tensor:
        return problem.loss(m, problem.select_rows(None, rows))

    row["rmtr_ms"], row["rmtr_loss"] = _steps(rmtr, rows_closure, device, max(steps // 3, 2))
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table; speed-ups are relative to the CPU row of the same problem and size."""
    lines = ["| problem | points | device | grad ms | TR ms/step | RMTR ms/cycle | "
             "speed-up (grad, TR, RMTR) | TR loss | RMTR loss |",
             "|---|---:|---|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        cpu = next((c for c in rows if c["device"] == "cpu" and c["problem"] == r["problem"]
                    and c["points"] == r["points"] and c["dtype"] == r["dtype"]), None)
        up = "–" if cpu is None or cpu is r else ", ".join(
            f"{cpu[k] / r[k]:.1f}×" for k in ("grad_ms", "tr_ms", "rmtr_ms"))
        lines.append(f"| {r['problem']} | {r['points']:,} | {r['device']} | {r['grad_ms']:.1f} | "
                     f"{r['tr_ms']:.1f} | {r['rmtr_ms']:.1f} | {up} | {r['tr_loss']:.4g} | "
                     f"{r['rmtr_loss']:.4g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--problems", default="burgers,allen-cahn,klein-gordon")
    ap.add_argument("--points", default="10000,100000")
    ap.add_argument("--devices", default="cpu,cuda")
    ap.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", default=None, help="write the rows as JSON")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.problems.split(","):
        for n in (int(v) for v in args.points.split(",")):
            for device in args.devices.split(","):
                rows.append(measure(name, n, device, args.dtype, args.steps, args.repeats))
                print(json.dumps(rows[-1]), flush=True)
    env = {"torch": torch.__version__, "threads": args.threads,
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    print(env)
    print(table(rows))
    if args.save:
        with open(args.save, "w") as fh:
            json.dump({"env": env, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    main()
