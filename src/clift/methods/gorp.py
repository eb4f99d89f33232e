"""GORP: Continual Gradient Low-Rank Projection fine-tuning (Wang et al., ACL 2025, arXiv 2507.02503).

Per task, on top of incremental LoRA (a fresh adapter per task, earlier ones frozen and active):

* chosen full-rank weights W train through a GaLore projector (rank k, refresh T, scale α) with their
  own small lr, and their updates persist into later tasks;
* the gradients of the new LoRA ``A`` and of W's low-rank gradient are projected onto the orthogonal
  complement of a **shared space** S before Adam's moments: ``R ← R − S (Sᵀ R)``;
* after the task, each S grows from the SVD of Adam's first moment by the GPM energy rule (ε = 0.9)
  and accumulates across tasks.

Update rule for W (``proj_type=std``, m ≥ n): ``W ← W − η_W · bc · α · Adam((I − S Sᵀ) G V_k) V_kᵀ``.
The readings taken for the spec's ambiguities, the flags and the state layout are in docs/methods/gorp.md.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from peft import LoraConfig
from torch import nn

from clift.adapters import LoraFields, adapter_name, base_model_of, lora_config, lora_layers, save_adapter
from clift.errors import MethodStateError, TrainingError
from clift.full_rank import (
    FullRankWeights,
    GaLoreFields,
    SaveDelta,
    default_full_rank_patterns,
    lora_exclusions,
    match_modules,
    should_save_delta,
)
from clift.methods import legacy_state
from clift.methods.base import MethodConfig, Stage, check_state
from clift.methods.inc_lora import IncLoRA
from clift.optim import ProjectedAdamW, extend_basis, make_adamw

log = logging.getLogger("clift")

BASES_FILE = "gorp_bases.safetensors"
#: the two kinds of projected matrices; keys of bases, stats and state_dict entries
LORA_A, FULL_RANK = "lora_A", "full_rank"


@dataclass
class GORPConfig(GaLoreFields, LoraFields, MethodConfig):
    """GORP (fields of :class:`clift.adapters.LoraFields` and :class:`clift.full_rank.GaLoreFields`, plus):

    Attributes:
        full_rank_modules: full-rank targets as module patterns (a qualified module name or a dotted
            suffix, * wildcards). null = per architecture from the model config's ``model_type``: T5 →
            ``EncDecAttention.q``, ``EncDecAttention.v`` (decoder cross-attention); LLaMA →
            ``mlp.gate_proj``. ``[]`` trains no full-rank weights (LoRA + shared space only). These
            modules never get a LoRA.
        full_rank_lr: learning rate of the full-rank weights (``train.lr`` is the LoRA's). Default 1e-5
            (T5 setting; the llama preset sets 1e-6).
        energy_threshold: ε of the GPM energy rule that grows the bases. Default 0.9.
        first_task_rule: how an empty basis starts: ``strict`` keeps the leading directions whose
            cumulative energy stays below ε (GPM's and the released code's rule: none at all when the
            first direction alone reaches ε) or ``inclusive``, the smallest number that reaches ε (GPM's
            stated criterion, and the rule later tasks use). Default strict.
        lora_projection: axis of the LoRA-A shared-space projection: ``rank`` (``G_A − S Sᵀ G_A`` with S in
            the r-dim rank space, as the released code and the paper) or ``input`` (``G_A − G_A S Sᵀ``
            with S in the d_in-dim input space, GPM-style). Default rank.
        reload_bases: use the accumulated bases in later tasks. false reproduces the released code's bug:
            bases are computed from each task alone and never used, so no projection happens.
            Default true.
        reset_full_rank_each_task: restore the full-rank weights to their initial values before every
            task. true reproduces the released code's bug (only the last task's full-rank delta
            survives). Default false.
        save_full_rank_delta: write the cumulative ``W − W_init`` next to each task's adapter
            (``every_task``, default), only after the last task (``last_task``), or ``none``.
        full_rank_reg: λ of the paper's regulariser ``λ · Σ_W ‖ΔW ΔWᵀ − I‖_F`` over the full-rank
            weights, ΔW measured from the start of the task, added to the loss at every step. Default 0:
            the released code computes it but never applies it (gorp.md §1.7.3), so 0 is the released
            behaviour; the paper lists 0.05.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # gorp.md §1.5; the LoRA lr (1e-3 T5, 2e-4 LLaMA) is train.lr, set in configs/papers/gorp-*.yaml
        "t5-standard": {"galore_rank": 8, "update_proj_gap": 10, "galore_scale": 1.0, "full_rank_lr": 1e-5},
        "t5-long": {"galore_rank": 32, "update_proj_gap": 20, "galore_scale": 0.25, "full_rank_lr": 1e-5},
        "llama": {"galore_rank": 8, "update_proj_gap": 20, "galore_scale": 0.25, "full_rank_lr": 1e-6},
    }

    full_rank_modules: list[str] | None = field(
        default=None, metadata={"help": "full-rank target patterns (null: per-architecture default)"}
    )
    full_rank_lr: float = field(default=1e-5, metadata={"help": "learning rate of the full-rank weights"})
    energy_threshold: float = field(default=0.9, metadata={"help": "GPM energy threshold epsilon"})
    first_task_rule: Literal["strict", "inclusive"] = field(
        default="strict", metadata={"help": "empty-basis energy rule: strict (GPM code) | inclusive"}
    )
    lora_projection: Literal["rank", "input"] = field(
        default="rank", metadata={"help": "LoRA-A shared-space axis: rank (paper) | input"}
    )
    reload_bases: bool = field(default=True, metadata={"help": "use accumulated bases (false: released-code bug)"})
    reset_full_rank_each_task: bool = field(
        default=False, metadata={"help": "reset full-rank weights each task (true: released-code bug)"}
    )
    save_full_rank_delta: SaveDelta = field(
        default="every_task", metadata={"help": "write W - W_init: every_task | last_task | none"}
    )
    full_rank_reg: float = field(
        default=0.0, metadata={"help": "lambda of ||dW dW^T - I||_F on full-rank weights (paper 0.05; code: 0)"}
    )

    def problems(self) -> list[str]:
        p = self.lora_problems() + self.galore_problems()
        if not self.full_rank_lr > 0:
            p.append(f"full_rank_lr must be > 0, got {self.full_rank_lr}.")
        if not 0 < self.energy_threshold <= 1:
            p.append(
                f"energy_threshold must be in (0, 1], got {self.energy_threshold}; GORP uses 0.9 "
                "(1 keeps every direction of the first moment)."
            )
        if not self.full_rank_reg >= 0:
            p.append(f"full_rank_reg must be >= 0, got {self.full_rank_reg}; the paper uses 0.05, 0 turns it off.")
        elif self.full_rank_reg > 0 and self.full_rank_modules == []:
            p.append(
                f"full_rank_reg = {self.full_rank_reg} needs full-rank weights, but full_rank_modules is []; "
                "set full_rank_reg: 0 or name full-rank modules (null: the per-architecture default)."
            )
        return p


