"""The GPU path's device logic, pinned down on the CPU: collectives only through salt.engine.collectives
and on the right device; backend, device and set_device from one place (CUDA mocked); machine faults in
the DALI loader; no host reads of device values on a non-log step; CUDA RNG in checkpoints; the precision
`auto` chooses per CPU; the optimizer per device; the GPU peak table; pinned host tensors for a GPU."""

from __future__ import annotations

import ast
import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from salt.config import ConfigError, load_config
from salt.data.config import LoaderConfig
from salt.data.plan import LoaderError
from salt.engine import collectives
from salt.precision import CpuFeatures, resolve_precision

REPO = Path(__file__).resolve().parents[1]
COLLECTIVE_CALLS = {"all_reduce", "broadcast", "all_gather", "all_gather_object", "all_gather_into_tensor",
                    "reduce_scatter", "reduce_scatter_tensor", "barrier", "gather", "scatter", "reduce",
                    "all_to_all", "broadcast_object_list", "new_group"}


# ---------------------------------------------------------------- collectives


def collective_calls(path: Path) -> list[str]:
    """`<torch.distributed or dist>.<collective>(...)` calls in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in COLLECTIVE_CALLS:
            owner = ast.unparse(node.func.value)
            if owner in ("dist", "torch.distributed") or owner.endswith("distributed"):
                found.append(f"{path.relative_to(REPO)}:{node.lineno} {owner}.{node.func.attr}")
    return found


def test_collective_scan_finds_a_planted_call(tmp_path):
    planted = REPO / "salt" / "_planted_for_test.py"
    try:
        planted.write_text("import torch\n\ndef f(t):\n    torch.distributed.all_reduce(t)\n")
        assert collective_calls(planted) == ["salt/_planted_for_test.py:4 torch.distributed.all_reduce"]
    finally:
        planted.unlink()


def test_every_collective_goes_through_the_collectives_module():
    own = REPO / "salt" / "engine" / "collectives.py"
    elsewhere = [c for p in sorted((REPO / "salt").rglob("*.py")) if p != own for c in collective_calls(p)]
    elsewhere += [c for p in sorted((REPO / "dataprep").rglob("*.py")) for c in collective_calls(p)]
    assert elsewhere == []
    assert collective_calls(own)  # and they are all there


@pytest.fixture
def two_ranks_on(monkeypatch):
    """The collectives module as on rank 0 of 2 with the training device given; all_reduce recorded."""
    seen = []

    def place(device):
        monkeypatch.setattr(collectives, "_state", collectives._State(device=device, world=2, control="control"))
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "all_reduce",
                            lambda t, op=None, group=None: seen.append((t.device.type, group)))
        return seen

    return place


def test_a_cpu_tensor_is_refused_where_the_training_device_is_a_gpu(two_ranks_on):
    two_ranks_on(torch.device("cuda", 0))
    with pytest.raises(collectives.CollectiveDeviceError, match="tensor on cpu.*cuda:0"):
        collectives.mean(torch.zeros(2))  # the fault of the old mean_across_ranks: a CPU tensor for NCCL


def test_control_flags_go_to_the_gloo_group_on_the_cpu(two_ranks_on):
    seen = two_ranks_on(torch.device("cuda", 0))
    assert collectives.max_flags([0, 3]) == [0, 3]
    assert seen == [("cpu", "control")]


def test_the_trainer_reduces_its_metrics_on_the_training_device(two_ranks_on, monkeypatch):
    """The log step's values are stacked on the training device ("meta" stands in for a GPU here)."""
    from salt.engine.trainer import Trainer
    from salt.metrics import Window

    device = torch.device("meta")
    two_ranks_on(device)
    handed = []

    def mean(values):
        handed.append(values.device)
        collectives.check_placement(values, device, "mean over ranks")
        out = torch.ones(values.shape)
        out[1] = 0  # [loss, non-finite count, ...]
        return out

    monkeypatch.setattr(collectives, "mean", mean)
    monkeypatch.setattr(collectives, "gather_objects", lambda obj: [obj, obj])
    window = Window()
    for _ in range(3):
        window.add(clips=4, data_s=0.0, flops=1.0, loss=torch.ones((), device=device),
                   grad_norm=torch.ones((), device=device), extra={"ctx_frac_mask0": 0.5})
    fake = SimpleNamespace(dist=SimpleNamespace(device=device), step=3)
    read = Trainer._read_window(fake, window, torch.ones(2, 3, 4, device=device))
    assert handed == [device]
    assert read["loss"] == 1.0 and read["grad_norm"] == 1.0 and read["ctx_frac_mask0"] == 0.5


