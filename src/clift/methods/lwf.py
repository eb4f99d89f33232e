"""LwF: learning without forgetting — distil the previous model's answers on the new task's inputs.

Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017, arXiv:1606.09282. Training task
t ≥ 2 minimises

    L = L_task + w · T² · KL( softmax(z_old / T) ‖ softmax(z / T) ),

averaged over the answer positions of the new task's training batches, where z are the model's
logits and z_old the logits of the model as it was after task t-1. As in the O-LoRA paper's
baselines, LwF runs on top of one LoRA trained through all tasks (``seq_lora``); ``trains: full``
applies it to full fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from clift.adapters import LoraFields
from clift.data.collate import IGNORE_INDEX
from clift.errors import MethodStateError
from clift.methods import legacy_state
from clift.methods.base import MethodConfig, Stage, check_state
from clift.methods.loss_terms import LossTerms, task_loss_of
from clift.methods.sequential import SequentialBaseline, SequentialFields


@dataclass
class LwFConfig(SequentialFields, LoraFields, MethodConfig):
    """LwF on top of a sequential LoRA (LoRA fields: see :class:`clift.adapters.LoraFields`).

    Attributes:
        weight: w (λ_o in the paper), weight of the distillation term. Default 1.0 (Li & Hoiem).
            0 switches distillation off: the run is then exactly ``seq_lora``.
        temperature: T, softmax temperature of both distributions; the KL is scaled by T² so its
            gradient does not shrink with T (Hinton et al. 2015). Default 2.0 (Li & Hoiem).
    """

    weight: float = field(default=1.0, metadata={"help": "w: distillation weight (0: plain seq_lora)"})
    temperature: float = field(default=2.0, metadata={"help": "T: distillation temperature"})

    def problems(self) -> list[str]:
        p = [] if self.trains == "full" else self.lora_problems()
        if self.weight < 0:
            p.append(f"method.weight must be >= 0, got {self.weight}; use 0 to switch distillation off.")
        if self.temperature <= 0:
            p.append(f"method.temperature must be > 0, got {self.temperature}; the paper uses 2.")
        return p


def answer_mask(labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Which logit positions predict an answer token.

    Args:
        labels: the batch's labels, shape (B, L), ``IGNORE_INDEX`` on prompt and padding.
        kind: ``causal`` (position i predicts token i+1, so the mask is ``labels[:, 1:]`` aligned with
            logits ``[:, :-1]``) or ``seq2seq`` (decoder position i predicts ``labels[:, i]``).

    Returns:
        A bool mask, shape (B, L-1) for causal and (B, L) for seq2seq.

    Raises:
        ValueError: for an unknown ``kind``.
    """
    if kind == "causal":
        return labels[:, 1:] != IGNORE_INDEX
    if kind == "seq2seq":
        return labels != IGNORE_INDEX
    raise ValueError(f"unknown model kind {kind!r}; allowed: 'causal', 'seq2seq'.")


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    kind: str,
    temperature: float,
) -> torch.Tensor:
    """T² · KL(teacher ‖ student) at temperature T, averaged over answer positions.

    Args:
        student_logits: shape (B, L, V); gradients flow through these.
        teacher_logits: shape (B, L, V); treated as constants.
        labels: shape (B, L) (causal) or (B, L_target) (seq2seq, matching the logits' L).
        kind: ``causal`` or ``seq2seq`` (see :func:`answer_mask`).
        temperature: T > 0.

    Returns:
        A scalar tensor (float32); 0 when the two distributions agree or there is no answer position.
    """
    mask = answer_mask(labels, kind)
    if kind == "causal":
        student_logits, teacher_logits = student_logits[:, :-1], teacher_logits[:, :-1]
    s = student_logits[mask].float() / temperature  # (N, V), N answer positions in the batch
    t = teacher_logits[mask].float().detach() / temperature
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(s, dim=-1)
    log_p_t = F.log_softmax(t, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean")  # Σ_N Σ_V p_t Δlog / N
    return kl * temperature**2


class LwF(SequentialBaseline):
    """Sequential LoRA (or full fine-tuning) distilled towards the model as it was before the task.

    The teacher is not a second model: before each task t ≥ 2 the trainable weights (the LoRA
    matrices, or every weight with ``trains: full``) are copied, and the teacher's logits are the
    same model evaluated with those copies substituted (``torch.func.functional_call``) under
    ``torch.no_grad()`` and in eval mode (deterministic targets, no dropout). The base model is never
    copied, the teacher never appears in evaluation or saved adapters, and no random numbers are
    drawn, so with ``weight: 0`` (no teacher built) the run is exactly ``seq_lora``.
    """

    config_cls = LwFConfig
    summary = "LwF: seq_lora + distillation from the previous model on the new task's inputs"

    def __init__(self, config: LwFConfig) -> None:
        super().__init__(config)
        self.config: LwFConfig = config
        self.teacher: dict[str, torch.Tensor] | None = None
        self.terms = LossTerms()

    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.start(stage.name)
        if stage.index >= 1 and self.config.weight > 0:
            self.teacher = {k: p.detach().clone() for k, p in self.trainable.items()}
        return model

    def teacher_logits(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the previous model on ``batch``, shape (B, L, V), without a graph.

        Raises:
            RuntimeError: when called with no teacher (before task 2 or with ``weight: 0``).
        """
        if self.teacher is None:
            raise RuntimeError("LwF has no teacher yet: it exists from the second task on, with weight > 0.")
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                out = functional_call(model, self.teacher, args=(), kwargs=dict(batch), strict=False)
        finally:
            model.train(was_training)
        return out.logits

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        task = task_loss_of(outputs)
        if self.teacher is None:
            self.terms.add(task_loss=task, distill=0.0, penalty=0.0)
            return None
        kind = self.ctx.kind if self.ctx is not None else "causal"
        kd = distillation_loss(
            outputs.logits, self.teacher_logits(model, batch), batch["labels"], kind, self.config.temperature
        )
        extra = self.config.weight * kd
        self.terms.add(task_loss=task, distill=kd, penalty=extra)
        return extra

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.finish()
        self.teacher = None  # free the copy; the next task snapshots the weights it starts from
        return model

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        # resume replays before_task for finished stages: drop what it built (reports come from the state)
        self.terms.discard()
        self.teacher = None
        return model

    def stats(self) -> dict[str, Any]:
        return {
            "weight": self.config.weight,
            "temperature": self.config.temperature,
            "trains": self.config.trains,
            "loss_terms": self.terms.summary(),
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"teacher": {param: tensor} | None, "terms": LossTerms state}``: the teacher while a task is
        being trained (between tasks there is none), and the loss-term sums so a resumed run reports the same."""
        return {"teacher": None if self.teacher is None else dict(self.teacher), "terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after ``attach``, so parameter names can be checked; the flat format
        of earlier versions loads too).

        Raises:
            MethodStateError: for missing or unexpected keys, or a teacher entry that names no trainable
                parameter.
        """
        names = [s.name for s in self.stages(self.ctx.stream)] if self.ctx is not None else []
        if legacy_state.is_flat(state):
            state = legacy_state.lwf(state, names)
        check_state("lwf", state, {"teacher": (dict, type(None)), "terms": dict})
        teacher = dict(state["teacher"] or {})
        if self.trainable:
            bad = [k for k in teacher if k not in self.trainable]
            if bad:
                raise MethodStateError("lwf", f"teacher.{bad[0]}", "a trainable parameter of that name")
            # checkpoints load on the CPU: the teacher's weights must sit where the model's do
            teacher = {k: v.to(self.trainable[k].device, self.trainable[k].dtype) for k, v in teacher.items()}
        self.teacher = teacher or None
        self.terms.load_state_dict(state["terms"], "lwf")
