"""Ready the GPU suite on this machine: the wheels the GPU machine lacks and the shard sets tier 2 reads,
in call-sized folders, and the device calls that carry them.

    python benchmarks/gpu/prepare.py [--tier 1|2|all] [--dest .gpu] [--call-mb 60] [--videos ../shared/videos]

The GPU machine (one H200, PyTorch 2.11, timm, pyarrow and transformers, Python 3.12, no network) lacks
DeepSpeed, webdataset, PyAV, pebble, zstandard, DALI and what they need. One call may carry 64 MiB with
the working tree.
- Tier 1 (the users' commands and the ViT-L steps, `benchmarks/gpu/tier1.sh`) needs no DALI: its wheels
  (about 45 MiB) travel in ONE call, DEST/tier1/calls/01, which also runs it.
- Tier 2 (NVDEC loading, `benchmarks/gpu/tier2.sh`) adds DALI (about 200 MiB): its wheels are cut into parts
  of at most --call-mb MiB, one folder per call under DEST/tier2/calls/NN/, the first with the shard sets.
  The machine keeps what earlier calls brought while it stays warm (30 s after each), so the calls go
  back to back; the last runs tier2.sh, which joins the parts, checks each wheel's sha256 before it
  installs anything, and measures. Tier 2 runs on the machine tier 1 ran on (it reuses tier 1's install).
DEST must be ignored by git (it is: `/.gpu/` in .gitignore).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

REPO = Path(__file__).resolve().parents[2]
# what the GPU machine lacks (its image has torch, timm, pyarrow, numpy, pyyaml, safetensors, tqdm, six,
# packaging, psutil, msgpack, einops, ninja, py-cpuinfo, matplotlib, transformers): salt's needs and
# theirs, at the versions installed here
TIER1_WHEELS = ("deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
                "webdataset", "braceexpand", "zstandard", "pebble", "av",
                "typing-extensions")  # pydantic-core needs a newer typing-extensions than an image may hold
TIER2_WHEELS = ("nvidia-dali-cuda130", "astunparse", "gast", "libcst", "makefun", "nvtx", "optree",
                "nvidia-nvimgcodec-cu13", "nvidia-libnvcomp-cu13")
CALL_LIMIT_MB = 64.0  # what one device call carries, working tree included
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any")
SUITE_VIDEOS = ("box.mp4", "cup.mp4", "Megamind.avi", "vtest.avi")
SUITE_CODECS = ("h264", "hevc", "vp9")


def build_shards(videos: Path, dest: Path, src: Path, codecs=SUITE_CODECS, short_side: int = 256,
                 train_clip: str = "16x4@30", clip_seconds: float = 2.5) -> list[Path]:
    """Training-rate shard sets dest/CODEC, one per codec, from the real sample videos (copied into src);
    2.5 s clips give ~45 samples, enough for the suite's loader batch."""
    from dataprep.shard_job import JobConfig, run_job

    src.mkdir(parents=True, exist_ok=True)
    for name in SUITE_VIDEOS:
        if (videos / name).exists() and not (src / name).exists():
            shutil.copy(videos / name, src / name)
    out = []
    for codec in codecs:
        target = dest / codec
        run_job(JobConfig(input=str(src), name=codec, codec=codec, short_side=short_side, clip_seconds=clip_seconds,
                          train_clip=train_clip), target, overwrite=True, progress=False, handle_signals=False)
        out.append(target)
    return out