# ---------------------------------------------------------------- backend and device from one place


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch sees `count` GPUs; set_device calls are recorded. DeepSpeed's group join is faked."""
    import salt.engine.distributed as distributed

    made_current, joined = [], []

    def with_gpus(count: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: made_current.append(torch.device(d)))
        monkeypatch.setattr(distributed, "_join", joined.append)
        monkeypatch.setattr(distributed, "_deepspeed_device_type", lambda: __import__("os").environ["DS_ACCELERATOR"])
        monkeypatch.setattr(collectives, "setup", lambda device, timeout: None)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda: 3)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 4)
        for key in ("DS_ACCELERATOR", "TORCH_NCCL_ASYNC_ERROR_HANDLING"):
            monkeypatch.setenv(key, "")  # recorded, so the test's own settings are undone
            monkeypatch.delenv(key)
        monkeypatch.setenv("RANK", "3")
        monkeypatch.setenv("WORLD_SIZE", "4")
        return made_current, joined

    return with_gpus


@pytest.mark.parametrize("gpus, local_rank, index", [(2, 3, 1), (1, 5, 0), (8, 3, 3)])
def test_trainer_rank_gets_nccl_and_its_gpu(fake_cuda, monkeypatch, gpus, local_rank, index):
    """(1, 5): srun --gpus-per-task=1 shows each task one GPU, whatever its local rank."""
    from salt.engine.distributed import init_distributed

    made_current, joined = fake_cuda(gpus)
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    info = init_distributed()
    assert info.device == torch.device("cuda", index) and info.backend == "nccl"
    assert made_current == [torch.device("cuda", index)] and joined == ["nccl"]
    import os

    assert os.environ["DS_ACCELERATOR"] == "cuda"  # DeepSpeed's accelerator agrees
    assert os.environ["TORCH_NCCL_ASYNC_ERROR_HANDLING"] == "2"


def test_an_explicit_cpu_accelerator_is_honoured_on_a_gpu_machine(fake_cuda, monkeypatch, capsys):
    from salt.engine.distributed import init_distributed

    made_current, joined = fake_cuda(2)
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "1")
    info = init_distributed()
    assert info.device == torch.device("cpu") and joined == ["gloo"] and made_current == []
    assert "training on the CPU although CUDA devices are visible" in capsys.readouterr().err


def test_deepspeed_disagreeing_is_an_error(fake_cuda, monkeypatch):
    import salt.engine.distributed as distributed
    from salt.devices import DeviceError

    fake_cuda(2)
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(distributed, "_deepspeed_device_type", lambda: "cpu")
    with pytest.raises(DeviceError, match="DeepSpeed's accelerator is cpu but salt chose cuda"):
        distributed.init_distributed()


def test_the_cache_job_uses_its_ranks_gpu(fake_cuda, monkeypatch):
    from salt.targets.job import decode_device, job_device

    made_current, _ = fake_cuda(2)
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert job_device() == torch.device("cuda", 1) and made_current == [torch.device("cuda", 1)]
    job = SimpleNamespace(loader="dali", data=LoaderConfig(device="auto"))
    assert decode_device(job) == "gpu"


def test_the_loaders_follow_the_training_device(fake_cuda, monkeypatch):
    from salt.data.dali_loader import resolve_device
    from salt.devices import dali_device

    fake_cuda(2)
    assert dali_device(torch.device("cuda", 1)) == ("gpu", 1)
    assert resolve_device("auto", torch.device("cpu")) == "cpu"  # DS_ACCELERATOR=cpu on a GPU machine
    assert resolve_device("auto", torch.device("cuda", 1)) == "gpu"


