"""The training loop of every stage: DeepSpeed engine, schedules, metrics, checkpoints, resume, export.

A run stops early on SIGTERM or SIGINT at a step boundary (the same step on every rank), after writing a
checkpoint: `Trainer.stopped_by` names the signal and a later --resume continues exactly. Samples that
fail to decode are skipped, each logged once on the main rank's console, and listed in summary.json.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from dataclasses import replace
from pathlib import Path

import deepspeed
import torch
import yaml

from salt.atomic import reporting_write_errors, write_json_atomic, write_text_atomic
from salt.build import build_masks, encoder_info
from salt.config import Config, ConfigError, dump_config, from_dict, to_dict
from salt.data.batch import VideoBatch
from salt.data.loaders import open_loader
from salt.data.plan import RemoteReadError
from salt.data.train_clip import wasted_decode_note
from salt.engine import collectives
from salt.engine.checkpoint import incomplete_tags, latest_tag, load_checkpoint, save_checkpoint, tag_for
from salt.engine.deepspeed_setup import (
    TrainableParts,
    autocast_dtype,
    load_ds_config,
    offloads_optimizer,
    reconcile,
    with_precision,
    zero_stage,
)
from salt.engine.distributed import DistInfo
from salt.engine.rng import initial_weights_seed, rng_state, set_rng_state
from salt.engine.stopping import FirstSignal, LauncherWatch, collective_failed, collective_reason
from salt.health import health_metrics
from salt.metrics import MetricsLogger, Window, memory_stats, peak_tflops
from salt.models.blocks import set_block_options
from salt.models.io import EXPORT_DIR, encoder_fingerprint, export_encoder
from salt.optim import apply_schedule, build_optimizer, effective_optim, lr_scale, optimizer_kind
from salt.precision import Precision, resolve_precision, short_name, weights_dtype
from salt.resume import changed_settings, describe_changes
from salt.stages import build_objective, objective_class
from salt.targets.fingerprint import teacher_fingerprint
from salt.targets.format import TargetCacheError
from salt.targets.reader import TargetCache, TargetPrefetcher

# keys that may change when a run is resumed (how it runs, not what it computes); anything else must match
RESUMABLE_CHANGES = {"run.steps", "run.stop_after", "run.log_every", "run.checkpoint_every", "run.keep_checkpoints",
                     "run.tensorboard", "run.probe_every", "run.probe_shards", "run.probe_samples", "run.threads",
                     "run.compile", "run.export_steps", "model.grad_checkpointing", "data.threads", "data.prefetch", "data.loader",
                     "data.strict", "run.peer_timeout_s", "data.remote_attempts", "data.remote_timeout_s",
                     "data.max_bad_fraction"}


class TrainingError(RuntimeError):
    pass


class LostRankError(TrainingError):
    """A collective failed: another rank is gone (killed, crashed). The run resumes from its latest checkpoint."""


def open_target_cache(cfg: Config, device: torch.device) -> TargetCache:
    """The student stage's target cache, refused when made for another teacher, geometry or view recipe.
    Rows are read into pinned memory for a GPU, so their copy there is asynchronous."""
    cache = TargetCache(cfg.targets.cache, pin_memory=device.type == "cuda")
    fingerprint = teacher_fingerprint(cfg.teacher.path) if cfg.teacher.path else None
    cache.check_run(cfg.data, cfg.model.patch_size, cfg.model.tubelet_size, fingerprint)
    return cache


def resolved_config(cfg: Config, device: torch.device, ds: dict) -> tuple[Config, Precision]:
    """The run config with what `auto` means on this device written in (run.precision, teacher.dtype):
    what config.yaml keeps, and what a --resume compares."""
    precision = resolve_precision(cfg.run.precision, device, autocast_dtype(ds))
    teacher = short_name(weights_dtype(cfg.teacher.dtype, precision.name))
    return replace(cfg, run=replace(cfg.run, precision=precision.name),
                   teacher=replace(cfg.teacher, dtype=teacher)), precision


class Trainer:
    def __init__(self, cfg: Config, dist: DistInfo, resume: bool = False):
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        ds_json = load_ds_config(cfg.run.deepspeed_config)
        cfg, self.precision = resolved_config(cfg, dist.device, ds_json)
        self.cfg, self.dist = cfg, dist
        self._check_run_dir(resume)  # nothing is written until the trainer is built (a refused run leaves no trace)

        ds_cfg = with_precision(reconcile(ds_json, cfg, dist.world), self.precision)
        self.zero_stage = zero_stage(ds_cfg)
        self.compute_dtype = self.precision.autocast
        if cfg.run.compile and self.zero_stage == 3:
            raise ConfigError("run.compile compiles each block in place, under DeepSpeed's ZeRO-3 parameter hooks, "
                              "which then gather and release the weights outside the compiled graphs: use ZeRO "
                              "stage 1 or 2 with run.compile, or run.compile=false with ZeRO 3")
        if dist.device.type == "cuda" and self.compute_dtype is None:
            torch.set_float32_matmul_precision("high")  # fp32 matmuls on TF32 tensor cores (the peak below is TF32's)
        # measured (on a CPU) before any loader thread starts competing for the cores
        peak, source = peak_tflops(dist.device, self.compute_dtype, cfg.run.peak_tflops)
        stage = objective_class(cfg.stage)
        self.mask_generator = build_masks(cfg) if stage.uses_masks else None
        # a stage fed by a teacher, from a target cache: each sample loads one of the cache's K views per epoch
        self.targets = open_target_cache(cfg, dist.device) if stage.uses_teacher and cfg.targets.cache else None
        data = replace(cfg.data, cached_views=self.targets.num_views) if self.targets else cfg.data
        if not data.shards:
            raise ConfigError("no training data: pass --shards shards/NAME (a folder made by dataprep.shards)")
        self.loader = open_loader(data, cfg.data.loader, rank=dist.rank, world=dist.world,
                                  mask_generator=self.mask_generator, device=dist.device)
        self.target_prefetch = None
        if self.targets:
            self.targets.check_covers(self.loader.shards.keys, cfg.data.shards)
            self.target_prefetch = TargetPrefetcher(self.targets, self.loader.planner)

        torch.manual_seed(initial_weights_seed(cfg.run.seed, stage.uses_teacher))  # the same on every rank
        self.objective = build_objective(cfg, teacher_width=self.targets.width if self.targets else None,
                                         num_classes=len(self.loader.shards.classes)).to(dist.device)
        set_block_options(self.objective, checkpointing=cfg.model.grad_checkpointing, compile=cfg.run.compile)
        if cfg.run.probe_every and self.zero_stage == 3:
            raise ConfigError("run.probe_every reads the encoder's full weights: use ZeRO stage 1 or 2 (or probe the "
                              "exported checkpoints with python -m salt.eval.probe)")
        if stage.needs_full_parameters and self.zero_stage == 3:
            raise ConfigError(f"the {cfg.stage} stage's per-step update reads full parameters: use ZeRO stage 1 or 2")
        offload = offloads_optimizer(ds_cfg)
        self.optimizer_kind = optimizer_kind(dist.device, offload)
        global_batch = dist.world * cfg.data.batch_size * cfg.optim.accumulation
        self.lr_scale = lr_scale(cfg.optim, global_batch)
        self.optim_cfg = effective_optim(cfg.optim, global_batch)  # the rates this run follows
        optimizer = build_optimizer(self.objective.trainable_modules(), self.optim_cfg, device=dist.device,
                                    offload=offload)
        self.engine, self.optimizer, _, _ = deepspeed.initialize(model=TrainableParts(self.objective),
                                                                 optimizer=optimizer, config=ds_cfg)
        self.teacher_fingerprint = encoder_fingerprint(cfg.teacher.path) if stage.uses_teacher and \
            cfg.teacher.path and not cfg.targets.cache else None
        if self.targets:
            self.teacher_fingerprint = self.targets.teacher_fingerprint
        torch.manual_seed(cfg.run.seed + 1000 * dist.rank)  # drop-path differs across ranks
        self.checkpoint_probe = None
        if cfg.run.probe_every and dist.is_main:
            from salt.eval.checkpoint_probe import CheckpointProbe

            self.checkpoint_probe = CheckpointProbe(cfg.data, cfg.run.probe_shards, cfg.run.probe_samples,
                                                    cfg.data.loader, dist.device)
        self.step = 0
        self.flops_done = 0.0  # model FLOPs of the steps so far, all ranks (for matched-compute comparisons)
        self.bad_keys: set[str] = set()  # samples skipped as undecodable, all ranks, the whole run
        self.stopped_by: str | None = None  # the signal that stopped the run early (train() returned)
        if resume:
            self._resume()
        self._start_run_dir()
        self.metrics = MetricsLogger(self.run_dir, cfg.stage, cfg.run.steps, peak, source, dist.world,
                                     dist.is_main, cfg.run.tensorboard, resume_step=self.step if resume else None)
        if dist.is_main:
            print(f"[{cfg.stage}] {self.num_params() / 1e6:.2f}M trained parameters, world {dist.world}, "
                  f"{dist.device.type} ({dist.backend}), ZeRO {self.zero_stage}, AdamW {self.optimizer_kind}, "
                  f"{len(self.loader)} batches/epoch, peak {peak:.3g} TFLOP/s ({source}), run {self.run_dir}",
                  flush=True)
            print(f"[{cfg.stage}] precision {self.precision.describe()}", flush=True)
            print(f"[{cfg.stage}] {self.lr_scale.describe(cfg.optim)}", flush=True)
            wasted = wasted_decode_note(self.loader.shards.manifest, cfg.data.frame_stride)
            if wasted:
                print(wasted, flush=True)
            if self.targets:
                print(f"[student] targets from cache {cfg.targets.cache}: {self.targets.num_views} views per sample, "
                      f"{self.targets.dtype}, teacher {self.targets.teacher_fingerprint[:12]}", flush=True)
                decoded_on = getattr(self.loader, "device", "cpu")  # the reference loader decodes on the CPU
                note = self.targets.decode_note(cfg.data.loader, decoded_on)
                if note:
                    print(note, flush=True)

    # ------------------------------------------------------------------ set-up

    def _check_run_dir(self, resume: bool) -> None:
        saved = self.run_dir / "config.yaml"
        if resume:
            if not latest_tag(self.ckpt_dir):
                raise ConfigError(f"--resume: no complete checkpoint in {self.ckpt_dir}")
            if saved.exists():
                try:
                    # through the config tree: a key added since the run started reads as its default
                    old = to_dict(from_dict(Config, yaml.safe_load(saved.read_text()) or {}))
                    # a run folder from before precisions were recorded: its "auto" meant what it means here
                    for section, key in (("run", "precision"), ("teacher", "dtype")):
                        if old[section][key] == "auto":
                            old[section][key] = getattr(getattr(self.cfg, section), key)
                    changes = changed_settings(old, to_dict(self.cfg), ignore=RESUMABLE_CHANGES)
                except (yaml.YAMLError, ConfigError) as e:
                    raise ConfigError(f"--resume: {saved} is not a config this program wrote "
                                      f"({_first_line(e)}); start a new --run-dir") from None
                if changes:
                    hint = ""
                    if any(key == "run.precision" for key, *_ in changes):
                        hint = (f"; run.precision={self.cfg.run.precision} is what "
                                f"{'auto chose on this machine' if 'auto' in self.precision.reason else 'was asked'}:"
                                f" pass --run.precision={old['run']['precision']} to continue in the run's precision")
                    raise ConfigError(f"--resume with a different config ({describe_changes(changes)}){hint}; resume "
                                      f"with the run's {saved} or start a new --run-dir")
        elif latest_tag(self.ckpt_dir):
            raise ConfigError(f"{self.run_dir} already holds checkpoints: pass --resume to continue it, or choose "
                              "another --run-dir")

    def _start_run_dir(self) -> None:
        """Once the trainer is built: the run folder, its resolved config.yaml, and no half-written checkpoint."""
        if self.dist.is_main:
            with reporting_write_errors(self.run_dir):
                self.run_dir.mkdir(parents=True, exist_ok=True)
            write_text_atomic(self.run_dir / "config.yaml", dump_config(self.cfg))
            for tag in incomplete_tags(self.ckpt_dir):  # a run killed while writing it; never loaded
                shutil.rmtree(self.ckpt_dir / tag, ignore_errors=True)
                print(f"removed incomplete checkpoint {self.ckpt_dir / tag} (the run stopped while writing it)",
                      flush=True)
        collectives.barrier()

    def num_params(self) -> int:
        return sum(p.numel() for m in self.objective.trainable_modules() for p in m.parameters())

    # ------------------------------------------------------------------ loop

    def train(self, stop: FirstSignal | None = None) -> dict | None:
        """stop: the caller's installed stop flag; without one, SIGTERM and SIGINT are caught here while
        training. Returns the last metrics row; `stopped_by` is set when a signal stopped the run."""
        own = stop is None
        stop = FirstSignal().install() if own else stop
        watch = LauncherWatch(announce=self.dist.is_main).start()
        try:
            return self._train(stop)
        except RuntimeError as e:
            if not collective_failed(e):
                raise
            raise LostRankError(f"rank {self.dist.rank} lost contact with the other ranks after step {self.step} "
                                f"({collective_reason(e)}); resume the run from its latest checkpoint with --resume"
                                ) from None
        finally:
            watch.stop()
            if own:
                stop.uninstall()

    def _train(self, stop: FirstSignal) -> dict | None:
        """The loop performs no host read of a device value on a step that does not log: losses, the grad
        norm and the stage's metrics stay on the device in the Window, and the log step reads them at once
        (tests/test_device_logic.py counts the reads)."""
        cfg, total = self.cfg, self.cfg.run.steps
        end = min(total, cfg.run.stop_after) if cfg.run.stop_after else total
        batches = self.loader.endless()
        window, last_row, first = None, None, self.step + 1
        device = self.dist.device
        if self.step == 0 and 0 in cfg.run.export_steps:  # the initialisation itself
            self.export(history_only=True)
        self.engine.train()
        while self.step < end:
            window = window or Window()
            data_s, clips, flops, losses = 0.0, 0, 0.0, []
            lr, wd = apply_schedule(self.optimizer, self.step, total, self.optim_cfg)
            for micro in range(cfg.optim.accumulation):
                t_data = time.perf_counter()
                try:
                    batch = next(batches)
                except RemoteReadError as e:
                    raise self._remote_failure(e, at_step_boundary=micro == 0) from None
                video = batch.model_input(device)  # (B * V, C, T, H, W) float, normalised
                # pinned host tensors (loaders pin for a GPU): asynchronous copies
                masks = [m.to(device, non_blocking=True) for m in batch.masks] if batch.masks else None
                targets = self._cached_targets(batch) if self.targets else None  # (B, N, D) float32
                if self.objective.needs_labels and batch.unlabelled:
                    raise TrainingError(f"the {cfg.stage} stage got {batch.unlabelled} unlabelled samples (label -1) "
                                        f"in batch {batch.index}: train it on labelled shards")
                labels = batch.labels.to(device, non_blocking=True) if self.objective.needs_labels else None  # (B,)
                data_s += time.perf_counter() - t_data
                out = self.engine(video, masks, targets=targets, labels=labels)
                self.engine.backward(out.loss)
                self.engine.step()
                losses.append(out.loss.detach())
                clips += video.shape[0]
                flops += self.objective.step_flops(batch.masks, cached_targets=targets is not None
                                                   ).train_step * video.shape[0]
            self.objective.after_step(self.step, total)
            self.step += 1
            self.flops_done += flops * self.dist.world
            window.add(clips=clips, data_s=data_s, flops=flops,
                       loss=losses[0] if len(losses) == 1 else torch.stack(losses).mean(),
                       grad_norm=self.engine.get_global_grad_norm(), extra=out.metrics)
            if self.step == first:  # ranks start (build, compile, first batches) at their own pace
                collectives.barrier()
            # step boundary: one exchange over the control group says whether any rank was signalled or
            # skipped a sample
            stopping = self._boundary(stop)
            probing = bool(cfg.run.probe_every) and (self.step % cfg.run.probe_every == 0 or self.step == end
                                                     or self.step in cfg.run.export_steps)
            if self.step % cfg.run.log_every == 0 or self.step == end or probing or (stopping and window.steps):
                extra = {"bad_samples": len(self.bad_keys), "storage_retries": self.loader.stats.storage_retries}
                if probing:
                    extra.update(self._probe(window))
                    collectives.barrier()  # the other ranks wait here for the main rank's probe
                values = self._read_window(window, out.features)
                last_row = self.metrics.record(self.step, batch.epoch, window, window.elapsed_s(), lr, wd,
                                               {**values, **extra})
                window = None
            checkpointing = self.step % cfg.run.checkpoint_every == 0 or self.step == end or stopping
            if checkpointing:
                self.checkpoint()
            if self.step in cfg.run.export_steps and not (checkpointing and cfg.run.export_history):
                self.export(history_only=True)
            if checkpointing:
                # a signal during the checkpoint: stop on it now rather than after one more step
                stopping = stopping or (self.step < end and self._boundary(stop, bad=False))
            if stopping and self.step < end:  # a signal at the last step changes nothing
                self.stopped_by = stopping
                break
        retries = sum(collectives.gather_objects(self.loader.stats.storage_retries))  # every rank's
        if self.dist.is_main and last_row is not None:
            write_json_atomic(self.run_dir / "summary.json", {
                "stage": cfg.stage, "step": self.step, "steps": total, "finished": self.step >= total,
                "stopped_by": self.stopped_by or ("run.stop_after" if self.step < total else None),
                "train_flops": self.flops_done, "final_loss": last_row["loss"], "world": self.dist.world,
                "global_batch": self.lr_scale.global_batch, "lr_rule": self.lr_scale.describe(cfg.optim),
                "peak_lr": self.optim_cfg.lr,
                "precision": cfg.run.precision, "device": str(self.dist.device),
                "trained_params": self.num_params(), "bad_samples": len(self.bad_keys),
                "bad_keys": sorted(self.bad_keys), "storage_retries": retries, "last_window": last_row})
        return last_row

    def _remote_failure(self, e: RemoteReadError, at_step_boundary: bool) -> TrainingError:
        """The shard set's server stayed unreachable past the retry budget. One process (or every rank at
        once) at a step boundary writes a checkpoint of the steps done; otherwise the latest one stands."""
        if self.dist.world == 1 and at_step_boundary and self.step > 0 and not (self.ckpt_dir / tag_for(self.step)).exists():
            self.checkpoint()
            return TrainingError(f"{e}; checkpoint written at step {self.step}: --resume continues from it once the "
                                 "server answers")
        return TrainingError(f"{e}; --resume continues from the latest checkpoint once the server answers")

    def _read_window(self, window: Window, features: torch.Tensor | None) -> dict[str, float | None]:
        """The window's losses and metrics, and this step's feature health, averaged over ranks on the device
        and read back with one transfer; memory is the maximum over ranks. Raises TrainingError when a
        loss of the window was not finite."""
        device = self.dist.device
        names, parts = ["loss", "nonfinite"], []
        losses = torch.stack(window.losses).float()  # (steps,)
        parts += [losses.mean(), (~torch.isfinite(losses)).float().sum()]
        host: dict[str, list[float]] = {}
        series = {"grad_norm": window.grad_norms, **window.extra}
        health = health_metrics(features)
        for key, values in series.items():
            if values and all(isinstance(v, torch.Tensor) for v in values):
                names.append(key)
                parts.append(torch.stack([v.detach().float().to(device) for v in values]).mean())
            elif values:  # numbers known on the host (context fractions; DeepSpeed's norm as a float)
                host[key] = [float(v) for v in values if not isinstance(v, torch.Tensor)]
        for key, value in health.items():
            names.append(key)
            parts.append(value.float())
        reduced = collectives.mean(torch.stack([p.reshape(()).to(device) for p in parts]))
        read = dict(zip(names, reduced.tolist(), strict=True))  # the window's one host read
        if read.pop("nonfinite") > 0:
            raise TrainingError(f"the loss became non-finite between steps {self.step - window.steps + 1} and "
                                f"{self.step}; lower optim.lr or check the data")
        for key, values in host.items():
            finite = [v for v in values if v == v and abs(v) != float("inf")]
            read[key] = sum(finite) / len(finite) if finite else None
        memory = collectives.gather_objects(memory_stats(device))
        read.update({k: max(m[k] for m in memory) for k in memory[0]})
        if "feature_std" in read and read["feature_std"] != read["feature_std"]:  # NaN: a batch of one clip
            read.pop("feature_std")
            read.pop("rankme", None)
        return read

    def _probe(self, window: Window) -> dict[str, float]:
        """The k-NN probe on the main rank; its time is left out of the window's step time."""
        if self.checkpoint_probe is None:
            return {}
        t0 = time.perf_counter()
        result = self.checkpoint_probe(self.objective.exported_encoder())
        result["probe_s"] = time.perf_counter() - t0
        window.excluded_s += result["probe_s"]
        return result

    def _boundary(self, stop: FirstSignal, bad: bool = True) -> str | None:
        """Collective: the stop signal if any rank got one (all ranks then stop after this step); with
        `bad`, also gathers the samples skipped since the last boundary and logs each new one once."""
        new_bad = self.loader.take_new_bad() if bad else []
        code = int(signal.Signals[stop.signame]) if stop.signame else 0
        if self.dist.world > 1:
            code, any_bad = collectives.max_flags([code, len(new_bad)])
            if any_bad:
                new_bad = [item for rank_bad in collectives.gather_objects(new_bad) for item in rank_bad]
        for key, shard in new_bad:
            if key not in self.bad_keys:
                self.bad_keys.add(key)
                if self.dist.is_main:
                    print(f"skipped undecodable sample {key} in {shard} ({len(self.bad_keys)} skipped so far)",
                          file=sys.stderr, flush=True)
        return signal.Signals(code).name if code else None

    def _cached_targets(self, batch: VideoBatch) -> torch.Tensor:
        try:
            stored = self.target_prefetch.get(batch.keys, batch.view_ids, batch.epoch, batch.index)
        except TargetCacheError as e:
            raise TrainingError(str(e)) from None
        return stored.decode(self.dist.device)  # (B, N, D) float32

    # ------------------------------------------------------------------ checkpoints

    def _client_state(self) -> dict:
        return {
            "step": self.step,
            "flops_done": self.flops_done,
            "loader": collectives.gather_objects(self.loader.state_dict()),
            "rng": collectives.gather_objects(rng_state(self.dist.device)),
            "config": to_dict(self.cfg),
            "teacher_fingerprint": self.teacher_fingerprint,
            **self.objective.extra_state(),
        }

    def checkpoint(self) -> None:
        state = self._client_state()
        save_checkpoint(self.engine, self.ckpt_dir, self.step, state, self.cfg.run.keep_checkpoints,
                        self.dist.is_main)
        self.export()

    def export(self, history_only: bool = False) -> None:
        """export/ (the latest encoder) and, with run.export_history or `history_only`, export/step_N/."""
        encoder = self.objective.exported_encoder()
        folders = [] if history_only else [self.run_dir / EXPORT_DIR]
        if self.cfg.run.export_history or history_only:
            folders.append(self.run_dir / EXPORT_DIR / tag_for(self.step))

        def write() -> None:
            if self.dist.is_main:
                for folder in folders:
                    with reporting_write_errors(folder / "encoder.safetensors"):
                        export_encoder(encoder, encoder_info(self.cfg, self.step), folder)

        if self.zero_stage == 3:
            with deepspeed.zero.GatheredParameters(list(encoder.parameters()), modifier_rank=None):
                write()
        else:
            write()
        collectives.barrier()

    def _resume(self) -> None:
        tag = latest_tag(self.ckpt_dir)
        state = load_checkpoint(self.engine, self.ckpt_dir, tag)
        self.step = int(state["step"])
        self.flops_done = float(state.get("flops_done", 0.0))
        if self.teacher_fingerprint and state.get("teacher_fingerprint") not in (None, self.teacher_fingerprint):
            where = f"target cache {self.cfg.targets.cache}" if self.targets else f"teacher at {self.cfg.teacher.path}"
            raise ConfigError(f"--resume: the {where} is not the one this run started with")
        loaders = state.get("loader", [])
        self.bad_keys = {k for saved in loaders for k in saved.get("bad_keys", [])}
        if len(loaders) == self.dist.world:
            self.loader.load_state_dict(loaders[self.dist.rank])
        elif loaders:
            self.loader.load_state_dict({**loaders[0], "batch": 0})
            if self.dist.is_main:
                print(f"resume: world size changed ({len(loaders)} -> {self.dist.world}); data restarts at the "
                      f"start of epoch {loaders[0]['epoch']}", flush=True)
        rngs = state.get("rng", [])
        if len(rngs) == self.dist.world:
            set_rng_state(rngs[self.dist.rank], self.dist.device)
        self.objective.load_extra_state(state)
        if self.dist.is_main:
            print(f"resumed from {self.ckpt_dir / tag} at step {self.step}", flush=True)

    def close(self) -> None:
        self.metrics.close()
        self.loader.close()
        if self.targets:
            self.target_prefetch.close()
            self.targets.close()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__

