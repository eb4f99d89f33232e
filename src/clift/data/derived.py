"""Streams derived from the embedded pack: free-form tasks built from data clift already ships.

``titles`` (3 tasks, CPU-sized) turns the AG News, Amazon and DBpedia records of the pack, whose
sentences read ``Title: <title>\\nText: <text>``, into title generation: the input is the text, the
target is the title, scored by ROUGE-L. Each task keeps the pack's disjoint train / dev / test
splits (carved by the pack rules of :mod:`clift.data.carve`); records without a title or a text are
dropped, and the carve rules' disjointness pass runs again on the new inputs (two records with the
same text but different titles cannot straddle splits). Budgets apply as for any benchmark, drawn
uniformly (there are no labels to balance).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from clift.data.carve import LOAD_RULES, carve_splits, label_counts
from clift.data.task import SPLITS, Example, Stream
from clift.errors import ConfigError

if TYPE_CHECKING:
    from clift.config import DataConfig

_TITLED = re.compile(r"^Title:(?P<title>.*?)\nText:(?P<text>.*)$", re.S)


@dataclass(frozen=True)
class DerivedBenchmark:
    """A benchmark whose tasks are rewritten from pack tasks.

    Attributes:
        name: the ``data.benchmark`` value.
        description: for listings.
        sources: derived task name → pack task it is built from.
        family / instruction / metric: shared by the tasks.
        orders: named task orders.
    """

    name: str
    description: str
    sources: Mapping[str, str]
    family: str
    instruction: str
    metric: str
    orders: Mapping[str, tuple[str, ...]]


TITLES = DerivedBenchmark(
    name="titles",
    description="3 free-form title-generation tasks from the pack's AG News / Amazon / DBpedia (ROUGE-L)",
    sources={"agnews_title": "agnews", "amazon_title": "amazon", "dbpedia_title": "dbpedia"},
    family="TG",
    instruction="Write a short title for the following text.\n",
    metric="rougeL",
    orders={
        "o1": ("agnews_title", "amazon_title", "dbpedia_title"),
        "o2": ("dbpedia_title", "amazon_title", "agnews_title"),
        "o3": ("amazon_title", "agnews_title", "dbpedia_title"),
    },
)
DERIVED: dict[str, DerivedBenchmark] = {TITLES.name: TITLES}


def title_example(ex: Example) -> Example | None:
    """``Title: t\\nText: x`` → an example with input ``x`` and target ``t`` (None without both)."""
    m = _TITLED.match(ex.sentence)
    if m is None:
        return None
    title, text = " ".join(m["title"].split()), m["text"].strip()
    if not title or not text:
        return None
    return Example(sentence=text, label=title, id=ex.id)


def _select(bench: DerivedBenchmark, data: DataConfig) -> tuple[str, tuple[str, ...]]:
    if data.tasks:
        unknown = [t for t in data.tasks if t not in bench.sources]
        if unknown:
            raise ConfigError(
                f"data.tasks {unknown} are not tasks of benchmark {bench.name!r}; its tasks are "
                f"{', '.join(bench.sources)}."
            )
        return "custom", tuple(data.tasks)
    from clift.data.specs import canonical_order

    label = canonical_order(data.order)
    if label not in bench.orders:
        raise ConfigError(
            f"benchmark {bench.name!r} has no order {data.order!r}; its orders are {', '.join(bench.orders)}."
        )
    return label, bench.orders[label]


def derived_splits(bench: DerivedBenchmark, task: str) -> tuple[dict[str, list[Example]], dict[str, Any]]:
    """The splits of one derived task (before budgets) and how they were made."""
    from clift.data.pack import read_pack_task

    source = read_pack_task(bench.sources[task])
    pools: dict[str, list[Example]] = {}
    dropped = {}
    for split in SPLITS:
        made = [title_example(ex) for ex in source[split]]
        pools[split] = [ex for ex in made if ex is not None]
        dropped[f"{split}_without_title_or_text"] = len(made) - len(pools[split])
    result = carve_splits(
        task,
        pools["train"],
        pools["test"],
        LOAD_RULES,
        train_name=f"pack {bench.sources[task]} train",
        test_name=f"pack {bench.sources[task]} test",
        dev_pool=pools["dev"],
        dev_name=f"pack {bench.sources[task]} dev",
        stratify=False,
    )
    return {s: result.split(s) for s in SPLITS}, {"origin": result.origin, "dropped": {**dropped, **result.dropped}}


def derived_stream(data: DataConfig, seed: int) -> Stream:
    """The stream of a derived benchmark, with the budgets of ``data`` applied."""
    from clift.data.specs import TaskSpec, apply_budgets

    bench = DERIVED[data.benchmark]
    label, names = _select(bench, data)
    tasks = []
    for name in names:
        spec = TaskSpec(name, bench.family, bench.instruction, (), False, metric=bench.metric)
        tasks.append(apply_budgets(spec, derived_splits(bench, name)[0], data, seed))
    return Stream(name=f"{bench.name}/{label}", tasks=tasks)


def derived_provenance(data: DataConfig, stream: Stream | None) -> dict[str, Any]:
    """Provenance of a derived benchmark: the pack it reads and how each task's splits were made."""
    from clift.data.pack import PACK_DIR, read_manifest

    bench = DERIVED[data.benchmark]
    label, names = _select(bench, data)
    manifest, sha = read_manifest(PACK_DIR)
    out: dict[str, Any] = {
        "source": "pack-derived",
        "benchmark": bench.name,
        "order": label,
        "tasks": list(names),
        "derived_from": {n: bench.sources[n] for n in names},
        "pack": {"version": manifest.get("pack_version"), "manifest_sha256": sha},
        "derivation": {n: derived_splits(bench, n)[1] for n in names},
        "rules": LOAD_RULES.to_dict(),
    }
    if stream is not None:
        out["split_sizes"] = {t.name: {s: len(t.split(s)) for s in SPLITS} for t in stream}
        out["distinct_targets"] = {t.name: len(label_counts(t.split("test"))) for t in stream}
    return out


def format_derived() -> str:
    """Lines for ``clift ls benchmarks``: each derived benchmark, its metric and orders."""
    lines = []
    for bench in DERIVED.values():
        size = f"{len(bench.sources)} tasks  {len(bench.orders)} order(s)"
        lines.append(f"{bench.name}  {size}  data: pack-derived, available")
        lines.append(f"  {bench.description}")
        lines += [f"  {name}: {' → '.join(seq)}" for name, seq in bench.orders.items()]
    return "\n".join(lines)