def test_bad_accelerator_names_are_refused(monkeypatch):
    from salt.devices import DeviceError, accelerator_name

    monkeypatch.setenv("DS_ACCELERATOR", "tpu")
    with pytest.raises(DeviceError, match="DS_ACCELERATOR='tpu'"):
        accelerator_name()
    monkeypatch.setenv("DS_ACCELERATOR", "cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="sees no CUDA device"):
        accelerator_name()


@pytest.mark.parametrize("env, want", [({"LOCAL_WORLD_SIZE": "4"}, 4), ({"LOCAL_SIZE": "2"}, 2),
                                       ({"SLURM_NTASKS_PER_NODE": "8"}, 8), ({}, 6)])
def test_processes_per_machine(monkeypatch, env, want):
    from salt.engine.distributed import local_world_size

    for key in ("LOCAL_WORLD_SIZE", "LOCAL_SIZE", "SLURM_NTASKS_PER_NODE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert local_world_size(6) == want


# ---------------------------------------------------------------- machine faults in the DALI loader


@pytest.fixture
def running_dali(synth_shards):
    from salt.data.dali_loader import DaliVideoLoader

    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32, threads=1)
    loader = DaliVideoLoader(cfg)
    next(iter(loader))  # running, with batches in flight
    yield loader
    loader.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("cause, fix", [
    ("Failed to load libnvcuvid.so: cannot open shared object file", "NVIDIA_DRIVER_CAPABILITIES"),
    ("CUDA error: out of memory", "lower data.prefetch or data.batch_size"),
    ("Codec 27 (h264) profile is not supported by this GPU", "data.gpu_decode=false"),
])
def test_every_probed_sample_failing_for_one_reason_stops_the_loader(running_dali, monkeypatch, cause, fix):
    monkeypatch.setattr(running_dali, "_decode_error", lambda sample: cause)
    with pytest.raises(LoaderError) as e:
        running_dali._recover(RuntimeError("the pipeline failed"))
    message = str(e.value)
    assert "\n" not in message and cause in message and fix in message and "samples probed" in message
    assert running_dali.planner.bad == set()  # no sample was taken for bad


@pytest.mark.timeout(120)
def test_one_failing_sample_among_good_ones_is_skipped(running_dali, monkeypatch):
    first = min(s.index for plan in running_dali._feeder.in_flight for s in plan.samples)
    monkeypatch.setattr(running_dali, "_decode_error", lambda s: "bad payload" if s.index == first else None)
    running_dali._recover(RuntimeError("the pipeline failed"))
    assert running_dali.planner.bad == {first}


def test_a_loader_eating_its_data_set_stops(synth_shards):
    from salt.data.reference_loader import ReferenceVideoLoader

    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32,
                       threads=1, max_bad_fraction=0.002)  # 2 of 1000
    loader = ReferenceVideoLoader(cfg)
    loader._mark_bad(0, "r")
    loader._mark_bad(1, "r")
    with pytest.raises(LoaderError, match=r"3 samples failed to decode within 1000 samples.*the last: r"):
        loader._mark_bad(2, "r")
    loader.close()


@pytest.mark.timeout(120)
def test_batches_are_read_ahead_off_the_calling_thread(synth_shards, monkeypatch):
    from salt.data.dali_loader import DaliVideoLoader
    from salt.data.shardset import ShardSet

    threads = []
    real = ShardSet.video_bytes

    def video_bytes(self, i):
        threads.append(threading.current_thread().name)
        return real(self, i)

    monkeypatch.setattr(ShardSet, "video_bytes", video_bytes)
    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32, threads=1)
    with DaliVideoLoader(cfg) as loader:
        batches = list(loader)
    assert len(batches) == len(loader) and threads
    assert all(name.startswith("salt-read-ahead") for name in threads), set(threads)


@pytest.mark.timeout(120)
def test_dali_buffers_are_released_only_after_the_last_copy(synth_shards, monkeypatch):
    """Every pipeline.run() comes after the previous copy out of DALI's buffers has finished."""
    from salt.data.dali_loader import DaliVideoLoader

    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32,
                       threads=1, cut_views="dali")
    events = []
    with DaliVideoLoader(cfg) as loader:
        copy = loader._copy
        monkeypatch.setattr(copy, "before_run", lambda: events.append("wait"))
        real_copy = copy.copy
        monkeypatch.setattr(copy, "copy", lambda outputs, dtype: (events.append("copy"), real_copy(outputs, dtype))[1])
        it = iter(loader)
        next(it)
        real_run = loader._pipe.run
        monkeypatch.setattr(loader._pipe, "run", lambda: (events.append("run"), real_run())[1])
        for _ in range(3):
            next(it)
    runs = [i for i, e in enumerate(events) if e == "run"]
    assert len(runs) == 3 and all(events[i - 1] == "wait" for i in runs) and events.count("copy") == 4


def test_mjpeg_is_not_sent_to_nvdec():
    from salt.data.codecs import codec_spec
    from salt.data.dali_loader import check_codec

    shards = SimpleNamespace(codec=codec_spec("mjpeg"), root="shards/x")
    with pytest.raises(LoaderError, match="data.gpu_decode=false decodes it on the CPU"):
        check_codec(shards, "gpu", gpu_decode=True)
    check_codec(shards, "gpu", gpu_decode=False)
    check_codec(SimpleNamespace(codec=codec_spec("hevc"), root="s"), "gpu", gpu_decode=True)


