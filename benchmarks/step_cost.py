"""Training-step time and peak memory of continual methods, measured side by side on one model and batch.

Every method is built through the registry and driven only through its hooks (``setup``, ``attach``,
``stages``, ``before_task``, ``param_groups``, ``make_optimizer``, ``loss``, ``after_backward``,
``after_step``), as the runner does. Each method first trains the tasks before ``--stage N`` (N − 1
finished tasks, ``--pre-steps`` steps each, default N = 2) and is then measured in task N, so methods
that act from the second task on (DEAL's modules, projections, frozen earlier adapters) are active when
the cost is measured; ``--stage 4`` / ``--stage 15`` show how the cost grows with the number of tasks
(the three fixture tasks are repeated under new names when N exceeds them).
A method may be listed twice under different labels, ``label=method``, with its own
``--set label.key=value``.

Time: all methods live in one process; after ``--warmup`` steps each, steps are measured alternately
(A, B, C, A, B, C, …) so that load changes on a shared machine hit every method alike; the median and the
minimum are reported (on a busy shared CPU the minimum, the least-disturbed step, is the steadier
estimate of a method's own cost). Memory: each method runs in a fresh subprocess. On CUDA the peak is
``torch.cuda.max_memory_allocated``; on CPU it is the peak resident set size (``VmHWM``), reset through
``/proc/self/clear_refs`` after the model is set up, with large allocations forced through ``mmap`` so
that freed memory is returned to the system and the peak is not hidden by the allocator's reuse. Both the
training-step increment (peak minus memory before the first measured step) and the total peak are shown.

Usage::

    python benchmarks/step_cost.py --methods seq_lora,deal,deal_code --model smollm2-135m --steps 5
    python benchmarks/step_cost.py --model tiny-llama --steps 2          # quick check
    python benchmarks/step_cost.py --methods seq_lora,inc_lora,gorp --stage 15 --pre-steps 1 --memory off
    python benchmarks/step_cost.py --methods seq_lora,deal,deal_ret=deal --set deal_ret.structure=retention --stage 3
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from clift.config import DataConfig, ModelConfig, TrainConfig, apply_overrides
from clift.data.benchmarks import load_stream
from clift.data.collate import IGNORE_INDEX, PromptEncoder, TrainCollator
from clift.data.task import Stream
from clift.methods import ContinualMethod, MethodContext, Stage, build_method, build_method_config
from clift.models import load_model

BASELINE = "seq_lora"


@dataclass
class Harness:
    """One method on its own copy of the model, positioned at the start of the measured stage."""

    name: str
    method: ContinualMethod
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    params: list[torch.nn.Parameter]
    stage: Stage


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--methods",
        default="seq_lora,deal,deal_code",
        help="comma-separated registered methods, or label=method to list one method twice with other options",
    )
    p.add_argument("--model", default="smollm2-135m", help="model alias, folder or hub id")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=128, help="tokens per example (causal) / source (seq2seq)")
    p.add_argument("--steps", type=int, default=5, help="measured steps per method")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured stage-1 steps per method")
    p.add_argument("--pre-steps", type=int, default=2, help="steps of each finished task before the timed one")
    p.add_argument("--stage", type=int, default=2, help="time task N (1-based): N - 1 finished tasks before it")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="METHOD.KEY=VALUE",
        help="method option by label, e.g. deal.train_factors=false (repeatable)",
    )
    p.add_argument("--memory", default="subprocess", choices=["subprocess", "off"])
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # memory worker mode: one method
    args = p.parse_args(argv)
    entries = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not entries:
        p.error("--methods is empty; give registered method names, e.g. seq_lora,deal")
    # label -> registered method name ("deal_ret=deal" lists deal a second time under the label deal_ret)
    args.method_names = dict(tuple(e.split("=", 1)) if "=" in e else (e, e) for e in entries)
    args.method_list = list(args.method_names)
    if len(args.method_list) != len(entries):
        p.error(f"--methods lists a label twice ({args.methods}); give each entry its own label=method")
    for key in ("batch_size", "seq_len", "steps", "stage"):
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    return args


def method_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The ``--set`` options of the method labelled ``name`` as a config mapping."""
    mine = [s.split(".", 1)[1] for s in args.set if s.split(".", 1)[0] == name and "." in s]
    return apply_overrides({}, mine)


