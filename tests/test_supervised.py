"""The supervised ceiling stage, direction-aware flips from the dataset's metadata, health metrics and
the k-NN probe at checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_train import train

from dataprep.synth import dataset_info
from salt.config import ConfigError, load_config
from salt.data.config import LoaderConfig
from salt.data.plan import plan_sample
from salt.data.shardset import ShardSet
from salt.health import feature_std, rankme
from salt.models.io import load_encoder
from salt.stages import build_objective


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_supervised_stage_fits_its_labels_and_exports_the_encoder(synth_shards, tmp_path):
    run = tmp_path / "sup"
    assert train(synth_shards, run, "supervised", 40, "--run.log_every=10", "--optim.lr=2e-3") == 0
    metrics = rows(run)
    assert [r["step"] for r in metrics] == [10, 20, 30, 40]
    assert metrics[-1]["loss"] < 0.8 * math.log(10) < metrics[0]["loss"] + 0.5  # starts near ln 10, then falls
    assert metrics[-1]["train_top1"] > 0.2  # chance is 0.1
    for r in metrics:
        assert 1.0 <= r["rankme"] <= min(4 * 64, 192) and 0.0 < r["feature_std"] < 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["stage"] == "supervised" and summary["train_flops"] > 0
    _, info = load_encoder(run)
    assert info.stage == "supervised" and info.step == 40


def test_supervised_stage_refuses_unlabelled_data():
    cfg = load_config("tiny", ["stage=supervised"])
    with pytest.raises(ConfigError, match="labelled shards"):
        build_objective(cfg, num_classes=0)


def test_flipped_views_of_direction_sensitive_classes_are_relabelled(synth_shards):
    shards = ShardSet(str(synth_shards))
    mirror = dataset_info("reversal10")["hflip_labels"]
    assert json.loads((synth_shards / "manifest.json").read_text())["label_hflip"] == mirror
    cfg = LoaderConfig(shards=str(synth_shards), num_frames=8, frame_stride=4, crop_size=32, views_per_clip=4)
    seen_flip = seen_keep = 0
    for i in range(len(shards)):
        plan = plan_sample(shards, i, cfg, epoch=0)
        name = shards.classes[plan.label]
        for (_, view), label in zip(plan.views, plan.view_labels, strict=True):
            assert shards.classes[label] == (mirror[name] if view.flip else name)
            seen_flip += view.flip and mirror[name] != name
            seen_keep += not view.flip
    assert seen_flip > 0 and seen_keep > 0
    shards.close()


def test_health_metrics_see_collapse():
    g = torch.Generator().manual_seed(0)
    healthy = torch.randn(16, 32, 64, generator=g)
    collapsed = torch.ones(16, 32, 64) + 1e-6 * torch.randn(16, 32, 64, generator=g)
    assert rankme(healthy) > 40 and feature_std(healthy) > 0.05
    assert rankme(collapsed) < 1.5 and feature_std(collapsed) < 1e-3


def test_knn_probe_at_checkpoints_goes_into_metrics(synth_shards, tmp_path):
    run = tmp_path / "teacher"
    assert train(synth_shards, run, "teacher", 4, "--run.log_every=4", "--run.probe_every=2",
                 f"--run.probe_shards={synth_shards}", "--run.probe_samples=12", "--run.export_steps=[1]") == 0
    probed = {r["step"]: r for r in rows(run) if "knn_top1" in r}
    assert sorted(probed) == [1, 2, 4]  # run.export_steps are probed too: the learning curve's early points
    for r in probed.values():
        assert 0.0 <= r["knn_low"] <= r["knn_top1"] <= r["knn_high"] <= 1.0 and r["probe_s"] > 0
        assert 0.0 <= r["knn_std_low"] <= r["knn_std_top1"] <= r["knn_std_high"] <= 1.0
        # the feature diagnostics of salt.eval.diagnostics, on the held-out clips (the debug model: 2 blocks)
        assert r["diag_rankme"] >= 1 and -1 <= r["diag_token_cosine"] <= 1
        assert {"diag_attn_entropy_0", "diag_attn_entropy_1", "diag_resid_norm_1"} <= set(r)
    assert (run / "export" / "step_00000001" / "encoder.safetensors").exists()


def test_probe_every_needs_held_out_shards():
    with pytest.raises(ConfigError, match="run.probe_shards"):
        load_config("tiny", ["run.probe_every=10"])
