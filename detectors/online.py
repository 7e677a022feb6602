"""Online stream detectors used as NAB baselines: rolling z-score, windowed Gaussian, Half-Space Trees.

Each scores a univariate stream row by row with ``process_one(value, timestamp)`` (score the
row from the past, then learn it), the convention of :class:`~anomaly_gym.envs.stream_policy.TemporalScorer`,
and keeps constant memory.

- :class:`RollingZScore`: ``|x - mean| / std`` over the previous ``window`` values.
- :class:`WindowedGaussian`: NAB's windowed Gaussian idea: a Gaussian fitted to a trailing
  window (refreshed every ``step`` rows); the score is ``1 - P(|Z| >= |z|)``, one minus the
  two-sided tail probability of the row.
- :class:`HalfSpaceTreesStream`: River's Half-Space Trees (Tan et al. 2011) on the value,
  scaled to [0, 1] by the range of the probationary rows (NAB's first 15 %, at most 750),
  which it only learns from until it starts scoring.  Needs the ``stream`` extra (River).
"""

from __future__ import annotations

import math
from collections import deque


def _check_value(value) -> float:
    v = float(value[0] if isinstance(value, (list, tuple)) else value)
    if not math.isfinite(v):
        raise ValueError(f"values must be finite numbers, got {value!r}")
    return v


class RollingZScore:
    """``|x - mean| / std`` of the previous ``window`` values (0 until two values are seen)."""

    name = "rolling_zscore"

    def __init__(self, window: int = 100) -> None:
        if int(window) < 2:
            raise ValueError(f"window must be at least 2, got {window}")
        self.window = int(window)
        self._buf: deque[float] = deque(maxlen=self.window)
        self._sum = self._sq = 0.0

    def process_one(self, value, timestamp: float = 0.0) -> float:
        x = _check_value(value)
        n = len(self._buf)
        score = 0.0
        if n >= 2:
            mean = self._sum / n
            var = max(self._sq / n - mean * mean, 0.0)
            # a floor keeps a flat stretch's first change large but finite, and ordered by its size
            std = max(math.sqrt(var), 1e-6 * max(1.0, abs(mean)))
            score = abs(x - mean) / std
        if n == self.window:
            old = self._buf[0]
            self._sum -= old
            self._sq -= old * old
        self._buf.append(x)
        self._sum += x
        self._sq += x * x
        return score


class WindowedGaussian:
    """One minus the two-sided Gaussian tail probability of the row under a trailing window's mean and std."""

    name = "windowed_gaussian"

    def __init__(self, window: int = 6400, step: int = 100) -> None:
        if int(window) < 2 or int(step) < 1:
            raise ValueError(f"window must be at least 2 and step at least 1, got {window}, {step}")
        self.window, self.step = int(window), int(step)
        self._buf: deque[float] = deque()
        self._pending: list[float] = []
        self._sum = self._sq = 0.0
        self._mean = self._std = 0.0

    def process_one(self, value, timestamp: float = 0.0) -> float:
        x = _check_value(value)
        score = 0.0
        if self._buf:
            if self._std > 0:
                z = abs(x - self._mean) / self._std
                score = 1.0 - math.erfc(z / math.sqrt(2.0))
            else:
                score = 0.0 if x == self._mean else 1.0
        if len(self._buf) < self.window:
            self._add(x)
            self._refresh()
        else:
            self._pending.append(x)
            if len(self._pending) == self.step:
                for v in self._pending:
                    self._add(v)
                self._pending.clear()
                self._refresh()
        return score

    def _add(self, x: float) -> None:
        if len(self._buf) == self.window:
            old = self._buf.popleft()
            self._sum -= old
            self._sq -= old * old
        self._buf.append(x)
        self._sum += x
        self._sq += x * x

    def _refresh(self) -> None:
        n = len(self._buf)
        self._mean = self._sum / n
        self._std = math.sqrt(max(self._sq / n - self._mean * self._mean, 0.0))


class HalfSpaceTreesStream:
    """River's Half-Space Trees on the value, scaled by the probationary rows' range.

    Args:
        probation: Rows learned (and scored 0) before scoring starts; their range, widened
            by half of it on each side, maps values to [0, 1] (values outside are clipped).
        n_trees, height, window_size, seed: River's parameters (smaller trees than its defaults, 25 and 15,
            which score NAB's 137,000 rows several times slower).
    """

    name = "half_space_trees"

    def __init__(self, probation: int = 750, n_trees: int = 10, height: int = 8, window_size: int = 250, seed: int = 0) -> None:
        try:
            from river import anomaly
        except ImportError as exc:
            raise ImportError("the Half-Space Trees baseline needs River: pip install 'anomaly-gym[stream]'") from exc
        if int(probation) < 1:
            raise ValueError(f"probation must be a positive number of rows, got {probation}")
        self.probation = int(probation)
        self._model = anomaly.HalfSpaceTrees(n_trees=n_trees, height=height, window_size=window_size, seed=seed)
        self._warm: list[float] = []
        self._lo = self._span = None

    def process_one(self, value, timestamp: float = 0.0) -> float:
        x = _check_value(value)
        if self._lo is None:
            self._warm.append(x)
            if len(self._warm) >= self.probation:
                lo, hi = min(self._warm), max(self._warm)
                width = (hi - lo) or max(abs(hi), 1.0)
                self._lo, self._span = lo - 0.5 * width, 2.0 * width
                for v in self._warm:
                    self._model.learn_one({"x": self._scale(v)})
                self._warm = []
            return 0.0
        row = {"x": self._scale(x)}
        score = float(self._model.score_one(row))
        self._model.learn_one(row)
        return score

    def _scale(self, x: float) -> float:
        return min(1.0, max(0.0, (x - self._lo) / self._span))


#: Baselines of the NAB benchmark, name -> factory taking the series length.
BASELINES = {
    "rolling_zscore": lambda n_rows: RollingZScore(100),
    "windowed_gaussian": lambda n_rows: WindowedGaussian(6400, 100),
    "half_space_trees": lambda n_rows: HalfSpaceTreesStream(probation=min(int(0.15 * n_rows), 750)),
}
