"""What clift may write and delete: its own folders only, never through a symlink.

clift marks every folder it creates for output with a small marker file (``.clift-run``,
``.clift-export``, ``.clift-report``). A non-empty folder without the marker is somebody else's:
clift refuses to write into it or delete it. Folders written by clift before markers existed are
recognised by clift's own files (``results.json`` / ``config.yaml`` / ``checkpoint`` for a run,
``clift_export.json`` for an export, ``report.md`` for a report), so they still resume and export.

No write or delete inside a run, export or report folder goes through a symbolic link: a link where
clift would write is refused, naming it, so its target is never touched.

The run-folder lock (``clift.lock``, :mod:`clift.runlock`) is taken before the folder is claimed, so a
folder holding nothing but it counts as empty.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path
from typing import Any

from clift.errors import CliftError

MARKERS = {"run": ".clift-run", "export": ".clift-export", "report": ".clift-report"}
LOCK_FILE = "clift.lock"  # the run-folder lock (clift.runlock), written before the folder is claimed
# files that identify a folder written by a clift without markers (backward compatibility)
_LEGACY = {
    "run": ("results.json", "config.yaml", "checkpoint"),
    "export": ("clift_export.json",),
    "report": ("report.md",),
}
# entries clift writes inside a run folder (an export may not be written over any of them)
RUN_ENTRIES = (
    "results.json",
    "config.yaml",
    "predictions.jsonl",
    "adapters",
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "report",
    MARKERS["run"],
    LOCK_FILE,
)
SHOWN = 200  # at most this many characters of a user value appear in a message


class UnsafePathError(CliftError, OSError):
    """A path clift was asked to write or delete is not clift's, is a symlink, or cannot be written."""


def shorten(value: object, limit: int = SHOWN) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a huge value never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}… ({len(text)} characters)"


def name_problems(name: object, key: str = "name") -> list[str]:
    """Problems with a run name used as a folder name (``runs/<name>``): separators, ``..``, empties.

    Returns:
        One message per problem (empty when the name is fine).
    """
    if not isinstance(name, str):
        return []  # the type check reports it
    bad = not name.strip() or "/" in name or "\\" in name or name in (".", "..") or "\x00" in name
    if bad:
        return [
            f"{key}: got {shorten(name)}; a run name becomes a folder under runs/, so it must be a non-empty "
            "name without '/', '\\' or '..'. Use a plain name, or set output_dir for another location."
        ]
    return []


def os_problem(err: OSError) -> str:
    """A short reason for an ``OSError`` on a write (read-only, permission, disk full, not a folder)."""
    reasons = {
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.ENOSPC: "no space left on the device",
        errno.EDQUOT: "the disk quota is exceeded",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EEXIST: "a file is in the way",
        errno.ENAMETOOLONG: "the name is too long",
    }
    return reasons.get(err.errno or 0, err.strerror or type(err).__name__)


def write_error(path: Path | str, err: OSError, what: str, fix: str) -> UnsafePathError:
    """The error for a failed write of ``what`` at ``path`` (reason from :func:`os_problem`)."""
    return UnsafePathError(f"cannot write the {what} at {shorten(str(path))}: {os_problem(err)}; {fix}")


def _holds_files(path: Path) -> bool:
    """Whether folder ``path`` holds anything but the run-folder lock."""
    return any(entry.name != LOCK_FILE for entry in path.iterdir())


def is_clift_folder(path: Path, kind: str) -> bool:
    """Whether ``path`` is a folder clift wrote as ``kind`` (marker, or clift's own files from before markers)."""
    path = Path(path)
    if path.is_symlink() or not path.is_dir():
        return False
    return (path / MARKERS[kind]).is_file() or any((path / f).exists() for f in _LEGACY[kind])


def refuse_symlinks(root: Path, *paths: Path) -> None:
    """Refuse when ``root``, or any existing component of ``paths`` below ``root``, is a symbolic link.

    Raises:
        UnsafePathError: naming the link.
    """
    root = Path(root)
    links = [root] if root.is_symlink() else []
    for path in paths:
        rel = Path(path).relative_to(root) if Path(path).is_relative_to(root) else None
        if rel is None:
            continue
        cur = root
        for part in rel.parts:
            cur = cur / part
            if cur.is_symlink():
                links.append(cur)
                break
    if links:
        raise UnsafePathError(
            f"{str(links[0])!r} is a symbolic link; clift never writes or deletes through links inside its "
            "folders. Remove the link (its target is untouched), or use another output folder."
        )


