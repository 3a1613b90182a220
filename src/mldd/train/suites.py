"""Benchmark suites as data: which methods on which problems, budgets, seeds and targets.

A suite is a dict::

    {
      "description": str,
      "budget_s": float,            # per run, equal for every method (docs/benchmarks.md)
      "seeds": int,                 # seeds 0 .. seeds-1
      "threads": int,               # torch threads of each run
      "jobs": int,                  # runs at a time (worker processes; default 1)
      "dtype": "float64" | None,    # default dtype; an entry may override it
      "groups": [                   # problems that share a method list
        {"problems": {name: options},
         "methods": [{"label": str, "method": str, "options": {...}, "dtype": str?}],
         "budget_s": float,          # optional: this group's budget instead of the suite's
         "baseline": label,          # speed-ups are time_baseline / time_method
         "targets": [{"name": str, "labels": [label, ...]}]},
      ],
      "quick": {"budget_factor": 10, "problem_options": {...},
                "seeds": int?, "log_every": float?},   # optional quick-mode overrides
    }

Targets (docs/benchmarks.md): a target is the best metric the runs of ``labels`` reach within the
budget (median over seeds); with several labels, the strongest of them. For PINNs the first
target is torch L-BFGS history 3 in float64 (the papers' rule) and the second the strongest
L-BFGS configuration in the suite; for classification it is the best Adam accuracy.

``--quick`` divides every budget by ``quick.budget_factor`` and applies ``quick.problem_options``
(e.g. fewer collocation points) to the problems that accept them.

An ``adam``/``sgd`` entry with ``options.lr_grid`` runs once per learning rate; the report keeps
the learning rate with the best median final metric.
"""

from __future__ import annotations

import copy
from typing import Any

_LR_GRID = [1e-4, 1e-3, 1e-2]

# Method entries shared by several suites (a suite deep-copies what it uses).
_ADAM = {"label": "adam", "method": "adam", "options": {"lr": 1e-3}}
_ADAM_GRID = {"label": "adam", "method": "adam", "options": {"lr_grid": _LR_GRID}}
_SGD = {"label": "sgd", "method": "sgd", "options": {}}
_BEST_ADAM: list[dict[str, Any]] = [{"name": "best Adam", "labels": ["adam"]}]
_TORCH_H3 = {"label": "torch-lbfgs-h3", "method": "torch-lbfgs", "options": {"history": 3}}
_TORCH_H50 = {"label": "torch-lbfgs-h50", "method": "torch-lbfgs", "options": {"history": 50}}
_TR = {"label": "trust-region", "method": "trust-region", "options": {}}
_ADAM_LBFGS = {"label": "adam-lbfgs", "method": "adam-lbfgs", "options": {}}
# The baselines of every PINN comparison (docs/benchmarks.md) and mldd's single-level trust region.
_PINN_BASELINES = [_ADAM, _TORCH_H3, _TORCH_H50, _ADAM_LBFGS, _TR]
_MSPQN = {"label": "mspqn", "method": "mspqn", "options": {}}
_ASPQN = {"label": "aspqn", "method": "aspqn", "options": {}}
_APTS = {"label": "apts", "method": "apts", "options": {}}
# The parameter decomposition, for comparison with the default (data shards under the trainer).
_APTS_LAYERS = {"label": "apts-layers", "method": "apts", "options": {"decomposition": "layers"}}
# RMTR hierarchies measured in issue 5: a 2-level collocation/data hierarchy (coarse level on 1/8
# of the rows), a 3-level one (1/4, 1/16) and the 3-level depth hierarchy of the issue.
_RMTR_DATA2 = {"label": "rmtr-data2", "method": "rmtr",
               "options": {"coarsen": "data", "levels": 2,
                           "hierarchy_options": {"data_ratio": 0.125}}}
_RMTR_DATA3 = {"label": "rmtr-data3", "method": "rmtr",
               "options": {"coarsen": "data", "levels": 3,
                           "hierarchy_options": {"data_ratio": 0.25}}}
