"""`python benchmarks/report.py`: every result in benchmarks/results/ as markdown, one section per machine.

Collects the loader, model-FLOPs, training, cache and dataprep benchmarks (clips/s per GPU or per
process, data-wait, MFU, decode-limit fraction) with the config of each run.

    python benchmarks/report.py [--results benchmarks/results] [--out benchmarks/results/REPORT.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return "" if v is None else str(v)


def table(rows: list[dict], columns: list[str]) -> list[str]:
    cols = [c for c in columns if any(c in r for r in rows)]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return out


COLUMNS = {
    "loader": ["loader", "clips_per_s", "views_per_s", "first_batch_s", "peak_rss_mb", "vs_decode_only", "vs_rgb_limit",
               "vs_decord", "vs_torchcodec"],
    "train": ["stage", "processes", "clips_per_s", "step_time_s", "data_wait_frac", "tflops", "mfu", "peak_tflops"],
    "dataprep": ["job", "workers", "input_s", "wall_s_median", "video_s_per_s", "per_worker", "per_worker_vs_plain",
                 "total_vs_plain"],
    "model_flops": ["size", "params_M", "enc_fwd_full_GF", "teacher_step_GF", "student_step_GF", "student_cached_GF",
                    "vjepa_step_GF"],
}

CONFIG_KEYS = ("shards", "input", "batch_size", "num_frames", "frame_stride", "crop_size", "threads", "device",
               "config", "steps", "nprocs", "repeats", "seconds", "codec", "short_side")


def describe(config: dict) -> str:
    parts = [f"{k}={config[k]}" for k in CONFIG_KEYS if config.get(k) not in (None, "", [])]
    return ", ".join(parts)


def build(results: Path) -> str:
    by_machine: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    for p in sorted(results.glob("*.json")):
        data = json.loads(p.read_text())
        m = data.get("machine", {})
        key = f"{m.get('cpu', '?')} x{m.get('cpu_count', '?')}" + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        by_machine[key].append((p, data))
    lines = ["# Benchmark results", ""]
    for machine, items in by_machine.items():
        lines += [f"## {machine}", ""]
        for path, data in items:
            name = data.get("benchmark", path.stem)
            m = data.get("machine", {})
            lines += [f"### {path.stem}", "",
                      f"{describe(data.get('config', {}))}; measured {m.get('time_utc', '?')}, commit "
                      f"{m.get('git_commit', '?')}, torch {m.get('torch', '?')}, DALI {m.get('nvidia-dali-cuda130', '?')}.",
                      ""]
            rows = data.get("rows", [])
            if isinstance(rows, list) and rows and isinstance(rows[0], dict):
                cols = COLUMNS.get(name) or list(rows[0].keys())
                lines += table(rows, cols) + [""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--out", default=None, help="also write the markdown here")
    args = ap.parse_args(argv)
    text = build(Path(args.results))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
