"""The run directory and its results file, ``results.json``, typed as a :class:`RunRecord`.

A run directory holds::

    config.yaml           the fully resolved configuration
    results.json          R, zero-shot row, metrics, per-task numbers, timings, budgets, versions, git SHA
    predictions.jsonl     the final evaluation's predictions (task, id, label, prediction, correct)
    adapters/<i>-<task>/  what each stage learned, in PEFT format (safetensors), loadable with PEFT

Every file is written atomically; results.json is rewritten after each stage (``status: running``), so
completed rows are never lost.

:class:`RunRecord` is the one reader and writer of results.json: the runner builds and updates it,
``report``, ``export`` and ``suite`` read it. ``RunRecord.from_json(text).to_json() == text`` for every
file clift wrote: keys keep the order the file had (a key set later goes after them, as in a dict), keys
this version does not know are kept, and missing keys take their defaults, so old files load.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import yaml

from clift.errors import DataError
from clift.io import atomic_write_text
from clift.metrics import all_metrics

RESULTS_FILE = "results.json"
CONFIG_FILE = "config.yaml"
PREDICTIONS_FILE = "predictions.jsonl"
ADAPTERS_DIR = "adapters"

_R = TypeVar("_R", bound="JsonRecord")
#: bookkeeping fields of every record: not keys of the file
_BOOKKEEPING = frozenset({"extra", "key_order"})


# ---- typed JSON records -------------------------------------------------------------------------
ZERO_SHOT_KEY = "zero_shot"


@dataclass
class JsonRecord:
    """Base of the results.json records: typed fields, in the file's key order, unknown keys kept.

    Attributes:
        extra: keys this version of clift does not know (from a newer one); written back unchanged.
        key_order: the keys in the order the file (or :meth:`put`) gave them; rewriting a loaded record
            keeps that order, so its bytes do not change. Keys not in it follow in field order.
    """

    #: fields left out of the JSON while they are None (keys that old files or unfinished runs lack)
    optional: ClassVar[frozenset[str]] = frozenset()

    extra: dict[str, Any] = field(default_factory=dict, kw_only=True, repr=False)
    key_order: list[str] = field(default_factory=list, kw_only=True, repr=False, compare=False)

    def put(self, name: str, value: Any) -> None:
        """Set field ``name`` the way a dict sets a key: a key not yet written goes after the others."""
        if name not in self.key_order:
            self.key_order = [*self.to_dict(), name] if not self.key_order else [*self.key_order, name]
        setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain JSON data, keys in file order."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _BOOKKEEPING or (value is None and f.name in self.optional):
                continue
            values[f.name] = _dump(value)
        values.update(self.extra)
        first = [k for k in self.key_order if k in values]
        return {k: values[k] for k in [*first, *(k for k in values if k not in first)]}

    @classmethod
    def from_dict(cls: type[_R], raw: Any, where: str = "") -> _R:
        """Read a record from JSON data; missing keys take their defaults, unknown keys go to ``extra``.

        Raises:
            DataError: for a value of the wrong type, naming its key path.
        """
        if not isinstance(raw, Mapping):
            raise _type_error(where.rstrip(".") or "the top level", raw, "an object")
        hints = _hints(cls)
        known = {f.name for f in fields(cls)} - _BOOKKEEPING
        kwargs = {k: _load(raw[k], hints[k], f"{where}{k}") for k in known if k in raw}
        return cls(**kwargs, extra={k: v for k, v in raw.items() if k not in known}, key_order=list(raw))


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _dump(value: Any) -> Any:
    if isinstance(value, JsonRecord):
        return value.to_dict()
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


def _type_error(where: str, value: Any, expected: str) -> DataError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return DataError(
        f"{RESULTS_FILE}: {where} must be {expected}, got {type(value).__name__} {shown}; the file was not "
        "written by clift or was edited by hand: restore it (or delete the run directory and rerun)."
    )


_SCALARS: dict[Any, tuple[str, Any]] = {
    str: ("a string", lambda v: isinstance(v, str)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    float: ("a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)),
}


def _load(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the type hint ``hint`` (records built, containers walked)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]  # the schema only uses `X | None`
        return _load(value, inner, where)
    if isinstance(hint, type) and issubclass(hint, JsonRecord):
        return hint.from_dict(value, f"{where}.")
    if origin is list:
        if not isinstance(value, list):
            raise _type_error(where, value, "a list")
        return [_load(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(where, value, "an object")
        return {k: _load(v, args[1], f"{where}.{k}") for k, v in value.items()}
    expected, ok = _SCALARS[hint]
    if not ok(value):
        raise _type_error(where, value, expected)
    return value


# ---- the parts of results.json -----------------------------------------------------------------
@dataclass
class RunInfo(JsonRecord):
    """``run``: what ran. ``model`` is the model's source (alias, path or hub id)."""

    name: str = ""
    method: str = ""
    model: str = ""
    stream: str = ""
    seed: int = 0
    needs_task_id: bool = False