def download_wheels(dest: Path, names: tuple[str, ...], python: str = "3.12") -> list[Path]:
    """The GPU machine's wheels; a package published only as source (DeepSpeed) is built into a wheel
    here, which must then be pure Python (py3-none-any) to install there."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        spec = f"{name}=={importlib.metadata.version(name)}"
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python, "--implementation", "cp", "-d", str(dest), spec]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        if subprocess.run(cmd, stderr=subprocess.DEVNULL).returncode == 0:
            continue
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dest), spec],
                       check=True)
        stem = f"{name.replace('-', '_')}-{importlib.metadata.version(name)}-"
        built = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem.lower())]
        if not built or not all(w.name.endswith("-py3-none-any.whl") for w in built):
            raise SystemExit(f"prepare: {spec} has no wheel for Python {python} and did not build a pure one")
    stems = {n.replace("-", "_").lower() for n in names}
    return sorted(w for w in dest.glob("*.whl") if w.name.split("-")[0].lower() in stems)


def split_into_calls(wheels: list[Path], calls: Path, call_mb: float) -> dict:
    """Cut the wheels into chunks, packed into call folders of at most call_mb MiB; writes and returns the
    index (each wheel's sha256 and its chunks in order), a copy of which goes into every folder."""
    if calls.exists():
        shutil.rmtree(calls)
    limit = int(call_mb * 2**20)
    index: dict = {"wheels": {}}
    folder, used, n = None, limit, 0
    for whl in wheels:
        data = whl.read_bytes()
        index["wheels"][whl.name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "chunks": []}
        offset, k = 0, 0
        while offset < len(data):
            if used >= limit:
                n += 1
                folder, used = calls / f"{n:02d}", 0
                folder.mkdir(parents=True)
            take = min(limit - used, len(data) - offset)
            chunk = folder / f"{whl.name}.part{k:03d}"
            chunk.write_bytes(data[offset:offset + take])
            index["wheels"][whl.name]["chunks"].append(f"{folder.name}/{chunk.name}")
            offset, used, k = offset + take, used + take, k + 1
    index["calls"] = n
    for f in sorted(calls.iterdir()):
        (f / "index.json").write_text(json.dumps(index, indent=1))
    return index


def tree_mb() -> float:
    """What the working tree adds to every call (tracked and untracked files that git does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    return sum((REPO / f).stat().st_size for f in listed if (REPO / f).is_file()) / 2**20


def prepare_tier1(dest: Path) -> dict:
    """DEST/tier1/calls/01: every tier-1 wheel in one call (refused if it would not fit beside the tree)."""
    wheels = download_wheels(dest / "wheels", TIER1_WHEELS)
    total = sum(w.stat().st_size for w in wheels) / 2**20
    room = CALL_LIMIT_MB - tree_mb() - 2
    if total > room:
        raise SystemExit(f"prepare: tier 1's wheels are {total:.0f} MiB, more than the {room:.0f} MiB one call has "
                         "room for beside the working tree")
    return split_into_calls(wheels, dest / "tier1" / "calls", call_mb=room)


def prepare_tier2(dest: Path, videos: Path, call_mb: float) -> dict:
    for path in build_shards(videos, dest / "shards", dest / "videos"):
        print(f"shards: {path}")
    return split_into_calls(download_wheels(dest / "wheels", TIER2_WHEELS), dest / "tier2" / "calls", call_mb)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--tier", choices=("1", "2", "all"), default="all")
    ap.add_argument("--dest", default=".gpu", help="ignored folder for wheels/, shards/, tier1/ and tier2/")
    ap.add_argument("--call-mb", type=float, default=52.0,
                    help="tier 2: MiB of wheel parts per call (64 MiB with the tree and, in the first, the shards)")
    ap.add_argument("--videos", default=str(REPO.parent / "shared" / "videos"))
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    print("device calls, in order (each run's command, and its carry):")
    if args.tier in ("1", "all"):
        index = prepare_tier1(dest)
        total = sum(w["bytes"] for w in index["wheels"].values()) / 2**20
        print(f"tier 1: {len(index['wheels'])} wheels, {total:.0f} MiB, one call:")
        print(f"  command='bash benchmarks/gpu/tier1.sh' carry=['{dest}/tier1'] timeout_s=420")
    if args.tier in ("2", "all"):
        index = prepare_tier2(dest, Path(args.videos), args.call_mb)
        total = sum(w["bytes"] for w in index["wheels"].values()) / 2**20
        print(f"tier 2: {len(index['wheels'])} wheels, {total:.0f} MiB, in {index['calls']} calls, back to back "
              "on the machine tier 1 ran on:")
        for k in range(1, index["calls"] + 1):
            carry = [f"{dest}/tier2/calls/{k:02d}"] + ([f"{dest}/shards"] if k == 1 else [])
            command = ("bash benchmarks/gpu/tier2.sh" if k == index["calls"]
                       else f"ls {dest}/tier2/calls  # part {k} stays on the machine")
            print(f"  {k}: command={command!r} carry={carry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