# ---------------------------------------------------------------- pinned host memory for a GPU


def test_batches_for_a_gpu_come_pinned(synth_shards, monkeypatch):
    import salt.data.reference_loader as reference
    from salt.data.loaders import open_loader

    made = []
    monkeypatch.setattr(reference, "DataLoader", lambda *a, **kw: made.append(kw) or iter(()))
    cfg = LoaderConfig(shards=str(synth_shards), batch_size=4, num_frames=8, frame_stride=2, crop_size=32, threads=1)
    loader = open_loader(cfg, "reference", device=torch.device("cuda", 0))
    assert loader.pin_memory and loader.masks._draw.__name__ == "draw_pinned_masks"
    loader._start()
    assert made[-1]["pin_memory"] is True
    loader.close()
    assert not open_loader(cfg, "reference", device=torch.device("cpu")).pin_memory


def test_pixel_norm_constants_are_made_once_per_device(monkeypatch):
    from salt.data import augment

    norm = augment.PixelNorm((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    video = torch.randint(0, 256, (1, 2, 4, 4, 3), dtype=torch.uint8)
    first = norm(video)
    made = []
    real = torch.tensor
    monkeypatch.setattr(torch, "tensor", lambda *a, **kw: made.append(a) or real(*a, **kw))
    assert torch.equal(norm(video), first) and made == []
    assert torch.allclose(first[0, :, 0, 0, 0], (video[0, 0, 0, 0].float() / 255 - 0.5) / 0.25)


# ---------------------------------------------------------------- no host reads on a non-log step

READS = ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("stage", ["teacher", "supervised"])
def test_a_non_log_step_reads_nothing_back_from_the_device(stage, synth_shards, tmp_path, monkeypatch,
                                                           one_torch_thread):
    """Counted on the tensor methods that copy a value to the host (each one waits for a GPU): called on the
    training thread from salt's code that handles device tensors (salt/data and salt/masks make host
    tensors on the CPU by design: masks, labels, views), none on a step that does not log."""
    from salt.engine.distributed import init_distributed
    from salt.engine.trainer import Trainer

    cfg = load_config("debug", [f"stage={stage}", f"data.shards={synth_shards}", f"run.dir={tmp_path / 'r'}",
                                "run.steps=6", "run.log_every=6", "run.checkpoint_every=100", "run.threads=1"])
    trainer = Trainer(cfg, init_distributed())
    reads: list[tuple[int, str, str]] = []
    salt_root = str(REPO / "salt")
    host_side = (str(REPO / "salt" / "data"), str(REPO / "salt" / "masks"))

    def counting(name):
        real = getattr(torch.Tensor, name)

        def method(self, *a, **kw):
            import sys

            caller = sys._getframe(1).f_code.co_filename
            # the training thread (the loader's and mask prefetcher's threads work on the host)
            if caller.startswith(salt_root) and not caller.startswith(host_side) and \
                    threading.current_thread() is threading.main_thread():
                reads.append((trainer.step, name, f"{Path(caller).name}:{sys._getframe(1).f_lineno}"))
            return real(self, *a, **kw)

        return method

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    try:
        trainer.train()
    finally:
        monkeypatch.undo()
        trainer.close()
    # trainer.step is k from the end of step k to the end of step k + 1: reads counted at 0..5 happened in
    # steps 1..6 before step 6's log, at 6 in its log (which reads: the counter works)
    during = [r for r in reads if r[0] <= 5]
    assert during == [], during
    assert any(r[0] == 6 for r in reads)


# ---------------------------------------------------------------- RNG, precision, optimizer, compile


def test_checkpoints_keep_the_cuda_rng_state_where_there_is_one(monkeypatch):
    from salt.engine import rng

    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda device: torch.tensor([7, 8], dtype=torch.uint8))
    restored = []
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, device: restored.append((state.tolist(), device)))
    gpu = torch.device("cuda", 1)
    state = rng.rng_state(gpu)
    assert set(state) == {"cpu", "cuda"} and state["cuda"].tolist() == [7, 8]
    rng.set_rng_state(state, gpu)
    assert restored == [([7, 8], gpu)]
    assert set(rng.rng_state(torch.device("cpu"))) == {"cpu"}
    rng.set_rng_state(torch.get_rng_state(), torch.device("cpu"))  # a checkpoint from before: CPU state only

    from salt.engine.trainer import Trainer

    fake = SimpleNamespace(step=3, flops_done=0.0, loader=SimpleNamespace(state_dict=lambda: {"epoch": 0}),
                           dist=SimpleNamespace(device=gpu), cfg=load_config("debug"), teacher_fingerprint=None,
                           objective=SimpleNamespace(extra_state=lambda: {}))
    (saved,) = Trainer._client_state(fake)["rng"]  # what the trainer's checkpoint holds, per rank
    assert set(saved) == {"cpu", "cuda"}


