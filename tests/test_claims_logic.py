"""The verdicts of the demo's report and of benchmarks/claims.py: intervals decide, and the share of a
teacher's lead that its student recovers is read against the half-way mark."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from salt.report import recovered_lead, versus

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.claims import distill_section  # noqa: E402


def est(mean: float, half: float = 0.03) -> dict:
    return {"mean": mean, "low": mean - half, "high": mean + half}


def probes(**knn: float) -> dict:
    return {name: {"attentive": est(0.8), "linear": est(0.5), "knn": est(v), "knn_std": est(v)}
            for name, v in knn.items()}


def test_recovered_lead_against_the_half_way_mark():
    p = probes(floor=0.2, teacher=0.6, good=0.5, bad=0.3, close=0.41)
    assert recovered_lead(p, "good", "teacher", "floor")[0] == "holds"  # 75% of the lead, interval above 0.4
    assert recovered_lead(p, "bad", "teacher", "floor")[0] == "does not hold"
    assert recovered_lead(p, "close", "teacher", "floor")[0] == "inside noise"  # 0.38-0.44 spans the mark
    assert "75% of the lead" in recovered_lead(p, "good", "teacher", "floor")[1]
    assert recovered_lead(probes(floor=0.5, teacher=0.4, s=0.5), "s", "teacher", "floor")[0] == "not measurable"
    # a lead inside noise (intervals overlapping) is no lead to recover a share of
    assert recovered_lead(probes(floor=0.2, teacher=0.23, s=0.22), "s", "teacher", "floor")[0] == "not measurable"


def test_versus_reads_every_probe_both_have():
    a = {"attentive": est(0.9), "knn": est(0.5), "linear": est(0.3)}
    b = {"attentive": est(0.5), "knn": est(0.5), "linear": est(0.3)}
    assert versus({"a": a, "b": b}, "a", "b")[0] == "holds"
    assert versus({"a": a, "b": b}, "b", "a")[0] == "does not hold"
    c = {"attentive": est(0.99), "knn": est(0.1)}  # higher on one probe, lower on another
    assert versus({"a": a, "c": c}, "c", "a")[0] == "mixed"
    assert versus({"a": a, "b": a}, "a", "b")[0] == "inside noise"
    assert "k-NN std" not in versus({"a": a, "b": b}, "a", "b")[1]  # only the probes both ran


def test_distill_section_over_seeds():
    """Three seeds of canned probes: the student recovers 60-70% of the supervised encoder's k-NN lead."""
    knn = {0: (0.20, 0.60, 0.46), 1: (0.22, 0.62, 0.48), 2: (0.21, 0.58, 0.46)}  # random, supervised, student

    class FakeSweep:
        def probe(self, encoder, seed):
            r, s, _ = knn[seed]
            v = r if encoder.name == "step_00000000" else s
            return {"attentive": v, "linear": v, "knn": v, "knn_std": v}

        def distill(self, teacher, steps, seed, tag, recipe=()):
            assert recipe == ("--masks.kind=full", "--optim.lr=0.004")  # the student's own flags, passed on
            assert tag.endswith("_s200_full_lr0.004")  # and in its folder name: no other recipe's run is reused
            r, _, st = knn[seed]
            v = st if tag.startswith("distill_supervised") else r + 0.01
            return {"seed": seed, "attentive": v, "linear": v, "knn": v, "knn_std": v, "loss": 1 - v,
                    "curve": [(50, 0.5, r), (100, 0.4, (r + st) / 2), (200, 0.3, st)]}

    args = SimpleNamespace(seeds=[0, 1, 2], supervised_steps=400, student_steps=200, student_masks="full",
                           student_lr=4e-3)
    lines, out = distill_section(FakeSweep(), args, lambda seed: (Path(f"sup{seed}"), {"train_flops": 1.0}))
    share = out["lead_recovered"]["knn"]
    assert share["mean"] == pytest.approx(((0.26 / 0.40) + (0.26 / 0.40) + (0.25 / 0.37)) / 3)
    text = "\n".join(lines)
    assert "recovers >= half of its knn lead over random | holds" in text
    assert "200 steps, full masks, peak rate 0.004 per 256 clips" in text
    assert out["loss_vs_knn_r2"] > 0.9  # the canned curves: loss falls as k-NN rises


def test_a_recipe_sweep_gives_each_probe_over_the_seeds_of_a_variant():
    from benchmarks.common import interval
    from benchmarks.recipe import seed_groups

    def row(variant, step, knn, loss=0.2, linear=0.5):
        return {"variant": variant, "step": step, "loss": loss, "knn": {"mean": knn}, "linear": {"mean": linear}}

    rows = [row("full_s0", 300, 0.9), row("full_s0", 900, 0.40), row("full_s1", 900, 0.50, loss=0.4),
            row("full_s2", 900, 0.45), row("alone_s0", 900, 0.3), row("multiblock", 900, 0.2),
            row("random_s1", 900, 0.2), row("random_s2", 900, 0.22)]
    groups = {g["group"]: g for g in seed_groups(rows, 900)}
    assert sorted(groups) == ["full", "random"]  # one seed is no interval; a name without _sN is no group
    full = groups["full"]
    assert full["variants"] == ["full_s0", "full_s1", "full_s2"]  # the step-300 export is not a seed's figure
    assert full["knn"]["seeds"] == [0.40, 0.50, 0.45]
    assert full["knn"]["mean"] == pytest.approx(0.45) and full["loss"] == pytest.approx(0.8 / 3)
    # t(2) = 4.30 over 3 seeds of std 0.05: 0.45 +- 4.30 * 0.05 / sqrt(3)
    assert full["knn"]["low"] == pytest.approx(0.45 - 4.30 * 0.05 / 3 ** 0.5)
    assert "attentive" not in full  # not probed: not made up
    assert interval([0.3])["low"] == interval([0.3])["high"] == 0.3
