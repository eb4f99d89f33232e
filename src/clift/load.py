"""Getting a finished run back: ``clift.load_run(run_dir)`` → the final model, tokenizer, config, results.

The model is rebuilt from the run directory alone (``config.yaml`` and the final checkpoint; see
:func:`clift.export.rebuild_final_model`), so it works in a new process, long after the run::

    run = clift.load_run("runs/my-run")
    print(run.table())
    out = run.model.generate(**run.tokenizer("Task:SC ...", return_tensors="pt"))

The base model of a built-in alias loads with ``clift.models.load_model("smollm2-135m")``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from clift.config import RunConfig
from clift.errors import CliftError


@dataclass
class LoadedRun:
    """A finished run, loaded.

    Attributes:
        run_dir: the run directory.
        model: the final model in eval mode: a ``PeftModel`` for adapter methods (``merged=False``), or
            the base model with the adapters merged into its weights (``merged=True``).
        tokenizer: its tokenizer.
        config: the run's configuration.
        results: the content of results.json.
        method: the continual method with its final state (task routing, etc.).
    """

    run_dir: Path
    model: nn.Module
    tokenizer: Any
    config: RunConfig
    results: dict[str, Any]
    method: Any = None

    @property
    def matrix(self) -> np.ndarray:
        """R (stages × tasks) in percent, of the run's own metric."""
        return np.asarray(self.results["matrix"], dtype=float)

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.results["metrics"]

    def table(self) -> str:
        from clift.results import format_matrix

        return format_matrix(self.results)


def load_run(run_dir: str | Path, merged: bool = False) -> LoadedRun:
    """Load a complete run's final model, tokenizer, config and results.

    Args:
        run_dir: the folder ``clift run`` wrote.
        merged: merge the adapters into the base weights (a plain transformers model).

    Raises:
        CliftError: when the folder is not a complete run, or ``merged`` is asked of a method whose
            modules cannot be merged.
    """
    from peft import PeftModel

    from clift.config import load_config
    from clift.export import rebuild_final_model

    rebuilt = rebuild_final_model(run_dir)
    model = rebuilt.model
    if merged and isinstance(model, PeftModel):
        if not getattr(rebuilt.method, "mergeable", True):
            raise CliftError(
                f"method {rebuilt.results['run']['method']!r} has modules that cannot be merged into the weights; "
                "load it with merged=False."
            )
        model = model.merge_and_unload()
        model.eval()
    cfg = load_config(Path(run_dir) / "config.yaml")
    return LoadedRun(Path(run_dir), model, rebuilt.tokenizer, cfg, rebuilt.results, rebuilt.method)


def loadable_base_name(model_name: str) -> str:
    """What an exported adapter's ``base_model_name_or_path`` should say: a hub id as given, a local
    folder as an absolute path, a built-in alias as its name (loaded by ``clift.models.load_model``)."""
    path = Path(model_name).expanduser()
    if path.exists():
        return str(path.resolve())
    return model_name


def set_base_model(folder: Path, model_name: str) -> None:
    """Write ``base_model_name_or_path`` into every ``adapter_config.json`` under ``folder``."""
    from clift.io import atomic_write_json

    base = loadable_base_name(model_name)
    for cfg_file in sorted(Path(folder).rglob("adapter_config.json")):
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = base
        atomic_write_json(cfg_file, data)
