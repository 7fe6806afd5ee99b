"""`make demo` at its smallest size: every stage runs and the report has every section."""

from __future__ import annotations

import json

import pytest

from salt.demo import main as demo_main

SECTIONS = ("## Frozen attentive probe", "## Loss curves", "## Student loss vs probe accuracy", "## Throughput",
            "## Reproduce")


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert demo_main(["--size", "tiny", "--out", str(out), "--shards", str(tmp_path / "shards"), "--cache",
                      str(tmp_path / "cache")]) == 0
    report = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for encoder in ("random init", "teacher", "student", "student (cached targets)", "V-JEPA (EMA)"):
        assert f"| {encoder} |" in report
    for plot in ("loss_curves.png", "student_loss_vs_probe.png"):
        assert (out / plot).stat().st_size > 1000
    data = json.loads((out / "report.json").read_text())
    budget = data["runs"]["teacher"]["train_flops"] + data["runs"]["student"]["train_flops"]
    assert data["runs"]["V-JEPA (EMA)"]["train_flops"] == pytest.approx(budget, rel=0.15)  # matched compute
    assert len(data["student_history"]) == 2  # a probe per student checkpoint
    assert all(0 <= p["top1"] <= 1 for p in data["probes"].values())
