"""Benchmarks as data: task catalog, named orders, data sources and the stream loader.

Each benchmark is one YAML file in ``clift/data/benchmarks/`` (``kind: benchmark``) that lists its
tasks and its named orders; the task definitions (family, upstream folder, instruction, label set)
live once in the catalog ``tasks.yaml`` (``kind: task-catalog``), pulled in with ``include:``. "Tasks
seen so far" is never written down: it is a prefix of the order.

Where the examples come from, in order of precedence:

* ``data.stream`` set: a user stream YAML (:mod:`clift.data.user_stream`);
* ``data.data_dir`` set: an upstream ``CL_Benchmark`` folder, split by the rules of :mod:`clift.data.carve`;
* the benchmark's own ``source: {folder: ...}`` (the shipped ``fixture``), same rules;
* otherwise the embedded pack (:mod:`clift.data.pack`).

Budgets (``train_per_task``, ``dev_per_task``, ``test_per_task``) are applied last, with
``subsample(examples, n, seed, key=f"{task}/{split}")``.

Public API: :func:`load_stream`, :func:`list_benchmarks`, :func:`format_benchmarks_table`,
:func:`data_provenance`, :func:`get_benchmark`, :func:`canonical_order`.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clift.data.carve import LOAD_RULES, CarveRules, carve_splits, label_counts
from clift.data.pack import PACK_DIR, pack_available, read_manifest, read_pack_task
from clift.data.records import RecordProblems, dedupe, read_records, records_to_examples, sha256_file
from clift.data.task import SPLITS, Example, Stream, Task, subsample
from clift.errors import ConfigError, DataError
from clift.io import read_yaml
from clift.registry import Registry

if TYPE_CHECKING:
    from clift.config import DataConfig

logger = logging.getLogger(__name__)

DATA_PACKAGE_DIR = Path(__file__).resolve().parent
BENCHMARK_DIR = DATA_PACKAGE_DIR / "benchmarks"

FAMILY_KEYS = ("instruction", "show_options", "description")
TASK_KEYS = ("family", "folder", "instruction", "labels", "show_options", "description")
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

_ORDER_RE = re.compile(r"(?:o|order)?[_\-\s]?(\d+)")


# --------------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TaskSpec:
    """A task's definition, without its examples.

    Attributes:
        name: the dataset name shown in the prompt ("agnews").
        family: the task family shown in the prompt ("TC").
        instruction: the instruction, ending with a newline ("" for none).
        labels: the label options in prompt order.
        show_options: whether the prompt lists the options (False for COPA).
        folder: the task's folder inside an upstream ``CL_Benchmark`` ("TC/agnews").
        description: free text for listings.
        metric: how the task is scored (``None``: accuracy, or rougeL for a free-form task).
    """

    name: str
    family: str
    instruction: str
    labels: tuple[str, ...]
    show_options: bool = True
    folder: str = ""
    description: str = ""
    metric: str | None = None

    def build(self, train: list[Example], dev: list[Example], test: list[Example]) -> Task:
        """A :class:`Task` with these examples."""
        return Task(
            name=self.name,
            family=self.family,
            instruction=self.instruction,
            labels=self.labels,
            show_options=self.show_options,
            train=train,
            dev=dev,
            test=test,
            metric=self.metric,
        )


@dataclass(frozen=True)
class Catalog:
    """Task definitions and per-family defaults read from one or more ``task-catalog`` files."""

    families: Mapping[str, Mapping[str, Any]]
    tasks: Mapping[str, TaskSpec]


@dataclass(frozen=True)
class BenchmarkSpec:
    """A benchmark read from its YAML file.

    Attributes:
        name: registry name ("standard-proxy").
        description: one line for listings.
        version: the file's ``version``; bump it when tasks or orders change.
        path: the YAML file.
        tasks: the benchmark's tasks (in declaration order).
        task_specs: their definitions.
        orders: canonical order name ("o1") → task names in training order.
        source_folder: an upstream-layout folder shipped with the benchmark (the fixture), or
            ``None`` to read the embedded pack.
    """

    name: str
    description: str
    version: int
    path: Path
    tasks: tuple[str, ...]
    task_specs: Mapping[str, TaskSpec]
    orders: Mapping[str, tuple[str, ...]]
    source_folder: Path | None = None

    def order(self, order: str | int) -> tuple[str, tuple[str, ...]]:
        """``(canonical name, task names)`` of a named order (``1``, ``"o1"`` and ``"order1"`` are the same).

        Raises:
            ConfigError: naming the unknown order, near matches and the available orders.
        """
        key = canonical_order(order)
        if key in self.orders:
            return key, self.orders[key]
        names = list(self.orders)
        # "o1" vs "o4" is no typo: only suggest for named (non-numbered) orders
        close = [] if _ORDER_RE.fullmatch(key) else difflib.get_close_matches(key, names, n=2, cutoff=0.5)
        hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"data.order: unknown order {order!r} for benchmark {self.name!r}.{hint} Available orders: "
            f"{', '.join(names)} (write e.g. {names[0][1:]}, {names[0]} or order{names[0][1:]})."
        )

    def select(self, order: str | int, tasks: Sequence[str] | None = None) -> tuple[str, tuple[str, ...]]:
        """The stream's label and task names: an explicit ``tasks`` list, or the named ``order``.

        Raises:
            ConfigError: for an unknown order or a task the benchmark does not have.
        """
        if not tasks:
            return self.order(order)
        problems = []
        for name in tasks:
            if name not in self.task_specs:
                problems.append(_unknown_task_message(name, self.name, self.tasks))
        dup = sorted({t for t in tasks if list(tasks).count(t) > 1})
        if dup:
            problems.append(f"data.tasks lists {dup} more than once; each task may appear once.")
        if problems:
            raise ConfigError(problems)
        return "tasks=" + ",".join(tasks), tuple(tasks)


def _unknown_task_message(name: str, bench: str, known: Sequence[str]) -> str:
    lower = {k.lower(): k for k in known}
    close = [lower[name.lower()]] if name.lower() in lower else difflib.get_close_matches(name, known, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return f"data.tasks: unknown task {name!r} in benchmark {bench!r}.{hint} Its tasks: {', '.join(known)}."


def canonical_order(order: str | int) -> str:
    """The canonical order name: ``1``, ``"1"``, ``"o1"``, ``"O1"``, ``"order1"``, ``"order_1"`` → ``"o1"``.

    Names that are not numbered are lower-cased and kept.
    """
    text = str(order).strip().lower()
    m = _ORDER_RE.fullmatch(text)
    return f"o{int(m.group(1))}" if m else text


# --------------------------------------------------------------------------------------------------
# YAML parsing
# --------------------------------------------------------------------------------------------------


def _read_yaml(path: Path) -> dict[str, Any]:
    data = read_yaml(path, ConfigError, "benchmark file")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}.")
    return data


def check_keys(where: str, data: Mapping[str, Any], allowed: Sequence[str], problems: list[str]) -> None:
    """Record one problem per key of ``data`` not in ``allowed`` (with the closest match and the allowed keys)."""
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: unknown key {key!r}.{hint} Allowed keys: {', '.join(allowed)}.")


def _instruction(text: Any, where: str, problems: list[str]) -> str:
    if not isinstance(text, str):
        problems.append(f"{where}.instruction: expected a string, got {text!r}.")
        return ""
    # the prompt puts the option line right after the instruction, so it must end the line
    return text if not text or text.endswith("\n") else text + "\n"


def _labels(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{where}.labels: expected a non-empty list of label strings, got {value!r}.")
        return ()
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (str, int)) or not str(v).strip():
            problems.append(f"{where}.labels: {v!r} is not a label string.")
            continue
        out.append(str(v).strip())
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        problems.append(f"{where}.labels: {dup} listed more than once.")
    return tuple(out)


def parse_task_spec(
    name: str, raw: Any, families: Mapping[str, Mapping[str, Any]], where: str, problems: list[str]
) -> TaskSpec | None:
    """A :class:`TaskSpec` from its YAML mapping, using the family's defaults; problems are collected."""
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: expected a mapping with family, folder and labels, got {raw!r}.")
        return None
    n = len(problems)
    check_keys(where, raw, TASK_KEYS, problems)
    family = str(raw.get("family", "")).strip()
    if not family:
        problems.append(f"{where}: 'family' is required (e.g. SC, TC, NLI).")
    defaults = families.get(family, {})
    if "instruction" in raw:
        instruction = _instruction(raw["instruction"], where, problems)
    elif "instruction" in defaults:
        instruction = _instruction(defaults["instruction"], where, problems)
    else:
        problems.append(
            f"{where}: no instruction, and family {family!r} has none (families with one: "
            f"{', '.join(families) or 'none'}); add 'instruction:'."
        )
        instruction = ""
    labels = _labels(raw.get("labels"), where, problems)
    show = raw.get("show_options", defaults.get("show_options", True))
    if not isinstance(show, bool):
        problems.append(f"{where}.show_options: expected true or false, got {show!r}.")
    folder = raw.get("folder", "")
    if not isinstance(folder, str):
        problems.append(f"{where}.folder: expected a relative path like 'TC/agnews', got {folder!r}.")
    if len(problems) > n:
        return None
    return TaskSpec(
        name=name,
        family=family,
        instruction=instruction,
        labels=labels,
        show_options=bool(show),
        folder=folder or name,
        description=str(raw.get("description", "")),
    )


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


