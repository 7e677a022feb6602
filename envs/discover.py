"""``AnomalyGym/Discover-v1``: choose which row an analyst labels next, within a query budget."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import gymnasium as gym
import numpy as np
from anomaly_gym.envs.features import FeaturizerConfig, featurize_task
from anomaly_gym.envs.sources import training_pool
from anomaly_gym.envs.tasks import Task, check_training_task
from gymnasium import spaces

#: Feedback features appended to every candidate's detector features, in this order.
FEEDBACK_FEATURES = (
    "feedback/sim_anomaly",
    "feedback/sim_normal",
    "feedback/weighted_score",
    "feedback/learned_score",
    "feedback/prior_rank",
    "feedback/hit_rate",
    "feedback/anomalies_found",
    "feedback/budget_left",
    "feedback/raw_anomaly",
    "feedback/raw_normal",
)

#: Dimensions of the raw-row embedding behind the ``raw_*`` feedback features.
RAW_COMPONENTS = 16


def raw_embedding(X: np.ndarray, n_components: int = RAW_COMPONENTS, seed: int = 0) -> np.ndarray:
    """Rows standardised per column and projected on their top principal components, in units of the
    median distance between a row and its nearest neighbour (so that distances mean the same on any dataset)."""
    from sklearn.decomposition import PCA

    X = np.nan_to_num(np.asarray(X, dtype=np.float64).reshape(len(X), -1))
    sd = X.std(axis=0)
    Z = (X - X.mean(axis=0)) / np.where(sd > 1e-12, sd, 1.0)
    k = min(n_components, Z.shape[1], max(len(Z) - 1, 1))
    if k < Z.shape[1]:
        Z = PCA(n_components=k, svd_solver="randomized" if Z.shape[1] > 64 else "full", random_state=seed).fit_transform(Z)
    rng = np.random.default_rng(seed)
    probe = rng.choice(len(Z), size=min(200, len(Z)), replace=False)
    sq = (Z**2).sum(axis=1)
    d2 = np.maximum(sq[probe, None] + sq[None, :] - 2.0 * Z[probe] @ Z.T, 0.0)
    d2[np.arange(len(probe)), probe] = np.inf
    nn = np.sqrt(d2.min(axis=1))
    scale = float(np.median(nn[np.isfinite(nn)])) if np.isfinite(nn).any() else 1.0
    return np.ascontiguousarray(Z / (scale if scale > 1e-12 else 1.0))


@dataclass(frozen=True)
class DiscoverState:
    """What :meth:`DiscoverEnv.state` reports: the rows shown so far and their labels, in order."""

    task: str
    shown: tuple[int, ...]
    labels: tuple[int, ...]

    @property
    def found(self) -> int:
        return int(sum(self.labels))


def percentile_columns(config: FeaturizerConfig) -> np.ndarray:
    """Indices of the per-detector percentile-rank features (all features when there are none)."""
    names = config.feature_names()
    cols = [i for i, n in enumerate(names) if n.endswith("/pct") and not n.startswith("consensus/")]
    return np.asarray(cols if cols else range(len(names)), dtype=np.int64)


def default_prior(features: np.ndarray, config: FeaturizerConfig) -> np.ndarray:
    """The unsupervised ranking the candidate pool starts from: the mean detector percentile."""
    names = config.feature_names()
    if "consensus/pct_mean" in names:
        return features[:, names.index("consensus/pct_mean")].astype(np.float64)
    return features[:, percentile_columns(config)].mean(axis=1).astype(np.float64)


class DiscoverEnv(gym.Env):
    """
    ## Description
    Active anomaly discovery (Meta-AAD, Zha et al., ICDM 2020): an analyst can check
    ``budget`` rows of a dataset whose labels are hidden, and wants to see as many anomalies
    as possible.  Each step the agent picks one row not yet shown; its label is revealed
    and the observation changes with it, so a policy can adapt inside the episode (a row
    resembling the anomalies found so far becomes more attractive; detectors that agreed
    with the answers so far weigh more).  Episodes are tasks in the meta-RL sense
    (``sample_tasks`` / ``set_task`` / ``get_task``): a policy trained across many datasets
    learns *how to search*, and is used on datasets it never saw.

    **Candidate pool (why the action space is fixed).**  A dataset can have any number of
    rows, but a policy needs a fixed action space.  The agent therefore chooses among
    ``pool_size`` candidates (default 64).  The pool starts as the top
    ``(1 - random_share) * pool_size`` rows of a prior ranking (default: the mean detector
    percentile, ``consensus/pct_mean``; any unsupervised score may be given) plus random
    rows.  When a candidate is shown its slot is refilled: with probability
    ``1 - random_share`` by the best unshown row under the ``learned_score`` feedback
    feature below (the detectors' percentiles until an anomaly is found, then a linear
    discriminant of the labels so far) or, with ``raw_neighbours`` once an anomaly has been
    found, half of those times by the unshown row nearest to a labelled anomaly in the raw
    rows' embedding (see ``raw_anomaly``); otherwise by a random unshown row.  Limits: a row that is neither near the top of the prior nor of
    the feedback-weighted score reaches the pool only by chance (through the random
    slots), so the policy cannot find anomalies that every detector in the bank ranks
    low, however it learns; and the feedback-weighted score is linear in the detectors'
    percentiles and the learned score is a linear discriminant.  When fewer rows
    are left than slots, the empty slots are masked.

    ## Action Space
    ``Discrete(pool_size)``: the slot of the candidate to show.  :meth:`action_masks`
    (the sb3-contrib ``MaskablePPO`` convention) says which slots hold a candidate;
    choosing an empty slot or anything outside the range raises ``ValueError``.

    ## Observation Space
    ``Box(low, high, (pool_size, n_features + 8), float32)``: one row per slot.  The first
    ``n_features`` columns are the candidate's transferable detector features (see
    :class:`~anomaly_gym.envs.features.Featurizer`); then the feedback features
    :data:`FEEDBACK_FEATURES`:

    - ``sim_anomaly`` / ``sim_normal``: the largest similarity ``exp(-msd / s^2)`` between
      the candidate and a row labelled anomalous / normal so far, where ``msd`` is the
      mean squared difference of their per-detector percentiles and ``s`` is
      ``similarity_scale``; 0 while no such row exists;
    - ``weighted_score``: the candidate's detector percentiles weighted by each detector's
      agreement with the labels so far (weight = max(0, mean percentile of labelled
      anomalies - mean percentile of labelled normals), a class not yet seen counting as
      0.5, the dataset's mean); the plain mean percentile while no detector agrees;
    - ``learned_score``: once an anomaly has been labelled, a linear discriminant refitted
      after every answer on all ``n_features`` columns (weights ``precision @ (mean of
      labelled anomalies - mean of normals)``, the precision being the inverse of the
      dataset's feature covariance with a ridge, the normals' mean shrunk towards the
      dataset's mean, which is mostly normal rows), standardised over the dataset and
      squashed by a logistic; equal to ``weighted_score`` before;
    - ``prior_rank``: 1 for the prior ranking's top row, 0 for its last;
    - ``hit_rate``: share of the queries so far that found an anomaly (0 at the start);
    - ``anomalies_found``: ``log1p(found) / log1p(budget)``;
    - ``budget_left``: share of the budget not yet spent;
    - ``raw_anomaly`` / ``raw_normal``: ``exp(-d)``, ``d`` the distance from the candidate to
      the nearest row labelled anomalous / normal in the raw rows' embedding
      (:func:`raw_embedding`: standardised columns, their top 16 principal components, in
      units of the dataset's median nearest-neighbour distance); 0 while no such row exists
      or without ``raw_neighbours``.  Unlike the detector features these see whether
      anomalies resemble one another in the data itself (a cluster of anomalies that the
      detectors rank in the middle).

    Empty slots are all zeros.

    ## Rewards
    +1 when the row shown is an anomaly, ``normal_reward`` (default -1, the project's
    reward; Meta-AAD uses -0.1) when it is normal.

    ## Starting State
    A fresh pool of the current task; no labels known.  The first task is ``tasks[0]``
    until ``set_task`` (or ``reset(options={"task": task})``) chooses another.  The pool and
    the feedback features live in a :class:`DiscoverySession`, which needs no labels: it
    serves a trained policy on an unlabelled target, one analyst answer at a time.

    ## Episode End
    ``terminated`` when the budget is spent or every row has been shown; never
    ``truncated``.

    ## Info
    ``index`` (row shown) and ``label`` (``step`` only), ``task``, ``queries`` and
    ``found`` (anomalies found so far).

    ## Arguments
    - ``tasks``: labelled :class:`~anomaly_gym.envs.tasks.Task` objects; default the built-in suite.
    - ``budget``: queries per episode (default 100).
    - ``pool_size``: candidates per step (default 64).
    - ``random_share``: share of the pool, and chance per refill, of random rows (default 0.25).
    - ``normal_reward``: reward for showing a normal row, <= 0 (default -1).
    - ``similarity_scale``: ``s`` of the similarity features (default 0.1).
    - ``featurizer``: a :class:`FeaturizerConfig`; ``cache_dir``: the feature cache (as Detect-v0).
    - ``features`` / ``priors``: optional precomputed features and prior scores, one array per task.
    - ``resample_task_on_reset``: draw each episode's task from ``tasks`` with ``self.np_random``
      (for meta-training); default False (keep the current task).
    - ``raw_neighbours``: compute the ``raw_*`` features and the nearest-neighbour refills
      (default True).
    - ``render_mode``: None or ``"ansi"``.

    ## Version History
    - v0: initial version.
    - v1: ``raw_anomaly`` / ``raw_normal`` appended to the feedback features, refills from
      the nearest neighbours of labelled anomalies (``raw_neighbours``).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        *,
        budget: int = 100,
        pool_size: int = 64,
        random_share: float = 0.25,
        normal_reward: float = -1.0,
        similarity_scale: float = 0.1,
        featurizer: FeaturizerConfig | None = None,
        cache_dir=None,
        features: Sequence[np.ndarray] | None = None,
        priors: Sequence[np.ndarray] | None = None,
        resample_task_on_reset: bool = False,
        raw_neighbours: bool = True,
        render_mode: str | None = None,
    ) -> None:
        _check_arguments(budget, pool_size, random_share, normal_reward, similarity_scale)
        tasks = training_pool(tasks, "DiscoverEnv")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or one of {self.metadata['render_modes']}, got {render_mode!r}")
        for name, arrays in (("features", features), ("priors", priors)):
            if arrays is not None and len(arrays) != len(tasks):
                raise ValueError(f"{name} must hold one array per task: {len(arrays)} arrays for {len(tasks)} tasks")
        self.tasks = tasks
        self.budget = int(budget)
        self.pool_size = int(pool_size)
        self.random_share = float(random_share)
        self.normal_reward = float(normal_reward)
        self.similarity_scale = float(similarity_scale)
        self.featurizer_config = featurizer or FeaturizerConfig()
        self.cache_dir = cache_dir
        self.render_mode = render_mode
        self.resample_task_on_reset = bool(resample_task_on_reset)
        self.raw_neighbours = bool(raw_neighbours)
        self._raw_cache: dict[str, np.ndarray] = {}
        self._pct_cols = percentile_columns(self.featurizer_config)
        from anomaly_gym.envs.features import Featurizer

        low, high = Featurizer(self.featurizer_config).feature_bounds()
        self.n_base = len(low)
        n_fb = len(FEEDBACK_FEATURES)
        low = np.concatenate([np.minimum(low, 0.0), np.zeros(n_fb, np.float32)]).astype(np.float32)
        high = np.concatenate([np.maximum(high, 0.0), np.ones(n_fb, np.float32)]).astype(np.float32)
        self.observation_space = spaces.Box(np.tile(low, (self.pool_size, 1)), np.tile(high, (self.pool_size, 1)), dtype=np.float32)
        self.action_space = spaces.Discrete(self.pool_size)
        self._data: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for i, task in enumerate(tasks):
            if features is not None or priors is not None:
                self.add_features(task, None if features is None else features[i], None if priors is None else priors[i])
        self.set_task(tasks[0])
        self._start_episode()

    # -- meta-RL task interface --------------------------------------------------------
    def sample_tasks(self, n: int) -> list[Task]:
        """``n`` tasks from the pool, drawn with ``self.np_random`` (without replacement while possible)."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        picks = self.np_random.choice(len(self.tasks), size=n, replace=n > len(self.tasks))
        return [self.tasks[int(i)] for i in picks]

    def set_task(self, task: Task) -> None:
        """Switch to ``task``; takes effect at the next ``reset``."""
        if not isinstance(task, Task):
            raise TypeError(f"set_task expects a Task, got {type(task).__name__}")
        check_training_task(task)
        if task.hash not in self._data:
            self.add_features(task)
        self._task = task

    def get_task(self) -> Task:
        return self._task

    def add_features(self, task: Task, features: np.ndarray | None = None, prior: np.ndarray | None = None) -> None:
        """Use ``features`` (rows x ``n_features``) and ``prior`` scores (higher = more anomalous) for ``task``."""
        if features is None:
            features = featurize_task(task, self.featurizer_config, cache_dir=self.cache_dir)
        feats = np.asarray(features, dtype=np.float32)
        if feats.shape != (task.n_rows, self.n_base):
            raise ValueError(f"features for task {task.name!r} must have shape ({task.n_rows}, {self.n_base}), got {feats.shape}")
        lo, hi = self.observation_space.low[0, : self.n_base], self.observation_space.high[0, : self.n_base]
        feats = np.clip(feats, lo, hi)
        prior = default_prior(feats, self.featurizer_config) if prior is None else np.asarray(prior, dtype=np.float64)
        if prior.shape != (task.n_rows,) or not np.isfinite(prior).all():
            raise ValueError(f"prior for task {task.name!r} must be {task.n_rows} finite scores, got shape {prior.shape}")
        self._data[task.hash] = (feats, prior)

    def task_data(self, task: Task) -> tuple[np.ndarray, np.ndarray]:
        """The features and prior scores the environment uses for ``task`` (computed on first use)."""
        if task.hash not in self._data:
            self.add_features(task)
        return self._data[task.hash]

    # -- Gymnasium API -----------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if options and options.get("task") is not None:
            self.set_task(options["task"])
        elif self.resample_task_on_reset:
            self.set_task(self.tasks[int(self.np_random.integers(len(self.tasks)))])
        self._start_episode()
        return self._session.observation(), self._info()

    def step(self, action):
        slot = self._check_action(action)
        row = self._session.row(slot)
        label = int(self._y[row])
        self._session.reveal(slot, label)
        terminated = self._session.done
        reward = 1.0 if label == 1 else self.normal_reward
        info = self._info()
        info.update(index=row, label=label)
        return self._session.observation(), reward, terminated, False, info

    def action_masks(self) -> np.ndarray:
        """Which slots hold a candidate (True = may be chosen)."""
        return self._session.action_masks()

    def candidate_labels(self) -> np.ndarray:
        """The hidden labels of the pool's candidates (-1 for empty slots); for supervised pretraining only."""
        pool = self._session._pool
        return np.where(pool >= 0, self._y[np.maximum(pool, 0)], -1).astype(np.int64)

    def state(self) -> DiscoverState:
        """The rows shown so far and their labels."""
        return DiscoverState(self._task.name, tuple(self._session.shown), tuple(self._session.labels))

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        ses = self._session
        return f"task={self._task.name} queries={len(ses.shown)}/{self.budget} found={sum(ses.labels)} candidates={int(ses.action_masks().sum())}"

    # -- internals ---------------------------------------------------------------------
    def _start_episode(self) -> None:
        feats, prior = self._data[self._task.hash]
        self._y = self._task.y
        self._session = DiscoverySession(
            feats,
            prior,
            self._pct_cols,
            budget=self.budget,
            pool_size=self.pool_size,
            random_share=self.random_share,
            similarity_scale=self.similarity_scale,
            rng=self.np_random,
            raw=self._raw_rows(),
        )

    def _raw_rows(self) -> np.ndarray | None:
        if not self.raw_neighbours:
            return None
        if self._task.hash not in self._raw_cache:
            self._raw_cache[self._task.hash] = raw_embedding(self._task.X)
        return self._raw_cache[self._task.hash]

    def _info(self) -> dict[str, Any]:
        return {"task": self._task.name, "queries": len(self._session.shown), "found": int(sum(self._session.labels))}

    def _check_action(self, action) -> int:
        arr = np.asarray(action)
        if arr.size != 1 or arr.dtype.kind not in "biu":
            raise ValueError(f"action must be a candidate slot as an integer, got {action!r}")
        slot = int(arr.reshape(-1)[0])
        if not 0 <= slot < self.pool_size:
            raise ValueError(f"action must be a slot in [0, {self.pool_size}), got {slot}")
        if not self._session.action_masks()[slot]:
            raise ValueError(f"slot {slot} holds no candidate (see action_masks()); choose a slot whose mask is True")
        return slot


def _check_arguments(budget, pool_size, random_share, normal_reward, similarity_scale) -> None:
    if int(budget) < 1:
        raise ValueError(f"budget must be a positive integer, got {budget}")
    if int(pool_size) < 2:
        raise ValueError(f"pool_size must be at least 2, got {pool_size}")
    if not 0.0 <= random_share < 1.0:
        raise ValueError(f"random_share must be in [0, 1), got {random_share}")
    if not -1.0 <= normal_reward <= 0.0:
        raise ValueError(f"normal_reward must be in [-1, 0] (Meta-AAD uses -0.1), got {normal_reward}")
    if not similarity_scale > 0.0:
        raise ValueError(f"similarity_scale must be positive, got {similarity_scale}")


def bench_step(n_rows: int = 10_000, n_steps: int = 100, seed: int = 0) -> float:
    """Median seconds per ``step`` of Discover-v1 on a synthetic ``n_rows``-row task, features precomputed."""
    from anomaly_gym.envs.features import Featurizer

    rng = np.random.default_rng(seed)
    config = FeaturizerConfig()
    y = (rng.random(n_rows) < 0.05).astype(np.int8)
    y[:2] = (0, 1)
    task = Task("bench/discover", rng.normal(size=(n_rows, 4)).astype(np.float32), y, source="synthetic")
    low, high = Featurizer(config).feature_bounds()
    feats = rng.uniform(low, high, size=(n_rows, len(low))).astype(np.float32)
    env = DiscoverEnv([task], budget=n_steps, featurizer=config, features=[feats])
    env.reset(seed=seed)
    times = []
    for _ in range(n_steps):
        slot = int(np.flatnonzero(env.action_masks())[0])
        start = time.perf_counter()
        env.step(slot)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


class DiscoverySession:
    """The candidate pool and feedback features of one discovery episode (no labels needed).

    :class:`DiscoverEnv` wraps one per episode; a trained policy serves an unlabelled target
    through one directly: :meth:`observation` and :meth:`action_masks` for the policy,
    :meth:`row` for the row behind the chosen slot, :meth:`reveal` with the analyst's answer.

    Args:
        features: Transferable features of every row, shape (n, n_features).
        prior: Prior anomaly score per row (higher = more anomalous).
        pct_columns: The feature columns holding per-detector percentiles.
        budget, pool_size, random_share, similarity_scale: As :class:`DiscoverEnv`.
        rng: The generator behind the random candidates.
        raw: :func:`raw_embedding` of the rows, for the ``raw_*`` features and the neighbour
            refills; None leaves those features at 0.
    """

    def __init__(
        self,
        features: np.ndarray,
        prior: np.ndarray,
        pct_columns: np.ndarray,
        *,
        budget: int,
        pool_size: int,
        random_share: float,
        similarity_scale: float,
        rng: np.random.Generator,
        raw: np.ndarray | None = None,
    ) -> None:
        self.budget = budget
        self.pool_size = pool_size
        self.random_share = random_share
        self.similarity_scale = similarity_scale
        self.rng = rng
        self._feats = features
        self.n_base = features.shape[1]
        n = len(features)
        self._pct = np.ascontiguousarray(features[:, pct_columns], dtype=np.float64)
        order = np.argsort(-np.asarray(prior), kind="stable")
        self._prior_rank = np.empty(n, dtype=np.float32)
        self._prior_rank[order] = 1.0 - np.arange(n, dtype=np.float32) / max(n - 1, 1)
        self._shown = np.zeros(n, dtype=bool)
        self._in_pool = np.zeros(n, dtype=bool)
        self.shown: list[int] = []
        self.labels: list[int] = []
        n_det = self._pct.shape[1]
        self._sums = np.zeros((2, n_det))  # per class: summed percentiles of labelled rows
        self._counts = np.zeros(2)
        self._weights = np.full(n_det, 1.0 / n_det)
        self._weighted = self._pct @ self._weights
        self._learned = self._weighted
        self._found_any = False
        self._F = np.asarray(features, dtype=np.float64)
        self._f_mean = self._F.mean(axis=0)
        cov = np.cov(self._F, rowvar=False) if len(self._F) > 1 else np.eye(self._F.shape[1])
        cov = np.atleast_2d(cov)
        self._f_precision = np.linalg.pinv(cov + self.COVARIANCE_RIDGE * np.diag(np.diag(cov)) + 1e-6 * np.eye(len(cov)))
        self._f_sums = np.zeros((2, self._F.shape[1]))
        self._labelled_pct = [np.empty((0, n_det)), np.empty((0, n_det))]
        self._raw = None if raw is None else np.asarray(raw, dtype=np.float64)
        self._raw_dist = np.full((2, n), np.inf)  # per class: distance of every row to the nearest labelled row
        self._pool = np.full(pool_size, -1, dtype=np.int64)
        self._sim = np.zeros((pool_size, 2))
        self._obs = np.zeros((pool_size, self.n_base + len(FEEDBACK_FEATURES)), dtype=np.float32)
        n_top = min(n, int(round(pool_size * (1.0 - random_share))))
        rows = list(order[:n_top])
        rest = order[n_top:]
        n_rand = min(len(rest), pool_size - n_top)
        if n_rand > 0:
            rows += list(rng.choice(rest, size=n_rand, replace=False))
        for slot, row in enumerate(rows):
            self._fill(slot, int(row))
        self._refresh_globals()

    @property
    def done(self) -> bool:
        """The budget is spent or no candidate is left."""
        return len(self.shown) >= self.budget or not (self._pool >= 0).any()

    def observation(self) -> np.ndarray:
        """A copy of the current observation, (pool_size, n_features + len(FEEDBACK_FEATURES)) float32."""
        return self._obs.copy()

    def action_masks(self) -> np.ndarray:
        """Which slots hold a candidate."""
        return self._pool >= 0

    def row(self, slot: int) -> int:
        """The row index of the candidate in ``slot``."""
        row = int(self._pool[slot])
        if row < 0:
            raise ValueError(f"slot {slot} holds no candidate (see action_masks()); choose a slot whose mask is True")
        return row

    def reveal(self, slot: int, label: int) -> int:
        """Record the answer ``label`` (1 = anomaly) for the candidate in ``slot``; returns its row."""
        row = self.row(slot)
        if label not in (0, 1):
            raise ValueError(f"label must be 0 or 1, got {label!r}")
        self._shown[row] = True
        self._in_pool[row] = False
        self.shown.append(row)
        self.labels.append(int(label))
        self._learn(row, int(label))
        self._pool[slot] = -1
        self._fill(slot, self._pick_refill())
        self._refresh_globals()
        return row

    def _pick_refill(self) -> int | None:
        available = ~(self._shown | self._in_pool)
        if self.rng.random() < self.random_share:
            for _ in range(8):  # rejection sampling: cheap while most rows are available
                row = int(self.rng.integers(len(available)))
                if available[row]:
                    return row
            free = np.flatnonzero(available)
            return int(free[self.rng.integers(len(free))]) if len(free) else None
        if self._raw is not None and self._found_any and self.rng.random() < self.NEIGHBOUR_SHARE:
            scores = np.where(available, -self._raw_dist[1], -np.inf)  # the nearest unshown neighbour of an anomaly
        else:
            scores = np.where(available, self._learned, -np.inf)
        row = int(np.argmax(scores))
        return row if available[row] else None

    def _fill(self, slot: int, row: int | None) -> None:
        if row is None:
            self._pool[slot] = -1
            self._obs[slot] = 0.0
            self._sim[slot] = 0.0
            return
        self._pool[slot] = row
        self._in_pool[row] = True
        for c in (0, 1):
            ref = self._labelled_pct[c]
            self._sim[slot, c] = self._similarity(ref, self._pct[row]).max() if len(ref) else 0.0
        self._obs[slot, : self.n_base] = self._feats[row]

    def _similarity(self, ref: np.ndarray, x: np.ndarray) -> np.ndarray:
        msd = np.mean((ref - x) ** 2, axis=-1)
        return np.exp(-msd / self.similarity_scale**2)

    def _learn(self, row: int, label: int) -> None:
        x = self._pct[row]
        self._labelled_pct[label] = np.vstack([self._labelled_pct[label], x])
        self._sums[label] += x
        self._counts[label] += 1
        live = self._pool >= 0
        sim = self._similarity(self._pct[self._pool[live]], x)
        self._sim[live, label] = np.maximum(self._sim[live, label], sim)
        means = [self._sums[c] / self._counts[c] if self._counts[c] else np.full(len(x), 0.5) for c in (0, 1)]
        w = np.maximum(means[1] - means[0], 0.0)
        self._weights = w / w.sum() if w.sum() > 1e-9 else np.full(len(x), 1.0 / len(x))
        self._weighted = self._pct @ self._weights
        self._f_sums[label] += self._F[row]
        if self._raw is not None:
            dist = np.sqrt(((self._raw - self._raw[row]) ** 2).sum(axis=1))
            np.minimum(self._raw_dist[label], dist, out=self._raw_dist[label])
        self._found_any = bool(self._counts[1])
        self._learned = self._discriminant() if self._found_any else self._weighted

    #: Share of the non-random refills taken from the nearest neighbours of labelled anomalies (with raw rows).
    NEIGHBOUR_SHARE = 0.5
    #: Pseudo-count of the dataset's mean in the normals' mean of the discriminant.
    NORMAL_PRIOR_ROWS = 2.0
    #: Share of the diagonal added to the dataset's feature covariance before inverting it.
    COVARIANCE_RIDGE = 0.01

    def _discriminant(self) -> np.ndarray:
        """The learned score of every row: a linear discriminant, standardised (squashed later, for the pool only)."""
        m0 = self.NORMAL_PRIOR_ROWS
        mu_a = self._f_sums[1] / self._counts[1]
        mu_n = (self._f_sums[0] + m0 * self._f_mean) / (self._counts[0] + m0)
        s = self._F @ (self._f_precision @ (mu_a - mu_n))
        return (s - s.mean()) / (s.std() + 1e-12)

    def _refresh_globals(self) -> None:
        live = self._pool >= 0
        rows = self._pool[live]
        queries = len(self.shown)
        found = sum(self.labels)
        fb = self._obs[:, self.n_base :]
        fb[live, 0] = self._sim[live, 1]  # anomalies
        fb[live, 1] = self._sim[live, 0]  # normals
        fb[live, 2] = self._weighted[rows]
        learned = self._learned[rows]
        fb[live, 3] = 1.0 / (1.0 + np.exp(-np.clip(learned, -30.0, 30.0))) if self._found_any else learned
        fb[live, 4] = self._prior_rank[rows]
        fb[live, 5] = found / queries if queries else 0.0
        fb[live, 6] = np.log1p(found) / np.log1p(self.budget)
        fb[live, 7] = 1.0 - queries / self.budget
        fb[live, 8] = np.exp(-self._raw_dist[1, rows])
        fb[live, 9] = np.exp(-self._raw_dist[0, rows])
        fb[~live] = 0.0
