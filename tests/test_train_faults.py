"""Faults a training run survives: SIGTERM/SIGINT (one process and under the deepspeed launcher), a rank
killed with -9, a full disk while checkpointing, corrupt samples (strict and skipping), and bad input on
the command line. Each ends in one line that says what happened, a documented exit code, and a run that
`--resume` continues exactly.

Loss tolerances: a resumed run replays the same arithmetic (same ops, same order, same thread count, same
machine; gloo's ring all-reduce is deterministic for a fixed world size), so losses after the resume equal
the uninterrupted run's. The comparisons allow rel 1e-6, the noise of float32 values read back from JSON
(Python prints floats exactly, so in practice they are equal).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from processes import cpu_ranks_env, group_gone
from test_train import MICRO, REPO, losses, train
from videos import zero_sample_video

from salt.config import load_config
from salt.data.order import epoch_order
from salt.data.shardset import ShardSet

STOPPED = 75  # salt/train.py: stopped by a signal after writing a checkpoint; continue with --resume
REL = 1e-6
STOP_LINE = re.compile(r"^stopped by (SIG[A-Z]+) at step (\d+): checkpoint written to (\S+); continue with --resume$",
                       re.M)


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_for_rows(run_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 240) -> int:
    """Waits until metrics.jsonl holds at least n rows; returns how many it holds."""
    path, deadline = run_dir / "metrics.jsonl", time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended (rc {proc.returncode}) before the fault was injected"
        if path.exists():
            count = path.read_text().count("\n")
            if count >= n:
                return count
        time.sleep(0.05)
    raise AssertionError(f"no {n} metrics rows in {timeout} s")


def assert_same_losses(run: dict[int, float], reference: dict[int, float], steps) -> None:
    for step in steps:
        assert run[step] == pytest.approx(reference[step], rel=REL, abs=1e-7), step


# deepspeed's own runner (not salt) prints a KeyboardInterrupt traceback on Ctrl-C
RUNNER_FRAMES = ("bin/deepspeed", "deepspeed/launcher/runner.py", "/subprocess.py")


def assert_no_traceback(output: str, allow_runner: bool = False) -> None:
    frames = re.findall(r'File "([^"]+)", line', output)
    if allow_runner:
        frames = [f for f in frames if not any(f.endswith(r) or r in f for r in RUNNER_FRAMES)]
    assert not frames and (allow_runner or "Traceback" not in output), output[-3000:]


def assert_stopped_cleanly(run_dir: Path, output: str, signame: str, total: int, allow_runner: bool = False) -> int:
    """The one stop line, a complete checkpoint that `latest` names, summary.json; returns the stop step."""
    assert_no_traceback(output, allow_runner)
    found = STOP_LINE.findall(output)
    assert len(found) == 1, output[-3000:]
    name, step, path = found[0]
    step = int(step)
    assert name == signame and 0 < step < total
    ckpt = run_dir / "checkpoints" / f"step_{step:08d}"
    assert Path(path) == ckpt and (ckpt / "COMPLETE").exists() and (ckpt / "mp_rank_00_model_states.pt").exists()
    assert (run_dir / "checkpoints" / "latest").read_text() == ckpt.name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["finished"] is False and summary["stopped_by"] == signame and summary["step"] == step
    assert max(losses(run_dir)) == step  # the steps since the last log row are logged before stopping
    assert json.loads((run_dir / "export" / "encoder.json").read_text())["step"] == step
    return step


def corrupt_copy(src: Path, dst: Path, index: int) -> tuple[str, str]:
    """A copy of a shard set whose sample `index` does not decode (in an intact shard). Returns (key, shard)."""
    shutil.copytree(src, dst)
    return zero_sample_video(dst, index)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "salt/train.py", *args]


def launcher_cmd(nprocs: int, args: list[str]) -> list[str]:
    return [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(nprocs), "--master_port",
            str(free_port()), "salt/train.py", *args]


ENV = cpu_ranks_env()


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """In its own session (process group), so a test can signal the group the way Ctrl-C does."""
    with open(log, "w") as out:
        return subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=out, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- SIGTERM / SIGINT, one process

ONE = 60  # steps; the signal comes after 3 rows, so the run is still going (~0.1 s per step here)
ONE_ARGS = MICRO + ["--stage", "teacher", "--steps", str(ONE), "--run.log_every=1", "--run.checkpoint_every=1000",
                    "--data.loader=reference"]


@pytest.fixture(scope="module")
def one_process_reference(synth_shards, tmp_path_factory) -> dict[int, float]:
    run = tmp_path_factory.mktemp("faults") / "uninterrupted"
    assert train_main_args(ONE_ARGS + ["--shards", str(synth_shards), "--run-dir", str(run)]) == 0
    return losses(run)


def train_main_args(args: list[str]) -> int:
    from salt.train import main

    return main(args)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("signame, target", [("SIGTERM", "process"), ("SIGINT", "process group")])
def test_signal_stops_at_a_step_with_a_checkpoint_and_resume_continues_exactly(
        signame, target, synth_shards, one_process_reference, tmp_path):
    """SIGTERM to the process (a scheduler), SIGINT to its process group (Ctrl-C: the reference loader's
    DataLoader workers get it too)."""
    run = tmp_path / "run"
    args = ONE_ARGS + ["--shards", str(synth_shards), "--run-dir", str(run)]
    proc = start(train_cmd(args), tmp_path / "out.txt")
    try:
        wait_for_rows(run, 3, proc)
        sig = getattr(signal, signame)
        os.kill(proc.pid, sig) if target == "process" else os.killpg(proc.pid, sig)
        rc = proc.wait(timeout=180)
    finally:
        kill_group(proc.pid)
    output = (tmp_path / "out.txt").read_text()
    assert rc == STOPPED, output[-3000:]
    step = assert_stopped_cleanly(run, output, signame, ONE)
    assert_same_losses(losses(run), one_process_reference, range(1, step + 1))

    assert train_main_args(args + ["--resume"]) == 0
    resumed = losses(run)
    assert sorted(resumed) == list(range(1, ONE + 1))
    assert_same_losses(resumed, one_process_reference, range(step + 1, ONE + 1))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["finished"] is True and summary["stopped_by"] is None


def test_signal_while_checkpointing_stops_at_that_checkpoint(synth_shards, tmp_path, monkeypatch, capsys):
    """A SIGTERM that lands during the regular checkpoint at step 6 stops there (no extra step and checkpoint)."""
    import salt.engine.trainer as trainer_module

    real = trainer_module.save_checkpoint

    def save_and_get_signalled(engine, folder, step, *args, **kwargs):
        tag = real(engine, folder, step, *args, **kwargs)
        if step == 6:
            os.kill(os.getpid(), signal.SIGTERM)
        return tag

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_and_get_signalled)
    run = tmp_path / "run"
    assert train(synth_shards, run, "teacher", 12, "--run.log_every=1", "--run.checkpoint_every=6") == STOPPED
    err = capsys.readouterr().err
    assert assert_stopped_cleanly(run, err, "SIGTERM", 12) == 6
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000006"]


def test_signal_before_the_first_step_exits_at_once(synth_shards, tmp_path, monkeypatch, capsys):
    """While the trainer is being built there is nothing to save: the run stops at once, writing nothing."""
    import salt.engine.trainer as trainer_module

    real_init = trainer_module.Trainer.__init__

    def init_then_signal(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # delivered at the next bytecode: inside the build
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "__init__", init_then_signal)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    run = tmp_path / "run"
    assert train(synth_shards, run, "teacher", 12) == STOPPED
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "stopped by SIGTERM before the first step; nothing was written: run the same command again")
    assert not run.exists()
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers  # restored for the caller


# ---------------------------------------------------------------- resume trims metrics.jsonl


def test_resume_drops_metrics_rows_written_after_the_checkpoint(synth_shards, tmp_path):
    """A run killed at step 25 after its checkpoint at step 20 left rows 21..25 (and half a row) behind."""
    run = tmp_path / "run"
    common = ("--run.log_every=1", "--run.checkpoint_every=20")
    assert train(synth_shards, run, "teacher", 30, *common, "--run.stop_after=25") == 0
    before = losses(run)
    assert sorted(before) == list(range(1, 26))
    shutil.rmtree(run / "checkpoints" / "step_00000025")
    (run / "checkpoints" / "latest").write_text("step_00000020")
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 26, "epoch": 3, "lo')  # cut short by the kill
    assert train(synth_shards, run, "teacher", 30, *common, "--resume") == 0
    steps = [r["step"] for r in rows(run)]
    assert steps == list(range(1, 31))  # each step once, in order
    after = losses(run)
    assert_same_losses(after, before, range(1, 26))  # rows 21..25 written again by the resumed run


# ---------------------------------------------------------------- a full disk while checkpointing


@pytest.mark.parametrize("failure", ["iostream error, disk nearly full", "ENOSPC"])
def test_checkpoint_write_error_keeps_the_previous_checkpoint(failure, synth_shards, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    common = ("--run.log_every=1", "--run.checkpoint_every=6")
    real_save = torch.save

    def save(obj, f, *args, **kwargs):
        if "step_00000012" in str(f):
            if failure == "ENOSPC":
                raise OSError(28, "No space left on device", str(f))
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 1024 vs 512: "
                               "basic_ios::clear: iostream error")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    if failure != "ENOSPC":  # torch.save's C++ stream loses the errno; what is left on the disk tells
        real_usage = shutil.disk_usage
        monkeypatch.setattr(shutil, "disk_usage", lambda p: real_usage(p)._replace(free=4096))
    assert train(synth_shards, run, "teacher", 12, *common) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f"error: cannot write {run / 'checkpoints' / 'step_00000012'}: no space left on device")
    assert (run / "checkpoints" / "latest").read_text() == "step_00000006"
    assert not (run / "checkpoints" / "step_00000012").exists()  # the half-written folder is gone
    assert (run / "checkpoints" / "step_00000006" / "COMPLETE").exists()
    monkeypatch.undo()

    assert train(synth_shards, run, "teacher", 12, *common, "--resume") == 0
    assert [r["step"] for r in rows(run)] == list(range(1, 13))
    assert (run / "checkpoints" / "latest").read_text() == "step_00000012"


# ---------------------------------------------------------------- corrupt samples


@pytest.fixture(scope="module")
def corrupt_one(synth_shards, tmp_path_factory) -> tuple[Path, str, str]:
    out = tmp_path_factory.mktemp("corrupt") / "shards"
    key, shard = corrupt_copy(synth_shards, out, 9)
    return out, key, shard


@pytest.mark.parametrize("loader", ["dali", "reference"])
def test_strict_mode_names_shard_and_key_in_one_line(loader, corrupt_one, tmp_path):
    """As the user sees it (a subprocess): the strict error used to escape as two chained tracebacks."""
    shards, key, shard = corrupt_one
    args = MICRO + ["--stage", "teacher", "--shards", str(shards), "--run-dir", str(tmp_path / "run"), "--steps", "10",
                    f"--data.loader={loader}", "--data.strict=true"]
    proc = subprocess.run(train_cmd(args), cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output[-3000:]
    assert_no_traceback(output)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    assert errors[0].startswith(f"error: sample {key} in shard {shard} failed to decode: "), errors[0]


def test_skipped_samples_are_logged_once_and_listed_in_the_summary(corrupt_one, tmp_path, capsys):
    shards, key, shard = corrupt_one
    run = tmp_path / "run"
    assert train(shards, run, "teacher", 22, "--run.log_every=1") == 0  # 7 batches per epoch: 3 epochs
    err = capsys.readouterr().err
    skipped = [line for line in err.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped undecodable sample {key} in {shard} (1 skipped so far)"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bad_samples"] == 1 and summary["bad_keys"] == [key]
    assert rows(run)[-1]["bad_samples"] == 1


# ---------------------------------------------------------------- bad input: one line, exit 2, nothing written


def test_checkpoint_every_is_blamed_by_its_own_name(synth_shards, tmp_path, capsys):
    assert train(synth_shards, tmp_path / "run", "teacher", 2, "--run.checkpoint_every=-5") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config key run.checkpoint_every: must be >= 1, got -5"
    assert not (tmp_path / "run").exists()


def test_stage_must_be_chosen(synth_shards, tmp_path, capsys):
    from salt.train import main

    assert main(MICRO + ["--shards", str(synth_shards), "--run-dir", str(tmp_path / "run"), "--steps", "2"]) == 2
    assert capsys.readouterr().err.strip() == "error: no stage chosen: pass --stage teacher, student, vjepa or supervised"
    assert not (tmp_path / "run").exists()
    config = tmp_path / "teacher.yaml"  # a config file may choose it
    config.write_text((REPO / "salt/configs/debug.yaml").read_text() + "stage: teacher\n")
    cfg_args = ["--config", str(config), "--run.threads=1", "--shards", str(synth_shards), "--steps", "1"]
    assert main(cfg_args + ["--run-dir", str(tmp_path / "ok")]) == 0
    assert load_config(tmp_path / "ok" / "config.yaml").stage == "teacher"


def _refusals(synth_shards: Path, tmp: Path) -> dict[str, tuple[list[str], str]]:
    (tmp / "notjson.json").write_text("{zero: 1")
    (tmp / "bad.yaml").write_text("model: {depth: 2\n")
    (tmp / "unknown.yaml").write_text("model: {depht: 2}\n")
    (tmp / "badtype.yaml").write_text("optim: {lr: fast}\n")
    return {  # extra arguments, a fragment of the one error line
        "missing shards": (["--shards", str(tmp / "nowhere")], "no shard set"),
        "missing teacher": (["--stage", "student", "--teacher", str(tmp / "missing")], "no encoder at"),
        "student without teacher": (["--stage", "student"], "needs a frozen teacher"),
        "missing deepspeed config": (["--deepspeed-config", str(tmp / "none.json")], "DeepSpeed config"),
        "deepspeed config not JSON": (["--deepspeed-config", str(tmp / "notjson.json")], "is not valid JSON"),
        "config file not found": (["--config", str(tmp / "none.yaml")], "not found"),
        "config file not YAML": (["--config", str(tmp / "bad.yaml")], "is not valid YAML"),
        "unknown key in config file": (["--config", str(tmp / "unknown.yaml")], "model.depht; did you mean model.depth"),
        "wrong type in config file": (["--config", str(tmp / "badtype.yaml")], "optim.lr: expected a number"),
        "unknown override": (["--optim.lrr=1"], "unknown config key optim.lrr"),
        "override of a wrong type": (["--data.batch_size=big"], "data.batch_size: expected an integer"),
        "override not YAML": (["--optim.betas=[0.9"], "is not valid YAML"),
        "steps not a number": (["--steps", "many"], "argument --steps: invalid int value: 'many'"),
        "unknown stage": (["--stage", "pupil"], "argument --stage: invalid choice"),
        "override without value": (["--optim.lr"], "--optim.lr needs a value"),
        "resume without checkpoints": (["--resume"], "no complete checkpoint"),
        "vjepa under ZeRO 3": (["--stage", "vjepa", "--deepspeed-config", "ds_configs/zero3.json"],
                               "the vjepa stage's per-step update reads full parameters: use ZeRO stage 1 or 2"),
        "mask block without its scale": (["--masks.blocks=[{num_blocks: 2}]"],
                                         "config key masks.blocks[0]: missing spatial_scale"),
    }


CASES = ["missing shards", "missing teacher", "student without teacher", "missing deepspeed config",
         "deepspeed config not JSON", "config file not found", "config file not YAML", "unknown key in config file",
         "wrong type in config file", "unknown override", "override of a wrong type", "override not YAML",
         "steps not a number", "unknown stage", "override without value", "resume without checkpoints",
         "vjepa under ZeRO 3", "mask block without its scale"]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, synth_shards, tmp_path, capsys):
    from salt.train import main

    refusals = _refusals(synth_shards, tmp_path)
    assert sorted(refusals) == sorted(CASES)
    extra, fragment = refusals[case]
    run = tmp_path / "run"
    args = MICRO + ["--stage", "teacher", "--shards", str(synth_shards), "--run-dir", str(run), "--steps", "2"]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert fragment in errors[0], errors[0]
    assert not run.exists()  # no config.yaml, no metrics.jsonl, no folder


def test_refused_run_leaves_an_existing_run_as_it_was(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(synth_shards, run, "teacher", 2) == 0
    config, metrics = (run / "config.yaml").read_text(), (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert train(synth_shards, run, "teacher", 4, "--optim.lr=1e-2") == 2  # checkpoints, no --resume
    assert "already holds checkpoints: pass --resume" in capsys.readouterr().err
    assert train(synth_shards, run, "teacher", 4, "--optim.lr=1e-2", "--resume") == 2  # another config
    assert "--resume with a different config (optim.lr" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config and (run / "metrics.jsonl").read_text() == metrics


def test_bad_input_from_the_command_line_prints_no_traceback(synth_shards, tmp_path):
    """The same, as a user sees it: the whole output of the process."""
    (tmp_path / "notjson.json").write_text("{zero: 1")
    base = MICRO + ["--stage", "teacher", "--run-dir", str(tmp_path / "run"), "--steps", "2"]
    for extra, fragment in [(["--shards", str(synth_shards), "--data.batch_size=big"], "data.batch_size"),
                            (["--shards", str(tmp_path / "nowhere")], "no shard set"),
                            (["--shards", str(synth_shards), "--deepspeed-config", str(tmp_path / "notjson.json")],
                             "is not valid JSON")]:
        proc = subprocess.run(train_cmd(base + extra), cwd=REPO, env=ENV, capture_output=True, text=True,
                              timeout=300)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 2 and "Traceback" not in output, output[-3000:]
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and fragment in errors[0], output[-3000:]
        assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- two ranks under the deepspeed launcher

TWO = 40
TWO_ARGS = MICRO + ["--stage", "teacher", "--steps", str(TWO), "--run.log_every=1", "--run.checkpoint_every=4"]


@pytest.fixture(scope="module")
def two_rank_shards(synth_shards, tmp_path_factory) -> tuple[Path, str, str]:
    """A corrupt sample that rank 1 reads in its first batch: rank 1 finds it, the main rank logs it."""
    cfg = load_config("debug").data
    shards = ShardSet(synth_shards, verify=False)
    index = int(epoch_order(shards.shard_ids, cfg.seed, 0, 1, 2, True, cfg.shuffle_buffer)[0])
    shards.close()
    out = tmp_path_factory.mktemp("two") / "shards"
    return (out, *corrupt_copy(synth_shards, out, index))


@pytest.fixture(scope="module")
def two_rank_reference(two_rank_shards, tmp_path_factory) -> dict[int, float]:
    shards, key, shard = two_rank_shards
    run = tmp_path_factory.mktemp("two") / "uninterrupted"
    proc = subprocess.run(launcher_cmd(2, TWO_ARGS + ["--shards", str(shards), "--run-dir", str(run)]), cwd=REPO,
                          env=ENV, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    # the skipped sample, found by rank 1 (and later by rank 0), is logged once and listed in the summary
    assert output.count(f"skipped undecodable sample {key} in {shard} (1 skipped so far)") == 1, output[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["bad_keys"] == [key] and summary["world"] == 2
    return losses(run)


def rank_pid(launcher_pid: int, rank: int) -> int:
    import psutil

    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "salt/train.py" in cmd and f"--local_rank={rank}" in cmd:
            return child.pid
    raise AssertionError(f"no rank {rank} under {launcher_pid}")


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_kill_9_of_one_rank_then_resume_matches_an_uninterrupted_run(two_rank_shards, two_rank_reference, tmp_path):
    shards, _, _ = two_rank_shards
    run = tmp_path / "run"
    args = TWO_ARGS + ["--shards", str(shards), "--run-dir", str(run)]
    proc = start(launcher_cmd(2, args), tmp_path / "out.txt")
    try:
        wait_for_rows(run, 10, proc)  # past the checkpoint at step 8
        os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
        rc = proc.wait(timeout=300)
        assert group_gone(proc.pid, timeout=180), f"processes of group {proc.pid} still running after 180 s"
    finally:
        kill_group(proc.pid)
    output = (tmp_path / "out.txt").read_text()
    assert rc != 0
    assert "lost contact with the other ranks" in output, output[-3000:]
    assert_no_traceback(output)
    ckpt = int((run / "checkpoints" / "latest").read_text().removeprefix("step_"))
    assert ckpt >= 8 and max(losses(run)) >= ckpt

    proc = subprocess.run(launcher_cmd(2, args + ["--resume"]), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    resumed = losses(run)
    assert [r["step"] for r in rows(run)] == list(range(1, TWO + 1))
    assert_same_losses(resumed, two_rank_reference, range(ckpt + 1, TWO + 1))


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("signame, target", [("SIGTERM", "deepspeed runner"), ("SIGINT", "process group")])
def test_signal_under_the_deepspeed_launcher_stops_all_ranks_at_one_step(signame, target, two_rank_shards,
                                                                         two_rank_reference, tmp_path):
    """SIGTERM to `deepspeed` alone (deepspeed 0.19 forwards nothing: the ranks notice their launcher is gone);
    SIGINT to the whole group (Ctrl-C: the ranks get it, then SIGTERM from deepspeed.launcher.launch)."""
    shards, _, _ = two_rank_shards
    run = tmp_path / "run"
    args = TWO_ARGS + ["--shards", str(shards), "--run-dir", str(run)]
    proc = start(launcher_cmd(2, args), tmp_path / "out.txt")
    try:
        wait_for_rows(run, 3, proc)
        if target == "deepspeed runner":
            os.kill(proc.pid, signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=300)
        assert group_gone(proc.pid, timeout=180), f"processes of group {proc.pid} still running after 180 s"
    finally:
        kill_group(proc.pid)
    output = (tmp_path / "out.txt").read_text()
    step = assert_stopped_cleanly(run, output, signame, TWO, allow_runner=target == "process group")
    if target == "deepspeed runner":
        assert "the deepspeed launcher (pid" in output and "exited without stopping the ranks" in output

    proc = subprocess.run(launcher_cmd(2, args + ["--resume"]), cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert [r["step"] for r in rows(run)] == list(range(1, TWO + 1))
    assert_same_losses(losses(run), two_rank_reference, range(step + 1, TWO + 1))
