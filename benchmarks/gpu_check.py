"""GPU check: every method's step time and peak memory against plain PEFT LoRA, at the papers' model shapes.

One command, no downloads: random-weight models at Llama-3.2-1B and Llama-3.1-8B shapes and a random
T5-large, bf16, batch 8 × 512 tokens. For each shape and each method (``seq_lora``, ``inc_lora`` at stage
4, ``olora``, ``deal``, ``deal_code``, ``gorp``, ``replay``) the method and a plain PEFT LoRA live side by
side in one process and their optimizer steps are timed alternately (LoRA, method, LoRA, method, …), so
load changes hit both alike; peak memory is each one's own resident memory (weights, adapters, optimizer
state) plus the largest increment of its steps (``torch.cuda.max_memory_allocated``). Also: LoRA with
gradient checkpointing on vs off, and QLoRA (4-bit base) vs LoRA (1B shape and T5-large; quantizing the 8B
shape needs a 16 GB round trip that does not fit the time budget). Then a 20-step two-task run per method
on the 1B shape through ``clift.run`` checks that losses are finite and that a run interrupted after a
mid-task checkpoint resumes to the same result.

Writes ``gpu-check.json`` and ``gpu-check.md`` into ``--out`` and prints the table, with DEAL's reported
cost of its released code (1.77× LoRA's training time, +12 % memory) beside our ``deal`` and ``deal_code``.

Usage::

    python benchmarks/gpu_check.py --out results/gpu-check      # one H100/H200: about 6-8 minutes
    python benchmarks/gpu_check.py --tiny --out /tmp/gpu-check   # the same path on CPU with tiny shapes
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_cost import Harness, _enter, compute_loss, make_batch, step

import clift
from clift.config import ModelConfig, TrainConfig
from clift.data.collate import PromptEncoder, TrainCollator
from clift.data.task import Example, Stream, Task
from clift.methods import MethodContext, build_method, build_method_config
from clift.models import MODELS, LoadedModel, ModelAlias, tiny_tokenizer

METHODS = ["seq_lora", "inc_lora", "olora", "deal", "deal_code", "gorp", "replay"]
MEASURED_STAGE = {"inc_lora": 4}  # inc_lora is measured with four earlier adapters in place; others at stage 1
DEAL_PAPER = {"time_ratio": 1.77, "memory_ratio": 1.12}
SHAPES = {
    "llama-1b": ("llama", {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "heads": 32}),
    "llama-8b": ("llama", {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "heads": 32}),
    "t5-large": ("t5", {"d_model": 1024, "d_ff": 4096, "num_layers": 24, "num_heads": 16}),
}
TINY = {
    "llama-1b": ("llama", {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "heads": 4}),
    "llama-8b": ("llama", {"hidden_size": 96, "intermediate_size": 192, "num_hidden_layers": 2, "heads": 4}),
    "t5-large": ("t5", {"d_model": 64, "d_ff": 128, "num_layers": 2, "num_heads": 4}),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (float32, batch 2 × 32): a smoke test")
    p.add_argument("--out", default="runs/gpu-check", help="folder for gpu-check.json and gpu-check.md")
    p.add_argument("--shapes", default="llama-1b,llama-8b,t5-large", help="comma-separated shapes")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods")
    p.add_argument("--steps", type=int, default=5, help="measured steps per method (alternating with LoRA)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--run-steps", type=int, default=20, help="steps of the two-task run (split over the tasks)")
    args = p.parse_args(argv)
    args.device = torch.device("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    args.dtype = torch.float32 if args.device.type == "cpu" else torch.bfloat16
    args.batch_size, args.seq_len = (2, 32) if args.tiny else (8, 512)
    args.shape_list, args.method_list = args.shapes.split(","), args.methods.split(",")
    args.seed, args.lr, args.set, args.pre_steps = 0, 1e-4, [], 1
    return args


# ---- random models, registered as model aliases so clift.run can load them -------------------------


def _build(kind: str, dims: dict[str, int], vocab: int, tok: Any) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM, T5Config, T5ForConditionalGeneration

    if kind == "llama":
        conf = LlamaConfig(
            vocab_size=vocab,
            hidden_size=dims["hidden_size"],
            intermediate_size=dims["intermediate_size"],
            num_hidden_layers=dims["num_hidden_layers"],
            num_attention_heads=dims["heads"],
            num_key_value_heads=max(1, dims["heads"] // 4),
            max_position_embeddings=4096,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        return LlamaForCausalLM(conf)
    conf = T5Config(
        vocab_size=vocab,
        d_kv=64,
        num_decoder_layers=dims["num_layers"],
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        **dims,
    )
    return T5ForConditionalGeneration(conf)


def register_shapes(args: argparse.Namespace) -> None:
    """Model aliases ``gpu-check-<shape>``: random weights built directly on the device in the check's dtype."""
    table = TINY if args.tiny else SHAPES
    for shape, (kind, dims) in table.items():
        name = f"gpu-check-{shape}"
        if name in MODELS:
            continue
        vocab = None if args.tiny else (128256 if kind == "llama" else 32128)

        def loader(
            cfg: ModelConfig, kind: str = kind, dims: dict = dims, vocab: int | None = vocab, name: str = name
        ) -> LoadedModel:
            tok = tiny_tokenizer()
            default = torch.get_default_dtype()
            torch.set_default_dtype(args.dtype)
            try:
                with torch.device(args.device), torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = _build(kind, dims, vocab or len(tok), tok)
            finally:
                torch.set_default_dtype(default)
            return LoadedModel(model, tok, "seq2seq" if kind == "t5" else "causal", name)

        MODELS.register(name, ModelAlias(name, f"random {shape} shape (benchmarks/gpu_check.py)", loader))


