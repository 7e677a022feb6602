"""Batched ``AnomalyGym/Detect-v0``: many environments stepped with array operations.

:class:`BatchedDetectEnv` is a stable-baselines3 :class:`~stable_baselines3.common.vec_env.VecEnv`
with the observations, rewards and episode rules of
:class:`~anomaly_gym.envs.detect.AnomalyDetectionEnv`, but no Python object per
environment: the features of every task in the pool sit in one concatenated float32
table, each sub-environment is a row of a few state arrays (current task, current row,
step count), and one step is a handful of array operations over all of them.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import gymnasium as gym
import numpy as np
from anomaly_gym.envs.features import Featurizer, FeaturizerConfig, featurize_task
from anomaly_gym.envs.sources import training_pool
from anomaly_gym.envs.tasks import Task, check_training_task
from gymnasium import spaces
from gymnasium.utils import seeding
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn

RngMode = Literal["batched", "per_env"]

#: Per-sub-environment methods that :meth:`BatchedDetectEnv.env_method` can call.
SUB_ENV_METHODS = ("get_task", "set_task", "sample_tasks")


class BatchedDetectEnv(VecEnv):
    """
    ## Description
    ``n_envs`` copies of ``AnomalyGym/Detect-v0`` (see
    :class:`~anomaly_gym.envs.detect.AnomalyDetectionEnv`) behind stable-baselines3's
    ``VecEnv`` interface, stepped with array operations instead of one Python object per
    copy.  The features of every pool task are computed once with
    :func:`~anomaly_gym.envs.features.featurize_task` (and its disk cache) and stored as
    one float32 table with per-task row offsets, next to per-task index arrays of the
    anomalous and normal rows; a step draws the next row of all sub-environments at once
    and gathers their observations and labels in one indexing operation.

    For meta-training, each sub-environment draws a fresh task from the pool, uniformly,
    at every episode start (``resample_task_on_reset=True``, the default); with
    ``resample_task_on_reset=False`` a sub-environment keeps its task, ``tasks[0]`` until
    :meth:`set_task` chooses another, as ``Detect-v0`` does.

    ## Action Space
    ``Discrete(2)`` per sub-environment: 0 = normal, 1 = anomaly.  ``step`` takes an
    integer array of shape ``(n_envs,)``; anything else raises ``ValueError``.

    ## Observation Space
    The ``Box`` of ``Detect-v0`` for the same featurizer configuration; ``reset`` and
    ``step`` return float32 numpy arrays of shape ``(n_envs, n_features)``.

    ## Rewards
    As ``Detect-v0``: +1 when the action equals the label of the row shown, else -1.

    ## Episode End
    As ``Detect-v0``: rows are drawn with replacement, an anomaly with probability
    ``anomaly_fraction`` (uniformly within the class), or uniformly over all rows when
    ``anomaly_fraction`` is None.  ``terminated`` is always False; after
    ``episode_length`` steps an episode is truncated, and, as stable-baselines3 expects,
    the sub-environment starts its next episode at once: its ``done`` is True,
    ``infos[i]["TimeLimit.truncated"]`` is True, ``infos[i]["terminal_observation"]``
    holds the observation the episode ended on, and the returned observation is the
    first of the next episode.

    ## Randomness
    All randomness flows from the seeds given with :meth:`seed` (sub-environment ``i``
    gets ``seed + i``, as in ``DummyVecEnv``) and is applied at the next :meth:`reset`.

    - ``rng_mode="batched"`` (default, fast): one ``numpy.random.Generator`` for the whole
      batch, seeded from the list of sub-environment seeds, draws the rows of all
      sub-environments with one call per step.  One uniform number per row: ``u <
      anomaly_fraction`` picks the class, and ``u`` rescaled within its class picks the
      row.  The distribution is that of ``Detect-v0``; the sequence is not, and a
      sub-environment's draws depend on the whole batch's seeds.
    - ``rng_mode="per_env"`` (exact): every sub-environment owns a Generator seeded as
      Gymnasium seeds ``Detect-v0`` (``gymnasium.utils.seeding.np_random(seed)``) and
      draws with the calls of ``AnomalyDetectionEnv._draw_row`` in the same order, so
      sub-environment ``i`` reproduces ``AnomalyDetectionEnv(tasks=[task])`` reset with
      the same seed step for step (single-task pool, or ``resample_task_on_reset=False``).
      The draws loop over sub-environments in Python, which costs several times the
      rest of a step; the observation gather and rewards stay vectorised.

    Task draws at episode starts use the same generator(s), before the row draw; with a
    one-task pool no task is drawn.

    ## Backends
    ``backend="numpy"`` gathers observations and computes rewards with numpy.
    ``backend="torch"`` keeps the feature table and labels as torch tensors on
    ``device`` and does the gather and the reward there; rows are still drawn with numpy
    on the CPU (so both backends give identical results for the same seeds), and, as
    ``VecEnv`` requires, observations and rewards come back as numpy arrays.  Each step
    therefore moves ``n_envs`` row indices and actions to the device and
    ``n_envs x n_features`` floats back.

    ## Info
    ``step``: per sub-environment ``index`` and ``label`` of the row just judged,
    ``task`` (its name) and ``next_index`` (the row drawn at this step, the terminal one
    when the episode ended), as ``Detect-v0``; where the episode ended also
    ``TimeLimit.truncated`` (True) and ``terminal_observation`` (elsewhere the key
    ``TimeLimit.truncated`` is left out, which stable-baselines3 reads as False).
    ``reset_infos[i]`` (updated by ``reset`` and at every automatic reset): ``index``,
    ``label`` and ``task`` of the first row of the episode.

    ## Arguments
    - ``tasks``: labelled :class:`~anomaly_gym.envs.tasks.Task` objects, the pool (each
      needs both classes); default the built-in suite.
    - ``n_envs``: number of sub-environments (default 8).
    - ``episode_length``: steps per episode (default 256).
    - ``anomaly_fraction``: probability that a drawn row is an anomaly, in (0, 1), or None
      for natural rates.
    - ``featurizer``: a :class:`~anomaly_gym.envs.features.FeaturizerConfig` (default: the
      default bank).
    - ``cache_dir``: feature cache folder (None: the default; False: no disk cache).
    - ``resample_task_on_reset``: draw a fresh pool task at every episode start.
    - ``rng_mode``: ``"batched"`` or ``"per_env"`` (see Randomness).
    - ``backend``: ``"numpy"``, ``"torch"`` or None (numpy on the CPU, torch elsewhere).
    - ``device``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"`` (CUDA when available);
      anything but the CPU needs the torch backend.

    ## Version History
    - v0: initial version, the rules of ``AnomalyGym/Detect-v0``.

    Example:
        >>> venv = BatchedDetectEnv(tasks, n_envs=256)
        >>> venv.seed(0)
        >>> obs = venv.reset()                      # (256, n_features) float32
        >>> obs, rewards, dones, infos = venv.step(np.ones(256, dtype=np.int64))
    """

    def __init__(
        self,
        tasks: Sequence[Task] | None = None,
        *,
        n_envs: int = 8,
        episode_length: int = 256,
        anomaly_fraction: float | None = 0.5,
        featurizer: FeaturizerConfig | None = None,
        cache_dir=None,
        resample_task_on_reset: bool = True,
        rng_mode: RngMode = "batched",
        backend: Literal["numpy", "torch"] | None = None,
        device: str = "cpu",
    ) -> None:
        tasks = training_pool(tasks, "BatchedDetectEnv")
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ValueError(f"n_envs must be a positive integer, got {n_envs!r}")
        if rng_mode not in ("batched", "per_env"):
            raise ValueError(f"rng_mode must be 'batched' (fast) or 'per_env' (exact agreement with Detect-v0), got {rng_mode!r}")
        n_envs = int(n_envs)

        self.featurizer_config = featurizer or FeaturizerConfig()
        self.cache_dir = cache_dir
        self.resample_task_on_reset = bool(resample_task_on_reset)
        self.rng_mode: RngMode = rng_mode
        self.episode_length = episode_length
        self.anomaly_fraction = anomaly_fraction
        self.backend, self.device = resolve_backend(backend, device)
        self.render_mode = None

        # The task table: pool tasks first (slots 0..n_pool-1), tasks given to set_task after.
        self._tasks: list[Task] = []
        self._slot_of: dict[str, int] = {}
        self._pending: list[tuple[Task, np.ndarray]] = []
        for task in tasks:
            self._add_task(task, rebuild=False)
        self._n_pool = len(self._tasks)
        self._rebuild_table()

        low, high = Featurizer(self.featurizer_config).feature_bounds()
        observation_space = spaces.Box(low, high, dtype=np.float32)

        # Per-sub-environment state.
        self._task_id = np.zeros(n_envs, dtype=np.int64)  # task slot of the current episode
        self._pinned = np.full(n_envs, -1, dtype=np.int64)  # slot chosen by set_task, or -1
        self._row = np.zeros(n_envs, dtype=np.int64)  # current row, within its task
        self._grow = np.zeros(n_envs, dtype=np.int64)  # current row, within the table
        self._label = np.zeros(n_envs, dtype=np.int8)  # label of the current row
        self._env_t2 = np.zeros(n_envs, dtype=np.int64)  # 2 * task slot (index of its anomaly class)
        self._env_off = np.zeros(n_envs, dtype=np.int64)  # table offset of the current task
        self._steps = np.zeros(n_envs, dtype=np.int64)
        self._env_names = [self._names[0]] * n_envs  # name of the current task
        self._rng = np.random.default_rng()
        self._rngs: list[np.random.Generator | None] = [None] * n_envs
        self._actions: np.ndarray | None = None
        self._started = False
        self._closed = False

        super().__init__(n_envs, observation_space, spaces.Discrete(2))

    # -- settings ----------------------------------------------------------------------
    @property
    def episode_length(self) -> int:
        """Steps per episode; a change applies to the running episodes at once."""
        return self._episode_length

    @episode_length.setter
    def episode_length(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"episode_length must be a positive integer, got {value!r}")
        self._episode_length = int(value)

    @property
    def anomaly_fraction(self) -> float | None:
        """Probability that a drawn row is an anomaly, in (0, 1), or None for natural rates."""
        return self._anomaly_fraction

    @anomaly_fraction.setter
    def anomaly_fraction(self, value: float | None) -> None:
        if value is not None and not 0.0 < float(value) < 1.0:
            raise ValueError(f"anomaly_fraction must be in (0, 1) or None for natural rates, got {value}")
        self._anomaly_fraction = None if value is None else float(value)
        self._update_scales()

    @property
    def tasks(self) -> list[Task]:
        """The pool that episodes draw their task from."""
        return self._tasks[: self._n_pool]

    # -- meta-RL task interface --------------------------------------------------------
    def sample_tasks(self, n: int) -> list[Task]:
        """``n`` tasks from the pool (without replacement while possible), seeded with the batch generator."""
        if n < 1:
            raise ValueError(f"n must be positive, got {n}")
        picks = self._rng.choice(self._n_pool, size=n, replace=n > self._n_pool)
        return [self._tasks[int(i)] for i in picks]

    def set_task(self, task: Task | None, indices: VecEnvIndices = None) -> None:
        """Pin sub-environments to ``task`` from their next episode start on.

        Call :meth:`reset` to start on it at once.  Pinned sub-environments no longer
        draw tasks from the pool; ``set_task(None)`` releases them.

        Args:
            task: Any labelled task with both classes (it need not be in the pool: its
                features are computed and added to the table), or None to release.
            indices: Sub-environments to set (default: all).

        Raises:
            TypeError: ``task`` is not a Task.
            ValueError: ``task`` is unlabelled or lacks a class, or an index is out of range.
        """
        idx = self._index_array(indices)
        if task is None:
            self._pinned[idx] = -1
            return
        if not isinstance(task, Task):
            raise TypeError(f"set_task expects a Task (or None to release), got {type(task).__name__}")
        check_training_task(task)
        self._pinned[idx] = self._add_task(task)

    def get_task(self, index: int = 0) -> Task:
        """The task sub-environment ``index`` is running now."""
        return self._tasks[int(self._task_id[self._index_array(index)[0]])]

    def get_tasks(self, indices: VecEnvIndices = None) -> list[Task]:
        """The tasks the sub-environments ``indices`` (default: all) are running now."""
        return [self._tasks[int(t)] for t in self._task_id[self._index_array(indices)]]

    # -- VecEnv API --------------------------------------------------------------------
    def seed(self, seed: int | None = None) -> Sequence[int | None]:
        """Seed sub-environment ``i`` with ``seed + i`` at the next :meth:`reset` (as ``DummyVecEnv``)."""
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        return super().seed(None if seed is None else int(seed))

    def reset(self) -> VecEnvObs:
        """Start a new episode in every sub-environment, applying pending seeds and options.

        ``set_options({"task": task})`` pins sub-environments to ``task`` as
        :meth:`set_task` does (``Detect-v0``'s ``reset(options={"task": ...})``).

        Returns:
            The first observations, float32, shape ``(n_envs, n_features)``.
        """
        self._check_open()
        for i, options in enumerate(self._options):
            if options and options.get("task") is not None:
                self.set_task(options["task"], indices=i)
        self._apply_seeds(self._seeds)
        self._reset_seeds()
        self._reset_options()
        self._start_episodes(np.arange(self.num_envs))
        self._started = True
        return self._gather(self._grow)

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        self._check_open()
        if not self._started:
            raise ValueError("call reset() before step()")
        if self._actions is None:
            raise ValueError("call step_async(actions) before step_wait()")
        actions = self._check_actions(self._actions)
        self._actions = None

        judged_rows, judged_labels, judged_tasks = self._row.tolist(), self._label.tolist(), self._env_names
        rewards = self._rewards(actions)
        self._steps += 1
        dones = self._steps >= self._episode_length
        self._draw_rows()
        infos: list[dict[str, Any]] = [
            {"index": i, "label": y, "task": name, "next_index": j} for i, y, name, j in zip(judged_rows, judged_labels, judged_tasks, self._row.tolist())
        ]
        if dones.any():
            ended = np.flatnonzero(dones)
            terminal = self._gather(self._grow[ended])
            for k, i in enumerate(ended.tolist()):
                infos[i]["TimeLimit.truncated"] = True
                infos[i]["terminal_observation"] = terminal[k]
            self._start_episodes(ended)
        return self._gather(self._grow), rewards, dones, infos

    def close(self) -> None:
        """Release the feature table; the environment cannot be used afterwards."""
        self._closed = True
        self._table_t = self._labels_t = None

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """One value per sub-environment: ``"task"`` per sub-environment, other public attributes shared.

        Raises:
            AttributeError: there is no public attribute ``attr_name``.
        """
        idx = self._index_array(indices)
        if attr_name == "task":
            return self.get_tasks(idx)
        if attr_name.startswith("_") or not hasattr(self, attr_name):
            raise AttributeError(f"BatchedDetectEnv has no public attribute {attr_name!r}")
        value = getattr(self, attr_name)
        return [value for _ in idx]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set ``"task"`` (per sub-environment, as :meth:`set_task`), or a shared setting for all sub-environments.

        Shared settings: ``episode_length``, ``anomaly_fraction``, ``resample_task_on_reset``.

        Raises:
            AttributeError: ``attr_name`` cannot be set.
            ValueError: a shared setting was given ``indices`` other than all sub-environments,
                or an invalid value.
        """
        if attr_name == "task":
            self.set_task(value, indices)
            return
        if attr_name not in ("episode_length", "anomaly_fraction", "resample_task_on_reset"):
            raise AttributeError(
                f"BatchedDetectEnv cannot set {attr_name!r}; settable: 'task' (per sub-environment), "
                "'episode_length', 'anomaly_fraction', 'resample_task_on_reset' (shared)"
            )
        if indices is not None and len(np.unique(self._index_array(indices))) != self.num_envs:
            raise ValueError(f"{attr_name!r} is shared by all sub-environments of a BatchedDetectEnv; pass indices=None")
        setattr(self, attr_name, bool(value) if attr_name == "resample_task_on_reset" else value)

    def env_method(self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs) -> list[Any]:
        """Call a per-sub-environment method (``get_task``, ``set_task``, ``sample_tasks``) for each of ``indices``.

        Raises:
            AttributeError: ``method_name`` is not one of them.
        """
        if method_name not in SUB_ENV_METHODS:
            raise AttributeError(f"BatchedDetectEnv sub-environments have no method {method_name!r}; available: {SUB_ENV_METHODS}")
        out = []
        for i in self._index_array(indices).tolist():
            if method_name == "get_task":
                out.append(self.get_task(i))
            elif method_name == "set_task":
                out.append(self.set_task(*method_args, indices=i, **method_kwargs))
            else:
                out.append(self.sample_tasks(*method_args, **method_kwargs))
        return out

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """Always False: the sub-environments are array rows, not wrappable objects."""
        return [False] * len(self._index_array(indices))

    # -- the task table ----------------------------------------------------------------
    def _add_task(self, task: Task, *, rebuild: bool = True) -> int:
        slot = self._slot_of.get(task.hash)
        if slot is not None:
            return slot
        features = np.asarray(featurize_task(task, self.featurizer_config, cache_dir=self.cache_dir), dtype=np.float32)
        if features.shape != (task.n_rows, len(self.featurizer_config.feature_names())):
            raise ValueError(f"features of task {task.name!r} have shape {features.shape}, expected ({task.n_rows}, n_features)")
        slot = len(self._tasks)
        self._tasks.append(task)
        self._slot_of[task.hash] = slot
        self._pending.append((task, features))
        if rebuild:
            self._rebuild_table()
        return slot

    def _rebuild_table(self) -> None:
        """Append pending tasks to the concatenated table and its per-task index arrays."""
        tables = [self._table] if hasattr(self, "_table") else []
        labels = [self._labels] if hasattr(self, "_labels") else []
        tables += [features for _, features in self._pending]
        labels += [task.y for task, _ in self._pending]
        self._pending = []
        self._table = np.ascontiguousarray(np.concatenate(tables), dtype=np.float32)
        self._labels = np.ascontiguousarray(np.concatenate(labels), dtype=np.int8)
        self._n_rows = np.array([t.n_rows for t in self._tasks], dtype=np.int64)
        n_anom = np.array([t.n_anomalies for t in self._tasks], dtype=np.int64)
        self._row_off = np.concatenate([[0], np.cumsum(self._n_rows)[:-1]]).astype(np.int64)
        self._names = [t.name for t in self._tasks]
        # Detect-v0's pools (local row indices, in its order), for the per-env draws ...
        self._anom_pools = [np.flatnonzero(t.y == 1) for t in self._tasks]
        self._norm_pools = [np.flatnonzero(t.y == 0) for t in self._tasks]
        # ... and, for the batched draws, the table rows of every task's anomalies then
        # normal rows, with per-(task, class) start, size and scale at index 2 * task + class
        # (class 0 = anomaly, 1 = normal).
        self._class_grows = np.concatenate(
            [np.concatenate([a, n]) + off for a, n, off in zip(self._anom_pools, self._norm_pools, self._row_off.tolist())]
        ).astype(np.int64)
        self._cls_size = np.column_stack([n_anom, self._n_rows - n_anom]).reshape(-1)
        self._cls_start = np.column_stack([self._row_off, self._row_off + n_anom]).reshape(-1)
        self._cls_max = self._cls_size - 1
        self._update_scales()
        if self.backend == "torch":
            import torch

            self._table_t = torch.as_tensor(self._table, device=self.device)
            self._labels_t = torch.as_tensor(self._labels.astype(np.int64), device=self.device)
        else:
            self._table_t = self._labels_t = None

    def _update_scales(self) -> None:
        """Per (task, class): class size over the class's share of [0, 1), for the batched draws."""
        if not hasattr(self, "_cls_size"):
            return
        frac = self._anomaly_fraction if self._anomaly_fraction is not None else 0.5
        width = np.tile([frac, 1.0 - frac], len(self._tasks))
        self._cls_scale = self._cls_size / width

    # -- drawing -----------------------------------------------------------------------
    def _apply_seeds(self, seeds: list[int | None]) -> None:
        for s in seeds:
            if s is not None and (isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < 0):
                raise ValueError(f"seeds must be non-negative integers or None, got {s!r}")
        if self.rng_mode == "per_env":
            for i, s in enumerate(seeds):
                if s is not None or self._rngs[i] is None:
                    self._rngs[i] = seeding.np_random(None if s is None else int(s))[0]
        if any(s is not None for s in seeds):
            fresh = np.random.SeedSequence().entropy
            self._rng = np.random.default_rng([int(s) if s is not None else fresh for s in seeds])

    def _start_episodes(self, idx: np.ndarray) -> None:
        """First task and row of a new episode for the sub-environments ``idx``."""
        pinned = self._pinned[idx]
        if self.resample_task_on_reset and self._n_pool > 1:
            draw = idx[pinned < 0]
            if len(draw):
                if self.rng_mode == "per_env":
                    self._task_id[draw] = [int(self._rngs[i].integers(self._n_pool)) for i in draw.tolist()]
                else:
                    self._task_id[draw] = self._rng.integers(self._n_pool, size=len(draw))
        held = pinned >= 0
        if held.any():
            self._task_id[idx[held]] = pinned[held]
        tasks = self._task_id[idx]
        self._env_t2[idx] = 2 * tasks
        self._env_off[idx] = self._row_off[tasks]
        self._steps[idx] = 0
        self._draw_rows(idx)
        names, env_names = self._names, self._env_names
        for i, r, y, t in zip(idx.tolist(), self._row[idx].tolist(), self._label[idx].tolist(), tasks.tolist()):
            env_names[i] = names[t]
            self.reset_infos[i] = {"index": r, "label": y, "task": names[t]}

    def _draw_rows(self, idx: np.ndarray | None = None) -> None:
        """Draw the next row of the sub-environments ``idx`` (default: all) within their current task."""
        t2, off = (self._env_t2, self._env_off) if idx is None else (self._env_t2[idx], self._env_off[idx])
        frac = self._anomaly_fraction
        if self.rng_mode == "per_env":
            rows = np.empty(len(t2), dtype=np.int64)
            envs = range(self.num_envs) if idx is None else idx.tolist()
            n_rows, anom, norm, rngs = self._n_rows.tolist(), self._anom_pools, self._norm_pools, self._rngs
            for k, (i, t) in enumerate(zip(envs, (t2 >> 1).tolist())):
                rng = rngs[i]
                if frac is None:  # the calls of AnomalyDetectionEnv._draw_row, in its order
                    rows[k] = int(rng.integers(n_rows[t]))
                else:
                    pool = anom[t] if rng.random() < frac else norm[t]
                    rows[k] = int(pool[rng.integers(len(pool))])
            grow = rows + off
            label = self._labels[grow]
        elif frac is None:
            u = self._rng.random(len(t2))
            size = self._cls_size[t2] + self._cls_size[t2 + 1]
            rows = (u * size).astype(np.int64)
            np.minimum(rows, size - 1, out=rows)
            grow = rows + off
            label = self._labels[grow]
        else:
            # One uniform u per row: u < frac picks the anomalies, and u given its class,
            # uniform on [0, frac) or [frac, 1), rescaled to the class's size picks the row.
            u = self._rng.random(len(t2))
            normal = u >= frac
            cls = t2 + normal
            pick = ((u - frac * normal) * self._cls_scale[cls]).astype(np.int64)
            np.minimum(pick, self._cls_max[cls], out=pick)
            grow = self._class_grows[pick + self._cls_start[cls]]
            rows = grow - off
            label = np.logical_not(normal).view(np.int8)
        if idx is None:
            self._row[:], self._grow[:], self._label[:] = rows, grow, label
        else:
            self._row[idx], self._grow[idx], self._label[idx] = rows, grow, label

    # -- vectorised gather and reward ----------------------------------------------------
    def _gather(self, grow: np.ndarray) -> np.ndarray:
        if self._table_t is None:
            return self._table[grow]
        import torch

        index = torch.from_numpy(np.ascontiguousarray(grow)).to(self.device, non_blocking=True)
        return self._table_t.index_select(0, index).cpu().numpy()

    def _rewards(self, actions: np.ndarray) -> np.ndarray:
        if self._table_t is None:
            return np.where(actions == self._label, np.float32(1.0), np.float32(-1.0))
        import torch

        grow = torch.from_numpy(np.ascontiguousarray(self._grow)).to(self.device, non_blocking=True)
        acts = torch.from_numpy(np.ascontiguousarray(actions, dtype=np.int64)).to(self.device, non_blocking=True)
        labels = self._labels_t.index_select(0, grow)
        return torch.where(acts == labels, 1.0, -1.0).to(torch.float32).cpu().numpy()

    # -- checks ------------------------------------------------------------------------
    def _check_actions(self, actions) -> np.ndarray:
        arr = np.asarray(actions)
        if arr.size != self.num_envs or arr.ndim > 2 or arr.dtype.kind not in "biu":
            raise ValueError(
                f"actions must be an integer array of shape ({self.num_envs},) with 0 (normal) or 1 (anomaly), got {arr.dtype} array of shape {arr.shape}"
            )
        arr = arr.reshape(self.num_envs)
        if arr.dtype.kind != "b" and (arr.min() < 0 or arr.max() > 1):
            bad = arr[(arr < 0) | (arr > 1)]
            raise ValueError(f"actions must be 0 (normal) or 1 (anomaly), got {bad[:5].tolist()}")
        return arr

    def _index_array(self, indices: VecEnvIndices) -> np.ndarray:
        if indices is None:
            return np.arange(self.num_envs)
        idx = np.atleast_1d(np.asarray(list(indices) if not isinstance(indices, (int, np.integer, np.ndarray)) else indices))
        if idx.size and (idx.dtype.kind not in "iu" or idx.min() < 0 or idx.max() >= self.num_envs):
            raise ValueError(f"indices must be integers in [0, {self.num_envs}), got {idx.tolist()[:10]}")
        return idx.astype(np.int64)

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError("this BatchedDetectEnv is closed; create a new one")

    def __repr__(self) -> str:
        return (
            f"BatchedDetectEnv(n_envs={self.num_envs}, tasks={self._n_pool}, episode_length={self._episode_length}, "
            f"anomaly_fraction={self._anomaly_fraction}, rng_mode={self.rng_mode!r}, backend={self.backend!r}, "
            f"device={self.device!r})"
        )


def resolve_backend(backend: str | None, device: Any) -> tuple[str, str]:
    """The ``(backend, device)`` a :class:`BatchedDetectEnv` uses for these arguments.

    Args:
        backend: ``"numpy"``, ``"torch"`` or None (numpy on the CPU, torch elsewhere).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"auto"`` (CUDA when available) or a
            ``torch.device``.

    Returns:
        The backend and the device, ``"auto"`` resolved (e.g. ``("numpy", "cpu")``).

    Raises:
        ValueError: an unknown backend or device, the numpy backend off the CPU, or a CUDA
            device without CUDA.
    """
    if backend not in (None, "numpy", "torch"):
        raise ValueError(f"backend must be 'numpy', 'torch' or None, got {backend!r}")
    device = str(device)
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if backend is None:
        backend = "numpy" if device == "cpu" else "torch"
    if backend == "numpy" and device != "cpu":
        raise ValueError(f"the numpy backend runs on the CPU only, got device={device!r}; pass backend='torch'")
    if backend == "torch":
        import torch

        try:
            dev = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r} ({exc})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={device!r} needs CUDA, but torch.cuda.is_available() is False; use device='cpu' or 'auto'")
        device = str(dev)
    return backend, device
