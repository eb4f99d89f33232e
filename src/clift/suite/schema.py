"""The suite file: its dataclasses, its validation, and the grid of run configs it plans."""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clift.config import RunConfig, apply_overrides, load_yaml
from clift.errors import ConfigError
from clift.results import _clean

#: top-level keys of a suite file
SUITE_KEYS = (
    "name",
    "base",
    "method_defaults",
    "methods",
    "only",
    "orders",
    "seeds",
    "budgets",
    "output_dir",
    "reference",
    "reuse_from",
)

#: the suite's shared zero-shot evaluations (:mod:`clift.zero_shot_cache`), under its output_dir
ZERO_SHOT_CACHE = ".zero-shot"

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_ORDER_RE = re.compile(r"^(?:o|order)?[_-]?(\d+)$")


@dataclass
class SuiteMethod:
    """One entry of ``methods``.

    Attributes:
        label: the row name and folder name (defaults to the method name).
        name: the registered method name.
        overrides: the method's own config keys (``method_defaults`` already merged in).
        run: run-config sections for this entry only, deep-merged over ``base`` (``{train: {lr: 1e-5}}``).
        seeds: this entry's own seeds (``seeds:`` in the entry), replacing the suite's; None: the suite's.
    """

    label: str
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    seeds: list[int] | None = None


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
        entry: the method entry's own label (``label`` without the budget suffix).
        budget: ``data.train_per_task`` of this run when the suite sweeps ``budgets`` (else None).
    """

    label: str
    method: str
    order: str
    seed: int
    run_dir: Path
    config: dict[str, Any]
    resolved: dict[str, Any]
    state: str = "new"
    entry: str = ""
    budget: int | None = None


@dataclass
class Suite:
    """A validated suite file.

    Attributes:
        name: the suite's name (the file's stem unless ``name`` is set).
        base: the base run config (without ``method``, ``seed``, ``output_dir``).
        methods: the method entries, in table order (those ``only:`` names, when it is set).
        orders / seeds: the grid.
        output_dir: where runs, ``suite.md`` and ``suite.json`` go.
        source: the suite file, if read from one.
        raw: the suite mapping after overrides (written into suite.json).
        references: the row labels every other row is compared with, run by run over the same (order,
            seed) pairs, one table each (``reference:`` in the file: a label or a list of labels; default
            ``seq_lora``; ``null`` for no comparison).
        budgets: training examples per task to sweep (``budgets:`` in the file), or None. Each method entry
            then runs once per budget, as the row ``<label>-n<budget>`` with ``data.train_per_task`` set.
        reuse_from: output folders of other suites (``reuse_from:``); a run this suite would start is
            copied from ``<folder>/<entry label>/<o…-s…>`` instead when a complete run with the same
            resolved config is there (:func:`clift.suite.planning.adopt_finished`).
    """

    name: str
    base: dict[str, Any]
    methods: list[SuiteMethod]
    orders: list[str]
    seeds: list[int]
    output_dir: Path
    source: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    references: tuple[str, ...] = ("seq_lora",)
    budgets: list[int] | None = None
    reuse_from: tuple[Path, ...] = ()

    def runs(self) -> list[SuiteRun]:
        """Every (method, budget, order, seed) run, methods outermost, each validated into its config.

        Raises:
            ConfigError: listing every run config that does not validate.
        """
        out, problems = [], []
        for m in self.methods:
            for budget in self.budgets or [None]:
                label = m.label if budget is None else budget_label(m.label, budget)
                for order in self.orders:
                    for seed in m.seeds or self.seeds:
                        try:
                            out.append(self._run(m, label, budget, order, seed))
                        except ConfigError as err:
                            where = f"methods: {label!r} (order {order}, seed {seed})"
                            problems += [f"{where}: {p}" for p in err.problems]
        if problems:
            raise ConfigError(dedupe(problems))
        return out

    def _run(self, m: SuiteMethod, label: str, budget: int | None, order: str, seed: int) -> SuiteRun:
        run_dir = self.output_dir / label / f"{order_dir(order)}-s{seed}"
        cfg = deep_merge(self.base, m.run)
        cfg["name"] = f"{label}-{order_dir(order)}-s{seed}"
        cfg["output_dir"] = str(run_dir)
        cfg["seed"] = seed
        cfg["method"] = {"name": m.name, **m.overrides}
        data = cfg.setdefault("data", {})
        if isinstance(data, dict):
            data["order"] = order
            if budget is not None:
                data["train_per_task"] = budget
        resolved = json_normal(RunConfig.from_dict(cfg).to_dict())
        return SuiteRun(label, m.name, order, seed, run_dir, cfg, resolved, entry=m.label, budget=budget)


def budget_label(label: str, budget: int) -> str:
    """The row (and folder) name of a method entry at one training budget: ``seq_lora-n64``."""
    return f"{label}-n{budget}"


def order_dir(order: str | int) -> str:
    """The folder name of an order: ``1``, ``"1"``, ``"o1"``, ``"order1"`` → ``o1``; other names lower-cased."""
    text = str(order).strip().lower()
    m = _ORDER_RE.fullmatch(text)
    return f"o{int(m.group(1))}" if m else re.sub(r"[^a-z0-9._-]+", "_", text)


def order_value(order: str | int) -> str:
    """The value a suite writes into ``data.order``: ``"1"`` for 1, ``"o1"``, ``"order1"``; others as given."""
    text = str(order).strip()
    m = _ORDER_RE.fullmatch(text.lower())
    return str(int(m.group(1))) if m else text


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``over`` merged in, section by section (``over`` wins)."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dedupe(items: list[str]) -> list[str]:
    """``items`` without repeats, in first-appearance order."""
    return list(dict.fromkeys(items))


def json_normal(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples → lists, non-finite floats → null)."""
    return json.loads(json.dumps(_clean(obj)))