@dataclass
class Budgets(JsonRecord):
    """``budgets``: the data budgets the run used (None: the whole split)."""

    train_per_task: int | None = None
    dev_per_task: int | None = None
    test_per_task: int | None = None
    max_source_length: int | None = None
    max_target_length: int | None = None
    data_seed: int | None = None


@dataclass
class StageTiming(JsonRecord):
    """One entry of ``timings.stages``: wall seconds of training and evaluation, peak memory (MiB)."""

    stage: str = ""
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    peak_memory_mb: float | None = None


@dataclass
class Timings(JsonRecord):
    """``timings``: per-stage timings and the run's wall time (seconds).

    ``total_seconds_before_resume`` is the kept work's wall time before the last resume; the work lost
    in a crash is not counted in ``total_seconds``. ``zero_shot_reused`` (present when the run was given a
    zero-shot cache, :mod:`clift.zero_shot_cache`) names the tasks whose zero-shot evaluation was read
    from it instead of computed, which is why ``zero_shot_seconds`` can be near 0.
    """

    optional: ClassVar[frozenset[str]] = frozenset(
        {"zero_shot_seconds", "zero_shot_reused", "total_seconds_before_resume", "total_seconds"}
    )

    stages: list[StageTiming] = field(default_factory=list)
    zero_shot_seconds: float | None = None
    zero_shot_reused: list[str] | None = None
    total_seconds_before_resume: float | None = None
    total_seconds: float | None = None

    def kept_seconds(self) -> float:
        """Wall time of the zero-shot row and the completed stages."""
        return (self.zero_shot_seconds or 0.0) + sum(s.train_seconds + s.eval_seconds for s in self.stages)


@dataclass
class StageTraining(JsonRecord):
    """One entry of ``training``: the stage's optimizer steps and losses, and the adapter files it saved.

    ``loss_curve`` holds the mean loss of each ``log.log_every`` steps; ``skipped_steps`` counts steps
    dropped for a non-finite loss (``train.nan_policy=skip``).
    """

    stage: str = ""
    steps: int = 0
    skipped_steps: int = 0
    examples: int = 0
    first_loss: float | None = None
    last_loss: float | None = None
    mean_extra_loss: float | None = None
    loss_curve: list[float | None] = field(default_factory=list)
    saved: list[str] = field(default_factory=list)


@dataclass
class TaskSummary(JsonRecord):
    """One entry of ``per_task``: a task's accuracy zero-shot, after its own stage, at the end, at best."""

    zero_shot: float | None = None
    after_own_stage: float | None = None
    final: float | None = None
    best: float | None = None


@dataclass
class GitInfo(JsonRecord):
    """``git``: the clift source commit and whether it had local changes (None outside a checkout)."""

    sha: str | None = None
    dirty: bool | None = None


@dataclass
class Environment(JsonRecord):
    """``environment``: where the run ran, so its wall time can be read (absent in files before it existed)."""

    device: str = ""
    torch_threads: int | None = None
    cpu_count: int | None = None
    num_processes: int = 1
    mixed_precision: str = "no"


@dataclass
class EngineInfo(JsonRecord):
    """``engine``: the distributed engine the run used (:class:`clift.engines.Engine`; absent in older files).

    Attributes:
        name: ``single``, ``ddp``, ``fsdp``, ``zero1``, ``zero2`` or ``zero3``.
        world_size: number of processes.
        shards_parameters: weights split across processes outside the forward (FSDP sharding, ZeRO-3).
        flattens_optimizer: the optimizer saw flat 1-D partitions, not each weight (ZeRO, FSDP1).
        detail: the engine's own words (``MULTI_CPU``, ``FSDP2 FULL_SHARD``, ...).
    """

    name: str = "single"
    world_size: int = 1
    shards_parameters: bool = False
    flattens_optimizer: bool = False
    detail: str = ""


