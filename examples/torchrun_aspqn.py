"""Additive Schwarz-preconditioned L-BFGS (ASPQN) on several processes with ``torchrun``.

Every process holds a full replica of the network and solves the local problems of its own
layers (subdomains are dealt to the ranks by estimated cost, ``ownership="balanced"``); the
corrections are combined by ``all_reduce`` and every accept/reject decision is taken from
all-reduced numbers, so all ranks keep identical weights. The global L-BFGS steps are
data-parallel: each process evaluates the loss on its share of the collocation points and one
``all_reduce`` gives every process the whole loss and gradient. Launch::

    torchrun --standalone --nproc_per_node 2 examples/torchrun_aspqn.py --iters 15

(or let mldd launch it: ``mldd train --problem burgers --method aspqn --nproc 2``). A rank that
fails or hangs ends the whole run with an error after ``$MLDD_DIST_TIMEOUT`` seconds (default 300)
instead of a silent deadlock.
"""

from __future__ import annotations

import argparse
import time

import torch

import mldd
from mldd.decomposition.distributed import DistributedExecutor, shutdown
from mldd.problems.pinn.prefix import pinn_local_objectives


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=15, help="outer ASPQN iterations")
    parser.add_argument("--points", type=int, default=2000, help="collocation points")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one core per process

    executor = DistributedExecutor()  # joins torchrun's process group (gloo on CPU)
    problem = mldd.problems.get("burgers", n_collocation=args.points)
    model = problem.build_model(seed=0)  # the same initial weights on every rank
    opt = mldd.optim.ASPQN(
        model.parameters(), model=model, executor=executor,
        # Layer-block local losses that reuse the frozen layers below the block (PINNs only).
        local_objective=pinn_local_objectives(problem, model),
        # Global steps on this rank's share of the points, all-reduced (the loss is a mean).
        data_parallel=True, n_rows=problem.n_rows(None),
    )

    def closure(net: torch.nn.Module, rows: torch.Tensor | None) -> torch.Tensor:
        # A rows closure (see mldd.closures): the loss on rows `rows` of the points (all: None).
        return problem.loss(net, problem.select_rows(None, rows))

    t0 = time.perf_counter()
    for it in range(args.iters):  # a fixed count: every rank must take the same number of steps
        opt.step(closure)
        if executor.rank == 0 and (it % 5 == 4 or it == args.iters - 1):
            info = opt.last_info
            print(f"iteration {it + 1:3d}  loss {info['loss']:.3e}  "
                  f"rel. L2 error {problem.metric(model):.3e}  ({time.perf_counter() - t0:.1f} s)")
    if executor.rank == 0:
        print(f"{executor.world_size} processes; {executor.n_collectives} collectives, "
              f"{executor.bytes_communicated / 2**10:.0f} KiB sent by rank 0")
    # Leave together: rank 1 tearing the group down while rank 0 still evaluates its report
    # was once seen to abort (SIGABRT) in gloo's teardown, failing the whole torchrun.
    executor.barrier()
    shutdown()


if __name__ == "__main__":
    main()
