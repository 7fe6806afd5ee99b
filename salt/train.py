"""Train a SALT stage: `deepspeed salt/train.py --stage teacher|student|vjepa|supervised --config CONFIG [flags]`.

    # 8 GPUs:            deepspeed --num_gpus 8 salt/train.py --stage teacher ...
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

import yaml  # noqa: E402

from salt.config import STAGES, ConfigError, load_config, overrides_from_args, resolve_config_path  # noqa: E402
from salt.interrupt import EXIT_STOPPED, Stopped, raise_on_stop_signals  # noqa: E402

# exit codes (README, "Exit codes"): EXIT_STOPPED (75, EX_TEMPFAIL) is "stopped early by a signal, resumable"
EXIT_DONE, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

FIRST_CLASS = {"stage": "stage", "shards": "data.shards", "run_dir": "run.dir", "steps": "run.steps",
               "teacher": "teacher.path", "init": "model.init", "deepspeed_config": "run.deepspeed_config"}


class BadArguments(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not argparse's usage block
        raise BadArguments(f"{message} (salt/train.py --help lists the flags)")


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """Raises BadArguments or ConfigError."""
    p = _Parser(prog="salt/train.py", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--config", default="tiny", help="YAML file, or a name in salt/configs (default: tiny)")
    p.add_argument("--stage", choices=STAGES,
                   help="what to train (required, unless the --config file sets stage)")
    p.add_argument("--shards", help="training shard set (shards/NAME)")
    p.add_argument("--run-dir", help="run folder: config.yaml, metrics.jsonl, summary.json, checkpoints/, export/ "
                                      "(default: the config's run.dir)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the config's run.steps)")
    p.add_argument("--teacher", help="student stage: the frozen teacher: a run folder, an exported encoder "
                                      "(.safetensors) or a transformers V-JEPA 2 folder")
    p.add_argument("--init", help="start the trained encoder from these weights (same kinds as --teacher)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--print-config", action="store_true",
                   help="print the config these flags give (YAML, every key) and exit without training")
    p.add_argument("--deepspeed-config", help="DeepSpeed JSON (ds_configs/zero1.json, zero2.json, zero3.json, ...)")
    p.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args, rest = p.parse_known_args(argv)
    overrides = [f"{key}={getattr(args, name)}" for name, key in FIRST_CLASS.items() if getattr(args, name) is not None]
    return args, overrides + overrides_from_args(rest)


def _one_line(e: BaseException) -> str:
    text = " ".join(line.strip() for line in str(e).strip().splitlines() if line.strip())
    return text or type(e).__name__


def _config(args: argparse.Namespace, overrides: list[str]):
    """The run's config; the stage must be chosen (--stage, or `stage:` in the config file)."""
    try:
        cfg = load_config(args.config, overrides)
        if args.stage is None:
            tree = yaml.safe_load(resolve_config_path(args.config).read_text()) or {}
            if "stage" not in tree and not any(o.startswith("stage=") for o in overrides):
                raise ConfigError(f"no stage chosen: pass --stage {', '.join(STAGES[:-1])} or {STAGES[-1]}")
    except yaml.YAMLError as e:
        raise ConfigError(f"config {args.config} (or an override) is not valid YAML: {_one_line(e)}") from None
    except OSError as e:
        raise ConfigError(f"config {args.config} cannot be read: {e.strerror or e}") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 done (or run.stop_after reached), 1 failed while training, 2 bad input (nothing was
    trained or written), 75 stopped by SIGTERM/SIGINT after writing a checkpoint: continue with --resume."""
    try:
        args, overrides = parse_args(argv)
        cfg = _config(args, overrides)
    except (BadArguments, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.print_config:
        from salt.config import dump_config

        print(dump_config(cfg), end="")  # run.precision and teacher.dtype "auto" are resolved when a run starts
        return EXIT_DONE

    from salt.atomic import WriteError
    from salt.data.plan import LoaderError
    from salt.data.shardset import ShardSetError
    from salt.devices import DeviceError
    from salt.engine.checkpoint import CheckpointError, tag_for
    from salt.engine.distributed import init_distributed, local_world_size, set_threads
    from salt.engine.stopping import FirstSignal
    from salt.engine.trainer import LostRankError, Trainer, TrainingError
    from salt.targets.format import TargetCacheError

    try:
        with raise_on_stop_signals():  # before the first step there is nothing to save: stop at once
            try:
                dist = init_distributed(cfg.run.peer_timeout_s)
            except DeviceError as e:
                print(f"error: {_one_line(e)}", file=sys.stderr)
                return EXIT_BAD_INPUT
            set_threads(cfg.run.threads, local_world_size(dist.world))
            try:
                trainer = Trainer(cfg, dist, resume=args.resume)
            except (ConfigError, FileNotFoundError, LoaderError, ShardSetError, TargetCacheError,
                    CheckpointError, WriteError) as e:
                print(f"error: {_one_line(e)}", file=sys.stderr)
                return EXIT_BAD_INPUT if not isinstance(e, WriteError) else EXIT_FAILED
    except Stopped as e:
        print(f"stopped by {e.signame} before the first step; nothing was written: run the same command again",
              file=sys.stderr)
        return EXIT_STOPPED
    stop = FirstSignal().install()  # from here a signal stops the run at the next step boundary
    try:
        trainer.train(stop)
    except LostRankError as e:
        print(f"error: {_one_line(e)}", file=sys.stderr, flush=True)
        if dist.world > 1:
            # a peer is gone: NCCL's communicators (and gloo's pending work) cannot be torn down cleanly, and
            # the interpreter's exit would wait on them or abort with a C++ trace; the checkpoint is on disk
            try:
                trainer.close()
            finally:
                sys.stdout.flush()
                os._exit(EXIT_FAILED)
        return EXIT_FAILED
    except (TrainingError, LoaderError, ShardSetError, WriteError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        trainer.close()
        stop.uninstall()
    if trainer.stopped_by:
        if dist.is_main:
            print(f"stopped by {trainer.stopped_by} at step {trainer.step}: checkpoint written to "
                  f"{trainer.ckpt_dir / tag_for(trainer.step)}; continue with --resume", file=sys.stderr, flush=True)
        return EXIT_STOPPED
    return EXIT_DONE


if __name__ == "__main__":
    sys.exit(main())
