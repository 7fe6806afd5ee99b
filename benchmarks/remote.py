"""Loader throughput from object storage and a web server against the local disk, side by side.

Serves one shard set from an S3-compatible server (moto's) and from an HTTP server that honours byte
ranges, both on 127.0.0.1, and measures the DALI loader's clips/s reading it as a local folder, as
`s3://…` and as `http://…`, and as `s3://…` through the fault proxy (benchmarks/fault_proxy.py) with no
fault and with a share of requests throttled (503 SlowDown, retried with backoff and jitter, the retries
counted), interleaved and repeated (medians). Loopback servers show the cost of the request path (range
requests, fsspec's block cache, retries), not of a network.

    python benchmarks/remote.py --shards shards/synth [--repeats 3] [--seconds 8] [--throttle 0.05] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import format_table, median, write_result  # noqa: E402
from benchmarks.fault_proxy import fault_proxy  # noqa: E402
from benchmarks.local_servers import range_http_server, s3_configured, s3_server, upload  # noqa: E402
from salt.data.config import LoaderConfig  # noqa: E402
from salt.data.storage import retry_count  # noqa: E402
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
    ap.add_argument("--throttle", type=float, default=0.05, help="share of requests answered 503 SlowDown")
    ap.add_argument("--json", default=None, help="output JSON (default benchmarks/results/remote.json)")
    args = ap.parse_args(argv)

    local = Path(args.shards).resolve()
    names = ("local disk", "s3 (loopback)", "http ranges (loopback)", "s3 through the proxy",
             f"s3, {100 * args.throttle:g}% of requests throttled")
    runs: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp, s3_server(Path(tmp) / "s3.log") as endpoint, \
            range_http_server(local.parent, Path(tmp) / "http.log") as http, fault_proxy(endpoint) as proxy, \
            fault_proxy(endpoint, seed=1) as throttled:
        with s3_configured(endpoint):
            upload(endpoint, local, "salt-bench", local.name)
        throttled.throttle(args.throttle)
        s3_url = f"s3://salt-bench/{local.name}"
        sources = {names[0]: (str(local), None), names[1]: (s3_url, endpoint), names[2]: (f"{http}/{local.name}", None),
                   names[3]: (s3_url, proxy.url), names[4]: (s3_url, throttled.url)}
        for r in range(args.repeats):
            for name, (root, s3_endpoint) in sources.items():
                cfg = LoaderConfig(shards=root, batch_size=args.batch_size, num_frames=args.num_frames,
                                   frame_stride=args.frame_stride, crop_size=args.crop_size, threads=args.threads)
                before = retry_count()
                with s3_configured(s3_endpoint) if s3_endpoint else contextlib.nullcontext():
                    res = measure(lambda cfg=cfg: run_loader(cfg, "dali"), args.seconds)
                runs[name].append({**res, "retries": retry_count() - before})
                print(f"repeat {r + 1}/{args.repeats} {name}: {res['clips_per_s']:.1f} clips/s, "
                      f"{runs[name][-1]['retries']} retries", file=sys.stderr)
        runs_extra = {"throttled_requests": throttled.counts["throttled"], "requests": throttled.counts["requests"]}
    base = median([x["clips_per_s"] for x in runs["local disk"]])
    rows = [{"source": name, "clips_per_s": median([x["clips_per_s"] for x in rs]),
             "vs_local": median([x["clips_per_s"] for x in rs]) / base,
             "first_batch_s": median([x["first_batch_s"] for x in rs]),
             "retries": sum(x["retries"] for x in rs)} for name, rs in runs.items()]
    print(format_table(rows, ["source", "clips_per_s", "vs_local", "first_batch_s", "retries"]))
    path = write_result(args.json, "remote", vars(args), rows, {"runs": runs, "throttling_proxy": runs_extra})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
