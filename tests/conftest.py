"""Shared test helpers (CPU, seconds each), imported by test modules as ``from ..conftest import ...``.

* runs: :func:`fixture_stream`, :func:`tiny_config`, :func:`fresh_parameters`;
* suites: :func:`tiny_suite` (a suite spec on the fixture benchmark), :func:`fake_results` (a hand-made
  results.json);
* user streams: :func:`review_rows`, :func:`write_rows`, :func:`write_stream`;
* resume: :func:`crash_at` (inject a crash after a given step), :func:`stable_results`;
* driving a method by hand (as the runner does): :class:`Driven`, :func:`drive`, :func:`train`,
  :func:`factor_weights`, :func:`logits`.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import socket
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from torch import nn

from clift.adapters import lora_layers
from clift.config import ModelConfig, RunConfig, TrainConfig
from clift.data.collate import PromptEncoder, TrainCollator
from clift.data.task import Example, Stream, Task
from clift.methods import ContinualMethod, MethodContext, Stage, build_method, build_method_config
from clift.models import load_model

FIXTURE_ROOT = Path(__file__).resolve().parents[1] / "src" / "clift" / "data" / "fixtures" / "cl_fixture"
FIXTURE_TASKS = [("SC", "toysent"), ("TC", "toytopic"), ("NLI", "toynli")]

warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")

# tiny models: thread start-up costs more than it saves, and CI machines have few cores
torch.set_num_threads(1)


ROOT = Path(__file__).resolve().parents[1]


def load_script(relative: str) -> ModuleType:
    """Import a repository script (``benchmarks/x.py``, ``scripts/y.py``; not packages) as module ``x``.

    Registered in ``sys.modules``, so dataclasses and pickling-free introspection resolve its names.
    """
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A port nothing listens on now (a fixed port collides with other torchrun jobs on the machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fixture_stream(train: int = 32, test: int = 12, names: list[str] | None = None) -> Stream:
    """The three fixture tasks read straight from their files (independent of the benchmark loader)."""
    tasks = []
    for family, name in FIXTURE_TASKS:
        if names and name not in names:
            continue
        folder = FIXTURE_ROOT / family / name
        rows = json.loads((folder / "train.json").read_text())
        test_rows = json.loads((folder / "test.json").read_text())
        tr = [Example(r["sentence"], r["label"], f"{name}/train/{i}") for i, r in enumerate(rows)]
        te = [Example(r["sentence"], r["label"], f"{name}/test/{i}") for i, r in enumerate(test_rows)]
        tasks.append(
            Task(
                name,
                family,
                "Choose one from the option.\n",
                tuple(json.loads((folder / "labels.json").read_text())),
                True,
                tr[:train],
                tr[train : train + 8],
                te[:test],
            )
        )
    return Stream("fixture-test", tasks)


def tiny_config(
    tmp_path: Path, model: str = "tiny-llama", method: str | dict = "seq_lora", **sections: Any
) -> dict[str, Any]:
    """A run config for a tiny model: a few steps per task, rank evaluation, no progress bars."""
    cfg: dict[str, Any] = {
        "name": "test",
        "output_dir": str(tmp_path / "run"),
        "model": {"name": model},
        "method": method if isinstance(method, dict) else {"name": method},
        "train": {"max_steps": 3, "batch_size": 4, "lr": 5e-3},
        "eval": {"mode": "rank", "batch_size": 16},
        "log": {"progress": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def two_tasks() -> Stream:
    """The first two fixture tasks (sentiment, then topic)."""
    return fixture_stream(names=["toysent", "toytopic"])


def run_method(cfg: dict[str, Any], stream: Stream) -> tuple[Any, Any]:
    """Run ``cfg`` on ``stream``; ``(RunResult, the runner's method object)``."""
    from clift.runner import Runner

    runner = Runner(RunConfig.from_dict(cfg), stream=stream)
    return runner.run(), runner.method


@pytest.fixture
def stream() -> Stream:
    return fixture_stream()


def fresh_parameters(model: str = "tiny-llama") -> dict[str, torch.Tensor]:
    """The parameters of a freshly loaded ``model``, by name (what training must or must not change)."""
    return dict(load_model(ModelConfig(name=model)).model.named_parameters())


# ---- suites ------------------------------------------------------------------------------------------


def tiny_suite(out: Path, methods: list[Any], **extra: Any) -> dict[str, Any]:
    """A suite spec on tiny-llama and two fixture tasks (2 steps per task), writing under ``out``."""
    return {
        "name": "t",
        "base": {
            "model": {"name": "tiny-llama"},
            "data": {"benchmark": "fixture", "tasks": ["toysent", "toytopic"], "train_per_task": 8, "test_per_task": 4},
            "train": {"max_steps": 2, "batch_size": 4, "lr": 5e-3},
            "eval": {"mode": "rank", "batch_size": 16},
            "log": {"progress": False},
            "save_adapters": False,
        },
        "methods": methods,
        "orders": [1],
        "seeds": [1],
        "output_dir": str(out),
        **extra,
    }


def fake_results(
    method: str,
    metrics: dict[str, float | None],
    *,
    order: str = "o1",
    seed: int = 1,
    total: float = 100.0,
    peaks: tuple[float, ...] = (1000.0,),
    zero_shot: list[float] | None = None,
    needs_task_id: bool = False,
    config: dict[str, Any] | None = None,
    status: str = "complete",
) -> dict[str, Any]:
    """A hand-made results.json with only the fields the suite reads."""
    return {
        "status": status,
        "run": {
            "name": f"{method}-{order}-s{seed}",
            "method": method,
            "model": "tiny-llama",
            "stream": f"fixture/{order}",
            "seed": seed,
            "needs_task_id": needs_task_id,
        },
        "zero_shot": zero_shot,
        "metrics": {"aa": None, "bwt": None, "fwt": None, "forgetting": None, **metrics},
        "timings": {"stages": [{"peak_memory_mb": p} for p in peaks], "total_seconds": total},
        "config": config or {},
    }


# ---- user streams ------------------------------------------------------------------------------------

POS = ["lovely", "great", "superb", "fun", "bright", "warm"]
NEG = ["awful", "dull", "broken", "sad", "cold", "grim"]


def review_rows(n: int, tag: str) -> list[dict[str, str]]:
    """``n`` distinct short reviews, alternating labels; ``tag`` keeps train and test texts apart."""
    rows = []
    for i in range(n):
        good = i % 2 == 0
        word = (POS if good else NEG)[i % 6]
        rows.append({"text": f"the {tag} item {i} was {word}", "label": "positive" if good else "negative"})
    return rows


def write_rows(path: Path, rows: list[dict], fmt: str | None = None) -> Path:
    """Write ``rows`` as .json (indented list), .jsonl or .csv, by extension."""
    fmt = fmt or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        path.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return path


def write_stream(folder: Path, fmt: str, n_train: int = 40, n_test: int = 12, **task: object) -> Path:
    """A one-task stream YAML whose train and test files are in format ``fmt``."""
    write_rows(folder / f"train.{fmt}", review_rows(n_train, "train"))
    write_rows(folder / f"test.{fmt}", review_rows(n_test, "test"))
    entry = {"name": "reviews", "train": f"train.{fmt}", "test": f"test.{fmt}", "text_field": "text", **task}
    path = folder / "stream.yaml"
    path.write_text(json.dumps({"name": f"my-{fmt}", "tasks": [entry]}))  # JSON is valid YAML
    return path


# ---- resume ----
VOLATILE = {"timings", "resumes", "git", "config"}  # config differs only in output_dir


def stable_results(results: dict) -> dict:
    """results.json without what differs between an interrupted and an uninterrupted run."""
    return {k: v for k, v in results.items() if k not in VOLATILE}


class Crash(RuntimeError):
    """The failure :func:`crash_at` injects."""


def crash_at(monkeypatch, stage_index: int, step: int):
    """Make the method raise right after optimizer step ``step`` of stage ``stage_index`` (once)."""
    from clift.runner import Runner

    real = Runner.train_stage
    fired = []

    def wrapped(self, model, method, stage, resume=None):
        if stage.index == stage_index and not fired:
            orig_after_step = method.after_step
            count = [resume.step if resume is not None else 0]

            def after_step(m):
                orig_after_step(m)
                count[0] += 1
                if count[0] == step:
                    fired.append(True)
                    raise Crash("injected")

            method.after_step = after_step
            try:
                return real(self, model, method, stage, resume)
            finally:
                del method.after_step
        return real(self, model, method, stage, resume)

    monkeypatch.setattr(Runner, "train_stage", wrapped)


# ---- driving a method by hand ----
@dataclass
class Driven:
    method: ContinualMethod
    model: nn.Module
    stages: list[Stage]
    batches: list[dict[str, torch.Tensor]]  # one fixed batch per stage


def drive(name: str, tmp_path: Path, model: str = "tiny-llama", lr: float = 5e-3, **options: Any) -> Driven:
    """Build method ``name`` on ``model`` as the runner does (setup, attach, stages) plus a batch per task."""
    torch.manual_seed(0)
    loaded = load_model(ModelConfig(name=model))
    stream = fixture_stream()
    method = build_method(build_method_config({"name": name, **options}))
    collate = TrainCollator(PromptEncoder(loaded.tokenizer, loaded.kind, 64, 8))
    method.setup(
        MethodContext(
            kind=loaded.kind,
            model_type=loaded.model.config.model_type,
            tokenizer=loaded.tokenizer,
            stream=stream,
            run_dir=tmp_path,
            train=TrainConfig(lr=lr),
            seed=0,
            device=torch.device("cpu"),
            collate=collate,
        )
    )
    m = method.attach(loaded.model)
    batches = [collate([(t, ex) for ex in t.train[:4]]) for t in stream]
    return Driven(method, m, method.stages(stream), batches)


def train(d: Driven, stage: Stage, steps: int) -> list[float]:
    """``before_task`` then ``steps`` optimizer steps on the stage's batch; returns the task losses."""
    d.model = d.method.before_task(d.model, stage)
    d.model.train()
    opt = d.method.make_optimizer(d.method.param_groups(d.model))
    losses = []
    for _ in range(steps):
        out = d.model(**d.batches[stage.index])
        extra = d.method.loss(d.model, d.batches[stage.index], out)
        (out.loss if extra is None else out.loss + extra).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
    return losses


def factor_weights(model: nn.Module, adapter: str = "default") -> dict[str, torch.Tensor]:
    """The current (possibly parametrized) A and B weights of every LoRA layer, detached."""
    out = {}
    with torch.no_grad():
        for name, layer in lora_layers(model):
            out[f"{name}.A"] = layer.lora_A[adapter].weight.detach().clone()
            out[f"{name}.B"] = layer.lora_B[adapter].weight.detach().clone()
    return out


@torch.no_grad()
def logits(model: nn.Module, seed: int = 1) -> torch.Tensor:
    """Eval-mode outputs on a fixed random input (decoder input for seq2seq models)."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 700, (2, 12), generator=g)
    kw: dict[str, Any] = {"input_ids": ids}
    if getattr(model.config, "is_encoder_decoder", False):
        kw["decoder_input_ids"] = ids[:, :5]
    out = model(**kw).logits
    model.train(was)
    return out
