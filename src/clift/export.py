"""Export a finished run's final model: one PEFT adapter, or a merged full model.

The final model is rebuilt from the run directory alone — the resolved ``config.yaml`` and the final
checkpoint — by replaying the method's structure (``attach``, then ``before_task`` + ``restore_task``
per stage) and loading the checkpointed tensors. Then:

* ``adapter``: the active task adapters are combined into one PEFT LoRA with PEFT's
  ``add_weighted_adapter(..., combination_type="cat")`` (ranks add up; outputs are unchanged), so
  transformers / PEFT / vLLM load a single adapter. A method that needs the task id (``per_task``) has
  no single final adapter: each task's adapter is written to its own sub-folder. A method that changed
  base weights (full fine-tuning, full-rank updates) cannot be an adapter: use ``merged``.
* ``merged``: adapters are merged into the base weights (``merge_and_unload``) and the full model and
  tokenizer are saved with ``save_pretrained`` (safetensors).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from peft import PeftModel
from torch import nn

from clift.checkpoint import find_checkpoint, load_checkpoint
from clift.config import load_config
from clift.data.task import Stream, Task
from clift.errors import CliftError
from clift.io import atomic_write_json
from clift.methods import MethodContext, build_method
from clift.models import load_model
from clift.results import read_results

COMBINED = "combined"


@dataclass
class Rebuilt:
    """A run's final model, rebuilt.

    Attributes:
        model: the model (a ``PeftModel`` for adapter methods), in eval mode.
        tokenizer: its tokenizer.
        method: the method instance, with its state loaded.
        results: the run's results.json.
        base_changed: whether any base-model weight was trained (so no adapter can hold the model).
    """

    model: nn.Module
    tokenizer: Any
    method: Any
    results: dict[str, Any]
    base_changed: bool


def rebuild_final_model(run_dir: str | Path) -> Rebuilt:
    """The final model of a complete run, rebuilt from its directory.

    Raises:
        CliftError: if the run is not complete or has no final checkpoint.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "results.json").is_file():
        raise CliftError(
            f"{str(run_dir)!r} is not a run directory (no results.json); give the folder `clift run` wrote."
        )
    results = read_results(run_dir)
    if results.get("status") != "complete":
        raise CliftError(
            f"run {str(run_dir)!r} is not complete ({len(results.get('matrix', []))} stage(s) done); rerun "
            "`clift run` on it to finish, then export."
        )
    folder = find_checkpoint(run_dir)
    if folder is None:
        raise CliftError(f"run {str(run_dir)!r} has no checkpoint folder; it was written by an older clift or deleted.")
    ckpt = load_checkpoint(folder)
    cfg = load_config(run_dir / "config.yaml")
    loaded = load_model(cfg.model)
    model = loaded.model
    base_ids = {id(p) for p in model.parameters()}
    # structure replay needs task names and label sets only, not the data
    stream = Stream(
        results["run"]["stream"],
        [Task(name, "", "", ()) for name in results["tasks"]],
    )
    method = build_method(cfg.method)
    method.setup(
        MethodContext(
            kind=loaded.kind,
            model_type=getattr(model.config, "model_type", ""),
            tokenizer=loaded.tokenizer,
            stream=stream,
            run_dir=run_dir,
            train=cfg.train,
            seed=cfg.seed,
            device=next(model.parameters()).device,
        )
    )
    model = method.attach(model)
    for stage in method.stages(stream):
        model = method.before_task(model, stage)
        model = method.restore_task(model, stage)
    named = {**dict(model.named_buffers()), **dict(model.named_parameters())}
    missing = sorted(set(ckpt.model) - set(named))
    if missing:
        raise CliftError(f"the run's checkpoint does not fit the rebuilt model (first unknown tensor {missing[0]!r}).")
    with torch.no_grad():
        for name, value in ckpt.model.items():
            named[name].copy_(value)
    method.load_state_dict(ckpt.method)
    model.eval()
    changed = any(id(p) in base_ids for n, p in model.named_parameters() if n in ckpt.model)
    return Rebuilt(model, loaded.tokenizer, method, results, changed)


def export_run(
    run_dir: str | Path, out: str | Path | None = None, mode: Literal["adapter", "merged"] = "adapter"
) -> Path:
    """Export a complete run's final model.

    Args:
        run_dir: the run directory.
        out: destination folder (default ``<run_dir>/export-<mode>``); replaced if it exists.
        mode: ``adapter`` (one combined PEFT adapter) or ``merged`` (full model with adapters merged in).

    Returns:
        The destination folder.

    Raises:
        CliftError: when the method's final model cannot take the requested form (the message says which
            form to use instead).
    """
    if mode not in ("adapter", "merged"):
        raise CliftError(f"export mode {mode!r} is unknown; use 'adapter' or 'merged'.")
    rebuilt = rebuild_final_model(run_dir)
    model, tok, method, results = rebuilt.model, rebuilt.tokenizer, rebuilt.method, rebuilt.results
    name = results["run"]["method"]
    out = Path(out) if out is not None else Path(run_dir) / f"export-{mode}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    info: dict[str, Any] = {"run_dir": str(run_dir), "method": name, "mode": mode, "tasks": results["tasks"]}
    if mode == "adapter":
        if not isinstance(model, PeftModel):
            raise CliftError(f"method {name!r} trains the model's own weights, so there is no adapter; use --merged.")
        if rebuilt.base_changed:
            raise CliftError(
                f"method {name!r} also changed base weights (full-rank updates), which an adapter cannot hold; "
                "use --merged."
            )
        if not getattr(method, "mergeable", True):
            raise CliftError(
                f"method {name!r} has modules a plain LoRA cannot express; its per-task adapters are in "
                f"{str(Path(run_dir) / 'adapters')!r}."
            )
        if method.needs_task_id:
            # no single final model exists: each task keeps its own adapter
            from clift.adapters import save_adapter

            for index, task in enumerate(results["tasks"]):
                adapter = f"task{index}"
                if adapter in model.peft_config:
                    save_adapter(model, adapter, out / task)
            info["layout"] = "one adapter per task (the method needs the task id at inference)"
        else:
            active = list(model.base_model.active_adapters)
            if len(active) == 1:
                chosen = active[0]
            else:
                model.add_weighted_adapter(active, [1.0] * len(active), COMBINED, combination_type="cat")
                chosen = COMBINED
                info["combined"] = active
            from clift.adapters import save_adapter

            save_adapter(model, chosen, out)
            info["layout"] = "one PEFT adapter"
    else:
        if isinstance(model, PeftModel):
            if not getattr(method, "mergeable", True):
                refusal = getattr(method, "merge_refusal", None)
                raise CliftError(
                    refusal(Path(run_dir))
                    if refusal is not None
                    else f"method {name!r} has modules that cannot be merged into the weights."
                )
            model = model.merge_and_unload()
        model.save_pretrained(str(out), safe_serialization=True)
        tok.save_pretrained(str(out))
        info["layout"] = "full model (transformers save_pretrained)"
    atomic_write_json(out / "clift_export.json", info)
    return out


def describe(path: Path) -> str:
    info = json.loads((path / "clift_export.json").read_text())
    return f"exported {info['method']} ({info['layout']}) to {path}"
