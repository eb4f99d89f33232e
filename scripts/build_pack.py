"""Build clift's embedded data pack from an upstream ``CL_Benchmark`` folder (deterministic).

Reads ``<source>/<FAMILY>/<task>/{train,test,labels}.json`` for the 15 tasks of the catalog
(``src/clift/data/benchmarks/tasks.yaml``) and writes ``src/clift/data/pack/``:

* ``<task>.jsonl.gz``: the task's train / dev / test examples, one JSON object per line
  (``{"split", "id", "label", "sentence"}``; ``id`` is ``<source file>#<record number>``);
* ``manifest.json``: per task and split the counts and label distribution, where each split came from,
  what was dropped and why, the SHA-256 of every source file and of every pack file, the rules used
  and the pack version.

The rules are those of :mod:`clift.data.carve` with ``PACK_RULES``: at most 1000 train and 500 test
examples per task, a dev split of min(200, 20 % of the train pool) carved from train, a missing test
split (yelp, IMDB, MultiRC) carved from train and a missing train split (dbpedia) carved from test;
every selection label-balanced with a fixed seed. Tasks whose files are missing (yahoo) are recorded
as unavailable. Rebuilding from the same files gives byte-identical output (gzip mtime 0, sorted JSON).

    python scripts/build_pack.py                       # from ../shared/data/cl_benchmark
    python scripts/build_pack.py --source /path/to/CL_Benchmark
    python scripts/build_pack.py --check               # rebuild in memory, compare with the committed pack
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # run from a checkout without installing

from clift.data.carve import PACK_RULES, RULE_TEXT, carve_splits, label_counts  # noqa: E402
from clift.data.catalog import task_catalog  # noqa: E402
from clift.data.pack import MANIFEST, PACK_DIR, PACK_FORMAT, encode_split_rows, gzip_bytes, pack_file_name  # noqa: E402
from clift.data.records import RecordProblems, sha256_file  # noqa: E402
from clift.data.sources import check_labels_file, read_task_file  # noqa: E402
from clift.data.specs import TaskSpec  # noqa: E402
from clift.data.task import SPLITS  # noqa: E402
from clift.io import atomic_write  # noqa: E402

DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "cl_benchmark"
#: bump when the rules, the format or the source files change
PACK_VERSION = 1
MAX_PACK_BYTES = 15 * 1024 * 1024


LICENCE = "LICENSE.O-LoRA"


def build_task(spec: TaskSpec, source: Path) -> tuple[dict[str, Any], bytes | None]:
    """Split one task; returns its manifest entry and its gzip payload (``None`` if unavailable)."""
    folder = source / spec.folder
    sources = {
        f: {"sha256": sha256_file(folder / f)}
        for f in ("train.json", "test.json", "labels.json")
        if (folder / f).is_file()
    }
    entry: dict[str, Any] = {"family": spec.family, "folder": spec.folder, "labels": list(spec.labels)}
    if "train.json" not in sources and "test.json" not in sources:
        found = ", ".join(sources) or "no files"
        entry.update(
            available=False,
            reason=(
                f"upstream {spec.folder}/train.json and {spec.folder}/test.json were not available when the "
                f"pack was built (found: {found})"
            ),
            sources=sources,
        )
        return entry, None
    check_labels_file(folder / "labels.json", spec)
    problems = RecordProblems(f"task {spec.name!r} in {folder}")
    pools: dict[str, Any] = {"train": None, "test": None}
    dropped: dict[str, int] = {}
    for split in pools:
        path = folder / f"{split}.json"
        if path.is_file():
            pools[split], drops = read_task_file(path, spec, problems)
            sources[path.name]["records"] = len(json.loads(path.read_text(encoding="utf-8")))
            dropped.update({f"{split}_{k}": v for k, v in drops.items()})
    problems.raise_if_any()
    result = carve_splits(spec.name, pools["train"], pools["test"], PACK_RULES)
    dropped.update(result.dropped)
    payload = gzip_bytes(encode_split_rows({s: result.split(s) for s in SPLITS}))
    entry.update(
        available=True,
        file=pack_file_name(spec.name),
        file_sha256=hashlib.sha256(payload).hexdigest(),
        file_bytes=len(payload),
        sources=sources,
        splits={
            s: {
                "n": len(result.split(s)),
                "origin": result.origin[s],
                "labels": label_counts(result.split(s)),
            }
            for s in SPLITS
        },
        dropped=dict(sorted(dropped.items())),
    )
    return entry, payload


def build_pack(source: Path, out: Path, tasks: Sequence[str] | None = None, write: bool = True) -> dict[str, Any]:
    """Build the pack (or the named ``tasks`` of it) from ``source`` into ``out``.

    Args:
        source: the upstream ``CL_Benchmark`` folder.
        out: the pack folder to write.
        tasks: only these catalog tasks (for tests); default all.
        write: when False, build in memory only (for ``--check``).

    Returns:
        The manifest, with the payloads under the private key ``"_payloads"`` when ``write`` is False.

    Raises:
        SystemExit: for an unknown task, a missing source folder or a pack over the size limit.
    """
    if not source.is_dir():
        raise SystemExit(f"source folder {source} does not exist; pass --source /path/to/CL_Benchmark.")
    catalog = task_catalog()
    names = list(tasks) if tasks else sorted(catalog.tasks, key=str.lower)
    unknown = [n for n in names if n not in catalog.tasks]
    if unknown:
        raise SystemExit(f"unknown task(s) {unknown}; the catalog has: {', '.join(catalog.tasks)}.")
    entries: dict[str, Any] = {}
    payloads: dict[str, bytes] = {}
    for name in names:
        entry, payload = build_task(catalog.tasks[name], source)
        entries[name] = entry
        if payload is not None:
            payloads[entry["file"]] = payload
        status = f"{entry['file_bytes'] / 1e6:.2f} MB" if payload else "UNAVAILABLE"
        counts = " ".join(f"{s}={entry['splits'][s]['n']}" for s in SPLITS) if payload else entry["reason"]
        print(f"{name:>8}: {counts}  ({status})", file=sys.stderr)
    total = sum(len(p) for p in payloads.values())
    if total > MAX_PACK_BYTES:
        raise SystemExit(f"the pack would be {total / 1e6:.1f} MB, over the {MAX_PACK_BYTES / 1e6:.1f} MB limit.")
    manifest = {
        "format": PACK_FORMAT,
        "pack_version": PACK_VERSION,
        "built_by": "scripts/build_pack.py",
        "source": "O-LoRA CL_Benchmark (MIT licence), layout <FAMILY>/<task>/{train,test,labels}.json",
        "licence_file": LICENCE,
        "rules": {"params": PACK_RULES.to_dict(), "text": list(RULE_TEXT)},
        "total_bytes": total,
        "tasks": entries,
    }
    if write:
        out.mkdir(parents=True, exist_ok=True)
        for fname, payload in payloads.items():
            atomic_write(out / fname, lambda p, data=payload: p.write_bytes(data))
            (out / fname).chmod(0o644)  # package data must be world-readable once installed
        if tasks is None:  # a full build owns the folder: drop files of tasks that no longer exist
            for stale in out.glob("*.jsonl.gz"):
                if stale.name not in payloads:
                    stale.unlink()
        # the MIT licence must travel with data derived from the upstream files
        licence = (source / LICENCE).read_bytes() if (source / LICENCE).is_file() else None
        if licence is None:
            raise SystemExit(f"{source / LICENCE} is missing; the pack must ship the upstream licence.")
        atomic_write(out / LICENCE, lambda p: p.write_bytes(licence))
        (out / LICENCE).chmod(0o644)
        text = json.dumps(manifest, indent=1, ensure_ascii=False, sort_keys=False) + "\n"
        atomic_write(out / MANIFEST, lambda p: p.write_text(text, encoding="utf-8"))
        (out / MANIFEST).chmod(0o644)
    else:
        manifest["_payloads"] = payloads
    return manifest


def check_pack(source: Path, out: Path) -> int:
    """Rebuild in a temporary folder and compare byte for byte with ``out``; returns an exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        build_pack(source, Path(tmp))
        bad = []
        for new in sorted(Path(tmp).iterdir()):
            old = out / new.name
            if not old.is_file() or old.read_bytes() != new.read_bytes():
                bad.append(new.name)
        extra = sorted({p.name for p in out.iterdir()} - {p.name for p in Path(tmp).iterdir()})
    if bad or extra:
        print(f"pack differs from a rebuild: changed {bad}, unexpected {extra}", file=sys.stderr)
        return 1
    print("pack matches a rebuild byte for byte", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="upstream CL_Benchmark folder")
    parser.add_argument("--out", type=Path, default=PACK_DIR, help="pack folder to write")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of tasks (default: all)")
    parser.add_argument("--check", action="store_true", help="compare a rebuild with --out instead of writing")
    args = parser.parse_args(argv)
    if args.check:
        return check_pack(args.source, args.out)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()] if args.tasks else None
    manifest = build_pack(args.source, args.out, tasks)
    print(f"wrote {args.out} ({manifest['total_bytes'] / 1e6:.2f} MB)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
