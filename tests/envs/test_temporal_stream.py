"""Timestamp columns and formats of time-indexed CSV streams, and the temporal stream detector."""

import numpy as np
import pytest
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
from anomaly_gym.envs.stream_policy import StreamPolicy
from anomaly_gym.envs.temporal_stream import TemporalStreamDetector, TimestampFormat, find_time_column

MAY_1_NOON = 1714564800.0  # 2024-05-01 12:00:00 UTC


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("2024-05-01 12:00:00", "%Y-%m-%d %H:%M:%S"),
        ("2024-05-01T12:00:00", "%Y-%m-%dT%H:%M:%S"),
        ("2024-05-01T12:00:00.250", "%Y-%m-%dT%H:%M:%S.%f"),
        ("2024-05-01 12:00", "%Y-%m-%d %H:%M"),
        ("2024/05/01 12:00:00", "%Y/%m/%d %H:%M:%S"),
        ("05/01/2024 12:00 PM", "%m/%d/%Y %I:%M %p"),
    ],
)
def test_the_first_rows_format_is_detected_and_read(text, pattern):
    fmt = TimestampFormat.detect(text)
    assert fmt.pattern == pattern
    assert fmt.parse(text) == pytest.approx(MAY_1_NOON + (0.25 if ".250" in text else 0.0))


def test_a_zone_keeps_the_wall_clock_time():
    fmt = TimestampFormat.detect("2024-05-01T12:00:00+02:00")
    assert fmt.parse("2024-05-01T12:00:00+02:00") == MAY_1_NOON
    assert fmt.parse("2024-05-01T13:00:00Z") == MAY_1_NOON + 3600


def test_day_first_or_month_first_is_settled_by_the_other_sample_rows():
    assert TimestampFormat.detect("01/02/2024 00:00", ["13/02/2024 00:00"]).pattern == "%d/%m/%Y %H:%M"
    assert TimestampFormat.detect("01/02/2024 00:00", ["02/13/2024 00:00"]).pattern == "%m/%d/%Y %H:%M"


@pytest.mark.parametrize(
    "text, seconds", [("1714564800", MAY_1_NOON), ("1714564800000", MAY_1_NOON), ("1714564800000000", MAY_1_NOON), ("1714564800.5", MAY_1_NOON + 0.5)]
)
def test_unix_times_take_their_unit_from_the_first_rows_magnitude(text, seconds):
    assert TimestampFormat.detect(text).parse(text) == pytest.approx(seconds)


def test_a_timestamp_of_another_format_is_refused_with_the_expected_format():
    fmt = TimestampFormat.detect("2024-05-01 12:00:00")
    for bad in ("2024-05-01", "01/05/2024 12:00:00", "yesterday", ""):
        with pytest.raises(ValueError, match="first row's format %Y-%m-%d %H:%M:%S"):
            fmt.parse(bad)
    with pytest.raises(ValueError, match="not a number"):
        TimestampFormat.detect("1714564800").parse("2024-05-01")
    with pytest.raises(ValueError, match="not a timestamp"):
        TimestampFormat.detect("soon")


def test_the_time_column_is_found_by_its_values_or_its_name():
    header = ["host", "when", "value"]
    sample = [["a", f"2024-05-01 12:{m:02d}:00", str(m)] for m in range(20)]
    assert find_time_column(header, sample) == 1
    unix = [[str(1714564800 + 60 * i), str(i)] for i in range(20)]
    assert find_time_column(["timestamp", "value"], unix) == 0
    assert find_time_column(["counter", "value"], unix) is None  # increasing numbers, not named like a time
    assert find_time_column(["a", "b"], [["1", "2"]] * 20) is None
    assert find_time_column(["counter", "value"], unix, name="counter") == 0
    with pytest.raises(ValueError, match="not a column"):
        find_time_column(["a", "b"], [["1", "2"]], name="t")


def _policy(threshold: float = 0.5) -> StreamPolicy:
    w = np.array([[2.0 if n in ("level/mid", "level/slow") else 0.0 for n in OBSERVATION_NAMES]])
    return StreamPolicy(layers=[(w, np.array([-8.0]))], score_threshold=threshold)


def _series(n: int = 3000, spike: int = 2500):
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 10 + np.sin(2 * np.pi * t / 288) + 0.1 * rng.normal(size=n)
    values[spike] += 8.0
    return values, MAY_1_NOON + 300.0 * t


def test_the_detector_warms_up_then_flags_a_spike_by_the_policys_threshold():
    values, stamps = _series()
    det = TemporalStreamDetector(_policy(0.5), warmup=100)
    out = [det.process_one([v], t) for v, t in zip(values, stamps)]
    assert all(o == (None, None) for o in out[:100])
    assert all(o[0] is not None and 0.0 <= o[0] <= 1.0 for o in out[100:])
    flagged = [i for i, (_, f) in enumerate(out) if f]
    assert 2500 in flagged and len(flagged) < 30
    assert det.describe_rule() == "score > 0.5"


def test_a_contamination_share_flags_about_that_share_of_a_quiet_stream():
    rng = np.random.default_rng(1)
    values = rng.normal(size=6000)
    det = TemporalStreamDetector(_policy(), warmup=500, contamination=0.05, window=1000)
    flags = [det.process_one([v], 60.0 * i)[1] for i, v in enumerate(values)][500:]
    assert 0.02 < np.mean(flags) < 0.08
    assert len(det._sorted) == 1000  # bounded memory


def test_the_detector_refuses_two_rules():
    with pytest.raises(ValueError, match="not both"):
        TemporalStreamDetector(_policy(), threshold=0.5, contamination=0.1)
