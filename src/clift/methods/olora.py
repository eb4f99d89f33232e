"""O-LoRA: a fresh LoRA per task, kept orthogonal to the earlier tasks' LoRA subspaces by a penalty.

Wang et al., "Orthogonal Subspace Learning for Language Model Continual Learning", EMNLP Findings 2023,
arXiv:2310.14152. Training task t minimises

    L = L_task + λ1 Σ_{i<t} ‖A_t A_iᵀ‖²_F + λ2 (‖A_t‖²_F + ‖B_t‖²_F)

over the new adapter (A_t, B_t) only; the earlier adapters stay frozen and active, as in
:class:`clift.methods.inc_lora.IncLoRA`, so inference needs no task id.

The magnitudes of the task loss and each penalty are reported per stage (``stats()``, via
:class:`clift.methods.loss_terms.LossTerms`): users report the orthogonality loss reaching thousands
while the LM loss is single-digit (O-LoRA issue #33).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from clift.adapters import adapter_parameters, lora_layers
from clift.methods import legacy_state
from clift.methods.base import Stage, check_state
from clift.methods.inc_lora import IncLoRA, IncLoRAConfig
from clift.methods.loss_terms import LossTerms, task_loss_of

OrthNorm = Literal["fro2", "l1"]
L2Norm = Literal["fro2", "fro"]


# --------------------------------------------------------------------------------------------------
# Penalties (pure functions)
# --------------------------------------------------------------------------------------------------


def orthogonality_penalty(a_new: torch.Tensor, a_old: torch.Tensor, norm: OrthNorm = "fro2") -> torch.Tensor:
    """Overlap between the new task's LoRA A and the earlier tasks' A matrices of one layer.

    Args:
        a_new: the new adapter's A, shape (r, d_in) (PEFT's ``lora_A.weight``).
        a_old: the earlier adapters' A stacked along rows, shape (R, d_in), R = Σ_i r_i. Stacking makes
            one product equal the sum over old tasks: ‖A_new [A_1; A_2]ᵀ‖² = Σ_i ‖A_new A_iᵀ‖².
        norm: ``fro2`` — squared Frobenius norm ‖A_new A_oldᵀ‖²_F (the paper's Eq. and the issue's
            default); ``l1`` — Σ |A_new A_oldᵀ| entrywise (what the released O-LoRA code computes).

    Returns:
        A scalar tensor: 0 exactly when every row of ``a_new`` is orthogonal to every row of ``a_old``,
        positive otherwise. Gradient w.r.t. ``a_new``: 2 (A_new A_oldᵀ) A_old for ``fro2``,
        sign(A_new A_oldᵀ) A_old for ``l1``.

    Raises:
        ValueError: for an unknown ``norm`` or mismatched input widths.
    """
    if a_new.shape[-1] != a_old.shape[-1]:
        raise ValueError(
            f"a_new has width {a_new.shape[-1]} but a_old has width {a_old.shape[-1]}; both must be "
            "LoRA A matrices of the same layer, shaped (rank, in_features)."
        )
    overlap = a_new @ a_old.T  # (r, R)
    if norm == "fro2":
        return overlap.pow(2).sum()
    if norm == "l1":
        return overlap.abs().sum()
    raise ValueError(f"unknown orthogonality norm {norm!r}; allowed: 'fro2', 'l1'.")


def l2_penalty(params: list[torch.Tensor], norm: L2Norm = "fro2") -> torch.Tensor:
    """Size of the new adapter: Σ_P ‖P‖²_F (``fro2``) or Σ_P ‖P‖_F (``fro``, the released code's form).

    Args:
        params: the new adapter's matrices (A of shape (r, d_in), B of shape (d_out, r), per layer).
        norm: ``fro2`` or ``fro``.

    Raises:
        ValueError: for an unknown ``norm`` or an empty parameter list.
    """
    if not params:
        raise ValueError("l2_penalty got no parameters; pass the new adapter's LoRA matrices.")
    if norm == "fro2":
        return torch.stack([p.pow(2).sum() for p in params]).sum()
    if norm == "fro":
        return torch.stack([p.norm() for p in params]).sum()
    raise ValueError(f"unknown L2 norm {norm!r}; allowed: 'fro2', 'fro'.")


# --------------------------------------------------------------------------------------------------
# The method
# --------------------------------------------------------------------------------------------------


@dataclass
class OLoRAConfig(IncLoRAConfig):
    """O-LoRA (LoRA fields: see :class:`clift.adapters.LoraFields`; r 8, alpha 32, dropout 0.1 as O-LoRA).

    Attributes:
        lambda1: λ1, weight of the orthogonality penalty between the new A and every earlier A.
            Default 0.5 (O-LoRA's scripts for the standard benchmark; TRACE's O-LoRA default too).
        lambda2: λ2, weight of the L2 penalty on the new adapter's A and B. Default 0 (O-LoRA's scripts).
        orth_norm: ``fro2`` = Σ_old ‖A_new A_oldᵀ‖²_F (the paper, default) or ``l1`` = Σ_old
            Σ|A_new A_oldᵀ| (the released code; larger, and its gradient does not shrink near 0).
        l2_norm: ``fro2`` = Σ ‖P‖²_F (default) or ``fro`` = Σ ‖P‖_F (the released code).

    Preset ``o-lora-code`` switches both norms to the released code's forms.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "o-lora-code": {"orth_norm": "l1", "l2_norm": "fro", "lambda1": 0.5, "lambda2": 0.0},
    }

    lambda1: float = field(default=0.5, metadata={"help": "λ1: orthogonality penalty weight"})
    lambda2: float = field(default=0.0, metadata={"help": "λ2: L2 penalty weight on the new adapter"})
    orth_norm: OrthNorm = field(
        default="fro2", metadata={"help": "fro2 (paper: squared Frobenius) | l1 (released code)"}
    )
    l2_norm: L2Norm = field(default="fro2", metadata={"help": "fro2 (squared) | fro (released code)"})

    def problems(self) -> list[str]:
        p = self.lora_problems()
        for key in ("lambda1", "lambda2"):
            value = getattr(self, key)
            if value < 0:
                p.append(f"method.{key} must be >= 0, got {value}; use 0 to switch the term off.")
        return p


