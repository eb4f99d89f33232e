"""The comparison suite: methods × orders × seeds on one benchmark and one budget, tabulated.

A suite file (YAML) names a base run config and the methods to compare::

    name: standard-proxy
    base:                      # a normal run config (model, data, train, eval, ...) without `method`
      model: {name: smollm2-135m}
      data: {benchmark: standard-proxy, train_per_task: 64, test_per_task: 100}
      train: {batch_size: 8, lr: 1.0e-3}
    method_defaults: {r: 8, alpha: 32}   # applied to every method whose config has that field
    methods:
      - seq_lora
      - {name: olora, lambda1: 0.1, label: olora-l0.1}
      - {name: seq_ft, run: {train: {lr: 1.0e-5}}}   # `run`: run-config keys for this entry only
    orders: [1, 2, 3]
    seeds: [42]
    output_dir: runs/suite/standard-proxy

Run ``(label, order, seed)`` goes to ``<output_dir>/<label>/o<order>-s<seed>/``. A run whose
``results.json`` says ``status: complete`` and whose resolved config equals the one the suite would
use (``name``, ``output_dir`` and ``log.*`` aside, as for a resume) is reused, not rerun; an unfinished
one is resumed from its last checkpoint (see ``clift.runner``); one with a different config is an error
naming the differing keys. Every conflict is reported before anything runs.

The table (:func:`aggregate`, a pure function of results dicts) has one row per label with AA, BWT,
FWT and forgetting as mean ± sample std over orders × seeds, wall time and peak memory, plus a
zero-shot row; it is written as ``suite.md`` and ``suite.json`` in ``output_dir``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import gc
import json
import logging
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clift.config import load_yaml, upgrade_config
from clift.errors import ConfigError, ResumeError, TrainingError
from clift.io import atomic_write_json, atomic_write_text, relative_path
from clift.results import RESULTS_FILE

log = logging.getLogger("clift")

SUITE_MD = "suite.md"
SUITE_JSON = "suite.json"
METRICS = ("aa", "bwt", "fwt", "forgetting")
#: top-level keys of a suite file
SUITE_KEYS = ("name", "base", "method_defaults", "methods", "orders", "seeds", "output_dir")

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ORDER_RE = re.compile(r"^(?:o|order)?[_-]?(\d+)$")

Isolation = Literal["process", "inline"]


# --------------------------------------------------------------------------------------------------
# The suite file
# --------------------------------------------------------------------------------------------------


@dataclass
class SuiteMethod:
    """One entry of ``methods``.

    Attributes:
        label: the row name and folder name (defaults to the method name).
        name: the registered method name.
        overrides: the method's own config keys (``method_defaults`` already merged in).
        run: run-config sections for this entry only, deep-merged over ``base`` (``{train: {lr: 1e-5}}``).
    """

    label: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)


@dataclass
class SuiteRun:
    """One planned run of the suite.

    Attributes:
        label / method: the method entry's label and registered name.
        order: the benchmark order as written into ``data.order`` (``"1"`` for 1, "o1" or "order1").
        seed: the run seed.
        run_dir: ``<output_dir>/<label>/o<order>-s<seed>``.
        config: the raw run config (a mapping ``clift.run`` accepts).
        resolved: the validated config as ``RunConfig.to_dict()`` writes it into results.json.
        state: ``new`` (no results yet), ``reuse`` (complete, same config) or ``resume`` (unfinished, same
            config: continued from its checkpoint).
    """

    label: str
    method: str
    order: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    resolved: dict[str, Any]
    state: str = "new"


@dataclass
class Suite:
    """A validated suite file.

    Attributes:
        name: the suite's name (the file's stem unless ``name`` is set).
        base: the base run config (without ``method``, ``seed``, ``output_dir``).
        methods: the method entries, in table order.
        orders / seeds: the grid.
        output_dir: where runs, ``suite.md`` and ``suite.json`` go.
        source: the suite file, if read from one.
        raw: the suite mapping after overrides (written into suite.json).
    """

    name: str
    base: dict[str, Any]
    methods: list[SuiteMethod]
    orders: list[str]
    seeds: list[int]
    output_dir: Path
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def runs(self) -> list[SuiteRun]:
        """Every (method, order, seed) run, methods outermost, each validated into its config.

        Raises:
            ConfigError: listing every run config that does not validate.
        """
        from clift.config import RunConfig

        out, problems = [], []
        for m in self.methods:
            for order in self.orders:
                for seed in self.seeds:
                    run_dir = self.output_dir / m.label / f"{order_dir(order)}-s{seed}"
                    cfg = _deep_merge(self.base, m.run)
                    cfg["name"] = f"{m.label}-{order_dir(order)}-s{seed}"
                    cfg["output_dir"] = str(run_dir)
                    cfg["seed"] = seed
                    cfg["method"] = {"name": m.name, **m.overrides}
                    data = cfg.setdefault("data", {})
                    if isinstance(data, dict):
                        data["order"] = order
                    try:
                        resolved = _json_normal(RunConfig.from_dict(cfg).to_dict())
                    except ConfigError as err:
                        problems += [f"methods: {m.label!r} (order {order}, seed {seed}): {p}" for p in err.problems]
                        continue
                    out.append(SuiteRun(m.label, m.name, order, seed, run_dir, cfg, resolved))
        if problems:
            raise ConfigError(_dedupe(problems))
        return out


def order_dir(order: str | int) -> str:
    """The folder name of an order: ``1``, ``"1"``, ``"o1"``, ``"order1"`` → ``o1``; other names lower-cased."""
    text = str(order).strip().lower()
    m = _ORDER_RE.fullmatch(text)
    return f"o{int(m.group(1))}" if m else re.sub(r"[^a-z0-9._-]+", "_", text)


def _order_value(order: str | int) -> str:
    """The value a suite writes into ``data.order``: ``"1"`` for 1, ``"o1"``, ``"order1"``; others as given."""
    text = str(order).strip()
    m = _ORDER_RE.fullmatch(text.lower())
    return str(int(m.group(1))) if m else text


def _deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in, section by section (``over`` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples → lists, non-finite floats → null)."""
    from clift.results import _clean

    return json.loads(json.dumps(_clean(obj)))


