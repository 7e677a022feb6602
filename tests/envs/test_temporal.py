"""The temporal featurizer: online equals batch, bounded features, constant memory, what each feature sees."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from anomaly_gym.envs.series import make_synthetic_series
from anomaly_gym.envs.temporal import FEATURE_NAMES, TemporalConfig, TemporalFeaturizer, lag_rows_for, to_epoch_seconds

HOUR = 3600


def _stream(n=3000, seed=0, period_rows=288):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    values = 10 + 3 * np.sin(2 * np.pi * t / period_rows) + rng.normal(0, 0.3, n)
    stamps = np.datetime64("2020-01-06T00:00:00") + (t * 300).astype("timedelta64[s]")
    return values, stamps


def test_online_rows_equal_the_batch_transform():
    values, stamps = _stream(800)
    batch = TemporalFeaturizer().transform(values, stamps)
    online = TemporalFeaturizer()
    secs = to_epoch_seconds(stamps)
    rows = np.array([online.process_one(v, t) for v, t in zip(values, secs)], dtype=np.float32)
    np.testing.assert_array_equal(rows, batch)
    assert batch.shape == (800, len(FEATURE_NAMES)) and batch.dtype == np.float32


def test_features_are_bounded_and_score_one_does_not_learn():
    values, stamps = _stream(1500)
    values[1000] += 50  # a spike
    feat = TemporalFeaturizer()
    out = feat.transform(values, stamps)
    low, high = feat.feature_bounds()
    assert (out >= low).all() and (out <= high).all()
    before = feat.score_one(values[-1], float(to_epoch_seconds(stamps[-1:])[0]) + 300)
    again = feat.score_one(values[-1], float(to_epoch_seconds(stamps[-1:])[0]) + 300)
    assert before == again and feat.n_seen == 1500


def test_a_spike_and_a_level_shift_stand_out():
    values, stamps = _stream(3000)
    values[2000] += 8.0
    values[2500:] += 4.0
    out = TemporalFeaturizer().transform(values, stamps)
    names = list(FEATURE_NAMES)
    fast, cusum, novelty = names.index("level/fast"), names.index("change/level"), names.index("evidence/novelty")
    normal = out[1000:1990]
    assert out[2000, fast] > normal[:, fast].max()
    assert out[2000, novelty] > normal[:, novelty].max()
    assert out[2510, cusum] > np.percentile(normal[:, cusum], 99)


def test_seasonal_context_anomaly_is_seen_by_the_seasonal_features_only():
    # a value that is normal at noon, shown at midnight
    values, stamps = _stream(288 * 8, period_rows=288)
    i = 288 * 7 + 216  # 18:00 on day 8: the trough of the sine
    values[i] = 13.0  # the daily peak's level (normal at 06:00)
    out = TemporalFeaturizer().transform(values, stamps)
    names = list(FEATURE_NAMES)
    day, lag = names.index("season/day"), names.index("season/lag")
    ref = out[288 * 6 : 288 * 7]
    assert out[i, day] > ref[:, day].max()
    assert out[i, lag] > ref[:, lag].max()


def test_a_constant_stream_gives_zero_deviation_until_it_changes():
    stamps = np.datetime64("2020-01-01") + (np.arange(1000) * 60).astype("timedelta64[s]")
    values = np.full(1000, 5.0)
    values[900] = 6.0
    out = TemporalFeaturizer().transform(values, stamps)
    assert np.abs(out[1:899, :-1]).max() == 0.0
    assert out[900, 0] > 3.0


def test_multiple_columns_take_the_maximum_and_keep_the_width():
    a, stamps = _stream(600, seed=1)
    b, _ = _stream(600, seed=2)
    b = b.copy()
    b[500] += 30
    both = TemporalFeaturizer(2).transform(np.column_stack([a, b]), stamps)
    only_b = TemporalFeaturizer(1).transform(b, stamps)
    assert both.shape == (600, len(FEATURE_NAMES))
    assert both[500, 0] == pytest.approx(only_b[500, 0])
    with pytest.raises(ValueError, match="value"):
        TemporalFeaturizer(2).process_one([1.0], 0.0)


def test_bad_rows_are_refused():
    feat = TemporalFeaturizer()
    with pytest.raises(ValueError, match="finite"):
        feat.process_one(float("nan"), 0.0)
    with pytest.raises(ValueError, match="timestamp"):
        feat.process_one(1.0, float("inf"))
    with pytest.raises(TypeError):
        feat.transform(np.ones(3), np.array(["a", "b", "c"]))


def test_memory_is_constant_in_the_stream_length():
    def state_size(f):
        total = 0
        for c in f._columns:
            for name in c.__slots__:
                v = getattr(c, name)
                total += sys.getsizeof(v) + (sum(sys.getsizeof(x) for x in v) if isinstance(v, list) else 0)
        return total

    values, stamps = _stream(6000)
    short, long = TemporalFeaturizer(), TemporalFeaturizer()
    short.transform(values[:2000], stamps[:2000])
    long.transform(values, stamps)
    assert state_size(long) == state_size(short)


def test_seasonal_lag_follows_the_sampling_interval():
    assert lag_rows_for(300) == 288
    assert lag_rows_for(60) == 1440
    assert lag_rows_for(3600) == 168  # hourly rows: a week
    assert lag_rows_for(1) == 4096  # capped
    feat = TemporalFeaturizer(config=TemporalConfig(interval_s=600))
    feat.process_one(1.0, 0.0)
    assert len(feat._columns[0].lag_buf) == 144
    s = make_synthetic_series(0, n_rows=600)
    f2 = TemporalFeaturizer()
    f2.transform(s.values, s.timestamps)
    assert len(f2._columns[0].lag_buf) == 288