def device_of(args: argparse.Namespace) -> torch.device:
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def make_batch(tok: Any, kind: str, args: argparse.Namespace, device: torch.device) -> dict[str, torch.Tensor]:
    """A fixed random batch (same for every method): prompt-masked labels as the collator makes."""
    g = torch.Generator().manual_seed(args.seed)
    low, high = 10, max(11, min(len(tok), 32000))
    ids = torch.randint(low, high, (args.batch_size, args.seq_len), generator=g)
    mask = torch.ones_like(ids)
    if kind == "seq2seq":
        labels = torch.randint(low, high, (args.batch_size, 8), generator=g)
    else:
        labels = ids.clone()
        labels[:, : args.seq_len // 2] = IGNORE_INDEX  # loss on the "answer" half only
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def compute_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, Any]:
    outputs = model(**batch)
    return outputs.loss, outputs


def build(name: str, args: argparse.Namespace, device: torch.device, workdir: Path) -> Harness:
    """Load the model, build the method labelled ``name``, train the stages before ``--stage``, enter it."""
    torch.manual_seed(args.seed)
    loaded = load_model(ModelConfig(name=args.model, device="cpu" if device.type == "cpu" else "cuda"))
    model = loaded.model.to(device)
    cfg = build_method_config({"name": args.method_names.get(name, name), **method_options(args, name)})
    method = build_method(cfg)
    train = TrainConfig(lr=args.lr, batch_size=args.batch_size)
    stream = stream_of(args.stage, args.seed)
    encoder = PromptEncoder(loaded.tokenizer, loaded.kind, args.seq_len, 16)
    ctx = MethodContext(
        kind=loaded.kind,
        model_type=getattr(model.config, "model_type", ""),
        tokenizer=loaded.tokenizer,
        stream=stream,
        run_dir=workdir / name,
        train=train,
        seed=args.seed,
        device=device,
        collate=TrainCollator(encoder),
        compute_loss=compute_loss,
    )
    method.setup(ctx)
    model = method.attach(model).to(device)
    stages = method.stages(stream)
    if len(stages) < args.stage:
        raise SystemExit(f"method {name!r} has {len(stages)} stage(s); --stage {args.stage} needs that many.")
    batch = make_batch(loaded.tokenizer, loaded.kind, args, device)
    for done in stages[: args.stage - 1]:
        h = _enter(name, method, model, done)
        for _ in range(args.pre_steps):
            step(h, batch)
        model = method.after_task(h.model, done)
    return _enter(name, method, model, stages[args.stage - 1])


def stream_of(n_tasks: int, seed: int) -> Stream:
    """The fixture stream, its tasks repeated under new names up to ``n_tasks`` (the data is irrelevant here)."""
    stream = load_stream(DataConfig(benchmark="fixture"), seed)
    tasks = list(stream.tasks)
    while len(tasks) < n_tasks:
        src = stream.tasks[len(tasks) % len(stream.tasks)]
        tasks.append(dataclasses.replace(src, name=f"{src.name}{len(tasks)}"))
    return Stream(stream.name, tasks)


def _enter(name: str, method: ContinualMethod, model: torch.nn.Module, stage: Stage) -> Harness:
    model = method.before_task(model, stage)
    model.to(next(model.parameters()).device)
    model.train()
    groups = method.param_groups(model)
    opt = method.make_optimizer(groups)
    params = [p for g in groups for p in g["params"] if p.requires_grad]
    return Harness(name, method, model, opt, params, stage)


def step(h: Harness, batch: dict[str, torch.Tensor]) -> float:
    """One optimizer step exactly as the runner makes it (no accumulation); returns seconds."""
    sync = torch.cuda.synchronize if batch["input_ids"].is_cuda else (lambda: None)
    sync()
    t0 = time.perf_counter()
    task_loss, outputs = compute_loss(h.model, batch)
    extra = h.method.loss(h.model, batch, outputs)
    loss = task_loss if extra is None else task_loss + extra
    loss.backward()
    torch.nn.utils.clip_grad_norm_(h.params, 1.0)
    h.method.after_backward(h.model)
    h.optimizer.step()
    h.optimizer.zero_grad(set_to_none=True)
    h.method.after_step(h.model)
    sync()
    return time.perf_counter() - t0