def apply_suite_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a suite mapping.

    Examples: ``seeds=[1,2,3]``, ``orders=[1]``, ``base.train.max_steps=2``, ``output_dir=runs/x``.

    Raises:
        ConfigError: for an override without ``=`` or one that descends into a non-mapping.
    """
    out = copy.deepcopy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {item!r} has no 'key='; write key=value, e.g. seeds=[1,2].")
            continue
        parts = key.strip().split(".")
        node: Any = out
        for part in parts[:-1]:
            node = node.setdefault(part, {}) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                problems.append(f"override {item!r}: {part!r} is not a section of the suite file.")
                break
        else:
            node[parts[-1]] = yaml.safe_load(text) if text.strip() else None
    if problems:
        raise ConfigError(problems)
    return out


def load_suite(config: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Suite:
    """Read and validate a suite (a YAML path or a mapping); every problem is reported at once.

    ``base`` may be a mapping or a path to a run config YAML (relative to the suite file). Relative
    ``output_dir`` paths are relative to the working directory, as for run configs. Defaults: ``orders``
    = the base config's ``data.order`` (or 1), ``seeds`` = its ``seed`` (or 42), ``output_dir`` =
    ``runs/suite/<name>``.

    Raises:
        ConfigError: unknown keys, a missing or invalid ``methods`` list, bad labels, duplicate labels,
            bad orders or seeds, a ``base`` that sets ``method``, or any run config that fails validation.
    """
    from clift.methods import METHODS

    source: Path | None = None
    if isinstance(config, (str, Path)):
        source = Path(config)
        raw = load_yaml(source)
    elif isinstance(config, Mapping):
        raw = copy.deepcopy(dict(config))
    else:
        raise ConfigError(f"suite: got {type(config).__name__}; expected a YAML path or a mapping.")
    raw = apply_suite_overrides(raw, overrides)
    problems: list[str] = []
    for key in raw:
        if key not in SUITE_KEYS:
            problems.append(f"suite: unknown key {key!r}; allowed keys: {', '.join(SUITE_KEYS)}.")

    base = raw.get("base") or {}
    if isinstance(base, (str, Path)):
        path = Path(base)
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        try:
            base = load_yaml(path)
        except ConfigError as err:
            problems += [f"suite.base: {p}" for p in err.problems]
            base = {}
    if not isinstance(base, dict):
        problems.append(f"suite.base: got {base!r}; expected a run config mapping or a path to one.")
        base = {}
    base = copy.deepcopy(base)
    if "method" in base:
        problems.append(
            "suite.base: sets `method`, but the suite sets the method per entry of `methods`; move shared "
            "method keys (r, alpha, ...) to `method_defaults`."
        )
        base.pop("method")
    base_seed = base.pop("seed", 42)  # the suite sets the seed per run; the base's is the default
    for key in ("output_dir", "name"):
        base.pop(key, None)

    defaults = raw.get("method_defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"suite.method_defaults: got {defaults!r}; expected a mapping of method keys.")
        defaults = {}

    methods: list[SuiteMethod] = []
    entries = raw.get("methods")
    if not isinstance(entries, list) or not entries:
        problems.append(
            "suite.methods: missing or empty; give a list of method names or mappings, e.g. "
            "[seq_lora, {name: olora, lambda1: 0.1, label: olora-0.1}]."
        )
        entries = []
    for i, entry in enumerate(entries):
        where = f"suite.methods[{i}]"
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            problems.append(f"{where}: got {entry!r}; expected a method name or a mapping with a `name`.")
            continue
        entry = dict(entry)
        name = entry.pop("name")
        label = str(entry.pop("label", name))
        run_over = entry.pop("run", None) or {}
        if not isinstance(run_over, dict) or "method" in run_over:
            problems.append(
                f"{where}.run: got {run_over!r}; expected a mapping of run-config sections for this entry "
                "only (e.g. {train: {lr: 1.0e-5}}), without `method`."
            )
            run_over = {}
        if name not in METHODS:
            problems.append(f"{where}: {METHODS.unknown_message(name)}")
            continue
        if not _LABEL_RE.match(label):
            problems.append(
                f"{where}: label {label!r} is not a valid folder name; use letters, digits, '.', '_' or '-'."
            )
            continue
        fields = {f.name for f in dataclasses.fields(METHODS.get(name).config_cls)}
        merged = {k: v for k, v in defaults.items() if k in fields}
        merged.update(entry)
        methods.append(SuiteMethod(label, name, merged, run_over))
    known = {f.name for m in methods for f in dataclasses.fields(METHODS.get(m.name).config_cls)}
    unused = sorted(set(defaults) - known)
    if unused and methods:
        problems.append(
            f"suite.method_defaults: {', '.join(map(repr, unused))} is a field of none of the listed methods; "
            "check the spelling (`clift ls methods -v` lists each method's fields)."
        )
    labels = [m.label for m in methods]
    for dup in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"suite.methods: label {dup!r} is used twice; give the entries distinct `label`s.")

    data = base.get("data") if isinstance(base.get("data"), dict) else {}
    orders_raw = raw.get("orders", [data.get("order", 1)])
    if not isinstance(orders_raw, list) or not orders_raw:
        problems.append(f"suite.orders: got {orders_raw!r}; expected a non-empty list, e.g. [1, 2, 3].")
        orders_raw = []
    # one spelling per order (1, "1", "o1", "order1" → "1"), so the resolved configs compare equal
    orders = [_order_value(o) for o in orders_raw]
    if len({order_dir(o) for o in orders}) != len(orders):
        problems.append(f"suite.orders: {orders_raw!r} names an order twice.")
    if data.get("tasks") and len(orders) > 1:
        problems.append(
            "suite.base.data.tasks is set, so data.order has no effect and every order would run the same "
            "tasks; remove data.tasks or list a single order."
        )
    seeds_raw = raw.get("seeds", [base_seed])
    seeds: list[int] = []
    if not isinstance(seeds_raw, list) or not seeds_raw:
        problems.append(f"suite.seeds: got {seeds_raw!r}; expected a non-empty list of integers, e.g. [42].")
    else:
        for s in seeds_raw:
            if isinstance(s, bool) or not isinstance(s, int):
                problems.append(f"suite.seeds: {s!r} is not an integer; seeds must be integers, e.g. [1, 2, 3].")
            else:
                seeds.append(s)
        if len(set(seeds)) != len(seeds):
            problems.append(f"suite.seeds: {seeds_raw!r} lists a seed twice.")

    name = str(raw.get("name") or (source.stem if source is not None else "suite"))
    output_dir = Path(str(raw.get("output_dir") or Path("runs") / "suite" / name))
    if problems:
        raise ConfigError(problems)
    suite = Suite(name, base, methods, orders, seeds, output_dir, source, raw)
    suite.runs()  # validates every run config now, before anything is run
    return suite


# --------------------------------------------------------------------------------------------------
# Planning: which runs are reused
# --------------------------------------------------------------------------------------------------


def _read_results(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ResumeError(
            f"{str(path)!r} cannot be read ({err}); delete that run directory so the suite reruns it."
        ) from None


def plan(runs: list[SuiteRun]) -> list[SuiteRun]:
    """Mark each run ``new``, ``reuse`` or ``resume`` from what its folder holds.

    The comparison is the runner's own resume rule (:func:`clift.runner.config_diff`: ``log``, ``name``
    and ``output_dir`` may differ; fields added to clift since a run was made count at their defaults,
    :func:`clift.config.upgrade_config`), so whatever the suite reuses or resumes the runner would accept.

    Raises:
        ResumeError: listing every run folder that holds a run with a different config.
    """
    from clift.runner import config_diff

    conflicts = []
    for run in runs:
        found = _read_results(run.run_dir)
        if found is None:
            run.state = "new"
            continue
        diff = config_diff(_json_normal(upgrade_config(found.get("config") or {})), run.resolved)
        if diff:
            shown = "; ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
            conflicts.append(f"{run.run_dir}: holds a run with a different config ({shown})")
            continue
        run.state = "reuse" if found.get("status") == "complete" else "resume"
    if conflicts:
        raise ResumeError(
            "the suite's output folders hold runs made with other settings; delete those folders, or set "
            "another output_dir, or restore the settings:\n" + "\n".join(f"  - {c}" for c in conflicts)
        )
    return runs


# --------------------------------------------------------------------------------------------------
# Aggregation (pure)
# --------------------------------------------------------------------------------------------------


def _stat(values: Sequence[float | None]) -> dict[str, float | int | None]:
    """Mean and sample standard deviation (ddof 1; None for fewer than two values) of the non-None values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
    return {"mean": mean, "std": std, "n": len(vals)}


