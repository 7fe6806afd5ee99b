"""Teacher-target cache: precompute job, format, reader, student stage from the cache, resume, refusals."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from processes import cpu_ranks_env
from videos import zero_sample_video

from dataprep.targets import main as targets_main
from salt.build import build_model_encoder, encoder_info
from salt.config import load_config
from salt.data.augment import one_torch_thread
from salt.data.config import LoaderConfig
from salt.data.dali_loader import DaliVideoLoader
from salt.data.shardset import ShardSet
from salt.masks import TokenGrid, build_mask_generator
from salt.models import build_predictor
from salt.models.io import export_encoder, load_encoder
from salt.models.token_decoder import DecoderSpec
from salt.objectives import StudentObjective
from salt.objectives.latent import compute_teacher_targets
from salt.precision import resolve_precision
from salt.targets.fingerprint import teacher_fingerprint
from salt.targets.format import TargetCacheError, TargetCacheMismatch, decode, encode, error_bound
from salt.targets.meta import CacheMeta
from salt.targets.reader import TargetCache
from salt.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
# the micro geometry of tests/test_train.py: 8 frames of 32x32, patch 8, tubelet 2 -> 4x4x4 = 64 tokens
GEOMETRY = ["--data.num_frames=8", "--data.frame_stride=4", "--data.crop_size=32"]
MICRO = ["--config", "debug", "--run.threads=1"]  # the debug model has GEOMETRY
K = 2  # views per sample


def make_teacher(folder: Path, seed: int) -> Path:
    """A randomly initialised micro teacher, exported (the cache does not care whether it was trained)."""
    cfg = load_config("debug", ["stage=teacher"])
    torch.manual_seed(seed)
    export_encoder(build_model_encoder(cfg), encoder_info(cfg, 0), folder / "export")
    return folder


def precompute(teacher: Path, shards: Path, out: Path, dtype: str, *extra: str) -> int:
    return targets_main(["--teacher", str(teacher), "--shards", str(shards), "--out", str(out), "--views", str(K),
                         "--dtype", dtype, "--config", "tiny", *GEOMETRY, "--quiet", *extra])


@pytest.fixture(scope="module")
def teachers(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("teachers")
    return make_teacher(root / "a", 0), make_teacher(root / "b", 1)


@pytest.fixture(scope="module")
def caches(teachers, synth_shards, tmp_path_factory):
    """dtype -> cache folder, made on first use."""
    root, made = tmp_path_factory.mktemp("caches"), {}

    def get(dtype: str) -> Path:
        if dtype not in made:
            assert precompute(teachers[0], synth_shards, root / dtype, dtype) == 0
            made[dtype] = root / dtype
        return made[dtype]

    return get


def losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def train_loader_config(shards: Path) -> LoaderConfig:
    """The student run's loader (MICRO on tiny) with the cache's K views."""
    cfg = load_config("debug", ["stage=student", "targets.cache=x",
                                                                     f"data.shards={shards}"])
    return replace(cfg.data, cached_views=K)


def job_autocast() -> torch.dtype | None:
    """The autocast the job resolves for tiny's DeepSpeed config on this CPU (run.precision auto): bf16 where
    it is native, none (fp32) where it is emulated."""
    return resolve_precision("auto", torch.device("cpu"), torch.bfloat16).autocast


def online_targets(teacher, clips: torch.Tensor) -> torch.Tensor:
    """What the student stage computes online, in the job's precision and, as the job on the CPU, on one
    torch thread (fp32 matmuls round otherwise with other thread counts)."""
    dtype = job_autocast()
    with one_torch_thread(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        return compute_teacher_targets(teacher, clips)


@pytest.mark.parametrize("dtype", ["fp32", "bf16", "fp8"])
def test_cached_targets_equal_the_online_teachers_for_the_loaders_views(dtype, caches, teachers, synth_shards):
    cache = TargetCache(caches(dtype))
    teacher, _ = load_encoder(teachers[0])
    teacher.eval()
    cfg = train_loader_config(synth_shards)
    cache.check_run(cfg, 8, 2, teacher_fingerprint(teachers[0]))
    seen = set()
    with DaliVideoLoader(cfg) as loader:
        for batch in list(loader)[:3]:  # the training loader's own views: one cached view id per sample
            got = cache.read(batch.keys, batch.view_ids).decode()  # (B, N, D)
            want = online_targets(teacher, batch.model_input("cpu"))
            assert got.shape == want.shape == (4, 64, 192)
            if dtype == "fp32":
                assert torch.equal(got, want)
            elif dtype == "bf16":
                assert torch.equal(got, want.to(torch.bfloat16).float())
            else:  # stated tolerance: round-to-nearest e4m3 with a per-token absmax scale
                assert torch.all((got - want).abs() <= error_bound(want, "fp8"))
                assert (got - want).abs().mean() < 0.03 * want.abs().mean()
            seen.update(batch.view_ids.tolist())
    assert seen == set(range(K))
    cache.close()


def test_storage_codecs_round_trip_within_their_bounds():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 64, generator=g)
    x[0, 0, 0] = 40.0  # an outlier sets its token's fp8 scale
    x[1, 2] = 0.0  # an all-zero token
    for dtype in ("fp32", "bf16", "fp16", "fp8"):
        values, scale = encode(x, dtype)
        y = decode(torch.from_numpy(values), None if scale is None else torch.from_numpy(scale), dtype)
        assert torch.all((y - x).abs() <= error_bound(x, dtype)), dtype
        assert torch.equal(y[1, 2], torch.zeros(64)), dtype
    assert torch.equal(decode(torch.from_numpy(encode(x, "bf16")[0]), None, "bf16"), x.to(torch.bfloat16).float())
    assert encode(x, "fp8")[0].nbytes * 2 == encode(x, "bf16")[0].nbytes


def test_fp8_halves_bf16_storage(caches):
    b16 = json.loads((caches("bf16") / "meta.json").read_text())["counts"]
    f8 = json.loads((caches("fp8") / "meta.json").read_text())["counts"]
    assert b16["rows"] == f8["rows"] == 30 * K
    assert 0.4 < f8["bytes"] / b16["bytes"] < 0.6


def test_student_step_from_the_cache_gives_the_online_loss(caches, teachers, synth_shards):
    cache = TargetCache(caches("fp32"))
    teacher, _ = load_encoder(teachers[0])
    cfg = train_loader_config(synth_shards)
    grid = TokenGrid.from_clip(num_frames=8, img_size=32, patch_size=8, tubelet_size=2)
    torch.manual_seed(0)
    student = build_model_encoder(load_config("debug"))
    pred = build_predictor(grid=grid, in_dim=192, out_dim=cache.width, spec=DecoderSpec(192, 1, 3))
    online = StudentObjective(student, pred, teacher)
    cached = StudentObjective(student, pred, None)
    masks_gen = build_mask_generator("multiblock", grid=grid)
    with DaliVideoLoader(cfg, mask_generator=masks_gen) as loader:
        batch = next(iter(loader))
    targets = cache.read(batch.keys, batch.view_ids).decode()
    losses, grads = [], []
    dtype = job_autocast()
    for objective, kw in ((online, {}), (cached, {"targets": targets})):
        student.zero_grad()
        pred.zero_grad()
        with one_torch_thread(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            out = objective(batch.model_input("cpu"), batch.masks, **kw)
        out.loss.backward()
        losses.append(out.loss.detach())
        grads.append([p.grad.clone() for p in [*student.parameters(), *pred.parameters()] if p.grad is not None])
    assert torch.equal(losses[0], losses[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads, strict=True))
    cache.close()


def test_student_stage_trains_from_the_cache(caches, teachers, synth_shards, tmp_path):
    common = ["--stage", "student", "--shards", str(synth_shards), "--steps", "6", "--run.log_every=3"]
    assert train_main(MICRO + common + ["--run-dir", str(tmp_path / "cached"), f"--targets.cache={caches('bf16')}"]) == 0
    assert train_main(MICRO + common + ["--run-dir", str(tmp_path / "online"), "--teacher", str(teachers[0])]) == 0
    cached = json.loads((tmp_path / "cached" / "summary.json").read_text())
    online = json.loads((tmp_path / "online" / "summary.json").read_text())
    assert np.isfinite(cached["final_loss"])
    assert cached["train_flops"] < online["train_flops"]  # no teacher forward
    state = (tmp_path / "cached" / "config.yaml").read_text()
    assert "cached_views: 0" in state  # the run's config as written; the loader got K from the cache
    # resume: the cached run continues with the same losses (the target prefetch follows the loader)
    cut = MICRO + common + ["--run-dir", str(tmp_path / "cut"), f"--targets.cache={caches('bf16')}", "--run.log_every=1",
                    "--run.checkpoint_every=3"]
    assert train_main(cut + ["--run.stop_after=3"]) == 0
    assert train_main(cut + ["--resume"]) == 0
    assert train_main(MICRO + common + ["--run-dir", str(tmp_path / "full"), f"--targets.cache={caches('bf16')}",
                                "--run.log_every=1"]) == 0
    full, resumed = (losses(tmp_path / name) for name in ("full", "cut"))
    assert sorted(resumed) == list(range(1, 7))
    assert all(resumed[i] == pytest.approx(full[i], rel=1e-5, abs=1e-6) for i in range(4, 7))


def test_cache_of_another_teacher_geometry_or_recipe_is_refused(caches, teachers, synth_shards, tmp_path, capsys):
    cache = caches("bf16")
    common = MICRO + ["--stage", "student", "--shards", str(synth_shards), "--steps", "1", f"--targets.cache={cache}"]
    assert train_main(common + ["--run-dir", str(tmp_path / "a"), "--teacher", str(teachers[1])]) == 2
    assert "another teacher" in capsys.readouterr().err
    assert train_main(common + ["--run-dir", str(tmp_path / "ok"), "--teacher", str(teachers[0])]) == 0
    assert train_main(common + ["--run-dir", str(tmp_path / "b"), "--data.frame_stride=2"]) == 2
    assert "another geometry: data.frame_stride is 4 in the cache, 2 in this run" in capsys.readouterr().err
    assert train_main(common + ["--run-dir", str(tmp_path / "c"), "--data.seed=3"]) == 2
    assert "another view recipe: data.seed is 0 in the cache, 3 in this run" in capsys.readouterr().err
    assert train_main(common + ["--run-dir", str(tmp_path / "d"), "--data.scale=[0.5,1.0]"]) == 2
    assert "data.scale" in capsys.readouterr().err
    with pytest.raises(TargetCacheMismatch, match="another view count"):
        TargetCache(cache).check_run(replace(train_loader_config(synth_shards), cached_views=3), 8, 2)
    # a rerun of the precompute job into the folder with another teacher
    assert precompute(teachers[1], synth_shards, cache, "bf16") == 1
    assert "made by another job (it differs in: teacher)" in capsys.readouterr().err


def test_interrupted_precompute_resumes_with_only_the_missing_files(caches, teachers, synth_shards, tmp_path,
                                                                    monkeypatch, capsys):
    from salt.targets import writer as targets_writer

    reference = caches("fp32")
    out = tmp_path / "cache"
    shards = ShardSet(synth_shards)
    stop_at = shards.keys[16]  # a sample in the middle of the third shard
    real_add = targets_writer.ShardTargetWriter.add

    def add(self, key, values, scale=None):
        if key == stop_at:
            raise KeyboardInterrupt("killed")
        real_add(self, key, values, scale)

    monkeypatch.setattr(targets_writer.ShardTargetWriter, "add", add)
    with pytest.raises(KeyboardInterrupt):
        precompute(teachers[0], synth_shards, out, "fp32")
    monkeypatch.setattr(targets_writer.ShardTargetWriter, "add", real_add)
    done = sorted(p.name for p in out.glob("*.arrow"))
    assert done == ["synth-000000.arrow", "synth-000001.arrow"]
    (out / ".synth-000003.arrow.partial").write_bytes(b"half a file from a killed job")
    with pytest.raises(TargetCacheError, match="incomplete"):
        TargetCache(out)
    before = {n: (out / n).stat().st_mtime_ns for n in done}
    capsys.readouterr()
    assert precompute(teachers[0], synth_shards, out, "fp32") == 0
    assert "3 files written, 2 already done" in capsys.readouterr().out
    assert {n: (out / n).stat().st_mtime_ns for n in done} == before
    assert not list(out.glob(".*.partial"))
    for f in reference.glob("*.arrow"):  # deterministic: the same bytes as an uninterrupted job
        assert (out / f.name).read_bytes() == f.read_bytes(), f.name
    assert json.loads((out / "meta.json").read_text()) == json.loads((reference / "meta.json").read_text())


def test_ranks_split_the_shards_and_the_last_one_completes_the_cache(caches, teachers, synth_shards, tmp_path,
                                                                      monkeypatch, capsys):
    out = tmp_path / "cache"
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        assert precompute(teachers[0], synth_shards, out, "fp32") == 0
        if rank == 1:
            assert sorted(p.name for p in out.glob("*.arrow")) == ["synth-000001.arrow", "synth-000003.arrow"]
            assert "waiting for the other ranks" in capsys.readouterr().out
    assert "complete" in capsys.readouterr().out
    for f in caches("fp32").glob("*.arrow"):
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert TargetCache(out).meta.complete


def test_truncated_arrow_file_is_reported_clearly_and_rewritten(caches, teachers, synth_shards, tmp_path, capsys):
    out = tmp_path / "cache"
    shutil.copytree(caches("bf16"), out)
    victim = out / "synth-000002.arrow"
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(TargetCacheError, match=r"synth-000002.arrow has \d+ bytes, meta.json says \d+: truncated"):
        TargetCache(out)
    meta = json.loads((out / "meta.json").read_text())
    meta["files"][2]["bytes"] = len(data) // 2  # even when meta.json agrees, Arrow's footer is gone
    (out / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(TargetCacheError, match="synth-000002.arrow .* is truncated or not an Arrow IPC file"):
        TargetCache(out)
    assert targets_main(["--verify", str(out), "--quiet"]) == 1
    report = capsys.readouterr().out
    assert "error: " in report and "synth-000002.arrow" in report and "problem(s)" in report
    assert precompute(teachers[0], synth_shards, out, "bf16") == 0
    assert "rewriting synth-000002.arrow" in capsys.readouterr().out
    assert victim.read_bytes() == data


def test_verify_recomputes_rows_and_missing_rows_name_the_key(caches, capsys):
    out = caches("fp8")
    assert targets_main(["--verify", str(out), "--quiet"]) == 0
    report = capsys.readouterr().out
    assert "fingerprint matches" in report and "recomputed" in report and report.strip().endswith("OK")
    cache = TargetCache(out)
    with pytest.raises(TargetCacheError, match="no row for sample 'not-a-key'"):
        cache.read(["not-a-key"], [0])
    with pytest.raises(TargetCacheError, match="not view 5"):
        cache.read([next(iter(cache.index))], [5])
    cache.close()


def test_undecodable_sample_gets_null_rows_and_a_clear_error(teachers, synth_shards, tmp_path, capsys):
    shards = tmp_path / "corrupt"
    shutil.copytree(synth_shards, shards)
    key, _ = zero_sample_video(shards, 9)  # a sample that does not decode in an intact shard
    assert precompute(teachers[0], shards, tmp_path / "cache", "bf16") == 0
    assert "(1 undecodable)" in capsys.readouterr().out
    cache = TargetCache(tmp_path / "cache")
    assert cache.meta.counts["bad_samples"] == 1 and cache.bad_keys == {key}
    with pytest.raises(TargetCacheError, match=f"no row for sample '{key}': the precompute job could not decode"):
        cache.read([key], [0])
    keys = ShardSet(shards).keys
    assert cache.read([keys[8], keys[10]], [1, 0]).values.shape == (2, 64, 192)
    cache.close()


def test_precompute_loader_covers_every_sample_and_view(synth_shards):
    cfg = replace(train_loader_config(synth_shards), mode="precompute", batch_size=3)
    with DaliVideoLoader(cfg, only_shards=[1, 4]) as loader:
        batches = list(loader)
    assert loader.planner.segments == [(1, 7, 10), (1, 10, 13), (1, 13, 14), (4, 28, 30)]
    assert [b.valid for b in batches] == [3, 3, 1, 2]
    keys = [k for b in batches for k in b.keys[: b.valid]]
    assert keys == ShardSet(synth_shards).keys[7:14] + ShardSet(synth_shards).keys[28:30]
    for b in batches:
        assert b.view_ids.tolist() == [0] * 3 + [1] * 3 and b.keys[:3] == b.keys[3:]


def test_precompute_under_the_deepspeed_launcher(caches, teachers, synth_shards, tmp_path):
    out = tmp_path / "cache"
    env = cpu_ranks_env()
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", "2", "--master_port",
           str(29700 + os.getpid() % 1000), "dataprep/targets.py", "--teacher", str(teachers[0]), "--shards",
           str(synth_shards), "--out", str(out), "--views", str(K), "--dtype", "fp32", "--config", "tiny",
           *GEOMETRY, "--quiet"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in caches("fp32").glob("*.arrow"):
        assert (out / f.name).read_bytes() == f.read_bytes()
    assert TargetCache(out).meta.complete


def test_cache_meta_is_typed_and_a_broken_one_is_refused(caches, tmp_path):
    meta = CacheMeta.load(caches("fp32"))
    raw = json.loads((caches("fp32") / "meta.json").read_text())
    assert (meta.dtype, meta.num_views, meta.complete) == ("fp32", K, True)
    assert meta.tokens == raw["targets"]["tokens"] and meta.width == raw["targets"]["width"]
    assert [f.file for f in meta.files] == [f["file"] for f in raw["files"]] and all(f.finished for f in meta.files)
    assert meta.schema().equals(TargetCache(caches("fp32")).schema)
    del raw["views"]
    (tmp_path / "meta.json").write_text(json.dumps(raw))
    with pytest.raises(TargetCacheError, match="not a target cache's meta.json .*'views'"):
        CacheMeta.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(TargetCacheError, match="is not JSON"):
        CacheMeta.load(tmp_path)
