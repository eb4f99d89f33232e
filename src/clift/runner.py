"""The continual runner: zero-shot row, then for each stage: hooks → train → hooks → evaluate every task.

``run(config)`` is the whole library in one call (``clift run`` is a thin wrapper). Training goes
through Accelerate, so device placement, bf16/fp16 autocast and multi-process data parallelism
(``accelerate launch`` / ``torchrun``) are configuration, not code paths.
"""

from __future__ import annotations

import contextlib
import logging
import math
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from clift import safety, text_metrics
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
from clift.data.prompts import make_template
from clift.data.task import Stream, Task
from clift.divergence import DivergenceGuard
from clift.engines import Engine, check_engine
from clift.errors import ConfigError, DataError, ResumeError, TrainingError
from clift.evaluation import Evaluator
from clift.integrity import check_data_unchanged, check_stage_range
from clift.lifecycle import (
    enter_stage,
    leave_stage,
    load_tracked,
    make_context,
    replay_structure,
    start_method,
    tracked_tensors,
)
from clift.memory import check_memory_settings, enable_gradient_checkpointing
from clift.methods import ContinualMethod, Stage, build_method
from clift.models import LoadedModel, load_model
from clift.results import (
    ADAPTERS_DIR,
    RESULTS_FILE,
    ZERO_SHOT_KEY,
    Budgets,
    EngineInfo,
    RecordView,
    RunInfo,
    RunRecord,
    StageTiming,
    StageTraining,
    git_sha,
    library_versions,
    read_record,
    runtime_environment,
    write_config,
    write_predictions,
    write_record,
)
from clift.runlock import RunLock, lock_run
from clift.stats import bootstrap_run

log = logging.getLogger("clift")


@dataclass
class RunResult(RecordView):
    """What :func:`run` returns.

    Attributes:
        run_dir: the run directory.
        record: the content of results.json.
        model: the final model in memory (a ``PeftModel`` for adapter methods); not saved by itself.
        tokenizer: its tokenizer.
        is_main_process: false on the other processes of a multi-process run (they should not print).
    """

    run_dir: Path
    record: RunRecord
    model: nn.Module | None = None
    tokenizer: Any = None
    is_main_process: bool = True


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


@dataclass
class _Progress:
    """How far a stage's training got: the next optimizer step, the losses so far, skipped steps."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    extra_losses: list[float] = field(default_factory=list)
    skipped: int = 0


@dataclass
class _Loop:
    """One stage's training objects: the optimizer, scheduler and loader as built, and their prepared forms."""

    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    plan: list[int]
    pmodel: Any = None
    popt: Any = None
    psched: Any = None
    batches: Any = None


