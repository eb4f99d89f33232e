"""The embedded data pack: a compact, deterministic copy of the benchmark splits shipped with clift.

Layout (``src/clift/data/pack/``, built by ``scripts/build_pack.py``)::

    manifest.json          counts, label distributions, source checksums, the rules used, pack version
    <task>.jsonl.gz        one JSON object per line: {"split", "id", "label", "sentence"}

The gzip streams are written with ``mtime=0`` and no file name, and the JSON with sorted keys, so a
rebuild from the same sources is byte-identical. Reading is cached per process: a test session that
builds many streams parses each task file once.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from clift.data.task import SPLITS, Example
from clift.errors import DataError

PACK_DIR = Path(__file__).resolve().parent / "pack"
MANIFEST = "manifest.json"
PACK_FORMAT = "clift-pack/1"


def pack_file_name(task: str) -> str:
    """The pack file of ``task`` (task names are used verbatim: ``SST-2.jsonl.gz``)."""
    return f"{task}.jsonl.gz"


def gzip_bytes(data: bytes) -> bytes:
    """Gzip ``data`` reproducibly: no timestamp, no embedded file name, maximum compression."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def encode_split_rows(splits: dict[str, list[Example]]) -> bytes:
    """The JSONL payload of one task file: every split's examples, in split then selection order."""
    lines = []
    for split in SPLITS:
        for ex in splits.get(split, []):
            row = {"split": split, "id": ex.id, "label": ex.label, "sentence": ex.sentence}
            lines.append(json.dumps(row, ensure_ascii=False, sort_keys=True))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _stat_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return str(path), st.st_mtime_ns, st.st_size


@lru_cache(maxsize=8)
def _read_manifest(key: tuple[str, int, int]) -> tuple[dict[str, Any], str]:
    raw = Path(key[0]).read_bytes()
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(
            f"pack manifest {key[0]!r} is not valid JSON ({err}); rebuild it with scripts/build_pack.py."
        ) from None
    return data, hashlib.sha256(raw).hexdigest()


def read_manifest(pack_dir: Path = PACK_DIR) -> tuple[dict[str, Any], str]:
    """The pack's manifest and the SHA-256 of its bytes (cached per process).

    Raises:
        DataError: when the manifest is missing or unreadable (a broken install or checkout).
    """
    path = Path(pack_dir) / MANIFEST
    if not path.is_file():
        raise DataError(
            f"the embedded data pack has no manifest at {str(path)!r}; reinstall clift, run "
            "`python scripts/build_pack.py` in a checkout, or set data.data_dir to an upstream "
            "CL_Benchmark folder."
        )
    return _read_manifest(_stat_key(path))


def pack_available(pack_dir: Path = PACK_DIR) -> bool:
    """Whether a pack manifest is present."""
    return (Path(pack_dir) / MANIFEST).is_file()


@lru_cache(maxsize=64)
def _read_task_file(key: tuple[str, int, int]) -> dict[str, tuple[Example, ...]]:
    path = key[0]
    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                row = json.loads(line)
                split = row.get("split")
                if split not in out:
                    raise DataError(f"{path}:{n}: unknown split {split!r} in the data pack; rebuild the pack.")
                out[split].append(Example(sentence=row["sentence"], label=row["label"], id=row.get("id", "")))
    except (OSError, EOFError, json.JSONDecodeError, KeyError) as err:
        raise DataError(f"data pack file {path!r} is corrupt ({err}); rebuild it with scripts/build_pack.py.") from None
    # tuples so the cached value cannot be mutated by a caller
    return {s: tuple(v) for s, v in out.items()}


def read_pack_task(task: str, pack_dir: Path = PACK_DIR) -> dict[str, tuple[Example, ...]]:
    """The pack's ``{split: examples}`` for ``task`` (cached per process; callers must copy to mutate).

    Raises:
        DataError: when the task's file is missing or corrupt.
    """
    path = Path(pack_dir) / pack_file_name(task)
    if not path.is_file():
        raise DataError(
            f"the data pack has no file {str(path)!r} for task {task!r}; rebuild it with "
            "scripts/build_pack.py or set data.data_dir to an upstream CL_Benchmark folder."
        )
    return _read_task_file(_stat_key(path))
