"""Where a benchmark's examples come from: the embedded pack, or an upstream-layout folder.

Both sources answer the same questions: which tasks are missing (and the fix), a task's splits, and
what to record as provenance.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clift.data.carve import LOAD_RULES, CarveRules, carve_splits
from clift.data.catalog import DATA_PACKAGE_DIR
from clift.data.pack import PACK_DIR, pack_available, read_manifest, read_pack_task
from clift.data.records import RecordProblems, dedupe, read_records, records_to_examples, sha256_file
from clift.data.specs import BenchmarkSpec, TaskSpec
from clift.data.task import SPLITS, Example
from clift.errors import DataError

if TYPE_CHECKING:
    from clift.config import DataConfig

logger = logging.getLogger(__name__)


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


def source_for(bench: BenchmarkSpec, data: DataConfig) -> PackSource | FolderSource:
    """The source a run reads ``bench`` from: ``data.data_dir``, else the benchmark's own folder, else the pack.

    Raises:
        DataError: for a ``data_dir`` (or a benchmark folder) that is not a folder.
    """
    if data.data_dir:
        return FolderSource(data.data_dir, kind="upstream")
    if bench.source_folder is not None:
        return FolderSource(bench.source_folder, kind=folder_kind(bench.source_folder))
    return PackSource()


def folder_kind(folder: Path) -> str:
    """``fixture`` for a folder shipped inside clift's data package, ``folder`` for any other."""
    return "fixture" if folder.is_relative_to(DATA_PACKAGE_DIR) else "folder"
