"""The method interface: one small class with lifecycle hooks, plus its config dataclass and registry.

A continual run calls, for a method ``m``::

    m.setup(ctx)                       # once: what the run knows (model kind, tokenizer, stream, paths)
    model = m.attach(model)            # once: inject adapters / choose what can train
    for stage in m.stages(stream):     # one stage per task (MTL: one stage with every task)
        model = m.before_task(model, stage)
        groups = m.param_groups(model) ; opt = m.make_optimizer(groups)
        for each optimizer step:
            loss = task_loss + m.loss(model, batch, outputs)     # extra penalty, returned
            backward; clip; m.after_backward(model); opt.step()
        m.after_task(model, stage)
        for every task j of the stream:
            with m.eval_scope(model, j): evaluate task j        # row `stage` of R
        m.save_task(model, stage, folder)

Every hook has a do-nothing default, so a method overrides only what it changes. Hooks return values
instead of mutating the trainer.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from clift.errors import ConfigError, MethodStateError
from clift.optim.factory import make_adamw
from clift.registry import Registry
from clift.safety import shorten
from clift.schema import Validated, build_dataclass, to_dict

if TYPE_CHECKING:
    from clift.data.task import Example, Stream, Task


@dataclass
class MethodConfig(Validated):
    """Base class of every method's config. Subclasses add documented fields with defaults.

    Class attributes:
        PRESETS: named bundles of field values (``method.preset: t5-standard``) applied before the
            user's own keys.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    _EXTRA_KEYS: ClassVar[tuple[str, ...]] = ("name", "preset")

    @classmethod
    def method_name(cls) -> str:
        return _CONFIG_TO_NAME.get(cls, cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


@dataclass
class Stage:
    """One training stage of a run; row ``index`` of the accuracy matrix is measured after it.

    Attributes:
        index: 0-based position.
        name: the task name (or ``joint`` for joint training).
        tasks: the tasks whose training data this stage uses (one, except for joint training).
        task_index: position of the (single) task in the stream, or -1 for joint stages.
    """

    index: int
    name: str
    tasks: list[Task]
    task_index: int = -1


@dataclass
class MethodContext:
    """What a method may know about the run. Filled by the runner before :meth:`ContinualMethod.attach`.

    Attributes:
        kind: ``causal`` or ``seq2seq``.
        model_type: the model config's ``model_type`` ("llama", "t5").
        tokenizer: the run's tokenizer.
        stream: the task stream.
        run_dir: the run's output folder.
        train: the run's ``TrainConfig``.
        seed: the run seed.
        device: where the model lives.
        collate: ``collate(list[(Task, Example)]) -> batch dict`` (training format).
        compute_loss: ``compute_loss(model, batch) -> (loss, outputs)`` (the task loss).
        accelerator: the run's ``accelerate.Accelerator``.
    """

    kind: str
    model_type: str
    tokenizer: Any
    stream: Stream
    run_dir: Path
    train: Any
    seed: int
    device: torch.device
    collate: Any = None
    compute_loss: Any = None
    accelerator: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class ContinualMethod:
    """Base class of continual methods. All hooks are optional no-ops (see the module docstring).

    Args:
        config: this method's config dataclass instance.
    """

    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    #: one-line description for ``clift ls methods``
    summary: ClassVar[str] = ""
    #: whether evaluation needs the task id (``per_task``): reported in results and ``clift ls``
    needs_task_id: ClassVar[bool] = False

    def __init__(self, config: MethodConfig) -> None:
        self.config = config
        self.ctx: MethodContext | None = None

    # ---- set-up -------------------------------------------------------------------------------
    def setup(self, ctx: MethodContext) -> None:
        """Receive the run context (called once, before :meth:`attach`)."""
        self.ctx = ctx

    def attach(self, model: nn.Module) -> nn.Module:
        """Prepare the base model (inject adapters, freeze weights) and return the model to train."""
        return model

    def stages(self, stream: Stream) -> list[Stage]:
        """The training stages: by default one per task, in stream order."""
        return [Stage(i, t.name, [t], i) for i, t in enumerate(stream.tasks)]

    # ---- per task -----------------------------------------------------------------------------
    def before_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """Called before training ``stage`` (add or freeze adapters). Returns the model to train."""
        return model

    def train_examples(self, stage: Stage) -> list[tuple[Task, Example]]:
        """The (task, example) pairs trained on in ``stage``; replay-style methods add memory here."""
        return [(task, ex) for task in stage.tasks for ex in task.train]

    def param_groups(self, model: nn.Module) -> list[dict[str, Any]]:
        """Optimizer parameter groups. Default: every parameter with ``requires_grad``, one group."""
        params = [p for p in model.parameters() if p.requires_grad]
        return [{"params": params}] if params else []

    def make_optimizer(self, groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
        """Build the optimizer for one stage (a fresh one per stage). Default: AdamW with ``train``."""
        assert self.ctx is not None
        return make_adamw(groups, self.ctx.train)

    # ---- per step -----------------------------------------------------------------------------
    def loss(self, model: nn.Module, batch: dict[str, torch.Tensor], outputs: Any) -> torch.Tensor | None:
        """An extra loss term added to the task loss (a penalty); ``None`` for none."""
        return None

    def after_backward(self, model: nn.Module) -> None:
        """Called once per optimizer step, after gradients are accumulated and clipped, before the step."""

    def after_step(self, model: nn.Module) -> None:
        """Called after each optimizer step."""

    # ---- after the task -----------------------------------------------------------------------
    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """Called after training ``stage`` and before its evaluation. Returns the model to evaluate."""
        return model

    def restore_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        """Rebuild the structure ``after_task`` leaves behind, without computing anything.

        Used on resume: the runner replays ``before_task`` + ``restore_task`` for every completed stage,
        then loads the checkpointed tensors and :meth:`load_state_dict`. Override when ``after_task``
        changes the model's structure (e.g. removes a parametrization); values need not be right, the
        checkpoint overwrites them.
        """
        return model

    @contextlib.contextmanager
    def eval_scope(self, model: nn.Module, task_index: int) -> Iterator[nn.Module]:
        """Context in which task ``task_index`` of the stream is evaluated; yields the model to use."""
        yield model

    def save_task(self, model: nn.Module, stage: Stage, folder: Path) -> list[Path]:
        """Save what ``stage`` learned under ``folder`` (PEFT format for adapters). Returns written paths."""
        return []

    def stats(self) -> dict[str, Any]:
        """Method-specific numbers for results.json (e.g. loss-term magnitudes, basis sizes)."""
        return {}

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """What the method needs to resume (bases, Fisher, memories, the numbers its ``stats`` report).

        Values may nest: dicts (string or integer keys), lists, tuples, numbers, strings, booleans, None
        and tensors. The checkpoint stores the tensors as safetensors and the rest as JSON
        (:func:`clift.checkpoint.split_state`), so floats come back exactly and nothing is pickled.
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (called after ``attach`` and the replay of finished stages).

        Raises:
            MethodStateError: for a state that does not fit the method, naming the key, what was
                expected there and the fix (see :func:`check_state`).
        """


#: what :func:`check_state` accepts as the expected kind of a value: a type or a tuple of types
Kind = type | tuple[type, ...]


def _kind_name(kind: Kind) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join("None" if k is type(None) else k.__name__ for k in kinds)


def check_state(
    method: str, state: Any, required: dict[str, Kind], optional: dict[str, Kind] | None = None, where: str = ""
) -> None:
    """Check that ``state`` (a method's state, or the part of it at ``where``) is a dict with every
    ``required`` key, no keys beyond ``required`` and ``optional``, and values of the given kinds.

    Args:
        method: the method's name, for the message.
        state: what to check.
        required / optional: ``{key: type or tuple of types}``.
        where: the dotted path of ``state`` inside the method's state ("" for the state itself).

    Raises:
        MethodStateError: for the first problem, naming the key, what was expected there and the fix.
    """
    optional = optional or {}
    kinds = {**required, **optional}
    allowed = ", ".join(repr(k) for k in kinds)
    if not isinstance(state, dict):
        raise MethodStateError(
            method, where or "<root>", f"a mapping with keys {allowed}, got a {type(state).__name__}"
        )

    def path(key: Any) -> str:
        return f"{where}.{key}" if where else str(key)

    for key in required:
        if key not in state:
            raise MethodStateError(method, path(key), f"this key, which is missing (keys: {allowed})")
    for key, value in state.items():
        if key not in kinds:
            raise MethodStateError(method, path(key), f"no such key (keys: {allowed})")
        if not isinstance(value, kinds[key]):
            raise MethodStateError(method, path(key), f"a {_kind_name(kinds[key])}, got a {type(value).__name__}")


# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MethodEntry:
    name: str
    config_cls: type[MethodConfig]
    method_cls: type[ContinualMethod]


METHODS: Registry[MethodEntry] = Registry("method")
_CONFIG_TO_NAME: dict[type, str] = {}


def register_method(name: str, config_cls: type[MethodConfig], method_cls: type[ContinualMethod]) -> None:
    """Register a method under ``name``.

    Raises:
        ValueError: for a bad or duplicate name, a config class that is not a ``MethodConfig`` dataclass,
            a method class that is not a ``ContinualMethod``, or a method whose ``config_cls`` differs.
    """
    if not (
        isinstance(config_cls, type) and issubclass(config_cls, MethodConfig) and dataclasses.is_dataclass(config_cls)
    ):
        raise ValueError(f"config class for {name!r} must be a dataclass subclassing MethodConfig.")
    if not (isinstance(method_cls, type) and issubclass(method_cls, ContinualMethod)):
        raise ValueError(f"method class for {name!r} must subclass ContinualMethod.")
    if method_cls.config_cls is not config_cls:
        raise ValueError(
            f"{method_cls.__name__}.config_cls is {method_cls.config_cls.__name__}, but {name!r} is being "
            f"registered with {config_cls.__name__}; set `config_cls = {config_cls.__name__}` on the method."
        )
    if config_cls in _CONFIG_TO_NAME:
        raise ValueError(f"{config_cls.__name__} is already registered as {_CONFIG_TO_NAME[config_cls]!r}.")
    METHODS.register(name, MethodEntry(name, config_cls, method_cls))
    _CONFIG_TO_NAME[config_cls] = name


def build_method_config(raw: dict[str, Any] | MethodConfig) -> MethodConfig:
    """Validate a ``method`` section (``{"name": ..., "preset": ..., **fields}``) into its config.

    Raises:
        ConfigError: unknown method (with near matches), unknown preset, unknown keys, bad values.
    """
    if isinstance(raw, MethodConfig):
        return raw
    if not isinstance(raw, dict):
        raise ConfigError(f"method: got {shorten(raw)}; expected a method name or a mapping with a `name` key.")
    data = dict(raw)
    name = data.pop("name", None)
    if name is None:
        raise ConfigError(f"method: missing `name`; available methods: {', '.join(METHODS.names())}.")
    if name not in METHODS:
        raise ConfigError(f"method.name: {METHODS.unknown_message(name)}")
    entry = METHODS.get(name)
    preset = data.pop("preset", None)
    if preset is not None:
        presets = entry.config_cls.PRESETS
        if preset not in presets:
            allowed = ", ".join(sorted(presets)) or "none (this method has no presets)"
            raise ConfigError(f"method.preset: unknown preset {shorten(preset)} for {name!r}; available: {allowed}.")
        data = {**presets[preset], **data}
    problems: list[str] = []
    cfg = build_dataclass(entry.config_cls, data, "method", problems)
    if problems:
        raise ConfigError(problems)
    return cfg


def build_method(config: MethodConfig) -> ContinualMethod:
    """Instantiate the registered method for ``config``."""
    entry = METHODS.get(config.method_name())
    return entry.method_cls(config)
