"""Time-indexed CSV streams: find the timestamp column, read its format, flag rows with a stream policy.

This is what ``anomaly-gym detect --mode stream`` runs when its input has a timestamp
column (``--temporal auto|on``); it imports numpy and Gymnasium only (no torch, PyOD or
scikit-learn), so the first row is scored within a second or two of the start.

Timestamp column
    :func:`find_time_column` picks the column a user names, else the first column whose
    sample values are dates or date-times (``2024-05-01 12:00:00``, ISO with ``T`` and a
    zone, ``01/05/2024 12:00``, ...), else the first column named like a time
    (:data:`TIME_NAMES`) whose sample values are numbers (Unix time in seconds,
    milliseconds, microseconds or nanoseconds).

Timestamp format
    :meth:`TimestampFormat.detect` fixes the format from the first row's timestamp (the
    other sample rows only settle a day-first against a month-first date).  Every later
    timestamp must have that format: one that does not is a bad row with an explicit
    reason, never a silently misread time.  Times with a zone offset keep their wall-clock
    time (the daily and weekly profiles follow the clock as written).

Scoring
    :class:`TemporalStreamDetector` scores each row with a
    :class:`~anomaly_gym.envs.stream_policy.TemporalScorer` (temporal features from the
    stream's own past, then the policy), learns it, and flags it by one of three rules: a
    fixed threshold on the score (by default the policy's own, chosen on its training
    series by NAB's corpus-wide sweep: the features are stream-relative, so one cut serves
    every stream), or a contamination share (a conformal p-value among the last ``window``
    scores).
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from datetime import datetime
from typing import Sequence

from anomaly_gym.envs.csvio import infer_column_types, is_number
from anomaly_gym.envs.stream_policy import StreamPolicy, TemporalScorer

#: Column names taken for a time column when they hold numbers (Unix time), in any case.
TIME_NAMES = frozenset({"timestamp", "time", "ts", "datetime", "date", "epoch", "time_stamp", "unix_time", "unixtime"})

_EPOCH = datetime(1970, 1, 1)
_DATES = ("%Y-%m-%d", "%Y/%m/%d", "%Y.%m.%d", "%m/%d/%Y", "%d/%m/%Y", "%d.%m.%Y", "%d-%m-%Y", "%m-%d-%Y")
_TIMES = ("", "%H:%M", "%H:%M:%S", "%H:%M:%S.%f", "%I:%M %p", "%I:%M:%S %p")
_SEPARATORS = (" ", "T")
_ZONES = ("", "%z", " %z")
#: Unix time units by magnitude of the first value: (at least, seconds per unit, name).
_EPOCH_UNITS = ((1e17, 1e-9, "nanoseconds"), (1e14, 1e-6, "microseconds"), (1e11, 1e-3, "milliseconds"), (0.0, 1.0, "seconds"))


def _candidates() -> list[str]:
    out = []
    for date in _DATES:
        for time in _TIMES:
            for sep in _SEPARATORS if time else ("",):
                for zone in _ZONES if time else ("",):
                    out.append(f"{date}{sep}{time}{zone}")
    return out


CANDIDATE_FORMATS = tuple(_candidates())


class TimestampFormat:
    """One timestamp format: a ``strptime`` pattern, or Unix time in a fixed unit.

    Args:
        pattern: A ``strptime`` pattern, or ``"unix"``.
        unit: Seconds per unit of a Unix time (1, 1e-3, 1e-6, 1e-9).
    """

    def __init__(self, pattern: str, unit: float = 1.0) -> None:
        self.pattern = pattern
        self.unit = float(unit)

    def __repr__(self) -> str:
        return f"TimestampFormat({self.pattern!r}, unit={self.unit:g})"

    def describe(self) -> str:
        if self.pattern == "unix":
            name = next(n for _, u, n in _EPOCH_UNITS if u == self.unit)
            return f"Unix time in {name}"
        return self.pattern

    @classmethod
    def detect(cls, first: str, others: Sequence[str] = ()) -> "TimestampFormat":
        """The format of ``first``; among formats that read it, the one that reads most of ``others``.

        Raises:
            ValueError: ``first`` is no timestamp this reader knows.
        """
        text = first.strip()
        if is_number(text):
            value = abs(float(text))
            if not math.isfinite(value):
                raise ValueError(f"timestamp {first!r} is not a finite number")
            unit = next(u for least, u, _ in _EPOCH_UNITS if value >= least)
            return cls("unix", unit)
        fits = [p for p in CANDIDATE_FORMATS if _parses(p, text)]
        if not fits:
            raise ValueError(f"{first!r} is not a timestamp this reader knows (dates like 2024-05-01 12:00:00, ISO 8601, 01/05/2024 12:00, or Unix time)")
        rest = [o.strip() for o in others]
        best = max(fits, key=lambda p: (sum(_parses(p, o) for o in rest), -fits.index(p)))
        return cls(best)

    def parse(self, text: str) -> float:
        """Seconds since 1970 of ``text`` (wall-clock time when it has a zone).

        Raises:
            ValueError: ``text`` does not have this format (the message says which it expected).
        """
        s = text.strip()
        if self.pattern == "unix":
            try:
                value = float(s)
            except ValueError:
                raise ValueError(f"timestamp {text!r} is not a number (expected {self.describe()}, the first row's format)") from None
            if not math.isfinite(value):
                raise ValueError(f"timestamp {text!r} is not a finite number")
            return value * self.unit
        try:
            dt = datetime.strptime(s, self.pattern)
        except ValueError:
            raise ValueError(f"timestamp {text!r} does not have the first row's format {self.pattern}") from None
        return (dt.replace(tzinfo=None) - _EPOCH).total_seconds()


def _parses(pattern: str, text: str) -> bool:
    try:
        datetime.strptime(text, pattern)
    except ValueError:
        return False
    return True


def find_time_column(header: Sequence[str], sample: Sequence[Sequence[str]], name: str | None = None) -> int | None:
    """The index of the timestamp column (see the module docstring), or None when there is none.

    Raises:
        ValueError: ``name`` is not a column of ``header``.
    """
    if name is not None:
        if name not in header:
            raise ValueError(f"--time-column {name!r} is not a column of the input; the columns are {list(header)}")
        return list(header).index(name)
    types = infer_column_types(header, sample)
    for i, t in enumerate(types):
        if t.kind == "timestamp":
            return i
    for i, col in enumerate(header):
        texts = [row[i].strip() for row in sample if i < len(row) and row[i].strip()]
        if col.strip().lower() in TIME_NAMES and texts and all(is_number(t) for t in texts):
            return i
    return None


class TemporalStreamDetector:
    """Score and flag the rows of one time-indexed stream, row by row.

    Args:
        policy: The :class:`StreamPolicy` that scores the temporal features.
        n_columns: Value columns per row.
        warmup: Rows learned (and scored, for the reference of ``contamination``) before
            any row is flagged; ``process_one`` answers ``(None, None)`` for them.
        threshold: Flag a row whose score is above this.
        contamination: Flag a row whose conformal p-value among the last ``window``
            scores is at most this share.  With neither, the policy's own threshold.
        window: Scores kept for the contamination rule.
    """

    def __init__(
        self,
        policy: StreamPolicy,
        n_columns: int = 1,
        *,
        warmup: int = 256,
        threshold: float | None = None,
        contamination: float | None = None,
        window: int = 2048,
    ) -> None:
        if threshold is not None and contamination is not None:
            raise ValueError("give threshold or contamination, not both")
        if contamination is not None and not 0.0 < contamination < 1.0:
            raise ValueError(f"contamination must be between 0 and 1 (exclusive), got {contamination}")
        if warmup < 0 or window < 1:
            raise ValueError(f"warmup must be >= 0 and window >= 1, got {warmup} and {window}")
        self.scorer = TemporalScorer(policy, n_columns)
        self.warmup = int(warmup)
        self.contamination = contamination
        self.threshold = threshold if threshold is not None or contamination is not None else policy.score_threshold
        self.window = int(window)
        self.n_seen = 0
        self._recent: deque[float] = deque()
        self._sorted: list[float] = []

    def describe_rule(self) -> str:
        """The flagging rule in words."""
        if self.contamination is not None:
            return f"conformal p-value <= {self.contamination:.4g} among the last {self.window:,} scores"
        return f"score > {self.threshold:.4g}"

    def process_one(self, values: Sequence[float], timestamp: float) -> tuple[float | None, int | None]:
        """(score, flag) of a row from the stream's past, then learn the row; ``(None, None)`` in warm-up."""
        score = self.scorer.process_one(values, timestamp)
        self.n_seen += 1
        flag = None
        if self.contamination is not None:
            if self.n_seen > self.warmup:
                above = len(self._sorted) - bisect.bisect_left(self._sorted, score)
                flag = int((above + 1) / (len(self._sorted) + 1) <= self.contamination)
            self._remember(score)
        elif self.n_seen > self.warmup:
            flag = int(score > self.threshold)
        return (score, flag) if flag is not None else (None, None)

    def _remember(self, score: float) -> None:
        self._recent.append(score)
        bisect.insort(self._sorted, score)
        if len(self._recent) > self.window:
            old = self._recent.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, old)]
