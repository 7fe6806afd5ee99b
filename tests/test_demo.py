"""`make demo` at its smallest size: every stage runs and the report has every section."""

from __future__ import annotations

import json

import pytest

from salt.demo import main as demo_main

SECTIONS = ("## Verdict", "## Frozen probes", "## Loss curves", "## Health during training",
            "## Student loss vs probe accuracy", "## Throughput", "## Reproduce")


@pytest.mark.slow
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert demo_main(["--size", "tiny", "--out", str(out), "--shards", str(tmp_path / "shards"), "--cache",
                      str(tmp_path / "cache")]) == 0
    report = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for encoder in ("random init", "teacher", "student", "student (cached targets)", "V-JEPA (EMA)", "supervised"):
        assert f"| {encoder} |" in report
    for plot in ("loss_curves.png", "student_loss_vs_probe.png", "health.png"):
        assert (out / plot).stat().st_size > 1000
    data = json.loads((out / "report.json").read_text())
    budget = data["runs"]["teacher"]["train_flops"] + data["runs"]["student"]["train_flops"]
    assert data["runs"]["V-JEPA (EMA)"]["train_flops"] == pytest.approx(budget, rel=0.15)  # matched compute
    assert [p[0] for p in data["student_knn_history"]] == [6, 12]  # a k-NN probe at each student checkpoint
    for p in data["probes"].values():
        assert p["val_samples"] == 40 and p["attentive"]["seeds"] == 2
        for est in (p["attentive"], p["knn"]):
            assert est["low"] <= est["mean"] <= est["high"]
    verdicts = {claim: verdict for claim, verdict, _ in data["verdict"]}
    assert set(verdicts.values()) <= {"holds", "does not hold", "inside noise", "not measured here", "measured",
                                      "too few checkpoints"}
    assert verdicts["student robust to a smaller teacher"] == "not measured here"
