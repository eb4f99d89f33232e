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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peft import PeftModel
from torch import nn

from clift import safety
from clift.checkpoint import find_checkpoint, load_checkpoint
from clift.config import load_config
from clift.data.task import Stream, Task
from clift.errors import CliftError
from clift.integrity import check_stage_range, require_result_fields
from clift.io import atomic_write_json
from clift.lifecycle import make_context, rebuild
from clift.methods import ContinualMethod
from clift.models import load_model
from clift.results import ADAPTERS_DIR, CONFIG_FILE, RESULTS_FILE, RunRecord, read_record

COMBINED = "combined"


@dataclass
class Rebuilt:
    """A run's final model, rebuilt.

    Attributes:
        model: the model (a ``PeftModel`` for adapter methods), in eval mode.
        tokenizer: its tokenizer.
        method: the method instance, with its state loaded.
        record: the run's results.json.
        base_changed: whether any base-model weight was trained (so no adapter can hold the model).
    """

    model: nn.Module
    tokenizer: Any
    method: ContinualMethod
    record: RunRecord
    base_changed: bool


def rebuild_final_model(run_dir: str | Path) -> Rebuilt:
    """The final model of a complete run, rebuilt from its directory (see :mod:`clift.lifecycle`).

    Raises:
        CliftError: if the run is not complete or has no final checkpoint.
        ResumeError: if the checkpoint does not fit the rebuilt model.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RESULTS_FILE).is_file():
        raise CliftError(
            f"{str(run_dir)!r} is not a run directory (no {RESULTS_FILE}); give the folder `clift run` wrote."
        )
    record = read_record(run_dir)
    # a record fills missing keys with defaults; export needs them from the file (hand-made results lack them)
    present = {key: getattr(record, key) for key in ("tasks", "matrix", "config") if key in record.key_order}
    require_result_fields(run_dir / RESULTS_FILE, present, ("tasks", "matrix", "config"))
    if not record.complete:
        raise CliftError(
            f"run {str(run_dir)!r} is not complete ({len(record.matrix)} stage(s) done); rerun "
            "`clift run` on it to finish, then export."
        )
    folder = find_checkpoint(run_dir)
    if folder is None:
        raise CliftError(f"run {str(run_dir)!r} has no checkpoint folder; it was written by an older clift or deleted.")
    ckpt = load_checkpoint(folder)
    cfg = load_config(run_dir / CONFIG_FILE)
    loaded = load_model(cfg.model)
    model = loaded.model
    # structure replay needs task names and label sets only, not the data
    stream = Stream(record.run.stream, [Task(name, "", "", ()) for name in record.tasks])
    device = next(model.parameters()).device
    ctx = make_context(cfg, model, loaded.tokenizer, loaded.kind, stream, run_dir, device)
    method, model, trained = rebuild(cfg, model, ctx, None, ckpt.model, ckpt.method)
    check_stage_range(ckpt, len(method.stages(stream)), folder)
    model.eval()
    return Rebuilt(model, loaded.tokenizer, method, record, bool(trained))


def _plain_lora(method: ContinualMethod, model: nn.Module) -> bool:
    """Whether every LoRA factor is a plain linear map, so PEFT's LoRA format (and merging) can hold the model.

    A method may put its own modules into PEFT's ``lora_A`` / ``lora_B`` slots (DEAL's MLP filter); PEFT
    would save their tensors under LoRA names and load them as something else. A method can also declare
    ``mergeable = False``.
    """
    if not getattr(method, "mergeable", True):
        return False
    for module in model.modules():
        for slot in ("lora_A", "lora_B"):
            factors = getattr(module, slot, None)
            if isinstance(factors, nn.ModuleDict) and any(type(m) is not nn.Linear for m in factors.values()):
                return False
    return True


def merge_adapters(rebuilt: Rebuilt, run_dir: str | Path) -> nn.Module:
    """The rebuilt final model with its adapters merged into the base weights (a plain transformers model).

    Raises:
        CliftError: if the method has modules that cannot be merged (the message names its per-task adapters).
    """
    model = rebuilt.model
    if isinstance(model, PeftModel):
        if not _plain_lora(rebuilt.method, model):
            refusal = getattr(rebuilt.method, "merge_refusal", None)  # a method's own reason (deal_code: its MLP)
            raise CliftError(
                refusal(Path(run_dir))
                if refusal is not None
                else f"method {rebuilt.record.run.method!r} has modules that cannot be merged into the weights "
                f"(not adapter, not merged); its per-task adapters are in {str(Path(run_dir) / ADAPTERS_DIR)!r}."
            )
        model = model.merge_and_unload()
        model.eval()
    return model


def loadable_base_name(model_name: str) -> str:
    """What an exported adapter's ``base_model_name_or_path`` should say: a hub id as given, a local
    folder as an absolute path, a built-in alias as its name (loaded by ``clift.models.load_model``)."""
    path = Path(model_name).expanduser()
    if path.exists():
        return str(path.resolve())
    return model_name


def set_base_model(folder: Path, model_name: str) -> None:
    """Write ``base_model_name_or_path`` into every ``adapter_config.json`` under ``folder``."""
    base = loadable_base_name(model_name)
    for cfg_file in sorted(Path(folder).rglob("adapter_config.json")):
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
        data["base_model_name_or_path"] = base
        atomic_write_json(cfg_file, data)


def export_run(
    run_dir: str | Path, out: str | Path | None = None, mode: Literal["adapter", "merged"] = "adapter"
) -> Path:
    """Export a complete run's final model.

    Args:
        run_dir: the run directory.
        out: destination folder (default ``<run_dir>/export-<mode>``); an earlier export there is replaced,
            but not when this one is refused.
        mode: ``adapter`` (one combined PEFT adapter) or ``merged`` (full model with adapters merged in).

    Returns:
        The destination folder.

    Raises:
        CliftError: when the method's final model cannot take the requested form (the message says which
            form to use instead).
    """
    if mode not in ("adapter", "merged"):
        raise CliftError(f"export mode {mode!r} is unknown; use 'adapter' or 'merged'.")
    out = Path(out) if out is not None else Path(run_dir) / f"export-{mode}"
    safety.export_target(Path(run_dir), out)  # before the slow rebuild: never over a run or foreign files
    safety.check_folder(out, "export", "choose another folder with --out.")
    rebuilt = rebuild_final_model(run_dir)
    record = rebuilt.record
    # every refusal comes before the folder is touched, so an earlier export in it stays as it was
    merged = merge_adapters(rebuilt, run_dir) if mode == "merged" else None
    refusal = _adapter_refusal(rebuilt, Path(run_dir)) if merged is None else None
    if refusal is not None:
        raise CliftError(refusal)
    safety.remove_clift_folder(out, "export")
    safety.claim_folder(out, "export", "choose another folder with --out.")
    info: dict[str, Any] = {"run_dir": str(run_dir), "method": record.run.method, "mode": mode, "tasks": record.tasks}
    if merged is None:
        _export_adapter(rebuilt, out, info)
    else:
        merged.save_pretrained(str(out), safe_serialization=True)
        rebuilt.tokenizer.save_pretrained(str(out))
        info["layout"] = "full model (transformers save_pretrained)"
    safety.mark_folder(out, "export")  # a single adapter's save replaced the folder with its marker
    atomic_write_json(out / "clift_export.json", info)
    return out


def _adapter_refusal(rebuilt: Rebuilt, run_dir: Path) -> str | None:
    """Why no adapter can hold the final model (naming the form to use instead); None when one can.

    No adapter holds a model whose own weights were trained, whose base weights changed (full-rank
    updates), or that has modules a plain LoRA cannot express.
    """
    model, name = rebuilt.model, rebuilt.record.run.method
    if not isinstance(model, PeftModel):
        return f"method {name!r} trains the model's own weights, so there is no adapter; use --merged."
    if rebuilt.base_changed:
        return (
            f"method {name!r} also changed base weights (full-rank updates), which an adapter cannot hold; "
            "use --merged."
        )
    if not _plain_lora(rebuilt.method, model):
        return (
            f"method {name!r} has modules a plain LoRA cannot express, so neither an adapter nor a merged "
            f"model can hold it; its per-task adapters are in {str(run_dir / ADAPTERS_DIR)!r}."
        )
    return None


def _export_adapter(rebuilt: Rebuilt, out: Path, info: dict[str, Any]) -> None:
    """Save the final model as PEFT adapter(s) into ``out``; ``info`` gains the layout and base model.

    One combined adapter (the active ones concatenated) for a method with a single final model; one
    adapter per task (``out/<task>``) for a method that needs the task id at inference.

    The caller has checked :func:`_adapter_refusal` first.
    """
    model, method, record = rebuilt.model, rebuilt.method, rebuilt.record
    from clift.adapters import save_adapter

    if method.needs_task_id:
        # no single final model exists: each task keeps its own adapter
        for index, task in enumerate(record.tasks):
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
        save_adapter(model, chosen, out)
        info["layout"] = "one PEFT adapter"
    base = record.config["model"]["name"]
    set_base_model(out, base)  # PEFT leaves it null for in-memory models
    info["base_model"] = base


def describe(path: Path) -> str:
    info = json.loads((path / "clift_export.json").read_text())
    return f"exported {info['method']} ({info['layout']}) to {path}"