def synthetic_stream(n_tasks: int = 5, n: int = 28) -> Stream:
    """``n_tasks`` small two-label tasks (enough stages to measure inc_lora at stage 4); every text is
    distinct and train, dev and test are disjoint, as clift's stream checks require."""
    words = ["alpha", "bravo", "delta", "echo", "gamma", "kilo", "lima", "sierra", "tango", "zulu"]
    tasks = []
    for t in range(n_tasks):
        rows = [
            Example(
                " ".join(words[(i * (t + 3) + k) % 10] for k in range(6)) + f" item {t}-{i}",
                "yes" if i % 2 else "no",
                f"{t}/{i}",
            )
            for i in range(n)
        ]
        tasks.append(
            Task(
                f"task{t}",
                "TC",
                "Choose one from the option.\n",
                ("yes", "no"),
                True,
                rows[:16],
                rows[16:20],
                rows[20:],
            )
        )
    return Stream("gpu-check", tasks)


# ---- alternating step timing and memory ---------------------------------------------------------------


def _allocated(args: argparse.Namespace) -> int:
    return torch.cuda.memory_allocated() if args.device.type == "cuda" else 0


def build_harness(args: argparse.Namespace, shape: str, name: str, overrides: dict[str, Any], workdir: Path):
    """A method on its own copy of the model, entered at its measured stage; with its resident bytes."""
    from clift.memory import QuantizationConfig, enable_gradient_checkpointing
    from clift.models import load_model

    overrides = dict(overrides)
    quant, checkpointing = overrides.pop("quantization", None), overrides.pop("checkpointing", False)
    before = _allocated(args)
    model_cfg = ModelConfig(name=f"gpu-check-{shape}", device=args.device.type)
    model_cfg.quantization = QuantizationConfig(**quant) if quant else None
    loaded = load_model(model_cfg)
    method = build_method(build_method_config({"name": name, **overrides}))
    stream = synthetic_stream()
    encoder = PromptEncoder(loaded.tokenizer, loaded.kind, args.seq_len, 16)
    method.setup(
        MethodContext(
            kind=loaded.kind,
            model_type=getattr(loaded.model.config, "model_type", ""),
            tokenizer=loaded.tokenizer,
            stream=stream,
            run_dir=workdir / name,
            train=TrainConfig(lr=args.lr, batch_size=args.batch_size),
            seed=args.seed,
            device=args.device,
            collate=TrainCollator(encoder),
            compute_loss=compute_loss,
        )
    )
    model = method.attach(loaded.model)
    if checkpointing:
        enable_gradient_checkpointing(model)
    stages = method.stages(stream)
    batch = make_batch(loaded.tokenizer, loaded.kind, args, args.device)
    h = _enter(name, method, model, stages[0])
    for k in range(MEASURED_STAGE.get(name, 1)):
        step(h, batch)
        model = method.after_task(h.model, stages[k])
        h = _enter(name, method, model, stages[k + 1])
    return h, batch, _allocated(args) - before


