"""meta.json of a target cache, typed: what readers (the student stage, --verify) look up, parsed once.

The job writes the JSON (salt/targets/job.py `describe`, then per-file entries and counts); everything
else reads it through `CacheMeta`, so a key is spelled in one place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from salt.targets.format import FORMAT, META, TargetCacheError, arrow_schema


@dataclass(frozen=True)
class CacheFile:
    """One shard's file; the counts and hashes are there once the job finished it."""

    shard: str  # the shard tar's name
    file: str  # <shard>.arrow
    bytes: int | None = None
    sha256: str | None = None
    samples: int | None = None  # None: not finished (or finished before counts were recorded)
    rows: int = 0
    bad_keys: tuple[str, ...] = ()

    @property
    def finished(self) -> bool:
        return self.samples is not None


@dataclass(frozen=True)
class CacheMeta:
    format: str
    job_id: str  # sha256 of everything that decides the contents; every file's footer names it
    complete: bool
    dtype: str  # storage: fp32 | bf16 | fp16 | fp8
    tokens: int
    width: int
    layers: tuple[int, ...] | None  # teacher layers concatenated; None: the final output
    num_views: int
    recipe: dict[str, Any]  # config key -> value (salt.targets.fingerprint.recipe_section)
    geometry: dict[str, Any]  # config key -> value (geometry_section)
    teacher_fingerprint: str
    teacher_path: str
    teacher_weights_dtype: str
    teacher_autocast: str | None
    shards_path: str
    shards_id: dict[str, Any]  # name, sample count, hash of the shard list (shard_set_id)
    decode_loader: str
    decode_device: str
    loader_config: dict[str, Any]  # the precompute loader's LoaderConfig, as a dict
    files: tuple[CacheFile, ...]
    counts: dict[str, Any] | None  # totals, once complete

    @classmethod
    def from_dict(cls, meta: dict[str, Any], where: str = META) -> CacheMeta:
        if meta.get("format") != FORMAT:
            raise TargetCacheError(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}")
        try:
            t, teacher, shards, decode = meta["targets"], meta["teacher"], meta["shards"], meta["decode"]
            return cls(
                format=meta["format"], job_id=meta["job_id"], complete=bool(meta.get("complete")),
                dtype=meta["storage"]["dtype"], tokens=int(t["tokens"]), width=int(t["width"]),
                layers=tuple(t["layers"]) if t.get("layers") else None,
                num_views=int(meta["views"]["num_views"]), recipe=dict(meta["views"]["recipe"]),
                geometry=dict(meta["geometry"]), teacher_fingerprint=teacher["fingerprint"],
                teacher_path=teacher.get("path", ""), teacher_weights_dtype=teacher["weights_dtype"],
                teacher_autocast=teacher.get("autocast"), shards_path=shards.get("path", ""),
                shards_id={k: v for k, v in shards.items() if k != "path"}, decode_loader=decode["loader"],
                decode_device=decode["device"], loader_config=dict(meta["job"]["loader_config"]),
                files=tuple(CacheFile(shard=f["shard"], file=f["file"], bytes=f.get("bytes"), sha256=f.get("sha256"),
                                      samples=f.get("samples"), rows=int(f.get("rows", 0)),
                                      bad_keys=tuple(f.get("bad_keys", ()))) for f in meta["files"]),
                counts=meta.get("counts"))
        except (KeyError, TypeError, ValueError) as e:
            raise TargetCacheError(f"{where} is not a target cache's meta.json (no or bad {e}): rerun the precompute "
                                   "job with --overwrite") from None

    def schema(self) -> pa.Schema:
        """The Arrow schema of every file of this cache."""
        return arrow_schema(self.dtype, self.tokens, self.width)

    @classmethod
    def load(cls, root: Path | str, text: str | None = None) -> CacheMeta:
        """From root/meta.json, or from its `text` (read from an object store by the caller)."""
        path = f"{root}/{META}" if text is not None else Path(root) / META
        try:
            raw = json.loads(text if text is not None else path.read_text())
        except ValueError as e:
            raise TargetCacheError(f"{path} is not JSON ({e}): rerun the precompute job with --overwrite") from None
        if not isinstance(raw, dict):
            raise TargetCacheError(f"{path} is not a target cache's meta.json")
        return cls.from_dict(raw, str(path))
