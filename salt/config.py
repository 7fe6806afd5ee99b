"""The one typed configuration tree of a training run.

Loaded from a YAML file (`salt/configs/*.yaml`), then overridden by `--key.sub=value` arguments;
unknown keys and ill-typed values are errors that name the key. The resolved tree is written into
the run folder as `config.yaml`, and reloading that file gives the same run.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from salt.data.config import LoaderConfig
from salt.data.loaders import LOADERS
from salt.masks.factory import MASK_KINDS
from salt.masks.multiblock import DEFAULT_MULTIBLOCK, BlockSpec
from salt.models.pixel_decoder import DEFAULT_PIXEL_DECODER
from salt.models.predictor import DEFAULT_PREDICTOR
from salt.models.token_decoder import DecoderSpec
from salt.precision import PRECISIONS
from salt.stage_names import STAGES

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
LR_SCALING = ("linear", "sqrt", "none")


class ConfigError(ValueError):
    pass


@dataclass
class ModelConfig:
    size: str = "tiny"  # tiny, small, base, large, huge, giant, gigantic
    depth: int | None = None  # override the size's depth (small debug models)
    patch_size: int = 16
    tubelet_size: int = 2
    drop_path: float = 0.0
    use_rope: bool = False
    grad_checkpointing: bool = False  # recompute block activations in backward (encoder, predictor, decoder)
    init: str = ""  # start the trained encoder from these weights: a run folder, an exported encoder or a
    # transformers V-JEPA 2 folder of the same architecture and clip geometry


@dataclass
class PixelLossConfig:
    kind: str = "mse"  # mse | l1
    norm_pix: bool = True  # per-patch normalised pixel targets


@dataclass
class TeacherRefConfig:
    path: str = ""  # student stage: a teacher run folder or an exported encoder (.safetensors)
    dtype: str = "auto"  # auto | bf16 | fp32: the frozen teacher's weights; auto: bf16 when the run computes in
    # bf16, fp32 when it computes in fp32


@dataclass
class TargetsConfig:
    cache: str = ""  # student stage: a teacher-target cache folder; empty runs the teacher online


@dataclass
class SupervisedConfig:
    label_smoothing: float = 0.0  # supervised stage: cross-entropy label smoothing


@dataclass
class EmaConfig:
    start: float = 0.998  # vjepa stage: EMA momentum, rising linearly to `end` over the run
    end: float = 1.0


@dataclass
class MaskConfig:
    kind: str = "multiblock"  # multiblock | tube | random | full (no masking: the ablation of salt.masks.full)
    ratio: float = 0.9  # tube and random masks
    blocks: list[BlockSpec] = field(default_factory=lambda: list(DEFAULT_MULTIBLOCK))  # multiblock: V-JEPA's


@dataclass
class DataConfig(LoaderConfig):
    loader: str = "dali"  # dali | reference


@dataclass
class OptimConfig:
    # The three rates are given at `reference_batch` clips per optimizer step, as published recipes give
    # them, and scaled to the run's global batch (ranks x data.batch_size x accumulation) by `lr_scaling`:
    # linear (Goyal et al.; MAE, V-JEPA), sqrt, or none (taken as they are). salt.optim.effective_optim
    # does it; the run prints and records the effective rates.
    lr: float = 5e-4  # peak learning rate at reference_batch
    start_lr: float = 1e-5  # at step 0, rising linearly to `lr` over warmup_steps
    final_lr: float = 1e-6  # cosine decay from `lr` to this at the last step
    reference_batch: int = 256  # the global batch the rates above are given at
    lr_scaling: str = "linear"  # linear | sqrt | none
    warmup_steps: int = 100
    weight_decay: float = 0.04  # cosine schedule from this ...
    final_weight_decay: float = 0.4  # ... to this
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = 1.0  # must equal the DeepSpeed config's gradient_clipping when that sets one
    accumulation: int = 1  # gradient accumulation steps


@dataclass
class RunConfig:
    dir: str = "runs/default"
    steps: int = 1000
    stop_after: int | None = None  # stop (and checkpoint) after this step; a later --resume continues
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    keep_checkpoints: int = 2
    export_history: bool = False  # also keep export/step_NNNNNNNN/ at every checkpoint (probe curves)
    deepspeed_config: str = "ds_configs/zero1.json"  # ZeRO stage, autocast asked for, clipping, offload
    precision: str = "auto"  # auto | bf16 | fp16 | fp32: compute precision (salt.precision); auto: bf16 where it
    # is native (GPUs, CPUs with AVX512-BF16/AMX), fp32 elsewhere; config.yaml in the run folder holds the choice
    peer_timeout_s: float = 120.0  # a rank that hears nothing from a peer at the per-step exchange for this long
    # stops with one line (a dead or hung peer), instead of waiting for the collective's 30-minute timeout
    peak_tflops: float | None = None  # per device, for MFU; None: known GPU peak, or measured on the CPU
    tensorboard: bool = True  # also log to <dir>/tensorboard when tensorboard is installed
    threads: int | None = None  # torch intra-op threads per process; None: cores / processes
    compile: bool = False  # torch.compile each transformer block in place (salt.models.blocks.set_block_options)
    probe_every: int = 0  # >0: k-NN probe of the encoder every this many steps (and at the end), into metrics
    probe_shards: str = ""  # labelled held-out shard set the k-NN probe queries (the bank: data.shards)
    probe_samples: int = 200  # clips of each, the first ones in stored order: the same at every checkpoint
    export_steps: list[int] = field(default_factory=list)  # also export the encoder (export/step_N/) and probe it
    # (with probe_every) after these steps; 0 is the initialisation, before the first step


@dataclass
class Config:
    stage: str = "teacher"
    model: ModelConfig = field(default_factory=ModelConfig)
    decoder: DecoderSpec = field(default_factory=lambda: DEFAULT_PIXEL_DECODER)
    pixel_loss: PixelLossConfig = field(default_factory=PixelLossConfig)
    predictor: DecoderSpec = field(default_factory=lambda: DEFAULT_PREDICTOR)
    teacher: TeacherRefConfig = field(default_factory=TeacherRefConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    supervised: SupervisedConfig = field(default_factory=SupervisedConfig)
    masks: MaskConfig = field(default_factory=MaskConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> None:
        _check(self.stage in STAGES, "stage", f"must be one of {STAGES}, got {self.stage!r}")
        _check(self.pixel_loss.kind in ("mse", "l1"), "pixel_loss.kind", "must be mse or l1")
        _check(self.teacher.dtype in ("auto", "bf16", "fp32"), "teacher.dtype", "must be auto, bf16 or fp32")
        _check(self.run.precision in PRECISIONS, "run.precision", f"must be one of {', '.join(PRECISIONS)}")
        _check(self.run.peer_timeout_s > 0, "run.peer_timeout_s", f"must be > 0, got {self.run.peer_timeout_s}")
        _check(self.masks.kind in MASK_KINDS, "masks.kind", f"must be one of {', '.join(MASK_KINDS)}")
        _check(self.data.loader in LOADERS, "data.loader", f"must be one of {LOADERS}")
        _check(self.data.mode != "precompute", "data.mode", "precompute is the target-cache job's mode "
               "(python -m dataprep.targets), not a training mode")
        _check(self.run.steps >= 1, "run.steps", "must be >= 1")
        _check(self.run.log_every >= 1, "run.log_every", f"must be >= 1, got {self.run.log_every}")
        _check(self.run.checkpoint_every >= 1, "run.checkpoint_every", f"must be >= 1, got {self.run.checkpoint_every}")
        _check(self.run.stop_after is None or self.run.stop_after >= 1, "run.stop_after",
               f"must be >= 1 (or null: run to run.steps), got {self.run.stop_after}")
        _check(self.run.keep_checkpoints >= 1, "run.keep_checkpoints", f"must be >= 1, got {self.run.keep_checkpoints}")
        _check(self.run.threads is None or self.run.threads >= 1, "run.threads",
               f"must be >= 1 (or null: cores / processes), got {self.run.threads}")
        _check(self.optim.accumulation >= 1, "optim.accumulation", "must be >= 1")
        _check(self.optim.reference_batch >= 1, "optim.reference_batch", f"must be >= 1, got {self.optim.reference_batch}")
        _check(self.optim.lr_scaling in LR_SCALING, "optim.lr_scaling",
               f"must be one of {', '.join(LR_SCALING)}, got {self.optim.lr_scaling!r}")
        _check(all(0 <= s <= self.run.steps for s in self.run.export_steps), "run.export_steps",
               f"every step must be in [0, run.steps={self.run.steps}], got {self.run.export_steps}")
        _check(self.run.probe_every >= 0, "run.probe_every", f"must be >= 0 (0: off), got {self.run.probe_every}")
        _check(not self.run.probe_every or bool(self.run.probe_shards), "run.probe_shards",
               "run.probe_every needs a labelled held-out shard set to probe on")
        _check(self.run.probe_samples >= 2, "run.probe_samples", f"must be >= 2, got {self.run.probe_samples}")
        _check(0.0 <= self.supervised.label_smoothing < 1.0, "supervised.label_smoothing", "must be in [0, 1)")
        if self.stage == "student":
            _check(bool(self.teacher.path or self.targets.cache), "teacher.path",
                   "the student stage needs a frozen teacher (--teacher PATH) or a target cache (targets.cache)")
        try:
            self.data.validate()
        except ValueError as e:
            raise ConfigError(str(e)) from None


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"config key {key}: {message}")


# ---------------------------------------------------------------- loading and saving


def to_dict(cfg: Any) -> Any:
    """A plain YAML-able tree (tuples become lists)."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    return cfg


