"""Bad inputs (issue 15): every case ends with one clear line and an exact exit code — never a traceback, a
silent wrong result, or a deleted file clift did not write.

One finished and one crashed (resumable) tiny run are made once per module and copied into each test's
folder, so every case tampers with a real run directory of its own.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from clift.cli import main
from clift.errors import TrainingError
from clift.runner import Runner, run

STREAM_FILES = ("a_train.jsonl", "a_test.jsonl", "b_train.jsonl", "b_test.jsonl", "stream.yaml")


def _rows(task: str, split: str, n: int) -> list[dict]:
    words = ["red", "blue", "green", "small", "large", "quick", "slow"]
    return [
        {"text": f"{task} {split} {i} {words[i % 7]} {words[(i * 3) % 7]} item", "label": ("pos", "neg")[i % 2]}
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _write_stream(folder: Path, tasks: dict[str, dict[str, str]] | None = None) -> Path:
    """A two-task user stream (24 train / 8 test examples each) in ``folder``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    for t in ("a", "b"):
        _write_jsonl(folder / f"{t}_train.jsonl", _rows(t, "train", 24))
        _write_jsonl(folder / f"{t}_test.jsonl", _rows(t, "test", 8))
    entries = tasks or {
        "ta": {"train": "a_train.jsonl", "test": "a_test.jsonl"},
        "tb": {"train": "b_train.jsonl", "test": "b_test.jsonl"},
    }
    doc = {"name": "s", "text_field": "text", "tasks": [{"name": k, **v} for k, v in entries.items()]}
    path = folder / "stream.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _config(path: Path, stream: Path, output_dir: Path, **extra: object) -> Path:
    cfg = {
        "name": "t",
        "output_dir": str(output_dir),
        "model": "tiny-llama",
        "data": {"stream": str(stream)},
        "train": {"max_steps": 3, "batch_size": 4},
        "eval": {"mode": "rank"},
        "log": {"progress": False},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


class _Crash(Exception):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A finished run (``run``) and a run that crashed in its second stage (``partial``), made once."""
    root = tmp_path_factory.mktemp("bad_inputs")
    stream = _write_stream(root / "data")
    assert main(["run", str(_config(root / "run.yaml", stream, root / "run")), "-q"]) == 0
    original = Runner.train_stage

    def crash_in_second_stage(self, model, method, stage, resume=None):
        if stage.index == 1:
            raise _Crash("injected")
        return original(self, model, method, stage, resume)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Runner, "train_stage", crash_in_second_stage)
        with pytest.raises(_Crash):
            run(_config(root / "partial.yaml", stream, root / "partial"))
    return root


@dataclass
class Env:
    """One test's copies: ``run`` (complete), ``partial`` (stage 1 of 2 done), their configs, the stream."""

    root: Path
    run: Path
    partial: Path
    run_cfg: Path
    partial_cfg: Path
    stream: Path

    def new_cfg(self, name: str = "new", **extra: object) -> Path:
        """A config for a fresh run in ``root/<name>``."""
        return _config(self.root / f"{name}.yaml", self.stream, self.root / name, **extra)

    def cfg_with_stream(self, stream: Path) -> Path:
        return _config(self.root / "other.yaml", stream, self.root / "other")


@pytest.fixture
def env(base: Path, tmp_path: Path) -> Env:
    saved = {name: (base / "data" / name).read_bytes() for name in STREAM_FILES}
    shutil.copytree(base / "run", tmp_path / "run", symlinks=True)
    shutil.copytree(base / "partial", tmp_path / "partial", symlinks=True)
    stream = base / "data" / "stream.yaml"  # the stored config names this path, so copies keep it
    e = Env(
        tmp_path,
        tmp_path / "run",
        tmp_path / "partial",
        _config(tmp_path / "run.yaml", stream, tmp_path / "run"),
        _config(tmp_path / "partial.yaml", stream, tmp_path / "partial"),
        stream,
    )
    yield e
    for name, raw in saved.items():  # a case that edits the shared stream files must not leak
        (base / "data" / name).write_bytes(raw)


# ------------------------------------------------------------------------------------------------
# tampering helpers
# ------------------------------------------------------------------------------------------------


def _flip_bytes(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    mid = len(raw) - 16  # inside the tensor data, past the header
    raw[mid : mid + 8] = bytes(b ^ 0x7F for b in raw[mid : mid + 8])
    path.write_bytes(bytes(raw))


def _edit_state(folder: Path, **changes: object) -> None:
    state = json.loads((folder / "checkpoint" / "state.json").read_text())
    for key, value in changes.items():
        if value is _DROP:
            state.pop(key, None)
        else:
            state[key] = value
    (folder / "checkpoint" / "state.json").write_text(json.dumps(state))


_DROP = object()


def _legacy(folder: Path) -> Path:
    """Make ``folder`` look written by the previous clift: no marker, no checkpoint hashes."""
    (folder / ".clift-run").unlink(missing_ok=True)
    _edit_state(folder, files=_DROP)
    return folder


def _model_file(folder: Path) -> Path:
    return folder / "checkpoint" / "model.safetensors"


def _break_header(folder: Path) -> None:
    raw = _model_file(folder).read_bytes()
    _model_file(folder).write_bytes(b"\xff" * 8 + raw[8:])


def _cut_short(folder: Path) -> None:
    raw = _model_file(folder).read_bytes()
    _model_file(folder).write_bytes(raw[: len(raw) // 2])


def _wrong_shape(folder: Path) -> None:
    tensors = load_file(str(_model_file(folder)))
    name = sorted(tensors)[0]
    tensors[name] = torch.zeros(3, 5)
    save_file(tensors, str(_model_file(folder)))


def _results(folder: Path, text: str) -> None:
    (folder / "results.json").write_text(text)


def _foreign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "thesis.tex").write_text("years of work\n")
    return folder


def _pickle_model(folder: Path, torch_zip: bool) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    target = folder / "pytorch_model.bin"
    payload = _Payload(str(folder.parent / "PWNED"))
    if torch_zip:
        torch.save({"weight": torch.zeros(2), "payload": payload}, target)
    else:
        target.write_bytes(pickle.dumps(payload))
    return folder


class _Payload:
    """A pickle that would create a file if it were ever unpickled."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _bomb(path: Path) -> Path:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for name in "bcdefgh":
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 10) + "]")
        prev = name
    lines.append(f"name: *{prev}")  # 10^8 leaves once expanded
    path.write_text("\n".join(lines) + "\n")
    return path


def _oserror(monkeypatch, code: int, target: str = "mkdir") -> None:
    """Make directory creation (``mkdir``) or file syncing (``fsync``: a full disk) fail with ``code``."""
    if target == "mkdir":

        def fail(self, *a, **k):
            raise OSError(code, os.strerror(code), str(self))

        monkeypatch.setattr(Path, "mkdir", fail)
    else:

        def fail_sync(fd):
            raise OSError(code, os.strerror(code), "results.json")

        monkeypatch.setattr(os, "fsync", fail_sync)


def _offline(monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def _boom(monkeypatch) -> None:
    def fail(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("clift.config.load_config", fail)


def _stream_variant(env: Env, **task_b: str) -> Path:
    folder = env.root / "variant"
    return _write_stream(folder, {"ta": {"train": "a_train.jsonl", "test": "a_test.jsonl"}, "tb": dict(task_b)})


def _conflict_stream(env: Env) -> Path:
    path = _write_stream(env.root / "conflict")
    rows = _rows("a", "train", 24)
    rows.append({**rows[3], "label": "pos" if rows[3]["label"] == "neg" else "neg"})  # same text, other label
    _write_jsonl(path.parent / "a_train.jsonl", rows)
    return path


def _single_class_stream(env: Env) -> Path:
    path = _write_stream(env.root / "single")
    _write_jsonl(path.parent / "b_train.jsonl", [{**r, "label": "pos"} for r in _rows("b", "train", 24)])
    _write_jsonl(path.parent / "b_test.jsonl", [{**r, "label": "pos"} for r in _rows("b", "test", 8)])
    return path


def _long_csv_stream(env: Env) -> Path:
    path = _write_stream(env.root / "csv")
    rows = _rows("a", "train", 24)
    rows[0]["text"] = "long " * 30_000  # 150,000 characters: over csv's default field limit
    lines = ["text,label"] + [f'"{r["text"]}",{r["label"]}' for r in rows]
    (path.parent / "a_train.csv").write_text("\n".join(lines) + "\n")
    doc = yaml.safe_load(path.read_text())
    doc["tasks"][0]["train"] = "a_train.csv"
    path.write_text(yaml.safe_dump(doc))
    return path


def _report_link(env: Env) -> list[str]:
    assert main(["report", str(env.run)]) == 0
    png = env.run / "report" / "t-matrix.png"
    png.unlink()
    (env.root / "precious.png").write_bytes(b"user's picture")
    png.symlink_to(env.root / "precious.png")
    return ["report", str(env.run)]


def _adapters_link(env: Env) -> list[str]:
    shutil.rmtree(env.partial / "adapters")
    _foreign(env.root / "elsewhere")
    (env.partial / "adapters").symlink_to(env.root / "elsewhere")
    return ["run", str(env.partial_cfg)]


def _data_changed(env: Env) -> list[str]:
    path = env.stream.parent / "b_train.jsonl"
    path.write_text(path.read_text().replace("item", "thing"))
    return ["run", str(env.partial_cfg)]


# ------------------------------------------------------------------------------------------------
# the corpus: (id, setup(env, monkeypatch) -> argv, exit code, message fragment)
# ------------------------------------------------------------------------------------------------

Setup = Callable[[Env, pytest.MonkeyPatch], list[str]]
CASES: list[tuple[str, Setup, int, str]] = [
    # ---- silent or wrong ----
    ("export-out-is-run", lambda e, m: ["export", str(e.run), "--out", str(e.run)], 2, "is the run folder"),
    ("export-out-holds-run", lambda e, m: ["export", str(e.run), "--out", str(e.root)], 2, "the run folder or holds"),
    (
        "export-out-inside-run",
        lambda e, m: ["export", str(e.run), "--out", str(e.run / "adapters" / "x")],
        2,
        "inside the run's own files",
    ),
    (
        "export-out-foreign-dir",
        lambda e, m: ["export", str(e.run), "--out", str(_foreign(e.root / "mine"))],
        2,
        "clift did not write",
    ),
    (
        "run-force-foreign-dir",
        lambda e, m: ["run", str(e.new_cfg("mine")), "--force"] if _foreign(e.root / "mine") else [],
        2,
        "clift did not write",
    ),
    (
        "run-into-foreign-dir",
        lambda e, m: ["run", str(e.new_cfg("mine"))] if _foreign(e.root / "mine") else [],
        2,
        "clift did not write",
    ),
    ("report-through-png-symlink", lambda e, m: _report_link(e), 2, "is a symbolic link"),
    ("resume-through-adapters-symlink", lambda e, m: _adapters_link(e), 2, "is a symbolic link"),
    ("name-with-parent-dirs", lambda e, m: ["validate", str(e.new_cfg()), "name=../../x"], 2, "without '/'"),
    ("name-with-separator-run", lambda e, m: ["run", str(e.new_cfg()), "name=a/b"], 2, "without '/'"),
    ("data-changed-before-resume", lambda e, m: _data_changed(e), 2, "changed since run"),
    (
        "export-checkpoint-bytes-flipped",
        lambda e, m: (_flip_bytes(_model_file(e.run)), ["export", str(e.run)])[1],
        2,
        "model.safetensors' was modified or damaged",
    ),
    (
        "resume-checkpoint-bytes-flipped",
        lambda e, m: (_flip_bytes(_model_file(e.partial)), ["run", str(e.partial_cfg)])[1],
        2,
        "model.safetensors' was modified or damaged",
    ),
    (
        "resume-stage-99",
        lambda e, m: (_edit_state(e.partial, stage=99), ["run", str(e.partial_cfg)])[1],
        2,
        "'stage' is 99",
    ),
    ("export-stage-99", lambda e, m: (_edit_state(e.run, stage=99), ["export", str(e.run)])[1], 2, "'stage' is 99"),
    (
        "resume-stage-negative",
        lambda e, m: (_edit_state(e.partial, stage=-1), ["run", str(e.partial_cfg)])[1],
        2,
        "expected an integer >= 0",
    ),
    (
        "resume-step-string",
        lambda e, m: (_edit_state(e.partial, step="3"), ["run", str(e.partial_cfg)])[1],
        2,
        "'step' is '3'",
    ),
    (
        "diverging-lr-without-clipping",
        lambda e, m: ["run", str(e.new_cfg()), "train.lr=1e6", "train.max_grad_norm=null"],
        2,
        "training diverged in stage 1 ('ta') at optimizer step 1",
    ),
    (
        "conflicting-duplicate-labels",
        lambda e, m: ["validate", str(e.cfg_with_stream(_conflict_stream(e)))],
        2,
        "has 2 different labels ('neg', 'pos')",
    ),
    (
        "single-class-task",
        lambda e, m: ["validate", str(e.cfg_with_stream(_single_class_stream(e)))],
        0,
        "a single class",
    ),
    # ---- raw tracebacks before ----
    (
        "override-invalid-yaml",
        lambda e, m: ["validate", str(e.new_cfg()), "train.adam_betas=[0.9,"],
        2,
        "the value is not valid YAML",
    ),
    ("seed-negative-validate", lambda e, m: ["validate", str(e.new_cfg()), "seed=-1"], 2, "a seed must be an integer"),
    ("seed-negative-run", lambda e, m: ["run", str(e.new_cfg()), "seed=-1"], 2, "a seed must be an integer"),
    (
        "seed-huge",
        lambda e, m: ["run", str(e.new_cfg()), "seed=99999999999999999999"],
        2,
        "a seed must be an integer from 0 to 4294967295",
    ),
    ("data-seed-huge", lambda e, m: ["validate", str(e.new_cfg()), "data.seed=-5"], 2, "data.seed: got -5"),
    (
        "output-dir-is-file",
        lambda e, m: ["run", str(_config(e.root / "o.yaml", e.stream, e.run / "results.json"))],
        2,
        "is a file, not a folder",
    ),
    (
        "output-dir-unwritable-proc",
        lambda e, m: ["run", str(_config(e.root / "o.yaml", e.stream, Path("/proc/clift-test/run")))],
        2,
        "cannot write the run folder at '/proc/clift-test/run'",
    ),
    (
        "output-dir-read-only",
        lambda e, m: (_oserror(m, errno.EROFS), ["run", str(e.new_cfg())])[1],
        2,
        "the file system is read-only",
    ),
    (
        "output-dir-disk-full",
        lambda e, m: (_oserror(m, errno.ENOSPC, "fsync"), ["run", str(e.new_cfg())])[1],
        2,
        "no space left on the device",
    ),
    (
        "stream-format-5",
        lambda e, m: ["validate", str(e.cfg_with_stream(_stream_variant(e, train="b_train.jsonl", format=5)))],
        2,
        "'format' must be one of json, jsonl, csv, parquet, got '5'",
    ),
    (
        "model-folder-raw-pickle-validate",
        lambda e, m: ["validate", str(e.new_cfg()), f"model={_pickle_model(e.root / 'm', False)}"],
        2,
        "clift loads safetensors only",
    ),
    (
        "model-folder-raw-pickle-run",
        lambda e, m: ["run", str(e.new_cfg()), f"model={_pickle_model(e.root / 'm', False)}"],
        2,
        "clift loads safetensors only",
    ),
    (
        "model-folder-torch-zip-run",
        lambda e, m: ["run", str(e.new_cfg()), f"model={_pickle_model(e.root / 'm', True)}"],
        2,
        "holds pickle weights (pytorch_model.bin)",
    ),
    *[
        (
            f"results-{label}-{cmd}",
            (
                lambda e, m, text=text, cmd=cmd: (
                    _results(e.run, text),
                    {
                        "export": ["export", str(e.run)],
                        "report": ["report", str(e.run)],
                        "resume": ["run", str(e.run_cfg)],
                    }[cmd],
                )[1]
            ),
            2,
            fragment,
        )
        for label, text, fragment in (
            ("truncated", '{"status": "compl', "results file is not valid JSON"),
            ("empty-object", "{}", "results file field 'status' is missing"),
            ("wrong-type", "[]", "results file must hold a JSON object, got list"),
        )
        for cmd in ("export", "report", "resume")
    ],
    *[
        (
            f"checkpoint-{label}-{cmd}{'-legacy' if legacy else ''}",
            (
                lambda e, m, tamper=tamper, cmd=cmd, legacy=legacy: (
                    _legacy(e.run if cmd == "export" else e.partial) if legacy else None,
                    tamper(e.run if cmd == "export" else e.partial),
                    ["export", str(e.run)] if cmd == "export" else ["run", str(e.partial_cfg)],
                )[2]
            ),
            2,
            (legacy_fragment if legacy else "was modified or damaged"),
        )
        for label, tamper, legacy_fragment in (
            ("broken-header", _break_header, "is unreadable"),
            ("cut-short", _cut_short, "is unreadable"),
            ("wrong-shape", _wrong_shape, "has shape (3, 5), the model expects"),
        )
        for cmd in ("export", "resume")
        for legacy in (False, True)
    ],
    (
        "export-out-is-file",
        lambda e, m: (
            (e.root / "f.txt").write_text("mine"),
            ["export", str(e.run), "--out", str(e.root / "f.txt")],
        )[1],
        2,
        "is a file, not a folder",
    ),
    (
        "report-out-is-file",
        lambda e, m: ((e.root / "f.txt").write_text("mine"), ["report", str(e.run), "--out", str(e.root / "f.txt")])[1],
        2,
        "is a file, not a folder",
    ),
    (
        "export-read-only",
        lambda e, m: (_oserror(m, errno.EROFS), ["export", str(e.run), "--out", str(e.root / "ro" / "x")])[1],
        2,
        "cannot write the export folder",
    ),
    (
        "report-read-only",
        lambda e, m: (_oserror(m, errno.EACCES), ["report", str(e.run), "--out", str(e.root / "ro" / "x")])[1],
        2,
        "permission denied",
    ),
    # ---- misleading errors and bombs ----
    ("config-is-directory", lambda e, m: ["validate", str(e.root)], 2, "is a directory, not a file"),
    ("stream-is-directory", lambda e, m: ["validate", str(e.new_cfg()), f"data.stream={e.root}"], 2, "is a directory"),
    (
        "data-file-is-directory",
        lambda e, m: (
            (e.root / "variant" / "adir").mkdir(parents=True),
            ["validate", str(e.cfg_with_stream(_stream_variant(e, train="adir")))],
        )[1],
        2,
        "is a directory",
    ),
    (
        "model-alias-typo",
        lambda e, m: ["validate", str(e.new_cfg()), "model=tiny-lama"],
        2,
        "did you mean 'tiny-llama'",
    ),
    ("model-alias-typo-run", lambda e, m: ["run", str(e.new_cfg()), "model=tiny-t6"], 2, "did you mean 'tiny-t5'"),
    ("method-r-0-no-section", lambda e, m: ["validate", str(e.new_cfg()), "method.r=0"], 2, "r must be a positive"),
    ("csv-field-over-131072", lambda e, m: ["validate", str(e.cfg_with_stream(_long_csv_stream(e)))], 0, ": OK"),
    ("yaml-alias-bomb", lambda e, m: ["validate", str(_bomb(e.root / "bomb.yaml"))], 2, "alias bomb"),
    (
        "yaml-alias-bomb-stream",
        lambda e, m: ["validate", str(e.new_cfg()), f"data.stream={_bomb(e.root / 'bomb.yaml')}"],
        2,
        "alias bomb",
    ),
    (
        "hub-id-offline-fails-fast",
        lambda e, m: (_offline(m), ["run", str(e.new_cfg()), "model=nobody/no-such-model"])[1],
        2,
        "cannot load model 'nobody/no-such-model'",
    ),
    (
        "unexpected-error-last-resort",
        lambda e, m: (_boom(m), ["validate", str(e.new_cfg())])[1],
        1,
        "unexpected RuntimeError: boom (run with --debug for the traceback)",
    ),
    (
        "huge-value-echo",
        lambda e, m: ["validate", str(e.new_cfg()), "train.lr=" + "x" * 100_000],
        2,
        "train.lr: got 'xxxx",
    ),
]


@pytest.mark.parametrize(("setup", "code", "fragment"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(env: Env, monkeypatch, capsys, recwarn, setup: Setup, code: int, fragment: str) -> None:
    argv = setup(env, monkeypatch)
    assert main(argv) == code
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    assert len(err) < 2000, err[:300]  # one short message, never a value dumped whole
    if code:
        lines = [line for line in err.splitlines() if line.startswith("clift: error:")]
        assert len(lines) == 1, err
    shown = out + err + "".join(str(w.message) for w in recwarn)
    assert fragment in shown, shown[-1000:]
    assert not (env.root / "PWNED").exists()  # a pickle payload never ran


def test_corpus_covers_every_issue_case() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 60


# ------------------------------------------------------------------------------------------------
# nothing clift did not write is deleted or overwritten (also through symlinks)
# ------------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_export_force_and_report_leave_foreign_files_alone(env: Env, capsys) -> None:
    mine = _foreign(env.root / "mine")
    (mine / "notes").mkdir()
    (mine / "notes" / "a.txt").write_text("keep me")
    (env.root / "outside.txt").write_text("outside")
    before = _snapshot(env.root / "mine")
    outside = (env.root / "outside.txt").read_bytes()

    assert main(["export", str(env.run), "--out", str(mine)]) == 2
    assert main(["report", str(env.run), "--out", str(mine)]) == 2
    assert main(["run", str(env.new_cfg("mine")), "--force"]) == 2
    # a run folder whose entries are links into the user's files: --force removes the links, not the targets
    link_run = env.root / "linked"
    shutil.copytree(env.run, link_run, symlinks=True)
    shutil.rmtree(link_run / "adapters")
    (link_run / "adapters").symlink_to(mine / "notes")
    (link_run / "predictions.jsonl").unlink()
    (link_run / "predictions.jsonl").symlink_to(env.root / "outside.txt")
    assert main(["run", str(_config(env.root / "l.yaml", env.stream, link_run)), "--force"]) == 0
    assert not (link_run / "adapters").is_symlink() and (link_run / "results.json").is_file()
    # an export folder that is a link is refused
    (env.run / "export-adapter").symlink_to(mine, target_is_directory=True)
    assert main(["export", str(env.run)]) == 2
    capsys.readouterr()
    assert _snapshot(env.root / "mine") == before
    assert (env.root / "outside.txt").read_bytes() == outside


def test_report_never_writes_through_a_png_link(env: Env, capsys) -> None:
    assert main(["report", str(env.run)]) == 0
    (env.root / "precious.png").write_bytes(b"user's picture")
    png = env.run / "report" / "t-curves.png"
    png.unlink()
    png.symlink_to(env.root / "precious.png")
    assert main(["report", str(env.run)]) == 2
    assert "t-curves.png' is a symbolic link" in capsys.readouterr().err
    assert (env.root / "precious.png").read_bytes() == b"user's picture"


def test_export_replaces_only_its_own_marked_folder(env: Env, capsys) -> None:
    out = env.root / "exp"
    assert main(["export", str(env.run), "--out", str(out)]) == 0
    assert (out / ".clift-export").is_file() and (out / "clift_export.json").is_file()
    assert main(["export", str(env.run), "--out", str(out)]) == 0  # its own export: replaced
    assert main(["export", str(env.run)]) == 0  # the default, RUN_DIR/export-adapter
    assert (env.run / "export-adapter" / "clift_export.json").is_file()
    capsys.readouterr()


# ------------------------------------------------------------------------------------------------
# resume integrity on a real run directory
# ------------------------------------------------------------------------------------------------


def test_untampered_partial_run_resumes_and_records_hashes(env: Env, capsys) -> None:
    state = json.loads((env.partial / "checkpoint" / "state.json").read_text())
    assert set(state["files"]) == {"model.safetensors", "method.safetensors", "rng.safetensors"}
    assert main(["run", str(env.partial_cfg)]) == 0
    assert json.loads((env.partial / "results.json").read_text())["status"] == "complete"
    capsys.readouterr()


def test_previous_version_folders_resume_and_export_unverified(env: Env, capsys, caplog) -> None:
    _legacy(env.partial)
    _legacy(env.run)
    with caplog.at_level("WARNING", logger="clift"):
        assert main(["run", str(env.partial_cfg)]) == 0
        assert main(["export", str(env.run), "--out", str(env.root / "exp")]) == 0
    unverified = [r for r in caplog.records if "unverified" in r.getMessage()]
    assert len(unverified) == 2
    assert not (env.partial / ".clift-run").exists()  # recognised by its results.json, left without a new file
    capsys.readouterr()


def test_data_change_names_file_and_both_hashes(env: Env, capsys) -> None:
    old = json.loads((env.partial / "results.json").read_text())["data"]["files"]["tb"]["train"]["sha256"]
    assert main(_data_changed(env)) == 2
    err = capsys.readouterr().err
    assert "b_train.jsonl" in err and old in err and "--force" in err
    assert main(["run", str(env.partial_cfg), "--force"]) == 0  # the fix the message names works


# ------------------------------------------------------------------------------------------------
# divergence and the evaluation bars
# ------------------------------------------------------------------------------------------------


def test_divergence_skip_policy_warns_and_continues(env: Env, capsys, caplog) -> None:
    with caplog.at_level("WARNING", logger="clift"):
        code = main(["run", str(env.new_cfg()), "train.lr=1e6", "train.max_grad_norm=null", "train.nan_policy=skip"])
    assert code == 0
    assert any("training looks diverged in stage 1" in r.getMessage() for r in caplog.records)
    capsys.readouterr()


def test_guard_is_quiet_on_a_healthy_loss_curve() -> None:
    from types import SimpleNamespace

    from clift.divergence import DivergenceGuard

    params = [torch.nn.Parameter(torch.full((4, 4), 0.1))]
    train = SimpleNamespace(lr=1e-3, max_grad_norm=1.0, warmup_steps=0, nan_policy="stop")
    guard = DivergenceGuard(params, train, SimpleNamespace(index=0, name="t"), Path("ckpt"))
    for step, loss in enumerate([2.0 / (1 + s) for s in range(40)]):
        guard.check(step, loss)  # falling loss, small weights: no error
    rising = DivergenceGuard(params, train, SimpleNamespace(index=0, name="t"), Path("ckpt"))
    with pytest.raises(TrainingError, match=r"the loss rose from 0\.5"):
        for step in range(40):
            rising.check(step, 0.5 if step < 10 else 6.0)


def test_evaluation_bars_have_their_description(tmp_path, monkeypatch) -> None:
    import clift
    from clift.evaluation import Evaluator

    from .conftest import fixture_stream, tiny_config

    seen: list[str] = []
    original = Evaluator._batches

    def spy(self, n, desc):
        seen.append(desc)
        return original(self, n, desc)

    monkeypatch.setattr(Evaluator, "_batches", spy)
    cfg = tiny_config(tmp_path, train={"max_steps": 1})
    clift.run(cfg, stream=fixture_stream(train=8, test=4, names=["toysent"]))
    assert seen and all(d.startswith("eval ") for d in seen), seen


def test_debug_flag_shows_the_traceback(env: Env, monkeypatch) -> None:
    _boom(monkeypatch)
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "validate", str(env.new_cfg())])
