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

from clift.config import RunConfig, load_config
from clift.data.collate import PromptEncoder, TrainCollator
from clift.data.task import Stream, Task
from clift.errors import ConfigError, DataError, ResumeError, TrainingError
from clift.evaluation import Evaluator
from clift.methods import ContinualMethod, MethodContext, Stage, build_method
from clift.metrics import all_metrics
from clift.models import load_model
from clift.results import (
    ADAPTERS_DIR,
    RESULTS_FILE,
    format_matrix,
    git_sha,
    library_versions,
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
        matrix: R as an array of shape (stages, tasks), in percent.
        metrics: AA, BWT, FWT, forgetting (percentage points; None where undefined).
    """

    run_dir: Path
    results: dict[str, Any]
    model: nn.Module | None = None
    tokenizer: Any = None

    @property
    def matrix(self) -> np.ndarray:
        return np.asarray(self.results["matrix"], dtype=float)

    @property
    def metrics(self) -> dict[str, float | None]:
        return self.results["metrics"]

    def table(self) -> str:
        return format_matrix(self.results)


def _resolve_config(
    config: RunConfig | Mapping[str, Any] | str | Path, overrides: Sequence[str]
) -> RunConfig:
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


class Runner:
    """Executes one run; see :func:`run`. Split into methods so tests and later features can reuse parts."""

    def __init__(self, cfg: RunConfig, stream: Stream | None = None, force: bool = False) -> None:
        self.cfg = cfg
        self.run_dir = cfg.resolved_output_dir
        self.force = force
        self._stream = stream

    # ------------------------------------------------------------------------------------------
    def _prepare_dir(self) -> None:
        if (self.run_dir / RESULTS_FILE).exists() and not self.force:
            raise ResumeError(
                f"run directory {str(self.run_dir)!r} already holds a run; choose a new output_dir "
                "(output_dir=... or name=...) or pass --force to overwrite it."
            )
        if self.force and self.run_dir.exists() and self.acc.is_main_process:
            shutil.rmtree(self.run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)

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

    # ------------------------------------------------------------------------------------------
    def run(self) -> RunResult:
        from accelerate.utils import set_seed

        cfg = self.cfg
        t_start = time.time()
        self.acc = make_accelerator(cfg, self.run_dir)
        self._prepare_dir()
        set_seed(cfg.seed)
        stream = self._load_stream()
        loaded = load_model(cfg.model)
        model, tok, kind = loaded.model, loaded.tokenizer, loaded.kind
        model.to(self.acc.device)
        self.encoder = PromptEncoder(tok, kind, cfg.data.max_source_length, cfg.data.max_target_length)
        self.collate = TrainCollator(self.encoder)
        self.evaluator = Evaluator(self.encoder, cfg.eval, self.acc)
        method = build_method(cfg.method)
        self.method = method

        split = cfg.eval.split
        for task in stream:
            if not task.split(split):
                raise DataError(f"task {task.name!r} has no {split} examples; check data.{split}_per_task.")

        results: dict[str, Any] = {
            "status": "running",
            "run": {
                "name": cfg.name,
                "method": cfg.method.method_name(),
                "model": loaded.source,
                "stream": stream.name,
                "seed": cfg.seed,
                "needs_task_id": method.needs_task_id,
            },
            "kind": kind,
            "eval_mode": cfg.eval.mode,
            "eval_split": split,
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
            "config": cfg.to_dict(),
        }
        self.results = results
        if self.acc.is_main_process:
            write_config(self.run_dir, cfg.to_dict())
            write_results(self.run_dir, results)

        if cfg.eval.zero_shot:
            t0 = time.time()
            results["zero_shot"] = [self._evaluate(model, t, split, "zero-shot").accuracy for t in stream]
            results["timings"]["zero_shot_seconds"] = time.time() - t0

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
        model.to(self.acc.device)

        stages = method.stages(stream)
        last_preds: list[dict[str, Any]] = []
        for stage in stages:
            model = method.before_task(model, stage)
            model.to(self.acc.device)
            t0 = time.time()
            train_log = self.train_stage(model, method, stage)
            t_train = time.time() - t0
            model = method.after_task(model, stage)
            t0 = time.time()
            row, last_preds = [], []
            for j, task in enumerate(stream):
                with method.eval_scope(model, j) as m:
                    ev = self._evaluate(m, task, split, f"after {stage.index + 1}.{stage.name}")
                row.append(ev.accuracy)
                last_preds += [{"task": task.name, **p} for p in ev.predictions]
            t_eval = time.time() - t0
            saved: list[str] = []
            if cfg.save_adapters and self.acc.is_main_process:
                folder = self.run_dir / ADAPTERS_DIR / f"{stage.index}-{stage.name}"
                saved = [str(p.relative_to(self.run_dir)) for p in method.save_task(model, stage, folder)]
            self.acc.wait_for_everyone()
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
            if self.acc.is_main_process:
                write_results(self.run_dir, results)
            log.info(
                "stage %d/%d (%s): %s",
                stage.index + 1,
                len(stages),
                stage.name,
                " ".join(f"{a:.1f}" for a in row),
            )

        results["status"] = "complete"
        results["method_stats"] = method.stats()
        results["timings"]["total_seconds"] = time.time() - t_start
        self._update_summary(results, stages, stream)
        if self.acc.is_main_process:
            write_predictions(self.run_dir, last_preds)
            write_results(self.run_dir, results)
        self.acc.end_training() if cfg.log.tensorboard else None
        return RunResult(self.run_dir, results, model, tok)

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
        return self.evaluator.evaluate(model, task, task.split(split))

    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """The task loss: token cross-entropy on the answer tokens (prompt masked)."""
        outputs = model(**batch)
        return outputs.loss, outputs

    # ------------------------------------------------------------------------------------------
    def train_stage(self, model: nn.Module, method: ContinualMethod, stage: Stage) -> dict[str, Any]:
        """Train ``model`` on ``stage`` with ``method``'s optimizer and hooks; returns the stage's log."""
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
        model.train()
        pmodel, popt, ploader, psched = acc.prepare(model, optimizer, loader, scheduler)
        params = [p for g in groups for p in g["params"] if p.requires_grad]
        batches = _cycle(ploader)
        losses: list[float] = []
        extra_losses: list[float] = []
        skipped = 0
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(plan),
            desc=f"train {stage.index + 1}.{stage.name}",
            leave=False,
            disable=not (cfg.log.progress and acc.is_local_main_process),
        )
        try:
            for step, n in enumerate(plan):
                step_loss, step_extra, bad = 0.0, 0.0, False
                for k in range(n):
                    batch = next(batches)
                    sync = k == n - 1
                    ctx = acc.no_sync(pmodel) if (not sync and acc.num_processes > 1) else _null()
                    with ctx:
                        with acc.autocast():
                            task_loss, outputs = self.compute_loss(pmodel, batch)
                            extra = method.loss(model, batch, outputs)
                            loss = task_loss if extra is None else task_loss + extra
                        if not torch.isfinite(loss.detach()).all():
                            bad = True
                            if cfg.train.nan_policy == "stop":
                                raise TrainingError(
                                    f"non-finite loss ({loss.item()}) in stage {stage.index + 1} "
                                    f"({stage.name!r}) at optimizer step {step + 1}; lower train.lr, enable "
                                    "train.max_grad_norm, or use train.mixed_precision=no/bf16."
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
                        acc.log({f"loss/{stage.name}": step_loss}, step=step)
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
                float(np.mean(losses[i : i + cfg.log.log_every]))
                for i in range(0, len(losses), cfg.log.log_every)
            ],
        }


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def run(
    config: RunConfig | Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    *,
    stream: Stream | None = None,
    force: bool = False,
) -> RunResult:
    """Run a whole continual task stream and write the run directory.

    Args:
        config: a :class:`RunConfig`, a mapping with the same structure, or a YAML path.
        overrides: ``dotted.key=value`` strings applied on top (as on the command line).
        stream: a :class:`Stream` built in Python, used instead of ``config.data``.
        force: overwrite an existing run directory.

    Returns:
        A :class:`RunResult` (run directory, results, matrix, metrics).
    """
    cfg = _resolve_config(config, overrides)
    return Runner(cfg, stream=stream, force=force).run()