@dataclass
class Resume(JsonRecord):
    """One entry of ``resumes``: the checkpoint a resumed run continued from (stage index, optimizer step)."""

    stage: int = 0
    step: int = 0


@dataclass
class MetricMatrix(JsonRecord):
    """One entry of ``by_metric``: one metric's zero-shot row, matrix R and continual metrics (percent).

    Every run records the :data:`clift.text_metrics.SECONDARY` metrics of every task next to its own
    metric, so a label stream also has "AA / R-1" (DEAL's Table 1).
    """

    zero_shot: list[float | None] | None = None
    matrix: list[list[float | None]] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class RunRecord(JsonRecord):
    """The content of ``results.json``.

    Attributes:
        status: ``running`` until the last stage is evaluated, then ``complete``.
        run: name, method, model source, stream, seed, whether evaluation needs the task id.
        kind: ``causal`` or ``seq2seq``.
        eval_mode / eval_split: how and on which split every task was evaluated.
        metric: the name of the metric in ``zero_shot``/``matrix``/``metrics``: the tasks' common metric
            (``accuracy`` for label tasks) or ``mixed`` (None in files before it existed: accuracy).
        task_metrics: each task's own metric (None in files before it existed).
        by_metric: metric name → :class:`MetricMatrix` of every secondary metric (None in old files).
        tasks: the stream's task names (the columns of R).
        stages: the completed stages' names (the rows of R).
        zero_shot: each task's own metric (%) before training (None: not evaluated).
        matrix: R, shape (completed stages, tasks), each task's own metric in percent.
        metrics: AA, BWT, FWT, forgetting (points; empty until the run is complete).
        per_task: each task's summary numbers.
        counts: examples per task and split.
        budgets: the data budgets.
        data: the data's provenance (shape depends on the source).
        timings: wall times.
        training: one log per completed stage.
        versions: Python and library versions.
        git: the clift commit.
        num_processes: data-parallel processes.
        engine: the distributed engine (None in files before it existed).
        environment: device, threads, processes, precision (None in files before it existed).
        config: the resolved configuration (``RunConfig.to_dict()``).
        method_stats: the method's own numbers (``ContinualMethod.stats()``), set after each stage.
        resumes: the checkpoints this run resumed from (None: never resumed).
        correct: per evaluated row (``"zero_shot"``, then the stage index as a string) one string of
            ``0``/``1`` per task, the correctness of each test example in evaluation order — what the
            bootstrap resamples (None in files before it existed).
        intervals: the bootstrap intervals of every cell and metric (:func:`clift.stats.bootstrap_run`),
            set when the run completes (None: not computed).
    """

    optional: ClassVar[frozenset[str]] = frozenset(
        {
            "metric",
            "task_metrics",
            "by_metric",
            "engine",
            "environment",
            "method_stats",
            "resumes",
            "correct",
            "intervals",
        }
    )

    status: str = "running"
    run: RunInfo = field(default_factory=RunInfo)
    kind: str = ""
    eval_mode: str = ""
    eval_split: str = ""
    metric: str | None = None
    task_metrics: list[str] | None = None
    by_metric: dict[str, MetricMatrix] | None = None
    tasks: list[str] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    zero_shot: list[float | None] | None = None
    matrix: list[list[float | None]] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)
    per_task: dict[str, TaskSummary] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    budgets: Budgets = field(default_factory=Budgets)
    data: dict[str, Any] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)
    training: list[StageTraining] = field(default_factory=list)
    versions: dict[str, str | None] = field(default_factory=dict)
    git: GitInfo = field(default_factory=GitInfo)
    num_processes: int = 1
    engine: EngineInfo | None = None
    environment: Environment | None = None
    config: dict[str, Any] = field(default_factory=dict)
    method_stats: dict[str, Any] | None = None
    resumes: list[Resume] | None = None
    correct: dict[str, list[str]] | None = None
    intervals: dict[str, Any] | None = None

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    def to_json(self) -> str:
        """The text of results.json (NaN/inf written as null: JSON has none)."""
        return json.dumps(_clean(self.to_dict()), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: str | Path = RESULTS_FILE) -> RunRecord:
        """Parse results.json text.

        Raises:
            DataError: if the text is not JSON, not an object, lacks ``status`` or ``run``, or a value has the
                wrong type.
        """
        from clift.integrity import parse_results_json  # one clear message for a truncated or foreign file

        return cls.from_dict(parse_results_json(text, source))

    def add_resume(self, stage: int, step: int) -> None:
        """Note that this run resumed from the checkpoint at (``stage``, ``step``)."""
        self.put("resumes", [*(self.resumes or []), Resume(stage, step)])

    def add_stage(
        self,
        name: str,
        row: list[float],
        training: StageTraining,
        timing: StageTiming,
        scores: Mapping[str, list[float]] | None = None,
    ) -> None:
        """Append a completed stage: its row of R, its training log and its timings.

        ``scores`` (metric → row) extends each ``by_metric`` matrix; a record without ``by_metric`` (a run
        from before it existed) ignores it.
        """
        self.stages.append(name)
        self.matrix.append(row)
        self.training.append(training)
        self.timings.stages.append(timing)
        for m, entry in (self.by_metric or {}).items():
            entry.matrix.append(list((scores or {})[m]))

    def set_zero_shot(self, row: list[float], scores: Mapping[str, list[float]] | None = None) -> None:
        """Store the zero-shot row of R and (``scores``: metric → row) of each ``by_metric`` entry."""
        self.zero_shot = row
        for m, entry in (self.by_metric or {}).items():
            entry.zero_shot = list((scores or {})[m])

    def drop_stages(self) -> None:
        """Forget every completed stage (keep the zero-shot rows): a crash lost the checkpoint of them."""
        self.stages, self.matrix, self.training = [], [], []
        self.timings.stages = []
        for entry in (self.by_metric or {}).values():
            entry.matrix, entry.metrics = [], {}
        if self.correct is not None:
            self.correct = {k: v for k, v in self.correct.items() if k == ZERO_SHOT_KEY}

    def add_correct(self, row: str, outcomes: list[list[bool]]) -> None:
        """Store one evaluated row's per-example correctness (``row``: ``zero_shot`` or a stage index)."""
        packed = ["".join("1" if c else "0" for c in task) for task in outcomes]
        self.put("correct", {**(self.correct or {}), row: packed})

    def correctness(self) -> tuple[list[list[np.ndarray]], list[np.ndarray] | None] | None:
        """The stored correctness as arrays: (per stage, per task) and the zero-shot row; None if incomplete."""
        if not self.correct or any(str(i) not in self.correct for i in range(len(self.matrix))):
            return None

        def arrays(packed: list[str]) -> list[np.ndarray]:
            return [np.frombuffer(p.encode(), dtype=np.uint8) - ord("0") for p in packed]

        rows = [arrays(self.correct[str(i)]) for i in range(len(self.matrix))]
        zero = self.correct.get(ZERO_SHOT_KEY)
        return rows, (arrays(zero) if zero is not None else None)

    def update_summary(self, n_stages: int, own_stage: Mapping[int, int]) -> None:
        """Recompute ``metrics`` (once all ``n_stages`` rows exist) and ``per_task``.

        Args:
            n_stages: how many stages the run has.
            own_stage: task index → index of the stage that trains it.
        """
        R, b = self.matrix, self.zero_shot
        complete = len(R) == n_stages
        self.metrics = all_metrics(R, b) if (R and complete) else {}
        for entry in (self.by_metric or {}).values():
            entry.metrics = all_metrics(entry.matrix, entry.zero_shot) if (entry.matrix and complete) else {}
        per_task = {}
        for j, task in enumerate(self.tasks):
            col = [row[j] for row in R]
            own = own_stage.get(j)
            per_task[task] = TaskSummary(
                zero_shot=b[j] if b else None,
                after_own_stage=col[own] if own is not None and own < len(col) else None,
                final=col[-1] if col and complete else None,
                best=max(col) if col else None,
            )
        self.per_task = per_task


