"""Featurization of source tasks over an executor: the same features whatever the executor, cached once."""

from __future__ import annotations

import numpy as np
import pytest
from anomaly_gym.envs import FeaturizerConfig, builtin_suite, featurize_task
from anomaly_gym.envs.features import feature_cache_path
from anomaly_gym.meta.featurization import FeatureJob, featurize_jobs, source_jobs

CONFIG = FeaturizerConfig(detectors=("iforest", "hbos"), max_fit_rows=300)


@pytest.fixture(scope="module")
def jobs() -> list[FeatureJob]:
    tasks = {t.name: t for t in builtin_suite()}
    train = [tasks["sklearn/iris-1"], tasks["sklearn/wine-0"], tasks["sklearn/iris-1"]]  # a repeat is featurized once
    return source_jobs(train, [tasks["sklearn/breast_cancer"]], val_seeds=(0, 1), max_rows=300)


def test_the_local_pool_gives_the_serial_features_and_fills_the_cache(jobs, tmp_path):
    assert len(jobs) == 4  # two training tasks, one validation task under two seeds
    serial = featurize_jobs(jobs, CONFIG, executor="serial", cache_dir=False)
    local = featurize_jobs(jobs, CONFIG, executor="local", workers=2, cache_dir=tmp_path)
    assert list(local) == list(serial) == [j.key for j in jobs]
    for key, feats in serial.items():
        np.testing.assert_array_equal(local[key], feats)
        assert np.isfinite(feats).all() and feats.shape[1] == len(CONFIG.feature_names())
    # what a training environment reads afterwards is what the pool computed, without computing again
    first = jobs[0].fit
    assert feature_cache_path(first.hash, CONFIG, tmp_path).is_file()
    np.testing.assert_array_equal(featurize_task(first, CONFIG, cache_dir=tmp_path), serial[first.hash])


def test_cached_features_are_not_computed_again_and_failures_name_the_task(jobs, tmp_path, monkeypatch):
    featurize_jobs(jobs[:2], CONFIG, executor="serial", cache_dir=tmp_path)
    import anomaly_gym.meta.featurization as featurization

    def broken(config, job):
        raise RuntimeError("boom")

    monkeypatch.setattr(featurization, "featurize_job", broken)
    assert len(featurize_jobs(jobs[:2], CONFIG, executor="serial", cache_dir=tmp_path)) == 2  # all from the cache
    with pytest.raises(RuntimeError, match=r"featurizing sklearn/\S+ failed: RuntimeError: boom"):
        featurize_jobs(jobs, CONFIG, executor="serial", cache_dir=tmp_path)
