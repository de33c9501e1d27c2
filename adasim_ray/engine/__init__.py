"""The AdaSim bootstrapping engine (Sections 3.3 and 3.4 of the paper), in plain PyTorch.

No Ray here: the Ray layer (``adasim_ray.train``) puts :class:`BootstrapShard` s in actors.
"""

from adasim_ray.engine.agreement import (
    NEAR_TIE,
    EngineAgreement,
    RowCounts,
    TopKComparison,
    compare_topk,
)
from adasim_ray.engine.cache import SimilarityCache, TopK, merge_topk
from adasim_ray.engine.config import MODES, BootstrapConfig
from adasim_ray.engine.oracle import ClassMembers, oracle_partners, standard_pair_probability
from adasim_ray.engine.partners import PlanStats, plan_window
from adasim_ray.engine.shard import Bootstrapper, BootstrapShard, shard_ranges
from adasim_ray.engine.window import NeighbourWindow

__all__ = [
    "MODES",
    "NEAR_TIE",
    "BootstrapConfig",
    "BootstrapShard",
    "Bootstrapper",
    "ClassMembers",
    "EngineAgreement",
    "NeighbourWindow",
    "PlanStats",
    "RowCounts",
    "SimilarityCache",
    "TopK",
    "TopKComparison",
    "compare_topk",
    "merge_topk",
    "oracle_partners",
    "plan_window",
    "shard_ranges",
    "standard_pair_probability",
]