def orthogonality_gap(delta: torch.Tensor) -> torch.Tensor:
    """``‖Δ Δᵀ − I‖_F`` for one weight update, differentiable, through the smaller Gram matrix.

    For Δ of shape (m, n) with m > n, ``‖Δ Δᵀ − I_m‖²_F = ‖Δᵀ Δ‖²_F − 2‖Δ‖²_F + m`` (Δ Δᵀ and Δᵀ Δ share
    their nonzero eigenvalues), which costs an n × n Gram instead of m × m; it is then ≥ m − n > 0.

    Args:
        delta: (m, n) weight update ``W − W_task_start``; computed in float32 at least.

    Returns:
        A scalar tensor.
    """
    d = delta if delta.dtype in (torch.float32, torch.float64) else delta.float()
    m, n = d.shape
    if m <= n:
        gram = d @ d.T  # (m, m)
        sq = (gram - torch.eye(m, dtype=d.dtype, device=d.device)).pow(2).sum()
    else:
        gram = d.T @ d  # (n, n)
        sq = gram.pow(2).sum() - 2 * d.pow(2).sum() + m
    # the square root's gradient is infinite at 0, reached only by an exactly orthonormal-row Δ
    return sq.clamp_min(1e-12).sqrt()


class GORP(IncLoRA):
    """Incremental LoRA + full-rank GaLore weights + shared-space gradient projection (GPM bases).

    Optimizer groups per task: ``lora_B`` (plain AdamW), ``lora_A`` (shared-space projection), and
    ``full_rank`` (GaLore k/T/α, then shared-space projection, lr ``full_rank_lr``). After each task the
    basis of every projected matrix grows from Adam's first moment; the bases are the method's state.
    """

    config_cls = GORPConfig
    summary = "incremental LoRA + GaLore full-rank weights, gradients projected off a shared space (GORP)"

    def __init__(self, config: GORPConfig) -> None:
        super().__init__(config)
        self.full: FullRankWeights | None = None
        self.lora_extra: dict[str, Any] = {}
        #: ``{(kind, module): S}``: orthonormal bases, accumulated across tasks
        self.bases: dict[tuple[str, str], torch.Tensor] = {}
        #: ``{(kind, module): [columns after task 0, after task 1, ...]}``
        self.basis_history: dict[tuple[str, str], list[int]] = {}
        self.basis_rows: dict[tuple[str, str], int] = {}
        self.task_names: list[str] = []
        self.delta_norm_start: list[float | None] = []
        self.delta_norm_end: list[float | None] = []
        self._tracked: dict[tuple[str, str], nn.Parameter] = {}
        self._optimizer: ProjectedAdamW | None = None
        #: the full-rank weights at the start of the running task (only with ``full_rank_reg`` > 0)
        self._task_start: dict[str, torch.Tensor] = {}

    # ---- set-up ------------------------------------------------------------------------------
    def attach(self, model: nn.Module) -> nn.Module:
        cfg = self.config
        option = "method.full_rank_modules"
        patterns = (
            default_full_rank_patterns(model, option) if cfg.full_rank_modules is None else list(cfg.full_rank_modules)
        )
        modules = match_modules(model, patterns, option) if patterns else {}
        self.lora_extra = lora_exclusions(model, cfg, list(modules))
        keep_init = cfg.reset_full_rank_each_task or cfg.save_full_rank_delta != "none"
        self.full = FullRankWeights(modules, keep_init=keep_init)
        for p in model.parameters():
            p.requires_grad_(False)
        log.info(
            "gorp: %d full-rank matrices (%d parameters): %s",
            len(modules),
            self.full.numel,
            ", ".join(patterns) or "none",
        )
        return model

    # ---- per task ----------------------------------------------------------------------------
    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        assert self.full is not None, "attach() must run before before_task()"
        if self.config.reset_full_rank_each_task and self.adapters:
            self.full.reset()  # released-code behaviour: each task restarts from the base checkpoint
        model = super().before_task(model, stage)
        # PEFT freezes every non-adapter weight when it adds an adapter
        self.full.set_trainable()
        self.task_names.append(stage.name)
        self.delta_norm_start.append(self.full.delta_norm())
        if self.config.full_rank_reg > 0:
            self._task_start = {k: p.detach().clone() for k, p in self.full.params.items()}
        return model

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        """``λ · Σ_W ‖(W − W_start)(W − W_start)ᵀ − I‖_F`` over the full-rank weights (``full_rank_reg``)."""
        if not self._task_start:
            return None
        assert self.full is not None
        terms = [orthogonality_gap(p - self._task_start[k].to(p.device)) for k, p in self.full.params.items()]
        return self.config.full_rank_reg * torch.stack(terms).sum()

    def new_adapter_config(self, model: nn.Module) -> LoraConfig:
        # full-rank targets train as themselves, never also through a LoRA
        return lora_config(self.config, model, **self.lora_extra)

    def _current_lora(self, model: nn.Module) -> tuple[dict[str, nn.Parameter], dict[str, nn.Parameter]]:
        """The newest adapter's A and B weights by module name (through PEFT's LoRA layer interface)."""
        a: dict[str, nn.Parameter] = {}
        b: dict[str, nn.Parameter] = {}
        for module, layer in lora_layers(base_model_of(model)):
            if self.current in getattr(layer, "lora_A", {}):
                a[module] = layer.lora_A[self.current].weight  # (r, d_in)
                b[module] = layer.lora_B[self.current].weight  # (d_out, r)
        return a, b

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        assert self.full is not None
        a, b = self._current_lora(model)
        full = {k.removesuffix(".weight"): p for k, p in self.full.params.items()}
        self._tracked = {(LORA_A, n): p for n, p in a.items()} | {(FULL_RANK, n): p for n, p in full.items()}
        known = {id(p) for p in self._tracked.values()} | {id(p) for p in b.values()}
        # anything else left trainable (nothing, with PEFT's defaults) trains as plain AdamW with B
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in known]
        side = "left" if self.config.lora_projection == "rank" else "right"
        groups = [
            {"params": list(b.values()) + rest, "name": "lora_B"},
            {"params": list(a.values()), "name": LORA_A, "shared_side": side},
        ]
        if full:
            groups.append(
                {"params": list(full.values()), "name": FULL_RANK, **self.config.galore_group(self.config.full_rank_lr)}
            )
        return [g for g in groups if g["params"]]

    def make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        assert self.ctx is not None, "setup() must run before make_optimizer()"
        bases = {}
        if self.config.reload_bases:
            bases = {p: self.bases[key] for key, p in self._tracked.items() if key in self.bases}
        self._optimizer = make_adamw(groups, self.ctx.train, shared_bases=bases)
        return self._optimizer

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        assert self.full is not None
        opt = self._optimizer
        if opt is None:
            raise TrainingError(
                "gorp: after_task() found no optimizer from make_optimizer(); the bases are built from its "
                "first moments, so the training loop must create the optimizer through the method."
            )
        for key, p in self._tracked.items():
            moment = opt.first_moment(p)
            if moment is None:  # no step reached this matrix: nothing learned, nothing to protect
                size = self.bases[key].shape[1] if key in self.bases else 0
                self.basis_history.setdefault(key, []).append(size)
                continue
            side = opt.resolved_shared_side(p, opt.group_of(p))
            # with reload_bases=false every task starts from an empty basis, as the released code does
            old = self.bases.get(key) if self.config.reload_bases else None
            basis = extend_basis(old, moment, self.config.energy_threshold, side, self.config.first_task_rule)
            self.bases[key] = basis
            self.basis_rows[key] = basis.shape[0]
            self.basis_history.setdefault(key, []).append(basis.shape[1])
        self.delta_norm_end.append(self.full.delta_norm())
        summary = self._summary(len(self.task_names) - 1)
        log.info(
            "gorp after %s: basis columns %s",
            stage.name,
            "; ".join(
                f"{k} min/mean/max {v['min']}/{v['mean']:.1f}/{v['max']}" for k, v in summary.items() if k != "task"
            ),
        )
        self._optimizer = None  # the runner is done with it; do not keep its state alive
        self._task_start = {}  # the task is over; a checkpoint at the boundary needs no snapshot
        return model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        assert self.full is not None
        paths = [save_adapter(model, adapter_name(stage.task_index), folder)]
        meta = {"method": "gorp", "after_stage": str(stage.index), "task": stage.name}
        if len(self.full) and should_save_delta(
            self.config.save_full_rank_delta, stage.index, len(self.ctx.stream.tasks)
        ):
            paths.append(self.full.save_delta(folder, meta))
        if self.bases:
            from safetensors.torch import save_file

            path = folder / BASES_FILE
            bases = {
                f"basis/{kind}/{module}": s.detach().cpu().contiguous() for (kind, module), s in self.bases.items()
            }
            save_file(bases, str(path), metadata={**meta, "threshold": str(self.config.energy_threshold)})
            paths.append(path)
        return paths

    # ---- reporting and state -----------------------------------------------------------------
    def _summary(self, task: int) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task_names[task] if task < len(self.task_names) else task}
        for kind in (LORA_A, FULL_RANK):
            sizes = [h[task] for (k, _), h in self.basis_history.items() if k == kind and len(h) > task]
            if sizes:
                out[kind] = {
                    "min": min(sizes),
                    "mean": sum(sizes) / len(sizes),
                    "max": max(sizes),
                    "matrices": len(sizes),
                }
        return out

    def stats(self) -> dict[str, Any]:
        """Basis columns per matrix per task, a min/mean/max summary per task, and full-rank delta norms."""
        sizes: dict[str, dict[str, list[int]]] = {LORA_A: {}, FULL_RANK: {}}
        rows: dict[str, dict[str, int]] = {LORA_A: {}, FULL_RANK: {}}
        for (kind, module), history in self.basis_history.items():
            sizes[kind][module] = list(history)
            if (kind, module) in self.basis_rows:
                rows[kind][module] = self.basis_rows[(kind, module)]
        return {
            "basis_sizes": sizes,
            "basis_rows": rows,
            "basis_summary": [self._summary(i) for i in range(len(self.task_names))],
            "full_rank": {
                "matrices": len(self.full) if self.full else 0,
                "parameters": self.full.numel if self.full else 0,
                "delta_norm_start": self.delta_norm_start,
                "delta_norm_end": self.delta_norm_end,
            },
            "flags": {
                "reload_bases": self.config.reload_bases,
                "reset_full_rank_each_task": self.config.reset_full_rank_each_task,
                "first_task_rule": self.config.first_task_rule,
                "full_rank_reg": self.config.full_rank_reg,
            },
        }

    def state_dict(self) -> dict[str, Any]:
        """The bases and their per-task history (what a resumed run needs).

        ``{"bases": {kind: {module: S (rows, c), on CPU}}, "basis_sizes": {kind: {module: [columns after
        each task]}}, "delta_norm_start": [...], "delta_norm_end": [...], "task_start": {weight: W}}``, kind
        ``lora_A`` or ``full_rank``; norms are None where unknown. ``task_start`` holds, in the middle of a
        task with ``full_rank_reg`` > 0, the full-rank weights at the task's start (ΔW is measured from
        them); it is empty otherwise.
        """
        bases: dict[str, dict[str, torch.Tensor]] = {}
        for (kind, module), s in self.bases.items():
            bases.setdefault(kind, {})[module] = s.detach().cpu().contiguous()
        sizes: dict[str, dict[str, list[int]]] = {}
        for (kind, module), history in self.basis_history.items():
            sizes.setdefault(kind, {})[module] = list(history)
        return {
            "bases": bases,
            "basis_sizes": sizes,
            "delta_norm_start": list(self.delta_norm_start),
            "delta_norm_end": list(self.delta_norm_end),
            "task_start": {k: v.detach().cpu().contiguous() for k, v in self._task_start.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the flat format of earlier versions, and a file of bases alone,
        ``gorp_bases.safetensors``, load too).

        Raises:
            MethodStateError: for a key :meth:`state_dict` does not write, or a ``task_start`` weight that
                matches no full-rank weight.
        """
        if legacy_state.is_flat(state):
            state = legacy_state.gorp(state)
        norms = ("delta_norm_start", "delta_norm_end")
        check_state(
            "gorp", state, {"bases": dict}, {"basis_sizes": dict, "task_start": dict, **dict.fromkeys(norms, list)}
        )
        for key in ("bases", "basis_sizes"):
            check_state("gorp", state.get(key, {}), {}, {LORA_A: dict, FULL_RANK: dict}, where=key)
        self.bases = {(kind, m): s for kind, per in state["bases"].items() for m, s in per.items()}
        self.basis_rows = {k: v.shape[0] for k, v in self.bases.items()}
        if "basis_sizes" in state:
            sizes = state["basis_sizes"]
            self.basis_history = {(kind, m): [int(c) for c in h] for kind, per in sizes.items() for m, h in per.items()}
        for key in norms:
            if key in state:
                setattr(self, key, [None if v is None else float(v) for v in state[key]])
        task_start = state.get("task_start") or {}
        if task_start:
            params = self.full.params if self.full is not None else {}
            bad = [k for k, v in task_start.items() if k not in params or params[k].shape != v.shape]
            if bad:
                raise MethodStateError(
                    "gorp",
                    f"task_start.{bad[0]}",
                    "a full-rank weight of that name and shape (the weights at the task's start)",
                    "resume with the same method config (full_rank_modules), or rerun with --force.",
                )
            self._task_start = {k: v.to(params[k].device, params[k].dtype) for k, v in task_start.items()}
