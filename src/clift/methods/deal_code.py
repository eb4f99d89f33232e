"""DEAL as released in code: a Haar-gated lora_A plus a per-token MLP, B frozen after task 1.

Reproduces what the public DEAL scripts run (``/work/shared/specs/deal.md`` §2), implemented from that
description. Task 1 trains a plain LoRA. From task 2 on, every ``lora_A`` (weight ``A`` of shape
``(r, d)``) is replaced by :class:`HaarGatedA`::

    A' = IDWT(θ ⊙ LL(A), LH, HL, HH)            (one-level 2-D Haar, θ of shape (⌈r/2⌉, ⌈d/2⌉), init 1)
    lora_A(x) = MLP(A' x),  MLP(z) = W2 relu(W1 z + b1) + b2      (r → hidden → r, per token)

and the adapter output is ``W0 x + s · B · MLP(A' x)``. Raw ``A``, θ and the MLP train; ``B`` is frozen.
The MLP is not linear, so it cannot be merged into a LoRA: evaluation after a task uses that task's MLP
(as released), and the next task starts from ``(A', B)`` with a fresh θ = 1 and a fresh MLP. The
regulariser ``Σ_modules λ1 ‖θ‖_p1 + λ2 ‖MLP‖_p2`` is applied (``apply_regularizer=false`` reproduces the
released dead code, where it is never added).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from clift.adapters import LoraFields, add_lora, lora_config, lora_layers, save_adapter
from clift.errors import CliftError
from clift.methods.base import ContinualMethod, Kind, MethodConfig, MethodContext, Stage
from clift.methods.deal_parts import DEAL_PRESETS, method_generator, stats_from_state, stats_state
from clift.wavelets import haar_dwt2, haar_idwt2

#: the side file (next to the PEFT adapter) holding each task's θ and MLP
MODULES_FILE = "deal_code_modules.safetensors"


@dataclass
class DEALCodeConfig(LoraFields, MethodConfig):
    """The released DEAL code's behaviour, with its bugs behind flags.

    Attributes:
        r, alpha, dropout, target_modules: LoRA fields (:class:`clift.adapters.LoraFields`).
        mlp_hidden: hidden width of the per-token MLP; null = ``max(128, r // 2)`` as released.
        mlp_init: ``kaiming`` (released: Kaiming-uniform weights, zero biases, no residual, so every
            task start perturbs the model) or ``identity`` (residual MLP with a zero output layer).
            Default kaiming.
        lambda1: weight of the θ norm. Default 0.01.
        lambda2: weight of the MLP norm. Default 0.001.
        p_theta: order of the θ norm. Default 10.
        p_mlp: order of the MLP norm (over all MLP parameters of a module, concatenated). Default 2.
        norm_power: false = plain ``‖·‖_p`` (released code); true = ``‖·‖_p^p`` (paper Eq. 12).
        apply_regularizer: add the regulariser to the loss. false reproduces the released code, where a
            class-identity bug makes it dead. Default true.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = DEAL_PRESETS

    mlp_hidden: int | None = field(default=None, metadata={"help": "per-token MLP hidden width (null: max(128, r//2))"})
    mlp_init: Literal["kaiming", "identity"] = field(
        default="kaiming", metadata={"help": "kaiming (released, no residual) | identity (residual, zero out)"}
    )
    lambda1: float = field(default=0.01, metadata={"help": "weight of the theta norm"})
    lambda2: float = field(default=0.001, metadata={"help": "weight of the MLP norm"})
    p_theta: float = field(default=10.0, metadata={"help": "order of the theta norm"})
    p_mlp: float = field(default=2.0, metadata={"help": "order of the MLP norm"})
    norm_power: bool = field(default=False, metadata={"help": "false: ||.||_p (released); true: ||.||_p^p (paper)"})
    apply_regularizer: bool = field(
        default=True, metadata={"help": "add the regulariser (false: the released dead code)"}
    )

    def problems(self) -> list[str]:
        p = self.lora_problems()
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            p.append(f"mlp_hidden must be >= 1 or null (= max(128, r//2)), got mlp_hidden={self.mlp_hidden}.")
        for key in ("lambda1", "lambda2"):
            if getattr(self, key) < 0:
                p.append(f"{key} must be >= 0 (0 switches that term off), got {key}={getattr(self, key)}.")
        for key in ("p_theta", "p_mlp"):
            if getattr(self, key) < 1:
                p.append(f"{key} must be >= 1 (a norm order), got {key}={getattr(self, key)}.")
        return p


class HaarGatedA(nn.Module):
    """A ``lora_A`` replacement: Haar low-pass gate on the weight, then a per-token MLP on ``A' x``.

    Args:
        weight: the raw factor ``A`` of shape ``(r, d)`` (kept as the same ``Parameter``, trainable).
        hidden: MLP hidden width.
        mlp_init: ``kaiming`` (released) or ``identity`` (residual, zero output layer).
        generator: where the MLP's random weights are drawn from (never the global stream); None leaves
            them to be overwritten (a saved MLP is loaded into them).
    """

    def __init__(
        self, weight: nn.Parameter, hidden: int, mlp_init: str, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        r, d = weight.shape
        self.weight = weight
        self.theta = nn.Parameter(torch.ones((r + 1) // 2, (d + 1) // 2, device=weight.device, dtype=weight.dtype))
        # created empty (nn.Linear's own init would draw from the global stream), then initialised from ``generator``
        self.mlp_in = _empty_linear(r, hidden, weight)
        self.mlp_out = _empty_linear(hidden, r, weight)
        self.residual = mlp_init == "identity"
        with torch.no_grad():
            if self.residual:  # nn.Linear's default init for the input layer; a zero output layer
                bound = 1.0 / math.sqrt(r)
                self.mlp_in.weight.copy_(_uniform(self.mlp_in.weight.shape, bound, generator))
                self.mlp_in.bias.copy_(_uniform(self.mlp_in.bias.shape, bound, generator))
                nn.init.zeros_(self.mlp_out.weight)
                nn.init.zeros_(self.mlp_out.bias)
            else:  # the release: Kaiming-uniform (ReLU gain: bound sqrt(6 / fan_in)), zero biases
                for lin in (self.mlp_in, self.mlp_out):
                    lin.weight.copy_(_uniform(lin.weight.shape, math.sqrt(6.0 / lin.in_features), generator))
                    nn.init.zeros_(lin.bias)

    def filtered_weight(self) -> torch.Tensor:
        """``A' = IDWT(θ ⊙ LL, LH, HL, HH)``, shape ``(r, d)``; θ = 1 gives ``A`` back."""
        ll, bands = haar_dwt2(self.weight)
        return haar_idwt2(ll * self.theta, bands, self.weight.shape)

    def mlp_parameters(self) -> list[nn.Parameter]:
        return list(self.mlp_in.parameters()) + list(self.mlp_out.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x: ``(..., d)``. Returns: ``MLP(A' x)`` of shape ``(..., r)``."""
        z = F.linear(x, self.filtered_weight())
        y = self.mlp_out(F.relu(self.mlp_in(z)))
        return z + y if self.residual else y


def _empty_linear(fan_in: int, fan_out: int, like: torch.Tensor) -> nn.Linear:
    """An ``nn.Linear`` on ``like``'s device and dtype whose parameters are left uninitialised."""
    lin = nn.Linear(fan_in, fan_out, device="meta")
    return lin.to_empty(device=like.device).to(like.dtype)


def _uniform(shape: torch.Size, bound: float, generator: torch.Generator | None) -> torch.Tensor:
    """``U(-bound, bound)`` of ``shape`` drawn on the CPU from ``generator`` (zeros without one)."""
    if generator is None:
        return torch.zeros(shape)
    return torch.empty(shape).uniform_(-bound, bound, generator=generator)


def _norm(params: list[torch.Tensor], p: float, power: bool) -> torch.Tensor:
    """``‖concat(params)‖_p`` (or its p-th power) without concatenating."""
    s = sum(torch.linalg.vector_norm(t, ord=p) ** p for t in params)
    return s if power else s ** (1.0 / p)


class DEALCode(ContinualMethod):
    """One PEFT LoRA (``default``); from task 2 on each ``lora_A`` is a :class:`HaarGatedA` and ``lora_B``
    is frozen. What carries to the next task is the filtered ``A'`` and ``B``."""

    config_cls = DEALCodeConfig
    summary = "DEAL (released code): Haar-gated lora_A + per-token MLP, B frozen after task 1"
    adapter = "default"
    #: the per-token MLP acts on activations: no LoRA or merged weight holds it (``clift export`` refuses)
    mergeable = False

    def __init__(self, config: DEALCodeConfig) -> None:
        super().__init__(config)
        self.config: DEALCodeConfig = config
        self.wrapped: dict[str, HaarGatedA] = {}  # PEFT layer name -> its lora_A wrapper
        self._pen_sum: torch.Tensor | float = 0.0
        self._pen_last: torch.Tensor | float = 0.0
        self._steps = 0
        self.history: list[dict[str, Any]] = []
        self.generator = method_generator(0, config.method_name())

    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.generator = method_generator(ctx.seed, self.config.method_name())

    def attach(self, model: nn.Module) -> nn.Module:
        return add_lora(model, lora_config(self.config, model), self.adapter)

    def merge_refusal(self, run_dir: Path) -> str:
        """Why ``clift export --merged`` cannot hold this method's final model, and what to use instead."""
        return (
            "deal_code cannot be merged: from task 2 on its adapter computes s·B·MLP(A'x), with a ReLU MLP "
            "between lora_A and lora_B acting on every token's activations. A nonlinear map of activations is "
            "not a weight matrix, so no merged weight (and no plain LoRA) reproduces the model; merging A'·B "
            "alone would silently drop the MLP. Its per-task adapters are in "
            f"{str(run_dir / 'adapters')!r}: load the last task's folder with "
            "PeftModel.from_pretrained(base, folder), then "
            "clift.methods.deal_code.restore_task_modules(model, folder) re-attaches the MLP. For a model that "
            "merges, run `deal` (its modules materialise into plain LoRA weights after every task)."
        )

    @property
    def hidden(self) -> int:
        return self.config.mlp_hidden or max(128, self.config.r // 2)

    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        if stage.index == 0:  # task 1: plain LoRA, A and B trained
            return model
        self.wrapped = {}
        for name, layer in lora_layers(model):
            if self.adapter not in layer.lora_A:
                continue
            current = layer.lora_A[self.adapter]
            weight = current.weight
            if isinstance(current, HaarGatedA):
                # carry the filtered A' of the finished task; its θ and MLP are dropped (as released)
                with torch.no_grad():
                    weight.copy_(current.filtered_weight())
            wrapper = HaarGatedA(weight, self.hidden, self.config.mlp_init, self.generator)
            wrapper.train(current.training)
            layer.lora_A[self.adapter] = wrapper
            self.wrapped[name] = wrapper
            weight.requires_grad_(True)  # raw A trains through the DWT (as released)
            layer.lora_B[self.adapter].weight.requires_grad_(False)  # B frozen after task 1
        self._pen_sum, self._pen_last, self._steps = 0.0, 0.0, 0
        return model

    def penalty(self) -> torch.Tensor | None:
        """``Σ_modules λ1 ‖θ‖_p1 + λ2 ‖MLP‖_p2`` (p-th powers with ``norm_power``); None before task 2."""
        if not self.wrapped:
            return None
        c = self.config
        total = sum(
            c.lambda1 * _norm([m.theta], c.p_theta, c.norm_power)
            + c.lambda2 * _norm(m.mlp_parameters(), c.p_mlp, c.norm_power)
            for m in self.wrapped.values()
        )
        return total  # type: ignore[return-value]

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        if not self.config.apply_regularizer:
            return None  # the released behaviour: the regulariser is computed nowhere
        pen = self.penalty()
        if pen is None:
            return None
        self._pen_sum = self._pen_sum + pen.detach()
        self._pen_last = pen.detach()
        self._steps += 1
        return pen

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        # the wrappers stay: evaluation after this task uses this task's MLP (as released)
        if self.wrapped:
            with torch.no_grad():
                dev = torch.cat([(m.theta - 1).abs().flatten() for m in self.wrapped.values()])
                # θ is the only module that moves a factor (A); the MLP maps activations, not weights
                moved = sum(float((m.filtered_weight() - m.weight).pow(2).sum()) for m in self.wrapped.values())
                norm = sum(float(m.weight.pow(2).sum()) for m in self.wrapped.values())
            self.history.append(
                {
                    "stage": stage.name,
                    "stage_index": stage.index,
                    "wrapped_modules": len(self.wrapped),
                    "regularizer_applied": self.config.apply_regularizer,
                    "penalty_mean": float(self._pen_sum) / max(1, self._steps),
                    "penalty_last": float(self._pen_last),
                    "theta_minus_1_mean_abs": float(dev.mean()),
                    "theta_minus_1_max_abs": float(dev.max()),
                    "factor_change": {"A": {"norm": math.sqrt(norm), "theta": math.sqrt(moved)}},
                }
            )
        return model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        """Save ``(A', B)`` as a plain PEFT LoRA, and this task's θ and MLP in :data:`MODULES_FILE`.

        ``PeftModel.from_pretrained`` on the folder gives what the next task starts from; the in-run
        evaluation model additionally applies the MLP (see :func:`restore_task_modules`).
        """
        if not self.wrapped:
            return [save_adapter(model, self.adapter, folder)]
        layers = dict(lora_layers(model))
        plain = {}
        for name, wrapper in self.wrapped.items():
            r, d = wrapper.weight.shape
            lin = nn.Linear(d, r, bias=False, device=wrapper.weight.device, dtype=wrapper.weight.dtype)
            with torch.no_grad():
                lin.weight.copy_(wrapper.filtered_weight())
            plain[name] = lin
        try:
            for name, lin in plain.items():
                layers[name].lora_A[self.adapter] = lin
            out = save_adapter(model, self.adapter, folder)
        finally:
            for name, wrapper in self.wrapped.items():
                layers[name].lora_A[self.adapter] = wrapper
        tensors = {}
        for name, m in self.wrapped.items():
            tensors[f"{name}.theta"] = m.theta.detach().cpu().contiguous()
            for key, t in (("mlp_in", m.mlp_in), ("mlp_out", m.mlp_out)):
                tensors[f"{name}.{key}.weight"] = t.weight.detach().cpu().contiguous()
                tensors[f"{name}.{key}.bias"] = t.bias.detach().cpu().contiguous()
        meta = {"format": "clift.deal_code/1", "mlp_init": self.config.mlp_init, "hidden": str(self.hidden)}
        side = folder / MODULES_FILE
        save_file(tensors, str(side), metadata={"clift": json.dumps(meta)})
        return [out, side]

    def stats(self) -> dict[str, Any]:
        return {"stages": list(self.history)}

    def state_dict(self) -> dict[str, Any]:
        """Per-stage statistics, running penalty sums and the module generator's state (θ and the MLPs are
        model tensors)."""
        pen = {"sum": self._pen_sum, "last": self._pen_last, "steps": self._steps}
        return {**stats_state(self.history, pen=pen), "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.ctx is not None  # setup() ran: the stage names come from the stream
        optional: dict[str, Kind] = {"pen": dict, "generator": torch.Tensor}
        self.history, running = stats_from_state(
            self.config.method_name(), state, self.stages(self.ctx.stream), optional
        )
        pen = running.get("pen")
        if pen:
            self._pen_sum, self._pen_last, self._steps = pen["sum"], pen["last"], int(pen["steps"])
        if "generator" in state:  # older checkpoints: the replayed before_task calls already drew the same
            self.generator.set_state(state["generator"])


def restore_task_modules(model: nn.Module, folder: Path | str, adapter: str = "default") -> nn.Module:
    """Re-attach a saved task's MLPs to a ``PeftModel`` loaded from ``folder``, giving the in-run model.

    The adapter already holds the filtered ``A'``, so each ``lora_A`` becomes a :class:`HaarGatedA` over
    ``A'`` with θ = 1 (the gate is then the identity) and the saved MLP.

    Raises:
        CliftError: when the folder has no :data:`MODULES_FILE` or a layer is missing from it.
    """
    path = Path(folder) / MODULES_FILE
    if not path.is_file():
        raise CliftError(
            f"{str(path)!r} does not exist; only deal_code tasks after the first save their MLP. Load the "
            "folder with PeftModel.from_pretrained alone for the plain LoRA."
        )
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = json.loads((f.metadata() or {}).get("clift", "{}"))
    tensors = load_file(str(path))
    for name, layer in lora_layers(model):
        if adapter not in layer.lora_A:
            continue
        if f"{name}.mlp_in.weight" not in tensors:
            raise CliftError(f"{str(path)!r} has no MLP for layer {name!r}; was it saved from this model?")
        lin = layer.lora_A[adapter]
        wrapper = HaarGatedA(lin.weight, int(meta.get("hidden", 128)), meta.get("mlp_init", "kaiming"))
        with torch.no_grad():
            for key in ("mlp_in", "mlp_out"):
                getattr(wrapper, key).weight.copy_(tensors[f"{name}.{key}.weight"])
                getattr(wrapper, key).bias.copy_(tensors[f"{name}.{key}.bias"])
        wrapper.train(lin.training)
        layer.lora_A[adapter] = wrapper
    return model
