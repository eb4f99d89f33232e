"""Reusing a zero-shot evaluation across the runs of a suite.

The zero-shot row evaluates the *base* model before any method touches it, so two runs that share the
model's weights, the tokenizer, the prompt format, the evaluation settings and a task's evaluated
examples compute the same row entry whatever their method, seed or task order. A suite of 11 methods ×
3 orders × 2 seeds would otherwise evaluate the same base model 66 times (on SmolLM2 about a tenth of a
run's wall time). The cache stores one :class:`~clift.evaluation.TaskEval` per key, as JSON; the key is
a SHA-256 over everything the evaluation reads (:func:`evaluation_context` and :func:`task_key`), so an
edited example, another eval mode or a changed weight file is a miss, never a stale hit.

What it does not cover: floating-point differences between thread counts or machines. A computed
zero-shot row already depends on those (rarely: a near-tie in greedy decoding), and a cached one is
one such computation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clift.data.task import Example, Task
from clift.evaluation import TaskEval
from clift.io import atomic_write_json
from clift.results import library_versions

log = logging.getLogger(__name__)

#: bumped whenever what a cached entry holds, or how the key is made, changes
CACHE_FORMAT = 1

_EVAL_FIELDS = ("mode", "score_norm", "batch_size", "max_new_tokens")
_TASK_SPLITS = ("train", "dev", "test")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over every tensor of ``model.state_dict()``: name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def tokenizer_digest(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's full definition (fast tokenizers) or vocabulary, plus its chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return _sha(body + "\x00" + str(getattr(tokenizer, "chat_template", None)))


def evaluation_context(
    model: nn.Module, tokenizer: Any, config: Any, device: str, mixed_precision: str
) -> dict[str, Any]:
    """What a zero-shot evaluation reads besides the task: weights, tokenizer, prompt, eval settings.

    Args:
        model: the base model (before any method wraps it).
        tokenizer: its tokenizer.
        config: the run's :class:`~clift.config.RunConfig`.
        device: the device type evaluation runs on (``cpu``, ``cuda``).
        mixed_precision: Accelerate's mixed-precision mode.

    Returns:
        A JSON-able mapping; :func:`task_key` hashes it with the task.
    """
    return {
        "format": CACHE_FORMAT,
        # clift's and its libraries' versions: a new transformers may decode differently
        "versions": library_versions(),
        "model": json.loads(json.dumps(asdict(config.model), default=str)),
        "weights": weights_digest(model),
        "tokenizer": tokenizer_digest(tokenizer),
        "prompt": config.data.prompt,
        "max_source_length": config.data.max_source_length,
        "max_target_length": config.data.max_target_length,
        "eval": {k: getattr(config.eval, k) for k in _EVAL_FIELDS},
        "device": device,
        "mixed_precision": str(mixed_precision),
    }


def task_key(context: dict[str, Any], task: Task, examples: list[Example]) -> str:
    """The cache key of evaluating ``examples`` of ``task`` under ``context`` (64 hex digits).

    The task's fields (name, instruction, labels, metric, ...) enter, its splits do not: only the
    examples actually evaluated do, in order.
    """
    about = {f.name: getattr(task, f.name) for f in fields(task) if f.name not in _TASK_SPLITS}
    payload = {
        "context": context,
        "task": json.loads(json.dumps(about, default=str)),
        "examples": [asdict(ex) for ex in examples],
    }
    return _sha(json.dumps(payload, sort_keys=True))


class ZeroShotCache:
    """A folder of cached zero-shot evaluations, one JSON file per key.

    Args:
        directory: the folder (created on the first write); a suite uses ``<output_dir>/.zero-shot``.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> TaskEval | None:
        """The cached evaluation for ``key``, or None (also for an unreadable entry, which is then recomputed)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("key") != key:
                raise ValueError(f"holds key {data.get('key')!r}")
            return TaskEval(**data["eval"])
        except (OSError, ValueError, TypeError, KeyError) as err:
            log.warning("zero-shot cache entry %s is unreadable (%s); evaluating again", path, err)
            return None

    def put(self, key: str, evaluation: TaskEval, task: str) -> Path | None:
        """Store ``evaluation`` under ``key`` (atomic write); ``task`` names it for a reader of the file.

        A cache that cannot be written costs only the saving: the run goes on, with a warning.
        """
        try:
            return atomic_write_json(self._path(key), {"key": key, "task": task, "eval": asdict(evaluation)})
        except OSError as err:
            log.warning("zero-shot cache %s cannot be written (%s); the run goes on without it", self.directory, err)
            return None
