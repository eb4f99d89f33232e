"""Optimizers with gradient projections (GaLore low-rank, GORP shared space) and the one AdamW factory."""

from clift.optim.adamw import ProjectedAdamW
from clift.optim.factory import adam_kwargs, make_adamw
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
    "adam_kwargs",
    "compute_projection",
    "effective_rank",
    "extend_basis",
    "low_rank_shape",
    "make_adamw",
    "project",
    "project_back",
    "projection_side",
    "remove_shared",
]
