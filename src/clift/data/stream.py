"""The stream loader: a run's data section → the :class:`~clift.data.task.Stream` it trains on, and its provenance.

Where the examples come from, in order of precedence:

* ``data.stream`` set: a user stream YAML (:mod:`clift.data.user_stream`);
* ``data.data_dir`` set: an upstream ``CL_Benchmark`` folder, split by the rules of :mod:`clift.data.carve`;
* the benchmark's own ``source: {folder: ...}`` (the shipped ``fixture``), same rules;
* otherwise the embedded pack (:mod:`clift.data.pack`).

Budgets (``train_per_task``, ``dev_per_task``, ``test_per_task``) are applied last, with
``subsample(examples, n, seed, key=f"{task}/{split}")``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clift.data.carve import label_counts
from clift.data.catalog import get_benchmark
from clift.data.sources import FolderSource, source_for
from clift.data.specs import BenchmarkSpec, apply_budgets
from clift.data.task import SPLITS, Stream
from clift.data.user_stream import load_user_stream, user_stream_provenance
from clift.errors import DataError

if TYPE_CHECKING:
    from clift.config import DataConfig


def _effective_seed(data: DataConfig, seed: int | None) -> int:
    if data.seed is not None:
        return data.seed
    return 0 if seed is None else seed


def resolve_benchmark(data: DataConfig) -> tuple[BenchmarkSpec, str, tuple[str, ...]]:
    """``(benchmark, stream label, task names)`` for a benchmark-based data config.

    Raises:
        RegistryError: unknown benchmark. ConfigError: unknown order or task.
    """
    bench = get_benchmark(data.benchmark)
    label, names = bench.select(data.order, data.tasks)
    return bench, label, names


def load_stream(data: DataConfig, seed: int | None = None) -> Stream:
    """Build the task stream a run trains on.

    Args:
        data: the run's data section. ``data.stream`` (a user stream YAML) wins over
            ``data.benchmark``; ``data.data_dir`` (an upstream ``CL_Benchmark`` folder) replaces the
            embedded pack; ``data.tasks`` replaces ``data.order``.
        seed: the run's seed, used for the budget selections unless ``data.seed`` is set.

    Returns:
        A :class:`Stream` named ``<benchmark>/<order>`` (``standard-proxy/o1``) or after the user stream.

    Raises:
        RegistryError: unknown benchmark (with near matches and the available names).
        ConfigError: unknown order or task.
        DataError: data missing (one error naming every missing task and file, and the fix) or malformed.
    """
    eff_seed = _effective_seed(data, seed)
    if data.stream:
        return load_user_stream(data.stream, data, eff_seed)
    bench, label, names = resolve_benchmark(data)
    source = source_for(bench, data)
    specs = [bench.task_specs[n] for n in names]
    missing = source.missing(specs)
    if missing:
        lines = "\n".join(f"  - {task}: {why}" for task, why in missing.items())
        if isinstance(source, FolderSource):
            where = f"data_dir {source.root}" if source.kind == "upstream" else f"folder {source.root}"
        else:
            where = "the embedded data pack"
        raise DataError(
            f"benchmark {bench.name!r} ({label}) needs {len(missing)} task(s) that {where} does not have:\n"
            f"{lines}\n" + source.fix_hint(_missing_files(bench, missing), bench.name)
        )
    tasks = [apply_budgets(spec, source.splits(spec), data, eff_seed) for spec in specs]
    return Stream(name=f"{bench.name}/{label}", tasks=tasks)


def _missing_files(bench: BenchmarkSpec, missing: Mapping[str, str]) -> dict[str, str]:
    return {t: bench.task_specs[t].folder for t in missing}


def data_provenance(data: DataConfig, seed: int | None = None, stream: Stream | None = None) -> dict[str, Any]:
    """Where a run's data came from, for ``results.json``.

    Args:
        data: the run's data section.
        seed: the run's seed (recorded as the data seed unless ``data.seed`` is set); pass the same
            value as to :func:`load_stream`.
        stream: the loaded stream, to record per-task split sizes and label counts.

    Returns:
        ``{"source": "pack" | "upstream" | "fixture" | "folder" | "user", "benchmark", "order", "tasks",
        ...source details (pack version and manifest sha256, data_dir, stream file and checksums)...,
        "budgets": {...}, "seed": int, "splits": {task: {split: {"n", "labels"}}}}``.
    """
    budgets = {
        "train_per_task": data.train_per_task,
        "dev_per_task": data.dev_per_task,
        "test_per_task": data.test_per_task,
        "max_source_length": data.max_source_length,
        "max_target_length": data.max_target_length,
    }
    out: dict[str, Any]
    if data.stream:
        out = {"source": "user", "benchmark": None, "order": None}
        out.update(user_stream_provenance(data.stream))
    else:
        bench, label, names = resolve_benchmark(data)
        source = source_for(bench, data)
        out = {
            "source": source.kind,
            "benchmark": bench.name,
            "benchmark_version": bench.version,
            "order": label,
            "tasks": list(names),
        }
        try:
            out.update(source.describe())
            if isinstance(source, FolderSource):
                out["files_sha256"] = source.checksums([bench.task_specs[n] for n in names])
        except (DataError, OSError) as err:  # provenance must not fail a finished run; say what is unknown
            out["source_error"] = str(err)
    out["budgets"] = budgets
    # None when neither data.seed nor the run seed was given: say "unknown" rather than guess
    out["seed"] = data.seed if data.seed is not None else seed
    if stream is not None:
        out["splits"] = {
            t.name: {s: {"n": len(t.split(s)), "labels": label_counts(t.split(s))} for s in SPLITS}
            for t in stream.tasks
        }
    return out
