"""Checkpoints: everything needed to resume a run, as safetensors + JSON (never pickle).

One folder, ``<run>/checkpoint/``, always holds the latest consistent state; a new checkpoint is
written beside it and swapped in with a rename, so a crash at any moment leaves either the old or the
new checkpoint, never a mix::

    state.json             where we are (next stage, optimizer steps done in it), losses so far, RNG
                           states of python/numpy, and the JSON half of every nested state below
    model.safetensors      the tracked model tensors (adapters, and any base weight that ever trained)
    method.safetensors     the tensors of the method's ``state_dict()`` (bases, Fisher, anchors, …)
    optimizer.safetensors  mid-stage only: the optimizer's and scheduler's tensors
    rng.safetensors        torch CPU (and CUDA) generator states, of every process when there are several

Nested states (a method's or an optimizer's ``state_dict()``: dicts, lists, tuples, numbers, strings,
None and tensors) are split by :func:`split_state` into a tensor dict and a JSON skeleton with
``{"__tensor__": key}`` placeholders, and rebuilt by :func:`join_state`; numbers travel as JSON, so
floats (NaN and infinities included) come back exactly.
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from clift.errors import ResumeError
from clift.integrity import FILES_KEY, check_state_fields, hash_files, verify_checkpoint_files

CHECKPOINT_DIR = "checkpoint"
_TENSOR = "__tensor__"
_TUPLE = "__tuple__"


def split_state(obj: Any, prefix: str = "") -> tuple[Any, dict[str, torch.Tensor]]:
    """Split a nested structure into a JSON-able skeleton and a flat dict of tensors.

    Args:
        obj: dicts, lists, tuples, tensors, numpy arrays, numbers, strings, booleans, None.
        prefix: key prefix for the tensors.

    Returns:
        ``(skeleton, tensors)``; ``join_state(skeleton, tensors)`` rebuilds ``obj``.

    Raises:
        TypeError: for a value that is neither (naming where it sits), rather than pickling it.
    """
    tensors: dict[str, torch.Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, torch.Tensor):
            key = base = path or "_"
            n = 1
            while key in tensors:  # {"a.b": t, "a": {"b": u}} would otherwise give both the key "a.b"
                key, n = f"{base}#{n}", n + 1
            tensors[key] = x.detach().cpu().clone().contiguous()
            return {_TENSOR: key}
        if isinstance(x, np.ndarray):
            return walk(torch.from_numpy(np.ascontiguousarray(x)), path)
        if isinstance(x, np.generic):
            return x.item()
        if isinstance(x, dict):
            out = {}
            for k, v in x.items():
                if not isinstance(k, (str, int)) or isinstance(k, bool):
                    raise TypeError(f"state key {k!r} at {path or '<root>'} is not a string or integer.")
                # JSON object keys are strings: remember integer keys (optimizer param ids)
                out[f"{'i:' if isinstance(k, int) else 's:'}{k}"] = walk(v, f"{path}.{k}" if path else str(k))
            return out
        if isinstance(x, tuple):
            return {_TUPLE: [walk(v, f"{path}.{i}") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [walk(v, f"{path}.{i}") for i, v in enumerate(x)]
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(
            f"cannot checkpoint a {type(x).__name__} at {path or '<root>'}: states must hold tensors, numbers, "
            "strings and containers of them (clift never pickles)."
        )

    return walk(obj, prefix), tensors


def join_state(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`split_state`.

    Raises:
        ValueError: for a skeleton :func:`split_state` cannot have written: a placeholder naming a tensor
            that ``tensors`` lacks, or a mapping key without its ``s:`` / ``i:`` type tag.
    """
    if isinstance(skeleton, dict):
        if set(skeleton) == {_TENSOR}:
            key = skeleton[_TENSOR]
            if key not in tensors:
                raise ValueError(f"the state names tensor {key!r}, which its safetensors file does not hold")
            return tensors[key]
        if set(skeleton) == {_TUPLE}:
            return tuple(join_state(v, tensors) for v in skeleton[_TUPLE])
        out = {}
        for k, v in skeleton.items():
            kind, sep, name = k.partition(":")
            if not sep or kind not in ("i", "s") or (kind == "i" and not name.lstrip("-").isdigit()):
                raise ValueError(f"state key {k!r} lacks its type tag ('s:<name>' or 'i:<integer>')")
            out[int(name) if kind == "i" else name] = join_state(v, tensors)
        return out
    if isinstance(skeleton, list):
        return [join_state(v, tensors) for v in skeleton]
    return skeleton


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The python, numpy and torch generator states (JSON part, tensor part)."""
    py = random.getstate()
    np_state = np.random.get_state()
    json_part = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    return json_part, tensors


def set_rng_state(json_part: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    v, internal, gauss = json_part["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = json_part["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        stage: index of the stage to run next (== number of completed stages) …
        step: … and the optimizer steps already done in it (0 at a stage boundary).
        model: tracked model tensors by parameter/buffer name.
        method: the method's ``state_dict()`` (nested: see :func:`split_state`).
        optimizer / scheduler: their ``state_dict()`` (mid-stage only).
        losses / extra_losses / skipped: the stage's training log so far (mid-stage only).
        rng: (json part, tensor part) of the generator states (of the main process).
        rng_ranks: the same for every process of a multi-process run, indexed by process rank (each
            process advances its own CUDA generator); None for one process.
        tracked: names of the model tensors the run tracks.
        results: the run's results (completed rows) when the checkpoint was written — the source of
            truth on resume, so a crash between writing the checkpoint and results.json loses nothing.
    """

    stage: int
    step: int
    model: dict[str, torch.Tensor]
    method: dict[str, Any]
    optimizer: dict[str, Any] | None = None
    scheduler: dict[str, Any] | None = None
    losses: list[float] = field(default_factory=list)
    extra_losses: list[float] = field(default_factory=list)
    skipped: int = 0
    rng: tuple[dict[str, Any], dict[str, torch.Tensor]] | None = None
    rng_ranks: list[tuple[dict[str, Any], dict[str, torch.Tensor]]] | None = None
    tracked: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def rng_for(self, rank: int) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """The generator states process ``rank`` should restore: its own when they were saved, else the
        main process's (a one-process checkpoint, or one written before per-process states existed)."""
        if self.rng_ranks is not None and 0 <= rank < len(self.rng_ranks):
            return self.rng_ranks[rank]
        if self.rng is None:
            raise ResumeError("the checkpoint holds no generator states; rerun with --force to start over.")
        return self.rng


