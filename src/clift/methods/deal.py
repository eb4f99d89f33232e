"""DEAL (paper method): heat-kernel spectral retention + controlled-update MLP on the LoRA factors.

Han et al., "DEAL: Data Efficient Adaptation in LLMs via Continuous Low-Rank Fine-Tuning", NeurIPS 2025
(arXiv 2509.18942), §2–3, made concrete as in ``docs/methods/deal.md``. Task 1 trains a plain LoRA. From
task 2 on, each factor ``Y`` of the adapter (``lora_A`` and ``lora_B``, or ``lora_A`` only) is
re-parametrised as::

    Y' = MLP(Retention(Y))          Retention(Y) = Y + Y Q diag(h(σ̂)) Qᵀ,   MLP(M) = M + W2 gelu(W1 M + b1) + b2

with ``Y = Σ σ_k p_k q_kᵀ`` (rank dimension last, ``Q`` the right singular vectors), ``σ̂ = σ / σ_max`` and
``h(σ̂) = Σ_j w_j exp(-(σ̂ - c_j)² / (2 s_j²))`` a bank of heat kernels with learnable weights ``w`` and
centres ``c`` and fixed widths ``s``. ``w = 0`` and ``W2 = b2 = 0`` at the start of every task, so
``Y' == Y`` exactly. The modules act on the factor matrices (parameter space) through
``torch.nn.utils.parametrize``; after each task ``Y'`` is materialised into the plain PEFT weight, so
inference is plain LoRA and the saved adapter is a plain PEFT LoRA. Loss = task loss
``+ λ1 ‖θ1‖_a^a + λ2 ‖θ2‖_b^b`` over the kernel parameters θ1 = (w, c - c0) and the MLP parameters θ2,
plus ``μ ‖B'A' − B_prev A_prev‖²_F`` (``anchor``, computed from r×r Gram matrices).

``structure: retention`` (an option; the default ``paper`` is the reading above): from task 2 on the
previous factors are frozen, the modules act on them (θ1/θ2 are the only path by which the old knowledge's
delta can change), and a fresh trainable LoRA per task learns the new task, as in ``inc_lora``. After each
task everything is plain PEFT LoRA weights again (refined old factors plus the new adapter).
"""

from __future__ import annotations

import functools
import math
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from clift.adapters import (
    LoraFields,
    adapter_name,
    adapter_parameters,
    add_lora,
    lora_config,
    lora_layers,
    save_adapter,
)
from clift.fused_lora import FrozenAdapterFields, FusedFrozenLoRA
from clift.methods.base import ContinualMethod, Kind, MethodConfig, MethodContext, Stage
from clift.methods.deal_parts import DEAL_PRESETS, isolated_rng, method_generator, stats_from_state, stats_state


