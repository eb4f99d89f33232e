"""Benchmarks as data: the public names of the benchmark modules, importable from one place.

The code lives by concern: :mod:`clift.data.specs` (task and benchmark definitions, the budget cut),
:mod:`clift.data.catalog` (the registry of shipped benchmark files and the task catalog),
:mod:`clift.data.sources` (the embedded pack and upstream folders), :mod:`clift.data.stream` (the
stream loader and provenance) and :mod:`clift.data.tables` (``clift ls benchmarks``). This module only
re-exports them, so ``from clift.data.benchmarks import load_stream`` keeps working; it imports none of
its own, and nothing under ``clift.data`` imports it.

Public API: :func:`load_stream`, :func:`list_benchmarks`, :func:`format_benchmarks_table`,
:func:`data_provenance`, :func:`get_benchmark`, :func:`canonical_order`.
"""

from clift.data.catalog import (
    BENCHMARK_DIR,
    BENCHMARK_KEYS,
    CATALOG_KEYS,
    DATA_PACKAGE_DIR,
    KINDS,
    benchmark_files,
    benchmark_registry,
    get_benchmark,
    load_benchmark_file,
    load_catalog,
    task_catalog,
)
from clift.data.sources import FolderSource, PackSource, check_labels_file, read_task_file
from clift.data.specs import (
    FAMILY_KEYS,
    TASK_KEYS,
    BenchmarkSpec,
    Catalog,
    TaskSpec,
    apply_budgets,
    canonical_order,
    check_keys,
    parse_task_spec,
)
from clift.data.stream import data_provenance, load_stream, resolve_benchmark
from clift.data.tables import BenchmarkInfo, format_benchmarks_table, list_benchmarks

__all__ = [
    "BENCHMARK_DIR",
    "BENCHMARK_KEYS",
    "CATALOG_KEYS",
    "DATA_PACKAGE_DIR",
    "FAMILY_KEYS",
    "KINDS",
    "TASK_KEYS",
    "BenchmarkInfo",
    "BenchmarkSpec",
    "Catalog",
    "FolderSource",
    "PackSource",
    "TaskSpec",
    "apply_budgets",
    "benchmark_files",
    "benchmark_registry",
    "canonical_order",
    "check_keys",
    "check_labels_file",
    "data_provenance",
    "format_benchmarks_table",
    "get_benchmark",
    "list_benchmarks",
    "load_benchmark_file",
    "load_catalog",
    "load_stream",
    "parse_task_spec",
    "read_task_file",
    "resolve_benchmark",
    "task_catalog",
]