class Runner:
    """Executes one run; see :func:`run`.

    A run directory that already holds a run is *resumed*: completed stages are kept (never
    recomputed), and training continues from the last checkpoint — the end of the last completed
    stage, or a mid-stage checkpoint written every ``train.checkpoint_every`` steps. A run started
    with a different configuration is refused, naming the differing keys.
    """

    def __init__(
        self,
        cfg: RunConfig,
        stream: Stream | None = None,
        force: bool = False,
        zero_shot_cache: str | Path | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = cfg.resolved_output_dir
        self.force = force
        self.zero_shot_cache = Path(zero_shot_cache) if zero_shot_cache is not None else None
        self._stream = stream
        # provenance of a Python stream, made when it is checked, carved and budgeted (_load_stream)
        self._python_provenance: dict[str, Any] = {}
        # made by run(): the accelerator, its engine, the run-folder lock, the encoders, the method, the record
        self.acc: Any = None
        self.engine: Engine | None = None
        self.lock: RunLock | None = None
        self.encoder: PromptEncoder | None = None
        self.collate: TrainCollator | None = None
        self.evaluator: Evaluator | None = None
        self.method: ContinualMethod | None = None
        self.record = RunRecord()
        self._t_start = 0.0
        # id() of the base model's tensors, and of the base parameters some stage trained (see lifecycle)
        self._base_ids: set[int] = set()
        self._trained_ids: set[int] = set()

    # ---- the stage loop -----------------------------------------------------------------------
    def run(self) -> RunResult:
        from accelerate.utils import set_seed

        cfg = self.cfg
        self._start()
        try:  # the run-folder lock is released however the run ends
            old, ckpt = self._open_dir()
            if self.lock is not None:
                self.lock.ensure()  # --force emptied the folder, lock included
            if old is not None and old.complete:
                log.info("run %s is already complete; nothing to do (--force starts it over)", self.run_dir)
                return RunResult(self.run_dir, old, is_main_process=self.acc.is_main_process)
            set_seed(cfg.seed)
            stream = self._load_stream()
            if old is not None:  # a data file edited since the run started must not be trained on silently
                recorded = ckpt.results.get("data") if ckpt else old.data
                check_data_unchanged(recorded, self._provenance(stream), self.run_dir)
            loaded, method = self._load_model()
            model = loaded.model
            self._open_record(old, ckpt, loaded, stream, method)
            if cfg.eval.zero_shot and self.record.zero_shot is None:
                self._zero_shot(model, loaded.tokenizer, stream)
            model = self._start_method(method, loaded, stream)
            stages = method.stages(stream)
            if ckpt is not None:
                check_stage_range(ckpt, len(stages), self.run_dir / CHECKPOINT_DIR)
            start = 0 if ckpt is None else ckpt.stage
            if ckpt is not None:
                model = replay_structure(method, model, stages[:start])  # the structure; values come next
                model.to(self.acc.device)
                if ckpt.step == 0:
                    self._restore(model, method, ckpt)
                    set_rng_state(*ckpt.rng_for(self.acc.process_index))
            for stage in stages[start:]:
                resume = ckpt if (ckpt is not None and ckpt.step > 0 and ckpt.stage == stage.index) else None
                model = self._run_stage(model, method, stage, stages, stream, resume)
            if cfg.log.tensorboard:
                self.acc.end_training()
            return RunResult(self.run_dir, self.record, model, loaded.tokenizer, self.acc.is_main_process)
        finally:
            if self.lock is not None:
                self.lock.release()

    def _run_stage(
        self,
        model: nn.Module,
        method: ContinualMethod,
        stage: Stage,
        stages: list[Stage],
        stream: Stream,
        resume: Checkpoint | None,
    ) -> nn.Module:
        """before_task → train → after_task → evaluate every task → save, record and checkpoint."""
        model = enter_stage(method, model, stage)
        model.to(self.acc.device)
        if resume is not None:
            self._restore(model, method, resume)
        t0 = time.time()
        train_log = self.train_stage(model, method, stage, resume)
        t_train = time.time() - t0
        model = leave_stage(method, model, stage)
        t0 = time.time()
        row, scores, preds, outcomes = self._evaluate_all(model, method, stage, stream)
        t_eval = time.time() - t0
        if self.cfg.save_adapters and self.acc.is_main_process:
            folder = self.run_dir / ADAPTERS_DIR / f"{stage.index}-{stage.name}"
            safety.refuse_symlinks(self.run_dir, folder)
            train_log.saved = [str(p.relative_to(self.run_dir)) for p in method.save_task(model, stage, folder)]
        timing = StageTiming(stage.name, t_train, t_eval, _peak_memory_mb(self.acc.device))
        record = self.record
        record.add_stage(stage.name, row, train_log, timing, scores)
        record.add_correct(str(stage.index), outcomes)
        record.update_summary(len(stages), {s.task_index: s.index for s in stages if s.task_index >= 0})
        if stage.index == len(stages) - 1:
            record.status = "complete"
            record.put("method_stats", method.stats())
            self._add_intervals(record)
            kept = record.timings.total_seconds_before_resume or 0.0
            record.timings.put("total_seconds", time.time() - self._t_start + kept)
            if self.acc.is_main_process:
                write_predictions(self.run_dir, preds)
        else:
            record.put("method_stats", method.stats())
        # checkpoint first: it is the source of truth for completed rows (results.json is derived)
        self._save_checkpoint(model, method, stage.index + 1, 0)
        if self.acc.is_main_process:
            write_record(self.run_dir, record)
        self.acc.wait_for_everyone()
        if self.acc.is_main_process:
            log.info(
                "stage %d/%d (%s): %s", stage.index + 1, len(stages), stage.name, " ".join(f"{a:.1f}" for a in row)
            )
        return model

    # ---- setting up ---------------------------------------------------------------------------
    def _start(self) -> None:
        """Check the memory settings, make the accelerator, check its engine, check and lock the run folder."""
        check_memory_settings(self.cfg)
        self._t_start = time.time()
        self.acc = make_accelerator(self.cfg, self.run_dir)
        self.engine = check_engine(self.cfg.method.method_name(), self.acc)
        safety.check_folder(self.run_dir, "run", "use a new output_dir (or name)")  # before the lock writes in it
        self.lock = lock_run(self.acc, self.run_dir)  # one launcher per run folder (clift.runlock)

    def _start_method(self, method: ContinualMethod, loaded: LoadedModel, stream: Stream) -> nn.Module:
        """Give the method its context and let it attach to the base model (then checkpointing, device)."""
        cfg = self.cfg
        ctx = make_context(
            cfg,
            loaded.model,
            loaded.tokenizer,
            loaded.kind,
            stream,
            self.run_dir,
            self.acc.device,
            collate=self.collate,
            compute_loss=self.compute_loss,
            accelerator=self.acc,
        )
        model = start_method(method, ctx, loaded.model)
        if cfg.train.gradient_checkpointing:
            enable_gradient_checkpointing(model)
        return model.to(self.acc.device)

    def _open_dir(self) -> tuple[RunRecord | None, Checkpoint | None]:
        """Create the run directory, or check and read the run it already holds."""
        existing = self.run_dir / RESULTS_FILE
        safety.check_folder(self.run_dir, "run", "use a new output_dir (or name)")  # every process, before --force
        if existing.exists() and self.force:
            if self.acc.is_main_process:
                safety.remove_clift_folder(self.run_dir, "run")  # refuses another tool's folder or a link
            self.acc.wait_for_everyone()
        safety.claim_folder(self.run_dir, "run", "use a new output_dir (or name)")
        safety.refuse_symlinks(self.run_dir, *(self.run_dir / e for e in safety.RUN_ENTRIES))
        if not existing.exists():
            return None, None
        old = read_record(self.run_dir)
        diff = config_diff(upgrade_config(old.config), self.cfg.to_dict())
        if diff:
            raise ResumeError(
                f"run directory {str(self.run_dir)!r} holds a run with a different configuration:\n  "
                + "\n  ".join(diff)
                + "\nUse a new output_dir (or name), or pass --force to start this directory over."
            )
        folder = find_checkpoint(self.run_dir)
        return old, (load_checkpoint(folder) if folder is not None else None)

    def _load_stream(self) -> Stream:
        if self._stream is not None:  # the YAML path's checks, carving and budgets apply here too
            from clift.data.python_stream import prepare_stream

            stream, self._python_provenance = prepare_stream(self._stream, self.cfg.data, self.cfg.data_seed)
            return stream
        from clift.data.benchmarks import load_stream

        return load_stream(self.cfg.data, self.cfg.data_seed)

    def _provenance(self, stream: Stream) -> dict[str, Any]:
        if self._stream is not None:
            return self._python_provenance
        from clift.data.benchmarks import data_provenance

        return data_provenance(self.cfg.data, self.cfg.data_seed, stream)

    def _load_model(self) -> tuple[LoadedModel, ContinualMethod]:
        """The base model on the run's device, its encoders and evaluator, and the (unattached) method."""
        cfg = self.cfg
        loaded = load_model(cfg.model)
        loaded.model.to(self.acc.device)
        self._base_ids = {id(t) for t in loaded.model.parameters()} | {id(t) for t in loaded.model.buffers()}
        self._trained_ids = set()
        template = make_template(cfg.data.prompt, loaded.tokenizer)
        self.encoder = PromptEncoder(
            loaded.tokenizer, loaded.kind, cfg.data.max_source_length, cfg.data.max_target_length, template
        )
        self.collate = TrainCollator(self.encoder)
        self.evaluator = Evaluator(self.encoder, cfg.eval, self.acc, progress=cfg.log.progress)
        self.method = build_method(cfg.method)
        if cfg.log.tensorboard:
            self.acc.init_trackers(cfg.name)
        return loaded, self.method

    def _open_record(
        self,
        old: RunRecord | None,
        ckpt: Checkpoint | None,
        loaded: LoadedModel,
        stream: Stream,
        method: ContinualMethod,
    ) -> None:
        """The results record: the checkpoint's, the crashed run's zero-shot row, or a new one; then written."""
        split = self.cfg.eval.split
        for task in stream:
            if not task.split(split):
                raise DataError(f"task {task.name!r} has no {split} examples; check data.{split}_per_task.")
        if ckpt is not None:
            record = RunRecord.from_dict(ckpt.results)
            record.add_resume(ckpt.stage, ckpt.step)
        elif old is not None:  # crashed before the first checkpoint: keep only the zero-shot row
            record = old
            record.drop_stages()
            record.add_resume(0, 0)
        else:
            record = self._new_record(loaded, stream, method)
        if ckpt is not None or old is not None:
            # wall time of the kept work (the part lost in the crash is not counted)
            record.timings.put("total_seconds_before_resume", record.timings.kept_seconds())
        self.record = record
        if self.acc.is_main_process:
            write_config(self.run_dir, self.cfg.to_dict())
            write_record(self.run_dir, record)

    def _new_record(self, loaded: LoadedModel, stream: Stream, method: ContinualMethod) -> RunRecord:
        cfg, acc = self.cfg, self.acc
        return RunRecord(
            run=RunInfo(cfg.name, cfg.method.method_name(), loaded.source, stream.name, cfg.seed, method.needs_task_id),
            kind=loaded.kind,
            eval_mode=cfg.eval.mode,
            eval_split=cfg.eval.split,
            **text_metrics.metric_fields([t.score_metric for t in stream]),
            tasks=stream.task_names,
            counts={t.name: {s: len(t.split(s)) for s in ("train", "dev", "test")} for t in stream},
            budgets=Budgets(
                cfg.data.train_per_task,
                cfg.data.dev_per_task,
                cfg.data.test_per_task,
                cfg.data.max_source_length,
                cfg.data.max_target_length,
                cfg.data_seed,
            ),
            data=self._provenance(stream),
            versions=library_versions(),
            git=git_sha(),
            num_processes=acc.num_processes,
            engine=EngineInfo(**self.engine.to_dict()) if self.engine is not None else None,
            environment=runtime_environment(acc.device, acc.num_processes, acc.mixed_precision),
            config=cfg.to_dict(),
        )

    # ---- checkpoints --------------------------------------------------------------------------
    def _restore(self, model: nn.Module, method: ContinualMethod, ckpt: Checkpoint) -> None:
        """Load a checkpoint's tensors into the rebuilt ``model`` and its state into ``method``."""
        self._trained_ids |= load_tracked(model, ckpt.model, self._base_ids, f"checkpoint of {str(self.run_dir)!r}")
        method.load_state_dict(ckpt.method)

    def _save_checkpoint(self, model: nn.Module, method: ContinualMethod, stage: int, step: int, **mid: Any) -> None:
        # every process's generators, so each resumes its own stream (collective: all processes call this)
        ranks = None
        if self.acc.num_processes > 1:
            from accelerate.utils import gather_object

            ranks = gather_object([rng_state()])
        if not self.acc.is_main_process:
            return
        tracked = tracked_tensors(model, self._base_ids, self._trained_ids)
        ckpt = Checkpoint(
            stage=stage,
            step=step,
            rng_ranks=ranks,
            model=tracked,
            method=method.state_dict(),
            tracked=sorted(tracked),
            results=self.record.to_dict(),
            **mid,
        )
        save_checkpoint(self.run_dir, ckpt)

    # ---- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, model: nn.Module, task: Task, split: str, label: str) -> Any:
        assert self.evaluator is not None
        return self.evaluator.evaluate(model, task, task.split(split), f"eval {label}: {task.name}")

    def _zero_shot(self, model: nn.Module, tokenizer: Any, stream: Stream) -> None:
        t0 = time.time()
        evals, reused = self._zero_shot_evals(model, tokenizer, stream)
        self.record.set_zero_shot([e.accuracy for e in evals], text_metrics.secondary_rows(evals))
        self.record.add_correct(ZERO_SHOT_KEY, [_outcomes(ev) for ev in evals])
        self.record.timings.put("zero_shot_seconds", time.time() - t0)
        if self.zero_shot_cache is not None:
            self.record.timings.put("zero_shot_reused", reused)
        if self.acc.is_main_process:
            write_record(self.run_dir, self.record)

    def _zero_shot_evals(self, model: nn.Module, tokenizer: Any, stream: Stream) -> tuple[list[Any], list[str]]:
        """Each task's zero-shot evaluation, read from the zero-shot cache where it holds the same evaluation.

        Returns:
            The evaluations in stream order, and the names of the tasks read from the cache.
        """
        split = self.cfg.eval.split
        if self.zero_shot_cache is None or self.acc.num_processes > 1:
            # several processes would each have to see the same hits; not worth a broadcast for a cache
            return [self._evaluate(model, t, split, "zero-shot") for t in stream], []
        from clift.zero_shot_cache import ZeroShotCache, evaluation_context, task_key

        cache = ZeroShotCache(self.zero_shot_cache)
        context = evaluation_context(model, tokenizer, self.cfg, self.acc.device.type, str(self.acc.mixed_precision))
        evals, reused = [], []
        for task in stream:
            key = task_key(context, task, task.split(split))
            found = cache.get(key)
            if found is None:
                found = self._evaluate(model, task, split, "zero-shot")
                cache.put(key, found, task.name)
            else:
                reused.append(task.name)
            evals.append(found)
        if reused:
            log.info("zero-shot of %s read from %s", ", ".join(reused), self.zero_shot_cache)
        return evals, reused

    def _evaluate_all(
        self, model: nn.Module, method: ContinualMethod, stage: Stage, stream: Stream
    ) -> tuple[list[float], dict[str, list[float]], list[dict[str, Any]], list[list[bool]]]:
        """Every task's own metric after ``stage`` (R's row), the secondary metrics' rows, the predictions, and
        per task the correctness of each example (for the bootstrap)."""
        evals = []
        preds: list[dict[str, Any]] = []
        outcomes: list[list[bool]] = []
        for j, task in enumerate(stream):
            with method.eval_scope(model, j) as m:
                ev = self._evaluate(m, task, self.cfg.eval.split, f"after {stage.index + 1}.{stage.name}")
            evals.append(ev)
            preds += [{"task": task.name, **p} for p in ev.predictions]
            outcomes.append(_outcomes(ev))
        return [e.accuracy for e in evals], text_metrics.secondary_rows(evals), preds, outcomes

    def _add_intervals(self, record: RunRecord) -> None:
        """Bootstrap intervals of every cell and metric (``eval.bootstrap`` resamples, seeded by the run seed).

        Only for label tasks: a free-form task's cell is a mean ROUGE / exact-match score, not the mean of
        the stored 0/1 outcomes, so a stream with one gets no intervals.
        """
        data = record.correctness()
        free_form = any(m != "accuracy" for m in (record.task_metrics or []))
        if self.cfg.eval.bootstrap == 0 or data is None or free_form:
            return
        rows, zero = data
        record.put("intervals", bootstrap_run(rows, zero, self.cfg.eval.bootstrap, seed=self.cfg.seed))

    # ---- training -----------------------------------------------------------------------------
    def compute_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
        """The task loss: token cross-entropy on the answer tokens (prompt masked)."""
        outputs = model(**batch)
        return outputs.loss, outputs

    def train_stage(
        self, model: nn.Module, method: ContinualMethod, stage: Stage, resume: Checkpoint | None = None
    ) -> StageTraining:
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
        loop, loader = self._build_loop(model, method, stage, items)
        progress = _Progress()
        if resume is not None:
            loop.optimizer.load_state_dict(resume.optimizer)
            loop.scheduler.load_state_dict(resume.scheduler)
            progress = _Progress(resume.step, list(resume.losses), list(resume.extra_losses), resume.skipped)
        self._prepare_loop(model, loop, loader, progress.step, resume)
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(loop.plan),
            initial=progress.step,
            desc=f"train {stage.index + 1}.{stage.name}",
            leave=False,
            disable=not (cfg.log.progress and acc.is_local_main_process),
        )
        guard = DivergenceGuard(loop.params, cfg.train, stage, self.run_dir / CHECKPOINT_DIR)
        try:
            for step in range(progress.step, len(loop.plan)):
                if not self._optimizer_step(model, method, stage, step, loop, progress):
                    continue
                guard.check(step, progress.losses[-1])
                bar.update(1)
                self._after_step(model, method, stage, step, loop, progress, bar)
        finally:
            bar.close()
            acc.unwrap_model(loop.pmodel, keep_fp32_wrapper=False)
            acc.free_memory()
        return _training_log(stage, len(items), progress, cfg.log.log_every)

    def _prepare_loop(
        self, model: nn.Module, loop: _Loop, loader: DataLoader, start: int, resume: Checkpoint | None
    ) -> None:
        """Hand model, optimizer, loader and schedule to Accelerate; move the data to step ``start``.

        On resume the data iterator is fast-forwarded past the batches already trained on and the
        generators are restored afterwards, so the continued run draws what the uninterrupted one would.
        """
        model.train()
        acc = self.acc
        loop.pmodel, loop.popt, ploader, loop.psched = acc.prepare(model, loop.optimizer, loader, loop.scheduler)
        loop.batches = _cycle(ploader)
        for _ in range(sum(loop.plan[:start])):
            next(loop.batches)
        if resume is not None:
            set_rng_state(*resume.rng_for(acc.process_index))

    def _after_step(
        self,
        model: nn.Module,
        method: ContinualMethod,
        stage: Stage,
        step: int,
        loop: _Loop,
        progress: _Progress,
        bar: Any,
    ) -> None:
        """After optimizer step ``step``: the logged loss (mean of the last ``log_every``), and a
        mid-stage checkpoint every ``checkpoint_every`` steps (not after the last: the stage's end saves)."""
        cfg = self.cfg
        log_every, every, last = cfg.log.log_every, cfg.train.checkpoint_every, step + 1 == len(loop.plan)
        if (step + 1) % log_every == 0 or last:
            mean = float(np.mean(progress.losses[-log_every:]))
            bar.set_postfix(loss=f"{mean:.3f}")
            if cfg.log.tensorboard:
                self.acc.log({f"loss/{stage.name}": mean}, step=step)
        if every and (step + 1) % every == 0 and not last:
            self._save_checkpoint(
                model,
                method,
                stage.index,
                step + 1,
                optimizer=loop.optimizer.state_dict(),
                scheduler=loop.scheduler.state_dict(),
                losses=progress.losses,
                extra_losses=progress.extra_losses,
                skipped=progress.skipped,
            )

    def _build_loop(
        self, model: nn.Module, method: ContinualMethod, stage: Stage, items: list[Any]
    ) -> tuple[_Loop, DataLoader]:
        """The stage's optimizer (``method``'s groups), shuffled loader, step plan and LR schedule."""
        cfg = self.cfg
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
        n_micro = math.ceil(len(items) / (cfg.train.batch_size * self.acc.num_processes))
        plan = _step_plan(n_micro, cfg.train.grad_accum, cfg.train.epochs, cfg.train.max_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _lr_lambda(cfg.train.schedule, cfg.train.warmup_steps, len(plan))
        )
        return _Loop(params, optimizer, scheduler, plan), loader

    def _optimizer_step(
        self, model: nn.Module, method: ContinualMethod, stage: Stage, step: int, loop: _Loop, progress: _Progress
    ) -> bool:
        """Accumulate ``loop.plan[step]`` micro-batches and step the optimizer; False if the step was skipped.

        Raises:
            TrainingError: for a non-finite loss under ``train.nan_policy=stop``, or out of memory.
        """
        cfg, acc = self.cfg, self.acc
        n = loop.plan[step]
        step_loss, step_extra = 0.0, 0.0
        for k in range(n):
            batch = next(loop.batches)
            sync = k == n - 1
            ctx = acc.no_sync(loop.pmodel) if (not sync and acc.num_processes > 1) else contextlib.nullcontext()
            with ctx, _oom_guard(stage, step, cfg):
                with acc.autocast():
                    task_loss, outputs = self.compute_loss(loop.pmodel, batch)
                    extra = method.loss(model, batch, outputs)
                    loss = task_loss if extra is None else task_loss + extra
                if not torch.isfinite(loss.detach()).all():
                    if cfg.train.nan_policy == "stop":
                        raise TrainingError(
                            f"non-finite loss ({loss.item()}) in stage {stage.index + 1} ({stage.name!r}) at "
                            f"optimizer step {step + 1}; the last good checkpoint is kept in "
                            f"{str(self.run_dir / CHECKPOINT_DIR)!r}. Lower train.lr, enable "
                            "train.max_grad_norm, or use train.mixed_precision=no/bf16, then rerun."
                        )
                    progress.skipped += 1
                    loop.popt.zero_grad(set_to_none=True)
                    return False
                acc.backward(loss / n)
            step_loss += task_loss.item() / n
            if extra is not None:
                step_extra += float(extra.detach()) / n
        if cfg.train.max_grad_norm is not None:
            acc.clip_grad_norm_(loop.params, cfg.train.max_grad_norm)
        method.after_backward(model)
        loop.popt.step()
        loop.psched.step()
        loop.popt.zero_grad(set_to_none=True)
        method.after_step(model)
        progress.losses.append(step_loss)
        progress.extra_losses.append(step_extra)
        return True


