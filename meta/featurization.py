"""Featurization of source tasks over an executor, before meta-training.

Meta-training featurizes every training task (the featurizer fitted on the task's own
rows, :func:`~anomaly_gym.envs.features.featurize_task`) and the test part of every
validation task under each validation seed (fitted on the training part,
:func:`~anomaly_gym.envs.features.featurize_split`).  Each is independent of the others,
so :func:`featurize_sources` runs them through an executor
(:mod:`anomaly_gym.meta.executors`: serially, over the machine's cores, or on a Ray
cluster), largest first, and stores what comes back in this machine's feature cache, where
the training environment and the validation then find it.  Features already in the cache
are not computed again.  The features are the same whatever the executor.

Example:
    >>> from anomaly_gym.envs import FeaturizerConfig, builtin_suite
    >>> from anomaly_gym.meta.featurization import FeatureJob, featurize_jobs
    >>> tasks = builtin_suite()[:2]
    >>> feats = featurize_jobs([FeatureJob(t) for t in tasks], FeaturizerConfig(), executor="serial")
    >>> [f.shape[0] for f in feats.values()] == [t.n_rows for t in tasks]
    True
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from anomaly_gym.envs.features import FeaturizerConfig, featurize_split, featurize_task, load_cached_features, store_features
from anomaly_gym.envs.tasks import Task, benchmark_split

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureJob:
    """One featurization: ``fit``'s own rows (``score`` None), or ``score``'s rows with the featurizer fitted on ``fit``."""

    fit: Task
    score: Task | None = None

    @property
    def key(self) -> str:
        """The name of the features in the cache (as :func:`featurize_task` / :func:`featurize_split` name them)."""
        return self.fit.hash if self.score is None else f"{self.fit.hash}-{self.score.hash}"

    @property
    def n_rows(self) -> int:
        return (self.fit if self.score is None else self.score).n_rows

    @property
    def cost(self) -> int:
        """A rough size of the work: the detectors of the bank are fitted on ``fit`` and score ``n_rows`` rows."""
        return (self.fit.n_rows + (0 if self.score is None else self.score.n_rows)) * max(1, self.fit.n_features)


def source_jobs(train_tasks: Sequence[Task], val_tasks: Sequence[Task] = (), val_seeds: Sequence[int] = (0,), *, max_rows: int = 10_000) -> list[FeatureJob]:
    """The featurizations meta-training needs: each training task, and each validation task's split under each seed."""
    jobs = [FeatureJob(t) for t in train_tasks]
    for task in val_tasks:
        for seed in val_seeds:
            split = benchmark_split(task, seed, max_rows=max_rows)
            jobs.append(FeatureJob(split.train, split.test))
    return list({job.key: job for job in jobs}.values())


def featurize_job(config: FeaturizerConfig, job: FeatureJob) -> np.ndarray:
    """The features of ``job``, single-threaded, without the disk cache (the caller stores them)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        if job.score is None:
            return featurize_task(job.fit, config, cache_dir=False)
        return featurize_split(job.fit, job.score, config, cache_dir=False)


def featurize_jobs(
    jobs: Sequence[FeatureJob],
    config: FeaturizerConfig,
    *,
    executor="serial",
    workers: int | None = None,
    address: str | None = None,
    cache_dir: str | Path | None | bool = None,
) -> dict[str, np.ndarray]:
    """Features of every job, by :attr:`FeatureJob.key`: from the cache, or computed through ``executor`` and cached.

    Args:
        jobs: The featurizations.
        config: The featurizer.
        executor: An :class:`~anomaly_gym.meta.executors.Executor`, or the name of one
            (``serial``, ``local``, ``ray``) made with ``workers`` and ``address`` and closed at the end.
        cache_dir: The feature cache (default ``$ANOMALY_GYM_CACHE``; False: none).

    Raises:
        RuntimeError: A featurization failed (its message names the task).
    """
    from anomaly_gym.meta.executors import make_executor

    features: dict[str, np.ndarray] = {}
    todo = []
    for job in jobs:
        cached = load_cached_features(job.key, job.n_rows, config, cache_dir)
        if cached is None:
            todo.append(job)
        else:
            features[job.key] = cached
    if not todo:
        return features
    todo.sort(key=lambda j: -j.cost)  # the largest first, so that no worker is left with a big one at the end
    owned = isinstance(executor, str)
    if owned and executor == "local":
        workers = min(workers or _cores(), len(todo))
    ex = make_executor(executor, workers=workers, address=address) if owned else executor
    try:
        with closing(ex.map(featurize_job, todo, context=config)) as outcomes:
            for outcome in outcomes:
                job = outcome.item
                if not outcome.ok:
                    raise RuntimeError(f"featurizing {job.fit.name} failed: {outcome.error}")
                features[job.key] = outcome.value
                store_features(job.key, outcome.value, config, cache_dir)
    finally:
        if owned:
            ex.close()
    logger.info("featurized %d task(s) with the %s executor", len(todo), ex.name)
    return {job.key: features[job.key] for job in jobs}


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