def _timed_step(args: argparse.Namespace, h: Harness, batch: dict) -> tuple[float, int]:
    if args.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    start = _allocated(args)
    seconds = step(h, batch)
    peak = torch.cuda.max_memory_allocated() - start if args.device.type == "cuda" else 0
    return seconds, peak


def compare_pair(args: argparse.Namespace, shape: str, label: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``spec`` against plain LoRA alternately in one process; ratios of median step time and peak memory."""
    with tempfile.TemporaryDirectory() as tmp:
        base_h, batch, base_res = build_harness(args, shape, "seq_lora", {}, Path(tmp))
        name = spec.pop("method", label)
        h, mbatch, res = build_harness(args, shape, name, spec, Path(tmp))
        for _ in range(args.warmup):
            step(base_h, batch)
            step(h, mbatch)
        t_base, t_m, p_base, p_m = [], [], 0, 0
        for _ in range(args.steps):
            s, p = _timed_step(args, base_h, batch)
            t_base.append(s)
            p_base = max(p_base, p)
            s, p = _timed_step(args, h, mbatch)
            t_m.append(s)
            p_m = max(p_m, p)
        del base_h, h
    gc.collect()
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    mem_base, mem_m = base_res + p_base, res + p_m
    return {
        "shape": shape,
        "variant": label,
        "step_s": med(t_m),
        "lora_step_s": med(t_base),
        "time_ratio": med(t_m) / med(t_base),
        "peak_gb": mem_m / 2**30 if mem_m else None,
        "lora_peak_gb": mem_base / 2**30 if mem_base else None,
        "memory_ratio": mem_m / mem_base if mem_base else None,
    }


def variants(args: argparse.Namespace, shape: str) -> list[tuple[str, dict[str, Any]]]:
    """What each shape measures: the methods, LoRA + gradient checkpointing, QLoRA (not at 8B)."""
    out: list[tuple[str, dict[str, Any]]] = [(m, {}) for m in args.method_list]
    out.append(("seq_lora+checkpointing", {"method": "seq_lora", "checkpointing": True}))
    if shape != "llama-8b":
        dtype = "float32" if args.device.type == "cpu" else "bfloat16"
        quant = {"bits": 4, "compute_dtype": dtype}
        out.append(("seq_lora+qlora-4bit", {"method": "seq_lora", "quantization": quant}))
    return out


def qlora_skip_reason() -> str | None:
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes not installed (pip install 'clift[qlora]')"
    return None


def _pair_or_skip(args: argparse.Namespace, shape: str, label: str, spec: dict[str, Any]) -> dict[str, Any]:
    if "qlora" in label and qlora_skip_reason():
        return {"shape": shape, "variant": label, "skipped": qlora_skip_reason()}
    try:
        row = compare_pair(args, shape, label, dict(spec))
    except (RuntimeError, NotImplementedError) as err:  # e.g. a bitsandbytes without kernels for this device
        return {"shape": shape, "variant": label, "skipped": f"{type(err).__name__}: {str(err)[:200]}"}
    return row


# ---- the 20-step two-task runs ------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def run_and_resume(args: argparse.Namespace, method: str, root: Path) -> dict[str, Any]:
    """A two-task run (``--run-steps`` steps in all); then the same run interrupted mid-task-2 and resumed."""
    from clift.runner import Runner

    steps = max(2, args.run_steps // 2)
    cfg = {
        "model": {"name": "gpu-check-llama-1b", "device": args.device.type},
        "method": method,
        "train": {"max_steps": steps, "batch_size": args.batch_size, "lr": args.lr, "checkpoint_every": steps // 2},
        "eval": {"mode": "rank", "batch_size": 8, "zero_shot": False},
        "log": {"progress": False},
        "save_adapters": False,
    }
    stream = Stream("gpu-check", synthetic_stream().tasks[:2])
    t0 = time.time()
    full = clift.run({**cfg, "output_dir": str(root / f"{method}-full")}, stream=stream).results
    original = Runner._save_checkpoint

    def interrupting(self: Runner, model: torch.nn.Module, method_: Any, stage: int, step_: int, **mid: Any) -> None:
        original(self, model, method_, stage, step_, **mid)
        if stage == 1 and step_ > 0:  # a mid-task checkpoint of task 2 is on disk: "crash" now
            raise _Interrupt

    Runner._save_checkpoint = interrupting  # type: ignore[method-assign]
    try:
        clift.run({**cfg, "output_dir": str(root / f"{method}-resumed")}, stream=stream)
    except _Interrupt:
        pass
    finally:
        Runner._save_checkpoint = original  # type: ignore[method-assign]
    resumed = clift.run({**cfg, "output_dir": str(root / f"{method}-resumed")}, stream=stream).results
    losses = [x for t in full["training"] for x in t["loss_curve"]]
    same = all(
        math.isclose(a, b, rel_tol=2e-2, abs_tol=1e-3)
        for ta, tb in zip(full["training"], resumed["training"], strict=True)
        for a, b in zip(ta["loss_curve"], tb["loss_curve"], strict=True)
    )
    return {
        "method": method,
        "steps": sum(t["steps"] for t in full["training"]),
        "losses_finite": all(math.isfinite(x) for x in losses),
        "resumed": bool(resumed.get("resumes")) and resumed["status"] == "complete",
        "resume_matches": same,
        "seconds": time.time() - t0,
    }


# ---- report ---------------------------------------------------------------------------------------------


def _fmt(v: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "–" if v is None else f"{v:{spec}}{suffix}"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"# GPU check ({report['device']}, {report['dtype']}, batch {report['batch']})",
        "",
        "Step time and peak memory as ratios to plain PEFT LoRA measured alternately in the same process.",
        "",
        "| shape | variant | step (s) | × LoRA time | peak (GiB) | × LoRA memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["pairs"]:
        if "skipped" in r:
            lines.append(f"| {r['shape']} | {r['variant']} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(
            f"| {r['shape']} | {r['variant']} | {_fmt(r['step_s'], '.3f')} | {_fmt(r['time_ratio'])}× | "
            f"{_fmt(r['peak_gb'])} | {_fmt(r['memory_ratio'])}× |"
        )
    lines += ["", "| method | steps | losses finite | resumed | resume matches |", "|---|---|---|---|---|"]
    for r in report["runs"]:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['losses_finite']} | {r['resumed']} | {r['resume_matches']} |"
        )
    lines += ["", "DEAL paper (released code): 1.77× LoRA's training time, +12 % memory. Ours:"]
    for r in report["pairs"]:
        if r["variant"] in ("deal", "deal_code") and "skipped" not in r:
            mem = "–" if r["memory_ratio"] is None else f"{(r['memory_ratio'] - 1) * 100:+.0f} %"
            lines.append(f"- {r['shape']} {r['variant']}: {r['time_ratio']:.2f}× time, {mem} memory")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    register_shapes(args)
    t0 = time.time()
    pairs = [
        _pair_or_skip(args, shape, label, spec) for shape in args.shape_list for label, spec in variants(args, shape)
    ]
    root = Path(tempfile.mkdtemp(prefix="clift-gpu-check-"))
    try:
        runs = [run_and_resume(args, m, root) for m in args.method_list]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report = {
        "device": torch.cuda.get_device_name() if args.device.type == "cuda" else "cpu",
        "dtype": str(args.dtype).replace("torch.", ""),
        "batch": f"{args.batch_size} x {args.seq_len}",
        "tiny": args.tiny,
        "versions": {"torch": torch.__version__, "clift": clift.__version__},
        "pairs": pairs,
        "runs": runs,
        "deal_paper": DEAL_PAPER,
        "seconds": time.time() - t0,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(report)
    (out / "gpu-check.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "gpu-check.md").write_text(text, encoding="utf-8")
    print(text)
    print(f"written: {out / 'gpu-check.json'}, {out / 'gpu-check.md'} ({report['seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