def from_dict(cls: type, data: dict[str, Any], path: str = "") -> Any:
    """Build dataclass `cls` from `data`, rejecting unknown keys and ill-typed values."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key {path or '<root>'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"; did you mean {(path + '.' if path else '') + close[0]}?" if close else ""
            raise ConfigError(f"unknown config key {where}{hint} (valid here: {', '.join(names)})")
        kwargs[key] = _coerce(hints[key], value, where)
    required = [f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [n for n in required if n not in kwargs]
    if missing:
        raise ConfigError(f"config key {path or '<root>'}: missing {', '.join(missing)}")
    try:
        return cls(**kwargs)
    except ValueError as e:  # a spec's own check (e.g. a mask block's scale range)
        raise ConfigError(f"config key {path or '<root>'}: {e}") from None


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"config key {where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key {where}: expected a list, got {value!r}")
        (arg,) = typing.get_args(tp)
        return [_coerce(arg, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"config key {where}: expected {len(args)} values, got {value!r}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"config key {where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"config key {where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "2e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key {where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key {where}: expected a string, got {value!r}")
    return value


def apply_override(tree: dict[str, Any], assignment: str) -> None:
    """`key.sub=value` into a nested dict; the value is parsed as YAML (numbers, lists, true/false)."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r} must look like --key.sub=value")
    key, raw = assignment.split("=", 1)
    key = key.lstrip("-")
    value = yaml.safe_load(raw) if raw != "" else ""
    node = tree
    parts = key.split(".")
    for p in parts[:-1]:
        child = node.setdefault(p, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key}: {p} is not a section")
        node = child
    node[parts[-1]] = value


