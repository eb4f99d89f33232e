"""Every shipped YAML under configs/ validates (run configs and suite configs), found recursively."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clift.config import load_config
from clift.suite import load_suite

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


def test_all_configs_are_collected():
    # update this count when adding a config: it guards against files silently skipped
    by_folder = {}
    for p in CONFIGS:
        by_folder[p.parent.name] = by_folder.get(p.parent.name, 0) + 1
    assert by_folder == {"configs": 1, "papers": 8, "ablations": 11, "suite": 8, "selection": 2, "accelerate": 5}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_config_validates(path):
    raw = yaml.safe_load(path.read_text())
    if path.parent.name == "accelerate":  # Accelerate config files (clift run --accelerate-config)
        from clift.engines import engine_from_accelerate_config, read_accelerate_config

        assert engine_from_accelerate_config(read_accelerate_config(path)).name in ("ddp", "fsdp", "zero2", "zero3")
    elif "base" in raw:  # a comparison-suite config (clift compare)
        assert load_suite(path).runs()
    else:
        cfg = load_config(path)
        assert cfg.method.method_name()
