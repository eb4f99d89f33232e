"""What clift verifies before it trusts files it wrote earlier: checkpoints, results.json, data sources.

* Every checkpoint file's SHA-256 is recorded in its ``state.json`` (``"files"``) and checked on resume
  and export; a mismatch is refused, naming the file. A checkpoint written before hashes existed loads
  as *unverified* with a one-line warning.
* Every field read back from ``state.json`` is validated (types and ranges; the stage index against the
  run's stages), and every tensor's shape against the model it is loaded into.
* On resume, every data source's hash recorded in ``results.json`` (``data``) is compared with the
  file's current hash; a changed file is refused, naming it with both hashes.
* ``results.json`` is checked for the shape export, report and resume rely on.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from clift.errors import DataError, ResumeError

log = logging.getLogger("clift")

FILES_KEY = "files"  # state.json: {file name: sha256} of the checkpoint's tensor files
_FIX = "rerun with --force to start the run over (or restore the file from a backup)"


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def hash_files(folder: Path) -> dict[str, str]:
    """``{name: sha256}`` of every ``*.safetensors`` file in a checkpoint folder being written."""
    return {p.name: sha256_of(p) for p in sorted(Path(folder).glob("*.safetensors"))}


def verify_checkpoint_files(folder: Path, state: Mapping[str, Any]) -> None:
    """Compare the checkpoint's files with the hashes in its ``state.json``.

    Raises:
        ResumeError: naming the first file whose bytes changed or that is missing.
    """
    recorded = state.get(FILES_KEY)
    if recorded is None:
        log.warning("checkpoint %s has no file hashes (written by an older clift): loading it unverified", folder)
        return
    if not isinstance(recorded, Mapping):
        raise ResumeError(f"{folder / 'state.json'}: '{FILES_KEY}' must map file names to SHA-256; {_FIX}.")
    for name, digest in recorded.items():
        path = Path(folder) / str(name)
        if not path.is_file():
            raise ResumeError(f"checkpoint file {str(path)!r} is missing; {_FIX}.")
        actual = sha256_of(path)
        if actual != digest:
            raise ResumeError(
                f"checkpoint file {str(path)!r} was modified or damaged: its SHA-256 is {actual}, the checkpoint "
                f"recorded {digest}; {_FIX}."
            )


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def check_state_fields(folder: Path, state: Any) -> None:
    """Validate the fields of a checkpoint's ``state.json`` before anything uses them.

    Raises:
        ResumeError: naming the field, its value and what is allowed.
    """
    where = f"{Path(folder) / 'state.json'}"
    if not isinstance(state, Mapping):
        raise ResumeError(f"{where} must hold a JSON object, got {type(state).__name__}; {_FIX}.")
    problems = []
    for key in ("stage", "step"):
        if not _is_int(state.get(key)) or state[key] < 0:
            problems.append(f"'{key}' is {str(state.get(key))[:40]!r}, expected an integer >= 0")
    if "skipped" in state and (not _is_int(state["skipped"]) or state["skipped"] < 0):
        problems.append(f"'skipped' is {str(state['skipped'])[:40]!r}, expected an integer >= 0")
    for key in ("tracked", "losses", "extra_losses"):
        if key in state and not isinstance(state[key], list):
            problems.append(f"'{key}' must be a list")
    for key in ("losses", "extra_losses"):
        if isinstance(state.get(key), list) and not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool)) for v in state[key]
        ):
            problems.append(f"'{key}' must hold numbers")
    if "results" in state and not isinstance(state["results"], Mapping):
        problems.append("'results' must be an object")
    if state.get("optimizer") is not None and state.get("step") == 0:
        problems.append("a stage-boundary checkpoint (step 0) holds an optimizer state")
    if problems:
        raise ResumeError(f"{where} is invalid: {'; '.join(problems)}; {_FIX}.")


def check_stage_range(ckpt: Any, n_stages: int, folder: Path) -> None:
    """Refuse a checkpoint whose stage index lies outside the run's ``n_stages`` stages.

    Raises:
        ResumeError: naming the value and the allowed range.
    """
    top = n_stages if ckpt.step == 0 else n_stages - 1
    if not 0 <= ckpt.stage <= top:
        raise ResumeError(
            f"{Path(folder) / 'state.json'}: 'stage' is {ckpt.stage} (step {ckpt.step}) but the run has "
            f"{n_stages} stage(s), so it must lie in 0..{top}; {_FIX}."
        )


def check_shapes(tensors: Mapping[str, torch.Tensor], named: Mapping[str, torch.Tensor], what: str) -> None:
    """Refuse checkpoint tensors whose shapes differ from the model's (before any is copied in).

    Raises:
        ResumeError: naming the first tensor with both shapes.
    """
    for name, value in tensors.items():
        target = named.get(name)
        if target is not None and tuple(value.shape) != tuple(target.shape):
            raise ResumeError(
                f"{what}: tensor {name!r} has shape {tuple(value.shape)}, the model expects "
                f"{tuple(target.shape)}; the checkpoint is damaged or from another run; {_FIX}."
            )


# --------------------------------------------------------------------------------------------------
# results.json
# --------------------------------------------------------------------------------------------------

_REQUIRED = {"status": str, "run": Mapping}
_TYPED = {"tasks": list, "stages": list, "matrix": list, "timings": Mapping, "metrics": Mapping, "config": Mapping}
_RESULTS_FIX = "it is damaged or not written by clift; restore it, or rerun the run with --force to start over."


def read_results_text(path: Path) -> str:
    """The text of a run's ``results.json``; an unreadable file gets one clear error.

    Raises:
        DataError: for a file that is not UTF-8 text or is a directory, naming it and the fix.
    """
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{path}: results file is not UTF-8 text; {_RESULTS_FIX}") from None
    except IsADirectoryError:
        raise DataError(f"{path} is a directory, not clift's results file; {_RESULTS_FIX}") from None


def parse_results_json(text: str, path: str | Path) -> dict[str, Any]:
    """Parse ``results.json`` text and check the fields every reader relies on (``status``, ``run``).

    The other fields are type-checked by :meth:`clift.results.RunRecord.from_dict`.

    Raises:
        DataError: for truncated or non-JSON text, a value that is not an object, or a missing required field.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path}:{err.lineno}: results file is not valid JSON ({err.msg}); {_RESULTS_FIX}") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: results file must hold a JSON object, got {type(data).__name__}; {_RESULTS_FIX}")
    require_result_fields(Path(path), data, tuple(_REQUIRED))
    return data


