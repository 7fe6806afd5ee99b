"""Training entry: stages end to end, ZeRO stages over 2 ranks, resume, frozen teacher, config round-trip."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from processes import cpu_ranks_env

from salt.config import Config, ConfigError, from_dict, load_config
from salt.models.io import load_encoder
from salt.train import main as train_main

REPO = Path(__file__).resolve().parents[1]

# the debug model (salt/configs/debug.yaml) on the test shards: 4x4x4 = 64 tokens; one thread per rank
MICRO = ["--config", "debug", "--run.threads=1"]


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def train(shards: Path, run_dir: Path, stage: str, steps: int, *extra: str) -> int:
    return train_main(MICRO + ["--stage", stage, "--shards", str(shards), "--run-dir", str(run_dir), "--steps",
                               str(steps), *extra])


@pytest.fixture(scope="module")
def teacher_run(synth_shards, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "teacher"
    # raw (not per-patch normalised) pixel targets: their loss falls within a few dozen steps
    assert train(synth_shards, run, "teacher", 60, "--run.log_every=10", "--run.checkpoint_every=30",
                 "--optim.lr=2e-3", "--pixel_loss.norm_pix=false") == 0
    return run


def test_teacher_run_learns_and_exports(teacher_run):
    curve = losses(teacher_run)
    assert sorted(curve) == list(range(10, 70, 10))
    assert curve[60] < 0.7 * curve[10]
    rows = [json.loads(line) for line in (teacher_run / "metrics.jsonl").read_text().splitlines()]
    for key in ("clips_per_s", "data_wait_frac", "tflops", "mfu", "grad_norm", "lr", "memory_mb"):
        assert rows[-1][key] is not None and rows[-1][key] >= 0, key
    assert 0 <= rows[-1]["data_wait_frac"] <= 1
    encoder, info = load_encoder(teacher_run)
    assert info.step == 60 and info.stage == "teacher" and info.depth == 2
    ckpts = sorted(p.name for p in (teacher_run / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000030", "step_00000060"]
    assert (teacher_run / "checkpoints" / "latest").read_text() == "step_00000060"
    summary = json.loads((teacher_run / "summary.json").read_text())
    assert summary["finished"] is True and summary["stopped_by"] is None and summary["step"] == 60
    assert summary["bad_samples"] == 0 and summary["bad_keys"] == []


def test_student_run_from_teacher_learns_and_leaves_teacher_untouched(teacher_run, synth_shards, tmp_path):
    before = (teacher_run / "export" / "encoder.safetensors").read_bytes()
    teacher_before, _ = load_encoder(teacher_run)
    run = tmp_path / "student"
    assert train(synth_shards, run, "student", 30, "--teacher", str(teacher_run), "--run.log_every=5",
                 "--optim.lr=2e-3") == 0
    curve = losses(run)
    assert curve[30] < 0.9 * curve[5]
    assert (teacher_run / "export" / "encoder.safetensors").read_bytes() == before
    from salt.stages import build_objective

    cfg = load_config(run / "config.yaml")
    objective = build_objective(cfg)
    for (name, p), q in zip(objective.teacher.named_parameters(), teacher_before.parameters(), strict=True):
        assert torch.equal(p, q), name
        assert not p.requires_grad


@pytest.mark.timeout(300)
def test_a_student_never_starts_at_its_teachers_initialisation(synth_shards, tmp_path):
    """The control of the student machinery (a student of a random encoder: a run's step-0 export) must not
    start at its teacher: a student draws its weights from another seed than any teacher-free stage at the
    same run.seed, and from the same one on every run at that seed."""
    one_step = ("--run.seed=3", "--run.export_steps=[0]", "--run.log_every=1")
    assert train(synth_shards, tmp_path / "teacher", "teacher", 1, *one_step) == 0
    random_teacher = tmp_path / "teacher" / "export" / "step_00000000"
    starts = []
    for name in ("student_a", "student_b"):
        assert train(synth_shards, tmp_path / name, "student", 1, "--teacher", str(random_teacher), *one_step) == 0
        starts.append(load_encoder(tmp_path / name / "export" / "step_00000000")[0].state_dict())
    teacher = load_encoder(random_teacher)[0].state_dict()
    assert starts[0].keys() == teacher.keys()
    assert all(torch.equal(starts[0][k], starts[1][k]) for k in teacher)  # seeded: the same start twice
    drawn = [k for k, v in teacher.items() if k.endswith("weight") and v.ndim >= 2]  # drawn at random
    assert drawn and not any(torch.equal(starts[0][k], teacher[k]) for k in drawn)


def test_frozen_teacher_is_bitwise_unchanged_by_training(teacher_run, synth_shards, tmp_path):
    from salt.engine.distributed import init_distributed
    from salt.engine.trainer import Trainer

    cfg = load_config("debug", [
        "stage=student", f"data.shards={synth_shards}", f"run.dir={tmp_path / 's'}", "run.steps=5",
        f"teacher.path={teacher_run}", "run.log_every=5"])
    trainer = Trainer(cfg, init_distributed())
    teacher = trainer.objective.teacher
    snapshot = {k: v.clone() for k, v in teacher.state_dict().items()}
    trainer.train()
    trainer.close()
    assert not teacher.training
    assert all(torch.equal(snapshot[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())


def test_resume_continues_with_the_same_losses(synth_shards, tmp_path):
    common = ("--run.log_every=1", "--run.checkpoint_every=6")
    assert train(synth_shards, tmp_path / "full", "teacher", 12, *common) == 0
    assert train(synth_shards, tmp_path / "cut", "teacher", 12, *common, "--run.stop_after=6") == 0
    assert max(losses(tmp_path / "cut")) == 6
    summary = json.loads((tmp_path / "cut" / "summary.json").read_text())
    assert summary["finished"] is False and summary["stopped_by"] == "run.stop_after"
    assert train(synth_shards, tmp_path / "cut", "teacher", 12, *common, "--resume") == 0
    full, cut = losses(tmp_path / "full"), losses(tmp_path / "cut")
    assert sorted(cut) == list(range(1, 13))
    for step in range(7, 13):  # tolerance: identical arithmetic on one machine; allow float noise
        assert cut[step] == pytest.approx(full[step], rel=1e-5, abs=1e-6), step


def test_resolved_config_reloads_to_the_same_run(teacher_run):
    saved = teacher_run / "config.yaml"
    cfg = load_config(saved)
    again = from_dict(Config, yaml.safe_load(saved.read_text()))
    assert cfg == again
    assert cfg.stage == "teacher" and cfg.run.steps == 60 and cfg.model.depth == 2


def test_bad_config_and_inputs_fail_early_with_clear_messages(synth_shards, tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown config key optim.lrr; did you mean optim.lr"):
        load_config("tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="expected an integer"):
        load_config("tiny", ["data.batch_size=big"])
    with pytest.raises(ConfigError, match="config key masks.kind: must be one of multiblock, tube, random, full"):
        load_config("tiny", ["masks.kind=none"])
    assert load_config("tiny", ["masks.kind=full"]).masks.kind == "full"
    assert train(tmp_path / "nowhere", tmp_path / "r1", "teacher", 2) == 2
    assert "no shard set" in capsys.readouterr().err
    assert train(synth_shards, tmp_path / "r2", "student", 2) == 2
    assert "needs a frozen teacher" in capsys.readouterr().err
    assert train(synth_shards, tmp_path / "r3", "student", 2, "--teacher", str(tmp_path / "missing")) == 2
    assert "no encoder at" in capsys.readouterr().err
    ds = tmp_path / "ds.json"
    ds.write_text(json.dumps({"train_micro_batch_size_per_gpu": 7, "zero_optimization": {"stage": 1}}))
    assert train(synth_shards, tmp_path / "r4", "teacher", 2, "--deepspeed-config", str(ds)) == 2
    assert "train_micro_batch_size_per_gpu=7" in capsys.readouterr().err


def test_teacher_of_another_geometry_is_refused(teacher_run, synth_shards, tmp_path, capsys):
    assert train(synth_shards, tmp_path / "s", "student", 2, "--teacher", str(teacher_run),
                 "--data.crop_size=16") == 2
    assert "the student's predictor needs" in capsys.readouterr().err


def launch(nprocs: int, args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    env = cpu_ranks_env()
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nprocs), "--master_port",
           str(29600 + os.getpid() % 1000), "salt/train.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_activation_checkpointing_recomputes_the_same_steps(teacher_run, synth_shards, tmp_path):
    """model.grad_checkpointing (every block stack, the student's predictor included) changes memory, not
    the arithmetic: the same losses, step for step."""
    extra = ("--teacher", str(teacher_run), "--run.log_every=1", "--run.checkpoint_every=4")
    assert train(synth_shards, tmp_path / "plain", "student", 4, *extra) == 0
    assert train(synth_shards, tmp_path / "ckpt", "student", 4, *extra, "--model.grad_checkpointing=true") == 0
    plain, ckpt = losses(tmp_path / "plain"), losses(tmp_path / "ckpt")
    assert sorted(plain) == [1, 2, 3, 4] and plain == pytest.approx(ckpt, rel=1e-5)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_compiled_blocks_train_like_eager_ones(synth_shards, tmp_path):
    """run.compile compiles each transformer block in place: losses match eager to float tolerance and the
    checkpoint's parameter names are the eager model's (an eager run resumes from it)."""
    extra = ("--run.log_every=1", "--run.checkpoint_every=3")
    assert train(synth_shards, tmp_path / "eager", "teacher", 3, *extra) == 0
    assert train(synth_shards, tmp_path / "compiled", "teacher", 3, *extra, "--run.compile=true") == 0
    eager, compiled = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(compiled) == [1, 2, 3] and compiled == pytest.approx(eager, rel=1e-3)
    assert train(synth_shards, tmp_path / "compiled", "teacher", 4, *extra, "--resume") == 0
    assert sorted(losses(tmp_path / "compiled")) == [1, 2, 3, 4]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_zero_offload_steps_with_deepspeeds_cpu_adam(synth_shards, tmp_path, capsys):
    """ds_configs/zero2_offload.json: the optimizer state lives on the CPU and DeepSpeed's CPU Adam steps it
    (its C++ op is compiled on first use, about a minute, then cached); the run trains and resumes."""
    extra = ("--deepspeed-config", "ds_configs/zero2_offload.json", "--run.log_every=1", "--run.checkpoint_every=2")
    assert train(synth_shards, tmp_path / "r", "teacher", 2, *extra) == 0
    assert "AdamW cpu_adam" in capsys.readouterr().out
    assert train(synth_shards, tmp_path / "r", "teacher", 3, *extra, "--resume") == 0
    assert sorted(losses(tmp_path / "r")) == [1, 2, 3]
