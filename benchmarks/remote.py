"""Loader throughput from object storage and a web server against the local disk, side by side.

Serves one shard set from an S3-compatible server (moto's) and from an HTTP server that honours byte
ranges, both on 127.0.0.1, and measures the DALI loader's clips/s reading it as a local folder, as
`s3://…` and as `http://…`, interleaved and repeated (medians). Loopback servers show the cost of the
request path (range requests, fsspec's block cache), not of a network.

    python benchmarks/remote.py --shards shards/synth [--repeats 3] [--seconds 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, median, write_result  # noqa: E402
from benchmarks.local_servers import range_http_server, s3_configured, s3_server, upload  # noqa: E402
from salt.data.config import LoaderConfig  # noqa: E402
from salt.data.throughput import measure, run_loader  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", required=True, help="a local shard set (shards/NAME)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--num-frames", type=int, default=16)
    ap.add_argument("--frame-stride", type=int, default=1)
    ap.add_argument("--crop-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per run, after the first batch")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/remote.json)")
    args = ap.parse_args(argv)

    local = Path(args.shards).resolve()
    runs: dict[str, list[dict]] = {"local disk": [], "s3 (loopback)": [], "http ranges (loopback)": []}
    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp) / "s3.log") as endpoint, \
            s3_configured(endpoint), range_http_server(local.parent, Path(tmp) / "http.log") as http:
        upload(endpoint, local, "salt-bench", local.name)
        roots = {"local disk": str(local), "s3 (loopback)": f"s3://salt-bench/{local.name}",
                 "http ranges (loopback)": f"{http}/{local.name}"}
        for r in range(args.repeats):
            for name, root in roots.items():
                cfg = LoaderConfig(shards=root, batch_size=args.batch_size, num_frames=args.num_frames,
                                   frame_stride=args.frame_stride, crop_size=args.crop_size, threads=args.threads)
                runs[name].append(measure(lambda cfg=cfg: run_loader(cfg, "dali"), args.seconds))
                print(f"repeat {r + 1}/{args.repeats} {name}: {runs[name][-1]['clips_per_s']:.1f} clips/s",
                      file=sys.stderr)
    base = median([x["clips_per_s"] for x in runs["local disk"]])
    rows = [{"source": name, "clips_per_s": median([x["clips_per_s"] for x in rs]),
             "vs_local": median([x["clips_per_s"] for x in rs]) / base,
             "first_batch_s": median([x["first_batch_s"] for x in rs])} for name, rs in runs.items()]
    print(format_table(rows, ["source", "clips_per_s", "vs_local", "first_batch_s"]))
    path = write_result(args.json, "remote", vars(args), rows, {"runs": runs})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
