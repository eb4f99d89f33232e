"""The method interface's shared pieces: state checks and their one error."""

from __future__ import annotations

import pytest

from clift.errors import MethodStateError, ResumeError
from clift.methods.base import check_state


def test_check_state_accepts_a_fitting_state():
    check_state("m", {"a": 1, "b": [], "c": None}, {"a": int, "b": list}, {"c": (dict, type(None)), "d": dict})


@pytest.mark.parametrize(
    ("state", "key", "expected"),
    [
        ([1], "<root>", "a mapping with keys 'a', 'b', got a list"),
        ({"b": {}}, "a", "this key, which is missing"),
        ({"a": 1, "z": 2}, "z", "no such key (keys: 'a', 'b')"),
        ({"a": "1"}, "a", "a int, got a str"),
        ({"a": 1, "b": 3}, "b", "a dict or None, got a int"),
    ],
)
def test_check_state_names_the_key_what_was_expected_and_the_fix(state, key, expected):
    with pytest.raises(MethodStateError) as err:
        check_state("m", state, {"a": int}, {"b": (dict, type(None))})
    assert isinstance(err.value, ResumeError) and err.value.key == key
    assert str(err.value).startswith(f"m state, key {key!r}: expected {expected}")
    assert str(err.value).endswith("resume with the same method config, or rerun with --force to start the run over.")


def test_nested_paths_are_dotted():
    with pytest.raises(MethodStateError, match=r"key 'terms\.open\.calls'"):
        check_state("m", {"calls": 1.5}, {"calls": int}, where="terms.open")
