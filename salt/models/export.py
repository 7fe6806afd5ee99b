"""`python -m salt.models.export`: an exported SALT encoder (or a run's) in another model format.

    python -m salt.models.export RUN_OR_EXPORT --format hf --out DIR [--no-predictor]

`--format hf` writes a folder that `transformers.AutoModel.from_pretrained(DIR)` loads as a `VJEPA2Model`
(config.json, model.safetensors), with the video processor's config (`VJEPA2VideoProcessor`: the mean, std
and crop salt's evaluation uses) and salt.json (where it came from). The encoder must use RoPE
(`model.use_rope: true`): V-JEPA 2 has no position table. From a run folder of the V-JEPA or student stage
whose predictor has V-JEPA 2's shape (it maps the encoder's width back to itself), the predictor comes too,
from the run's latest checkpoint (ZeRO 1 or 2); otherwise the folder's predictor is a one-block placeholder
that transformers initialises, and the encoder's features do not depend on it.

Exit codes: 0 written, 2 bad input (one line says why: a sincos encoder, no transformers, a missing path).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def run_predictor(run: Path):
    """(the run's predictor with its trained weights, or None, and why not)."""
    from salt.build import token_grid
    from salt.config import load_config
    from salt.models import build_predictor
    from salt.run_folder import latest_tag

    if not (run / "config.yaml").exists():
        return None, "the source is an exported encoder, not a run folder"
    cfg = load_config(run / "config.yaml")
    if cfg.stage not in ("student", "vjepa"):
        return None, f"the {cfg.stage} stage has no latent predictor"
    tag = latest_tag(run / "checkpoints")
    states = run / "checkpoints" / tag / "mp_rank_00_model_states.pt" if tag else None
    if states is None or not states.exists():
        return None, "the run has no checkpoint with its predictor"
    module = torch.load(states, map_location="cpu", weights_only=False).get("module", {})
    state = {k.removeprefix("parts.1."): v for k, v in module.items() if k.startswith("parts.1.")}
    if not state:
        return None, "the checkpoint holds no full predictor weights (ZeRO 3 partitions them)"
    out_dim, width = state["head.weight"].shape
    predictor = build_predictor(grid=token_grid(cfg), in_dim=state["embed.weight"].shape[1], out_dim=out_dim,
                                spec=cfg.predictor, use_rope=cfg.model.use_rope)
    predictor.load_state_dict(state)
    return predictor, None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m salt.models.export", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("source", help="a run folder, an export folder or encoder.safetensors")
    ap.add_argument("--format", choices=("hf",), default="hf", help="hf: a transformers V-JEPA 2 folder (default)")
    ap.add_argument("--out", required=True, help="the folder to write (replaced atomically if it exists)")
    ap.add_argument("--no-predictor", action="store_true", help="leave the run's predictor out")
    args = ap.parse_args(argv)

    from salt.config import ConfigError, load_config
    from salt.models.hf import HFFormatError, export_hf, predictor_exportable
    from salt.models.io import load_encoder

    source = Path(args.source)
    try:
        encoder, info = load_encoder(source)
        predictor, why = (None, "--no-predictor") if args.no_predictor else run_predictor(source)
        if predictor is not None:
            why = predictor_exportable(encoder, predictor)
            predictor = None if why else predictor
        data = load_config(source / "config.yaml").data if (source / "config.yaml").exists() else None
        mean, std = (data.mean, data.std) if data else ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
        out = export_hf(encoder, args.out, num_frames=info.num_frames, img_size=info.img_size, mean=mean, std=std,
                        predictor=predictor,
                        provenance={"source": str(source.resolve()), "stage": info.stage, "step": info.step,
                                    "frame_stride": info.frame_stride, "size": info.size})
    except (FileNotFoundError, HFFormatError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}: VJEPA2Model ({info.size}, {info.depth} blocks, {info.num_frames}x{info.img_size}x"
          f"{info.img_size} clips, patch {info.patch_size}, tubelet {info.tubelet_size}) and its video processor; "
          + ("with the run's predictor" if predictor is not None else f"placeholder predictor ({why})"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
