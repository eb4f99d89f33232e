"""clift — Continual Low-rank Fine-Tuning.

Run a stream of tasks through a continual method, evaluate every task after every stage, and get the
accuracy matrix and the continual-learning metrics::

    import clift
    result = clift.run("configs/quickstart.yaml")
    print(result.table())
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from clift.load import LoadedRun
    from clift.runner import RunResult


def run(config: Any, overrides: Any = (), **kwargs: Any) -> RunResult:
    """Run a continual task stream (see :func:`clift.runner.run`)."""
    from clift.runner import run as _run

    return _run(config, overrides, **kwargs)


def load_run(run_dir: Any, merged: bool = False) -> LoadedRun:
    """A finished run's final model, tokenizer, config and results (see :func:`clift.load.load_run`)."""
    from clift.load import load_run as _load_run

    return _load_run(run_dir, merged)


__all__ = ["__version__", "load_run", "run"]
