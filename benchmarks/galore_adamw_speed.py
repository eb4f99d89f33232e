"""One optimizer step of ``ProjectedAdamW`` against the reference ``galore_torch.GaLoreAdamW``, per weight shape.

Both optimizers get the same weight, rank k, scale α, ``proj_type=std``, eps 1e-6 and an exact SVD; both
refresh the projection at step 0, then every step is timed without a refresh (the steady state; the SVD
itself is the same ``torch.linalg.svd`` in both). Steps alternate between the two so that load changes on
a shared machine hit both alike; the median and the minimum (the least-disturbed step, steadier on a busy
machine) are reported. Before timing, the weights after ``--check-steps``
steps (with refreshes every 3 steps) are compared: they must agree to ``--tol`` relative to the weight's
largest entry (clift folds the projection back, scale and add into one ``addmm_``, so the two round
differently).

Shapes: SmolLM2-135M's Linear weights (q/o 576², k/v 192 × 576, gate/up 1536 × 576, down 576 × 1536) and
a 2048² weight. ``galore-torch`` is optional (``pip install -e .[bench]``); without it only clift is timed.

Usage::

    OMP_NUM_THREADS=2 python benchmarks/galore_adamw_speed.py --steps 20 --json results/step_cost/galore_adamw.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from clift.optim import ProjectedAdamW

SHAPES: dict[str, tuple[int, int]] = {
    "q_proj/o_proj 576x576": (576, 576),
    "k_proj/v_proj 192x576": (192, 576),
    "gate/up_proj 1536x576": (1536, 576),
    "down_proj 576x1536": (576, 1536),
    "square 2048x2048": (2048, 2048),
}


def reference_optimizer() -> type[torch.optim.Optimizer] | None:
    """``galore_torch.GaLoreAdamW``, or None when galore-torch is not installed."""
    try:
        from galore_torch import GaLoreAdamW
    except ImportError:
        return None
    return GaLoreAdamW


def make(kind: str, weight: torch.Tensor, rank: int, gap: int, lr: float) -> tuple[torch.nn.Parameter, Any]:
    """A parameter (copy of ``weight``) and its optimizer: ``clift`` or ``galore``."""
    p = torch.nn.Parameter(weight.clone())
    group = {"params": [p], "rank": rank, "update_proj_gap": gap, "scale": 1.0, "proj_type": "std"}
    if kind == "clift":
        return p, ProjectedAdamW([{**group, "svd": "exact"}], lr=lr, eps=1e-6)
    ref = reference_optimizer()
    assert ref is not None
    return p, ref([group], lr=lr, eps=1e-6, weight_decay=0.0, no_deprecation_warning=True)


def max_difference(shape: tuple[int, int], steps: int, rank: int, seed: int) -> float:
    """max |W_clift − W_galore| / max |W| after ``steps`` steps with a refresh every 3."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g)
    grads = [torch.randn(shape, generator=g) for _ in range(steps)]
    out = []
    for kind in ("clift", "galore"):
        p, opt = make(kind, weight, rank, 3, 1e-3)
        for grad in grads:
            p.grad = grad.clone()
            opt.step()
        out.append(p.detach())
    return float((out[0] - out[1]).abs().max() / out[1].abs().max())


def time_steps(kinds: list[str], shape: tuple[int, int], steps: int, rank: int, seed: int) -> dict[str, list[float]]:
    """Seconds per non-refresh step for each optimizer kind, measured alternately."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(shape, generator=g)
    grad = torch.randn(shape, generator=g)
    setups = {k: make(k, weight, rank, 10**9, 1e-6) for k in kinds}
    for p, opt in setups.values():  # step 0 refreshes the projection (the SVD): not timed
        p.grad = grad.clone()
        opt.step()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for _ in range(steps):
        for kind, (_, opt) in setups.items():
            t0 = time.perf_counter()
            opt.step()
            times[kind].append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per optimizer and shape")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--check-steps", type=int, default=7, help="steps of the agreement check (refresh every 3)")
    ap.add_argument("--tol", type=float, default=1e-6, help="allowed max |ΔW| relative to max |W|")
    ap.add_argument("--shapes", default=",".join(SHAPES), help="comma-separated keys of SHAPES")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    have_ref = reference_optimizer() is not None
    kinds = ["clift", "galore"] if have_ref else ["clift"]
    print(f"threads={torch.get_num_threads()} rank={args.rank} steps={args.steps} (median of non-refresh steps)")
    if not have_ref:
        print("galore-torch is not installed (pip install -e .[bench]): timing clift only")
    print(f"{'shape':<24} {'clift ms':>9} {'galore ms':>10} {'x galore':>9} {'x min':>7} {'max rel diff':>13}")
    rows: dict[str, Any] = {}
    failed = []
    for key in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        shape = SHAPES[key]
        times = time_steps(kinds, shape, args.steps, args.rank, args.seed)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        low = {k: min(v) * 1e3 for k, v in times.items()}
        row: dict[str, Any] = {"shape": list(shape), "clift_ms": med["clift"], "clift_min_ms": low["clift"]}
        if have_ref:
            row.update(galore_ms=med["galore"], ratio=med["clift"] / med["galore"])
            # on a shared machine the least-disturbed step is the steadier estimate of each one's own cost
            row.update(galore_min_ms=low["galore"], ratio_min=low["clift"] / low["galore"])
            row["max_rel_diff"] = max_difference(shape, args.check_steps, args.rank, args.seed)
            if row["max_rel_diff"] > args.tol:
                failed.append(key)
        rows[key] = row
        print(
            f"{key:<24} {row['clift_ms']:9.3f} {row.get('galore_ms', float('nan')):10.3f} "
            f"{row.get('ratio', float('nan')):9.3f} {row.get('ratio_min', float('nan')):7.3f} "
            f"{row.get('max_rel_diff', float('nan')):13.2e}"
        )
    summary = {"args": vars(args), "results": rows}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))
    if failed:
        raise SystemExit(f"updates differ by more than {args.tol} on: {', '.join(failed)}")
    return summary


if __name__ == "__main__":
    main()