def require_result_fields(path: Path, data: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    """Refuse a results file that lacks one of ``keys`` (or holds it with the wrong type).

    Raises:
        DataError: naming the file, the field and the fix.
    """
    for key in keys:
        tp = _REQUIRED.get(key) or _TYPED.get(key) or object
        if not isinstance(data.get(key), tp):
            got = "missing" if key not in data else f"a {type(data[key]).__name__}"
            raise DataError(f"{path}: results file field {key!r} is {got}; {_RESULTS_FIX}")


# --------------------------------------------------------------------------------------------------
# data sources
# --------------------------------------------------------------------------------------------------


def _hashes(obj: Any, path: str = "") -> Iterator[tuple[str, str, str]]:
    """``(dotted key, file label, sha256)`` for every ``*sha256`` string in a provenance record."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            dotted = f"{path}.{key}" if path else str(key)
            if str(key).endswith("sha256") and isinstance(value, str):
                label = obj.get("path") or obj.get(str(key).replace("sha256", "file")) or dotted
                yield dotted, str(label), value
            elif str(key).endswith("sha256") and isinstance(value, Mapping):  # {task: {file: sha256}}
                for task, files in value.items():
                    for name, digest in files.items() if isinstance(files, Mapping) else ():
                        yield f"{dotted}.{task}.{name}", f"{task}/{name}", str(digest)
            else:
                yield from _hashes(value, dotted)


def check_data_unchanged(recorded: Any, current: Any, run_dir: Path) -> None:
    """Refuse to resume when a data source's hash differs from the one recorded when the run started.

    Args:
        recorded: ``results.json``'s ``data`` record (provenance) of the run being resumed.
        current: the provenance of the data as it is now.
        run_dir: the run folder (for the message).

    Raises:
        ResumeError: naming the file, the recorded and the current hash, and the fix.
    """
    now = {key: digest for key, _, digest in _hashes(current)}
    for key, label, digest in _hashes(recorded):
        if key in now and now[key] != digest:
            raise ResumeError(
                f"data file {label!r} changed since run {str(run_dir)!r} started: recorded SHA-256 {digest}, "
                f"now {now[key]}. Resuming would train later stages on other data than the recorded one. "
                "Restore the file, or pass --force (or use a new output_dir) to start the run over."
            )