class OLoRA(IncLoRA):
    """IncLoRA plus λ1 Σ_{i<t} ‖A_t A_iᵀ‖² (+ λ2 ‖(A_t, B_t)‖²) through the ``loss`` hook.

    Only the A matrices are constrained, as in the paper and its code: A spans the input subspace a
    LoRA reads from, so orthogonal A's make the tasks' updates act on orthogonal input directions.
    The earlier A's are constants (frozen, detached), so the gradient flows to A_t alone.

    ``stats()["loss_terms"]`` reports, per stage, the mean task loss, the raw orthogonality and L2
    terms, their weighted sum (``penalty``) and ``penalty_to_task``.
    """

    config_cls = OLoRAConfig
    summary = "O-LoRA: inc_lora + orthogonality penalty between the new and the earlier LoRA A's"

    def __init__(self, config: OLoRAConfig) -> None:
        super().__init__(config)
        self.config: OLoRAConfig = config
        self.terms = LossTerms()
        # per LoRA layer: (A_new (r, d_in), the earlier adapters' A parameters); stacked lazily, see below
        self._layers: list[tuple[nn.Parameter, list[nn.Parameter]]] = []
        self._pairs: list[tuple[nn.Parameter, torch.Tensor | None]] | None = None
        self._new_params: list[nn.Parameter] = []

    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        model = super().before_task(model, stage)
        new, old = self.current, self.adapters[:-1]
        self._layers = []
        for _, layer in lora_layers(model):
            a = getattr(layer, "lora_A", None)
            if a is not None and new in a:
                self._layers.append((a[new].weight, [a[o].weight for o in old if o in a]))
        # stacked on first use, not here: on resume the checkpoint's values are loaded after before_task
        self._pairs = None
        self._new_params = list(adapter_parameters(model, new).values())
        self.terms.start(stage.name)
        return model

    def _stacked(self) -> list[tuple[nn.Parameter, torch.Tensor | None]]:
        """Per layer, the new A and the earlier A's stacked (R, d_in), detached; built once per task
        (the earlier adapters are frozen, so the stack stays valid for the whole task)."""
        if self._pairs is None:
            self._pairs = [
                (a_new, torch.cat([a.detach() for a in olds], 0).clone() if olds else None)
                for a_new, olds in self._layers
            ]
        return self._pairs

    def penalty_terms(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The raw (unweighted) orthogonality and L2 terms for the current adapter.

        Returns:
            ``(orth, l2)`` scalar tensors; ``orth`` is ``None`` while there is no earlier adapter.
        """
        norm = self.config.orth_norm
        orth_parts = [
            orthogonality_penalty(a_new, a_old.to(a_new.device, a_new.dtype), norm)
            for a_new, a_old in self._stacked()
            if a_old is not None
        ]
        orth = torch.stack(orth_parts).sum() if orth_parts else None
        l2 = l2_penalty(self._new_params, self.config.l2_norm) if self._new_params else None
        return orth, l2

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        cfg = self.config
        use_orth = cfg.lambda1 > 0
        use_l2 = cfg.lambda2 > 0
        # terms with weight 0 are still measured (without a graph) so the report shows their size
        with torch.set_grad_enabled(torch.is_grad_enabled() and (use_orth or use_l2)):
            orth, l2 = self.penalty_terms()
        extra: torch.Tensor | None = None
        if use_orth and orth is not None:
            extra = cfg.lambda1 * orth
        if use_l2 and l2 is not None:
            extra = cfg.lambda2 * l2 if extra is None else extra + cfg.lambda2 * l2
        self.terms.add(
            task_loss=task_loss_of(outputs),
            orth=orth if orth is not None else 0.0,
            l2=l2,
            weighted_orth=cfg.lambda1 * orth if orth is not None else 0.0,
            weighted_l2=cfg.lambda2 * l2 if l2 is not None else None,
            penalty=extra if extra is not None else 0.0,
        )
        return extra

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.finish()
        self._layers, self._pairs, self._new_params = [], None, []
        return model

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        self.terms.discard()
        self._layers, self._pairs, self._new_params = [], None, []
        return model

    def stats(self) -> dict[str, Any]:
        cfg = self.config
        return {
            "lambda1": cfg.lambda1,
            "lambda2": cfg.lambda2,
            "orth_norm": cfg.orth_norm,
            "l2_norm": cfg.l2_norm,
            "loss_terms": self.terms.summary(),
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"terms": LossTerms state}``: only the loss-term sums; the adapters themselves are model tensors."""
        return {"terms": self.terms.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the flat format of earlier versions loads too).

        Raises:
            MethodStateError: for missing or unexpected keys.
        """
        if legacy_state.is_flat(state):
            names = [s.name for s in self.stages(self.ctx.stream)] if self.ctx is not None else []
            state = legacy_state.olora(state, names)
        check_state("olora", state, {"terms": dict})
        self.terms.load_state_dict(state["terms"], "olora")