# --------------------------------------------------------------------------------------------------
# Data sources
# --------------------------------------------------------------------------------------------------


class PackSource:
    """Reads task splits from the embedded pack."""

    kind = "pack"

    def __init__(self, pack_dir: Path = PACK_DIR) -> None:
        self.pack_dir = Path(pack_dir)

    def missing(self, specs: Sequence[TaskSpec]) -> dict[str, str]:
        """``{task: why it is unavailable}`` for the tasks the pack cannot serve."""
        if not pack_available(self.pack_dir):
            return {s.name: f"no data pack at {self.pack_dir}" for s in specs}
        manifest, _ = read_manifest(self.pack_dir)
        out = {}
        for spec in specs:
            entry = manifest.get("tasks", {}).get(spec.name)
            if entry is None:
                out[spec.name] = "not in the embedded pack"
            elif not entry.get("available", False):
                out[spec.name] = entry.get("reason", "unavailable when the pack was built")
        return out

    def fix_hint(self, missing: Mapping[str, str], bench: str) -> str:
        folders = ", ".join(f"{spec}/{{train,test}}.json" for spec in missing.values())
        hint = (
            "Fix: set data.data_dir to a complete upstream CL_Benchmark folder (O-LoRA's layout "
            f"<FAMILY>/<task>/{{train,test,labels}}.json) that has them ({folders}), e.g. "
            "`clift run ... data_dir=/path/to/CL_Benchmark`"
        )
        if "yahoo" in missing:
            hint += ", or run benchmark=standard-proxy (the standard orders with yahoo replaced by MNLI)"
        return hint + ", or leave these tasks out with data.tasks=[...]."

    def splits(self, spec: TaskSpec) -> dict[str, tuple[Example, ...]]:
        return read_pack_task(spec.name, self.pack_dir)

    def describe(self) -> dict[str, Any]:
        manifest, sha = read_manifest(self.pack_dir)
        return {
            "pack": {
                "version": manifest.get("pack_version"),
                "format": manifest.get("format"),
                "manifest_sha256": sha,
                "rules": manifest.get("rules", {}).get("params"),
            }
        }


