"""Runs per hour on a CPU machine: N runs one after another with all cores, or N at once with cores/N each.

``clift compare --jobs N`` and the results' run queues can run several SmolLM2 runs side by side, each with
fewer threads; whether that finishes more work per hour than one run at a time with every core depends on
the machine (the model's matmuls are memory-bound on small CPUs) and must be measured, not assumed. This
script measures both ways in one sitting, on the same run configuration, and prints the ratio.

One *round* is two phases, each running the same ``--jobs`` copies of one ``clift run`` (copy i with seed
``seed + i``, its own output folder):

- serial: the copies one after another, each with ``OMP_NUM_THREADS = --threads`` (default: all cores);
- parallel: the copies at once, each with ``OMP_NUM_THREADS = --threads // --jobs``.

Rounds alternate which phase goes first, so a drift of the machine's load (another job, thermal limits)
hits both phases alike. Throughput is runs per hour of wall time over a phase; the printed ratio is
parallel throughput / serial throughput (> 1: side by side finishes more runs per hour). Each run's own
``timings.total_seconds`` and ``environment.torch_threads`` are read back from its ``results.json``, so
the thread counts the runs really used are shown beside the numbers. Run it on an otherwise idle machine.

Usage::

    python benchmarks/parallel_throughput.py configs/quickstart.yaml data.train_per_task=32 data.test_per_task=16
    python benchmarks/parallel_throughput.py configs/quickstart.yaml --rounds 2 --json throughput.json
    python benchmarks/parallel_throughput.py configs/quickstart.yaml model.name=tiny-llama  # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

PHASES = ("serial", "parallel")


@dataclass
class Phase:
    """One phase of one round: how long its copies took together, and each copy's own record."""

    name: str
    round: int
    threads: int
    wall_seconds: float
    run_seconds: list[float]
    run_threads: list[int | None]

    def runs_per_hour(self) -> float:
        return 3600.0 * len(self.run_seconds) / self.wall_seconds


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", type=Path, help="run configuration (YAML), as for `clift run`")
    p.add_argument("overrides", nargs="*", help="dotted.key=value overrides passed to every run")
    p.add_argument("--jobs", type=int, default=2, help="copies per phase (default 2)")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads of a serial run (all cores)")
    p.add_argument("--rounds", type=int, default=1, help="serial + parallel rounds, alternating which goes first")
    p.add_argument("--seed", type=int, default=42, help="seed of the first copy; copy i uses seed + i")
    p.add_argument("--workdir", type=Path, help="where the runs write (default: a temporary folder)")
    p.add_argument("--json", type=Path, help="also write every phase and the ratios here")
    args = p.parse_args(argv)
    if args.jobs < 2 or args.threads < args.jobs or args.rounds < 1:
        p.error(
            f"--jobs {args.jobs}, --threads {args.threads}, --rounds {args.rounds}: need jobs >= 2, "
            "threads >= jobs (each parallel copy gets threads // jobs >= 1) and rounds >= 1"
        )
    return args


def _command(args: argparse.Namespace, out: Path, seed: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "clift.cli",
        "run",
        "--quiet",
        "--force",
        str(args.config),
        *args.overrides,
        f"seed={seed}",
        f"output_dir={out}",
    ]


def _env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _record(out: Path) -> tuple[float, int | None]:
    """``timings.total_seconds`` and ``environment.torch_threads`` of one finished run."""
    record = json.loads((out / "results.json").read_text(encoding="utf-8"))
    return float(record["timings"]["total_seconds"]), record.get("environment", {}).get("torch_threads")


def _start(args: argparse.Namespace, out: Path, seed: int, threads: int) -> tuple[subprocess.Popen[bytes], Path]:
    return subprocess.Popen(_command(args, out, seed), env=_env(threads), stderr=subprocess.PIPE), out


def _wait(procs: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, out in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            tail = err.decode(errors="replace")[-2000:]
            raise SystemExit(f"run into {out} failed with exit status {proc.returncode}:\n{tail}")


def run_phase(args: argparse.Namespace, name: str, round_: int, workdir: Path) -> Phase:
    """Run ``--jobs`` copies serially or at once; the phase's wall time and each copy's record."""
    threads = args.threads if name == "serial" else args.threads // args.jobs
    outs = [workdir / f"r{round_}-{name}-{i}" for i in range(args.jobs)]
    start = time.perf_counter()
    if name == "serial":
        for i, out in enumerate(outs):
            _wait([_start(args, out, args.seed + i, threads)])
    else:
        _wait([_start(args, out, args.seed + i, threads) for i, out in enumerate(outs)])
    wall = time.perf_counter() - start
    records = [_record(out) for out in outs]
    return Phase(name, round_, threads, wall, [s for s, _ in records], [t for _, t in records])


def throughput_ratio(phases: list[Phase]) -> dict[str, float | list[float]]:
    """Parallel runs/hour ÷ serial runs/hour, per round (same round, so same machine state) and its median.

    ratio_k = (jobs / wall_parallel_k) / (jobs / wall_serial_k) = wall_serial_k / wall_parallel_k.
    """
    by_round: dict[int, dict[str, Phase]] = {}
    for phase in phases:
        by_round.setdefault(phase.round, {})[phase.name] = phase
    ratios = [r["serial"].wall_seconds / r["parallel"].wall_seconds for _, r in sorted(by_round.items())]
    return {"per_round": ratios, "median": statistics.median(ratios)}


HEADER = f"{'round':>5}  {'phase':<8} {'threads/run':>11} {'wall s':>8} {'runs/h':>7}  run seconds (threads recorded)"


def format_row(p: Phase) -> str:
    runs = ", ".join(f"{s:.0f} ({t})" for s, t in zip(p.run_seconds, p.run_threads, strict=True))
    return f"{p.round:>5}  {p.name:<8} {p.threads:>11} {p.wall_seconds:>8.0f} {p.runs_per_hour():>7.2f}  {runs}"


def format_table(phases: list[Phase]) -> str:
    return "\n".join([HEADER, *(format_row(p) for p in phases)])


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="clift-throughput-") as tmp:
        workdir = args.workdir or Path(tmp)
        phases: list[Phase] = []
        for round_ in range(args.rounds):
            order = PHASES if round_ % 2 == 0 else PHASES[::-1]
            for name in order:
                phases.append(run_phase(args, name, round_, workdir))
                print(format_row(phases[-1]), flush=True)
    ratio = throughput_ratio(phases)
    print()
    print(format_table(phases))
    per_round = ", ".join(f"{r:.2f}" for r in ratio["per_round"])
    print(
        f"\nparallel / serial throughput ({args.jobs} runs at {args.threads // args.jobs} thread(s) each vs one at a "
        f"time at {args.threads}): {ratio['median']:.2f} (median over rounds: {per_round}); > 1 means side by side "
        "finishes more runs per hour"
    )
    out = {
        "config": str(args.config),
        "overrides": args.overrides,
        "jobs": args.jobs,
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "phases": [asdict(p) | {"runs_per_hour": p.runs_per_hour()} for p in phases],
        "ratio": ratio,
    }
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


if __name__ == "__main__":
    main()
