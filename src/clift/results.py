"""The run directory and its results file.

A run directory holds::

    config.yaml           the fully resolved configuration
    results.json          R, zero-shot row, metrics, per-task numbers, timings, budgets, versions, git SHA
    predictions.jsonl     the final evaluation's predictions (task, id, label, prediction, correct)
    adapters/<i>-<task>/  what each stage learned, in PEFT format (safetensors), loadable with PEFT

Every file is written atomically; results.json is rewritten after each stage (``status: running``), so
completed rows are never lost.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import yaml

from clift.io import atomic_write_text

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.jsonl"
ADAPTERS_DIR = "adapters"


def library_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("clift", "torch", "transformers", "peft", "accelerate", "numpy", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def runtime_environment(device: Any, num_processes: int, mixed_precision: str) -> dict[str, Any]:
    """Where a run ran, so its wall time can be read: device, CPU threads and processes.

    ``torch_threads`` is ``torch.get_num_threads()`` of this process (set by ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads``); on CPU, wall times are only comparable between runs with the same value.
    """
    import torch

    return {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "num_processes": num_processes,
        "mixed_precision": str(mixed_precision),
    }


def git_sha() -> dict[str, Any]:
    """The commit of the clift source tree (if it is a git checkout) and whether it had local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {"sha": sha.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_results(run_dir: Path, results: dict[str, Any]) -> Path:
    return atomic_write_text(run_dir / RESULTS_FILE, json.dumps(_clean(results), indent=2) + "\n")


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    return atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def write_predictions(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    return atomic_write_text(run_dir / PREDICTIONS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def read_results(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / RESULTS_FILE).read_text(encoding="utf-8"))


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def format_matrix(results: dict[str, Any]) -> str:
    """The accuracy matrix and metrics as a plain-text table (what ``clift run`` prints)."""
    tasks: list[str] = results["tasks"]
    stages: list[str] = results["stages"]
    R: list[list[float]] = results["matrix"]
    width = max(8, *(len(t) for t in tasks)) + 1
    label_w = max(16, *(len(s) + 8 for s in stages))
    metric = results.get("metric", "accuracy")
    lines = [f"{metric} (%) — rows: after training stage, columns: evaluated task; eval mode: {results['eval_mode']}"]
    lines.append("".ljust(label_w) + "".join(t.rjust(width) for t in tasks))
    if results.get("zero_shot") is not None:
        lines.append("zero-shot".ljust(label_w) + "".join(_fmt(v).rjust(width) for v in results["zero_shot"]))
    for i, row in enumerate(R):
        lines.append(f"{i + 1}. {stages[i]}".ljust(label_w) + "".join(_fmt(v).rjust(width) for v in row))
    m = results.get("metrics", {})
    lines.append(
        f"AA {_fmt(m.get('aa'))}   BWT {_fmt(m.get('bwt'), True)}   FWT {_fmt(m.get('fwt'), True)}   "
        f"forgetting {_fmt(m.get('forgetting'))}"
    )
    others = {k: v for k, v in results.get("by_metric", {}).items() if k != metric and v.get("metrics")}
    if others:  # e.g. "AA / R-1" for a label stream, as DEAL's Table 1 reports it
        lines.append("   ".join(f"{k}: AA {_fmt(v['metrics'].get('aa'))}" for k, v in others.items()))
    return "\n".join(lines)
