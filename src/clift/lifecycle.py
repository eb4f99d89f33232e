"""The method lifecycle that both training and rebuilding a finished run follow, written once.

A run builds its model in this order::

    make_context → method.setup → method.attach            (start_method)
    per stage: before_task → train → after_task → evaluate   (the runner)

A model is rebuilt from a checkpoint (on resume, and by ``clift export``) by replaying the structure of
the finished stages without computing anything, then loading the values::

    start_method → replay_structure(finished stages) → load_tracked + method.load_state_dict

**Paired runs.** Structure hooks (``attach``, ``before_task``, ``after_task``, ``restore_task``) build
modules — a new LoRA, DEAL's filter and MLP — and PEFT and torch initialise them from the global
generator. Run there, they would leave every method's training stream (dropout masks) in a different
state, so a per-order difference between two methods would mix the method with random-stream noise.
They therefore run inside :func:`structure_rng`: a forked generator seeded from the run seed and the
stage only, restored afterwards. Every method enters each stage's training with the same global state
(and batches come from a per-stage generator), so methods that build the same thing at a stage (``seq_lora``
and ``inc_lora`` at the first) build identical modules and see identical dropout masks; method-private
randomness draws from the method's own generator (``MethodContext.seed`` and the method name).

A checkpoint holds the *tracked* tensors (:func:`tracked_tensors`): everything the method added to the
base model, plus base weights that trained. A new lifecycle hook is added here, and the runner and
``clift.export`` both follow it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from clift.data.task import Stream
from clift.errors import ResumeError
from clift.integrity import check_shapes
from clift.methods import ContinualMethod, MethodContext, Stage, build_method


def make_context(
    cfg: Any,
    model: nn.Module,
    tokenizer: Any,
    kind: str,
    stream: Stream,
    run_dir: Path,
    device: torch.device,
    **runtime: Any,
) -> MethodContext:
    """The :class:`MethodContext` a method receives in ``setup``.

    Args:
        cfg: the run's ``RunConfig``.
        model: the base model (its config gives ``model_type``).
        tokenizer: the model's tokenizer.
        kind: ``causal`` or ``seq2seq``.
        stream: the task stream (for a rebuild, names and label sets suffice).
        run_dir: the run directory.
        device: where the model lives.
        **runtime: what only a training run has: ``collate``, ``compute_loss``, ``accelerator``.
    """
    return MethodContext(
        kind=kind,
        model_type=getattr(model.config, "model_type", ""),
        tokenizer=tokenizer,
        stream=stream,
        run_dir=run_dir,
        train=cfg.train,
        seed=cfg.seed,
        device=device,
        **runtime,
    )


# separates the structure stream from the run's other seeded streams (data selection, batches)
_STRUCTURE_SALT = 7919


@contextlib.contextmanager
def structure_rng(seed: int, stage_index: int) -> Iterator[None]:
    """Run a structure hook on a torch random stream of its own, leaving the global stream untouched.

    Args:
        seed: the run seed.
        stage_index: the stage the hook belongs to (-1 for ``attach``, which is seeded with the run seed
            itself).
    """
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        # attach draws from the run seed itself, as it did when it ran on the freshly seeded global stream,
        # so what attach builds (a single LoRA's initial A) is what earlier versions built
        torch.manual_seed(seed if stage_index < 0 else seed * _STRUCTURE_SALT + stage_index + 1)
        yield


def _seed_of(method: ContinualMethod) -> int:
    return method.ctx.seed if method.ctx is not None else 0


def start_method(method: ContinualMethod, ctx: MethodContext, model: nn.Module) -> nn.Module:
    """Give ``method`` its context and let it prepare the base model; returns the model to train."""
    method.setup(ctx)
    with structure_rng(ctx.seed, -1):
        return method.attach(model)


def enter_stage(method: ContinualMethod, model: nn.Module, stage: Stage) -> nn.Module:
    """``method.before_task`` on the structure stream of ``stage``."""
    with structure_rng(_seed_of(method), stage.index):
        return method.before_task(model, stage)


def leave_stage(method: ContinualMethod, model: nn.Module, stage: Stage) -> nn.Module:
    """``method.after_task`` on the structure stream of ``stage`` (its draws never reach the next stage's)."""
    with structure_rng(_seed_of(method), stage.index):
        return method.after_task(model, stage)


def replay_structure(method: ContinualMethod, model: nn.Module, stages: Iterable[Stage]) -> nn.Module:
    """Rebuild the structure finished ``stages`` left (``before_task`` + ``restore_task`` each).

    Values are not computed: :func:`load_tracked` and ``method.load_state_dict`` overwrite them.
    """
    for stage in stages:
        model = enter_stage(method, model, stage)
        with structure_rng(_seed_of(method), stage.index):
            model = method.restore_task(model, stage)
    return model


def tracked_tensors(model: nn.Module, base_ids: set[int], trained_ids: set[int]) -> dict[str, torch.Tensor]:
    """The tensors a checkpoint must hold: everything not in the base model, and base weights that trained.

    Args:
        model: the model being trained.
        base_ids: ``id()`` of every parameter and buffer of the base model as loaded.
        trained_ids: ``id()`` of base parameters some stage trained.
    """
    out: dict[str, torch.Tensor] = {}
    for name, p in model.named_parameters():
        if id(p) not in base_ids or id(p) in trained_ids:
            out[name] = p
    for name, b in model.named_buffers():
        if id(b) not in base_ids:
            out[name] = b
    return out


def load_tracked(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], base_ids: set[int], what: str = "the checkpoint"
) -> set[int]:
    """Copy checkpointed ``tensors`` into the rebuilt ``model`` (device and dtype of the model's tensors).

    Args:
        model: the rebuilt model.
        tensors: the checkpoint's tracked tensors.
        base_ids: ``id()`` of every parameter and buffer of the base model as loaded.
        what: how messages name the checkpoint (``checkpoint of '<run dir>'``).

    Returns:
        ``id()`` of the base parameters among them: base weights that trained in a finished stage.

    Raises:
        ResumeError: if the checkpoint holds a tensor the model does not have (its structure changed), or one
            whose shape differs from the model's (checked before any is copied in).
    """
    params = dict(model.named_parameters())
    named = {**dict(model.named_buffers()), **params}
    missing = sorted(set(tensors) - set(named))
    if missing:
        raise ResumeError(
            f"the checkpoint holds {len(missing)} tensor(s) the rebuilt model does not have (first: "
            f"{missing[0]!r}); the method's structure changed since the run started. Rerun with --force."
        )
    check_shapes(tensors, named, what)
    trained: set[int] = set()
    with torch.no_grad():
        for name, value in tensors.items():
            named[name].copy_(value.to(named[name].device, named[name].dtype))
            if name in params and id(params[name]) in base_ids:
                trained.add(id(params[name]))
    return trained


def rebuild(
    cfg: Any,
    model: nn.Module,
    ctx: MethodContext,
    stages_done: int | None,
    tensors: Mapping[str, torch.Tensor],
    method_state: dict[str, Any],
) -> tuple[ContinualMethod, nn.Module, set[int]]:
    """Build ``cfg``'s method on ``model`` and restore a checkpoint written after ``stages_done`` stages.

    Args:
        cfg: the run's ``RunConfig``.
        model: the base model as loaded.
        ctx: from :func:`make_context`.
        stages_done: finished stages to replay (None: all of them).
        tensors: the checkpoint's tracked tensors.
        method_state: the checkpoint's method state.

    Returns:
        The method (state loaded), the model, and ``id()`` of the base parameters that trained.
    """
    base_ids = {id(t) for t in model.parameters()} | {id(t) for t in model.buffers()}
    method = build_method(cfg.method)
    model = start_method(method, ctx, model)
    stages: Sequence[Stage] = method.stages(ctx.stream)
    model = replay_structure(method, model, stages if stages_done is None else stages[:stages_done])
    trained = load_tracked(model, tensors, base_ids, f"checkpoint of {str(ctx.run_dir)!r}")
    method.load_state_dict(method_state)
    return method, model, trained
