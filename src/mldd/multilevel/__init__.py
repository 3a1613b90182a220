"""mldd.multilevel: transfers, hierarchies, coarse models, cycles and nested iteration."""

from mldd.multilevel.batch_schedule import GeometricBatchSize
from mldd.multilevel.coarse_models import (
    AdditiveCoarseModel,
    HybridCoarseModel,
    MultiplicativeCoarseModel,
    build_coarse_model,
)
from mldd.multilevel.hierarchy import (
    Hierarchy,
    Level,
    coarse_depth_model,
    coarse_width_model,
    per_level,
    valid_depths,
)
from mldd.multilevel.mgopt import MGOptConfig, MGOptSolver
from mldd.multilevel.moffo import MOFFOConfig, MOFFOSolver
from mldd.multilevel.nested import NestedRecord, NestedResult, nested_iteration
from mldd.multilevel.problem import MultilevelProblem
from mldd.multilevel.rmtr import RMTRConfig, RMTRSolver
from mldd.multilevel.row_growth import RowGrowth
from mldd.multilevel.transfers import (
    DepthTransfer,
    IdentityTransfer,
    MatrixTransfer,
    SparseTransfer,
    Transfer,
    WidthTransfer,
    param_layout,
)

__all__ = [
    "AdditiveCoarseModel",
    "DepthTransfer",
    "GeometricBatchSize",
    "Hierarchy",
    "HybridCoarseModel",
    "IdentityTransfer",
    "Level",
    "MGOptConfig",
    "MGOptSolver",
    "MOFFOConfig",
    "MOFFOSolver",
    "MatrixTransfer",
    "MultilevelProblem",
    "MultiplicativeCoarseModel",
    "NestedRecord",
    "NestedResult",
    "RMTRConfig",
    "RMTRSolver",
    "RowGrowth",
    "SparseTransfer",
    "Transfer",
    "WidthTransfer",
    "build_coarse_model",
    "coarse_depth_model",
    "coarse_width_model",
    "nested_iteration",
    "param_layout",
    "per_level",
    "valid_depths",
]