def check_folder(path: Path, kind: str, fix: str) -> Path:
    """Check, without changing anything, that ``path`` may become (or already is) clift's ``kind`` folder.

    Raises:
        UnsafePathError: if ``path`` is a symlink, a file, or a non-empty folder clift did not write.
    """
    path = Path(path)
    if path.is_symlink():
        raise UnsafePathError(
            f"{str(path)!r} is a symbolic link; clift writes its {kind} folders only as real folders; {fix}"
        )
    if path.exists() and not path.is_dir():
        raise UnsafePathError(f"{str(path)!r} is a file, not a folder; the {kind} output needs a folder; {fix}")
    if path.is_dir() and _holds_files(path) and not is_clift_folder(path, kind):
        raise UnsafePathError(
            f"{str(path)!r} is a non-empty folder that clift did not write (no {MARKERS[kind]} marker); clift "
            f"never writes into or deletes another tool's files; {fix}"
        )
    return path


def claim_folder(path: Path, kind: str, fix: str) -> Path:
    """Make ``path`` clift's ``kind`` folder: create it (with its marker) or check that it already is one.

    Args:
        path: the folder.
        kind: ``run``, ``export`` or ``report``.
        fix: what the user can do instead (appended to a refusal).

    Raises:
        UnsafePathError: if ``path`` is a file or a symlink, a non-empty folder clift did not write, or
            cannot be written (read-only, permission, disk full).
    """
    path = check_folder(path, kind, fix)
    # a folder clift wrote before markers existed is recognised by its files and left as it is (no new file
    # appears in published results); a new or empty folder gets the marker
    fresh = not path.is_dir() or not _holds_files(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if fresh or (path / MARKERS[kind]).is_symlink():
            mark_folder(path, kind)
    except OSError as err:
        if isinstance(err, UnsafePathError):
            raise
        raise write_error(path, err, f"{kind} folder", fix) from None
    return path


def mark_folder(path: Path, kind: str) -> None:
    """Write ``path``'s marker (again: a writer that replaced the whole folder, like PEFT's save, drops it)."""
    marker = Path(path) / MARKERS[kind]
    if marker.is_symlink():
        raise UnsafePathError(f"{str(marker)!r} is a symbolic link; remove it and rerun.")
    if not marker.is_file():
        marker.write_text(f"written by clift; this {kind} folder may be rewritten by clift\n", encoding="utf-8")


def remove_clift_folder(path: Path, kind: str) -> None:
    """Delete a folder clift wrote as ``kind``; never a symlink, never another tool's folder.

    ``shutil.rmtree`` unlinks links inside the tree without following them (it is symlink-attack safe
    on this platform when ``shutil.rmtree.avoids_symlink_attacks``).

    Raises:
        UnsafePathError: if ``path`` is a symlink, a file, or a non-empty folder clift did not write.
    """
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    claim_check = "use another folder, or empty it yourself"
    if path.is_symlink() or not path.is_dir():
        what = "a symbolic link" if path.is_symlink() else "a file"
        raise UnsafePathError(f"{str(path)!r} is {what}; clift deletes only folders it wrote; {claim_check}.")
    if _holds_files(path) and not is_clift_folder(path, kind):
        raise UnsafePathError(
            f"{str(path)!r} holds files clift did not write (no {MARKERS[kind]} marker); clift will not delete "
            f"it; {claim_check}."
        )
    try:
        shutil.rmtree(path)
    except OSError as err:
        raise write_error(
            path, err, f"{kind} folder (to start it over)", "fix its permissions or use another folder."
        ) from None


def refuse_link_target(path: Path) -> Path:
    """``path`` if writing it will not go through a symlink (a pre-existing link there is refused)."""
    path = Path(path)
    if path.is_symlink():
        raise UnsafePathError(
            f"{str(path)!r} is a symbolic link; clift will not write through it (its target is untouched). "
            "Remove the link, or write the report elsewhere with --out."
        )
    return path


def export_target(run_dir: Path, out: Path) -> None:
    """Refuse an export destination that is the run folder, holds it, or is one of the run's own entries.

    Raises:
        UnsafePathError: naming the destination and the fix.
    """
    run_abs, out_abs = Path(os.path.abspath(run_dir)), Path(os.path.abspath(out))
    fix = "choose a new folder with --out (e.g. RUN_DIR/export-adapter, the default)."
    if out_abs == run_abs or run_abs.is_relative_to(out_abs):
        raise UnsafePathError(
            f"--out {str(out)!r} is the run folder or holds it; an export never replaces a run; {fix}"
        )
    inside = out_abs.is_relative_to(run_abs)
    if inside and (out_abs.parent != run_abs or out_abs.name in RUN_ENTRIES):
        raise UnsafePathError(f"--out {str(out)!r} is inside the run's own files; {fix}")
    if is_clift_folder(out_abs, "run"):
        raise UnsafePathError(f"--out {str(out)!r} is another run's folder; an export never replaces a run; {fix}")


def unexpected_error_line(err: BaseException) -> str:
    """The CLI's one line for an error clift did not anticipate (a disk error gets its reason and path)."""
    if isinstance(err, OSError) and err.filename is not None:
        where = shorten(str(err.filename))
        return (
            f"clift: error: cannot access {where}: {os_problem(err)}; free space, fix permissions or choose "
            "another folder (run with --debug for the traceback)."
        )
    text = str(err).splitlines()[0] if str(err) else ""
    text = text if len(text) <= SHOWN else text[: SHOWN - 1] + "…"
    return f"clift: error: unexpected {type(err).__name__}: {text} (run with --debug for the traceback)"


YAML_MAX_VALUES = 100_000  # a config, stream or suite file has hundreds; an alias bomb has billions


def load_yaml_bounded(text: str, max_values: int = YAML_MAX_VALUES) -> Any:
    """``yaml.safe_load`` that refuses documents expanding past ``max_values`` values through aliases.

    Anchors and aliases (``&a`` / ``*a``) share one node, so a few lines can stand for 10^8 values (a "YAML
    bomb") that any later walk or message would expand. The composed node graph is measured first, each
    shared node counted once per reference, without expanding it.

    Raises:
        yaml.YAMLError: for invalid YAML (as ``yaml.safe_load``).
        ValueError: when the expansion exceeds ``max_values`` (the message says so).
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        sizes: dict[int, int] = {}

        def size(n: Any, depth: int = 0) -> int:
            if id(n) in sizes:
                return sizes[id(n)]
            if depth > 500:  # a recursive alias; nothing a config needs
                raise ValueError("the YAML nests deeper than 500 levels (a recursive alias?)")
            sizes[id(n)] = 1  # a cycle counts once while it is being measured
            if isinstance(n, yaml.SequenceNode):
                total = 1 + sum(size(c, depth + 1) for c in n.value)
            elif isinstance(n, yaml.MappingNode):
                total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
            else:
                total = 1
            sizes[id(n)] = min(total, max_values + 1)
            return sizes[id(n)]

        if size(node) > max_values:
            raise ValueError(
                f"the YAML expands to more than {max_values:,} values through anchors and aliases (&/*); "
                "refusing it (an alias bomb?). Write the values out, or use fewer aliases."
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


# weight files transformers can load that are pickles (loading one may run code inside it)
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


def refuse_pickle_weights(folder: Path) -> None:
    """Refuse a local model folder whose weights are not safetensors, before transformers opens anything.

    A pickle payload in ``pytorch_model.bin`` would run on load with some torch versions; clift loads
    safetensors only (and passes ``use_safetensors=True``), whatever the torch version.

    Raises:
        UnsafePathError: naming the pickle file and the fix.
    """
    folder = Path(folder)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    if pickles:
        raise UnsafePathError(
            f"model folder {str(folder)!r} holds pickle weights ({', '.join(pickles[:3])}) and no .safetensors "
            "file; clift loads safetensors only, since a pickle file can run code when it is loaded. Convert it "
            "with `model.save_pretrained(folder, safe_serialization=True)` in a trusted environment."
        )


def close_aliases(name: str, aliases: list[str]) -> list[str]:
    """Built-in aliases close to ``name`` (a typo such as ``tiny-lama``); empty for an org/model hub id."""
    import difflib

    if "/" in name or Path(name).exists():
        return []
    return difflib.get_close_matches(name, aliases, n=2, cutoff=0.75)
