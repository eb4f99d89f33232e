"""Checks of run-config values that the type schema accepts but that would fail (or misbehave) later.

Called from :meth:`clift.config.RunConfig.from_dict` so ``clift validate`` reports them too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clift.safety import name_problems, shorten

SEED_MAX = 2**32 - 1  # NumPy's generator takes seeds in [0, 2**32 - 1]


def seed_problems(value: Any, key: str) -> list[str]:
    """A seed outside ``[0, 2**32 - 1]`` (NumPy refuses it when the run starts)."""
    if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= SEED_MAX:
        return [f"{key}: got {shorten(value)}; a seed must be an integer from 0 to {SEED_MAX}. Use e.g. {key}=42."]
    return []


def run_problems(raw: Mapping[str, Any]) -> list[str]:
    """Problems with the top-level ``name`` and the seeds of a raw run-config mapping."""
    data = raw.get("data")
    data_seed = data.get("seed") if isinstance(data, Mapping) else None
    return [
        *name_problems(raw.get("name")),
        *seed_problems(raw.get("seed"), "seed"),
        *seed_problems(data_seed, "data.seed"),
    ]


def fill_method_name(method_raw: Any) -> Any:
    """A ``method`` section without ``name`` means the default method (seq_lora), so ``method.r=0`` alone
    reports the problem with ``r``, not a missing name."""
    if isinstance(method_raw, dict) and "name" not in method_raw:
        return {"name": "seq_lora", **method_raw}
    return method_raw
