"""Resume: a crashed run continues from its checkpoint and ends with the same results as an uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import clift
from clift.checkpoint import join_state, set_rng_state, split_state
from clift.config import RunConfig, upgrade_config
from clift.errors import ResumeError
from clift.methods import METHODS, build_method

from .conftest import Crash, fixture_stream, tiny_config
from .conftest import crash_at as _crash_at
from .conftest import stable_results as _stable

# Small settings that keep a method fast on tiny-llama; a method not listed runs with its defaults, so a
# newly registered method gets a resume test without anyone adding it here.
FAST_SETTINGS: dict[str, dict] = {
    "olora": {"lambda2": 0.01},  # earlier A's are loaded after before_task
    "ewc": {"fisher_samples": 4},  # Fisher and anchor restored
    "replay": {"memory_per_task": 4},  # the memory is restored
    "galore": {"galore_rank": 4, "update_proj_gap": 4},  # projector state and per-task delta norms
}
RESUME_TASKS = ["toysent", "toytopic"]


def _stage_count(method: dict) -> int:
    cfg = RunConfig.from_dict(tiny_config(Path("unused"), method=method))
    return len(build_method(cfg.method).stages(fixture_stream(names=RESUME_TASKS)))


def _check_resume(tmp_path, monkeypatch, method: dict, crash_step: int) -> None:
    """Crash after optimizer step ``crash_step`` of the last stage; the rerun must equal an uninterrupted run."""
    sections = {"train": {"max_steps": 6, "checkpoint_every": 2, "lr": 2e-3}}
    stream = fixture_stream(test=6, names=RESUME_TASKS)
    last = _stage_count(method) - 1
    reference = clift.run(tiny_config(tmp_path / "ref", method=method, **sections), stream=stream)
    cfg = tiny_config(tmp_path / "crash", method=method, **sections)
    _crash_at(monkeypatch, stage_index=last, step=crash_step)
    with pytest.raises(Crash):
        clift.run(cfg, stream=stream)
    partial = json.loads((tmp_path / "crash" / "run" / "results.json").read_text())
    assert partial["status"] == "running" and len(partial["matrix"]) == last  # earlier stages kept
    state = json.loads((tmp_path / "crash" / "run" / "checkpoint" / "state.json").read_text())
    resumed_from = crash_step - crash_step % 2  # checkpoints every 2 steps
    assert (state["stage"], state["step"]) == (last, resumed_from)
    resumed = clift.run(cfg, stream=stream)
    assert resumed.results["resumes"] == [{"stage": last, "step": resumed_from}]
    t = resumed.results["timings"]
    assert t["total_seconds"] >= t["total_seconds_before_resume"] >= t["zero_shot_seconds"] > 0
    assert _stable(resumed.results) == _stable(reference.results)
    for (n, p), (_, q) in zip(reference.model.named_parameters(), resumed.model.named_parameters(), strict=True):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_resumes_mid_stage_equal_to_uninterrupted(tmp_path, monkeypatch, name):
    # a crash after step 3 resumes from the step-2 checkpoint
    _check_resume(tmp_path, monkeypatch, {"name": name, **FAST_SETTINGS.get(name, {})}, crash_step=3)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "crash_step"),
    [("seq_lora", 5), ("ewc", 1), ("per_task", 1)],  # a later checkpoint; resuming from the stage boundary
)
def test_resume_from_other_checkpoints(tmp_path, monkeypatch, name, crash_step):
    _check_resume(tmp_path, monkeypatch, {"name": name, **FAST_SETTINGS.get(name, {})}, crash_step)


OLD_RUN = Path(__file__).parent / "fixtures" / "old_run_mid_stage"


@pytest.mark.slow
def test_a_run_made_by_the_previous_version_resumes(tmp_path):
    """``fixtures/old_run_mid_stage`` was written by clift before the lifecycle / RunRecord restructuring
    (inc_lora on the fixture benchmark, SIGKILLed after step 5 of stage 2, last checkpoint at step 4).
    Resuming it with this version, with its config read through the current schema (fields added since
    take the value that keeps what the run did: ``frozen_adapters: separate``), finishes it, keeping the
    rows the old version computed. Its config file as written now means the new default (fused frozen
    adapters), which the run did not use: that is refused, naming the field.

    A run made from scratch by this version is not expected to match it: structure hooks now run on their
    own random stream (paired runs), so a new adapter is initialised from different numbers than the old
    version drew.
    """
    import yaml

    written = yaml.safe_load((OLD_RUN / "config.yaml").read_text())
    stored = upgrade_config(written)
    assert stored["method"]["frozen_adapters"] == "separate"
    kept = json.loads((OLD_RUN / "checkpoint" / "state.json").read_text())["results"]
    run_dir = tmp_path / "old"
    shutil.copytree(OLD_RUN, run_dir)
    with pytest.raises(ResumeError, match=r"method\.frozen_adapters: 'separate' → 'fused'"):
        clift.run({**written, "output_dir": str(run_dir)})
    resumed = clift.run({**stored, "output_dir": str(run_dir)})
    out = resumed.results
    assert out["resumes"] == [{"stage": 1, "step": 4}]
    assert out["status"] == "complete" and len(out["matrix"]) == len(out["tasks"]) == 3
    assert out["matrix"][0] == kept["matrix"][0] and out["zero_shot"] == kept["zero_shot"]
    assert out["training"][0] == kept["training"][0]
    assert set(out["metrics"]) == {"aa", "bwt", "fwt", "forgetting"}
    assert "intervals" not in out  # the old rows carry no per-example correctness to resample
    for key in ("metric", "task_metrics", "by_metric"):  # per-metric matrices came later: an old run has none
        assert key not in out
    assert "engine" not in out  # recorded from a run's start: the old run predates the key


def test_crash_before_first_checkpoint_keeps_zero_shot_row(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, train={"max_steps": 3, "checkpoint_every": 0})
    reference = clift.run(
        tiny_config(tmp_path / "ref", train={"max_steps": 3, "checkpoint_every": 0}), stream=fixture_stream()
    )
    _crash_at(monkeypatch, stage_index=0, step=2)
    with pytest.raises(Crash):
        clift.run(cfg, stream=fixture_stream())
    from clift.runner import Runner

    calls = []
    real_eval = Runner._evaluate
    monkeypatch.setattr(Runner, "_evaluate", lambda self, *a: calls.append(a[2]) or real_eval(self, *a))
    resumed = clift.run(cfg, stream=fixture_stream())
    assert "zero-shot" not in calls  # the completed zero-shot row was not recomputed
    assert _stable(resumed.results) == _stable(reference.results)


def test_resume_refuses_a_changed_method_structure(tmp_path, monkeypatch):
    cfg = tiny_config(tmp_path, method="inc_lora", train={"max_steps": 4, "checkpoint_every": 2})
    _crash_at(monkeypatch, stage_index=1, step=3)
    with pytest.raises(Crash):
        clift.run(cfg, stream=fixture_stream())
    with pytest.raises(ResumeError, match="different configuration"):
        clift.run(
            tiny_config(tmp_path, method={"name": "inc_lora", "r": 4}, train={"max_steps": 4, "checkpoint_every": 2}),
            stream=fixture_stream(),
        )


def test_state_split_round_trip():
    opt_state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.ones(2, 2)}, 1: {"step": torch.tensor(1.0)}},
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1], "proj_type": "std", "rank": None}],
    }
    skeleton, tensors = split_state(opt_state)
    json.dumps(skeleton)  # JSON-able
    back = join_state(json.loads(json.dumps(skeleton)), tensors)
    assert back["param_groups"] == opt_state["param_groups"]
    assert torch.equal(back["state"][0]["exp_avg"], torch.ones(2, 2)) and set(back["state"]) == {0, 1}
    with pytest.raises(TypeError, match="never pickles"):
        split_state({"x": object()})


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from clift.runner import Runner
    real = Runner.train_stage
    def wrapped(self, model, method, stage, resume=None):
        if stage.index == 1:
            orig, count = method.after_step, [0]
            def after_step(m):
                orig(m)
                count[0] += 1
                if count[0] == 5:
                    os.kill(os.getpid(), signal.SIGKILL)  # a hard kill: no cleanup, no exception handlers
            method.after_step = after_step
        return real(self, model, method, stage, resume)
    Runner.train_stage = wrapped
    from clift.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_in_the_middle_of_task_two_then_rerun(tmp_path):
    import yaml

    base = {
        "model": "tiny-llama",
        "method": "seq_lora",
        "data": {"benchmark": "fixture", "train_per_task": 48, "test_per_task": 16},
        "train": {"max_steps": 8, "batch_size": 4, "lr": 2e-3, "checkpoint_every": 3},
        "eval": {"mode": "generate"},
        "log": {"progress": False},
    }
    ref_cfg, kill_cfg = tmp_path / "ref.yaml", tmp_path / "kill.yaml"
    ref_cfg.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "ref")}))
    kill_cfg.write_text(yaml.safe_dump({**base, "output_dir": str(tmp_path / "kill")}))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    script = tmp_path / "killer.py"
    script.write_text(KILL_SCRIPT)
    killed = subprocess.run(
        [sys.executable, str(script), "run", str(kill_cfg)], env=env, capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    partial = json.loads((tmp_path / "kill" / "results.json").read_text())
    assert partial["status"] == "running" and len(partial["matrix"]) == 1
    cli = [sys.executable, "-m", "clift.cli", "run"]
    resumed = subprocess.run([*cli, str(kill_cfg)], env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    ref = subprocess.run([*cli, str(ref_cfg)], env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    a = json.loads((tmp_path / "kill" / "results.json").read_text())
    b = json.loads((tmp_path / "ref" / "results.json").read_text())
    assert a["resumes"] == [{"stage": 1, "step": 3}]
    for key in ("timings", "resumes", "config", "git"):
        a.pop(key, None)
        b.pop(key, None)
    assert a == b


def test_checkpoint_keeps_every_process_generators(tmp_path):
    """A multi-process checkpoint restores each process's own generator states; an older or
    one-process checkpoint gives every process the main process's."""
    from clift.checkpoint import Checkpoint, load_checkpoint, rng_state, save_checkpoint

    torch.manual_seed(1)
    main = rng_state()
    torch.manual_seed(2)
    other = rng_state()
    model = {"w": torch.ones(2)}
    save_checkpoint(
        tmp_path / "multi", Checkpoint(stage=1, step=2, model=model, method={}, rng=main, rng_ranks=[main, other])
    )
    save_checkpoint(tmp_path / "single", Checkpoint(stage=1, step=2, model=model, method={}, rng=main))
    multi = load_checkpoint(tmp_path / "multi" / "checkpoint")
    single = load_checkpoint(tmp_path / "single" / "checkpoint")
    assert torch.equal(multi.rng_for(0)[1]["torch"], main[1]["torch"])
    assert torch.equal(multi.rng_for(1)[1]["torch"], other[1]["torch"])
    assert not torch.equal(main[1]["torch"], other[1]["torch"])
    assert multi.rng_for(1)[0] == json.loads(json.dumps(other[0]))
    assert set(multi.rng[1]) == set(main[1])  # the per-process tensors do not leak into the main states
    for rank in (0, 1):
        assert torch.equal(single.rng_for(rank)[1]["torch"], main[1]["torch"])
    # restoring rank 1's states reproduces rank 1's next draws
    torch.manual_seed(2)
    expected = torch.rand(3)
    set_rng_state(*multi.rng_for(1))
    assert torch.equal(torch.rand(3), expected)