_RMTR_DEPTH3 = {"label": "rmtr-depth3", "method": "rmtr",
                "options": {"coarsen": "depth", "levels": 3}}
_TARGETS_H3_H50: list[dict[str, Any]] = [
    {"name": "L-BFGS h3 (float64)", "labels": ["torch-lbfgs-h3"]},
    {"name": "strongest L-BFGS", "labels": ["torch-lbfgs-h3", "torch-lbfgs-h50"]},
]

# Every PINN problem with its default (the paper's) settings.
_PINN_PROBLEMS: dict[str, dict[str, Any]] = {
    "burgers": {},
    "klein-gordon": {},
    "allen-cahn": {},
    "diffusion-advection": {},
    "poisson2d": {},
}

_PINN_METHODS: list[dict[str, Any]] = [
    _ADAM_GRID,
    _TORCH_H3,
    _TORCH_H50,
    {"label": "torch-lbfgs-h50-f32", "method": "torch-lbfgs", "options": {"history": 50},
     "dtype": "float32"},
    _ADAM_LBFGS,
    _TR,
    {"label": "lbfgs", "method": "lbfgs", "options": {}},
]

_LBFGS_TARGETS: list[dict[str, Any]] = [
    {"name": "L-BFGS h3 (float64)", "labels": ["torch-lbfgs-h3"]},
    {
        "name": "strongest L-BFGS",
        "labels": ["torch-lbfgs-h3", "torch-lbfgs-h50", "torch-lbfgs-h50-f32"],
    },
]

