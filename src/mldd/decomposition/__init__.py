"""mldd.decomposition: subdomains of the parameters (and shards of the data), local objectives,
Schwarz combinations and the executors that run subdomains serially or across processes.

See docs/algorithms.md §3: :class:`Decomposition` (index sets ``S_s`` with restriction/extension and
partition-of-unity weights), :class:`SubspaceObjective` (``f`` restricted to one subdomain),
the SPQN core (:mod:`mldd.decomposition.spqn`) and the executors.
"""

from mldd.decomposition.apts import APTSConfig, APTSSolver
from mldd.decomposition.executors import Executor, ExecutorError, SerialExecutor
from mldd.decomposition.local import (
    LocalSolve,
    ParamsSubspaceObjective,
    SubspaceObjective,
    lbfgs_iterations,
    local_objective,
)
from mldd.decomposition.spqn import GlobalStep, SPQNConfig, SPQNSolver
from mldd.decomposition.subdomains import (
    Decomposition,
    ParamLayout,
    Segment,
    Subdomain,
    data_shards,
)
from mldd.decomposition.two_level import bias_space, first_layers_space, layer_space

__all__ = [
    "APTSConfig",
    "APTSSolver",
    "Decomposition",
    "Executor",
    "ExecutorError",
    "GlobalStep",
    "LocalSolve",
    "ParamLayout",
    "ParamsSubspaceObjective",
    "SPQNConfig",
    "SPQNSolver",
    "Segment",
    "SerialExecutor",
    "Subdomain",
    "SubspaceObjective",
    "bias_space",
    "data_shards",
    "first_layers_space",
    "layer_space",
    "lbfgs_iterations",
    "local_objective",
]
