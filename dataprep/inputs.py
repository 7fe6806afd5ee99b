"""The input list of a shard job: a directory of videos or a manifest, sorted so that sample keys,
shard contents and `--part` slices are the same on every machine and for any worker count.

A directory scan decides by content, not by suffix: every regular file is a candidate that a worker
opens (`transcode.probe_video`), except sidecar files (subtitles, labels, notes), hidden files and
things that are not regular files, which are listed as skipped here. A suffix only says what a
candidate claims to be: a `.mp4` without a video stream is a failure, an `.m4a` without one is skipped.
Nothing in the folder goes unlisted."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Suffixes that claim a video: such a file without a decodable video stream is a failed input.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv",
                            ".flv", ".ts", ".mts", ".m2ts", ".mxf", ".vob", ".y4m", ".dv", ".3gp", ".ogv",
                            ".gif", ".asf", ".rm", ".rmvb", ".f4v", ".h264", ".h265", ".hevc", ".ivf"})
# Files beside videos that are never inputs: listed as skipped without being opened.
SIDECAR_SUFFIXES = frozenset({".csv", ".tsv", ".json", ".jsonl", ".ndjson", ".txt", ".md", ".srt", ".vtt",
                              ".ass", ".ssa", ".sub", ".sbv", ".nfo", ".xml", ".yaml", ".yml", ".log",
                              ".html", ".pdf", ".sha256", ".md5"})


@dataclass(frozen=True)
class InputVideo:
    index: int  # position in the sorted input list; the sample key is derived from it
    path: str  # absolute path
    source: str  # as recorded in metadata: relative to the input directory, or as the manifest gave it
    label: str | None
    claims_video: bool = True  # listed in a manifest or named like a video: no video stream is a failure


@dataclass(frozen=True)
class SkippedFile:
    source: str  # relative to the input directory
    reason: str

    def to_json(self) -> dict:
        return {"path": self.source, "reason": self.reason}


@dataclass(frozen=True)
class InputScan:
    """What a scan found: candidate inputs (sorted, indexed) and the files set aside without opening."""

    inputs: list[InputVideo]
    skipped: list[SkippedFile]

    @property
    def files_seen(self) -> int:
        return len(self.inputs) + len(self.skipped)


def list_inputs(source: str | Path) -> list[InputVideo]:
    return scan_inputs(source).inputs


def scan_inputs(source: str | Path) -> InputScan:
    """Sorted candidates from a directory (label = first-level sub-folder, none for flat files) or a
    manifest (.csv with a `path` column, or .jsonl with a `path` key; optional `label`)."""
    src = Path(source)
    if not src.exists():
        raise FileNotFoundError(f"input {src} does not exist")
    skipped: list[SkippedFile] = []
    if src.is_dir():
        rows, skipped = _scan_dir(src)
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
    claims = src.is_file()  # a manifest's rows are meant as videos
    inputs = [InputVideo(i, path, name, label, claims or Path(name).suffix.lower() in VIDEO_SUFFIXES)
              for i, (path, name, label) in enumerate(rows)]
    return InputScan(inputs, sorted(skipped, key=lambda f: f.source))


def _scan_dir(root: Path) -> tuple[list[tuple[str, str, str | None]], list[SkippedFile]]:
    rows, skipped = [], []
    for p in root.rglob("*"):  # does not follow links to folders: such a link is listed as skipped
        rel = p.relative_to(root)
        hidden = [i for i, part in enumerate(rel.parts) if part.startswith(".")]
        if hidden:
            if hidden[0] == len(rel.parts) - 1:  # the hidden file or folder itself: one line for a whole folder
                skipped.append(SkippedFile(rel.as_posix(), "hidden " + ("folder" if p.is_dir() else "file")))
            continue
        if p.is_symlink() and p.is_dir():
            skipped.append(SkippedFile(rel.as_posix(), "link to a folder (not followed)"))
        elif p.is_dir():
            continue
        elif not p.is_file():
            what = "broken link" if p.is_symlink() and not p.exists() else "not a regular file"
            skipped.append(SkippedFile(rel.as_posix(), what))
        elif p.suffix.lower() in SIDECAR_SUFFIXES:
            skipped.append(SkippedFile(rel.as_posix(), f"sidecar file ({p.suffix.lower()})"))
        else:
            label = rel.parts[0] if len(rel.parts) > 1 else None
            rows.append((str(p.resolve()), rel.as_posix(), label))
    return rows, skipped


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


DATASET_INFO = "dataset.json"


def read_label_hflip(source: str | Path, classes: list[str]) -> dict[str, str] | None:
    """What each class becomes when a video is mirrored left-right, from `dataset.json` beside the
    input (in the input folder, or beside a manifest file): {"hflip_labels": {class: class, ...}}.

    None when the dataset says nothing (flipping then keeps the label, as for most action datasets);
    loaders relabel flipped training views with it, so `move_left` mirrored is `move_right`."""
    src = Path(source)
    info = (src if src.is_dir() else src.parent) / DATASET_INFO
    if not info.is_file():
        return None
    try:
        mapping = json.loads(info.read_text()).get("hflip_labels")
    except (json.JSONDecodeError, AttributeError) as e:
        raise ValueError(f"{info} is not a JSON object: {e}") from None
    if mapping is None:
        return None
    if not isinstance(mapping, dict) or set(mapping) != set(classes) or not set(mapping.values()) <= set(classes):
        raise ValueError(f"{info}: hflip_labels must map each class of the input ({', '.join(classes)}) to one of "
                         f"them, got {mapping!r}")
    return {c: mapping[c] for c in classes}