@pytest.mark.parametrize("features, asked, want", [
    (CpuFeatures("AVX2", False), torch.bfloat16, "fp32"),
    (CpuFeatures("AVX512", True), torch.bfloat16, "bf16"),
    (CpuFeatures("AVX512", False), torch.bfloat16, "fp32"),
    (CpuFeatures("AVX512", True), None, "fp32"),  # the JSON asks for fp32: auto keeps it
])
def test_auto_precision_follows_the_cpu(features, asked, want):
    chosen = resolve_precision("auto", torch.device("cpu"), asked, features)
    assert chosen.name == want and features.capability in chosen.reason or asked is None


def test_explicit_precision_is_kept_and_warned_about_on_an_emulating_cpu():
    chosen = resolve_precision("bf16", torch.device("cpu"), None, CpuFeatures("AVX2", False))
    assert chosen.name == "bf16" and "emulates bf16" in chosen.reason
    assert resolve_precision("fp32", torch.device("cpu"), torch.bfloat16, CpuFeatures("AVX512", True)).name == "fp32"


@pytest.mark.parametrize("capability, avx512_bf16, amx, want", [
    ("AVX2", False, False, False), ("AVX512", True, False, True), ("AVX512", False, True, True),
    ("AVX512", False, False, False), ("AVX2", True, True, False)])  # the last: ATEN_CPU_CAPABILITY=avx2
def test_cpu_features_read_torchs_capability(monkeypatch, capability, avx512_bf16, amx, want):
    import platform

    from salt.precision import cpu_features

    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_features() == CpuFeatures(capability, want)


def test_auto_precision_on_a_gpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Tesla V100-SXM2-16GB")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda", 0), torch.bfloat16).name == "fp32"
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "NVIDIA H200")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision("auto", torch.device("cuda", 0), torch.bfloat16).name == "bf16"


def test_the_deepspeed_config_computes_in_the_chosen_precision():
    from salt.engine.deepspeed_setup import autocast_dtype, load_ds_config, with_precision
    from salt.precision import Precision

    ds = load_ds_config("ds_configs/zero1.json")
    assert autocast_dtype(with_precision(ds, Precision("fp32", "x"))) is None
    assert autocast_dtype(with_precision(load_ds_config("ds_configs/zero1_fp32.json"), Precision("bf16", "x"))) \
        == torch.bfloat16
    # gradients reduce in fp32 under autocast (README: precision)
    for name in ("zero1", "zero2", "zero3", "zero2_offload", "zero3_offload"):
        assert load_ds_config(f"ds_configs/{name}.json")["torch_autocast"]["lower_precision_safe_modules"] == []


@pytest.mark.parametrize("device, offload, want", [("cuda", False, "fused"), ("cpu", False, "torch"),
                                                   ("cuda", True, "cpu_adam"), ("cpu", True, "cpu_adam")])
def test_optimizer_per_device(device, offload, want):
    from salt.optim import optimizer_kind

    assert optimizer_kind(torch.device(device), offload) == want


def test_offload_configs_step_with_deepspeeds_cpu_adam():
    from salt.engine.deepspeed_setup import load_ds_config, offloads_optimizer

    for name in ("zero2_offload", "zero3_offload"):
        ds = load_ds_config(f"ds_configs/{name}.json")
        assert offloads_optimizer(ds) and "zero_force_ds_cpu_optimizer" not in ds  # DeepSpeed refuses another
    assert not offloads_optimizer(load_ds_config("ds_configs/zero2.json"))
    assert load_ds_config("ds_configs/zero2.json")["zero_optimization"]["overlap_comm"] is True


