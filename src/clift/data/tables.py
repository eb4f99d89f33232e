"""Listing benchmarks: what ``clift ls benchmarks`` shows (tasks, orders, whether the data is there)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clift.data.catalog import benchmark_registry
from clift.data.sources import FolderSource, PackSource, folder_kind
from clift.errors import DataError


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
                source = FolderSource(bench.source_folder, kind=folder_kind(bench.source_folder))
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