# ---- provenance ---------------------------------------------------------------------------------
def library_versions() -> dict[str, str | None]:
    """Versions of Python and the libraries a result depends on."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("clift", "torch", "transformers", "peft", "accelerate", "numpy", "safetensors"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def runtime_environment(device: Any, num_processes: int, mixed_precision: str) -> Environment:
    """Where a run ran, so its wall time can be read: device, CPU threads and processes.

    ``torch_threads`` is ``torch.get_num_threads()`` of this process (set by ``OMP_NUM_THREADS`` or
    ``torch.set_num_threads``); on CPU, wall times are only comparable between runs with the same value.
    """
    import torch

    return Environment(
        device=str(device),
        torch_threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(),
        num_processes=num_processes,
        mixed_precision=str(mixed_precision),
    )


def git_sha() -> GitInfo:
    """The commit of the clift source tree (if it is a git checkout) and whether it had local changes."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return GitInfo()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return GitInfo(sha.stdout.strip(), bool(dirty.stdout.strip()))
    except (OSError, subprocess.SubprocessError):
        return GitInfo()


# ---- files --------------------------------------------------------------------------------------
def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf become null (JSON has no NaN)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def write_record(run_dir: Path, record: RunRecord) -> Path:
    """Write ``record`` to ``<run_dir>/results.json`` (atomically)."""
    return atomic_write_text(Path(run_dir) / RESULTS_FILE, record.to_json())


