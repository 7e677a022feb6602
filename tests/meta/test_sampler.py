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


def test_planted_tasks_stay_with_their_parent_dataset(tasks):
    from anomaly_gym.envs.planted import PlantSettings, planted_tasks

    children = planted_tasks(tasks[:5], PlantSettings(types=("local",), strengths=(1.0,), per_dataset=2, max_rows=60))
    pool = [*tasks, *children]
    for seed in range(5):
        sampler = TaskSampler(pool, val_tasks=2, seed=seed)
        held = {t.name for t in sampler.val_tasks}
        assert len(held) == 2 and all(t.parent is None for t in sampler.val_tasks)  # validation scores originals
        assert all(t.dataset not in held for t in sampler.train_tasks)  # no child of a held-out parent trains
    by_name = TaskSampler(pool, val_tasks=["t0"])
    assert [t.name for t in by_name.val_tasks] == ["t0"]
    assert not any(t.dataset == "t0" for t in by_name.train_tasks) and len(by_name.train_tasks) == 9 + 8


def test_load_sources_keeps_derived_tasks_only_with_their_parent(tmp_path):
    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.training import load_sources

    for name in ("a", "b"):
        task = make_synthetic_task("local", n_rows=150, n_features=3, seed=len(name) + ord(name))
        np.savez(tmp_path / f"{name}.npz", X=task.X, y=task.y)
    spec = f"planted:{tmp_path}?types=global&strengths=1&per_dataset=1&max_rows=80"
    child = "a/planted-global-s1-r0.05-0"
    cfg = TrainConfig(sources=[str(tmp_path), spec], datasets=["a", "b"])
    assert sorted(t.name for t in load_sources(cfg)) == ["a", child, "b", "b/planted-global-s1-r0.05-0"]
    # a fold that holds b out names b's child but not b itself: the child is left out
    fold = TrainConfig(sources=[str(tmp_path), spec], datasets=["a", child, "b/planted-global-s1-r0.05-0"])
    assert sorted(t.name for t in load_sources(fold)) == ["a", child]
    only = TrainConfig(sources=[spec], datasets=[child])
    with pytest.raises(ValueError, match="trains only with its parent"):
        load_sources(only)


def test_one_vs_rest_tasks_of_one_dataset_are_held_out_and_folded_together():
    from anomaly_gym.envs.sources import builtin_suite
    from anomaly_gym.meta.benchmark.protocol import fold_sources, plan_folds

    tasks = builtin_suite()
    digits = [t.name for t in tasks if t.name.startswith("sklearn/digits-")]
    assert len(digits) == 10 and {t.dataset for t in tasks if t.name in digits} == {"sklearn/digits"}
    sampler = TaskSampler(tasks, val_tasks=["sklearn/digits-4"], seed=0)
    assert sorted(t.name for t in sampler.val_tasks) == sorted(digits)
    assert not any(t.name in digits for t in sampler.train_tasks)
    for seed in range(5):  # a random split never puts one digit in training and another in validation
        split = TaskSampler(tasks, val_tasks=0.15, seed=seed)
        held = {t.name for t in split.val_tasks} & set(digits)
        assert held in (set(), set(digits))
    folds = plan_folds(tasks, tasks, 5)
    assert len({folds[n] for n in digits}) == 1 and len({folds[f"sklearn/iris-{c}"] for c in range(3)}) == 1
    fold = folds["sklearn/digits-0"]
    assert not any(s.name in digits for s in fold_sources(tasks, tasks, folds, fold))
    from anomaly_gym.envs.planted import planted_tasks

    child = planted_tasks([t for t in tasks if t.name == "sklearn/digits-4"])[0]
    assert child.parent == "sklearn/digits-4" and child.dataset == "sklearn/digits"  # goes with the family