SUITES: dict[str, dict[str, Any]] = {
    "default": {
        "description": "Burgers: mldd trust-region and L-BFGS vs Adam and torch L-BFGS (h3, h50), "
        "45 s each, 1 seed (a few minutes)",
        "budget_s": 45.0,
        "seeds": 1,
        "threads": 2,
        "dtype": "float64",
        "groups": [
            {
                "problems": {"burgers": {}},
                "methods": [
                    _TR,
                    {"label": "lbfgs", "method": "lbfgs", "options": {}},
                    _ADAM,
                    _TORCH_H3,
                    _TORCH_H50,
                ],
                "baseline": "torch-lbfgs-h3",
                "targets": _TARGETS_H3_H50,
            }
        ],
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}},
    },
    "baselines": {
        "description": "every PINN problem × Adam (lr grid), torch L-BFGS h3/h50/h50-float32, "
        "Adam→L-BFGS, mldd TrustRegion and LBFGS; digits/MNIST-5k × Adam, SGD, TrustRegion; "
        "240 s, 2 seeds",
        "budget_s": 240.0,
        "seeds": 2,
        "threads": 2,
        "dtype": None,
        "groups": [
            {
                "problems": _PINN_PROBLEMS,
                "methods": _PINN_METHODS,
                "baseline": "torch-lbfgs-h3",
                "targets": _LBFGS_TARGETS,
            },
            {
                "problems": {"digits": {}, "mnist5k": {}},
                "methods": [
                    _ADAM_GRID,
                    _SGD,
                    {"label": "trust-region", "method": "trust-region", "options": {}},
                ],
                "baseline": "adam",
                "targets": _BEST_ADAM,
            },
        ],
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}},
    },
    "pinn-baselines": {
        "description": "the baseline table of issue 3: every PINN problem (float64, 10,000 "
        "Hammersley points, the paper's sizes) × Adam (lr 1e-3), torch L-BFGS h3/h50, "
        "Adam→L-BFGS and mldd TrustRegion (L-SR1; L-BFGS-50 + CG), 240 s, 2 seeds",
        "budget_s": 240.0,
        "seeds": 2,
        "threads": 2,
        "dtype": "float64",
        "groups": [
            {
                "problems": _PINN_PROBLEMS,
                "methods": [
                    *_PINN_BASELINES,
                    # A long L-BFGS memory as the trust-region model (Steihaug CG): the strongest
                    # mldd configuration in a 2,000-iteration Burgers pilot (rel. L2 5.5e-3 vs
                    # 1.2e-1 for L-SR1 memory 5, 2,000 points).
                    {"label": "trust-region-lbfgs50", "method": "trust-region",
                     "options": {"hessian": "lbfgs", "memory": 50}},
                ],
                "baseline": "torch-lbfgs-h3",
                "targets": _TARGETS_H3_H50,
            }
        ],
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}},
    },
    "schwarz": {
        "description": "issue 4: Schwarz-preconditioned L-BFGS and APTS against torch L-BFGS "
        "(h3, h50), mldd L-BFGS and Adam on Burgers, Klein–Gordon and Allen–Cahn (float64, "
        "10,000 Hammersley points, the paper's sizes), 240 s, 2 seeds, 2 threads in total "
        "(ASPQN on 2 processes gets 1 thread each)",
        "budget_s": 240.0,
        "seeds": 2,
        "threads": 2,
        "dtype": "float64",
        "groups": [
            {
                "problems": {"burgers": {}, "klein-gordon": {}, "allen-cahn": {}},
                "methods": [
                    _ADAM,
                    _TORCH_H3,
                    _TORCH_H50,
                    {"label": "lbfgs", "method": "lbfgs", "options": {}},
                    _MSPQN,
                    # The paper's settings [KKKK24]: 50 local iterations, restarted local
                    # memories, global memory 3, one global step per sweep.
                    {"label": "mspqn-paper", "method": "mspqn",
                     "options": {"local_iters": 50, "keep_local_memory": False, "memory": 3,
                                 "global_iters": 1}},
                    _ASPQN,
                    {**_ASPQN, "label": "aspqn-2proc", "nproc": 2},
                    # Hybrid Schwarz: each process sweeps its subdomains multiplicatively.
                    {"label": "aspqn-sweep-2proc", "method": "aspqn",
                     "options": {"local_sweep": True}, "nproc": 2},
                    # The global phase as a trust region on the L-BFGS model (the strongest
                    # single-level PINN configuration, TrustRegion(hessian="lbfgs", memory=50)).
                    {"label": "mspqn-tr", "method": "mspqn",
                     "options": {"globalization": "trust_region"}},
                    {"label": "aspqn-sweep-tr-2proc", "method": "aspqn",
                     "options": {"local_sweep": True, "globalization": "trust_region"},
                     "nproc": 2},
                    _APTS,
                ],
                "baseline": "torch-lbfgs-h3",
                "targets": _TARGETS_H3_H50,
            }
        ],
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}},
    },
    "apts-classification": {
        "description": "issue 4: APTS (default settings, i.e. data shards, and layer blocks; "
        "no learning rate) against Adam (4-value lr grid) and SGD on digits and MNIST-5k, "
        "60 s, 2 seeds",
        "budget_s": 60.0,
        "seeds": 2,
        "threads": 2,
        "dtype": None,
        "groups": [
            {
                "problems": {"digits": {}, "mnist5k": {}},
                "methods": [
                    {"label": "adam", "method": "adam",
                     "options": {"lr_grid": [1e-4, 1e-3, 1e-2, 1e-1]}},
                    _SGD,
                    _APTS,
                    _APTS_LAYERS,
                ],
                "baseline": "adam",
                "targets": _BEST_ADAM,
            }
        ],
        "quick": {"budget_factor": 10, "problem_options": {}},
    },
    "multilevel": {
        "description": "issue 5: RMTR (collocation/data and depth hierarchies) against "
        "single-level TrustRegion, Adam and SGD on Burgers and Allen–Cahn (residual network "
        "20×9, 10,000 points) and on digits (residual 16×33) and MNIST-5k (residual 32×9), "
        "float64; MOFFO against an AdaGrad lr grid with mini-batches of 64 on digits (residual "
        "16×9) and MNIST-5k (residual 32×9); "
        "240 s, 2 seeds",
        "budget_s": 240.0,
        "seeds": 2,
        "threads": 2,
        "dtype": "float64",
        "groups": [
            {
                "problems": {
                    "burgers": {"network": "resmlp", "width": 20, "depth": 9},
                    "allen-cahn": {"network": "resmlp", "width": 20, "depth": 9},
                },
                "methods": [_TR, _RMTR_DATA2, _RMTR_DATA3, _RMTR_DEPTH3, _ADAM],
                "baseline": "trust-region",
                "targets": [{"name": "TrustRegion", "labels": ["trust-region"]}],
            },
            {
                "problems": {
                    "digits": {"width": 16, "depth": 33},
                    "mnist5k": {"width": 32, "depth": 9},
                },
                "methods": [
                    _TR, _RMTR_DATA2, _RMTR_DEPTH3,
                    {"label": "rmtr-depth3-hybrid", "method": "rmtr",
                     "options": {"coarsen": "depth", "levels": 3, "coarse_model": "hybrid"}},
                    _ADAM_GRID,
                    _SGD,
                ],
                "baseline": "trust-region",
                "targets": [{"name": "TrustRegion", "labels": ["trust-region"]}],
            },
            {
                "problems": {"digits": {"width": 16, "depth": 9},
                             "mnist5k": {"width": 32, "depth": 9}},
                "methods": [
                    {"label": "adagrad", "method": "adagrad",
                     "options": {"lr_grid": [0.03, 0.1, 0.3, 1.0], "batch_size": 64}},
                    {"label": "moffo", "method": "moffo", "options": {"batch_size": 64}},
                    {"label": "adam", "method": "adam", "options": {"lr": 1e-3, "batch_size": 64}},
                ],
                "baseline": "adagrad",
                "targets": [{"name": "best AdaGrad", "labels": ["adagrad"]}],
            },
        ],
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}},
    },
    "paper": {
        "description": "the evidence of issue 6: every mldd method family against the baselines "
        "on the PINN problems of the SPQN paper (Burgers, Klein–Gordon, Allen–Cahn, "
        "diffusion–advection; float64, 10,000 Hammersley points, the paper's network sizes) "
        "and on digits and MNIST-5k; equal budget per run, 2 seeds, 1 thread per run and 2 "
        "runs at a time on the 2-core machine",
        "budget_s": 120.0,
        "seeds": 2,
        "threads": 1,
        "jobs": 2,
        "dtype": "float64",
        "groups": [
            {
                "problems": {"burgers": {}, "klein-gordon": {}, "allen-cahn": {},
                             "diffusion-advection": {}},
                "methods": [
                    *_PINN_BASELINES,
                    _MSPQN,
                    _ASPQN,
                    _APTS,
                    {**_RMTR_DATA2, "label": "rmtr"},
                ],
                "baseline": "torch-lbfgs-h3",
                "targets": _TARGETS_H3_H50,
            },
            {
                "problems": {"digits": {}, "mnist5k": {}},
                # Full-batch training on these small sets converges within seconds.
                "budget_s": 30.0,
                "methods": [
                    _ADAM_GRID,
                    _SGD,
                    _TR,
                    _APTS,
                    _APTS_LAYERS,
                    {**_RMTR_DATA2, "label": "rmtr"},
                ],
                "baseline": "adam",
                "targets": _BEST_ADAM,
            },
        ],
        # Quick: one seed, and a metric row every 0.5 s (the reference-grid evaluations of
        # ~50 rows per 9-second run would cost more wall time than the training itself).
        "quick": {"budget_factor": 10, "problem_options": {"n_collocation": 2000}, "seeds": 1,
                  "log_every": 0.5},
    },
    "smoke": {
        "description": "tiny: Poisson 2-D with 500 collocation points, 3 s per run (for tests)",
        "budget_s": 3.0,
        "seeds": 1,
        "threads": 2,
        "dtype": None,
        "groups": [
            {
                "problems": {"poisson2d": {"n_collocation": 500}},
                "methods": [
                    {"label": "adam", "method": "adam", "options": {"lr": 1e-3}},
                    {"label": "torch-lbfgs-h3", "method": "torch-lbfgs", "options": {"history": 3}},
                    {"label": "torch-lbfgs-h50", "method": "torch-lbfgs",
                     "options": {"history": 50}},
                ],
                "baseline": "torch-lbfgs-h3",
                "targets": _LBFGS_TARGETS[:1],
            }
        ],
        "quick": {"budget_factor": 3, "problem_options": {}},
    },
}