@dataclass
class DEALConfig(FrozenAdapterFields, LoraFields, MethodConfig):
    """DEAL as in the paper, made concrete (see ``docs/methods/deal.md`` for the reason of each default).

    Attributes:
        r, alpha, dropout, target_modules: LoRA fields (:class:`clift.adapters.LoraFields`).
        factors: which factors get the retention + update modules from task 2 on: ``both`` (A and B, the
            paper's best ablation) or ``a`` (A only). Default both.
        train_factors: also train the raw factors under the modules (the modules then filter the
            *current* factors, Algorithm 1); false = only θ1/θ2 train (tiny capacity). Default true.
        num_centres: heat kernels per width, centres initialised evenly on [0, 1]. Default 4.
        widths: the fixed width series ``s_j`` (std of each Gaussian, in units of σ/σ_max); the bank has
            ``len(widths) * num_centres`` kernels. Default [0.1, 0.3, 1.0].
        mlp_hidden: hidden width of the residual update MLP; null = r. Default null.
        lambda1: weight of ``‖θ1‖_a^a`` (retention kernels); null = the structure's default
            (:attr:`STRUCTURE_DEFAULTS`: paper 0.01). Default null.
        lambda2: weight of ``‖θ2‖_b^b`` (update MLP); null = the structure's default (paper 0.001).
            Default null.
        a: order of the retention penalty; must be >= b. Default 10.
        b: order of the update penalty; must be >= 1. Default 2.
        module_lr: learning rate of θ1/θ2; null = ``train.lr``. Default null.
        structure: ``paper`` (the modules re-parametrise the one LoRA, whose factors keep training) or
            ``retention`` (from task 2 on the previous factors are frozen and only θ1/θ2 change them; a
            fresh LoRA per task learns the new task). Default paper.
        anchor: ``μ`` of ``μ ‖B'A' − B_prev A_prev‖²_F``, the change of the previous tasks' LoRA product
            over the task (Gram form, never a d×d product); 0 switches it off; null = the structure's
            default (paper 0, retention 1). Default null.
        frozen_adapters: under ``structure: retention`` only: ``fused`` (default) computes the earlier
            adapters as one concatenated LoRA per layer that reads the new adapter's dropped-out input
            (their re-parametrised factors read afresh in every forward, so θ1/θ2 get their gradient
            through it; cost flat in the number of tasks), ``separate`` uses PEFT's loop (one dropout
            mask and one matmul pair per earlier adapter). See :class:`clift.fused_lora.FrozenAdapterFields`.

    The structure's defaults of ``lambda1``, ``lambda2`` and ``anchor`` (:attr:`STRUCTURE_DEFAULTS`) are the
    paper's values under ``paper``; under ``retention`` they were chosen on the dev split
    (``configs/suite/deal-dev.yaml``, docs/methods/deal.md). A value given explicitly always wins, and the
    run's ``config.yaml`` records the resolved numbers.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = DEAL_PRESETS
    #: what ``lambda1`` / ``lambda2`` / ``anchor`` left null become, per structure
    STRUCTURE_DEFAULTS: ClassVar[dict[str, dict[str, float]]] = {
        "paper": {"lambda1": 0.01, "lambda2": 0.001, "anchor": 0.0},
        "retention": {"lambda1": 0.01, "lambda2": 0.001, "anchor": 1.0},
    }

    factors: Literal["both", "a"] = field(
        default="both", metadata={"help": "factors with DEAL modules: both (A and B) | a (A only)"}
    )
    train_factors: bool = field(
        default=True, metadata={"help": "also train the raw factors under the modules (false: only θ1/θ2)"}
    )
    num_centres: int = field(default=4, metadata={"help": "heat kernels per width (centres on [0, 1])"})
    widths: list[float] = field(
        default_factory=lambda: [0.1, 0.3, 1.0],
        metadata={"help": "fixed kernel widths (std, in units of sigma/sigma_max)"},
    )
    mlp_hidden: int | None = field(default=None, metadata={"help": "update MLP hidden width (null: r)"})
    lambda1: float | None = field(
        default=None, metadata={"help": "weight of the retention penalty ||θ1||_a^a (null: the structure's default)"}
    )
    lambda2: float | None = field(
        default=None, metadata={"help": "weight of the update penalty ||θ2||_b^b (null: the structure's default)"}
    )
    a: float = field(default=10.0, metadata={"help": "order of the retention penalty (a >= b)"})
    b: float = field(default=2.0, metadata={"help": "order of the update penalty (b >= 1)"})
    module_lr: float | None = field(default=None, metadata={"help": "lr of θ1/θ2 (null: train.lr)"})
    structure: Literal["paper", "retention"] = field(
        default="paper",
        metadata={"help": "paper (modules on the one trained LoRA) | retention (modules on frozen old factors)"},
    )
    anchor: float | None = field(
        default=None, metadata={"help": "μ of μ||B'A' - B_prev A_prev||_F^2 (0: off; null: the structure's default)"}
    )

    def __post_init__(self) -> None:
        # resolved before validation, so every later reader (and config.yaml) sees numbers
        for key, value in self.STRUCTURE_DEFAULTS.get(self.structure, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        super().__post_init__()

    def problems(self) -> list[str]:
        p = self.lora_problems()
        if self.num_centres < 1:
            p.append(f"num_centres must be >= 1, got num_centres={self.num_centres}.")
        if not self.widths or any(w <= 0 for w in self.widths):
            p.append(f"widths must be a non-empty list of numbers > 0, got widths={list(self.widths)}.")
        if self.mlp_hidden is not None and self.mlp_hidden < 1:
            p.append(f"mlp_hidden must be >= 1 or null (= r), got mlp_hidden={self.mlp_hidden}.")
        for key in ("lambda1", "lambda2", "anchor"):
            if getattr(self, key) < 0:
                p.append(f"{key} must be >= 0 (0 switches that penalty off), got {key}={getattr(self, key)}.")
        if self.b < 1:
            p.append(f"b must be >= 1 (a norm order), got b={self.b}.")
        if self.a < self.b:
            p.append(
                f"a must be >= b (DEAL's asymmetric regulariser penalises the retention parameters with "
                f"an order at least that of the update MLP), got a={self.a}, b={self.b}; raise a or lower b."
            )
        if self.module_lr is not None and self.module_lr <= 0:
            p.append(f"module_lr must be > 0 or null (= train.lr), got module_lr={self.module_lr}.")
        return p


class DealGroup(nn.Module):
    """The DEAL modules of ``G`` factors of one shape, stored stacked and computed in one batched pass.

    Works in the paper's orientation ``M`` of shape ``(n, r)`` (rank dimension last): PEFT's
    ``lora_A.weight`` ``(r, in)`` is transposed, ``lora_B.weight`` ``(out, r)`` is used as is.

    Args:
        size: ``G``, the number of factors.
        r: the adapter rank.
        num_centres: kernels per width.
        widths: the fixed width series.
        hidden: hidden width of the update MLP.
        generator: where the MLP's random input layer is drawn from (never the global stream).
    """

    def __init__(
        self, size: int, r: int, num_centres: int, widths: list[float], hidden: int, generator: torch.Generator
    ) -> None:
        super().__init__()
        centres = torch.linspace(0.0, 1.0, num_centres) if num_centres > 1 else torch.full((1,), 0.5)
        self.register_buffer("centres0", centres.repeat(len(widths)))  # (K,)
        self.register_buffer("widths", torch.tensor(widths).repeat_interleave(num_centres))  # (K,)
        k = len(widths) * num_centres
        # θ1: zero = identity filter; the centres are learnt as offsets so that the penalty pulls them
        # back to where they started rather than towards σ̂ = 0
        self.kernel_weight = nn.Parameter(torch.zeros(size, k))  # (G, K)
        self.centre_shift = nn.Parameter(torch.zeros(size, k))  # (G, K)
        # θ2: residual MLP over the rank dimension (nn.Linear's default init for the input layer); the
        # zero output layer makes it the identity at init
        bound = 1.0 / math.sqrt(r)
        self.w1 = nn.Parameter(torch.empty(size, hidden, r).uniform_(-bound, bound, generator=generator))  # (G, h, r)
        self.b1 = nn.Parameter(torch.empty(size, hidden).uniform_(-bound, bound, generator=generator))  # (G, h)
        self.w2 = nn.Parameter(torch.zeros(size, r, hidden))  # (G, r, h)
        self.b2 = nn.Parameter(torch.zeros(size, r))  # (G, r)

    def retention_parameters(self) -> list[nn.Parameter]:
        return [self.kernel_weight, self.centre_shift]

    def update_parameters(self) -> list[nn.Parameter]:
        return [self.w1, self.b1, self.w2, self.b2]

    def gain(self, sigma_hat: torch.Tensor) -> torch.Tensor:
        """``h(σ̂) = g(σ̂) - 1`` for normalised singular values ``sigma_hat`` ``(G, r)``; returns ``(G, r)``."""
        centres = self.centres0 + self.centre_shift  # (G, K)
        phi = torch.exp(-((sigma_hat[:, :, None] - centres[:, None, :]) ** 2) / (2 * self.widths**2))  # (G, r, K)
        return (phi @ self.kernel_weight[:, :, None]).squeeze(-1)

    def retention(self, m: torch.Tensor) -> torch.Tensor:
        """Heat-kernel spectral filter of ``m`` ``(G, n, r)``, computed as a correction to ``m``.

        The singular basis comes from the r×r Gram matrices (cheap for small r) and is treated as a
        constant (no gradient through the eigendecomposition): exact when the factors are frozen, a
        stable straight-through gradient when they train. Adding a correction (zero when w = 0) keeps
        the identity start exact despite eigendecomposition round-off.
        """
        with torch.no_grad(), torch.autocast(m.device.type, enabled=False):
            mf = m.detach().float()
            lam, q = torch.linalg.eigh(mf.transpose(1, 2) @ mf)  # (G, r) ascending, (G, r, r)
            sigma = lam.clamp_min(0).sqrt()
            sigma_hat = sigma / sigma.amax(dim=-1, keepdim=True).clamp_min(torch.finfo(sigma.dtype).tiny)
        q = q.to(m.dtype)
        h = self.gain(sigma_hat).to(m.dtype)  # (G, r)
        return m + ((m @ q) * h[:, None, :]) @ q.transpose(1, 2)

    def update(self, m: torch.Tensor) -> torch.Tensor:
        """Residual MLP applied to every row (an r-vector) of each ``m[g]`` ``(n, r)``."""
        hid = F.gelu(torch.baddbmm(self.b1[:, None, :], m, self.w1.transpose(1, 2)))  # (G, n, h)
        return m + torch.baddbmm(self.b2[:, None, :], hid, self.w2.transpose(1, 2))

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        """Args: m: stacked factors ``(G, n, r)``. Returns: ``MLP(Retention(m))``, same shape."""
        return self.update(self.retention(m))


class DealBank(nn.Module):
    """Every DEAL module of one adapter, grouped by factor shape; computes all factors of a group at once.

    One batched pass per group (a few dozen ops) replaces a few dozen ops *per factor*: with 60 LoRA
    layers that is what keeps the step cost near plain LoRA's on a CPU, where small ops are dominated by
    per-op overhead. The pass is cached (PEFT reads each ``weight`` twice per call) until a backward pass
    runs through it (its graph is then freed), grad or autocast mode changes, or a tensor it depends on
    is changed in place (an optimizer step, a checkpoint load).

    Args:
        members: ``(factor weight, rank_first)`` per factor; ``rank_first`` is True for ``lora_A``.
        r, num_centres, widths, hidden, generator: see :class:`DealGroup`.
    """

    def __init__(
        self,
        members: list[tuple[nn.Parameter, bool]],
        r: int,
        num_centres: int,
        widths: list[float],
        hidden: int,
        generator: torch.Generator,
    ) -> None:
        super().__init__()
        keys: dict[tuple[bool, int], list[int]] = {}
        for i, (w, rank_first) in enumerate(members):
            keys.setdefault((rank_first, w.shape[1] if rank_first else w.shape[0]), []).append(i)
        self.weights = [w for w, _ in members]  # the originals (plain references, not registered here)
        self.rank_first = [rf for _, rf in members]
        self.group_members = list(keys.values())
        self.slot = {}
        for g, idx in enumerate(self.group_members):
            for s, i in enumerate(idx):
                self.slot[i] = (g, s)
        w0 = members[0][0]
        self.groups = nn.ModuleList(
            DealGroup(len(idx), r, num_centres, widths, hidden, generator).to(w0.device, w0.dtype)
            for idx in self.group_members
        )
        # the task-start values of θ1/θ2 (not registered): the diagnostics measure each one's effect against them
        self.initial = [{n: p.detach().clone() for n, p in g.named_parameters()} for g in self.groups]
        self._cache: dict[int, _GroupPass] = {}

    def factor(self, i: int) -> torch.Tensor:
        """``Y'`` of factor ``i`` in PEFT shape (from the cached group pass, or a fresh one)."""
        g, s = self.slot[i]
        grp = self.groups[g]
        autocast = torch.is_autocast_enabled(self.weights[i].device.type)
        state = (torch.is_grad_enabled(), autocast, tuple(p._version for p in grp.parameters()))
        cached = self._cache.get(g)
        if cached is None or cached.stale or cached.state != state or cached.versions[s] != self.weights[i]._version:
            idx = self.group_members[g]
            ws = [self.weights[j] for j in idx]
            out = grp(torch.stack([w.T if self.rank_first[j] else w for j, w in zip(idx, ws, strict=True)]))
            cached = _GroupPass(out.unbind(0), state, [w._version for w in ws])
            if out.requires_grad:
                # once a backward pass runs through this group its graph is freed: never serve it again. The
                # hook holds the pass weakly: a strong reference would make a cycle (pass -> out -> hook ->
                # pass) that Python's GC cannot see through, keeping every replaced pass and its graph alive.
                out.register_hook(functools.partial(_mark_stale, weakref.ref(cached)))
            self._cache[g] = cached
        out_s = cached.out[s]
        # lora_A in PEFT's own (contiguous) layout: a transposed view would make F.linear take another
        # summation order, so a run with the modules at identity would not compute exactly like plain LoRA
        return out_s.T.contiguous() if self.rank_first[i] else out_s

    def clear(self) -> None:
        """Drop cached outputs (and their autograd graphs)."""
        self._cache = {}

    def retention_parameters(self) -> list[nn.Parameter]:
        return [p for grp in self.groups for p in grp.retention_parameters()]

    def update_parameters(self) -> list[nn.Parameter]:
        return [p for grp in self.groups for p in grp.update_parameters()]

    @torch.no_grad()
    def parameter_effects(self) -> dict[str, dict[str, float]]:
        """How far each module parameter moves the factors: ``‖Y'(θ) − Y'(θ with p at its task start)‖_F``.

        Returns:
            ``{"A" | "B": {parameter name: size}}``, each size the root-sum-square over that kind's factors.
        """
        sq: dict[str, dict[str, float]] = {"A": {}, "B": {}}
        for g, grp in enumerate(self.groups):
            idx = self.group_members[g]
            m = torch.stack([self.weights[j].T if self.rank_first[j] else self.weights[j] for j in idx])
            full = grp(m)
            kind = "A" if self.rank_first[idx[0]] else "B"  # a group holds one factor kind (the key includes it)
            for name, start in self.initial[g].items():
                without = torch.func.functional_call(grp, {name: start}, (m,))
                sq[kind][name] = sq[kind].get(name, 0.0) + float((full - without).float().pow(2).sum())
        return {kind: {k: math.sqrt(v) for k, v in d.items()} for kind, d in sq.items() if d}


