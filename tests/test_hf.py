"""SALT encoders as transformers' V-JEPA 2 models, both ways, on tiny models built here (no hub download):
the RoPE is V-JEPA 2's function (exact equality), an exported folder loads as a VJEPA2Model whose features
equal salt's, a V-JEPA 2 folder is a teacher or an initialisation, and a run's predictor goes along."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from salt.build import token_grid
from salt.config import load_config
from salt.models import build_encoder
from salt.models.export import main as export_main
from salt.models.hf import HFFormatError, export_hf, is_hf_folder
from salt.models.io import EncoderInfo, encoder_fingerprint, export_encoder, load_encoder, read_encoder_info
from salt.models.rope import apply_rope, rope_tables
from salt.train import main as train_main

transformers = pytest.importorskip("transformers", reason="the hf extra (pip install -e '.[hf]')")

GEOMETRY = dict(img_size=32, num_frames=8, patch_size=8, tubelet_size=2)
MICRO = ["--config", "debug", "--run.threads=1", "--model.use_rope=true", "--data.loader=reference",
         "--run.precision=fp32"]


def tiny_encoder(seed: int = 0, use_rope: bool = True):
    torch.manual_seed(seed)
    return build_encoder("tiny", depth=2, use_rope=use_rope, **GEOMETRY).eval()


def info_of(encoder, stage: str = "teacher") -> EncoderInfo:
    return EncoderInfo(size="tiny", depth=2, use_rope=encoder.use_rope, embed_dim=192, stage=stage, **GEOMETRY)


def clips(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 8, 32, 32, generator=torch.Generator().manual_seed(seed))  # (B, C, T, H, W)


def hf_features(folder: Path, x: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModel.from_pretrained(folder).eval()
    assert type(model).__name__ == "VJEPA2Model"
    with torch.no_grad():
        return model(pixel_values_videos=x.permute(0, 2, 1, 3, 4), skip_predictor=True).last_hidden_state


@pytest.mark.parametrize("head_dim", [64, 32])  # 64: 3 chunks of 20 and 4 channels left as they are
def test_rope_is_vjepa2s_function(head_dim):
    from transformers.models.vjepa2.modeling_vjepa2 import VJEPA2RopeAttention

    config = transformers.VJEPA2Config(hidden_size=head_dim * 2, num_attention_heads=2, crop_size=32, patch_size=8,
                                       frames_per_clip=8, tubelet_size=2)
    attention = VJEPA2RopeAttention(config, hidden_size=head_dim * 2, num_attention_heads=2)
    grid = token_grid(load_config("debug"))
    g = torch.Generator().manual_seed(0)
    qk = torch.randn(3, 2, grid.num_tokens, head_dim, generator=g)  # (B, heads, N, head_dim)
    full = attention.apply_rotary_embeddings(qk, attention.get_position_ids(qk.transpose(1, 2).flatten(2)))
    coords = grid.coords(qk.device).unsqueeze(0)  # (1, N, 3)
    assert torch.equal(apply_rope(qk, *rope_tables(coords, head_dim)), full)
    kept = torch.stack([torch.randperm(grid.num_tokens, generator=g)[:20].sort().values for _ in range(3)])  # (B, 20)
    sub = qk[:, :, :20]
    want = attention.apply_rotary_embeddings(sub, attention.get_position_ids(sub[:, 0], masks=kept))
    picked = torch.gather(coords.expand(3, -1, -1), 1, kept.unsqueeze(-1).expand(-1, -1, 3))  # (B, 20, 3)
    assert torch.equal(apply_rope(sub, *rope_tables(picked, head_dim)), want)


def test_exported_folder_loads_as_vjepa2_with_salts_features(tmp_path):
    encoder = tiny_encoder()
    export_encoder(encoder, info_of(encoder), tmp_path / "export")
    assert export_main([str(tmp_path / "export"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    x = clips()
    with torch.no_grad():
        want = encoder(x)
    got = hf_features(tmp_path / "hf", x)
    assert got.shape == want.shape == (2, 64, 192)
    assert (got - want).abs().max() < 1e-5
    processor = json.loads(next((tmp_path / "hf").glob("*processor*.json")).read_text())
    assert processor["crop_size"] in (32, {"height": 32, "width": 32}) and processor["image_mean"] == [0.485, 0.456, 0.406]
    assert json.loads((tmp_path / "hf" / "salt.json").read_text())["predictor"] is False
    assert transformers.AutoVideoProcessor.from_pretrained(tmp_path / "hf").crop_size["height"] == 32


def test_import_reads_a_vjepa2_folder_back_exactly(tmp_path):
    """The other way: any VJEPA2Model folder (here transformers' own random init) as a salt encoder."""
    torch.manual_seed(3)
    config = transformers.VJEPA2Config(hidden_size=192, num_attention_heads=3, num_hidden_layers=2, crop_size=32,
                                       patch_size=8, frames_per_clip=8, tubelet_size=2, pred_hidden_size=64,
                                       pred_num_attention_heads=2, pred_num_hidden_layers=1)
    transformers.VJEPA2Model(config).save_pretrained(tmp_path / "hf")
    assert is_hf_folder(tmp_path / "hf") and not is_hf_folder(tmp_path)
    encoder, info = load_encoder(tmp_path / "hf")
    assert (info.size, info.depth, info.img_size, info.num_frames, info.use_rope) == ("tiny", 2, 32, 8, True)
    assert read_encoder_info(tmp_path / "hf") == info and len(encoder_fingerprint(tmp_path / "hf")) == 64
    x = clips(seed=5)
    with torch.no_grad():
        ours = encoder.eval()(x)
    assert (ours - hf_features(tmp_path / "hf", x)).abs().max() < 1e-5


def test_a_vjepa2_folder_is_a_teacher_and_an_initialisation(synth_shards, tmp_path):
    encoder = tiny_encoder(seed=7)
    export_hf(encoder, tmp_path / "hf", num_frames=8, img_size=32, mean=(0.485, 0.456, 0.406),
              std=(0.229, 0.224, 0.225))
    common = MICRO + ["--shards", str(synth_shards), "--steps", "2", "--run.log_every=1", "--run.checkpoint_every=2"]
    assert train_main(common + ["--stage", "student", "--teacher", str(tmp_path / "hf"), "--run-dir",
                                str(tmp_path / "student")]) == 0
    from salt.build import build_model_encoder

    cfg = load_config("debug", ["model.use_rope=true", f"model.init={tmp_path / 'hf'}"])
    started = build_model_encoder(cfg)
    assert all(torch.equal(a, b) for a, b in zip(started.state_dict().values(), encoder.state_dict().values(),
                                                  strict=True))
    assert train_main(common + ["--stage", "teacher", "--init", str(tmp_path / "hf"), "--run-dir",
                                str(tmp_path / "teacher")]) == 0
    assert train_main(common + ["--stage", "teacher", "--init", str(tmp_path / "hf"), "--model.use_rope=false",
                                "--run-dir", str(tmp_path / "bad")]) == 2  # another encoder: refused, one line


def test_a_vjepa_runs_predictor_exports_with_it(synth_shards, tmp_path):
    run = tmp_path / "vjepa"
    assert train_main(MICRO + ["--stage", "vjepa", "--shards", str(synth_shards), "--steps", "2", "--run-dir", str(run),
                               "--run.checkpoint_every=2", "--run.log_every=1"]) == 0
    assert export_main([str(run), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    assert json.loads((tmp_path / "hf" / "salt.json").read_text())["predictor"] is True
    from salt.models.export import run_predictor

    predictor, why = run_predictor(run)
    assert why is None
    encoder, _ = load_encoder(run)
    model = transformers.AutoModel.from_pretrained(tmp_path / "hf").eval()
    x = clips(batch=2, seed=9)
    g = torch.Generator().manual_seed(2)
    order = torch.stack([torch.randperm(64, generator=g) for _ in range(2)])
    ctx, tgt = order[:, :40].sort(1).values, order[:, 40:].sort(1).values  # (B, 40), (B, 24)
    with torch.no_grad():
        z = encoder.eval()(x)  # (B, N, D)
        want = predictor.eval()(torch.gather(z, 1, ctx.unsqueeze(-1).expand(-1, -1, 192)), ctx, tgt)
        got = model(pixel_values_videos=x.permute(0, 2, 1, 3, 4), context_mask=[ctx], target_mask=[tgt])
    assert (got.predictor_output.last_hidden_state - want).abs().max() < 1e-5


def test_hf_export_refusals_are_one_line(tmp_path, monkeypatch, capsys):
    sincos = tiny_encoder(use_rope=False)
    export_encoder(sincos, info_of(sincos), tmp_path / "sincos")
    assert export_main([str(tmp_path / "sincos"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no absolute position table" in err and "--model.use_rope=true" in err
    monkeypatch.setitem(sys.modules, "transformers", None)  # as where the extra is not installed
    rope = tiny_encoder()
    with pytest.raises(HFFormatError, match=r"needs transformers: pip install -e '\.\[hf\]'"):
        export_hf(rope, tmp_path / "x", num_frames=8, img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert not (tmp_path / "x").exists()