def test_compile_with_zero3_is_refused_in_one_line(synth_shards, tmp_path):
    from salt.engine.distributed import init_distributed
    from salt.engine.trainer import Trainer

    cfg = load_config("debug", ["stage=teacher", f"data.shards={synth_shards}", f"run.dir={tmp_path / 'r'}",
                                "run.compile=true", "run.deepspeed_config=ds_configs/zero3.json"])
    with pytest.raises(ConfigError, match="run.compile .* ZeRO-3") as e:
        Trainer(cfg, init_distributed())
    assert "\n" not in str(e.value) and not (tmp_path / "r").exists()


# ---------------------------------------------------------------- MFU


@pytest.mark.parametrize("name, dtype, want", [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, 989.5), ("NVIDIA H100 PCIe", torch.bfloat16, 756.5),
    ("NVIDIA H100 NVL", torch.bfloat16, 835.5), ("NVIDIA H200", torch.bfloat16, 989.5),
    ("NVIDIA GH200 480GB", torch.bfloat16, 989.5), ("NVIDIA A100-SXM4-80GB", None, 156.0),
    ("NVIDIA A10", torch.bfloat16, 125.0), ("NVIDIA A10G", torch.bfloat16, None), ("NVIDIA L40S", None, 183.0),
    ("NVIDIA L4", torch.bfloat16, 121.0)])
def test_gpu_peak_table(name, dtype, want):
    from salt.metrics import gpu_spec_peak

    got = gpu_spec_peak(name, dtype)
    assert (got and got[0]) == want


def test_a_measured_peak_below_the_runs_own_rate_is_raised(tmp_path, capsys):
    from salt.metrics import MetricsLogger, Window

    logger = MetricsLogger(tmp_path, "teacher", 10, 0.001, "measured", 1, True, tensorboard=False)
    window = Window()
    window.add(clips=1, data_s=0.0, flops=4e9, loss=torch.ones(()), grad_norm=None, extra={})
    row = logger.record(1, 0, window, 1.0, 1e-3, 0.0, {"loss": 1.0, "memory_mb": 1.0})
    logger.close()
    assert row["mfu"] == 1.0 and row["peak_tflops"] == pytest.approx(0.004)
    assert "above the peak taken at start-up" in capsys.readouterr().err
    assert json.loads((tmp_path / "metrics.jsonl").read_text())["mfu"] <= 1.0


# ---------------------------------------------------------------- the probe


def test_the_probe_computes_on_the_process_device(monkeypatch):
    """probe_encoder (python -m salt.eval.probe) extracts, trains and predicts on this process's device."""
    import salt.eval.probe as probe

    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(probe, "process_device", lambda: gpu)
    seen = {}
    monkeypatch.setattr(probe, "extract_probe_features",
                        lambda encoder, a, b, loader, train_views, device: seen.setdefault("extract", device) and
                        ("train", "val", 2))
    monkeypatch.setattr(probe, "evaluate_features",
                        lambda train, val, n, settings, seed, knn_k, device, attentive_probe:
                        seen.setdefault("evaluate", device))
    probe.probe_encoder(torch.nn.Identity(), None, None)
    assert seen == {"extract": gpu, "evaluate": gpu}


def test_probe_training_and_knn_run_on_the_device_they_are_given(monkeypatch):
    from salt.eval import knn, probe
    from salt.eval.features import FeatureSet

    devices = []
    real_fit, real_knn = probe._fit, knn.knn_correct
    monkeypatch.setattr(probe, "_fit", lambda *a, **kw: devices.append(("fit", kw["device"])) or real_fit(*a, **kw))
    real_linear = probe.linear_probe_correct
    monkeypatch.setattr(probe, "knn_correct",
                        lambda *a, **kw: devices.append(("knn", kw["device"])) or real_knn(*a, **kw))
    monkeypatch.setattr(probe, "linear_probe_correct",
                        lambda *a, **kw: devices.append(("linear", kw["device"])) or real_linear(*a, **kw))
    g = torch.Generator().manual_seed(0)
    train = FeatureSet(torch.randn(12, 1, 4, 8, generator=g).half(), torch.arange(12) % 2, [str(i) for i in range(12)])
    val = FeatureSet(torch.randn(6, 1, 4, 8, generator=g).half(), torch.arange(6) % 2)
    cpu = torch.device("cpu")
    result = probe.evaluate_features(train, val, 2, probe.ProbeSettings(max_epochs=2, eval_every=1, seeds=1,
                                                                         batch_size=4), device=cpu)
    assert {d for _, d in devices} == {cpu} and ("knn", cpu) in devices and ("fit", cpu) in devices
    assert ("linear", cpu) in devices
    assert 0 <= result.attentive.mean <= 1
