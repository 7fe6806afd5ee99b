"""`make demo` at its smallest size: every stage runs and the report has every section."""

from __future__ import annotations

import json

import pytest

from salt.demo import main as demo_main

SECTIONS = ("## Verdict", "## Frozen probes", "## Loss curves", "## Health during training",
            "## Student loss vs probe accuracy", "## Throughput", "## Reproduce")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_tiny_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    assert demo_main(["--size", "tiny", "--out", str(out), "--shards", str(tmp_path / "shards"), "--cache",
                      str(tmp_path / "cache")]) == 0
    report = (out / "report.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    for encoder in ("random init", "pixels", "frame differences", "teacher", "student", "student of supervised",
                    "student of random", "V-JEPA (EMA)", "supervised"):
        assert f"| {encoder} |" in report
    for plot in ("loss_curves.png", "student_loss_vs_probe.png", "health.png"):
        assert (out / plot).stat().st_size > 1000
    data = json.loads((out / "report.json").read_text())
    budget = data["runs"]["teacher"]["train_flops"] + data["runs"]["student"]["train_flops"]
    assert data["runs"]["V-JEPA (EMA)"]["train_flops"] == pytest.approx(budget, rel=0.15)  # matched compute
    # a k-NN probe at each checkpoint of the student of the supervised encoder
    assert [p[0] for p in data["student_knn_history"]] == [6, 12]
    for name, p in data["probes"].items():
        assert p["val_samples"] == 40 and p["linear"]["seeds"] == 2  # the tiny size's 2 probe seeds
        assert ("attentive" in p) == (name not in ("pixels", "frame differences"))  # baselines: linear and k-NN
        for est in (p.get("attentive", p["linear"]), p["linear"], p["knn"], p["knn_std"]):
            assert est["low"] <= est["mean"] <= est["high"]
    assert data["probes"]["random init"]["step"] == 0 and data["probes"]["pixels"]["baseline"] == "pixels"
    # the random floor is the teacher's initialisation, and the control student's teacher: both students of
    # the claim learn from a target cache of their teacher
    teacher_init = out / "teacher" / "export" / "step_00000000"
    assert teacher_init.is_dir()
    for run, teacher, cache in (("student_of_random", teacher_init, "demo-random"),
                                ("student_of_supervised", out / "supervised", "demo-supervised")):
        assert json.loads((tmp_path / "cache" / cache / "meta.json").read_text())["teacher"]["path"] == str(teacher)
        assert str(tmp_path / "cache" / cache) in (out / run / "config.yaml").read_text()
    verdicts = {claim: verdict for claim, verdict, _ in data["verdict"]}
    assert set(verdicts.values()) <= {"holds", "does not hold", "inside noise", "mixed", "not measured here",
                                      "measured", "too few checkpoints", "not measurable"}
    assert any(c.startswith("student of the supervised encoder recovers") for c in verdicts)
    assert verdicts["student robust to a smaller teacher"] == "not measured here"