def _outcomes(ev: Any) -> list[bool]:
    """Per example of one evaluation: whether it was correct (exact match for free-form tasks)."""
    return [bool(p.get("correct", False)) for p in ev.predictions]


def _training_log(stage: Stage, examples: int, progress: _Progress, log_every: int) -> StageTraining:
    """A stage's training log: steps, skipped steps, first/last loss, loss curve (means of ``log_every`` steps)."""
    losses, extra = progress.losses, progress.extra_losses
    return StageTraining(
        stage=stage.name,
        steps=len(losses),
        skipped_steps=progress.skipped,
        examples=examples,
        first_loss=losses[0] if losses else None,
        last_loss=float(np.mean(losses[-log_every:])) if losses else None,
        mean_extra_loss=float(np.mean(extra)) if extra else None,
        loss_curve=[float(np.mean(losses[i : i + log_every])) for i in range(0, len(losses), log_every)],
    )


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
    zero_shot_cache: str | Path | None = None,
) -> RunResult:
    """Run a whole continual task stream and write the run directory (or resume the one there).

    Args:
        config: a :class:`RunConfig`, a mapping with the same structure, or a YAML path.
        overrides: ``dotted.key=value`` strings applied on top (as on the command line).
        stream: a :class:`Stream` built in Python, used instead of ``config.data``.
        force: start an existing run directory over instead of resuming it.
        zero_shot_cache: a folder of zero-shot evaluations shared between runs
            (:mod:`clift.zero_shot_cache`); a task whose evaluation it holds is not evaluated again.
            Single-process runs only (ignored with several processes). Suites pass ``<output_dir>/.zero-shot``.

    Returns:
        A :class:`RunResult` (run directory, results, matrix, metrics, final model).
    """
    cfg = _resolve_config(config, overrides)
    return Runner(cfg, stream=stream, force=force, zero_shot_cache=zero_shot_cache).run()
