"""The benchmark registry: the shipped benchmark YAML files and the task catalog they include.

Each benchmark is one YAML file in ``clift/data/benchmarks/`` (``kind: benchmark``) that lists its
tasks and its named orders; the task definitions (family, upstream folder, instruction, label set)
live once in the catalog ``tasks.yaml`` (``kind: task-catalog``), pulled in with ``include:``. "Tasks
seen so far" is never written down: it is a prefix of the order.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from clift.data.specs import (
    FAMILY_KEYS,
    BenchmarkSpec,
    Catalog,
    TaskSpec,
    canonical_order,
    check_keys,
    parse_task_spec,
)
from clift.errors import ConfigError
from clift.io import read_yaml
from clift.registry import Registry

DATA_PACKAGE_DIR = Path(__file__).resolve().parent
BENCHMARK_DIR = DATA_PACKAGE_DIR / "benchmarks"
CATALOG_KEYS = ("kind", "version", "description", "families", "tasks")
BENCHMARK_KEYS = (
    "kind",
    "name",
    "version",
    "description",
    "include",
    "source",
    "tasks",
    "orders",
    "metadata",
)
KINDS = ("benchmark", "task-catalog")


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, ConfigError, "benchmark file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


@lru_cache(maxsize=16)
def load_catalog(path: str | Path) -> Catalog:
    """Read a ``task-catalog`` YAML file (cached per process).

    Raises:
        ConfigError: listing every problem in the file.
    """
    p = Path(path)
    data = _read_yaml(p)
    problems: list[str] = []
    check_keys(str(p), data, CATALOG_KEYS, problems)
    if data.get("kind") != "task-catalog":
        problems.append(f"{p}: expected 'kind: task-catalog', got {data.get('kind')!r}.")
    families: dict[str, dict[str, Any]] = {}
    for fam, raw in (data.get("families") or {}).items():
        where = f"{p}: families.{fam}"
        if not isinstance(raw, Mapping):
            problems.append(f"{where}: expected a mapping with 'instruction', got {raw!r}.")
            continue
        check_keys(where, raw, FAMILY_KEYS, problems)
        families[str(fam)] = dict(raw)
    tasks: dict[str, TaskSpec] = {}
    raw_tasks = data.get("tasks") or {}
    if not isinstance(raw_tasks, Mapping):
        problems.append(f"{p}: 'tasks' must map task names to definitions.")
        raw_tasks = {}
    for name, raw in raw_tasks.items():
        spec = parse_task_spec(str(name), raw, families, f"{p}: tasks.{name}", problems)
        if spec is not None:
            tasks[str(name)] = spec
    if problems:
        raise ConfigError(problems)
    return Catalog(families=families, tasks=tasks)


def _benchmark_tasks(p: Path, data: Mapping[str, Any], problems: list[str]) -> dict[str, TaskSpec]:
    """The benchmark's task definitions: names from its included catalogs, or definitions of its own."""
    families: dict[str, Mapping[str, Any]] = {}
    catalog_tasks: dict[str, TaskSpec] = {}
    includes = data.get("include") or []
    for inc in [includes] if isinstance(includes, str) else includes:
        try:
            cat = load_catalog((p.parent / str(inc)).resolve())
        except ConfigError as err:
            problems.extend(f"{p}: include {inc!r}: {msg}" for msg in err.problems)
            continue
        families.update(cat.families)
        catalog_tasks.update(cat.tasks)
    raw_tasks = data.get("tasks")
    specs: dict[str, TaskSpec] = {}
    if isinstance(raw_tasks, list):  # names from the included catalog
        for t in raw_tasks:
            if str(t) in catalog_tasks:
                specs[str(t)] = catalog_tasks[str(t)]
            else:
                close = difflib.get_close_matches(str(t), list(catalog_tasks), n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                problems.append(
                    f"{p}: task {t!r} is not defined in the included catalog(s).{hint} "
                    f"Defined: {', '.join(catalog_tasks) or 'none (add include: tasks.yaml)'}."
                )
    elif isinstance(raw_tasks, Mapping):  # definitions local to this benchmark (the fixture)
        for t, raw in raw_tasks.items():
            spec = parse_task_spec(str(t), raw, families, f"{p}: tasks.{t}", problems)
            if spec is not None:
                specs[str(t)] = spec
    else:
        problems.append(f"{p}: 'tasks' must be a list of catalog task names or a mapping of definitions.")
    return specs


def _benchmark_orders(
    p: Path, data: Mapping[str, Any], specs: Mapping[str, TaskSpec], problems: list[str]
) -> dict[str, tuple[str, ...]]:
    """The named orders, by canonical name; each must list known tasks, each at most once."""
    orders: dict[str, tuple[str, ...]] = {}
    raw_orders = data.get("orders")
    if not isinstance(raw_orders, Mapping) or not raw_orders:
        problems.append(f"{p}: 'orders' must map order names (o1, o2, …) to lists of task names.")
        raw_orders = {}
    for oname, seq in raw_orders.items():
        key = canonical_order(oname)
        if key in orders:
            problems.append(f"{p}: order {oname!r} is defined twice (as {key!r}).")
        if not isinstance(seq, list) or not seq:
            problems.append(f"{p}: order {oname!r} must be a non-empty list of task names.")
            continue
        seq = [str(s) for s in seq]
        unknown = [s for s in seq if s not in specs]
        if unknown:
            problems.append(
                f"{p}: order {oname!r} names unknown task(s) {unknown}; the benchmark's tasks: {', '.join(specs)}."
            )
        dup = sorted({s for s in seq if seq.count(s) > 1})
        if dup:
            problems.append(f"{p}: order {oname!r} lists {dup} more than once.")
        orders[key] = tuple(seq)
    return orders


def load_benchmark_file(path: str | Path) -> BenchmarkSpec:
    """Read and validate one ``kind: benchmark`` YAML file.

    Every order must list known tasks of the benchmark, each at most once.

    Raises:
        ConfigError: listing every problem in the file.
    """
    p = Path(path).resolve()
    data = _read_yaml(p)
    problems: list[str] = []
    check_keys(str(p), data, BENCHMARK_KEYS, problems)
    if data.get("kind", "benchmark") != "benchmark":
        problems.append(f"{p}: expected 'kind: benchmark', got {data.get('kind')!r}.")
    name = str(data.get("name") or p.stem)
    specs = _benchmark_tasks(p, data, problems)
    orders = _benchmark_orders(p, data, specs, problems)
    source_folder = None
    source = data.get("source", "pack")
    if isinstance(source, Mapping) and isinstance(source.get("folder"), str) and set(source) == {"folder"}:
        source_folder = (p.parent / source["folder"]).resolve()
    elif source != "pack":
        problems.append(f"{p}: 'source' must be 'pack' or {{folder: <path relative to this file>}}, got {source!r}.")
    try:
        version = int(data.get("version", 1))
    except (TypeError, ValueError):
        problems.append(f"{p}: 'version' must be an integer, got {data.get('version')!r}.")
        version = 0
    if problems:
        raise ConfigError(problems)
    return BenchmarkSpec(
        name=name,
        description=str(data.get("description", "")),
        version=version,
        path=p,
        tasks=tuple(specs),
        task_specs=specs,
        orders=orders,
        source_folder=source_folder,
    )


def benchmark_files(directory: Path = BENCHMARK_DIR) -> list[Path]:
    """The ``kind: benchmark`` YAML files of ``directory`` (catalogs are skipped), sorted by name."""
    out = []
    for path in sorted(Path(directory).glob("*.yaml")):
        kind = _read_yaml(path).get("kind", "benchmark")
        if kind not in KINDS:
            raise ConfigError(f"{path}: unknown kind {kind!r}; allowed: {', '.join(KINDS)}.")
        if kind == "benchmark":
            out.append(path)
    return out


@lru_cache(maxsize=4)
def _registry(directory: str) -> Registry[BenchmarkSpec]:
    reg: Registry[BenchmarkSpec] = Registry("benchmark")
    for path in benchmark_files(Path(directory)):
        spec = load_benchmark_file(path)
        reg.register(spec.name, spec)
    return reg


def benchmark_registry() -> Registry[BenchmarkSpec]:
    """The registry of shipped benchmarks (read once per process)."""
    return _registry(str(BENCHMARK_DIR))


def get_benchmark(name: str) -> BenchmarkSpec:
    """A shipped benchmark by name, or a benchmark YAML file given by path.

    Raises:
        RegistryError: for an unknown name, with near matches and the available names.
        ConfigError: for a benchmark file with problems.
    """
    if str(name).endswith((".yaml", ".yml")) and Path(name).is_file():
        return load_benchmark_file(name)
    return benchmark_registry().get(str(name))


def task_catalog() -> Catalog:
    """The shipped catalog of the 15 upstream tasks and the family instructions."""
    return load_catalog(BENCHMARK_DIR / "tasks.yaml")
