"""Getting a finished run back: ``clift.load_run(run_dir)`` → the final model, tokenizer, config, results.

The model is rebuilt from the run directory alone (``config.yaml`` and the final checkpoint; see
:func:`clift.export.rebuild_final_model`, which
replays the run with :func:`clift.lifecycle.rebuild`), so it works in a new process, long after the run::

    run = clift.load_run("runs/my-run")
    print(run.table())
    out = run.model.generate(**run.tokenizer("Task:SC ...", return_tensors="pt"))

The base model of a built-in alias loads with ``clift.models.load_model("smollm2-135m")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from clift.config import RunConfig
from clift.results import CONFIG_FILE, RecordView, RunRecord


@dataclass
class LoadedRun(RecordView):
    """A finished run, loaded.

    Attributes:
        run_dir: the run directory.
        model: the final model in eval mode: a ``PeftModel`` for adapter methods (``merged=False``), or
            the base model with the adapters merged into its weights (``merged=True``).
        tokenizer: its tokenizer.
        config: the run's configuration.
        record: the run's results.json.
        method: the continual method with its final state (task routing, etc.).
    """

    run_dir: Path
    model: nn.Module
    tokenizer: Any
    config: RunConfig
    record: RunRecord
    method: Any = None


def load_run(run_dir: str | Path, merged: bool = False) -> LoadedRun:
    """Load a complete run's final model, tokenizer, config and results.

    Args:
        run_dir: the folder ``clift run`` wrote.
        merged: merge the adapters into the base weights (a plain transformers model).

    Raises:
        CliftError: when the folder is not a complete run, or ``merged`` is asked of a method whose
            modules cannot be merged.
    """
    from clift.config import load_config
    from clift.export import merge_adapters, rebuild_final_model

    rebuilt = rebuild_final_model(run_dir)
    model = merge_adapters(rebuilt, run_dir) if merged else rebuilt.model
    cfg = load_config(Path(run_dir) / CONFIG_FILE)
    return LoadedRun(Path(run_dir), model, rebuilt.tokenizer, cfg, rebuilt.record, rebuilt.method)
