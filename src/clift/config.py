"""The run configuration: one schema (nested dataclasses), three ways in (Python, YAML, dotted overrides).

``RunConfig`` holds a section per concern — ``model``, ``data``, ``method``, ``train``, ``eval``, ``log``.
The ``method`` section is polymorphic: its ``name`` picks a registered method and the remaining keys are
validated against that method's own config dataclass. Unknown keys, wrong types and impossible
combinations are collected and reported together (:class:`clift.errors.ConfigError`), each message
naming the key, the value, what is allowed and the fix.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from clift.errors import ConfigError
from clift.io import read_yaml
from clift.memory import QuantizationConfig
from clift.safety import load_yaml_bounded, shorten
from clift.schema import Validated, build_dataclass, to_dict
from clift.schema import check as _check

# the generic machinery moved to clift.schema; these names stay importable from here
from clift.schema import field_help as field_help

# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------

DType = Literal["float32", "bfloat16", "float16", "auto"]


@dataclass
class ModelConfig(Validated):
    """Which model to adapt, and how to load it.

    Attributes:
        name: a built-in alias (``smollm2-135m``, ``tiny-llama``, ``tiny-t5``; see ``clift ls models``), a
            local model directory, a ``.gguf`` file, or a Hugging Face hub id. Causal vs seq2seq is read
            from the model's config, never from this name. Default: ``smollm2-135m``.
        gguf_file: GGUF file name inside ``name`` (a directory or hub repo); not needed for a ``.gguf`` path.
        tokenizer: tokenizer directory or hub id, if it differs from the model's.
        dtype: weight dtype: ``float32``, ``bfloat16``, ``float16`` or ``auto`` (the checkpoint's). Default
            float32; on GPU use bf16 weights or ``train.mixed_precision``.
        device: ``auto`` (GPU when Accelerate sees one), ``cpu`` or ``cuda``. Default auto.
        revision: hub revision (branch, tag or commit) for hub ids.
        trust_remote_code: allow model code from the hub. Default false.
        local_files_only: never contact the hub (set true on offline machines). Default false.
        attn_implementation: ``eager``, ``sdpa`` or ``flash_attention_2`` (needs flash-attn and a GPU);
            null = transformers' default for the model. Default null.
        quantization: a quantized base through bitsandbytes (:class:`clift.memory.QuantizationConfig`,
            e.g. ``{bits: 4}`` for QLoRA); adapter methods only. Default null (unquantized).
    """

    name: str = field(default="smollm2-135m", metadata={"help": "alias, local dir, .gguf file or hub id"})
    gguf_file: str | None = field(default=None, metadata={"help": "GGUF file inside `name`"})
    tokenizer: str | None = field(default=None, metadata={"help": "tokenizer dir or hub id, if different"})
    dtype: DType = field(default="float32", metadata={"help": "float32 | bfloat16 | float16 | auto"})
    device: Literal["auto", "cpu", "cuda"] = field(default="auto", metadata={"help": "auto | cpu | cuda"})
    revision: str | None = field(default=None, metadata={"help": "hub revision"})
    trust_remote_code: bool = field(default=False, metadata={"help": "allow hub model code"})
    local_files_only: bool = field(default=False, metadata={"help": "never contact the hub"})
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = field(
        default=None, metadata={"help": "eager | sdpa | flash_attention_2 (null: the model's default)"}
    )
    quantization: QuantizationConfig | None = field(
        default=None, metadata={"help": "quantized base, e.g. {bits: 4} (QLoRA; adapter methods only)"}
    )

    def problems(self) -> list[str]:
        p: list[str] = []
        _check(p, bool(self.name), "model.name is empty; give an alias (`clift ls models`), a path or a hub id.")
        return p


@dataclass
class DataConfig(Validated):
    """The task stream and the data budget.

    Attributes:
        benchmark: a benchmark name (``clift ls benchmarks``): ``fixture`` (3 tiny tasks shipped for tests),
            ``standard``, ``standard-proxy``, ``long``, ``tc``. Ignored when ``stream`` is set.
        order: which named order of the benchmark (``1`` or ``o1``). Default 1.
        tasks: an explicit task list from the benchmark, replacing ``order``.
        stream: path to a user stream YAML (tasks with their own files) instead of a benchmark.
        data_dir: an upstream ``CL_Benchmark`` folder to read instead of the embedded pack.
        train_per_task / dev_per_task / test_per_task: examples per task and split (label-balanced,
            deterministic given the seed); null = all available.
        max_source_length: prompt tokens kept (only the sentence is truncated). Default 256.
        max_target_length: label tokens kept in training. Default 50.
        seed: data-selection seed; null = the run's seed.
        prompt: the prompt template (:mod:`clift.data.prompts`): ``olora`` (default, the papers'
            format), ``chat`` (the tokenizer's chat template, loss on the assistant turn) or a format
            string with ``{input}`` and any of ``{instruction}``, ``{options}``, ``{name}``, ``{family}``.
    """

    benchmark: str = field(default="fixture", metadata={"help": "benchmark name (clift ls benchmarks)"})
    order: str = field(default="1", metadata={"help": "named order of the benchmark, e.g. 1 or o1"})
    tasks: list[str] | None = field(default=None, metadata={"help": "explicit task list (replaces order)"})
    stream: str | None = field(default=None, metadata={"help": "user stream YAML (replaces benchmark)"})
    data_dir: str | None = field(default=None, metadata={"help": "upstream CL_Benchmark folder"})
    train_per_task: int | None = field(default=None, metadata={"help": "train examples per task (null: all)"})
    dev_per_task: int | None = field(default=None, metadata={"help": "dev examples per task (null: all)"})
    test_per_task: int | None = field(default=None, metadata={"help": "test examples per task (null: all)"})
    max_source_length: int = field(default=256, metadata={"help": "max prompt tokens"})
    max_target_length: int = field(default=50, metadata={"help": "max label tokens"})
    seed: int | None = field(default=None, metadata={"help": "data seed (null: run seed)"})
    prompt: str = field(default="olora", metadata={"help": "olora | chat | format string with {input}"})

    def problems(self) -> list[str]:
        from clift.data.prompts import check_prompt

        p: list[str] = check_prompt(self.prompt)
        for key in ("train_per_task", "dev_per_task", "test_per_task"):
            v = getattr(self, key)
            _check(p, v is None or v >= 0, f"data.{key} must be >= 0 or null (all), got {v}.")
        _check(
            p,
            self.max_source_length >= 8,
            f"data.max_source_length must be >= 8, got {self.max_source_length}.",
        )
        _check(
            p,
            self.max_target_length >= 1,
            f"data.max_target_length must be >= 1, got {self.max_target_length}.",
        )
        return p


@dataclass
class TrainConfig(Validated):
    """Optimisation settings shared by all methods (methods may add their own, e.g. a second lr).

    Attributes:
        epochs: passes over each task's training set. Default 1.
        max_steps: optimizer steps per task; overrides ``epochs`` when set.
        batch_size: examples per forward pass (per process). Default 8.
        grad_accum: forward passes per optimizer step. Default 1.
        lr: learning rate. Default 1e-3 (a LoRA rate; full fine-tuning wants ~1e-5).
        weight_decay: AdamW weight decay. Default 0.
        adam_betas / adam_eps: AdamW moments. Default (0.9, 0.999), 1e-8.
        schedule: ``constant`` or ``linear`` decay to 0 over each task. Default constant (as the papers).
        warmup_steps: linear warm-up steps at the start of each task. Default 0.
        max_grad_norm: global gradient-norm clip; null disables. Default 1.0.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` autocast through Accelerate. Default no.
        nan_policy: what a non-finite loss does: ``stop`` (raise, naming task and step) or ``skip`` the batch.
        checkpoint_every: optimizer steps between mid-task checkpoints (0: only at task boundaries). A
            checkpoint is always written after each task. Default 100.
        gradient_checkpointing: recompute activations in the backward pass (less memory, ~30 % more
            time), with PEFT's input-grad hook. Default false.
    """

    epochs: int = field(default=1, metadata={"help": "epochs per task"})
    max_steps: int | None = field(default=None, metadata={"help": "optimizer steps per task (overrides epochs)"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    grad_accum: int = field(default=1, metadata={"help": "forward passes per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    adam_betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "AdamW betas"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    schedule: Literal["constant", "linear"] = field(default="constant", metadata={"help": "constant | linear"})
    warmup_steps: int = field(default=0, metadata={"help": "warm-up steps per task"})
    max_grad_norm: float | None = field(default=1.0, metadata={"help": "gradient clip (null: off)"})
    mixed_precision: Literal["no", "bf16", "fp16"] = field(default="no", metadata={"help": "no | bf16 | fp16"})
    nan_policy: Literal["stop", "skip"] = field(default="stop", metadata={"help": "non-finite loss: stop | skip"})
    checkpoint_every: int = field(default=100, metadata={"help": "steps between mid-task checkpoints (0: off)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations (saves memory)"})

    def problems(self) -> list[str]:
        p: list[str] = []
        _check(p, self.epochs >= 1, f"train.epochs must be >= 1, got {self.epochs}.")
        _check(
            p,
            self.max_steps is None or self.max_steps >= 1,
            f"train.max_steps must be >= 1 or null, got {self.max_steps}.",
        )
        _check(p, self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}.")
        _check(p, self.grad_accum >= 1, f"train.grad_accum must be >= 1, got {self.grad_accum}.")
        _check(p, self.lr > 0, f"train.lr must be > 0, got {self.lr}.")
        _check(p, self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}.")
        _check(
            p,
            len(self.adam_betas) == 2 and all(0 <= b < 1 for b in self.adam_betas),
            f"train.adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}.",
        )
        _check(p, self.adam_eps > 0, f"train.adam_eps must be > 0, got {self.adam_eps}.")
        _check(p, self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}.")
        _check(
            p,
            self.checkpoint_every >= 0,
            f"train.checkpoint_every must be >= 0 (0: only at task boundaries), got {self.checkpoint_every}.",
        )
        _check(
            p,
            self.max_grad_norm is None or self.max_grad_norm > 0,
            f"train.max_grad_norm must be > 0 or null (no clipping), got {self.max_grad_norm}.",
        )
        return p


@dataclass
class EvalConfig(Validated):
    """How accuracy is measured after every task.

    Attributes:
        mode: ``generate`` (greedy decoding + normalised exact match, the papers' metric), ``rank``
            (pick the label option with the highest log-likelihood, one forward pass per option) or
            ``score`` (the same choice as ``rank`` from one prompt pass per example: every option is scored
            off the prompt's KV cache). Default generate.
        score_norm: how ``score`` compares options: ``none`` (summed log-likelihood, = ``rank``),
            ``length`` (per token) or ``pmi`` (minus the option's log-likelihood under the task's
            content-free prompt, i.e. calibrated). Default none.
        bootstrap: resamples of the per-run bootstrap intervals of every cell and metric (recorded in
            results.json as ``intervals``); 0 turns them off. Default 1000.
            Free-form tasks (no label set) are always scored by generation, with their own metric.
        split: ``test`` (reported numbers) or ``dev`` (for tuning; never tune on test). Default test.
        batch_size: examples per evaluation forward. Default 16.
        max_new_tokens: generation budget; null = the longest label in tokens + 4 (free-form tasks:
            data.max_target_length + 4).
        zero_shot: evaluate the untouched base model first (row b, needed for FWT). Default true.
    """

    mode: Literal["generate", "rank", "score"] = field(default="generate", metadata={"help": "generate | rank | score"})
    score_norm: Literal["none", "length", "pmi"] = field(
        default="none", metadata={"help": "score mode: none | length | pmi"}
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples for intervals (0: off)"})
    split: Literal["test", "dev"] = field(default="test", metadata={"help": "test | dev"})
    batch_size: int = field(default=16, metadata={"help": "examples per eval forward"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "null: longest label + 4"})
    zero_shot: bool = field(default=True, metadata={"help": "evaluate the base model first (FWT)"})

    def problems(self) -> list[str]:
        p: list[str] = []
        _check(p, self.batch_size >= 1, f"eval.batch_size must be >= 1, got {self.batch_size}.")
        _check(
            p,
            self.bootstrap == 0 or self.bootstrap >= 100,
            f"eval.bootstrap must be 0 (off) or >= 100 resamples (1000 for a 95 % interval), got {self.bootstrap}.",
        )
        _check(
            p,
            self.max_new_tokens is None or self.max_new_tokens >= 1,
            f"eval.max_new_tokens must be >= 1 or null, got {self.max_new_tokens}.",
        )
        return p


@dataclass
class LogConfig(Validated):
    """Progress and logging.

    Attributes:
        progress: tqdm bars for training and evaluation. Default true (false for CI logs).
        log_every: optimizer steps between loss log lines. Default 10.
        tensorboard: also log scalars to TensorBoard through Accelerate's tracker (needs ``tensorboard``).
    """

    progress: bool = field(default=True, metadata={"help": "show progress bars"})
    log_every: int = field(default=10, metadata={"help": "steps between loss logs"})
    tensorboard: bool = field(default=False, metadata={"help": "log to TensorBoard"})

    def problems(self) -> list[str]:
        return [] if self.log_every >= 1 else [f"log.log_every must be >= 1, got {self.log_every}."]


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------

# short forms accepted on the command line: `clift run c.yaml benchmark=standard-proxy order=1`
SHORTHANDS = {
    "benchmark": "data.benchmark",
    "order": "data.order",
    "stream": "data.stream",
    "data_dir": "data.data_dir",
    "train_per_task": "data.train_per_task",
    "test_per_task": "data.test_per_task",
    "lr": "train.lr",
    "epochs": "train.epochs",
    "model": "model.name",
    "method": "method.name",
}


@dataclass
class RunConfig:
    """A complete continual run.

    Attributes:
        name: the run's name (used for the default output directory). Default ``run``.
        output_dir: where the run writes; null = ``runs/<name>``.
        seed: seeds Python, NumPy and torch (and the data selection unless ``data.seed``). Default 42.
        save_adapters: write each task's adapter (PEFT format, safetensors) into the run. Default true.
        model / data / method / train / eval / log: the sections above; ``method`` is a
            registered method's config (``clift ls methods``).
    """

    name: str = "run"
    output_dir: str | None = None
    seed: int = 42
    save_adapters: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: Any = None  # a MethodConfig subclass instance; resolved through the method registry
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def __post_init__(self) -> None:
        if self.method is None:
            from clift.methods import build_method_config

            self.method = build_method_config({"name": "seq_lora"})

    @property
    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name

    @property
    def data_seed(self) -> int:
        return self.seed if self.data.seed is None else self.data.seed

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RunConfig:
        """Build and validate a run config; every problem is reported in one :class:`ConfigError`."""
        from clift.input_checks import fill_method_name, run_problems
        from clift.methods import build_method_config

        problems: list[str] = []
        raw = copy.deepcopy(dict(data or {}))
        for section in ("model", "method"):
            if isinstance(raw.get(section), str):  # `model: tiny-llama`, `method: seq_lora`
                raw[section] = {"name": raw[section]}
        method_raw = fill_method_name(raw.pop("method", None) or {"name": "seq_lora"})
        problems += run_problems(raw)  # name (a folder name), seeds (NumPy's range)
        cfg = build_dataclass(_RunFields, raw, "", problems)
        method = None
        try:
            method = build_method_config(method_raw)
        except ConfigError as err:
            problems.extend(err.problems)
        if problems:
            raise ConfigError(problems)
        assert cfg is not None
        kwargs = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        return cls(method=method, **kwargs)


@dataclass
class _RunFields:
    """RunConfig without the polymorphic method section (used by the generic builder)."""

    _EXTRA_KEYS = ("method",)

    name: str = "run"
    output_dir: str | None = None
    seed: int = 42
    save_adapters: bool = True
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    log: LogConfig = field(default_factory=LogConfig)


#: sections whose short form is their name (`model: tiny-llama`, `method: seq_ft`), at any depth
NAMED_SECTIONS = ("model", "method")


def apply_overrides(
    raw: Mapping[str, Any],
    overrides: Sequence[str],
    *,
    shorthands: Mapping[str, str] | None = None,
    example: str = "train.lr=1e-4",
    what: str = "the config",
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a raw mapping (values parsed as YAML): the one override parser.

    Used for run configs (``clift run c.yaml train.lr=1e-4``) and suite files (``clift compare s.yaml
    seeds=[1,2] base.train.max_steps=2``). The rules, the same for both:

    * a key is first looked up in ``shorthands`` as a whole (``benchmark`` → ``data.benchmark``);
    * each dotted part but the last names a section; a missing one is created;
    * a ``model`` or ``method`` section written as a bare name (``method: seq_lora``) becomes ``{name: ...}``
      when a key is set inside it (``method.r=4``); any other part that holds a non-mapping is an error;
    * an empty value (``key=``) sets null; an empty key or a missing ``=`` is an error.

    Args:
        raw: the mapping read from YAML (not modified).
        overrides: strings such as ``train.lr=1e-4``, ``method.name=per_task`` or a shorthand.
        shorthands: whole-key aliases; default :data:`SHORTHANDS` (``benchmark=standard-proxy``,
            ``order=2``, ``method=seq_ft``, ``model=tiny-t5``, ...); pass ``{}`` for none (suite files).
        example: an override of this kind, quoted in the message for a malformed one.
        what: how messages name the mapping ("the config", "the suite file").

    Returns:
        A deep copy of ``raw`` with the overrides applied, in order.

    Raises:
        ConfigError: listing every malformed override (no ``=``, an empty key, a part that is not a section).
    """
    aliases = SHORTHANDS if shorthands is None else shorthands
    out = copy.deepcopy(dict(raw))
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"override {shorten(item)} has no '=' after a key; write key=value, e.g. {example}.")
            continue
        try:
            value = load_yaml_bounded(text) if text.strip() else None
        except (yaml.YAMLError, ValueError) as err:
            why = getattr(err, "problem", None) or str(err)
            problems.append(
                f"override {shorten(item)}: the value is not valid YAML ({why}); complete it (e.g. "
                f"{key}=[0.9,0.999]) or quote it in the shell."
            )
            continue
        parts = aliases.get(key, key).split(".")
        node: Any = out
        for part in parts[:-1]:
            if part in NAMED_SECTIONS and isinstance(node.get(part), str):
                node[part] = {"name": node[part]}
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override {shorten(item)}: {part!r} is not a section of {what}.")
                break
        else:
            node[parts[-1]] = value
    if problems:
        raise ConfigError(problems)
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a mapping (an empty file is an empty mapping).

    Raises:
        ConfigError: when the file is missing, unreadable or not a mapping.
    """
    p = Path(path)
    data = read_yaml(p, ConfigError, "config file", "check the path (see configs/ for examples)")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of sections, got {type(data).__name__}.")
    return data


def upgrade_config(stored: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration stored by an earlier run (``results.json``), read through the current schema.

    Fields added to clift since that run take their defaults, so the run still matches a config that
    leaves them at their defaults and can be resumed or reused (a new field's default must keep the
    earlier behaviour). A stored config the current schema rejects comes back unchanged, so a diff
    against it names what differs.

    A method config may list ``STORED_DEFAULTS``: the value a field takes when a stored config predates
    it, where that differs from the field's default for new configs (a default changed on purpose; the
    old run keeps meaning what it meant).
    """
    from clift.methods.base import METHODS

    raw = copy.deepcopy(dict(stored))
    method = raw.get("method")
    if isinstance(method, dict) and method.get("name") in METHODS:
        for key, value in getattr(METHODS.get(method["name"]).config_cls, "STORED_DEFAULTS", {}).items():
            method.setdefault(key, value)
    try:
        return RunConfig.from_dict(raw).to_dict()
    except ConfigError:
        return copy.deepcopy(dict(stored))


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    """Read, override and validate a run configuration."""
    raw = load_yaml(path) if path is not None else {}
    return RunConfig.from_dict(apply_overrides(raw, overrides))
