"""clift.io: the shared YAML reader names the file, the line and the fix."""

from __future__ import annotations

import pytest

from clift.errors import ConfigError, DataError
from clift.io import marked_names, read_yaml, replace_marked_block


def test_read_yaml_parses_utf8_with_or_without_bom(tmp_path):
    plain, bom = tmp_path / "a.yaml", tmp_path / "b.yaml"
    plain.write_text("name: café\nn: 2\n", encoding="utf-8")
    bom.write_bytes("name: café\nn: 2\n".encode("utf-8-sig"))
    assert (
        read_yaml(plain, ConfigError, "config file")
        == read_yaml(bom, ConfigError, "config file")
        == {
            "name": "café",
            "n": 2,
        }
    )
    empty = tmp_path / "e.yaml"
    empty.write_text("")
    assert read_yaml(empty, ConfigError, "config file") is None


def test_read_yaml_errors_name_the_file_line_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"user stream file '.*nope\.yaml' does not exist; check data\.stream\.$"):
        read_yaml(tmp_path / "nope.yaml", DataError, "user stream file", "check data.stream")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: 1\nb: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin\.yaml:2: config file is not valid UTF-8; re-save it as UTF-8"):
        read_yaml(latin, ConfigError, "config file")
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml:\d+: benchmark file is not valid YAML"):
        read_yaml(broken, ConfigError, "benchmark file")


def test_replace_marked_block_only_touches_the_marked_block() -> None:
    text = "a\n<!-- results:x:orders -->\nold\n<!-- /results:x:orders -->\nb\n"
    assert replace_marked_block(text, "results:x:orders", "new\n") == (
        "a\n<!-- results:x:orders -->\nnew\n<!-- /results:x:orders -->\nb\n"
    )
    # the marker is literal text, not a pattern; a missing block is None, not an unchanged text
    assert replace_marked_block(text, "results:x", "new\n") is None
    assert replace_marked_block(text, "results:.*", "new\n") is None


def test_marked_names_lists_the_blocks_replace_marked_block_can_fill() -> None:
    text = "<!-- claims:a -->\n<!-- /claims:a -->\n<!-- results:a -->\n<!-- /results:a -->\n<!-- claims:b.2 -->\n"
    assert marked_names(text, "claims") == ["a", "b.2"]
    assert marked_names(text, "cl") == []  # the prefix is the whole word before ':'
    assert marked_names("<!-- claims:a --> inline\n", "claims") == []  # as replace_marked_block: own line only
