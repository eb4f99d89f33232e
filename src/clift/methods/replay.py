"""Replay: keep a few training examples of every finished task and train on them again later.

Experience replay with a per-task episodic memory (Chaudhry et al., "On Tiny Episodic Memories in
Continual Learning", arXiv:1902.10486; for language models, e.g. Scialom et al., "Fine-tuned Language
Models are Continual Learners", EMNLP 2022, which rehearses 1% of earlier data). After task t,
``memory_per_task`` of its training examples are chosen at random (seeded) and stored; every later
stage trains on its own task's examples plus the whole memory, shuffled together. As in the O-LoRA
paper's baselines, Replay runs on top of one LoRA trained through all tasks (``seq_lora``);
``trains: full`` replays under full fine-tuning instead.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from clift.adapters import LoraFields
from clift.errors import MethodStateError
from clift.methods import legacy_state
from clift.methods.base import MethodConfig, Stage, check_state
from clift.methods.sequential import SequentialBaseline, SequentialFields

if TYPE_CHECKING:
    from clift.data.task import Example, Task


@dataclass
class ReplayConfig(SequentialFields, LoraFields, MethodConfig):
    """Replay on top of a sequential LoRA (LoRA fields: see :class:`clift.adapters.LoraFields`).

    Attributes:
        memory_per_task: training examples stored per finished task (all of them when the task has
            fewer). Default 50: about 1% of a full standard-benchmark task (4,000–5,000 training
            examples), the rehearsal rate of Scialom et al. 2022; the O-LoRA paper does not state the
            size behind its Replay row. With a reduced ``data.train_per_task`` set it to your budget.
    """

    memory_per_task: int = field(default=50, metadata={"help": "examples stored per finished task"})

    def problems(self) -> list[str]:
        p = [] if self.trains == "full" else self.lora_problems()
        if self.memory_per_task < 0:
            p.append(
                f"method.memory_per_task must be >= 0, got {self.memory_per_task}; 0 stores nothing (plain seq_lora)."
            )
        return p


def example_crc(example: Example) -> int:
    """A 32-bit checksum of an example's id and text, stored next to memory indices for resume checks."""
    return zlib.crc32(f"{example.id}\n{example.sentence}\n{example.label}".encode())


def select_memory(n: int, k: int, seed: int, task_index: int) -> list[int]:
    """``min(k, n)`` distinct indices in ``range(n)``, sorted, chosen at random from (seed, task_index).

    The choice depends only on these four numbers (not on the global RNG or on the order tasks were
    trained in), so a resumed or repeated run stores the same examples.
    """
    if k >= n:
        return list(range(n))
    rng = np.random.default_rng([seed, task_index])
    return sorted(int(i) for i in rng.choice(n, size=k, replace=False))


