"""Confidence intervals for probe accuracies: a percentile bootstrap over validation clips.

Every figure a report prints comes with one. The resampling is over clips (the unit the validation
set samples) and keeps all seeds of a clip together, so the interval covers both the finite
validation set and the spread between probe seeds.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Estimate:
    mean: float  # accuracy averaged over seeds and clips
    low: float  # 95% interval
    high: float
    seeds: int
    samples: int

    def to_json(self) -> dict:
        return asdict(self)

    def fmt(self, scale: float = 100.0) -> str:
        return f"{scale * self.mean:.1f} [{scale * self.low:.1f}, {scale * self.high:.1f}]"


def bootstrap(correct: np.ndarray, resamples: int = 2000, level: float = 0.95, seed: int = 0) -> Estimate:
    """correct (seeds, clips) of 0/1: the mean and a percentile interval of the mean accuracy."""
    correct = np.asarray(correct, dtype=np.float64)
    if correct.ndim == 1:
        correct = correct[None]
    seeds, n = correct.shape
    if n == 0:
        raise ValueError("no validation clips to put an interval on")
    per_clip = correct.mean(0)  # (clips,): the seeds of a clip travel together
    rng = np.random.default_rng(seed)
    means = per_clip[rng.integers(0, n, (resamples, n))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Estimate(float(per_clip.mean()), float(lo), float(hi), seeds, n)


def chance_band(num_classes: int, samples: int, level: float = 0.95) -> tuple[float, float]:
    """Where a classifier that guesses lands on `samples` balanced clips: the binomial's central interval."""
    p = 1.0 / num_classes
    pmf = [math.comb(samples, k) * p**k * (1 - p) ** (samples - k) for k in range(samples + 1)]
    cdf = np.cumsum(pmf)
    tail = (1 - level) / 2
    lo = int(np.searchsorted(cdf, tail))  # smallest k with P(X <= k) >= tail
    hi = int(np.searchsorted(cdf, 1 - tail))
    return lo / samples, hi / samples