def peak_memory_mb(results: Mapping[str, Any]) -> float | None:
    """The largest ``timings.stages[].peak_memory_mb`` of one run (None when not recorded)."""
    peaks = [s.get("peak_memory_mb") for s in results.get("timings", {}).get("stages", [])]
    peaks = [p for p in peaks if p is not None]
    return max(peaks) if peaks else None


def aggregate(results: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Table rows from finished runs' results dicts: a zero-shot row, then one row per label.

    Args:
        results: results.json contents (``status: complete``); each needs ``metrics``, ``run`` and
            ``timings``; ``zero_shot`` feeds the zero-shot row.
        labels: the row each result belongs to (same length); default: each run's method name.

    Returns:
        Rows in first-appearance order. Each row has ``label``, ``method``, ``n`` (runs), ``orders``,
        ``seeds``, ``needs_task_id``, one ``{"mean", "std", "n"}`` per metric (``aa``, ``bwt``, ``fwt``,
        ``forgetting``; std is the sample std over orders × seeds, None for one run), ``wall_seconds``
        (the same over ``timings.total_seconds``), ``peak_memory_mb`` (the largest stage peak of any
        of its runs) and ``torch_threads`` (the distinct CPU thread counts its runs recorded, ``None``
        for runs made before clift recorded it). The zero-shot row (``label: zero-shot``, only AA)
        averages the mean zero-shot accuracy of each distinct (model, stream, seed); it is omitted when
        no run has a zero-shot row.

    Raises:
        ValueError: for a results dict that is not complete, or labels of the wrong length.
    """
    if labels is None:
        labels = [r.get("run", {}).get("method", "?") for r in results]
    if len(labels) != len(results):
        raise ValueError(f"aggregate got {len(results)} results but {len(labels)} labels; give one label per run.")
    groups: dict[str, list[Mapping[str, Any]]] = {}
    zero: dict[tuple[Any, ...], float] = {}
    for label, res in zip(labels, results, strict=True):
        run = res.get("run", {})
        if res.get("status") != "complete":
            raise ValueError(
                f"run {run.get('name', label)!r} has status {res.get('status')!r}; only complete runs can be "
                "aggregated (finish or rerun it)."
            )
        groups.setdefault(label, []).append(res)
        b = res.get("zero_shot")
        if b:
            zero.setdefault((run.get("model"), run.get("stream"), run.get("seed")), sum(b) / len(b))
    rows: list[dict[str, Any]] = []
    if zero:
        empty = {"mean": None, "std": None, "n": 0}
        rows.append(
            {
                "label": "zero-shot",
                "method": None,
                "n": len(zero),
                "orders": [],
                "seeds": [],
                "needs_task_id": False,
                "aa": _stat(list(zero.values())),
                **{m: dict(empty) for m in METRICS[1:]},
                "wall_seconds": dict(empty),
                "peak_memory_mb": None,
                "torch_threads": [],
            }
        )
    for label, group in groups.items():
        runs = [g.get("run", {}) for g in group]
        peaks = [p for p in (peak_memory_mb(g) for g in group) if p is not None]
        methods = _dedupe([str(r.get("method")) for r in runs])
        row: dict[str, Any] = {
            "label": label,
            "method": methods[0] if len(methods) == 1 else methods,
            "n": len(group),
            "orders": sorted({str(r.get("stream", "")).rsplit("/", 1)[-1] for r in runs}),
            "seeds": sorted({r.get("seed") for r in runs if r.get("seed") is not None}),
            "needs_task_id": any(bool(r.get("needs_task_id")) for r in runs),
        }
        for m in METRICS:
            row[m] = _stat([g.get("metrics", {}).get(m) for g in group])
        row["wall_seconds"] = _stat([g.get("timings", {}).get("total_seconds") for g in group])
        row["peak_memory_mb"] = max(peaks) if peaks else None
        row["torch_threads"] = sorted(
            {g.get("environment", {}).get("torch_threads") for g in group}, key=lambda t: (t is None, t or 0)
        )
        rows.append(row)
    return rows


def _cell(stat: Mapping[str, Any], digits: int = 1) -> str:
    if stat.get("mean") is None:
        return "—"
    text = f"{stat['mean']:.{digits}f}"
    return text if stat.get("std") is None else f"{text} ± {stat['std']:.{digits}f}"


def format_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a Markdown table (AA, BWT, FWT, forgetting in points; † = needs the task id)."""
    head = "| method | runs | AA | BWT | FWT | forgetting | wall time (s) | peak memory (MB) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        label = f"{r['label']} †" if r.get("needs_task_id") else str(r["label"])
        peak = r.get("peak_memory_mb")
        cells = [
            label,
            str(r["n"]),
            *(_cell(r[m]) for m in METRICS),
            _cell(r["wall_seconds"], 0),
            "—" if peak is None else f"{peak:.0f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _threads(count: int | None) -> str:
    return "unrecorded" if count is None else f"{count} thread" + ("" if count == 1 else "s")


def format_markdown(
    rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any] | None = None, command: str | None = None
) -> str:
    """``suite.md``: a short header (model, benchmark, grid, budget, command), the table and its legend."""
    meta = meta or {}
    out = [f"# Suite: {meta.get('name', 'suite')}", ""]
    facts = [(k, meta[k]) for k in ("model", "benchmark", "orders", "seeds", "budget", "eval") if meta.get(k)]
    out += [f"- {k}: {v}" for k, v in facts]
    if command:
        out += [f"- command: `{command}`"]
    if facts or command:
        out.append("")
    out += [format_table(rows), ""]
    out.append(
        "AA, BWT, FWT and forgetting in percentage points (protocol.md §4), mean ± sample std over orders × "
        "seeds (no ± for a single run); `runs` = runs aggregated. † needs the task id at inference. Wall time "
        "is the whole run (model load, zero-shot row, training, evaluation after every stage); peak memory is "
        "the largest per-stage peak of any run (GPU: max allocated; CPU: the process's max RSS)."
    )
    if meta.get("isolation") == "inline":
        out.append("Runs made inline share one process, so a CPU peak includes earlier runs of the same process.")
    mixed = [r for r in rows if len(r.get("torch_threads") or []) > 1]
    if mixed:
        parts = [f"{r['label']} ({', '.join(_threads(t) for t in r['torch_threads'])})" for r in mixed]
        out.append(
            "Wall time mixes runs made with different CPU thread counts (`environment.torch_threads` in "
            f"results.json), so it is not comparable across those runs: {'; '.join(parts)}."
        )
    missing = meta.get("missing") or []
    if missing:
        out.append(f"Not finished (left out of the table): {', '.join(missing)}.")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


@dataclass
class SuiteResult:
    """What :func:`run_suite` returns.

    Attributes:
        suite: the validated suite.
        runs: every planned run with its final state (``reused``, ``ran``, ``missing``; ``new``,
            ``resume`` or ``reuse`` in a dry run).
        rows: the aggregated table rows (see :func:`aggregate`).
        markdown: the content of ``suite.md``.
        paths: the files written (empty for a dry run).
    """

    suite: Suite
    runs: list[SuiteRun]
    rows: list[dict[str, Any]]
    markdown: str
    paths: list[Path]


def _meta(suite: Suite) -> dict[str, Any]:
    base = suite.base
    data, train, ev = (base.get(k) if isinstance(base.get(k), dict) else {} for k in ("data", "train", "eval"))
    model = base.get("model")
    model_name = model.get("name") if isinstance(model, dict) else model
    budget = {k: data.get(k) for k in ("train_per_task", "test_per_task", "max_source_length") if k in data}
    budget.update({k: train.get(k) for k in ("max_steps", "epochs", "batch_size", "lr") if k in train})
    return {
        "name": suite.name,
        "model": model_name or "smollm2-135m (default)",
        "benchmark": data.get("benchmark", "fixture (default)"),
        "orders": ", ".join(suite.orders),
        "seeds": ", ".join(str(s) for s in suite.seeds),
        "budget": ", ".join(f"{k}={v}" for k, v in budget.items()) or None,
        "eval": ev.get("mode"),
    }


def _run_inline(run: SuiteRun) -> None:
    from clift.runner import run as run_one

    result = run_one(run.config)  # an unfinished run continues from its checkpoint
    del result  # drop the model before the next run
    gc.collect()


def _run_process(run: SuiteRun, python: str) -> None:
    """Run one config in a fresh interpreter, so its peak memory is its own; output to a log file."""
    run.run_dir.parent.mkdir(parents=True, exist_ok=True)
    log_path = run.run_dir.with_suffix(".log")
    fd, cfg_path = tempfile.mkstemp(prefix=f".{run.run_dir.name}.", suffix=".yaml", dir=run.run_dir.parent)
    os.close(fd)
    try:
        Path(cfg_path).write_text(yaml.safe_dump(run.config, sort_keys=False), encoding="utf-8")
        # no --force: an unfinished run in run_dir continues from its checkpoint
        cmd = [python, "-m", "clift.cli", "run", cfg_path, "--quiet"]
        with open(log_path, "w", encoding="utf-8") as fh:
            code = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False).returncode
    finally:
        Path(cfg_path).unlink(missing_ok=True)
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
        raise TrainingError(
            f"suite run {run.label} {order_dir(run.order)} seed {run.seed} failed (exit code {code}); full log: "
            f"{log_path}\n" + "\n".join(f"    {line}" for line in tail) + "\nFix the cause and run the suite "
            "again: finished runs are reused."
        )


