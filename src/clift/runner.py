"""The continual runner: zero-shot row, then for each stage: hooks → train → hooks → evaluate every task.

``run(config)`` is the whole library in one call (``clift run`` is a thin wrapper). Training goes
through Accelerate, so device placement, bf16/fp16 autocast and multi-process data parallelism
(``accelerate launch`` / ``torchrun``) are configuration, not code paths.
"""

from __future__ import annotations

import logging
import math
import resource
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from clift.checkpoint import (
    CHECKPOINT_DIR,
    Checkpoint,
    find_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from clift.config import RunConfig, load_config, upgrade_config
from clift.data.collate import PromptEncoder, TrainCollator
from clift.data.task import Stream, Task
from clift.engines import check_engine
from clift.errors import ConfigError, DataError, ResumeError, TrainingError
from clift.evaluation import Evaluator
from clift.fanout import lock_run
from clift.memory import check_memory_settings, enable_gradient_checkpointing
from clift.methods import ContinualMethod, MethodContext, Stage, build_method
from clift.metrics import all_metrics
from clift.models import load_model
from clift.results import (
    ADAPTERS_DIR,
    RESULTS_FILE,
    format_matrix,
    git_sha,
    library_versions,
    read_results,
    runtime_environment,
    write_config,
    write_predictions,
    write_results,
)

log = logging.getLogger("clift")


@dataclass
class RunResult:
    """What :func:`run` returns.

    Attributes:
        run_dir: the run directory.
        results: the content of results.json.
        model: the final model in memory (a ``PeftModel`` for adapter methods); not saved by itself.
        tokenizer: its tokenizer.
        is_main_process: false on the other processes of a multi-process run (they should not print).
        matrix: R as an array of shape (stages, tasks), in percent.
        metrics: AA, BWT, FWT, forgetting (percentage points; None where undefined).
    """

    run_dir: Path
    results: dict[str, Any]
    model: nn.Module | None = None
    tokenizer: Any = None
    is_main_process: bool = True

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.results["matrix"], dtype=float)

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.results["metrics"]

    def table(self) -> str:
        return format_matrix(self.results)


def _resolve_config(config: RunConfig | Mapping[str, Any] | str | Path, overrides: Sequence[str]) -> RunConfig:
    if isinstance(config, RunConfig):
        if overrides:
            from clift.config import apply_overrides

            return RunConfig.from_dict(apply_overrides(config.to_dict(), overrides))
        return config
    if isinstance(config, (str, Path)):
        return load_config(config, overrides)
    from clift.config import apply_overrides

    return RunConfig.from_dict(apply_overrides(dict(config), overrides))


