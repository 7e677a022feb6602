"""``AnomalyGym/Stream-v0``: walk a time series in order and flag anomalies, rewarded as NAB scores."""

from __future__ import annotations

import math
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from anomaly_gym.envs.series import Series, synthetic_suite
from anomaly_gym.envs.temporal import FEATURE_NAMES, TemporalFeaturizer
from gymnasium import spaces

#: The observation's last feature: how long ago the agent last flagged.
SINCE_FLAG = "self/since_flag"
OBSERVATION_NAMES = FEATURE_NAMES + (SINCE_FLAG,)
SINCE_FLAG_CAP = 1000  # rows; beyond this, "long ago" and "never" look the same

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")  # NAB's, as anomaly_gym.meta.nab defines them


def since_flag_feature(rows: int | None) -> float:
    """``log1p(rows since the last flag) / log1p(cap)``, capped at 1; 1 when there was none."""
    if rows is None or rows >= SINCE_FLAG_CAP:
        return 1.0
    return math.log1p(rows) / math.log1p(SINCE_FLAG_CAP)


class StreamDetectionEnv(gym.Env):
    """
    ## Description
    An episode walks one time series in time order, one row per step, and the agent says
    whether the row is anomalous.  The observation describes the row by its temporal
    features (:class:`~anomaly_gym.envs.temporal.TemporalFeaturizer`: deviations from the
    recent past, the seasonal profile and a forecast, change statistics), computed from
    the rows before it only, plus how long ago the agent itself last flagged.  The
    features mean the same on every series, so one policy can watch any stream: the
    environment is a distribution of series in the meta-RL sense (``sample_tasks`` /
    ``set_task`` / ``get_task``).

    ## Action Space
    ``Discrete(2)``: 0 = normal, 1 = anomaly (a *flag*).  Anything else raises ``ValueError``.

    ## Observation Space
    ``Box(low, high, (16,), float32)``: the 15 temporal features
    (:data:`~anomaly_gym.envs.temporal.FEATURE_NAMES`) and ``self/since_flag``,
    ``log1p(rows since the agent's last flag) / log1p(1000)`` capped at 1 (1 before any flag).

    ## Rewards
    The rewards add up to the series' raw NAB score (Lavin and Ahmad 2015; see
    :mod:`anomaly_gym.meta.nab`) under the chosen profile (standard: ``A_TP = 1``,
    ``A_FP = 0.11``, ``A_FN = 1``), for the agent's flags as detections:

    | row | flag (1) | no flag (0) |
    |-----|----------|-------------|
    | first scored row of a window (charged whether or not it is flagged) | ``-A_FN`` plus the flag's reward | ``-A_FN`` |
    | in a window not yet flagged | ``A_FN + A_TP * sigma(y) / sigma(-1)`` | 0 |
    | in a window already flagged | 0 | 0 |
    | outside every window | ``A_FP * sigma(y)`` (negative) | 0 |

    ``sigma`` is NAB's scaled sigmoid.  In a window of rows ``left..right``,
    ``y = -(right - i + 1) / W``: the first flag earns its full ``A_TP`` at the window's
    first row and less later (early detection pays), and the window's ``-A_FN`` charge is
    refunded by its first flag (a missed window costs ``A_FN``).  Later flags in the same
    window earn nothing.  Outside windows, ``y`` is the distance past the preceding window
    in window widths (``-A_FP`` when none precedes): a flag just after an anomaly costs
    little, a flag far from any costs ``A_FP``.  So the return is the NAB score of the
    episode's flags, and a window's reward comes at the flag that earns it, not at the
    window's end.

    ## Starting State
    The first row after NAB's probationary period (``min(15 % of the rows, 750)``) of the
    current series (a new one from the pool when ``resample_series``); the features have
    seen every row before it.

    ## Episode End
    ``terminated`` when the series ends.  ``truncated`` after ``max_episode_steps`` steps
    when that is set (episodes then start at a random row after the probation).

    ## Info
    ``reset``: ``series`` (its name), ``row``.  ``step``: ``series``, ``row`` (the row just
    judged), ``in_window``, ``nab_score`` (the episode's score so far).

    ## Arguments
    - ``series``: labelled :class:`~anomaly_gym.envs.series.Series` (default: 16 synthetic ones).
    - ``profile``: NAB profile name (``standard``, ``reward_low_FP_rate``, ``reward_low_FN_rate``).
    - ``max_episode_steps``: None (whole series) or a positive length.
    - ``features``: optional precomputed temporal features, one array per series.
    - ``resample_series``: draw a new series from the pool at every reset (multi-task
      meta-training); otherwise the current one is kept until ``set_task``.
    - ``render_mode``: None or ``"ansi"``.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        series: Sequence[Series] | None = None,
        *,
        profile: str = "standard",
        max_episode_steps: int | None = None,
        features: Sequence[np.ndarray] | None = None,
        resample_series: bool = False,
        render_mode: str | None = None,
    ) -> None:
        series = list(series) if series is not None else synthetic_suite(16, seed=0)
        if not series:
            raise ValueError("StreamDetectionEnv needs at least one series")
        for s in series:
            if not isinstance(s, Series):
                raise TypeError(f"series must be Series objects, got {type(s).__name__}")
        if profile not in PROFILES:
            raise ValueError(f"unknown NAB profile {profile!r}; choose from {list(PROFILES)}")
        if max_episode_steps is not None and int(max_episode_steps) < 1:
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.series = series
        self.profile = profile
        self.max_episode_steps = None if max_episode_steps is None else int(max_episode_steps)
        self.resample_series = bool(resample_series)
        self.render_mode = render_mode
        low, high = TemporalFeaturizer.feature_bounds()
        self.observation_space = spaces.Box(np.append(low, 0.0).astype(np.float32), np.append(high, 1.0).astype(np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(2)
        self._features: dict[int, np.ndarray] = {}
        if features is not None:
            if len(features) != len(series):
                raise ValueError(f"features must hold one array per series: {len(features)} for {len(series)}")
            for s, f in zip(series, features):
                self.add_features(s, f)
        self.set_task(series[0])
        self._row = self._first = self._start
        self._since: int | None = None
        self._steps = 0
        self._score = 0.0
        self._detected: set[int] = set()

    # -- meta-RL task interface --------------------------------------------------------------
    def sample_tasks(self, n: int) -> list[Series]:
        """``n`` series from the pool, drawn with ``self.np_random``."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        picks = self.np_random.choice(len(self.series), size=n, replace=n > len(self.series))
        return [self.series[int(i)] for i in picks]

    def set_task(self, series: Series) -> None:
        """Walk ``series`` from the next reset on."""
        if not isinstance(series, Series):
            raise TypeError(f"set_task expects a Series, got {type(series).__name__}")
        if not series.windows:
            raise ValueError(f"series {series.name!r} has no anomaly window: a training series needs at least one")
        if id(series) not in self._features:
            self._features[id(series)] = self._featurize(series)
        self._series = series
        self._obs = self._features[id(series)]
        from anomaly_gym.meta import nab  # the scorer's own definition of each row's worth

        prepared = nab.prepare_file(series.n_rows, series.windows, self.profile)
        self._kind, self._weight, self._a_fn = prepared.kind, prepared.weight, prepared.profile.a_fn
        self._start = nab.probation_length(series.n_rows)
        if self._start >= series.n_rows:
            raise ValueError(f"series {series.name!r} is too short: nothing left after the probationary period")

    def get_task(self) -> Series:
        return self._series

    def add_features(self, series: Series, features: np.ndarray) -> None:
        """Use precomputed temporal features (``(n_rows, 15)``) for ``series``."""
        feats = np.asarray(features, dtype=np.float32)
        width = self.observation_space.shape[0] - 1
        if feats.shape != (series.n_rows, width):
            raise ValueError(f"features for {series.name!r} must have shape ({series.n_rows}, {width}), got {feats.shape}")
        self._features[id(series)] = np.clip(feats, self.observation_space.low[:-1], self.observation_space.high[:-1])

    @staticmethod
    def _featurize(series: Series) -> np.ndarray:
        values = series.values.reshape(series.n_rows, -1)
        return TemporalFeaturizer(values.shape[1]).transform(values, series.timestamps)

    # -- Gymnasium API ---------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        elif self.resample_series:
            self.set_task(self.sample_tasks(1)[0])
        self._row = self._start
        if self.max_episode_steps is not None and self._series.n_rows - self._start > self.max_episode_steps:
            self._row = int(self.np_random.integers(self._start, self._series.n_rows - self.max_episode_steps + 1))
        self._since, self._steps, self._score = None, 0, 0.0
        self._first = self._row
        self._detected = set()
        return self._observation(), {"series": self._series.name, "row": self._row}

    def step(self, action):
        flag = self._check_action(action)
        i = self._row
        k = int(self._kind[i])
        reward = 0.0
        a_fn = self._a_fn
        if k >= 0 and (i == self._first or self._kind[i - 1] != k):
            reward -= a_fn  # the window's charge, refunded by its first flag
        if flag:
            if k >= 0:
                if k not in self._detected:
                    reward += a_fn + float(self._weight[i])
                    self._detected.add(k)
            elif k == -1:
                reward += float(self._weight[i])
        self._since = 0 if flag else (None if self._since is None else self._since + 1)
        self._score += reward
        self._steps += 1
        self._row += 1
        terminated = self._row >= self._series.n_rows
        truncated = not terminated and self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"series": self._series.name, "row": i, "in_window": k >= 0, "nab_score": self._score}
        obs = self._observation() if not terminated else self._observation(self._series.n_rows - 1)
        return obs, reward, terminated, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        row = min(self._row, self._series.n_rows - 1)
        return f"series={self._series.name} row={row}/{self._series.n_rows} in_window={self._kind[row] >= 0} nab_score={self._score:.3f}"

    # -- internals -------------------------------------------------------------------------
    def _observation(self, row: int | None = None) -> np.ndarray:
        r = self._row if row is None else row
        return np.append(self._obs[r], np.float32(since_flag_feature(self._since))).astype(np.float32)

    @staticmethod
    def _check_action(action) -> int:
        arr = np.asarray(action)
        if arr.size != 1 or arr.dtype.kind not in "biu":
            raise ValueError(f"action must be 0 (normal) or 1 (anomaly) as an integer, got {action!r}")
        value = int(arr.reshape(-1)[0])
        if value not in (0, 1):
            raise ValueError(f"action must be 0 (normal) or 1 (anomaly), got {value}")
        return value