def read_record(run_dir: str | Path) -> RunRecord:
    """The :class:`RunRecord` in ``<run_dir>/results.json``.

    Raises:
        DataError: if the file is missing, unreadable, not a JSON object, lacks ``status``/``run``, or holds a
            value of the wrong type.
    """
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise DataError(f"{str(run_dir)!r} holds no {RESULTS_FILE}; give a folder written by `clift run`.")
    from clift.integrity import read_results_text

    return RunRecord.from_json(read_results_text(path), path)


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    return atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def write_predictions(run_dir: Path, rows: list[dict[str, Any]]) -> Path:
    return atomic_write_text(run_dir / PREDICTIONS_FILE, "".join(json.dumps(r) + "\n" for r in rows))


def _fmt(v: float | None, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    return f"{v:+.1f}" if signed else f"{v:.1f}"


def format_matrix(record: RunRecord) -> str:
    """The matrix R (in the run's metric) and its metrics as a plain-text table (what ``clift run`` prints)."""
    tasks, stages = record.tasks, record.stages
    width = max(8, *(len(t) for t in tasks)) + 1
    label_w = max(16, *(len(s) + 8 for s in stages))
    metric = record.metric or "accuracy"
    lines = [f"{metric} (%) — rows: after training stage, columns: evaluated task; eval mode: {record.eval_mode}"]
    lines.append("".ljust(label_w) + "".join(t.rjust(width) for t in tasks))
    if record.zero_shot is not None:
        lines.append("zero-shot".ljust(label_w) + "".join(_fmt(v).rjust(width) for v in record.zero_shot))
    for i, row in enumerate(record.matrix):
        lines.append(f"{i + 1}. {stages[i]}".ljust(label_w) + "".join(_fmt(v).rjust(width) for v in row))
    m = record.metrics
    lines.append(
        f"AA {_fmt(m.get('aa'))}   BWT {_fmt(m.get('bwt'), True)}   FWT {_fmt(m.get('fwt'), True)}   "
        f"forgetting {_fmt(m.get('forgetting'))}"
    )
    others = {k: v for k, v in (record.by_metric or {}).items() if k != metric and v.metrics}
    if others:  # e.g. "AA / R-1" for a label stream, as DEAL's Table 1 reports it
        lines.append("   ".join(f"{k}: AA {_fmt(v.metrics.get('aa'))}" for k, v in others.items()))
    return "\n".join(lines)


class RecordView:
    """Read access to a run's :class:`RunRecord` as numbers and text, for the objects that hold one
    (``clift.run``'s result, ``clift.load_run``'s run); they set ``record``."""

    record: RunRecord

    @property
    def results(self) -> dict[str, Any]:
        """results.json's content as plain data (``record.to_dict()``)."""
        return self.record.to_dict()

    @property
    def matrix(self) -> np.ndarray:
        """R as an array of shape (stages, tasks), in percent of the run's own metric."""
        return np.asarray(self.record.matrix, dtype=float)

    @property
    def metrics(self) -> dict[str, float | None]:
        """AA, BWT, FWT, forgetting (percentage points; None where undefined)."""
        return self.record.metrics

    def table(self) -> str:
        """The printed matrix and metrics (:func:`format_matrix`)."""
        return format_matrix(self.record)
