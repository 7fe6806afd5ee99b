"""The learning rate as published recipes give it: a rate at a reference global batch, scaled to the run's
global batch (ranks x batch x accumulation) by a named rule, printed at start-up and recorded; and
run.export_steps, the early exports where a run's features change first."""

from __future__ import annotations

import json
import math

import pytest
from test_train import train

from salt.config import ConfigError, load_config
from salt.models.io import load_encoder
from salt.optim import effective_optim, lr_at, lr_scale


def test_rules_scale_all_three_rates():
    cfg = load_config("tiny", ["optim.lr=1.5e-4", "optim.start_lr=1e-5", "optim.final_lr=1e-6",
                               "optim.reference_batch=256"]).optim
    for rule, factor in (("linear", 0.125), ("sqrt", math.sqrt(0.125)), ("none", 1.0)):
        c = load_config("tiny", [f"optim.lr_scaling={rule}", "optim.lr=1.5e-4", "optim.start_lr=1e-5",
                                 "optim.final_lr=1e-6", "optim.reference_batch=256"]).optim
        scale = lr_scale(c, 32)
        assert scale.factor == pytest.approx(factor) and scale.global_batch == 32
        eff = effective_optim(c, 32)
        assert (eff.lr, eff.start_lr, eff.final_lr) == pytest.approx((1.5e-4 * factor, 1e-5 * factor, 1e-6 * factor))
        assert lr_at(cfg.warmup_steps, 1000, eff) == pytest.approx(1.5e-4 * factor)  # the peak, after warmup
        assert f"{rule} rule" in scale.describe(c)
    assert lr_scale(cfg, 256).factor == 1.0  # at its reference batch a rate is what the recipe says


def test_shipped_configs_keep_the_published_rates():
    for name in ("vitl_teacher", "vitl_student"):
        o = load_config(name).optim
        assert (o.lr, o.reference_batch, o.lr_scaling) == (5.25e-4, 3072, "linear")  # V-JEPA 2 at batch 3072
        assert lr_scale(o, 48).factor == pytest.approx(48 / 3072)  # one GPU of 48 clips
        assert lr_scale(o, 8 * 48).factor == pytest.approx(8 * 48 / 3072)


def test_bad_rule_and_export_steps_are_refused():
    with pytest.raises(ConfigError, match="optim.lr_scaling"):
        load_config("tiny", ["optim.lr_scaling=cubic"])
    with pytest.raises(ConfigError, match="optim.reference_batch"):
        load_config("tiny", ["optim.reference_batch=0"])
    with pytest.raises(ConfigError, match="run.export_steps"):
        load_config("tiny", ["run.steps=10", "run.export_steps=[0,20]"])


@pytest.mark.timeout(300)
def test_run_prints_and_records_its_effective_rate_and_exports_early_steps(synth_shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(synth_shards, run, "teacher", 6, "--data.batch_size=8", "--optim.reference_batch=4",
                 "--optim.lr=1e-3", "--optim.warmup_steps=2", "--run.log_every=1", "--run.export_steps=[0,2]") == 0
    err = capsys.readouterr()
    assert "lr 0.001 at global batch 4, linear rule x 8/4 -> peak 0.002" in err.out + err.err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["global_batch"] == 8 and summary["peak_lr"] == pytest.approx(2e-3)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["lr"] for r in rows) == pytest.approx(2e-3)
    history = sorted(p.name for p in (run / "export").glob("step_*"))
    assert history == ["step_00000000", "step_00000002"]  # no checkpoint there, only the exports
    assert sorted(p.name for p in (run / "checkpoints").glob("step_*")) == ["step_00000006"]
    init, info = load_encoder(run / "export" / "step_00000000")
    final, _ = load_encoder(run)
    assert info.step == 0
    assert any((a - b).abs().max() > 0 for a, b in zip(init.state_dict().values(), final.state_dict().values(), strict=True))
