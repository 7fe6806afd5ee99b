"""What a loader needs to know, as one typed object (a node of the training config tree)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from salt.data.augment import HANDOFFS, PixelNorm
from salt.data.storage import RetryPolicy
from salt.data.views import ViewRecipe


@dataclass
class LoaderConfig:
    shards: str = ""  # shard set folder (with manifest.json)
    batch_size: int = 8  # clips decoded per batch and rank; a batch holds batch_size * views_per_clip views
    num_frames: int = 16
    frame_stride: int = 4
    crop_size: int = 224
    scale: tuple[float, float] = (0.3, 1.0)
    ratio: tuple[float, float] = (0.75, 1.35)
    flip: bool = True
    views_per_clip: int = 1
    mode: str = "train"  # "train": shuffled, random views; "eval": stored order, fixed views;
    # "precompute": stored order, every one of the cached_views views of every sample (teacher-target cache job)
    eval_clips: int = 1  # eval mode: evenly spaced clips per sample
    eval_crops: int = 1  # eval mode: crops along the long side per clip
    shuffle_buffer: int = 1024
    seed: int = 0
    threads: int = 2  # DALI CPU threads, or reference-loader worker processes
    device: str = "auto"  # "auto" | "cpu" | "gpu": where DALI decodes
    strict: bool = False  # raise on a sample that fails to decode instead of counting and skipping it
    max_bad_fraction: float = 0.1  # stop when more than this share of the last 1000 samples failed to decode
    remote_attempts: int = 10  # s3:// and https:// shard sets: attempts per request (retried with backoff and jitter)
    remote_timeout_s: float = 20.0  # ... and the connect/read timeout of each attempt (a stalled server)
    verify_shards: bool = True  # hash each shard tar on its first read in a process, refuse one that does not
    # match manifest.json's sha256 (one read of the shard per process, ~1.4 GB/s per core); false: sizes only
    cached_views: int = 0  # >0: each sample uses one of this many precomputed views per epoch (target cache)
    prefetch: int = 2  # batches decoded ahead
    handoff: str = "uint8"  # "uint8": clips leave the loader as uint8 and are normalised on the training device
    # (VideoBatch.model_input); "float32": the loader normalises (DALI does crop, resize and normalise)
    gpu_decode: bool = True  # device gpu: decode with NVDEC; false: decode on the CPU, crop and resize on the GPU
    cut_views: str = "auto"  # where uint8 views are cut: "auto" (torch on the CPU, DALI on a GPU), "dali", "torch"
    mean: tuple[float, float, float] = field(default=(0.485, 0.456, 0.406))
    std: tuple[float, float, float] = field(default=(0.229, 0.224, 0.225))

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(attempts=self.remote_attempts, timeout_s=self.remote_timeout_s)

    def recipe(self) -> ViewRecipe:
        values = {f.name: getattr(self, f.name) for f in fields(ViewRecipe)}
        return ViewRecipe(**{**values, "scale": tuple(self.scale), "ratio": tuple(self.ratio)})

    def pixel_norm(self) -> PixelNorm | None:
        """How a batch's uint8 pixels become model input (None: the loader hands over float32, normalised)."""
        return PixelNorm(tuple(self.mean), tuple(self.std)) if self.handoff == "uint8" else None

    def views_in_dali(self, device: str) -> bool:
        """Whether DALI cuts the views (else the loader cuts them in torch from DALI's decoded frames), on
        the resolved device: torch's uint8 resize is the faster one on the CPU, DALI's on a GPU."""
        if self.cut_views != "auto":
            return self.cut_views == "dali"
        return device == "gpu" or self.handoff == "float32"

    def view_layout(self) -> tuple[int, int]:
        """(decodes per sample, views cut from each decode): eval decodes each evenly spaced clip once and
        cuts its crops; precompute decodes each cached view (its own clip start); training decodes once
        and cuts views_per_clip views (one when each epoch reads one cached view)."""
        if self.mode == "eval":
            return self.eval_clips, self.eval_crops
        if self.mode == "precompute":
            return self.cached_views, 1
        return 1, 1 if self.cached_views else self.views_per_clip

    @property
    def views_per_sample(self) -> int:
        decodes, per_decode = self.view_layout()
        return decodes * per_decode

    def validate(self) -> None:
        if self.mode not in ("train", "eval", "precompute"):
            raise ValueError(f"data.mode must be 'train', 'eval' or 'precompute', got {self.mode!r}")
        if self.mode == "precompute" and self.cached_views < 1:
            raise ValueError("data.mode 'precompute' needs data.cached_views >= 1 (the views to precompute)")
        if self.device not in ("auto", "cpu", "gpu"):
            raise ValueError(f"data.device must be auto, cpu or gpu, got {self.device!r}")
        if self.handoff not in HANDOFFS:
            raise ValueError(f"data.handoff must be one of {', '.join(HANDOFFS)}, got {self.handoff!r}")
        if self.cut_views not in ("auto", "dali", "torch"):
            raise ValueError(f"data.cut_views must be auto, dali or torch, got {self.cut_views!r}")
        if self.cut_views == "torch" and (self.device == "gpu" or self.handoff == "float32"):
            raise ValueError("data.cut_views=torch needs data.device=cpu and data.handoff=uint8 "
                             "(on a GPU, and for float32, DALI cuts the views)")
        if self.remote_attempts < 1 or self.remote_timeout_s <= 0:
            raise ValueError("data.remote_attempts must be >= 1 and data.remote_timeout_s > 0")
        if not 0 < self.max_bad_fraction <= 1:
            raise ValueError(f"data.max_bad_fraction must be in (0, 1], got {self.max_bad_fraction}")
        if self.batch_size < 1 or self.threads < 1 or self.prefetch < 1:
            raise ValueError("data.batch_size, data.threads and data.prefetch must be >= 1")
        if self.cached_views and self.views_per_clip != 1:
            raise ValueError("data.cached_views needs data.views_per_clip = 1 (one cached view per decode)")
        self.recipe()
