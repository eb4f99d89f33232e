"""The support matrix: each method under each memory feature and engine is tested, refused or untested.

The table is data here and rendered into the README (``python -m clift.support --write README.md``);
``tests/test_support.py`` keeps both true: refused cells are computed from the same functions that refuse
at run time (:func:`clift.engines.engine_problem`, :func:`clift.memory.base_weight_training`), every
tested cell names the test that covers it (and that test's method list holds the method), and the README
holds exactly :func:`render_markdown`'s table.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clift.engines import PROJECTED, Engine, engine_problem
from clift.memory import base_weight_training

COLUMNS = ("single GPU bf16", "QLoRA 4-bit", "gradient checkpointing", "DDP", "FSDP", "ZeRO-2", "ZeRO-3")
ENGINE_COLUMNS = {
    "DDP": Engine("ddp", 2),
    "FSDP": Engine("fsdp", 2, True, False, "FSDP"),
    "ZeRO-2": Engine("zero2", 2, False, True, "ZeRO-2"),
    "ZeRO-3": Engine("zero3", 2, True, True, "ZeRO-3"),
}
START, END = "<!-- support-matrix:start -->", "<!-- support-matrix:end -->"


@dataclass(frozen=True)
class Cell:
    """One method × column entry.

    Attributes:
        status: ``tested``, ``refused`` or ``untested``.
        why: how it is tested, why it is refused, or why it is not tested (a few words).
        test: for tested cells, ``path::function::LIST``: the test and the module-level list of methods it runs.
    """

    status: Literal["tested", "refused", "untested"]
    why: str
    test: str | None = None


#: tested cells: column -> (how, test reference, methods); tests/test_support.py checks that the referenced
#: test's method list (``path::function::LIST``) holds these methods
MAIN = ("seq_lora", "inc_lora", "olora", "deal", "gorp", "replay")
TESTED = {
    "QLoRA 4-bit": (
        "tiny-llama 4-bit on CPU",
        "tests/test_memory.py::test_qlora_run_on_cpu::QLORA_METHODS",
        ("seq_lora", "inc_lora", "olora", "deal", "replay"),
    ),
    "gradient checkpointing": (
        "losses equal to off, CPU",
        "tests/test_memory.py::test_gradient_checkpointing_changes_memory_not_results::CHECKPOINT_METHODS",
        MAIN,
    ),
    "DDP": (
        "2 CPU processes (gloo) = 1 process",
        "tests/test_engines.py::test_ddp_two_processes_match_one_for_each_method::METHODS",
        MAIN,
    ),
}
#: why a cell that is neither tested nor refused is untested
UNTESTED = {
    "single GPU bf16": "no GPU run yet; benchmarks/gpu_check.py",
    "QLoRA 4-bit": "not in the CPU test",
    "gradient checkpointing": "not in the CPU test",
    "DDP": "not in the 2-process test",
    "FSDP": "Accelerate runs FSDP on GPUs only",
    "ZeRO-2": "DeepSpeed needs GPUs under Accelerate",
    "ZeRO-3": "DeepSpeed needs GPUs under Accelerate",
}


def cell(method_cfg: object, column: str) -> Cell:
    """The support of ``column`` for the method of ``method_cfg`` (a method config instance)."""
    name = method_cfg.method_name()  # type: ignore[attr-defined]
    if column == "QLoRA 4-bit" and base_weight_training(method_cfg) is not None:
        return Cell("refused", "trains base weights")
    if column in ENGINE_COLUMNS and engine_problem(name, ENGINE_COLUMNS[column]) is not None:
        why = "projection needs whole 2-D gradients" if name in PROJECTED else "hooks read whole weights"
        return Cell("refused", why)
    if column in TESTED:
        how, ref, methods = TESTED[column]
        if name in methods:
            return Cell("tested", how, ref)
    return Cell("untested", UNTESTED[column])


def support_matrix() -> dict[str, dict[str, Cell]]:
    """``{method: {column: Cell}}`` for every registered method at its default config."""
    from clift.methods import METHODS, build_method_config

    return {m: {c: cell(build_method_config({"name": m}), c) for c in COLUMNS} for m in METHODS.names()}


def render_markdown() -> str:
    """The support matrix as a Markdown table (between the README's markers)."""
    lines = ["| method | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for method, row in support_matrix().items():
        lines.append(f"| `{method}` | " + " | ".join(f"{c.status} ({c.why})" for c in row.values()) + " |")
    return "\n".join(lines)


def replace_section(text: str, table: str) -> str:
    """``text`` with the part between the support-matrix markers replaced by ``table``."""
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """``python -m clift.support [--write README.md]``: print the table, or rewrite it in a file."""
    parser = argparse.ArgumentParser(prog="python -m clift.support", description=__doc__.splitlines()[0])
    parser.add_argument("--write", metavar="FILE", help="replace the table between the markers in FILE")
    args = parser.parse_args(argv)
    table = render_markdown()
    if not args.write:
        print(table)
        return 0
    path = Path(args.write)
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{path} has no {START} … {END} markers; add them where the table belongs.", file=sys.stderr)
        return 2
    path.write_text(replace_section(text, table), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