def register_suite(name: str, suite: dict[str, Any]) -> None:
    """Make ``suite`` (the structure of the module docstring) available as ``mldd bench NAME``.

    For a module given to ``mldd bench --import``: it can register its problems, methods and a
    suite that uses them.

    Raises:
        ValueError: the name is taken, or the suite's structure is wrong (see
            :func:`check_suite`).
    """
    if name in SUITES or name in ("core", "parallel"):
        raise ValueError(f"suite {name!r} already exists")
    check_suite(suite)
    SUITES[name] = copy.deepcopy(suite)


def available_suites() -> list[str]:
    """Suite names, sorted."""
    return sorted(SUITES)


def get_suite(name: str) -> dict[str, Any]:
    """A deep copy of suite ``name``.

    Raises:
        KeyError: unknown name (the message lists the known suites).
    """
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(available_suites())}")
    return copy.deepcopy(SUITES[name])


def check_suite(suite: dict[str, Any]) -> None:
    """Check a suite's structure (labels unique per group, baselines and targets defined).

    Raises:
        ValueError: naming what is wrong.
    """
    allowed = {"description", "budget_s", "seeds", "threads", "dtype", "groups", "quick", "name",
               "log_every", "jobs"}
    for k in suite:
        if k not in allowed:
            raise ValueError(f"suite: unknown key {k!r}; allowed: {', '.join(sorted(allowed))}")
    if not suite.get("groups"):
        raise ValueError("suite: needs at least one group")
    for i, g in enumerate(suite["groups"]):
        labels = [m["label"] for m in g["methods"]]
        if len(set(labels)) != len(labels):
            raise ValueError(f"suite group {i}: duplicate method labels {labels}")
        for key in ("baseline",):
            if g.get(key) is not None and g[key] not in labels:
                raise ValueError(f"suite group {i}: {key} {g[key]!r} is not one of {labels}")
        for t in g.get("targets", []):
            for lab in t["labels"]:
                if lab not in labels:
                    raise ValueError(f"suite group {i}: target label {lab!r} not in {labels}")