def measure_time(args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    """Median-ready step times per method, measured alternately after warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        harnesses = [build(m, args, device, Path(tmp)) for m in args.method_list]
        ctx = harnesses[0].method.ctx
        assert ctx is not None  # set by build()
        batch = make_batch(ctx.tokenizer, ctx.kind, args, device)
        for h in harnesses:
            for _ in range(args.warmup):
                step(h, batch)
        times: dict[str, list[float]] = {h.name: [] for h in harnesses}
        for _ in range(args.steps):
            for h in harnesses:
                times[h.name].append(step(h, batch))
    return times


# ---- memory (one fresh process per method) -----------------------------------------------------


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {key}; peak RSS needs Linux.")


def _release_freed_memory() -> None:
    # not glibc (OSError / AttributeError): the peak may then include reused free memory
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure_memory_here(args: argparse.Namespace, name: str, device: torch.device) -> dict[str, float]:
    """Peak memory of ``--steps`` steps of the measured stage of ``name`` in this process (MiB)."""
    with tempfile.TemporaryDirectory() as tmp:
        h = build(name, args, device, Path(tmp))
        ctx = h.method.ctx
        assert ctx is not None  # set by build()
        batch = make_batch(ctx.tokenizer, ctx.kind, args, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            for _ in range(max(1, args.steps)):
                step(h, batch)
            peak = torch.cuda.max_memory_allocated(device)
            return {"base_mb": base / 2**20, "peak_mb": peak / 2**20, "increment_mb": (peak - base) / 2**20}
        _release_freed_memory()
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        base = _proc_status_kb("VmRSS")
        for _ in range(max(1, min(args.steps, 3))):
            step(h, batch)
        peak = _proc_status_kb("VmHWM")
        return {"base_mb": base / 1024, "peak_mb": peak / 1024, "increment_mb": (peak - base) / 1024}


def measure_memory(args: argparse.Namespace, argv: list[str], name: str) -> dict[str, float]:
    """Run :func:`measure_memory_here` for ``name`` in a fresh subprocess and return its numbers."""
    env = dict(os.environ)
    # a fixed mmap threshold: big tensors are mmapped and unmapped on free, so RSS tracks live memory
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "65536")
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", name]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"memory worker for {name!r} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- report --------------------------------------------------------------------------------------


def report(times: dict[str, list[float]], memory: dict[str, dict[str, float]]) -> tuple[str, dict[str, Any]]:
    """The printed table and the JSON summary (ratios against ``seq_lora`` when it was measured)."""
    med = {m: statistics.median(t) for m, t in times.items()}
    low = {m: min(t) for m, t in times.items()}
    # the mean shows periodic costs the median hides (a GaLore projector refresh every T steps)
    avg = {m: statistics.fmean(t) for m, t in times.items()}
    base = BASELINE if BASELINE in med else None
    rows = {}
    for m in med:
        row: dict[str, Any] = {
            "step_s_median": med[m],
            "step_s_min": low[m],
            "step_s_mean": avg[m],
            "step_s_all": times[m],
        }
        if base:
            row["time_ratio"] = med[m] / med[base]
            row["time_ratio_mean"] = avg[m] / avg[base]
            row["time_ratio_min"] = low[m] / low[base]
        if m in memory:
            row.update(memory[m])
            if base and base in memory:
                row["increment_ratio"] = memory[m]["increment_mb"] / max(memory[base]["increment_mb"], 1e-9)
                row["peak_ratio"] = memory[m]["peak_mb"] / memory[base]["peak_mb"]
        rows[m] = row

    def fmt(x: Any, spec: str) -> str:
        width = int(spec.split(".")[0])
        return "-".rjust(width) if x is None else format(x, spec)

    head = (
        f"{'method':<12} {'step s':>8} {'x time':>7} {'mean s':>8} {'x mean':>7} {'min s':>8} {'x min':>7} "
        f"{'step MiB':>9} {'x step':>7} {'peak MiB':>9} {'x peak':>7}"
    )
    lines = [head, "-" * len(head)]
    for m, r in rows.items():
        lines.append(
            f"{m:<12} {fmt(r['step_s_median'], '8.3f')} {fmt(r.get('time_ratio'), '7.3f')} "
            f"{fmt(r['step_s_mean'], '8.3f')} {fmt(r.get('time_ratio_mean'), '7.3f')} "
            f"{fmt(r['step_s_min'], '8.3f')} {fmt(r.get('time_ratio_min'), '7.3f')} "
            f"{fmt(r.get('increment_mb'), '9.1f')} {fmt(r.get('increment_ratio'), '7.3f')} "
            f"{fmt(r.get('peak_mb'), '9.1f')} {fmt(r.get('peak_ratio'), '7.3f')}"
        )
    if base is None:
        lines.append(f"(no ratios: include {BASELINE} in --methods)")
    return "\n".join(lines), rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    device = device_of(args)
    if args.worker:
        print(json.dumps(measure_memory_here(args, args.worker, device)))
        return {}
    t0 = time.time()
    times = measure_time(args, device)
    memory = {}
    if args.memory == "subprocess":
        memory = {m: measure_memory(args, argv, m) for m in args.method_list}
    table, rows = report(times, memory)
    print(
        f"model={args.model} device={device.type} batch={args.batch_size}x{args.seq_len} stage={args.stage} "
        f"steps={args.steps} (alternating, median) warmup={args.warmup} threads={torch.get_num_threads()}"
    )
    print(table)
    print(f"({time.time() - t0:.0f} s)")
    summary = {"args": {k: v for k, v in vars(args).items() if k != "worker"}, "results": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