class _GroupPass:
    """One cached batched pass of a :class:`DealGroup`: per-factor outputs and what they were computed from."""

    def __init__(self, out: tuple[torch.Tensor, ...], state: tuple[Any, ...], versions: list[int]) -> None:
        self.out = out
        self.state = state
        self.versions = versions
        self.stale = False


def _mark_stale(ref: weakref.ref, grad: torch.Tensor) -> None:
    cached = ref()
    if cached is not None:
        cached.stale = True


class DealFactor(nn.Module):
    """The parametrization of one factor: ``weight ↦ Y'`` read from the shared :class:`DealBank`.

    Args:
        bank: the adapter's bank (a shared submodule of every factor's parametrization).
        index: this factor's position in the bank.
    """

    def __init__(self, bank: DealBank, index: int) -> None:
        super().__init__()
        self.bank = bank
        self.index = index

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """Args: weight: the factor (the bank reads the same tensor). Returns: ``Y'``, same shape."""
        return self.bank.factor(self.index)


class DEAL(ContinualMethod):
    """One PEFT LoRA (``default``) through all tasks; from task 2 on its factors are re-parametrised by
    DEAL's retention filter and update MLP (identity at start), then materialised after the task.

    With ``structure: retention`` task ``i ≥ 2`` adds a fresh adapter ``task<i>`` (trainable), and the
    modules act on every earlier adapter's factors, which are frozen.
    """

    config_cls = DEALConfig
    summary = "DEAL (paper): heat-kernel spectral retention + update MLP on LoRA factors, merged per task"
    adapter = "default"

    def __init__(self, config: DEALConfig) -> None:
        super().__init__(config)
        self.config: DEALConfig = config
        self.factors: list[nn.Module] = []  # the parametrized factor Linears (lora_A / lora_B)
        self.bank: DealBank | None = None
        self.adapters: list[str] = [self.adapter]  # every adapter of the model, oldest first
        # per LoRA layer: the (lora_A, lora_B) Linears of the adapters that existed at the task start, and
        # their weights then (rank-concatenated): the anchor and the diagnostics compare against them
        self.pairs: list[list[tuple[nn.Module, nn.Module]]] = []
        self.start: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.generator = method_generator(0, config.method_name())
        self.fused = FusedFrozenLoRA()  # retention structure: the earlier adapters as one LoRA per layer
        self._pen: dict[str, Any] = {"retention": 0.0, "update": 0.0, "anchor": 0.0, "steps": 0}
        self._last_pen: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        super().setup(ctx)
        self.generator = method_generator(ctx.seed, self.config.method_name())

    def attach(self, model: nn.Module) -> nn.Module:
        return add_lora(model, lora_config(self.config, model), self.adapter)

    def _factor_modules(self, model: nn.Module, adapters: list[str]) -> list[tuple[nn.Module, nn.Module, bool]]:
        """(PEFT layer, factor Linear, rank_first) for every factor of ``adapters``."""
        out = []
        for _, layer in lora_layers(model):
            for name in adapters:
                if name in layer.lora_A:
                    out.append((layer, layer.lora_A[name], True))
                    out.append((layer, layer.lora_B[name], False))
        return out

    # ---- per task -----------------------------------------------------------------------------
    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        if stage.index == 0:  # task 1: plain LoRA (PEFT made A and B trainable)
            return model
        cfg = self.config
        old = list(self.adapters)
        if cfg.structure == "retention":
            model = self._add_task_adapter(model, stage)
            if cfg.frozen_adapters == "fused":
                # before the factors are parametrised: PEFT's set_adapter toggles requires_grad module-wide
                self.fused.install(model, old, self.adapters[-1], live=True)
        chosen = []
        for _, lin, rank_first in self._factor_modules(model, old):
            lin.weight.requires_grad_(cfg.train_factors and cfg.structure == "paper")
            if rank_first or cfg.factors == "both":  # with factors=a, B stays a plain factor
                chosen.append((lin, rank_first))
        self._remember_start(model, old)
        self.bank = DealBank(
            [(lin.weight, rank_first) for lin, rank_first in chosen],
            cfg.r,
            cfg.num_centres,
            list(cfg.widths),
            cfg.mlp_hidden or cfg.r,
            self.generator,
        )
        for i, (lin, _) in enumerate(chosen):
            parametrize.register_parametrization(lin, "weight", DealFactor(self.bank, i))
            self.factors.append(lin)
        self.bank.clear()  # registration evaluated the factors once; start training from a fresh graph
        self._pen = {"retention": 0.0, "update": 0.0, "anchor": 0.0, "steps": 0}
        return model

    def _add_task_adapter(self, model: nn.Module, stage: Stage) -> nn.Module:
        """Retention structure: a fresh trainable adapter for this task; every adapter active, the old frozen."""
        name = adapter_name(stage.task_index)
        device = next(model.parameters()).device
        with isolated_rng(self.generator, device):  # PEFT's init must not move the global (dropout) stream
            model = add_lora(model, lora_config(self.config, model), name)
        old = list(self.adapters)
        self.adapters.append(name)
        model.base_model.set_adapter(list(self.adapters))  # LoraModel.set_adapter marks every listed one trainable
        for prev in old:
            for p in adapter_parameters(model, prev).values():
                p.requires_grad_(False)
        return model

    def _remember_start(self, model: nn.Module, adapters: list[str]) -> None:
        """The task-start factors of ``adapters`` per layer, concatenated along the rank (for the anchor)."""
        self.pairs, self.start = [], []
        with torch.no_grad():
            for _, layer in lora_layers(model):
                pairs = [(layer.lora_A[a], layer.lora_B[a]) for a in adapters if a in layer.lora_A]
                if pairs:
                    self.pairs.append(pairs)
                    a0 = torch.cat([lin_a.weight.detach() for lin_a, _ in pairs], 0).clone()  # (K r, in)
                    b0 = torch.cat([lin_b.weight.detach() for _, lin_b in pairs], 1).clone()  # (out, K r)
                    self.start.append((a0, b0))

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        if self.bank is None:
            return super().param_groups(model)
        module_ids = {id(p) for p in self.bank.parameters()}
        raw = [p for p in model.parameters() if p.requires_grad and id(p) not in module_ids]
        mods = [p for p in self.bank.parameters() if p.requires_grad]
        groups: list[dict[str, Any]] = []
        if raw:
            groups.append({"params": raw})
        group: dict[str, Any] = {"params": mods}
        if self.config.module_lr is not None:
            group["lr"] = self.config.module_lr
        groups.append(group)
        return groups

    # ---- per step -----------------------------------------------------------------------------
    def penalty(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(λ1 ‖θ1‖_a^a, λ2 ‖θ2‖_b^b)`` summed over every wrapped factor; None before task 2."""
        if self.bank is None:
            return None
        cfg = self.config
        ret = sum(p.abs().pow(cfg.a).sum() for p in self.bank.retention_parameters())
        upd = sum(p.abs().pow(cfg.b).sum() for p in self.bank.update_parameters())
        return cfg.lambda1 * ret, cfg.lambda2 * upd

    def anchor_penalty(self) -> torch.Tensor | None:
        """``μ Σ_layers ‖B'A' − B_prev A_prev‖²_F`` over the task-start adapters; None before task 2.

        Per layer (adapters concatenated along the rank), with ``ΔA = A' − A_prev``, ``ΔB = B' − B_prev``:
        ``B'A' − B_prev A_prev = B'ΔA + ΔB A_prev``, so the square is
        ``tr(B'ᵀB' · ΔAΔAᵀ) + tr(ΔBᵀΔB · A_prev A_prevᵀ) + 2 tr(B'ᵀΔB · A_prev ΔAᵀ)``: r×r Gram matrices
        only (never the out×in product), and exactly 0 when nothing moved (no cancellation of large terms).
        """
        if self.bank is None:
            return None
        total: torch.Tensor | float = 0.0
        for pairs, (a0, b0) in zip(self.pairs, self.start, strict=True):
            a1 = torch.cat([lin_a.weight for lin_a, _ in pairs], 0)  # (K r, in)
            b1 = torch.cat([lin_b.weight for _, lin_b in pairs], 1)  # (out, K r)
            da, db = a1 - a0, b1 - b0
            first = ((b1.T @ b1) * (da @ da.T)).sum()
            second = ((db.T @ db) * (a0 @ a0.T)).sum()
            cross = ((db.T @ b1) * (a0 @ da.T)).sum()  # tr(XY) = Σ X ⊙ Yᵀ with X = B'ᵀΔB, Y = A_prev ΔAᵀ
            total = total + first + second + 2 * cross
        return self.config.anchor * torch.as_tensor(total)

    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        pen = self.penalty()
        cfg = self.config
        if pen is None or (cfg.lambda1 == 0 and cfg.lambda2 == 0 and cfg.anchor == 0):
            return None
        ret, upd = pen
        anc = self.anchor_penalty() if cfg.anchor > 0 else None
        # kept as tensors: converting here would force a device sync on every micro-batch
        self._last_pen = {"retention": ret.detach(), "update": upd.detach()}
        self._pen["retention"] += ret.detach()
        self._pen["update"] += upd.detach()
        self._pen["steps"] += 1
        if anc is None:
            return ret + upd
        self._last_pen["anchor"] = anc.detach()
        self._pen["anchor"] = self._pen.get("anchor", 0.0) + anc.detach()
        return ret + upd + anc

    # ---- after the task -----------------------------------------------------------------------
    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """Materialise ``Y'`` into the plain LoRA weights (inference is then exactly plain LoRA)."""
        if not self.factors:
            return model
        self.history.append(self._stage_stats(stage))
        return self._unwrap(model, materialise=True)

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """On resume: drop the modules ``before_task`` added (the checkpoint then sets the weights)."""
        return self._unwrap(model, materialise=False) if self.factors else model

    def _unwrap(self, model: nn.Module, materialise: bool) -> nn.Module:
        for lin in self.factors:
            parametrize.remove_parametrizations(lin, "weight", leave_parametrized=materialise)
            if materialise:
                # give the materialised weight its own contiguous storage, so it computes exactly like the saved
                # (contiguous) adapter
                with torch.no_grad():
                    lin.weight.set_(lin.weight.detach().clone(memory_format=torch.contiguous_format))
        if self.config.structure == "paper":
            for _, lin, _ in self._factor_modules(model, [self.adapter]):
                lin.weight.requires_grad_(True)  # a plain, trainable PEFT LoRA again
        if self.bank is not None:
            self.bank.clear()
        # after the parametrizations are gone: giving the adapters back to PEFT's loop toggles requires_grad
        self.fused.remove()
        self.factors, self.bank, self.pairs, self.start = [], None, [], []
        return model

    def _stage_stats(self, stage: Stage) -> dict[str, Any]:
        n = max(1, int(self._pen["steps"]))
        assert self.bank is not None  # called while the modules are attached
        groups = list(self.bank.groups)
        with torch.no_grad():
            kw = torch.cat([g.kernel_weight.detach().abs().flatten() for g in groups])
            shift = torch.cat([g.centre_shift.detach().abs().flatten() for g in groups])
            out_w = torch.cat([g.w2.detach().abs().flatten() for g in groups])
        row = {
            "stage": stage.name,
            "stage_index": stage.index,
            "wrapped_factors": len(self.factors),
            "retention_params": sum(p.numel() for p in self.bank.retention_parameters()),
            "update_params": sum(p.numel() for p in self.bank.update_parameters()),
            "penalty_retention_mean": float(self._pen["retention"]) / n,
            "penalty_update_mean": float(self._pen["update"]) / n,
            "penalty_retention_last": float(self._last_pen.get("retention", 0.0)),
            "penalty_update_last": float(self._last_pen.get("update", 0.0)),
            "kernel_weight_max_abs": float(kw.max()),
            "centre_shift_max_abs": float(shift.max()),
            "mlp_out_weight_max_abs": float(out_w.max()),
        }
        if self.config.anchor > 0:
            row["penalty_anchor_mean"] = float(self._pen.get("anchor", 0.0)) / n
            row["penalty_anchor_last"] = float(self._last_pen.get("anchor", 0.0))
        row["factor_change"] = self._factor_change()
        return row

    @torch.no_grad()
    def _factor_change(self) -> dict[str, dict[str, float]]:
        """Per factor kind (A, B): Frobenius sizes (root-sum-square over layers) of the task-start factors
        (``start_norm``), the change of the factors the model uses (``total``), of the raw factors under the
        modules (``raw``), of everything the modules add (``modules``), and of each module parameter's own
        effect (``kernel_weight``, ``centre_shift``, ``w1``, ``b1``, ``w2``, ``b2``: the factor with only
        that parameter put back at its task-start value, against the factor as it is)."""
        assert self.bank is not None
        sq = {kind: {"start_norm": 0.0, "total": 0.0, "raw": 0.0, "modules": 0.0} for kind in ("A", "B")}
        for pairs, (a0, b0) in zip(self.pairs, self.start, strict=True):
            for kind, now, start, dim in (("A", [p[0] for p in pairs], a0, 0), ("B", [p[1] for p in pairs], b0, 1)):
                eff = torch.cat([lin.weight for lin in now], dim)
                raw = torch.cat([_raw_weight(lin) for lin in now], dim)
                for key, value in (("start_norm", start), ("total", eff - start), ("raw", raw - start)):
                    sq[kind][key] += float(value.float().pow(2).sum())
                sq[kind]["modules"] += float((eff - raw).float().pow(2).sum())
        out = {kind: {k: math.sqrt(v) for k, v in d.items()} for kind, d in sq.items()}
        for kind, effects in self.bank.parameter_effects().items():
            out[kind].update(effects)
        return out

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        # after_task already materialised Y': plain PEFT LoRA weights
        if len(self.adapters) == 1:
            return [save_adapter(model, self.adapter, folder)]
        return [save_combined(model, self.adapters, folder)]

    def stats(self) -> dict[str, Any]:
        return {"stages": list(self.history)}

    # ---- state --------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The per-stage statistics, running penalty sums, the module generator's state and, inside a task,
        the task-start factors (the modules themselves are model tensors)."""
        state = stats_state(self.history, pen=self._pen, last=self._last_pen)
        state["generator"] = self.generator.get_state()
        if self.start:
            state["start"] = [[a0, b0] for a0, b0 in self.start]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.ctx is not None  # setup() ran: the stage names come from the stream
        optional: dict[str, Kind] = {"pen": dict, "last": dict, "generator": torch.Tensor, "start": list}
        self.history, running = stats_from_state(
            self.config.method_name(), state, self.stages(self.ctx.stream), optional
        )
        pen = running.get("pen")
        if pen:
            self._pen = {**pen, "steps": int(pen["steps"])}
            self._pen.setdefault("anchor", 0.0)
        self._last_pen = dict(running.get("last", {}))
        if "generator" in state:  # older checkpoints: the replayed before_task calls already drew the same
            self.generator.set_state(state["generator"])
        if self.start and "start" in state:
            with torch.no_grad():
                for (a0, b0), (sa, sb) in zip(self.start, state["start"], strict=True):
                    a0.copy_(sa)
                    b0.copy_(sb)


def _raw_weight(lin: nn.Module) -> torch.Tensor:
    """The factor under the parametrization (the factor itself when it has none)."""
    if parametrize.is_parametrized(lin, "weight"):
        return lin.parametrizations.weight.original
    return lin.weight


def save_combined(model: nn.Module, adapters: list[str], folder: Path) -> Path:
    """Save the sum of ``adapters`` as one plain PEFT LoRA (ranks concatenated; outputs unchanged)."""
    tmp = "deal_combined"
    model.add_weighted_adapter(adapters, [1.0] * len(adapters), tmp, combination_type="cat")
    try:
        return save_adapter(model, tmp, folder)
    finally:
        model.delete_adapter(tmp)
        model.base_model.set_adapter(list(adapters))