def filter_suite(
    suite: dict[str, Any], problems: list[str] | None = None, methods: list[str] | None = None
) -> dict[str, Any]:
    """A copy of ``suite`` restricted to the given problem names and method labels.

    Groups left without problems or methods are dropped; targets keep only labels that remain
    (a target with none left is dropped, so its time-to-target column disappears).

    Raises:
        ValueError: for a name that the suite does not contain (the message lists those it does).
    """
    spec = copy.deepcopy(suite)
    known_p = {p for g in spec["groups"] for p in g["problems"]}
    known_m = {m["label"] for g in spec["groups"] for m in g["methods"]}
    for kind, wanted, known in (("problem", problems, known_p), ("method", methods, known_m)):
        bad = sorted(set(wanted or []) - known)
        if bad:
            raise ValueError(f"unknown {kind} {', '.join(map(repr, bad))} for this suite; "
                             f"it has: {', '.join(sorted(known))}")
    groups = []
    for g in spec["groups"]:
        if problems is not None:
            g["problems"] = {k: v for k, v in g["problems"].items() if k in problems}
        if methods is not None:
            g["methods"] = [m for m in g["methods"] if m["label"] in methods]
        if not g["problems"] or not g["methods"]:
            continue
        labels = {m["label"] for m in g["methods"]}
        g["targets"] = [dict(t, labels=[x for x in t["labels"] if x in labels])
                        for t in g.get("targets", [])]
        g["targets"] = [t for t in g["targets"] if t["labels"]]
        if g.get("baseline") not in labels:
            g["baseline"] = g["methods"][0]["label"]
        groups.append(g)
    if not groups:
        raise ValueError("the selection leaves no problem × method pair to run")
    spec["groups"] = groups
    return spec
