"""Train a SALT stage: `deepspeed salt/train.py --stage teacher|student|vjepa --config CONFIG [flags]`.

    # CPU, 2 processes:   DS_ACCELERATOR=cpu deepspeed --num_gpus 2 salt/train.py --stage teacher ...
    # one process:        python salt/train.py --stage teacher ...
    # any config key:     --data.batch_size=16 --optim.lr=3e-4 --masks.kind=tube

parse → build → train → close. See README for the flags and salt/config.py for every key.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# `deepspeed salt/train.py` puts salt/ first on sys.path; the package is imported by its full name
# from the repository root instead, so no module of salt/ can shadow a library.
_here = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
sys.path.insert(0, str(_here.parent))

import argparse  # noqa: E402

from salt.config import ConfigError, load_config, overrides_from_args  # noqa: E402

FIRST_CLASS = {"stage": "stage", "shards": "data.shards", "run_dir": "run.dir", "steps": "run.steps",
               "teacher": "teacher.path", "deepspeed_config": "run.deepspeed_config"}


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="salt/train.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--config", default="tiny", help="YAML file, or a name in salt/configs (default: tiny)")
    p.add_argument("--stage", choices=("teacher", "student", "vjepa"), help="what to train")
    p.add_argument("--shards", help="training shard set (shards/NAME)")
    p.add_argument("--run-dir", help="run folder: config.yaml, metrics.jsonl, checkpoints/, export/")
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--teacher", help="student stage: teacher run folder or exported encoder (.safetensors)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON (ds_configs/zero1.json, zero2.json, zero3.json, ...)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    overrides = [f"{key}={getattr(args, name)}" for name, key in FIRST_CLASS.items() if getattr(args, name) is not None]
    try:
        return args, overrides + overrides_from_args(rest)
    except ConfigError as e:
        p.error(str(e))


def main(argv: list[str] | None = None) -> int:
    args, overrides = parse_args(argv)
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from salt.data.plan import LoaderError
    from salt.data.shardset import ShardSetError
    from salt.engine.distributed import init_distributed, set_threads
    from salt.engine.trainer import Trainer, TrainingError

    dist = init_distributed()
    set_threads(cfg.run.threads, int(os.environ.get("LOCAL_WORLD_SIZE", dist.world)))
    try:
        trainer = Trainer(cfg, dist, resume=args.resume)
    except (ConfigError, FileNotFoundError, LoaderError, ShardSetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        trainer.train()
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        trainer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
