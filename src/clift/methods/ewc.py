"""EWC: elastic weight consolidation on the trainable parameters, with an online diagonal Fisher.

Kirkpatrick et al., "Overcoming catastrophic forgetting in neural networks", PNAS 2017,
arXiv:1612.00796; the online form (one running Fisher, anchor at the latest task) is Schwarz et al.,
"Progress & Compress", ICML 2018, arXiv:1805.06370. Training task t minimises

    L = L_task + (λ/2) Σ_k F_k (θ_k − θ*_k)²,   F ← γ F + F_{t-1},   θ* = θ after task t-1,

where F_t is the diagonal empirical Fisher of task t: the mean over its training examples of the
squared gradient of the task loss. As in the O-LoRA paper's baselines, EWC runs on top of one LoRA
trained through all tasks (``seq_lora``); ``trains: full`` applies it to every weight instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from clift.adapters import LoraFields
from clift.errors import MethodStateError
from clift.methods import legacy_state
from clift.methods.base import MethodConfig, Stage, check_state
from clift.methods.loss_terms import LossTerms, task_loss_of
from clift.methods.sequential import SequentialBaseline, SequentialFields

# --------------------------------------------------------------------------------------------------
# EWC
# --------------------------------------------------------------------------------------------------


@dataclass
class EWCConfig(SequentialFields, LoraFields, MethodConfig):
    """EWC on top of a sequential LoRA (LoRA fields: see :class:`clift.adapters.LoraFields`).

    Attributes:
        ewc_lambda: λ, the penalty is (λ/2) Σ F (θ − θ*)². Default 400 (TRACE's EWC baseline, Wang et
            al. 2023, which uses the same (λ/2) form). The Fisher's scale follows the loss and the
            parameterisation, so check ``stats()["loss_terms"]`` and tune λ on the dev split.
        gamma: γ, decay of the running Fisher, F ← γ F + F_t. Default 1.0 (every task counts fully;
            Schwarz et al. use γ < 1 to let old tasks fade).
        fisher_samples: training examples of each task used to estimate its Fisher (a seeded random
            subset); null = all of them. Default 128. Each costs one forward and one backward.
        fisher_batch_size: examples per gradient in the Fisher estimate. Default 1 = the per-example
            empirical Fisher. Larger is faster but squares a batch-mean gradient, which underestimates
            the Fisher (roughly by the batch size where the gradient is mostly noise).
    """

    ewc_lambda: float = field(default=400.0, metadata={"help": "λ: penalty (λ/2) Σ F (θ − θ*)²"})
    gamma: float = field(default=1.0, metadata={"help": "γ: online Fisher decay, F ← γF + F_t"})
    fisher_samples: int | None = field(default=128, metadata={"help": "examples per task for the Fisher (null: all)"})
    fisher_batch_size: int = field(
        default=1, metadata={"help": "examples per squared gradient (1: per-example Fisher)"}
    )

    def problems(self) -> list[str]:
        p = [] if self.trains == "full" else self.lora_problems()
        if self.ewc_lambda < 0:
            p.append(f"method.ewc_lambda must be >= 0, got {self.ewc_lambda}; use 0 to switch EWC off.")
        if not 0 <= self.gamma <= 1:
            p.append(f"method.gamma must be in [0, 1], got {self.gamma}; 1 keeps every task's Fisher.")
        if self.fisher_samples is not None and self.fisher_samples < 1:
            p.append(f"method.fisher_samples must be >= 1 or null (all examples), got {self.fisher_samples}.")
        if self.fisher_batch_size < 1:
            p.append(f"method.fisher_batch_size must be >= 1, got {self.fisher_batch_size}.")
        return p


def ewc_penalty(
    params: dict[str, torch.Tensor], fisher: dict[str, torch.Tensor], anchor: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Σ_k F_k (θ_k − θ*_k)² over every parameter in ``fisher`` (without the λ/2 factor).

    Args:
        params: current parameters by name (any shapes).
        fisher: the diagonal Fisher, same names and shapes, non-negative.
        anchor: θ*, same names and shapes.

    Returns:
        A scalar tensor; 0 when ``params`` equal ``anchor``. Its gradient is 2 F (θ − θ*).

    Raises:
        KeyError: naming a parameter with a Fisher entry but no current value.
    """
    total: torch.Tensor | None = None
    for name, f in fisher.items():
        if name not in params:
            raise KeyError(f"EWC has a Fisher entry for {name!r} but the model has no such parameter.")
        p = params[name]
        term = (f.to(p.dtype) * (p - anchor[name].to(p.dtype)).pow(2)).sum()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("ewc_penalty got an empty Fisher; estimate it after a task first.")
    return total