def run_suite(
    config: str | Path | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    isolation: Isolation = "process",
    dry_run: bool = False,
    report_only: bool = False,
    command: str | None = None,
    python: str | None = None,
) -> SuiteResult:
    """Run (or reuse) every method × order × seed of a suite and write ``suite.md`` and ``suite.json``.

    Args:
        config: a suite YAML path or mapping (see the module docstring).
        overrides: ``dotted.key=value`` overrides of the suite mapping (``seeds=[1,2]``,
            ``base.train.max_steps=2``).
        isolation: ``process`` runs each config in a fresh Python process (``python -m clift.cli run``;
            per-run peak memory is then exact, and memory is returned between runs); ``inline`` runs
            them in this process (faster to start; used by the tests).
        dry_run: only plan: report which runs would be reused, run or resumed; write nothing.
        report_only: run nothing; tabulate the runs already complete (others are listed as missing).
        command: the command line to record in ``suite.md`` (default ``clift compare <file>``).
        python: the interpreter for ``process`` isolation (default: this one).

    Returns:
        A :class:`SuiteResult`.

    Raises:
        ConfigError: an invalid suite or run config (before anything runs).
        ResumeError: output folders holding runs with other configs (before anything runs).
        TrainingError: a run that failed (``process`` isolation); finished runs stay reusable.
    """
    if isolation not in ("process", "inline"):
        raise ConfigError(f"isolation: got {isolation!r}; allowed: 'process', 'inline'.")
    suite = load_suite(config, overrides)
    runs = plan(suite.runs())
    if command is None:
        where = str(suite.source) if suite.source is not None else "<suite mapping>"
        command = shlex.join(["clift", "compare", where, *overrides])
    if dry_run:
        return SuiteResult(suite, runs, [], "", [])
    done: list[tuple[str, dict[str, Any]]] = []
    missing: list[str] = []
    for i, run in enumerate(runs, 1):
        tag = f"[{i}/{len(runs)}] {run.label} {order_dir(run.order)} seed {run.seed}"
        if run.state == "reuse":
            log.info("%s: reused (%s)", tag, run.run_dir)
            run.state = "reused"
        elif report_only:
            log.info("%s: not finished (report only)", tag)
            run.state = "missing"
            missing.append(f"{run.label}/{run.run_dir.name}")
            continue
        else:
            log.info("%s: %s (%s)", tag, "resuming" if run.state == "resume" else "running", run.run_dir)
            if isolation == "inline":
                _run_inline(run)
            else:
                _run_process(run, python or sys.executable)
            run.state = "ran"
        found = _read_results(run.run_dir)
        if found is None or found.get("status") != "complete":
            raise TrainingError(
                f"suite run {run.label} {order_dir(run.order)} seed {run.seed} ended without a complete "
                f"{RESULTS_FILE} in {run.run_dir}; run the suite again to retry it."
            )
        done.append((run.label, found))
    rows = aggregate([r for _, r in done], [label for label, _ in done])
    meta = {**_meta(suite), "isolation": isolation, "missing": missing}
    markdown = format_markdown(rows, meta, command)
    suite.output_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "suite": suite.name,
        "command": command,
        "isolation": isolation,
        "config": _json_normal(suite.raw),
        "rows": rows,
        "runs": [
            {
                "label": r.label,
                "method": r.method,
                "order": r.order,
                "seed": r.seed,
                # relative to output_dir, so a suite directory can be moved or committed as a whole
                "run_dir": relative_path(r.run_dir, suite.output_dir),
                "state": r.state,
            }
            for r in runs
        ],
    }
    paths = [
        atomic_write_text(suite.output_dir / SUITE_MD, markdown),
        atomic_write_json(suite.output_dir / SUITE_JSON, _json_normal(summary)),
    ]
    return SuiteResult(suite, runs, rows, markdown, paths)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------