class Replay(SequentialBaseline):
    """Sequential LoRA (or full fine-tuning) whose later stages also train on a memory of earlier tasks.

    ``train_examples(stage)`` returns the stage's own examples followed by the memory of every earlier
    task; the runner's loader shuffles them together. The memory therefore dilutes each batch by
    ``|memory| / (|memory| + |new task|)``; with ``train.max_steps`` the number of steps is unchanged,
    with ``train.epochs`` each epoch grows by ``|memory|`` examples.

    The memory is kept as indices into each task's training split (see :meth:`state_dict`).
    """

    config_cls = ReplayConfig
    summary = "Replay: seq_lora + a per-task memory of examples mixed into later tasks"

    def __init__(self, config: ReplayConfig) -> None:
        super().__init__(config)
        self.config: ReplayConfig = config
        #: stream task index -> indices into that task's training split, in stored order
        self.memory: dict[int, list[int]] = {}
        #: the checksums the memory was stored with (checked against the stream after a resume)
        self._crcs: dict[int, list[int]] = {}
        self._verified = False

    def _tasks(self) -> list[Task]:
        if self.ctx is None:
            raise RuntimeError("Replay needs the run context (the stream); call setup(ctx) first.")
        return self.ctx.stream.tasks

    def memory_examples(self) -> list[tuple[Task, Example]]:
        """Every stored (task, example) pair, task by task in stream order."""
        tasks = self._tasks()
        if not self._verified:
            self._verify(tasks)
        return [(tasks[t], tasks[t].train[i]) for t in sorted(self.memory) for i in self.memory[t]]

    def train_examples(self, stage: Stage) -> list[tuple[Task, Example]]:
        return super().train_examples(stage) + self.memory_examples()

    def after_task(self, model: nn.Module, stage: Stage) -> nn.Module:
        seed = self.ctx.seed if self.ctx is not None else 0
        tasks = self._tasks()
        for task in stage.tasks:
            j = stage.task_index if len(stage.tasks) == 1 else next(i for i, t in enumerate(tasks) if t is task)
            idx = select_memory(len(task.train), self.config.memory_per_task, seed, j)
            self.memory[j] = idx
            self._crcs[j] = [example_crc(task.train[i]) for i in idx]
        return model

    def _verify(self, tasks: list[Task]) -> None:
        for j, idx in self.memory.items():
            if j >= len(tasks) or any(i >= len(tasks[j].train) for i in idx):
                raise MethodStateError(
                    "replay",
                    f"memory.{j}",
                    f"examples the current stream has (it refers to {idx[:3]}… of task {j})",
                    "resume with the same benchmark, order, data budget and data seed.",
                )
            if [example_crc(tasks[j].train[i]) for i in idx] != self._crcs.get(j):
                raise MethodStateError(
                    "replay",
                    f"memory_crc.{j}",
                    f"the checksums of the stream's examples of task {j} ({tasks[j].name!r})",
                    "resume with the same data settings (data.*, seed).",
                )
        self._verified = True

    def stats(self) -> dict[str, Any]:
        """The memory size per task, and per stage how many own and replayed examples it trained on
        (derived from the memory, so a resumed run reports the same)."""
        if self.ctx is None:
            return {"memory_per_task": self.config.memory_per_task, "trains": self.config.trains}
        tasks = self.ctx.stream.tasks
        # a task has a memory entry (possibly empty) exactly when its stage has been trained
        per_stage = [
            {
                "stage": stage.name,
                "own": sum(len(t.train) for t in stage.tasks),
                "memory": sum(len(v) for j, v in self.memory.items() if j < stage.task_index),
            }
            for stage in self.stages(self.ctx.stream)
            if stage.task_index in self.memory
        ]
        return {
            "memory_per_task": self.config.memory_per_task,
            "trains": self.config.trains,
            "memory": {tasks[j].name: len(v) for j, v in sorted(self.memory.items()) if j < len(tasks)},
            "stage_examples": per_stage,
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"memory": {task index: [indices into its train split]}, "memory_crc": {task index: [CRC32 of
        each stored example]}}``; the checksums are checked against the stream on resume."""
        return {
            "memory": {j: list(idx) for j, idx in self.memory.items()},
            "memory_crc": {j: list(self._crcs[j]) for j in self.memory},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the flat format of earlier versions loads too); the examples are
        checked against the stream before first use.

        Raises:
            MethodStateError: for missing or unexpected keys, or a memory without its checksums.
        """
        if legacy_state.is_flat(state):
            state = legacy_state.replay(state)
        check_state("replay", state, {"memory": dict, "memory_crc": dict})
        memory = {int(j): [int(i) for i in idx] for j, idx in state["memory"].items()}
        crcs = {int(j): [int(c) for c in v] for j, v in state["memory_crc"].items()}
        bad = [j for j in memory if j not in crcs or len(crcs[j]) != len(memory[j])] + sorted(set(crcs) - set(memory))
        if bad:
            raise MethodStateError(
                "replay", f"memory_crc.{bad[0]}", f"one checksum per stored example of task {bad[0]}, and no other"
            )
        self.memory, self._crcs, self._verified = memory, crcs, False