class EWC(SequentialBaseline):
    """Sequential LoRA (or full fine-tuning) with an online-EWC penalty towards the previous weights.

    After each task (``after_task``) the diagonal empirical Fisher of that task is estimated from
    ``fisher_samples`` of its training examples (model in eval mode, so dropout does not add noise;
    gradients through ``torch.autograd.grad``, so no ``.grad`` is left behind), accumulated into the
    running Fisher, and the current weights become the anchor θ*. From the second task on, the
    ``loss`` hook adds (λ/2) Σ F (θ − θ*)².
    """

    config_cls = EWCConfig
    summary = "EWC: seq_lora + (λ/2) Σ F (θ − θ*)² with an online diagonal Fisher"

    def __init__(self, config: EWCConfig) -> None:
        super().__init__(config)
        self.config: EWCConfig = config
        self.fisher: dict[str, torch.Tensor] = {}
        self.anchor: dict[str, torch.Tensor] = {}
        self.tasks_seen = 0
        self.terms = LossTerms()
        self.fisher_log: list[dict[str, Any]] = []

    # ---- per task ---------------------------------------------------------------------------------
    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.start(stage.name)
        return model

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        task = task_loss_of(outputs)
        if not self.fisher:  # the first task: nothing to consolidate yet
            self.terms.add(task_loss=task, ewc=0.0, penalty=0.0)
            return None
        if self.config.ewc_lambda == 0:  # measured for the report, without a graph, but not applied
            with torch.no_grad():
                self.terms.add(task_loss=task, ewc=ewc_penalty(self.trainable, self.fisher, self.anchor), penalty=0.0)
            return None
        raw = ewc_penalty(self.trainable, self.fisher, self.anchor)
        extra = 0.5 * self.config.ewc_lambda * raw
        self.terms.add(task_loss=task, ewc=raw, penalty=extra)
        return extra

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.finish()
        fisher_t, n_examples = self.estimate_fisher(model, stage)
        gamma = self.config.gamma
        if self.fisher:
            self.fisher = {k: gamma * self.fisher[k] + fisher_t[k] for k in fisher_t}
        else:
            self.fisher = fisher_t
        self.anchor = {k: p.detach().clone() for k, p in self.trainable.items()}
        self.tasks_seen += 1
        flat = torch.cat([f.flatten() for f in fisher_t.values()])
        self.fisher_log.append(
            {
                "stage": stage.name,
                "examples": n_examples,
                "fisher_mean": float(flat.mean()),
                "fisher_max": float(flat.max()),
            }
        )
        return model

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        # on resume the Fisher, the anchor and the reports of finished stages come from the checkpoint
        self.terms.discard()
        return model

    # ---- the Fisher -------------------------------------------------------------------------------
    def fisher_examples(self, stage: Stage) -> list[tuple[Any, Any]]:
        """The (task, example) pairs the Fisher of ``stage`` is estimated on (seeded, deterministic)."""
        items = [(task, ex) for task in stage.tasks for ex in task.train]
        k = self.config.fisher_samples
        if k is None or k >= len(items):
            return items
        seed = self.ctx.seed if self.ctx is not None else 0
        rng = np.random.default_rng([seed, max(stage.task_index, 0), stage.index])
        keep = np.sort(rng.choice(len(items), size=k, replace=False))
        return [items[i] for i in keep]

    def estimate_fisher(self, model: nn.Module, stage: Stage) -> tuple[dict[str, torch.Tensor], int]:
        """Diagonal empirical Fisher of ``stage``'s task for :attr:`trainable`.

        F_t = (1/N_b) Σ_b g_b², g_b = ∇_θ (mean task loss of micro-batch b); with
        ``fisher_batch_size`` 1 this is the per-example empirical Fisher.

        Returns:
            ``({name: F (same shape as the parameter, float32, >= 0)}, examples used)``.

        Raises:
            RuntimeError: when the method has not been set up by a runner (no collate / compute_loss).
        """
        ctx = self.ctx
        if ctx is None or ctx.collate is None or ctx.compute_loss is None:
            raise RuntimeError(
                "EWC.estimate_fisher needs the run context (collate, compute_loss); call setup(ctx) first."
            )
        items = self.fisher_examples(stage)
        names = [n for n, p in self.trainable.items() if p.requires_grad]
        tensors = [self.trainable[n] for n in names]
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in self.trainable.items()}
        bs = self.config.fisher_batch_size
        n_batches = 0
        was_training = model.training
        model.eval()
        try:
            with torch.enable_grad():
                for start in range(0, len(items), bs):
                    batch = ctx.collate(items[start : start + bs])
                    batch = {k: v.to(ctx.device) for k, v in batch.items()}
                    with self.autocast():
                        loss, _ = ctx.compute_loss(model, batch)
                    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
                    for name, g in zip(names, grads, strict=True):
                        if g is not None:
                            fisher[name] += g.detach().float().pow(2)
                    n_batches += 1
        finally:
            model.train(was_training)
        for f in fisher.values():
            f.div_(max(n_batches, 1))
        return fisher, len(items)

    # ---- reporting and state ----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        return {
            "ewc_lambda": self.config.ewc_lambda,
            "gamma": self.config.gamma,
            "trains": self.config.trains,
            "fisher": self.fisher_log,
            "loss_terms": self.terms.summary(),
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"tasks_seen": int, "fisher": {param: F}, "anchor": {param: θ*}, "fisher_log": [row, ...],
        "terms": LossTerms state}``: the running Fisher and anchor, and the report's numbers so a resumed
        run reports the same."""
        return {
            "tasks_seen": self.tasks_seen,
            "fisher": dict(self.fisher),
            "anchor": dict(self.anchor),
            "fisher_log": [dict(row) for row in self.fisher_log],
            "terms": self.terms.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (after ``attach``, so parameter names can be checked; the flat format
        of earlier versions loads too).

        Raises:
            MethodStateError: for missing or unexpected keys, or Fisher/anchor entries that do not match
                the trainable parameters by name and shape.
        """
        if legacy_state.is_flat(state):
            state = legacy_state.ewc(state, self._stage_names())
        check_state(
            "ewc", state, {"tasks_seen": int, "fisher": dict, "anchor": dict, "fisher_log": list, "terms": dict}
        )
        fisher, anchor = dict(state["fisher"]), dict(state["anchor"])
        if set(fisher) != set(anchor):
            raise MethodStateError("ewc", "anchor", f"the parameters of 'fisher' ({len(fisher)} entries), by name")
        if self.trainable:
            bad = [k for k in fisher if k not in self.trainable or fisher[k].shape != self.trainable[k].shape]
            if bad:
                raise MethodStateError(
                    "ewc",
                    f"fisher.{bad[0]}",
                    f"a trainable parameter of that name and shape ({len(bad)} entries differ)",
                )
            # checkpoints load on the CPU: put F and θ* next to the parameters they constrain
            fisher = {k: v.to(self.trainable[k].device, torch.float32) for k, v in fisher.items()}
            anchor = {k: v.to(self.trainable[k].device, self.trainable[k].dtype) for k, v in anchor.items()}
        self.fisher, self.anchor = fisher, anchor
        self.tasks_seen = int(state["tasks_seen"])
        self.fisher_log = [dict(row) for row in state["fisher_log"]]
        self.terms.load_state_dict(state["terms"], "ewc")

    def _stage_names(self) -> list[str]:
        return [s.name for s in self.stages(self.ctx.stream)] if self.ctx is not None else []
