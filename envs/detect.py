"""``AnomalyGym/Detect-v0``: label the rows of an anomaly-detection task, one per step."""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig, featurize_task
from anomaly_gym.envs.sources import training_pool
from anomaly_gym.envs.tasks import Task, check_training_task
from gymnasium import spaces


class AnomalyDetectionEnv(gym.Env):
    """
    ## Description
    Each step shows the agent one row of an anomaly-detection task, described by
    dataset-relative detector features (see :class:`~anomaly_gym.envs.features.Featurizer`),
    and the agent calls it normal or anomalous.  Because the features mean the same thing
    on every dataset, one policy can act on tasks of any width: the environment is a
    distribution of tasks in the meta-RL sense (``sample_tasks`` / ``set_task`` /
    ``get_task``, as in learn2learn and Meta-World), and a policy that earns high reward
    across many tasks has learned *how to detect* rather than what one dataset looks like.

    The reward follows DPLAN (Pang et al., KDD 2021) and Meta-AAD (Zha et al., ICDM 2020).

    ## Action Space
    ``Discrete(2)``: 0 = normal, 1 = anomaly.  Anything else raises ``ValueError``.

    ## Observation Space
    ``Box(low, high, (n_features,), float32)`` with finite bounds from
    :meth:`Featurizer.feature_bounds`: per detector the score's percentile rank (0..1) and
    log-compressed robust z-score, the bank's consensus, and dataset descriptors.  The
    width depends on the featurizer configuration only, never on the task.

    ## Rewards
    | action \\ row | anomaly | normal |
    |--------------|---------|--------|
    | 1 (anomaly)  | +1      | -1     |
    | 0 (normal)   | -1      | +1     |

    ## Starting State
    A row of the current task drawn as below; the first task is ``tasks[0]`` until
    ``set_task`` (or ``reset(options={"task": task})``) chooses another.

    ## Episode End
    Rows are drawn with replacement: with probability ``anomaly_fraction`` an anomaly,
    otherwise a normal row (uniformly within the class).  The task never runs out, so
    ``terminated`` is always False; after ``episode_length`` steps the episode is
    ``truncated``.

    Why balanced draws by default: anomalies are rare (0.03 % to 40 % in ADBench), and
    with natural rates the policy "always normal" earns nearly every reward, so the
    policy gradient carries almost no signal about anomalies.  With
    ``anomaly_fraction=0.5`` the return measures balanced accuracy, and the policy's
    probability of action 1 becomes a calibrated-by-class anomaly score.  Pass
    ``anomaly_fraction=None`` for natural rates (each row uniformly).

    ## Info
    ``reset``: ``index`` and ``label`` of the row shown, ``task`` (its name).
    ``step``: ``index`` and ``label`` of the row just judged, ``task``, and ``next_index``.

    ## Arguments
    - ``tasks``: labelled :class:`~anomaly_gym.envs.tasks.Task` objects (each needs both
      classes); default the built-in suite.
    - ``episode_length``: steps per episode (default 256).
    - ``anomaly_fraction``: probability that a drawn row is an anomaly, in (0, 1), or None.
    - ``featurizer``: a :class:`FeaturizerConfig` (default: the default bank).
    - ``cache_dir``: feature cache folder (None: the default; False: no disk cache).
    - ``features``: optional precomputed observations, one array per task (rows x
      ``n_features``), used instead of featurizing each task on its own rows — for rows
      featurized relative to a larger dataset, as few-shot adaptation does.
    - ``render_mode``: None or ``"ansi"``.

    ## Version History
    - v0: initial version.
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        *,
        episode_length: int = 256,
        anomaly_fraction: float | None = 0.5,
        featurizer: FeaturizerConfig | None = None,
        cache_dir=None,
        features: Sequence[np.ndarray] | None = None,
        render_mode: str | None = None,
    ) -> None:
        tasks = training_pool(tasks, "AnomalyDetectionEnv")
        if int(episode_length) < 1:
            raise ValueError(f"episode_length must be a positive integer, got {episode_length}")
        if anomaly_fraction is not None and not 0.0 < anomaly_fraction < 1.0:
            raise ValueError(f"anomaly_fraction must be in (0, 1) or None for natural rates, got {anomaly_fraction}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")

        self.tasks = tasks
        self.episode_length = int(episode_length)
        self.anomaly_fraction = anomaly_fraction
        self.featurizer_config = featurizer or FeaturizerConfig()
        self.cache_dir = cache_dir
        self.render_mode = render_mode

        low, high = Featurizer(self.featurizer_config).feature_bounds()
        self.observation_space = spaces.Box(low, high, dtype=np.float32)
        self.action_space = spaces.Discrete(2)

        self._features: dict[str, np.ndarray] = {}
        if features is not None:
            if len(features) != len(tasks):
                raise ValueError(f"features must hold one array per task: {len(features)} arrays for {len(tasks)} tasks")
            for task, feats in zip(tasks, features):
                self.add_features(task, feats)
        self._index = 0
        self._steps = 0
        self.set_task(tasks[0])

    # -- meta-RL task interface --------------------------------------------------------
    def sample_tasks(self, n: int) -> list[Task]:
        """``n`` tasks from the pool, drawn with ``self.np_random`` (without replacement while possible)."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        pool = len(self.tasks)
        picks = self.np_random.choice(pool, size=n, replace=n > pool)
        return [self.tasks[int(i)] for i in picks]

    def set_task(self, task: Task) -> None:
        """Switch to ``task`` (any labelled task, not only the pool's); takes effect at once."""
        if not isinstance(task, Task):
            raise TypeError(f"set_task expects a Task, got {type(task).__name__}")
        check_training_task(task)
        if task.hash not in self._features:
            self._features[task.hash] = featurize_task(task, self.featurizer_config, cache_dir=self.cache_dir)
        self._task = task
        self._obs = self._features[task.hash]
        self._labels = task.y
        self._anomalies = np.flatnonzero(task.y == 1)
        self._normals = np.flatnonzero(task.y == 0)

    def get_task(self) -> Task:
        return self._task

    def add_features(self, task: Task, features: np.ndarray) -> None:
        """Use ``features`` as the observations of ``task``'s rows instead of featurizing the task."""
        feats = np.asarray(features, dtype=np.float32)
        if feats.shape != (task.n_rows, self.observation_space.shape[0]):
            raise ValueError(f"features for task {task.name!r} must have shape ({task.n_rows}, {self.observation_space.shape[0]}), got {feats.shape}")
        self._features[task.hash] = np.clip(feats, self.observation_space.low, self.observation_space.high)

    # -- Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        self._steps = 0
        self._index = self._draw_row()
        return self._obs[self._index].copy(), {"index": self._index, "label": int(self._labels[self._index]), "task": self._task.name}

    def step(self, action):
        action = self._check_action(action)
        judged = self._index
        label = int(self._labels[judged])
        reward = 1.0 if action == label else -1.0
        self._steps += 1
        truncated = self._steps >= self.episode_length
        self._index = self._draw_row()
        info = {"index": judged, "label": label, "task": self._task.name, "next_index": self._index}
        return self._obs[self._index].copy(), reward, False, truncated, info

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        names = self.featurizer_config.feature_names()
        shown = "consensus/pct_mean" if "consensus/pct_mean" in names else names[0]
        value = self._obs[self._index][names.index(shown)]
        return f"task={self._task.name} step={self._steps}/{self.episode_length} row={self._index} label={int(self._labels[self._index])} {shown}={value:.3f}"

    # -- internals ---------------------------------------------------------------------
    def _draw_row(self) -> int:
        rng = self.np_random
        if self.anomaly_fraction is None:
            return int(rng.integers(len(self._labels)))
        pool = self._anomalies if rng.random() < self.anomaly_fraction else self._normals
        return int(pool[rng.integers(len(pool))])

    @staticmethod
    def _check_action(action) -> int:
        arr = np.asarray(action)
        if arr.size != 1 or arr.dtype.kind not in "biu":
            raise ValueError(f"action must be 0 (normal) or 1 (anomaly) as an integer, got {action!r}")
        value = int(arr.reshape(-1)[0])
        if value not in (0, 1):
            raise ValueError(f"action must be 0 (normal) or 1 (anomaly), got {value}")
        return value
