"""Online NAB baselines: hand-computed scores, constant memory, clear errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from anomaly_gym.detectors.online import HalfSpaceTreesStream, RollingZScore, WindowedGaussian


def test_rolling_zscore_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    det = RollingZScore(50)
    got = [det.process_one(v) for v in x]
    for i in (60, 150, 299):
        past = x[i - 50 : i]
        assert got[i] == pytest.approx(abs(x[i] - past.mean()) / past.std(), rel=1e-9)
    assert got[0] == 0.0 and len(det._buf) == 50


def test_windowed_gaussian_tail_probability_and_steps():
    det = WindowedGaussian(window=10, step=5)
    xs = [float(v) for v in range(10)]
    for v in xs:
        det.process_one(v)
    mean, std = np.mean(xs), np.std(xs)
    z = abs(20.0 - mean) / std
    assert det.process_one(20.0) == pytest.approx(1 - math.erfc(z / math.sqrt(2)))
    for v in (30.0, 30.0, 30.0):  # the window moves only when a step of 5 rows has arrived
        det.process_one(v)
    assert det._mean == pytest.approx(mean)
    det.process_one(30.0)
    assert det._mean == pytest.approx(np.mean(xs[5:] + [20.0, 30, 30, 30, 30]))


def test_bad_values_and_settings():
    with pytest.raises(ValueError, match="finite"):
        RollingZScore().process_one(float("nan"))
    with pytest.raises(ValueError):
        RollingZScore(1)
    with pytest.raises(ValueError):
        WindowedGaussian(window=1)


def test_half_space_trees_scores_an_outlier_higher():
    pytest.importorskip("river")
    rng = np.random.default_rng(0)
    det = HalfSpaceTreesStream(probation=200)
    scores = [det.process_one(v) for v in rng.normal(0, 1, 600)]
    assert scores[:200] == [0.0] * 200
    assert det.process_one(6.0) > np.percentile(scores[300:], 95)
