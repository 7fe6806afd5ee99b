"""Ready the GPU suite on this machine: the shard sets it reads, the wheels the GPU machine lacks split
into call-sized parts, and the device calls that carry them.

    python benchmarks/gpu/prepare.py [--dest .gpu] [--call-mb 52] [--videos ../shared/videos] [--no-wheels]

The GPU machine (one H200, PyTorch, timm and pyarrow, Python 3.12, no network) lacks DeepSpeed, DALI,
webdataset, zstandard and what they need. One call may carry 64 MiB with the working tree, and DALI's
wheel is several times that, so the wheels are cut into parts of at most --call-mb MiB, one folder
per call under DEST/calls/NN/. The machine keeps what earlier calls brought while it stays warm, so
every call but the last only carries its part (the first one the shard sets too); the last one runs
`benchmarks/gpu/run.sh`, which joins the parts, checks each wheel's sha256, installs them and runs
the suite. DEST must be ignored by git (it is: `/.gpu/` in .gitignore).
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
# packaging, psutil, msgpack, einops, ninja, py-cpuinfo, matplotlib): salt's needs and theirs, at the
# versions installed here
WHEELS = ("deepspeed", "hjson", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
          "webdataset", "braceexpand", "zstandard", "pebble", "nvidia-dali-cuda130", "astunparse", "gast",
          "libcst", "makefun", "nvtx", "optree", "nvidia-nvimgcodec-cu13", "nvidia-libnvcomp-cu13",
          "typing-extensions")  # pydantic-core needs a newer typing-extensions than an image may hold
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "any")
SUITE_VIDEOS = ("box.mp4", "cup.mp4", "Megamind.avi", "vtest.avi")
SUITE_CODECS = ("h264", "hevc", "vp9")


def build_shards(videos: Path, dest: Path, src: Path, codecs=SUITE_CODECS, short_side: int = 256,
                 train_clip: str = "16x4@30", clip_seconds: float = 2.5) -> list[Path]:
    """Training-rate shard sets dest/CODEC, one per codec, from the real sample videos (copied into src);
    2.5 s clips give ~45 samples, enough for the suite's loader batch."""
    from dataprep.shards import JobConfig, run_job

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


def download_wheels(dest: Path, python: str = "3.12") -> list[Path]:
    """The GPU machine's wheels; a package published only as source (DeepSpeed) is built into a wheel
    here, which must then be pure Python (py3-none-any) to install there."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in WHEELS:
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
    return sorted(dest.glob("*.whl"))


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--dest", default=".gpu", help="ignored folder for shards/, wheels/ and calls/")
    ap.add_argument("--call-mb", type=float, default=52.0,
                    help="MiB of wheel parts per call (64 MiB with the tree and, in the first, the shard sets)")
    ap.add_argument("--videos", default=str(REPO.parent / "shared" / "videos"))
    ap.add_argument("--no-wheels", action="store_true", help="shard sets only")
    args = ap.parse_args(argv)
    dest = Path(args.dest)
    for path in build_shards(Path(args.videos), dest / "shards", dest / "videos"):
        print(f"shards: {path}")
    if args.no_wheels:
        return 0
    wheels = download_wheels(dest / "wheels")
    index = split_into_calls(wheels, dest / "calls", args.call_mb)
    total = sum(w["bytes"] for w in index["wheels"].values()) / 2**20
    print(f"{len(wheels)} wheels, {total:.0f} MiB, in {index['calls']} calls of at most {args.call_mb:g} MiB")
    print("device calls, in order, while the machine stays warm (each run's command, and its carry):")
    for k in range(1, index["calls"] + 1):
        carry = [f"{dest}/calls/{k:02d}"] + ([f"{dest}/shards"] if k == 1 else [])
        command = ("bash benchmarks/gpu/run.sh" if k == index["calls"]
                   else f"ls {dest}/calls  # part {k} stays on the machine")
        print(f"  {k}: command={command!r} carry={carry}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
