"""Frozen earlier LoRA adapters of a layer as one concatenated frozen LoRA, sharing the new adapter's dropout.

Incremental LoRA (``inc_lora``, ``olora``, ``gorp``) keeps every earlier task's adapter frozen and active,
so task t computes, per layer (gorp.md §1.1):

    h = W0 x + s · (B_old A_old x̃ + B_new A_new x̃),   x̃ = dropout(x)

with ``A_old`` the earlier A's stacked by rows (R × d_in, R = Σ r_i) and ``B_old`` the earlier B's side by
side (d_out × R). PEFT, given every adapter as active, draws one dropout mask **per adapter** and runs
one thin matmul pair per adapter, so the cost grows with the number of tasks and the masks differ from
the spec's single x̃. :class:`FusedFrozenLoRA` instead leaves only the new adapter active in PEFT, keeps
``A_old`` and ``s_i``-scaled ``B_old`` as constant tensors per layer, and adds ``(x̃ A_oldᵀ) B_oldᵀ`` to
the layer's output, where x̃ is the very tensor the new adapter's dropout produced in the same forward.

The adapters themselves are untouched: each task's adapter is still a PEFT adapter saved on its own,
and PEFT's model-level active adapter list still names all of them. The methods install the fusion for
training only (``before_task``) and remove it in ``after_task``, so the model evaluated and saved after a
task is the plain PEFT model a replay rebuilds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.hooks import RemovableHandle

from clift.adapters import lora_layers

FrozenAdapters = Literal["fused", "separate"]


@dataclass
class FrozenAdapterFields:
    """How an incremental-LoRA method computes the frozen earlier adapters.

    Attributes:
        frozen_adapters: ``fused`` (default): per layer, one concatenated frozen LoRA of rank Σ r_i that
            reads the new adapter's dropped-out input (one dropout mask per layer, as gorp.md §1.1, and
            cost flat in the number of tasks). ``separate``: PEFT's own loop, one dropout mask and one
            matmul pair per adapter (clift before this option; runs stored without the field read as
            ``separate``). With dropout off (evaluation) the two agree to float rounding.
    """

    frozen_adapters: FrozenAdapters = field(
        default="fused", metadata={"help": "frozen earlier adapters: fused (one LoRA, shared dropout) | separate"}
    )


class _FusedLayer:
    """The fused frozen adapters of one PEFT LoRA layer (built on first use, after checkpoints load)."""

    def __init__(self, layer: nn.Module, tuner: nn.Module, frozen: list[str], current: str, live: bool) -> None:
        self.layer = layer
        self.live = live  # factors that change during the task (DEAL's retention modules): rebuilt each call
        self.tuner = tuner  # the LoraModel: its active adapter list is what the user asked for
        self.frozen = [name for name in frozen if name in layer.lora_A]
        self.current = current
        self.built_for: list[str] = []
        self.a: torch.Tensor | None = None  # (R, d_in)
        self.b: torch.Tensor | None = None  # (d_out, R), each block times its adapter's scaling
        self.x_dropped: torch.Tensor | None = None

    def _wanted(self) -> list[str]:
        # frozen adapters the model should apply that PEFT's loop in this layer does not: all of them as
        # installed; none after a user's set_adapter("task2") (model level) or set_adapter(all) (PEFT runs them)
        model_active = set(self.tuner.active_adapters)
        layer_active = set(self.layer.active_adapters)
        return [n for n in self.frozen if n in model_active and n not in layer_active]

    def _build(self, names: list[str], device: torch.device) -> None:
        with torch.no_grad():
            self.a = torch.cat([self.layer.lora_A[n].weight.detach() for n in names], 0).to(device)
            self.b = torch.cat([self.layer.lora_B[n].weight.detach() * self.layer.scaling[n] for n in names], 1)
            self.b = self.b.to(device).contiguous()
        self.built_for = names

    def keep_input(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        self.x_dropped = output  # x̃: the new adapter's dropout output, (..., d_in)

    def add_frozen(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        x, self.x_dropped = self.x_dropped, None
        if x is None:  # adapters disabled or merged: PEFT ran no adapter, so neither do the frozen ones
            return output
        names = self._wanted()
        if not names:
            return output
        if self.live:
            # the frozen factors are re-parametrised (their values depend on trainable modules): read them
            # now, with their graph, so the loss reaches the modules through the fused path
            a = torch.cat([self.layer.lora_A[n].weight for n in names], 0)  # (R, d_in)
            b = torch.cat([self.layer.lora_B[n].weight * self.layer.scaling[n] for n in names], 1)  # (d_out, R)
            return output + F.linear(F.linear(x.to(a.dtype), a), b).to(output.dtype)
        if names != self.built_for or self.a is None or self.a.device != x.device:
            self._build(names, x.device)  # first use of the task: after a checkpoint's values are loaded
        assert self.a is not None and self.b is not None
        return output + F.linear(F.linear(x.to(self.a.dtype), self.a), self.b).to(output.dtype)


class FusedFrozenLoRA:
    """Installs and removes the fused frozen adapters of every LoRA layer of a model."""

    def __init__(self) -> None:
        self._handles: list[RemovableHandle] = []
        self.layers: list[_FusedLayer] = []

    def install(self, model: nn.Module, frozen: list[str], current: str, live: bool = False) -> None:
        """Compute ``frozen`` adapters fused, reading adapter ``current``'s dropout output.

        Every adapter must already be active in PEFT (``LoraModel.set_adapter``); layers that hold
        ``current`` and a frozen adapter keep only ``current`` active in PEFT's loop. Call again for
        every new task (the previous installation is removed first). Install before parametrising any
        frozen factor: PEFT's ``set_adapter`` toggles ``requires_grad`` of whole adapter modules.

        Args:
            model: the ``PeftModel`` (or its LoRA model).
            frozen: the earlier adapters' names, in order.
            current: the trainable adapter's name.
            live: read the frozen factors' ``weight`` in every forward (with autograd) instead of caching
                them once per task; for factors re-parametrised by trainable modules (DEAL's retention
                structure). The concatenation then costs two small copies per layer and call.
        """
        self.remove()
        if not frozen:
            return
        tuner = getattr(model, "base_model", model)
        for _, layer in lora_layers(model):
            if current not in getattr(layer, "lora_A", {}):
                continue  # a layer without the new adapter keeps PEFT's own loop
            fused = _FusedLayer(layer, tuner, frozen, current, live)
            if not fused.frozen:
                continue
            # only the new adapter stays in PEFT's loop (and trainable; the frozen ones stay frozen)
            layer.set_adapter([current])
            self._handles.append(layer.lora_dropout[current].register_forward_hook(fused.keep_input))
            self._handles.append(layer.register_forward_hook(fused.add_frozen))
            self.layers.append(fused)

    def remove(self) -> None:
        """Remove the hooks and give the frozen adapters back to PEFT's loop (still frozen)."""
        for handle in self._handles:
            handle.remove()
        for fused in self.layers:
            fused.layer.set_adapter([*fused.frozen, fused.current])
            for name in fused.frozen:
                for module in (fused.layer.lora_A[name], fused.layer.lora_B[name]):
                    module.requires_grad_(False)
        self._handles, self.layers = [], []
