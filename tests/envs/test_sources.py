"""Where tasks come from: the built-in suite, the synthetic generator, .npz and CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.envs.sources import (
    SYNTHETIC_TYPES,
    builtin_suite,
    load_adbench_dir,
    load_csv,
    load_npz,
    load_tasks,
    make_synthetic_task,
)

# --------------------------------------------------------------------------- built-in suite


def test_builtin_suite_has_many_distinct_labelled_tasks():
    suite = builtin_suite()

    assert len(suite) == 49
    assert len({t.name for t in suite}) == len(suite)
    assert len({t.hash for t in suite}) == len(suite)
    for task in suite:
        assert 0 < task.n_anomalies < task.n_rows, task.name
        assert task.n_rows >= 20 and np.isfinite(task.X).all(), task.name


def test_builtin_suite_mixes_sklearn_and_every_synthetic_type():
    suite = builtin_suite()
    synthetic = [t for t in suite if t.source == "synthetic"]

    assert sum(t.source == "sklearn" for t in suite) == 17
    assert len(synthetic) == 32
    assert {t.name.split("/")[1].rsplit("-", 1)[0] for t in synthetic} == set(SYNTHETIC_TYPES)
    for kind in SYNTHETIC_TYPES:
        assert sum(f"{kind} anomalies" in t.description for t in synthetic) == 8


def test_builtin_suite_is_seeded_and_returns_a_fresh_list():
    first = builtin_suite()
    first.clear()

    assert [t.hash for t in builtin_suite()] == [t.hash for t in builtin_suite(seed=0)]
    assert len(builtin_suite()) == 49
    assert builtin_suite(seed=1)[-1].hash != builtin_suite(seed=0)[-1].hash


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize("kind", SYNTHETIC_TYPES)
def test_synthetic_task_is_deterministic_by_seed(kind):
    first = make_synthetic_task(kind, n_rows=200, n_features=4, seed=7)
    again = make_synthetic_task(kind, n_rows=200, n_features=4, seed=7)
    other = make_synthetic_task(kind, n_rows=200, n_features=4, seed=8)

    np.testing.assert_array_equal(first.X, again.X)
    assert first.hash == again.hash
    assert other.hash != first.hash
    assert first.X.shape == (200, 4) and first.n_anomalies == 10
    assert first.name == f"synthetic/{kind}-n200-d4-c0.05-s7" and first.source == "synthetic"


def test_global_anomalies_lie_further_from_the_normal_rows():
    task = make_synthetic_task("global", n_rows=400, n_features=4, n_clusters=1, seed=0)
    normal, anomalous = task.X[task.y == 0], task.X[task.y == 1]
    centre, spread = normal.mean(axis=0), normal.std(axis=0)

    def distance(rows: np.ndarray) -> np.ndarray:
        return np.linalg.norm((rows - centre) / spread, axis=1)

    assert np.median(distance(anomalous)) > 2 * np.median(distance(normal))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"anomaly_type": "weird"}, r"anomaly_type must be one of \('local', 'global', 'dependency', 'clustered'\)"),
        ({"anomaly_type": "local", "contamination": 0.5}, r"contamination must be in \(0, 0.5\), got 0.5"),
        ({"anomaly_type": "local", "contamination": 0.0}, r"contamination must be in \(0, 0.5\)"),
    ],
)
def test_synthetic_task_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_synthetic_task(**kwargs, n_rows=100)


# --------------------------------------------------------------------------- CSV


@pytest.fixture
def csv_file(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 3)).round(4)
    y = (np.arange(30) % 10 == 0).astype(int)
    lines = ["a,b,label,c"] + [f"{r[0]},{r[1]},{lab},{r[2]}" for r, lab in zip(X, y)]
    path = tmp_path / "points.csv"
    path.write_text("\n".join(lines) + "\n")
    return path, X, y


def test_load_csv_with_a_label_column(csv_file):
    path, X, y = csv_file

    task = load_csv(path, label_column="label")

    assert task.name == "points" and task.source == "csv"
    np.testing.assert_allclose(task.X, X, rtol=1e-6)
    np.testing.assert_array_equal(task.y, y)


def test_load_csv_without_labels_keeps_every_column(csv_file):
    path, X, y = csv_file

    task = load_csv(path)

    assert task.y is None and task.n_features == 4
    np.testing.assert_array_equal(task.X[:, 2], y)


def test_load_csv_selects_columns(csv_file):
    path, X, y = csv_file

    task = load_csv(path, label_column="label", columns=["c", "a"])

    np.testing.assert_allclose(task.X, X[:, [2, 0]], rtol=1e-6)


def test_load_csv_names_a_missing_label_column(csv_file):
    path, _, _ = csv_file

    with pytest.raises(ValueError, match=r"no label column 'target'; the columns are \['a', 'b', 'label', 'c'\]"):
        load_csv(path, label_column="target")


def test_load_csv_names_missing_feature_columns(csv_file):
    path, _, _ = csv_file

    with pytest.raises(ValueError, match=r"no column\(s\) \['d'\]"):
        load_csv(path, columns=["a", "d"])


def test_load_csv_encodes_text_columns_or_names_them(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("x,kind\n" + "".join(f"{i},{'b' if i % 10 == 0 else 'a'}\n" for i in range(30)))

    task = load_csv(path)  # 'kind' is categorical: each value's rarity, floor(log2(n / (2 * k * count)))
    assert task.n_features == 2
    np.testing.assert_array_equal(task.X[:2, 1], [1, 0])  # b: log2(30 / 12); a: above the uniform share
    with pytest.raises(TypeError, match=r"non-numeric column\(s\) \['kind'\]"):
        load_csv(path, encode=False)
    assert load_csv(path, columns=["x"]).n_features == 1


def test_load_csv_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such CSV file"):
        load_csv(tmp_path / "absent.csv")


# --------------------------------------------------------------------------- .npz


def _write_npz(folder, name, n=30, seed=0, **arrays):
    rng = np.random.default_rng(seed)
    data = {"X": rng.normal(size=(n, 3)), "y": (np.arange(n) % 6 == 0).astype(float)}
    data.update(arrays)
    np.savez(folder / f"{name}.npz", **{k: v for k, v in data.items() if v is not None})
    return data


def test_load_npz_round_trips(tmp_path):
    data = _write_npz(tmp_path, "blobs")

    task = load_npz(tmp_path / "blobs.npz")

    assert task.name == "blobs" and task.source == "adbench"
    np.testing.assert_allclose(task.X, data["X"], rtol=1e-6)
    np.testing.assert_array_equal(task.y, data["y"])


def test_load_npz_without_x_is_rejected(tmp_path):
    np.savez(tmp_path / "bad.npz", features=np.zeros((30, 2)))

    with pytest.raises(ValueError, match=r"needs an array 'X' \(and 'y'\); found \['features'\]"):
        load_npz(tmp_path / "bad.npz")


def test_load_npz_without_y_is_unlabelled(tmp_path):
    _write_npz(tmp_path, "bare", y=None)

    assert load_npz(tmp_path / "bare.npz").y is None


def test_load_adbench_dir_sorts_and_filters_by_name(tmp_path):
    for i, name in enumerate(["beta", "Alpha", "gamma"]):
        _write_npz(tmp_path, name, seed=i)

    assert [t.name for t in load_adbench_dir(tmp_path)] == ["Alpha", "beta", "gamma"]
    assert [t.name for t in load_adbench_dir(tmp_path, names=["GAMMA", "alpha"])] == ["Alpha", "gamma"]
    with pytest.raises(ValueError, match=r"datasets not found in .*\['delta'\]"):
        load_adbench_dir(tmp_path, names=["alpha", "delta"])


def test_load_adbench_dir_rejects_missing_and_empty_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such data directory: .*absent"):
        load_adbench_dir(tmp_path / "absent")
    with pytest.raises(ValueError, match=r"holds no .npz files"):
        load_adbench_dir(tmp_path)


def test_load_tasks_resolves_every_kind_of_source(tmp_path, csv_file):
    csv_path, _, _ = csv_file
    _write_npz(tmp_path, "one")

    assert len(load_tasks("builtin")) == 49
    assert [t.name for t in load_tasks(tmp_path)] == ["one"]
    assert [t.name for t in load_tasks(tmp_path / "one.npz")] == ["one"]
    assert load_tasks(csv_path, label_column="label")[0].n_anomalies == 3
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"cannot load tasks from '.*data.parquet': give 'builtin', a directory"):
        load_tasks(tmp_path / "data.parquet")


def test_load_tasks_names_a_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no such data directory: .*absent\. Give 'builtin'"):
        load_tasks(tmp_path / "absent")


# --------------------------------------------------------------------------- ADBench reference data


@pytest.fixture(scope="module")
def adbench_tasks(adbench_dir):
    """All 31 reference datasets at their true sizes (constant columns kept)."""
    return {t.name: t for t in load_adbench_dir(adbench_dir, drop_constant=False)}


def test_adbench_dir_holds_31_labelled_datasets(adbench_tasks):
    assert len(adbench_tasks) == 31
    assert {"donors", "Hepatitis", "mnist", "smtp", "InternetAds", "wine"} <= set(adbench_tasks)
    for task in adbench_tasks.values():
        assert task.source == "adbench"
        assert 0 < task.n_anomalies < task.n_rows, task.name
        assert task.X.dtype == np.float32 and np.isfinite(task.X).all(), task.name


@pytest.mark.parametrize(
    ("name", "rows", "columns", "anomalies"),
    [
        ("donors", 619_326, 10, 36_710),
        ("Hepatitis", 80, 19, 13),
        ("InternetAds", 1_966, 1_555, 368),
        ("smtp", 95_156, 3, 30),
        ("mnist", 7_603, 100, 700),
    ],
)
def test_adbench_known_sizes(adbench_tasks, name, rows, columns, anomalies):
    task = adbench_tasks[name]

    assert (task.n_rows, task.n_features, task.n_anomalies) == (rows, columns, anomalies)


def test_adbench_constant_columns_are_dropped_by_default(adbench_dir):
    with pytest.warns(UserWarning, match=r"task 'mnist': dropping 22 constant column\(s\)"):
        (mnist,) = load_adbench_dir(adbench_dir, names=["mnist"])

    assert mnist.n_features == 78


ADBENCH_CV = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "adbench-cv"


@pytest.mark.skipif(not ADBENCH_CV.is_dir(), reason="../shared/data/adbench-cv is absent")
def test_adbench_cv_image_embeddings_are_a_training_source():
    """The 21 image-embedding tasks (ResNet-18, 512 columns) load as a source, plain and planted."""
    from anomaly_gym.meta.config import TrainConfig
    from anomaly_gym.meta.training import load_sources

    with pytest.warns(UserWarning, match="constant column"):  # embedding dimensions constant on a task are dropped
        tasks = load_tasks(ADBENCH_CV)
    assert len(tasks) == 21 and len({t.name for t in tasks}) == 21
    assert {t.name.split("_")[0] for t in tasks} == {"CIFAR10", "SVHN", "MVTec-AD"}
    assert all(0 < t.n_anomalies < t.n_rows and t.n_features <= 512 for t in tasks)
    # CIFAR10 and SVHN use nearly all 512 dimensions; MVTec-AD classes leave many constant (dropped)
    assert all(t.n_features >= 500 for t in tasks if not t.name.startswith("MVTec"))
    assert all(t.n_features >= 200 for t in tasks)
    cfg = TrainConfig(sources=[str(ADBENCH_CV)], datasets=["CIFAR10_0", "MVTec-AD_bottle"], max_task_rows=1000)
    picked = load_sources(cfg)
    assert [t.name for t in picked] == ["CIFAR10_0", "MVTec-AD_bottle"] and all(t.n_rows <= 1000 for t in picked)
    planted = load_tasks(f"planted:{ADBENCH_CV / 'SVHN_0.npz'}?types=local&strengths=1&max_rows=100")
    assert len(planted) == 1 and planted[0].parent == "SVHN_0" and 32 <= planted[0].n_features <= 64
