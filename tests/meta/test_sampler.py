import numpy as np
import pytest
from anomaly_gym.envs import make_synthetic_task, make_task
from anomaly_gym.meta.sampler import TaskSampler


@pytest.fixture(scope="module")
def tasks():
    kinds = ["local", "global", "dependency", "clustered"]
    return [make_synthetic_task(kinds[i % 4], n_rows=100, n_features=3, seed=i, name=f"t{i}") for i in range(10)]


def test_sampler_never_yields_a_validation_task(tasks):
    sampler = TaskSampler(tasks, val_tasks=3, seed=1)
    val = {t.name for t in sampler.val_tasks}
    assert len(val) == 3 and len(sampler.train_tasks) == 7
    rng = np.random.default_rng(0)
    drawn = {t.name for _ in range(200) for t in sampler.sample(4, rng)}
    assert drawn.isdisjoint(val)
    assert drawn == {t.name for t in sampler.train_tasks}  # every training task gets drawn


def test_sampler_split_by_name_share_and_seed(tasks):
    by_name = TaskSampler(tasks, val_tasks=["t2", "t5"])
    assert sorted(t.name for t in by_name.val_tasks) == ["t2", "t5"]
    assert len(TaskSampler(tasks, val_tasks=0.3).val_tasks) == 3
    a = TaskSampler(tasks, val_tasks=3, seed=4)
    b = TaskSampler(tasks, val_tasks=3, seed=4)
    assert [t.name for t in a.val_tasks] == [t.name for t in b.val_tasks]


def test_sampler_rejects_bad_splits(tasks):
    with pytest.raises(ValueError, match="not among the sources"):
        TaskSampler(tasks, val_tasks=["nope"])
    with pytest.raises(ValueError, match="at least one must remain"):
        TaskSampler(tasks, val_tasks=10)
    with pytest.raises(ValueError, match="unique"):
        TaskSampler(tasks + tasks[:1], val_tasks=1)
    unlabelled_anomalies = make_task("flat", np.random.default_rng(0).normal(size=(50, 2)), np.zeros(50))
    with pytest.raises(ValueError, match="no anomalies"):
        TaskSampler(tasks + [unlabelled_anomalies], val_tasks=1)
