"""The input list of a shard job: a directory of videos or a manifest, sorted so that sample keys,
shard contents and `--part` slices are the same on every machine and for any worker count."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Files we try to decode when scanning a directory; anything else there is ignored, not failed.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                            ".flv", ".ts", ".3gp", ".ogv", ".gif"})


@dataclass(frozen=True)
class InputVideo:
    index: int  # position in the sorted input list; the sample key is derived from it
    path: str  # absolute path
    source: str  # as recorded in metadata: relative to the input directory, or as the manifest gave it
    label: str | None


def list_inputs(source: str | Path) -> list[InputVideo]:
    """Sorted inputs from a directory (label = first-level sub-folder, none for flat files) or a
    manifest (.csv with a `path` column, or .jsonl with a `path` key; optional `label`)."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")
    if src.is_dir():
        rows = _scan_dir(src)
    elif src.suffix.lower() == ".csv":
        rows = _read_csv(src)
    elif src.suffix.lower() in (".jsonl", ".ndjson"):
        rows = _read_jsonl(src)
    else:
        raise ValueError(f"input {src} is neither a directory nor a .csv/.jsonl manifest")
    seen: set[str] = set()
    for _, source_name, _ in rows:
        if source_name in seen:
            raise ValueError(f"input {src} lists {source_name!r} twice")
        seen.add(source_name)
    rows.sort(key=lambda r: r[1])
    return [InputVideo(i, path, name, label) for i, (path, name, label) in enumerate(rows)]


def _scan_dir(root: Path) -> list[tuple[str, str, str | None]]:
    rows = []
    for p in root.rglob("*"):
        if not p.is_file() or p.suffix.lower() not in VIDEO_SUFFIXES or p.name.startswith("."):
            continue
        rel = p.relative_to(root)
        label = rel.parts[0] if len(rel.parts) > 1 else None
        rows.append((str(p.resolve()), rel.as_posix(), label))
    return rows


def _resolve(manifest: Path, path: str) -> str:
    p = Path(path)
    return str((p if p.is_absolute() else manifest.parent / p).resolve())


def _read_csv(manifest: Path) -> list[tuple[str, str, str | None]]:
    with manifest.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ValueError(f"manifest {manifest} needs a 'path' column (has {reader.fieldnames})")
        return [(_resolve(manifest, r["path"]), r["path"], r.get("label") or None) for r in reader]


def _read_jsonl(manifest: Path) -> list[tuple[str, str, str | None]]:
    rows = []
    for n, line in enumerate(manifest.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            path = r["path"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"manifest {manifest} line {n}: expected a JSON object with 'path' ({e})") from None
        label = r.get("label")
        rows.append((_resolve(manifest, path), path, None if label is None else str(label)))
    return rows


def part_slice(inputs: list[InputVideo], part: int, num_parts: int) -> list[InputVideo]:
    """Contiguous slice `part` of `num_parts`; sizes differ by at most one."""
    if not 0 <= part < num_parts:
        raise ValueError(f"--part {part}/{num_parts}: K must be in 0..{num_parts - 1}")
    n = len(inputs)
    return inputs[part * n // num_parts:(part + 1) * n // num_parts]


def inputs_fingerprint(inputs: list[InputVideo]) -> str:
    """Identifies the input list (paths, labels, sizes) so a resumed job can refuse a changed one."""
    h = hashlib.sha256()
    for v in inputs:
        try:
            size = Path(v.path).stat().st_size
        except OSError:
            size = -1
        h.update(f"{v.source}\0{v.label}\0{size}\n".encode())
    return h.hexdigest()[:16]
