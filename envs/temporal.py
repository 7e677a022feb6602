"""Temporal features for time-indexed streams: online, constant memory, the same meaning on every stream.

:class:`TemporalFeaturizer` turns each arriving row (one or many value columns and a
timestamp) into a fixed-width vector of bounded features.  Every feature is computed from
the stream's own past only (the row is scored *before* it is learned, the prequential
order), from a fixed amount of state per column: exponentially weighted statistics, a
24-bin and a 168-bin seasonal profile, one period of past values, and a few scalars.
Memory does not grow with the stream, and the per-row cost is a few dozen float
operations per column, in plain Python (no numpy call per row, no torch, no scikit-learn:
``import anomaly_gym.envs.temporal`` is the streaming path's whole import).

Per column, with ``x`` the value and ``d = x - x_prev`` its difference:

======================  ==================================================================
feature                 meaning (each a deviation ``|e| / scale``, log-compressed)
======================  ==================================================================
level/fast|mid|slow     ``x`` against its exponentially weighted mean and mean absolute
                        deviation over about 16, 128 and 1,024 rows
diff/mid|slow           ``d`` against the typical size of differences (128, 1,024 rows)
season/day              ``x`` against the profile of its hour of the day
season/week             ``x`` against the profile of its hour of the week
season/lag              ``x - x[t - P]`` against its typical size, ``P`` one day of rows
                        (the period from the timestamps; one week when rows are hours apart)
forecast/holt           the error of Holt's linear exponential smoothing one-step forecast
change/level            a leaky two-sided CUSUM of the residual from the hour-of-day
                        profile (level shifts)
change/var_up           log of the short-term over the long-term size of differences
                        (more variance)
change/var_down         its inverse (a frozen or flattened stream)
evidence/novelty        the strongest deviation now against the largest of the recent past
                        (a decaying maximum): high only when an event is new
evidence/likelihood     the recent mean of the strongest deviation against its long-run
                        distribution (in the spirit of HTM's anomaly likelihood)
======================  ==================================================================

With several columns each feature is the maximum over the columns, so the width never
depends on the stream.  ``stream/maturity`` (rows seen, up to 750, scaled to [0, 1]) says
how much the statistics can be trusted.  Deviations use a scale floor relative to the
column's own long-run scale, so a constant column gives 0 until it changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: Features that carry no anomaly direction (left free by monotone policies).
FREE_FEATURES = ("stream/maturity",)

COLUMN_FEATURES = (
    "level/fast",
    "level/mid",
    "level/slow",
    "diff/mid",
    "diff/slow",
    "season/day",
    "season/week",
    "season/lag",
    "forecast/holt",
    "change/level",
    "change/var_up",
    "change/var_down",
    "evidence/novelty",
    "evidence/likelihood",
)
FEATURE_NAMES = COLUMN_FEATURES + ("stream/maturity",)

#: Upper bound of every deviation feature (``log1p`` of a deviation of about 400 scales).
CAP = 6.0
MATURITY_ROWS = 750
MAX_LAG_ROWS = 4096


def _alpha(rows: float) -> float:
    return 2.0 / (rows + 1.0)


A_FAST, A_MID, A_SLOW = _alpha(16), _alpha(128), _alpha(1024)
A_BIN_MIN = 0.02  # seasonal bins: about 50 visits of memory
HOLT_LEVEL, HOLT_TREND = 0.5, 0.05
CUSUM_K, CUSUM_LEAK = 0.5, 0.98
NOVELTY_DECAY = 0.995  # the recent maximum fades over a few hundred rows


def _squash(z: float) -> float:
    return CAP if z >= 403.0 else math.log1p(z) if z > 0.0 else 0.0


class _Column:
    """The state of one value column (a few dozen floats plus fixed-size arrays)."""

    __slots__ = (
        "n",
        "prev",
        "m_f",
        "s_f",
        "m_m",
        "s_m",
        "m_s",
        "s_s",
        "d_m",
        "d_s",
        "h_l",
        "h_t",
        "h_e",
        "day_m",
        "day_s",
        "day_n",
        "week_m",
        "week_s",
        "week_n",
        "lag_buf",
        "lag_e",
        "g_pos",
        "g_neg",
        "nov_max",
        "lik_short",
        "lik_m",
        "lik_s",
        "lag_n",
        "d_f",
    )

    def __init__(self) -> None:
        self.n = 0
        self.lag_n = 0
        self.prev = self.m_f = self.s_f = self.m_m = self.s_m = self.m_s = self.s_s = 0.0
        self.d_f = self.d_m = self.d_s = self.h_l = self.h_t = self.h_e = 0.0
        self.day_m, self.day_s, self.day_n = [0.0] * 24, [0.0] * 24, [0] * 24
        self.week_m, self.week_s, self.week_n = [0.0] * 168, [0.0] * 168, [0] * 168
        self.lag_buf: list[float] = []  # one period of past values, sized once the interval is known
        self.lag_e = 0.0
        self.g_pos = self.g_neg = 0.0
        self.nov_max = self.lik_short = self.lik_m = self.lik_s = 0.0

    def step(self, x: float, hour: int, week_hour: int, learn: bool) -> list[float]:
        """Features of ``x`` from the state before it; then (when ``learn``) learn ``x``."""
        n = self.n
        if n == 0:
            if learn:
                self._first(x, hour, week_hour)
            return [0.0] * len(COLUMN_FEATURES)
        floor = 0.05 * self.s_s + 1e-4 * abs(self.m_s) + 1e-12
        d = x - self.prev
        z_f = abs(x - self.m_f) / (self.s_f + floor)
        z_m = abs(x - self.m_m) / (self.s_m + floor)
        z_s = abs(x - self.m_s) / (self.s_s + 1e-4 * abs(self.m_s) + 1e-12)
        zd_m = abs(d) / (self.d_m + floor)
        zd_s = abs(d) / (self.d_s + floor)
        z_day = abs(x - self.day_m[hour]) / (self.day_s[hour] + floor) if self.day_n[hour] else 0.0
        z_week = abs(x - self.week_m[week_hour]) / (self.week_s[week_hour] + floor) if self.week_n[week_hour] else 0.0
        lag = len(self.lag_buf)
        seasonal = lag > 0 and self.lag_n >= lag
        e_lag = x - self.lag_buf[self.lag_n % lag] if seasonal else 0.0
        z_lag = abs(e_lag) / (self.lag_e + floor) if seasonal else 0.0
        e_holt = x - (self.h_l + self.h_t)
        z_holt = abs(e_holt) / (self.h_e + floor)
        if self.day_n[hour] >= 3:  # the residual from the seasonal profile, when there is one
            r = (x - self.day_m[hour]) / (self.day_s[hour] + floor)
        else:
            r = (x - self.m_s) / (self.s_s + floor)
        g_pos = max(0.0, CUSUM_LEAK * self.g_pos + r - CUSUM_K)
        g_neg = max(0.0, CUSUM_LEAK * self.g_neg - r - CUSUM_K)
        d_short = (1.0 - A_FAST) * self.d_f + A_FAST * abs(d)  # differences: free of the seasonal swing
        var_up = math.log((d_short + floor) / (self.d_s + floor))
        evidence = max(z_f, z_m, zd_m, min(z_day, z_week, z_lag) if seasonal else z_m, z_holt)
        ev = _squash(evidence)
        novelty = ev - self.nov_max
        lik_short = self.lik_short + 0.3 * (ev - self.lik_short)
        likelihood = (lik_short - self.lik_m) / (self.lik_s + 0.05)
        feats = [
            _squash(z_f),
            _squash(z_m),
            _squash(z_s),
            _squash(zd_m),
            _squash(zd_s),
            _squash(z_day),
            _squash(z_week),
            _squash(z_lag),
            _squash(z_holt),
            _squash(max(g_pos, g_neg)),
            min(CAP, max(0.0, var_up)),
            min(CAP, max(0.0, -var_up)),
            max(-CAP, min(CAP, novelty)),
            max(-CAP, min(CAP, likelihood)),
        ]
        if learn:
            self._learn(x, d, hour, week_hour, e_lag, e_holt, g_pos, g_neg, ev, lik_short)
        return feats

    def _first(self, x: float, hour: int, week_hour: int) -> None:
        self.prev = self.m_f = self.m_m = self.m_s = self.h_l = x
        self.day_m[hour] = self.week_m[week_hour] = x
        self.day_n[hour] = self.week_n[week_hour] = 1
        self.n = 1

    def _learn(self, x, d, hour, week_hour, e_lag, e_holt, g_pos, g_neg, ev, lik_short) -> None:
        n = self.n + 1
        warm = 1.0 / n  # a running mean until the horizon takes over
        a_f, a_m, a_s = max(A_FAST, warm), max(A_MID, warm), max(A_SLOW, warm)
        self.s_f += a_f * (abs(x - self.m_f) - self.s_f)
        self.m_f += a_f * (x - self.m_f)
        self.s_m += a_m * (abs(x - self.m_m) - self.s_m)
        self.m_m += a_m * (x - self.m_m)
        self.s_s += a_s * (abs(x - self.m_s) - self.s_s)
        self.m_s += a_s * (x - self.m_s)
        self.d_f += a_f * (abs(d) - self.d_f)
        self.d_m += a_m * (abs(d) - self.d_m)
        self.d_s += a_s * (abs(d) - self.d_s)
        for m, s, c, b in ((self.day_m, self.day_s, self.day_n, hour), (self.week_m, self.week_s, self.week_n, week_hour)):
            c[b] += 1
            a = max(A_BIN_MIN, 1.0 / c[b])
            s[b] += a * (abs(x - m[b]) - s[b]) if c[b] > 1 else 0.0
            m[b] += a * (x - m[b])
        lag = len(self.lag_buf)
        if lag:
            if self.lag_n >= lag:
                self.lag_e += max(A_MID, 1.0 / (self.lag_n - lag + 1)) * (abs(e_lag) - self.lag_e)
            self.lag_buf[self.lag_n % lag] = x
            self.lag_n += 1
        level = HOLT_LEVEL * x + (1.0 - HOLT_LEVEL) * (self.h_l + self.h_t)
        self.h_t += HOLT_TREND * (level - self.h_l - self.h_t)
        self.h_l = level
        self.h_e += a_m * (abs(e_holt) - self.h_e)
        self.g_pos, self.g_neg = g_pos, g_neg
        self.nov_max = max(ev, NOVELTY_DECAY * self.nov_max)
        self.lik_short = lik_short
        self.lik_s += a_s * (abs(lik_short - self.lik_m) - self.lik_s)
        self.lik_m += a_s * (lik_short - self.lik_m)
        self.prev = x
        self.n = n


def lag_rows_for(interval_s: float) -> int:
    """Rows in one seasonal period for rows ``interval_s`` seconds apart: a day, or a week for hourly or sparser data."""
    if not interval_s > 0:
        return 288
    period = 86_400.0 if interval_s < 3_600.0 else 7 * 86_400.0
    return int(min(MAX_LAG_ROWS, max(2, round(period / interval_s))))


@dataclass
class TemporalConfig:
    """Settings of :class:`TemporalFeaturizer`."""

    interval_s: float | None = None
    """Seconds between rows, which sizes the seasonal lag; None: the gap between the first two rows."""


class TemporalFeaturizer:
    """Online temporal features of a stream of rows (see the module docstring for each feature).

    Use :meth:`learn_one` / :meth:`score_one` (River's convention) or :meth:`process_one`
    (score, then learn: what a stream does), or :meth:`transform` for a whole series.

    Args:
        n_columns: Value columns per row.
        config: A :class:`TemporalConfig`.
    """

    feature_names = FEATURE_NAMES

    def __init__(self, n_columns: int = 1, config: TemporalConfig | None = None) -> None:
        if int(n_columns) < 1:
            raise ValueError(f"n_columns must be a positive integer, got {n_columns}")
        self.n_columns = int(n_columns)
        self.config = config or TemporalConfig()
        self.n_seen = 0
        self._columns: list[_Column] | None = None
        self._period_unset = True  # the seasonal lag is sized from the first gap between rows
        self._first_ts = 0.0

    @property
    def n_features(self) -> int:
        return len(FEATURE_NAMES)

    @staticmethod
    def feature_bounds() -> tuple[np.ndarray, np.ndarray]:
        low = np.array([-CAP if n in ("evidence/novelty", "evidence/likelihood") else 0.0 for n in FEATURE_NAMES], dtype=np.float32)
        high = np.array([1.0 if n == "stream/maturity" else CAP for n in FEATURE_NAMES], dtype=np.float32)
        return low, high

    # -- the per-row API ---------------------------------------------------------------------
    def process_one(self, values: Sequence[float] | float, timestamp: float) -> list[float]:
        """Features of one row (from the stream's past), then learn the row."""
        return self._row(values, timestamp, learn=True)

    def score_one(self, values: Sequence[float] | float, timestamp: float) -> list[float]:
        """Features of one row without learning it."""
        return self._row(values, timestamp, learn=False)

    def learn_one(self, values: Sequence[float] | float, timestamp: float) -> "TemporalFeaturizer":
        """Learn one row."""
        self._row(values, timestamp, learn=True)
        return self

    def transform(self, values: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
        """Features of every row of a series, in order (each from the rows before it): ``(n, n_features)`` float32."""
        vals = np.asarray(values, dtype=np.float64)
        vals = vals.reshape(len(vals), -1)
        ts = to_epoch_seconds(timestamps)
        if len(ts) != len(vals):
            raise ValueError(f"{len(ts)} timestamps for {len(vals)} rows")
        out = np.empty((len(vals), self.n_features), dtype=np.float32)
        rows = vals.tolist()
        for i, t in enumerate(ts.tolist()):
            out[i] = self._row(rows[i], t, learn=True)
        return out

    # -- internals ---------------------------------------------------------------------------
    def _row(self, values, timestamp: float, learn: bool) -> list[float]:
        vals = [float(values)] if not isinstance(values, (list, tuple, np.ndarray)) else [float(v) for v in values]
        if len(vals) != self.n_columns:
            raise ValueError(f"expected {self.n_columns} value(s) per row, got {len(vals)}")
        for v in vals:
            if not math.isfinite(v):
                raise ValueError(f"values must be finite numbers, got {v!r}")
        ts = float(timestamp)
        if not math.isfinite(ts):
            raise ValueError(f"timestamp must be a finite number of seconds, got {timestamp!r}")
        if self._columns is None:
            self._columns = [_Column() for _ in range(self.n_columns)]
            if self.config.interval_s is not None:
                self._set_period(float(self.config.interval_s))
        elif self._period_unset and learn:
            self._set_period(ts - self._first_ts if self.config.interval_s is None else float(self.config.interval_s))
        seconds = int(ts)
        hour = (seconds // 3600) % 24
        week_hour = ((seconds // 86_400 + 3) % 7) * 24 + hour  # 1970-01-01 was a Thursday; Monday = 0
        cols = self._columns
        per_col = [c.step(v, hour, week_hour, learn) for c, v in zip(cols, vals)]
        feats = per_col[0] if len(per_col) == 1 else [max(f) for f in zip(*per_col)]
        feats.append(min(1.0, self.n_seen / MATURITY_ROWS))
        if learn:
            if self.n_seen == 0:
                self._first_ts = ts
            self.n_seen += 1
        return feats

    def _set_period(self, interval_s: float) -> None:
        rows = lag_rows_for(interval_s)
        for c in self._columns:
            c.lag_buf = [0.0] * rows
        self._period_unset = False


def to_epoch_seconds(timestamps) -> np.ndarray:
    """Timestamps (``datetime64``, pandas, or numbers of seconds) as float64 seconds since 1970."""
    arr = np.asarray(timestamps)
    if np.issubdtype(arr.dtype, np.datetime64):
        return arr.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    if arr.dtype.kind in "iuf":
        return arr.astype(np.float64)
    raise TypeError(f"timestamps must be datetime64 or numbers of seconds, got dtype {arr.dtype}")
