"""The README's support matrix is the one in clift.support, and every cell in it is true."""

from __future__ import annotations

import ast
from pathlib import Path

from clift.engines import engine_problem
from clift.memory import base_weight_training
from clift.methods import METHODS, build_method_config
from clift.support import COLUMNS, END, ENGINE_COLUMNS, START, TESTED, render_markdown, replace_section, support_matrix

ROOT = Path(__file__).resolve().parents[1]


def _module_list(path: Path, name: str) -> list[str]:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"{path} has no list {name}")


def test_readme_holds_the_generated_matrix():
    readme = (ROOT / "README.md").read_text()
    section = readme.split(START, 1)[1].split(END, 1)[0]
    assert section.strip() == render_markdown(), "run `python -m clift.support --write README.md`"
    assert replace_section(readme, render_markdown()) == readme


def test_every_method_and_column_has_a_cell():
    matrix = support_matrix()
    assert set(matrix) == set(METHODS.names())
    assert all(tuple(row) == COLUMNS for row in matrix.values())


def test_refused_cells_are_exactly_what_clift_refuses():
    for method, row in support_matrix().items():
        cfg = build_method_config({"name": method})
        assert (row["QLoRA 4-bit"].status == "refused") == (base_weight_training(cfg) is not None), method
        for column, engine in ENGINE_COLUMNS.items():
            assert (row[column].status == "refused") == (engine_problem(method, engine) is not None), (method, column)


def test_tested_cells_name_tests_that_run_the_method():
    for column, (_how, ref, methods) in TESTED.items():
        path, func, list_name = ref.split("::")
        source = ROOT / path
        assert f"def {func}(" in source.read_text(), ref
        listed = _module_list(source, list_name)
        assert set(methods) <= set(listed), (column, set(methods) - set(listed))
    for method, row in support_matrix().items():
        for column, cell in row.items():
            assert (cell.status == "tested") == (column in TESTED and method in TESTED[column][2]), (method, column)