class FolderSource:
    """Reads task splits from an upstream-layout folder (``<FAMILY>/<task>/{train,test,labels}.json``).

    Splits are made at load time by :func:`~clift.data.carve.carve_splits` with
    :data:`~clift.data.carve.LOAD_RULES` (dev carved from train; a missing train or test carved from
    the other file); upstream ``dev.json`` is never read.

    Args:
        root: the ``CL_Benchmark`` folder (or a folder holding one).
        kind: ``"upstream"`` for a user's ``data_dir``, ``"fixture"`` for a folder shipped with a benchmark.
        rules: the split rules.
    """

    def __init__(self, root: str | Path, kind: str = "upstream", rules: CarveRules = LOAD_RULES) -> None:
        self.root = Path(root).expanduser().resolve()
        self.kind = kind
        self.rules = rules
        if not self.root.is_dir():
            what = "data.data_dir" if kind == "upstream" else "the benchmark's source folder"
            raise DataError(
                f"{what} {str(root)!r} is not a folder; point it at an upstream CL_Benchmark folder "
                "(layout <FAMILY>/<task>/{train,test,labels}.json)."
            )

    def task_dir(self, spec: TaskSpec) -> Path:
        direct = self.root / spec.folder
        nested = self.root / "CL_Benchmark" / spec.folder
        # accept the repository root that holds CL_Benchmark/ as well as CL_Benchmark itself
        return nested if not direct.is_dir() and nested.is_dir() else direct

    def missing(self, specs: Sequence[TaskSpec]) -> dict[str, str]:
        out = {}
        for spec in specs:
            d = self.task_dir(spec)
            if not d.is_dir():
                out[spec.name] = f"folder {d} does not exist"
            elif not (d / "train.json").is_file() and not (d / "test.json").is_file():
                found = ", ".join(sorted(p.name for p in d.iterdir())) or "nothing"
                out[spec.name] = f"{d / 'train.json'} and {d / 'test.json'} do not exist (found: {found})"
        return out

    def fix_hint(self, missing: Mapping[str, str], bench: str) -> str:
        return (
            f"Fix: copy the tasks' files into {self.root} (O-LoRA's CL_Benchmark layout "
            "<FAMILY>/<task>/{train,test,labels}.json), point data.data_dir at a complete CL_Benchmark "
            "folder, or leave these tasks out with data.tasks=[...]."
            + (" (standard-proxy replaces yahoo by MNLI.)" if "yahoo" in missing else "")
        )

    def splits(self, spec: TaskSpec) -> dict[str, tuple[Example, ...]]:
        d = self.task_dir(spec)
        keys = tuple(_file_key(d / f) for f in ("train.json", "test.json", "labels.json"))
        return _carve_folder_task(spec, str(d), keys, self.rules)

    def describe(self) -> dict[str, Any]:
        key = "data_dir" if self.kind == "upstream" else "folder"
        return {key: str(self.root), "rules": self.rules.to_dict()}

    def checksums(self, specs: Sequence[TaskSpec]) -> dict[str, dict[str, str]]:
        """SHA-256 of every file each task reads, so a result names the exact upstream files."""
        out: dict[str, dict[str, str]] = {}
        for spec in specs:
            d = self.task_dir(spec)
            files = ("train.json", "test.json", "labels.json")
            out[spec.name] = {f: sha256_file(d / f) for f in files if (d / f).is_file()}
        return out


