"""Optimizers with gradient projections: GaLore-style low-rank projection and GORP's shared space."""

from clift.optim.adamw import ProjectedAdamW
from clift.optim.projector import (
    PROJ_TYPES,
    SVD_METHODS,
    compute_projection,
    effective_rank,
    extend_basis,
    low_rank_shape,
    project,
    project_back,
    projection_side,
    remove_shared,
)

__all__ = [
    "PROJ_TYPES",
    "SVD_METHODS",
    "ProjectedAdamW",
    "compute_projection",
    "effective_rank",
    "extend_basis",
    "low_rank_shape",
    "project",
    "project_back",
    "projection_side",
    "remove_shared",
]
