"""Planted-anomaly tasks: ADBench's four types in a dataset's real normal rows, seeded, with their parent."""

from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.envs.planted import (
    PLANTED_TYPES,
    PlantSettings,
    fit_normal_model,
    generate_anomalies,
    parse_planted_spec,
    plant,
    planted_tasks,
)
from anomaly_gym.envs.sources import load_tasks, make_synthetic_task
from anomaly_gym.envs.tasks import make_task
from sklearn.metrics import roc_auc_score

ADBENCH = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "adbench"


@pytest.fixture(scope="module")
def parent():
    """Correlated normal rows (two Gaussian clusters, a discrete column) with a few real anomalies."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 5))
    normal = np.vstack([rng.normal(size=(300, 5)) @ A, rng.normal(size=(300, 5)) @ A + 6.0])
    normal = np.column_stack([normal, rng.integers(0, 3, size=600)])  # a discrete column
    anomalies = rng.uniform(-20, 20, size=(12, 6))
    X = np.vstack([normal, anomalies])
    y = np.r_[np.zeros(600), np.ones(12)]
    return make_task("parent", X, y, source="test")


def _mahalanobis_auc(task):
    normal = task.X[task.y == 0].astype(np.float64)
    mu, cov = normal.mean(axis=0), np.cov(normal, rowvar=False) + 1e-6 * np.eye(task.n_features)
    d = task.X - mu
    return roc_auc_score(task.y, np.einsum("ij,jk,ik->i", d, np.linalg.inv(cov), d))


@pytest.mark.parametrize("kind", PLANTED_TYPES)
def test_planted_task_keeps_real_normal_rows_and_is_seeded(parent, kind):
    task = plant(parent, kind, rate=0.05, strength=1.0, seed=3, max_rows=400)
    normal = task.X[task.y == 0]
    assert task.parent == "parent" and task.dataset == "parent" and task.source == "planted"
    assert len(normal) == 400 and task.n_anomalies == round(0.05 * 400 / 0.95)
    parent_rows = {tuple(r) for r in parent.X[parent.y == 0]}
    assert all(tuple(r) in parent_rows for r in normal)  # real normal rows, none of the parent's anomalies
    again = plant(parent, kind, rate=0.05, strength=1.0, seed=3, max_rows=400)
    other = plant(parent, kind, rate=0.05, strength=1.0, seed=4, max_rows=400)
    assert again.hash == task.hash and other.hash != task.hash
    # the discrete column takes only values the normal rows take
    assert set(np.unique(task.X[:, 5])) <= {0.0, 1.0, 2.0}


def test_stronger_anomalies_depart_further(parent):
    normal = parent.X[parent.y == 0].astype(np.float64)
    model = fit_normal_model(normal, seed=0)
    mu, inv = normal.mean(axis=0), np.linalg.inv(np.cov(normal, rowvar=False))

    def departure(kind, strength):
        d = generate_anomalies(model, kind, 400, strength, np.random.default_rng(1)) - mu
        return np.median(np.einsum("ij,jk,ik->i", d, inv, d))

    for kind in ("local", "global", "clustered", "dependency"):
        weak, strong = departure(kind, 0.1), departure(kind, 1.0)
        assert strong > 1.5 * weak, kind
    assert _mahalanobis_auc(plant(parent, "local", strength=1.0, seed=0, rate=0.1, model=model)) > 0.75


def test_dependency_anomalies_have_normal_marginals_but_broken_joint_structure(parent):
    model = fit_normal_model(parent.X[parent.y == 0], seed=0)
    rng = np.random.default_rng(0)
    anomalies = generate_anomalies(model, "dependency", 300, 1.0, rng)
    normal = model.X
    for j in range(normal.shape[1]):  # every value is one a normal row takes in that column
        assert np.isin(anomalies[:, j], normal[:, j]).all()
    corr_normal = np.corrcoef(normal[:, :5], rowvar=False)
    corr_anom = np.corrcoef(anomalies[:, :5], rowvar=False)
    off = ~np.eye(5, dtype=bool)
    assert np.abs(corr_normal[off]).max() > 0.5
    assert np.abs(corr_anom[off]).max() < np.abs(corr_normal[off]).max() - 0.2


def test_planted_tasks_follow_the_grid_per_parent(parent):
    other = make_synthetic_task("local", n_rows=300, n_features=4, seed=1, name="other")
    settings = PlantSettings(types=("local", "clustered"), rates=(0.02, 0.1), strengths=(1.0,), per_dataset=3, max_rows=200)
    tasks = planted_tasks([parent, other], settings)
    assert len(tasks) == 6 and len({t.name for t in tasks}) == 6
    assert [t.parent for t in tasks] == ["parent"] * 3 + ["other"] * 3
    for t in tasks:
        kind = t.name.split("/planted-")[1].split("-")[0]
        assert kind in ("local", "clustered") and t.n_rows - t.n_anomalies <= 200
    assert [t.hash for t in planted_tasks([parent, other], settings)] == [t.hash for t in tasks]
    narrow = planted_tasks([parent], PlantSettings(types=("global",), strengths=(1.0,), max_columns=3))
    assert narrow[0].n_features == 3 and narrow[0].parent == "parent"
    whole = planted_tasks([parent], PlantSettings(types=("local", "global"), rates=(0.05,), strengths=(0.5, 1.0)))
    assert len(whole) == 4  # per_dataset unset: the whole grid once


def test_spec_parsing_and_its_errors():
    path, settings = parse_planted_spec("planted:builtin?types=local,global&rates=0.02,0.05&strengths=1&per_dataset=5&max_rows=300&max_columns=9")
    assert path == "builtin"
    assert settings == PlantSettings(types=("local", "global"), rates=(0.02, 0.05), strengths=(1.0,), per_dataset=5, max_rows=300, max_columns=9)
    assert parse_planted_spec("planted:data/x")[1] == PlantSettings()
    assert parse_planted_spec("planted:x?types=local+dependency&rates=0.02+0.1")[1] == PlantSettings(types=("local", "dependency"), rates=(0.02, 0.1))
    with pytest.raises(ValueError, match="unknown or empty option 'kinds=local'"):
        parse_planted_spec("planted:builtin?kinds=local")
    with pytest.raises(ValueError, match="planted types must be among"):
        parse_planted_spec("planted:builtin?types=weird")
    with pytest.raises(ValueError, match="rates must be in"):
        parse_planted_spec("planted:builtin?rates=0.7")
    with pytest.raises(ValueError, match="name the parent source"):
        parse_planted_spec("planted:?types=local")
    with pytest.raises(ValueError, match="not a number list"):
        parse_planted_spec("planted:builtin?strengths=big")


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
    """A folder of three small ADBench-format files."""
    folder = tmp_path_factory.mktemp("adbench")
    for i, kind in enumerate(("local", "global", "clustered")):
        task = make_synthetic_task(kind, n_rows=200, n_features=4, seed=i)
        np.savez(folder / f"d{i}.npz", X=task.X, y=task.y)
    return folder


def test_planted_source_spec_loads_from_a_folder(npz_dir):
    tasks = load_tasks(f"planted:{npz_dir}?types=global&strengths=1&per_dataset=2&max_rows=100")
    assert len(tasks) == 6 and [t.parent for t in tasks] == ["d0", "d0", "d1", "d1", "d2", "d2"]
    assert all(t.source == "planted" and t.name.startswith(t.parent + "/planted-global") for t in tasks)


def test_unlabelled_or_small_parents_are_refused(parent):
    with pytest.raises(ValueError, match="has no labels"):
        plant(parent.without_labels(), "local")
    with pytest.raises(ValueError, match="at least 20"):
        plant(parent.subset(np.r_[np.arange(10), np.arange(600, 612)]), "local")
    with pytest.raises(ValueError, match="anomaly_type must be one of"):
        plant(parent, "sideways")


@pytest.mark.skipif(not ADBENCH.is_dir(), reason="../shared/data/adbench is absent")
def test_planted_adbench_parents_are_subsampled():
    tasks = load_tasks(f"planted:{ADBENCH / 'WBC.npz'}?types=dependency&per_dataset=2&max_rows=150")
    assert len(tasks) == 2 and all(t.parent == "WBC" for t in tasks)
    assert all(t.n_rows - t.n_anomalies == 150 for t in tasks)
