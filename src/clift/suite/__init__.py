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

``budgets: [32, 64, 160]`` (instead of ``data.train_per_task``) sweeps the training budget: one run per
method, budget, order and seed, rows ``<label>-n<budget>``, pooled and paired within a budget, plus a
data-efficiency figure (``docs/suite.md``).

Run ``(label, order, seed)`` goes to ``<output_dir>/<label>/o<order>-s<seed>/``. A run whose
``results.json`` says ``status: complete`` and whose resolved config equals the one the suite would
use (``name``, ``output_dir`` and ``log.*`` aside, as for a resume) is reused, not rerun; an unfinished
one is resumed from its last checkpoint (see ``clift.runner``); one with a different config is an error
naming the differing keys. Every conflict is reported before anything runs.

The table (:func:`aggregate`, a pure function of results dicts) has one row per label with AA, BWT,
FWT and forgetting as mean ± sample std over orders × seeds, wall time and peak memory, plus a
zero-shot row; it is written as ``suite.md`` and ``suite.json`` in ``output_dir``.

The package, by concern: :mod:`~clift.suite.schema` (the suite file, validation, the grid of run
configs), :mod:`~clift.suite.planning` (new / reuse / resume), :mod:`~clift.suite.execute` (running,
``suite.md`` / ``suite.json``), :mod:`~clift.suite.aggregation` (rows, pure), :mod:`~clift.suite.markdown`
(the table) and :mod:`~clift.suite.command` (``clift compare``). The names below are the public API.
"""

from clift.suite.aggregation import METRICS, aggregate, peak_memory_mb
from clift.suite.command import add_compare_parser
from clift.suite.execute import SUITE_JSON, SUITE_MD, Isolation, SuiteResult, run_suite
from clift.suite.markdown import format_markdown, format_table
from clift.suite.planning import plan
from clift.suite.schema import (
    SUITE_KEYS,
    Suite,
    SuiteMethod,
    SuiteRun,
    apply_suite_overrides,
    load_suite,
    order_dir,
)

__all__ = [
    "METRICS",
    "SUITE_JSON",
    "SUITE_KEYS",
    "SUITE_MD",
    "Isolation",
    "Suite",
    "SuiteMethod",
    "SuiteResult",
    "SuiteRun",
    "add_compare_parser",
    "aggregate",
    "apply_suite_overrides",
    "format_markdown",
    "format_table",
    "load_suite",
    "order_dir",
    "peak_memory_mb",
    "plan",
    "run_suite",
]