def apply_suite_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Dotted overrides of a suite mapping (``seeds=[1,2,3]``, ``base.train.max_steps=2``, ``output_dir=runs/x``).

    The run config's parser (:func:`clift.config.apply_overrides`) with no shorthands: a suite's keys
    are written out in full.

    Raises:
        ConfigError: for an override without ``=`` or one that descends into a non-mapping.
    """
    return apply_overrides(raw, overrides, shorthands={}, example="seeds=[1,2]", what="the suite file")


def _read_raw(config: str | Path | Mapping[str, Any], overrides: Sequence[str]) -> tuple[dict[str, Any], Path | None]:
    if isinstance(config, (str, Path)):
        source = Path(config)
        return apply_suite_overrides(load_yaml(source), overrides), source
    if isinstance(config, Mapping):
        return apply_suite_overrides(copy.deepcopy(dict(config)), overrides), None
    raise ConfigError(f"suite: got {type(config).__name__}; expected a YAML path or a mapping.")


def _base_config(raw: Mapping[str, Any], source: Path | None, problems: list[str]) -> tuple[dict[str, Any], Any]:
    """The base run config (read from its file when ``base`` is a path) and the seed it names."""
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
    return base, base_seed


def _method_entry(
    i: int, entry: Any, defaults: Mapping[str, Any], fields_of: Any, problems: list[str]
) -> SuiteMethod | None:
    from clift.methods import METHODS

    where = f"suite.methods[{i}]"
    if isinstance(entry, str):
        entry = {"name": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        problems.append(f"{where}: got {entry!r}; expected a method name or a mapping with a `name`.")
        return None
    entry = dict(entry)
    name = entry.pop("name")
    label = str(entry.pop("label", name))
    run_over = entry.pop("run", None) or {}
    seeds = _seeds(entry, None, problems, f"{where}.seeds") if "seeds" in entry else None
    entry.pop("seeds", None)
    if not isinstance(run_over, dict) or "method" in run_over:
        problems.append(
            f"{where}.run: got {run_over!r}; expected a mapping of run-config sections for this entry "
            "only (e.g. {train: {lr: 1.0e-5}}), without `method`."
        )
        run_over = {}
    if name not in METHODS:
        problems.append(f"{where}: {METHODS.unknown_message(name)}")
        return None
    if not _LABEL_RE.match(label):
        problems.append(f"{where}: label {label!r} is not a valid folder name; use letters, digits, '.', '_' or '-'.")
        return None
    merged = {k: v for k, v in defaults.items() if k in fields_of(name)}
    merged.update(entry)
    return SuiteMethod(label, name, merged, run_over, seeds)


def _methods(raw: Mapping[str, Any], problems: list[str]) -> list[SuiteMethod]:
    """The ``methods`` entries with ``method_defaults`` merged in; problems are collected."""
    from clift.methods import METHODS

    def fields_of(name: str) -> set[str]:
        return {f.name for f in dataclasses.fields(METHODS.get(name).config_cls)}

    defaults = raw.get("method_defaults") or {}
    if not isinstance(defaults, dict):
        problems.append(f"suite.method_defaults: got {defaults!r}; expected a mapping of method keys.")
        defaults = {}
    entries = raw.get("methods")
    if not isinstance(entries, list) or not entries:
        problems.append(
            "suite.methods: missing or empty; give a list of method names or mappings, e.g. "
            "[seq_lora, {name: olora, lambda1: 0.1, label: olora-0.1}]."
        )
        entries = []
    methods = [m for i, e in enumerate(entries) if (m := _method_entry(i, e, defaults, fields_of, problems))]
    known = {f for m in methods for f in fields_of(m.name)}
    unused = sorted(set(defaults) - known)
    if unused and methods:
        problems.append(
            f"suite.method_defaults: {', '.join(map(repr, unused))} is a field of none of the listed methods; "
            "check the spelling (`clift ls methods -v` lists each method's fields)."
        )
    labels = [m.label for m in methods]
    for dup in sorted({x for x in labels if labels.count(x) > 1}):
        problems.append(f"suite.methods: label {dup!r} is used twice; give the entries distinct `label`s.")
    return methods


def _label_list(value: Any) -> list[str] | None:
    """One label or a non-empty list of labels as a list; None when ``value`` is neither."""
    given = [value] if isinstance(value, str) else value
    if not isinstance(given, list) or not given or not all(isinstance(v, str) and v for v in given):
        return None
    return given


def _only(value: Any, methods: list[SuiteMethod], problems: list[str]) -> list[SuiteMethod]:
    """The entries ``only:`` keeps (a label or a list of labels; null keeps every entry), in table order."""
    if value is None:
        return methods
    given = _label_list(value)
    labels = [m.label for m in methods]
    if given is None:
        problems.append(f"suite.only: got {value!r}; give an entry label or a list of labels, e.g. [seq_lora, gorp].")
        return methods
    unknown = [x for x in given if x not in labels]
    if unknown and methods:
        problems.append(
            f"suite.only: {', '.join(map(repr, unknown))} is not a label of suite.methods; "
            f"the labels are: {', '.join(labels)}."
        )
    return [m for m in methods if m.label in given]


def _orders(raw: Mapping[str, Any], base: Mapping[str, Any], problems: list[str]) -> list[str]:
    data = base.get("data") if isinstance(base.get("data"), dict) else {}
    orders_raw = raw.get("orders", [data.get("order", 1)])
    if not isinstance(orders_raw, list) or not orders_raw:
        problems.append(f"suite.orders: got {orders_raw!r}; expected a non-empty list, e.g. [1, 2, 3].")
        orders_raw = []
    # one spelling per order (1, "1", "o1", "order1" → "1"), so the resolved configs compare equal
    orders = [order_value(o) for o in orders_raw]
    if len({order_dir(o) for o in orders}) != len(orders):
        problems.append(f"suite.orders: {orders_raw!r} names an order twice.")
    if data.get("tasks") and len(orders) > 1:
        problems.append(
            "suite.base.data.tasks is set, so data.order has no effect and every order would run the same "
            "tasks; remove data.tasks or list a single order."
        )
    return orders


def _seeds(raw: Mapping[str, Any], base_seed: Any, problems: list[str], where: str = "suite.seeds") -> list[int]:
    seeds_raw = raw.get("seeds", [base_seed])
    seeds: list[int] = []
    if not isinstance(seeds_raw, list) or not seeds_raw:
        problems.append(f"{where}: got {seeds_raw!r}; expected a non-empty list of integers, e.g. [42].")
        return seeds
    for s in seeds_raw:
        if isinstance(s, bool) or not isinstance(s, int):
            problems.append(f"{where}: {s!r} is not an integer; seeds must be integers, e.g. [1, 2, 3].")
        else:
            seeds.append(s)
    if len(set(seeds)) != len(seeds):
        problems.append(f"{where}: {seeds_raw!r} lists a seed twice.")
    return seeds


def _budgets(
    raw: Mapping[str, Any], base: Mapping[str, Any], methods: list[SuiteMethod], problems: list[str]
) -> list[int] | None:
    """The ``budgets`` sweep (training examples per task), or None when the suite has none."""
    if raw.get("budgets") is None:
        return None
    values = raw["budgets"]
    fix = "expected a non-empty list of positive integers (training examples per task), e.g. [32, 64, 160, 320]"
    if not isinstance(values, list) or not values:
        problems.append(f"suite.budgets: got {values!r}; {fix}.")
        return None
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int) or v < 1]
    if bad:
        problems.append(f"suite.budgets: {bad[0]!r} is not a positive integer; {fix}.")
        return None
    if len(set(values)) != len(values):
        problems.append(f"suite.budgets: {values!r} lists a budget twice.")
    data = base.get("data") if isinstance(base.get("data"), dict) else {}
    setters = ["base.data"] if "train_per_task" in data else []
    setters += [f"methods {m.label!r} run.data" for m in methods if "train_per_task" in (m.run.get("data") or {})]
    if setters:
        problems.append(
            f"suite.budgets sets data.train_per_task for every run, but {', '.join(setters)} also sets it; "
            "remove train_per_task there (the budgets replace it)."
        )
    return list(values)


def _reuse_from(value: Any, problems: list[str]) -> tuple[Path, ...]:
    """``reuse_from:`` as a tuple of folders: one path, a list of paths, or nothing."""
    if value is None:
        return ()
    given = [value] if isinstance(value, str) else value
    if not isinstance(given, list) or not all(isinstance(v, str) and v for v in given):
        problems.append(
            f"suite.reuse_from: got {value!r}; give the output_dir of another suite (e.g. runs/suite/learnable) "
            "or a list of them."
        )
        return ()
    return tuple(Path(v) for v in given)


def _references(value: Any, problems: list[str]) -> tuple[str, ...]:
    """``reference:`` as a tuple of labels: one label, a list of labels, or null (no paired table)."""
    if value is None:
        return ()
    given = _label_list(value)
    if given is None:
        problems.append(
            f"suite.reference: got {value!r}; give a method label of the suite (e.g. seq_lora), a list of labels "
            "(e.g. [seq_lora, inc_lora]) or null."
        )
        return ()
    if len(set(given)) != len(given):
        problems.append(f"suite.reference: {given!r} names a label twice; list each reference once.")
    return tuple(dict.fromkeys(given))


def load_suite(config: str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Suite:
    """Read and validate a suite (a YAML path or a mapping); every problem is reported at once.

    ``base`` may be a mapping or a path to a run config YAML (relative to the suite file). Relative
    ``output_dir`` paths are relative to the working directory, as for run configs. Defaults: ``orders``
    = the base config's ``data.order`` (or 1), ``seeds`` = its ``seed`` (or 42), ``output_dir`` =
    ``runs/suite/<name>``, no ``budgets`` sweep.

    Raises:
        ConfigError: unknown keys, a missing or invalid ``methods`` list, bad labels, duplicate labels,
            an ``only`` label that no entry has, bad orders or seeds, a ``base`` that sets ``method``, or
            any run config that fails validation.
    """
    raw, source = _read_raw(config, overrides)
    problems: list[str] = []
    for key in raw:
        if key not in SUITE_KEYS:
            problems.append(f"suite: unknown key {key!r}; allowed keys: {', '.join(SUITE_KEYS)}.")
    base, base_seed = _base_config(raw, source, problems)
    methods = _only(raw.get("only"), _methods(raw, problems), problems)
    orders = _orders(raw, base, problems)
    seeds = _seeds(raw, base_seed, problems)
    budgets = _budgets(raw, base, methods, problems)
    name = str(raw.get("name") or (source.stem if source is not None else "suite"))
    output_dir = Path(str(raw.get("output_dir") or Path("runs") / "suite" / name))
    references = _references(raw.get("reference", "seq_lora"), problems)
    reuse_from = _reuse_from(raw.get("reuse_from"), problems)
    if budgets and methods:
        labels = [m.label for m in methods]
        clashes = sorted({budget_label(m, b) for m in labels for b in budgets} & set(labels))
        if clashes:
            problems.append(f"suite.methods: label {clashes[0]!r} is also the name of a budget row; rename that entry.")
    if problems:
        raise ConfigError(problems)
    suite = Suite(name, base, methods, orders, seeds, output_dir, source, raw, references, budgets, reuse_from)
    suite.runs()  # validates every run config now, before anything is run
    return suite
