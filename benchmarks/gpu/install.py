"""Join the wheel parts that the device calls brought (DEST/calls/NN/), check each wheel against its
sha256, and install them into a folder for PYTHONPATH (no index, no dependencies: all are here).

    python3 benchmarks/gpu/install.py [--calls .gpu/calls] [--target /tmp/site]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path


class MissingParts(Exception):
    pass


def join_wheels(calls: Path, out: Path) -> list[Path]:
    """Reassembled wheels in `out`; raises MissingParts naming the calls whose folders are absent."""
    indexes = sorted(calls.glob("*/index.json"))
    if not indexes:
        raise MissingParts(f"no {calls}/NN/index.json: carry the call folders first")
    index = json.loads(indexes[-1].read_text())
    have = {p.parent.name for p in indexes}
    missing = sorted({c.split("/")[0] for w in index["wheels"].values() for c in w["chunks"]} - have)
    if missing:
        raise MissingParts(f"calls {', '.join(missing)} of {index['calls']} have not arrived in {calls}")
    wheels = []
    for name, w in index["wheels"].items():
        data = b"".join((calls / c).read_bytes() for c in w["chunks"])
        if hashlib.sha256(data).hexdigest() != w["sha256"]:
            raise MissingParts(f"{name}: joined parts do not match its sha256 (a part was cut short)")
        (out / name).write_bytes(data)
        wheels.append(out / name)
    return wheels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", default=".gpu/calls")
    ap.add_argument("--target", default="/tmp/site")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            wheels = join_wheels(Path(args.calls), Path(tmp))
        except MissingParts as e:
            print(f"install: {e}", file=sys.stderr)
            return 2
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                        "--no-cache-dir", "--upgrade", "--target", args.target, *map(str, wheels)], check=True)
    print(f"installed {len(wheels)} wheels into {args.target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