def _file_key(path: Path) -> tuple[str, int, int] | None:
    if not path.is_file():
        return None
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


def read_task_file(path: Path, spec: TaskSpec, problems: RecordProblems) -> tuple[list[Example], dict[str, int]]:
    """Validated, de-duplicated examples of one upstream file, and what was dropped."""
    records = read_records(path, problems=problems)
    examples, dropped = records_to_examples(records, spec.labels, problems, path.name, skip_unknown_labels=True)
    examples, n_dup = dedupe(examples)
    dropped["duplicates_within_file"] = n_dup
    return examples, dropped


def check_labels_file(path: Path, spec: TaskSpec) -> None:
    """Refuse an upstream ``labels.json`` whose label set differs from the catalog's.

    Raises:
        DataError: naming the file, both label sets and the fix.
    """
    if not path.is_file():
        return
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a JSON list of labels ({err}); fix or delete the file.") from None
    if not isinstance(labels, list) or {str(x) for x in labels} != set(spec.labels):
        raise DataError(
            f"{path}: labels {labels!r} differ from task {spec.name!r}'s label set {list(spec.labels)}; "
            "use O-LoRA's file, or define the task as a user stream (data.stream) with its own labels."
        )


@lru_cache(maxsize=64)
def _carve_folder_task(
    spec: TaskSpec, folder: str, keys: tuple[Any, ...], rules: CarveRules
) -> dict[str, tuple[Example, ...]]:
    # `keys` (path, mtime, size per file) is part of the cache key so an edited file is re-read
    d = Path(folder)
    check_labels_file(d / "labels.json", spec)
    problems = RecordProblems(f"task {spec.name!r} in {d}")
    pools: dict[str, list[Example] | None] = {"train": None, "test": None}
    dropped: dict[str, int] = {}
    for split in pools:
        path = d / f"{split}.json"
        if path.is_file():
            pools[split], drops = read_task_file(path, spec, problems)
            for k, v in drops.items():
                dropped[f"{split}_{k}"] = v
    problems.raise_if_any()
    result = carve_splits(spec.name, pools["train"], pools["test"], rules)
    result.dropped.update(dropped)
    nonzero = {k: v for k, v in result.dropped.items() if v}
    if nonzero:
        logger.info("task %s in %s: dropped %s", spec.name, d, nonzero)
    return {s: tuple(result.split(s)) for s in SPLITS}


# --------------------------------------------------------------------------------------------------
# The stream loader
# --------------------------------------------------------------------------------------------------


def _effective_seed(data: DataConfig, seed: int | None) -> int:
    if data.seed is not None:
        return data.seed
    return 0 if seed is None else seed


def apply_budgets(spec: TaskSpec, splits: Mapping[str, Sequence[Example]], data: DataConfig, seed: int) -> Task:
    """The task with each split cut to its budget: ``subsample(examples, n, seed, key=f"{task}/{split}")``."""
    budget = {"train": data.train_per_task, "dev": data.dev_per_task, "test": data.test_per_task}
    chosen = {s: subsample(splits[s], budget[s], seed, f"{spec.name}/{s}", bool(spec.labels)) for s in SPLITS}
    return spec.build(chosen["train"], chosen["dev"], chosen["test"])


