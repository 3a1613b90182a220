"""MOFFO vs an AdaGrad learning-rate grid with noisy mini-batch gradients, equal gradient cost.

Usage (from the repository root)::

    .venv/bin/python benchmarks/experiments/multilevel_moffo.py --budget 300 --batch 64

Every method starts from the same seeded network and sees the same sequence of mini-batches (one
batch per step, drawn without replacement from a seeded generator; a multilevel step evaluates
all its levels on that batch). Cost: fine-gradient equivalents (a coarse gradient costs its
level's share, docs/algorithms.md §1.5), so AdaGrad's cost is its number of steps. The recorded loss
is the full training loss (observer's evaluation, outside the timer). AdaGrad is
``torch.optim.Adagrad(lr, eps=0, initial_accumulator_value=1e-2)``: exactly MOFFO with one level.
"""

from __future__ import annotations

import argparse
import ast
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from multilevel_common import eval_loss, run, table

import mldd.problems
from mldd.optim import MOFFO

CONFIGS: dict[str, dict[str, Any]] = {
    "adagrad lr=0.03": {"adagrad": 0.03},
    "adagrad lr=0.1": {"adagrad": 0.1},
    "adagrad lr=0.3": {"adagrad": 0.3},
    "adagrad lr=1": {"adagrad": 1.0},
    "moffo default": {},
    "moffo 2 levels": {"levels": 2},
    "moffo 2 levels lr=0.3": {"levels": 2, "lr": 0.3},
    "moffo data 2 levels lr=0.3": {"levels": 2, "coarsen": "data", "lr": 0.3,
                                   "hierarchy_options": {"data_ratio": 0.25}},
}


class _Stepper:
    """Draws the step's mini-batch, then runs one step of the wrapped optimizer."""

    def __init__(self, step: Any) -> None:
        self._step = step
        self.k = 0
        self.last_info: dict[str, Any] = {}

    def step(self, _closure: Any) -> None:
        self.last_info = self._step() or {}
        self.k += 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problem", default="digits")
    ap.add_argument("--problem-options", default="{'width': 16, 'depth': 9, 'dtype': 'float64'}")
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    args = ap.parse_args()

    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=UserWarning)
    prob = mldd.problems.get(args.problem, **ast.literal_eval(args.problem_options))
    n = prob.n_rows(None)
    loss_of = eval_loss(lambda m: prob.loss(m))
    traces = []
    for name in args.configs.split(","):
        kw = dict(CONFIGS[name])
        model = prob.build_model(seed=0)
        gen = torch.Generator().manual_seed(123)

        def draw(gen: torch.Generator = gen) -> Any:
            return prob.select_rows(None, torch.randperm(n, generator=gen)[:args.batch])

        if "adagrad" in kw:
            opt = torch.optim.Adagrad(model.parameters(), lr=kw["adagrad"], eps=0,
                                      initial_accumulator_value=1e-2)

            def ada_step(opt: Any = opt, model: Any = model, draw: Any = draw) -> None:
                batch = draw()
                opt.zero_grad()
                prob.loss(model, batch).backward()
                opt.step()

            stepper = _Stepper(ada_step)
            traces.append(run(name, model, stepper, None, loss_of, args.budget,
                              cost_fn=lambda s: float(s.k)))
            continue
        data = "data" in str(kw.get("coarsen", ""))
        mopt = MOFFO(model.parameters(), model=model, n_rows=args.batch if data else None, **kw)

        def moffo_step(mopt: Any = mopt, draw: Any = draw, data: bool = data) -> dict[str, Any]:
            batch = draw()
            if data:
                mopt.step(lambda m, rows: prob.loss(m, prob.select_rows(batch, rows)))
            else:
                mopt.step(lambda m: prob.loss(m, batch))
            return dict(mopt.last_info)

        trace = run(name, model, _Stepper(moffo_step), None, loss_of, args.budget)
        info = mopt.last_info
        print(f"{name}: {info['iteration']} iterations, coarse steps taken/declined "
              f"{info['n_coarse_steps']}/{info['n_coarse_declined']}", flush=True)
        traces.append(trace)
    ada = [t for t in traces if t.name.startswith("adagrad")]
    best = min(ada, key=lambda t: t.final)
    print(f"\nTarget: the best AdaGrad's final loss ({best.name}: {best.final:.4g})")
    print(table(traces, best.final, best))


if __name__ == "__main__":
    main()