def _cmd_compare(args: argparse.Namespace) -> int:
    if args.quiet:
        logging.getLogger("clift").setLevel(logging.WARNING)
    result = run_suite(
        args.config,
        args.overrides,
        isolation="inline" if args.inline else "process",
        dry_run=args.dry_run,
        report_only=args.report_only,
        command=shlex.join(["clift", "compare", *args.argv]),
    )
    if args.dry_run:
        for run in result.runs:
            print(f"{run.state:6s} {run.run_dir}")
        counts = {s: sum(r.state == s for r in result.runs) for s in ("new", "resume", "reuse")}
        print(f"{counts['new']} to run, {counts['resume']} to resume (unfinished), {counts['reuse']} reused")
        return 0
    print(result.markdown)
    print("written: " + ", ".join(str(p) for p in result.paths))
    return 0


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``clift compare CONFIG [overrides] [--dry-run|--report-only] [--inline] [-q]``.

    Args:
        subparsers: the object returned by ``ArgumentParser.add_subparsers``.

    Returns:
        The ``compare`` sub-parser (its handler is set with ``set_defaults(func=...)``; it returns an
        exit code).
    """
    p = subparsers.add_parser(
        "compare",
        help="run methods × orders × seeds on one benchmark; write a Markdown + JSON table",
        description="Run (or reuse) every method × order × seed of a suite YAML and tabulate AA, BWT, FWT "
        "and forgetting (mean ± std), wall time and peak memory into suite.md and suite.json.",
    )
    p.add_argument("config", help="suite YAML (see configs/suite/ and docs/suite.md)")
    p.add_argument("overrides", nargs="*", help="dotted overrides of the suite file, e.g. seeds=[1,2]")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true", help="show what would run or be reused; run nothing")
    mode.add_argument("--report-only", action="store_true", help="run nothing; tabulate the runs already finished")
    p.add_argument("--inline", action="store_true", help="run in this process instead of one process per run")
    p.add_argument("-q", "--quiet", action="store_true", help="no per-run progress lines")
    from clift import fanout  # --plan, --plan-json, --run, --launcher: suites beyond one machine

    fanout.add_flags(p)

    def handler(args: argparse.Namespace) -> int:
        args.argv = [args.config, *args.overrides]
        fanned = fanout.handle(args)
        return fanned if fanned is not None else _cmd_compare(args)

    p.set_defaults(func=handler)
    return p
