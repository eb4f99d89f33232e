"""File I/O: atomic writes (a crash never leaves a half-written result, config or checkpoint behind),
paths relative to the files that name them, and the one YAML reader every config, suite, benchmark and
stream file goes through."""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from clift.safety import load_yaml_bounded


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write a file through a temporary sibling and ``os.replace`` it into place.

    Args:
        path: the final file path (its folder is created).
        write: called with the temporary path; must create the file there.

    Returns:
        The final path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as fh:  # flush to disk before the rename makes it visible
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Atomically write ``text`` (UTF-8) to ``path``."""
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Atomically write ``data`` as indented JSON (NaN is written as null-safe ``NaN`` only if present)."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def replace_marked_block(text: str, marker: str, body: str) -> str | None:
    """``text`` with what lies between ``<!-- marker -->`` and ``<!-- /marker -->`` replaced by ``body``.

    The generated tables of README.md live in such blocks; everything outside them is left as it is.

    Returns:
        The new text, or None when ``text`` has no such block.
    """
    pattern = re.compile(rf"(<!-- {re.escape(marker)} -->\n).*?(<!-- /{re.escape(marker)} -->)", re.S)
    if not pattern.search(text):
        return None
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def marked_names(text: str, prefix: str) -> list[str]:
    """The ``name`` of every ``<!-- prefix:name -->`` block of ``text`` (see :func:`replace_marked_block`), in order."""
    return re.findall(rf"<!-- {re.escape(prefix)}:([A-Za-z0-9._-]+) -->\n", text)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def relative_path(path: str | Path, start: str | Path) -> str:
    """``path`` as seen from the folder ``start`` (POSIX separators), so files that name each other can be
    moved or committed together; ``path`` unchanged where no relative form exists (another drive)."""
    try:
        return Path(os.path.relpath(Path(path).resolve(), Path(start).resolve())).as_posix()
    except ValueError:
        return str(path)


def read_yaml(path: str | Path, error: type[Exception], what: str, hint: str = "") -> Any:
    """Parse a YAML file (UTF-8, with or without a byte-order mark).

    Args:
        path: the file.
        error: the exception class to raise (e.g. ``ConfigError``, ``DataError``); called with one message.
        what: how to name the file in a message (``"config file"``).
        hint: the fix for a missing file (``"check data.stream"``).

    Returns:
        The parsed document (``None`` for an empty file); callers check its shape.

    Raises:
        error: for a missing file, bytes that are not UTF-8, or invalid YAML — naming the file and, for
            the last two, the line.
    """
    p = Path(path)
    if p.is_dir():
        raise error(f"{what} {str(p)!r} is a directory, not a file; give the path of the file itself.")
    if not p.is_file():
        raise error(f"{what} {str(p)!r} does not exist" + (f"; {hint}." if hint else "."))
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise error(f"{p}:{line}: {what} is not valid UTF-8; re-save it as UTF-8.") from None
    try:
        return load_yaml_bounded(text)  # refuses alias bombs (clift.safety)
    except ValueError as err:
        raise error(f"{p}: {what}: {err}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise error(f"{p}{line}: {what} is not valid YAML: {err}") from None