def overrides_from_args(rest: list[str]) -> list[str]:
    """Command-line leftovers `--key.sub=value` or `--key.sub value` → `key.sub=value` overrides."""
    overrides, i = [], 0
    while i < len(rest):
        item = rest[i]
        if not item.startswith("--"):
            raise ConfigError(f"unexpected argument {item!r}")
        if "=" in item:
            overrides.append(item[2:])
        elif i + 1 < len(rest) and not rest[i + 1].startswith("--"):
            overrides.append(f"{item[2:]}={rest[i + 1]}")
            i += 1
        else:
            raise ConfigError(f"{item} needs a value (--key.sub=value)")
        i += 1
    return overrides


def resolve_config_path(name: str) -> Path:
    """A path, or the name of a file in salt/configs (with or without .yaml)."""
    p = Path(name)
    if p.exists():
        return p
    for candidate in (CONFIG_DIR / name, CONFIG_DIR / f"{name}.yaml"):
        if candidate.exists():
            return candidate
    shipped = ", ".join(sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name} not found (as a path or in salt/configs: {shipped})")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    tree: dict[str, Any] = {}
    if path:
        loaded = yaml.safe_load(resolve_config_path(str(path)).read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config {path} must be a YAML mapping")
        tree = loaded
    for o in overrides or []:
        apply_override(tree, o)
    cfg = from_dict(Config, tree)
    cfg.validate()
    return cfg


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