def _source_for(bench: BenchmarkSpec, data: DataConfig) -> PackSource | FolderSource:
    if data.data_dir:
        return FolderSource(data.data_dir, kind="upstream")
    if bench.source_folder is not None:
        return FolderSource(bench.source_folder, kind=_folder_kind(bench.source_folder))
    return PackSource()


def _folder_kind(folder: Path) -> str:
    return "fixture" if folder.is_relative_to(DATA_PACKAGE_DIR) else "folder"


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
        from clift.data.user_stream import load_user_stream

        return load_user_stream(data.stream, data, eff_seed)
    from clift.data.derived import DERIVED, derived_stream

    if data.benchmark in DERIVED:  # free-form tasks rewritten from the pack (titles)
        return derived_stream(data, eff_seed)
    bench, label, names = resolve_benchmark(data)
    source = _source_for(bench, data)
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


# --------------------------------------------------------------------------------------------------
# Listing and provenance
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkInfo:
    """What ``clift ls benchmarks`` shows about one benchmark.

    Attributes:
        name / description / version: from the YAML file.
        tasks: the benchmark's tasks.
        orders: order name → task names.
        source: where its data comes from: ``pack``, ``fixture``, ``folder`` or ``upstream`` (data_dir).
        available: whether every task can be loaded from that source.
        missing: ``{task: reason}`` for the tasks that cannot.
        path: the YAML file.
    """

    name: str
    description: str
    version: int
    tasks: tuple[str, ...]
    orders: Mapping[str, tuple[str, ...]]
    source: str
    available: bool
    missing: Mapping[str, str] = field(default_factory=dict)
    path: str = ""


def list_benchmarks(data_dir: str | Path | None = None) -> list[BenchmarkInfo]:
    """Every shipped benchmark with its orders and whether its data is available.

    Args:
        data_dir: check availability against this upstream folder instead of the embedded pack.

    Returns:
        One :class:`BenchmarkInfo` per benchmark, sorted by name.
    """
    out = []
    for name in benchmark_registry().names():
        bench = benchmark_registry().get(name)
        specs = [bench.task_specs[t] for t in bench.tasks]
        try:
            if data_dir is not None:
                source: PackSource | FolderSource = FolderSource(data_dir, kind="upstream")
            elif bench.source_folder is not None:
                source = FolderSource(bench.source_folder, kind=_folder_kind(bench.source_folder))
            else:
                source = PackSource()
            missing = source.missing(specs)
            kind = source.kind
        except DataError as err:
            missing, kind = {t: str(err) for t in bench.tasks}, "upstream"
        out.append(
            BenchmarkInfo(
                name=bench.name,
                description=bench.description,
                version=bench.version,
                tasks=bench.tasks,
                orders=dict(bench.orders),
                source=kind,
                available=not missing,
                missing=missing,
                path=str(bench.path),
            )
        )
    return out


def format_benchmarks_table(data_dir: str | Path | None = None) -> str:
    """The text ``clift ls benchmarks`` prints: one block per benchmark with its orders and data status."""
    infos = list_benchmarks(data_dir)
    width = max(len(i.name) for i in infos)
    lines = []
    for info in infos:
        if info.available:
            status = f"data: {info.source}, available"
        else:
            status = f"data: {info.source}, MISSING {', '.join(info.missing)}"
        lines.append(f"{info.name:<{width}}  {len(info.tasks):>2} tasks  {len(info.orders)} order(s)  {status}")
        if info.description:
            lines.append(f"{'':<{width}}  {info.description}")
        for oname, seq in info.orders.items():
            lines.append(f"{'':<{width}}  {oname}: {' → '.join(seq)}")
    missing_any = [i for i in infos if not i.available]
    if missing_any:
        lines.append("")
        lines.append(
            "Benchmarks marked MISSING need tasks the embedded pack lacks: run them with "
            "data_dir=<upstream CL_Benchmark folder>, or use standard-proxy."
            if data_dir is None
            else f"Benchmarks marked MISSING need tasks that {data_dir} lacks."
        )
    return "\n".join(lines)


def _derived_names() -> tuple[str, ...]:
    from clift.data.derived import DERIVED

    return tuple(DERIVED)


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
        from clift.data.user_stream import user_stream_provenance

        out = {"source": "user", "benchmark": None, "order": None}
        out.update(user_stream_provenance(data.stream))
    elif data.benchmark in _derived_names():
        from clift.data.derived import derived_provenance

        out = derived_provenance(data, stream)
    else:
        bench, label, names = resolve_benchmark(data)
        source = _source_for(bench, data)
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