def save_checkpoint(run_dir: Path, ckpt: Checkpoint) -> Path:
    """Write ``ckpt`` to ``<run_dir>/checkpoint`` atomically (write beside, then swap)."""
    final = Path(run_dir) / CHECKPOINT_DIR
    tmp = final.with_name(CHECKPOINT_DIR + ".tmp")
    old = final.with_name(CHECKPOINT_DIR + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(
        {k: v.detach().cpu().clone().contiguous() for k, v in ckpt.model.items()},
        str(tmp / "model.safetensors"),
    )
    method_skel, method_t = split_state(ckpt.method)
    save_file(method_t, str(tmp / "method.safetensors"))
    opt_skel = sched_skel = None
    opt_t: dict[str, torch.Tensor] = {}
    if ckpt.optimizer is not None:
        opt_skel, t1 = split_state(ckpt.optimizer, "optimizer")
        sched_skel, t2 = split_state(ckpt.scheduler, "scheduler")
        opt_t = {**t1, **t2}
        save_file(opt_t, str(tmp / "optimizer.safetensors"))
    rng_json, rng_t = ckpt.rng if ckpt.rng is not None else rng_state()
    ranks_json = None
    if ckpt.rng_ranks is not None:
        ranks_json = [part for part, _ in ckpt.rng_ranks]
        # copies: a rank's tensors may be the main states' own objects, and safetensors refuses shared storage
        per_rank = {f"rank{i}.{k}": v.clone() for i, (_, t) in enumerate(ckpt.rng_ranks) for k, v in t.items()}
        rng_t = {**rng_t, **per_rank}
    save_file(rng_t, str(tmp / "rng.safetensors"))
    state = {
        "format": 1,
        "stage": ckpt.stage,
        "step": ckpt.step,
        "tracked": ckpt.tracked,
        "method": method_skel,
        "optimizer": opt_skel,
        "scheduler": sched_skel,
        "losses": ckpt.losses,
        "extra_losses": ckpt.extra_losses,
        "skipped": ckpt.skipped,
        "rng": rng_json,
        "rng_ranks": ranks_json,
        "results": ckpt.results,
        FILES_KEY: hash_files(tmp),  # verified on resume and export (clift.integrity)
    }
    (tmp / "state.json").write_text(json.dumps(state) + "\n", encoding="utf-8")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir: Path) -> Path | None:
    """The run's checkpoint folder, recovering from a crash in the middle of a swap."""
    final = Path(run_dir) / CHECKPOINT_DIR
    old = final.with_name(CHECKPOINT_DIR + ".old")
    if (final / "state.json").is_file():
        return final
    if (old / "state.json").is_file():  # crashed between the two renames: the old one is complete
        old.rename(final)
        return final
    return None


def load_checkpoint(folder: Path) -> Checkpoint:
    """Read a checkpoint folder written by :func:`save_checkpoint`.

    Raises:
        ResumeError: if a file is missing or unreadable, naming it.
    """
    folder = Path(folder)
    try:
        state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        check_state_fields(folder, state)
        verify_checkpoint_files(folder, state)
        model = load_file(str(folder / "model.safetensors"))
        method = join_state(state["method"], load_file(str(folder / "method.safetensors")))
        opt = sched = None
        if state.get("optimizer") is not None:
            t = load_file(str(folder / "optimizer.safetensors"))
            opt = join_state(state["optimizer"], t)
            sched = join_state(state["scheduler"], t)
        rng_t = load_file(str(folder / "rng.safetensors"))
        rng = (state["rng"], {k: v for k, v in rng_t.items() if not k.startswith("rank")})
        rng_ranks = None
        if state.get("rng_ranks") is not None:
            rng_ranks = [
                (part, {k.split(".", 1)[1]: v for k, v in rng_t.items() if k.startswith(f"rank{i}.")})
                for i, part in enumerate(state["rng_ranks"])
            ]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise ResumeError(
            f"the checkpoint in {str(folder)!r} is unreadable ({err}); rerun with --force to start the run over."
        ) from None
    return Checkpoint(
        stage=state["stage"],
        step=state["step"],
        model=model,
        method=method,
        optimizer=opt,
        scheduler=sched,
        losses=state.get("losses", []),
        extra_losses=state.get("extra_losses", []),
        skipped=state.get("skipped", 0),
        rng=rng,
        rng_ranks=rng_ranks,
        tracked=state.get("tracked", []),
        results=state.get("results", {}),
    )
