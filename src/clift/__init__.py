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
    from clift.runner import RunResult


def run(config: Any, overrides: Any = (), **kwargs: Any) -> RunResult:
    """Run a continual task stream (see :func:`clift.runner.run`)."""
    from clift.runner import run as _run

    return _run(config, overrides, **kwargs)


__all__ = ["__version__", "run"]