def make_accelerator(cfg: RunConfig, run_dir: Path) -> Any:
    """An ``accelerate.Accelerator`` for ``cfg`` (device, mixed precision, trackers).

    Raises:
        ConfigError: for ``model.device=cuda`` without a visible GPU, or fp16 without one.
    """
    from accelerate import Accelerator

    if cfg.model.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device=cuda but no CUDA device is visible; use model.device=auto or cpu.")
    cpu = cfg.model.device == "cpu" or not torch.cuda.is_available()
    if cfg.train.mixed_precision == "fp16" and cpu:
        raise ConfigError("train.mixed_precision=fp16 needs a GPU; on CPU use bf16 or no.")
    kwargs: dict[str, Any] = {"cpu": cpu, "mixed_precision": cfg.train.mixed_precision}
    if cfg.log.tensorboard:
        kwargs.update(log_with="tensorboard", project_dir=str(run_dir))
    return Accelerator(**kwargs)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _lr_lambda(schedule: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if schedule == "linear":
            return max(0.0, (total - step) / max(1, total - warmup))
        return 1.0

    return f


def _step_plan(n_micro_per_epoch: int, accum: int, epochs: int, max_steps: int | None) -> list[int]:
    """Micro-batches per optimizer step. With ``max_steps`` the data cycles; else epochs, last step short."""
    if max_steps is not None:
        return [accum] * max_steps
    plan: list[int] = []
    for _ in range(epochs):
        full, rest = divmod(n_micro_per_epoch, accum)
        plan += [accum] * full + ([rest] if rest else [])
    return plan


def _cycle(loader: Any) -> Iterator[dict[str, torch.Tensor]]:
    epoch = 0
    while True:
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(epoch)
        yield from loader
        epoch += 1


def config_diff(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (``log``, ``name``, ``output_dir`` ignored)."""
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        path = f"{prefix}{key}"
        if path in _RESUME_IGNORED:
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += config_diff(a, b, f"{path}.")
        elif a != b:
            out.append(f"{path}: {a!r} → {b!r}")
    return out


# settings that do not change what a run computes, so a resumed run may change them
_RESUME_IGNORED = {"log", "name", "output_dir"}


class Runner:
    """Executes one run; see :func:`run`.

    A run directory that already holds a run is *resumed*: completed stages are kept (never
    recomputed), and training continues from the last checkpoint — the end of the last completed
    stage, or a mid-stage checkpoint written every ``train.checkpoint_every`` steps. A run started
    with a different configuration is refused, naming the differing keys.
    """

    def __init__(self, cfg: RunConfig, stream: Stream | None = None, force: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = cfg.resolved_output_dir
        self.force = force
        self._stream = stream
        self.resumed_from: dict[str, Any] | None = None

    # ------------------------------------------------------------------------------------------
    def _open_dir(self) -> tuple[dict[str, Any] | None, Checkpoint | None]:
        """Create the run directory, or check and read the run it already holds."""
        existing = self.run_dir / RESULTS_FILE
        if existing.exists() and self.force:
            if self.acc.is_main_process:
                shutil.rmtree(self.run_dir)
            self.acc.wait_for_everyone()
        if not existing.exists():
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return None, None
        old = read_results(self.run_dir)
        diff = config_diff(upgrade_config(old.get("config", {})), self.cfg.to_dict())
        if diff:
            raise ResumeError(
                f"run directory {str(self.run_dir)!r} holds a run with a different configuration:\n  "
                + "\n  ".join(diff)
                + "\nUse a new output_dir (or name), or pass --force to start this directory over."
            )
        folder = find_checkpoint(self.run_dir)
        return old, (load_checkpoint(folder) if folder is not None else None)

    def _load_stream(self) -> Stream:
        if self._stream is not None:
            return self._stream
        from clift.data.benchmarks import load_stream

        return load_stream(self.cfg.data, self.cfg.data_seed)

    def _provenance(self, stream: Stream) -> dict[str, Any]:
        if self._stream is not None:
            return {"source": "python", "stream": stream.name}
        from clift.data.benchmarks import data_provenance

        return data_provenance(self.cfg.data, self.cfg.data_seed, stream)

    # ---- tracked tensors ----------------------------------------------------------------------
    def _tracked(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Tensors a checkpoint must hold: everything not in the base model, and base weights that trained."""
        out: dict[str, torch.Tensor] = {}
        for name, p in model.named_parameters():
            if id(p) not in self._base_ids or id(p) in self._trained_ids:
                out[name] = p
        for name, b in model.named_buffers():
            if id(b) not in self._base_ids:
                out[name] = b
        return out

    def _load_tracked(self, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
        params = dict(model.named_parameters())
        named = {**dict(model.named_buffers()), **params}
        missing = sorted(set(tensors) - set(named))
        if missing:
            raise ResumeError(
                f"the checkpoint holds {len(missing)} tensor(s) the rebuilt model does not have (first: "
                f"{missing[0]!r}); the method's structure changed since the run started. Rerun with --force."
            )
        with torch.no_grad():
            for name, value in tensors.items():
                named[name].copy_(value.to(named[name].device, named[name].dtype))
                if name in params and id(params[name]) in self._base_ids:
                    self._trained_ids.add(id(params[name]))  # a base weight that trained in an earlier stage

    def _save_checkpoint(self, model: nn.Module, stage: int, step: int, **mid: Any) -> None:
        # every process's generators, so each resumes its own stream (collective: all processes call this)
        ranks = None
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object

            ranks = gather_object([rng_state()])
        if not self.acc.is_main_process:
            return
        ckpt = Checkpoint(
            stage=stage,
            step=step,
            rng_ranks=ranks,
            model=self._tracked(model),
            method=self.method.state_dict(),
            tracked=sorted(self._tracked(model)),
            results=self.results,
            **mid,
        )
        save_checkpoint(self.run_dir, ckpt)

    # ------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from accelerate.utils import set_seed

        cfg = self.cfg
        t_start = time.time()
        check_memory_settings(cfg)
        self.acc = make_accelerator(cfg, self.run_dir)
        self.engine = check_engine(cfg.method.method_name(), self.acc)
        self.lock = lock_run(self.acc, self.run_dir)  # one launcher per run folder (clift.fanout)
        old_results, ckpt = self._open_dir()
        if self.lock is not None:
            self.lock.ensure()
        if old_results is not None and old_results.get("status") == "complete":
            if self.lock is not None:
                self.lock.release()
            log.info("run %s is already complete; nothing to do (--force starts it over)", self.run_dir)
            return RunResult(self.run_dir, old_results, is_main_process=self.acc.is_main_process)
        set_seed(cfg.seed)
        stream = self._load_stream()
        loaded = load_model(cfg.model)
        model, tok, kind = loaded.model, loaded.tokenizer, loaded.kind
        model.to(self.acc.device)
        self._base_ids = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
        self._trained_ids: set[int] = set()
        self.encoder = PromptEncoder(tok, kind, cfg.data.max_source_length, cfg.data.max_target_length)
        self.collate = TrainCollator(self.encoder)
        self.evaluator = Evaluator(self.encoder, cfg.eval, self.acc, progress=cfg.log.progress)
        method = build_method(cfg.method)
        self.method = method
        if cfg.log.tensorboard:
            self.acc.init_trackers(cfg.name)

        split = cfg.eval.split
        for task in stream:
            if not task.split(split):
                raise DataError(f"task {task.name!r} has no {split} examples; check data.{split}_per_task.")

        if ckpt is not None:
            results = ckpt.results
            results["resumes"] = [*results.get("resumes", []), {"stage": ckpt.stage, "step": ckpt.step}]
        elif old_results is not None:  # crashed before the first checkpoint: keep only the zero-shot row
            results = {**old_results, "stages": [], "matrix": [], "training": []}
            results["timings"] = {
                "stages": [],
                **{k: v for k, v in old_results["timings"].items() if k != "stages"},
            }
            results["resumes"] = [*old_results.get("resumes", []), {"stage": 0, "step": 0}]
        else:
            results = self._new_results(cfg, loaded.source, kind, stream, method)
        if ckpt is not None or old_results is not None:
            # wall time of the kept work (the part lost in the crash is not counted)
            t = results["timings"]
            t["total_seconds_before_resume"] = t.get("zero_shot_seconds", 0.0) + sum(
                st["train_seconds"] + st["eval_seconds"] for st in t["stages"]
            )
        self.results = results
        if self.acc.is_main_process:
            write_config(self.run_dir, cfg.to_dict())
            write_results(self.run_dir, results)

        if cfg.eval.zero_shot and results["zero_shot"] is None:
            t0 = time.time()
            results["zero_shot"] = [self._evaluate(model, t, split, "zero-shot").accuracy for t in stream]
            results["timings"]["zero_shot_seconds"] = time.time() - t0
            if self.acc.is_main_process:
                write_results(self.run_dir, results)

        ctx = MethodContext(
            kind=kind,
            model_type=getattr(model.config, "model_type", ""),
            tokenizer=tok,
            stream=stream,
            run_dir=self.run_dir,
            train=cfg.train,
            seed=cfg.seed,
            device=self.acc.device,
            collate=self.collate,
            compute_loss=self.compute_loss,
            accelerator=self.acc,
        )
        method.setup(ctx)
        model = method.attach(model)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        model.to(self.acc.device)
        stages = method.stages(stream)

        start = 0
        if ckpt is not None:
            start = ckpt.stage
            for done in stages[:start]:  # rebuild the structure of completed stages; values come next
                model = method.before_task(model, done)
                model = method.restore_task(model, done)
            model.to(self.acc.device)
            if ckpt.step == 0:
                self._load_tracked(model, ckpt.model)
                method.load_state_dict(ckpt.method)
                set_rng_state(*ckpt.rng_for(self.acc.process_index))

        for stage in stages[start:]:
            model = method.before_task(model, stage)
            model.to(self.acc.device)
            resume = ckpt if (ckpt is not None and ckpt.step > 0 and ckpt.stage == stage.index) else None
            if resume is not None:
                self._load_tracked(model, resume.model)
                method.load_state_dict(resume.method)
            t0 = time.time()
            train_log = self.train_stage(model, method, stage, resume)
            t_train = time.time() - t0
            model = method.after_task(model, stage)
            t0 = time.time()
            row, preds = [], []
            for j, task in enumerate(stream):
                with method.eval_scope(model, j) as m:
                    ev = self._evaluate(m, task, split, f"after {stage.index + 1}.{stage.name}")
                row.append(ev.accuracy)
                preds += [{"task": task.name, **p} for p in ev.predictions]
            t_eval = time.time() - t0
            saved: list[str] = []
            if cfg.save_adapters and self.acc.is_main_process:
                folder = self.run_dir / ADAPTERS_DIR / f"{stage.index}-{stage.name}"
                saved = [str(p.relative_to(self.run_dir)) for p in method.save_task(model, stage, folder)]
            results["stages"].append(stage.name)
            results["matrix"].append(row)
            results["training"].append({**train_log, "saved": saved})
            results["timings"]["stages"].append(
                {
                    "stage": stage.name,
                    "train_seconds": t_train,
                    "eval_seconds": t_eval,
                    "peak_memory_mb": _peak_memory_mb(self.acc.device),
                }
            )
            self._update_summary(results, stages, stream)
            if stage.index == len(stages) - 1:
                results["status"] = "complete"
                results["method_stats"] = method.stats()
                results["timings"]["total_seconds"] = (
                    time.time() - t_start + results["timings"].get("total_seconds_before_resume", 0.0)
                )
                if self.acc.is_main_process:
                    write_predictions(self.run_dir, preds)
            else:
                results["method_stats"] = method.stats()
            # checkpoint first: it is the source of truth for completed rows (results.json is derived)
            self._save_checkpoint(model, stage.index + 1, 0)
            if self.acc.is_main_process:
                write_results(self.run_dir, results)
            self.acc.wait_for_everyone()
            if self.acc.is_main_process:
                log.info(
                    "stage %d/%d (%s): %s",
                    stage.index + 1,
                    len(stages),
                    stage.name,
                    " ".join(f"{a:.1f}" for a in row),
                )
        if cfg.log.tensorboard:
            self.acc.end_training()
        if self.lock is not None:
            self.lock.release()
        return RunResult(self.run_dir, results, model, tok, self.acc.is_main_process)

    def _new_results(self, cfg: RunConfig, source: str, kind: str, stream: Stream, method: ContinualMethod) -> dict:
        return {
            "status": "running",
            "run": {
                "name": cfg.name,
                "method": cfg.method.method_name(),
                "model": source,
                "stream": stream.name,
                "seed": cfg.seed,
                "needs_task_id": method.needs_task_id,
            },
            "kind": kind,
            "eval_mode": cfg.eval.mode,
            "eval_split": cfg.eval.split,
            "tasks": stream.task_names,
            "stages": [],
            "zero_shot": None,
            "matrix": [],
            "metrics": {},
            "per_task": {},
            "counts": {t.name: {s: len(t.split(s)) for s in ("train", "dev", "test")} for t in stream},
            "budgets": {
                "train_per_task": cfg.data.train_per_task,
                "dev_per_task": cfg.data.dev_per_task,
                "test_per_task": cfg.data.test_per_task,
                "max_source_length": cfg.data.max_source_length,
                "max_target_length": cfg.data.max_target_length,
                "data_seed": cfg.data_seed,
            },
            "data": self._provenance(stream),
            "timings": {"stages": []},
            "training": [],
            "versions": library_versions(),
            "git": git_sha(),
            "num_processes": self.acc.num_processes,
            "engine": self.engine.to_dict(),
            "environment": runtime_environment(self.acc.device, self.acc.num_processes, self.acc.mixed_precision),
            "config": cfg.to_dict(),
        }

    # ------------------------------------------------------------------------------------------
    def _update_summary(self, results: dict[str, Any], stages: list[Stage], stream: Stream) -> None:
        R = results["matrix"]
        b = results["zero_shot"]
        complete = len(R) == len(stages)
        results["metrics"] = all_metrics(R, b) if (R and complete) else {}
        own = {s.task_index: s.index for s in stages if s.task_index >= 0}
        per_task = {}
        for j, task in enumerate(stream):
            col = [row[j] for row in R]
            per_task[task.name] = {
                "zero_shot": b[j] if b else None,
                "after_own_stage": col[own[j]] if j in own and own[j] < len(col) else None,
                "final": col[-1] if col and complete else None,
                "best": max(col) if col else None,
            }
        results["per_task"] = per_task

    def _evaluate(self, model: nn.Module, task: Task, split: str, label: str):
        return self.evaluator.evaluate(model, task, task.split(split), f"eval {label}: {task.name}")

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """The task loss: token cross-entropy on the answer tokens (prompt masked)."""
        outputs = model(**batch)
        return outputs.loss, outputs

    # ------------------------------------------------------------------------------------------
    def train_stage(
        self, model: nn.Module, method: ContinualMethod, stage: Stage, resume: Checkpoint | None = None
    ) -> dict[str, Any]:
        """Train ``model`` on ``stage`` with ``method``'s optimizer and hooks; returns the stage's log.

        With ``resume`` (a mid-stage checkpoint of this stage) the optimizer, scheduler, data position,
        losses and generator states are restored and training continues at the next step.
        """
        cfg, acc = self.cfg, self.acc
        items = method.train_examples(stage)
        if not items:
            raise DataError(
                f"stage {stage.name!r} has no training examples; check data.train_per_task (it is "
                f"{cfg.data.train_per_task})."
            )
        groups = method.param_groups(model)
        if not groups or not any(p.requires_grad for g in groups for p in g["params"]):
            raise ConfigError(
                f"method {cfg.method.method_name()!r} left no trainable parameters for stage "
                f"{stage.name!r}; check its configuration (e.g. target_modules)."
            )
        params = [p for g in groups for p in g["params"] if p.requires_grad]
        self._trained_ids |= {id(p) for p in params}
        optimizer = method.make_optimizer(groups)
        gen = torch.Generator().manual_seed(cfg.seed * 1009 + stage.index)
        loader = DataLoader(
            items,
            batch_size=cfg.train.batch_size,
            shuffle=True,
            generator=gen,
            collate_fn=self.collate,
            drop_last=False,
        )
        n_micro = math.ceil(len(items) / (cfg.train.batch_size * acc.num_processes))
        plan = _step_plan(n_micro, cfg.train.grad_accum, cfg.train.epochs, cfg.train.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(cfg.train.schedule, cfg.train.warmup_steps, len(plan))
        )
        first_step, losses, extra_losses, skipped = 0, [], [], 0
        if resume is not None:
            optimizer.load_state_dict(resume.optimizer)
            scheduler.load_state_dict(resume.scheduler)
            first_step, losses, extra_losses, skipped = (
                resume.step,
                list(resume.losses),
                list(resume.extra_losses),
                resume.skipped,
            )
        model.train()
        pmodel, popt, ploader, psched = acc.prepare(model, optimizer, loader, scheduler)
        batches = _cycle(ploader)
        for _ in range(sum(plan[:first_step])):  # fast-forward the data to where the checkpoint stopped
            next(batches)
        if resume is not None:
            set_rng_state(*resume.rng_for(self.acc.process_index))
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(plan),
            initial=first_step,
            desc=f"train {stage.index + 1}.{stage.name}",
            leave=False,
            disable=not (cfg.log.progress and acc.is_local_main_process),
        )
        every = cfg.train.checkpoint_every
        try:
            for step in range(first_step, len(plan)):
                n = plan[step]
                step_loss, step_extra, bad = 0.0, 0.0, False
                for k in range(n):
                    batch = next(batches)
                    sync = k == n - 1
                    ctx = acc.no_sync(pmodel) if (not sync and acc.num_processes > 1) else _null()
                    with ctx, _oom_guard(stage, step, cfg):
                        with acc.autocast():
                            task_loss, outputs = self.compute_loss(pmodel, batch)
                            extra = method.loss(model, batch, outputs)
                            loss = task_loss if extra is None else task_loss + extra
                        if not torch.isfinite(loss.detach()).all():
                            bad = True
                            if cfg.train.nan_policy == "stop":
                                raise TrainingError(
                                    f"non-finite loss ({loss.item()}) in stage {stage.index + 1} "
                                    f"({stage.name!r}) at optimizer step {step + 1}; the last good checkpoint "
                                    f"is kept in {str(self.run_dir / CHECKPOINT_DIR)!r}. Lower train.lr, enable "
                                    "train.max_grad_norm, or use train.mixed_precision=no/bf16, then rerun."
                                )
                            break
                        acc.backward(loss / n)
                    step_loss += task_loss.item() / n
                    if extra is not None:
                        step_extra += float(extra.detach()) / n
                if bad:
                    skipped += 1
                    popt.zero_grad(set_to_none=True)
                    continue
                if cfg.train.max_grad_norm is not None:
                    acc.clip_grad_norm_(params, cfg.train.max_grad_norm)
                method.after_backward(model)
                popt.step()
                psched.step()
                popt.zero_grad(set_to_none=True)
                method.after_step(model)
                losses.append(step_loss)
                extra_losses.append(step_extra)
                bar.update(1)
                if (step + 1) % cfg.log.log_every == 0 or step + 1 == len(plan):
                    bar.set_postfix(loss=f"{np.mean(losses[-cfg.log.log_every :]):.3f}")
                    if cfg.log.tensorboard:
                        acc.log({f"loss/{stage.name}": float(np.mean(losses[-cfg.log.log_every :]))}, step=step)
                if every and (step + 1) % every == 0 and step + 1 < len(plan):
                    self._save_checkpoint(
                        model,
                        stage.index,
                        step + 1,
                        optimizer=optimizer.state_dict(),
                        scheduler=scheduler.state_dict(),
                        losses=losses,
                        extra_losses=extra_losses,
                        skipped=skipped,
                    )
        finally:
            bar.close()
            acc.unwrap_model(pmodel, keep_fp32_wrapper=False)
            acc.free_memory()
        return {
            "stage": stage.name,
            "steps": len(losses),
            "skipped_steps": skipped,
            "examples": len(items),
            "first_loss": losses[0] if losses else None,
            "last_loss": float(np.mean(losses[-cfg.log.log_every :])) if losses else None,
            "mean_extra_loss": float(np.mean(extra_losses)) if extra_losses else None,
            "loss_curve": [
                float(np.mean(losses[i : i + cfg.log.log_every])) for i in range(0, len(losses), cfg.log.log_every)
            ],
        }


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _oom_guard:
    """Turn an out-of-memory error into one message naming the stage, the step and the fixes."""

    def __init__(self, stage: Stage, step: int, cfg: RunConfig) -> None:
        self.stage, self.step, self.cfg = stage, step, cfg

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        oom = exc is not None and (
            isinstance(exc, torch.cuda.OutOfMemoryError)
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower())
        )
        if oom:
            t, d = self.cfg.train, self.cfg.data
            raise TrainingError(
                f"out of memory in stage {self.stage.index + 1} ({self.stage.name!r}) at optimizer step "
                f"{self.step + 1} with train.batch_size={t.batch_size} and data.max_source_length="
                f"{d.max_source_length}; lower train.batch_size (raise train.grad_accum to keep the effective "
                "batch), lower data.max_source_length, or use train.mixed_precision=bf16. Completed stages are "
                "kept: rerun the same command to resume."
            ) from None
        return False


def run(
    config: RunConfig | Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    *,
    stream: Stream | None = None,
    force: bool = False,
) -> RunResult:
    """Run a whole continual task stream and write the run directory (or resume the one there).

    Args:
        config: a :class:`RunConfig`, a mapping with the same structure, or a YAML path.
        overrides: ``dotted.key=value`` strings applied on top (as on the command line).
        stream: a :class:`Stream` built in Python, used instead of ``config.data``.
        force: start an existing run directory over instead of resuming it.

    Returns:
        A :class:`RunResult` (run directory, results, matrix, metrics, final model).
    """
    cfg = _resolve_config(config, overrides)
    return Runner(cfg, stream=stream, force=force).run()
