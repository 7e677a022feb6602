"""The task record, the checks of ``make_task``, and the benchmark split."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.envs import make_synthetic_task
from anomaly_gym.envs.tasks import MIN_ROWS, Task, benchmark_split, check_training_task, make_task, subsample


def _data(n: int = 40, d: int = 3, n_anomalies: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = np.zeros(n, dtype=int)
    y[:n_anomalies] = 1
    return X, y


# --------------------------------------------------------------------------- the record


def test_make_task_stores_float32_int8_read_only_arrays():
    X, y = _data()
    task = make_task("t", X, y, source="unit", description="four anomalies")

    assert task.X.dtype == np.float32 and task.y.dtype == np.int8
    np.testing.assert_array_equal(task.X, X.astype(np.float32))
    np.testing.assert_array_equal(task.y, y)
    assert not task.X.flags.writeable and not task.y.flags.writeable
    assert (task.n_rows, task.n_features, task.n_anomalies) == (40, 3, 4)
    assert task.anomaly_rate == pytest.approx(0.1)
    assert task.labelled and task.source == "unit" and task.description == "four anomalies"
    assert "rows=40" in repr(task) and "10.00%" in repr(task)


def test_hash_depends_on_data_only():
    X, y = _data()
    first, second = make_task("a", X, y), make_task("b", X.copy(), y.copy(), source="other")
    y_changed = y.copy()
    y_changed[-1] = 1

    assert len(first.hash) == 16
    assert first.hash == second.hash
    assert make_task("a", X, y_changed).hash != first.hash
    assert make_task("a", X + 1.0, y).hash != first.hash
    assert make_task("a", X).hash != first.hash


def test_subset_and_without_labels_return_new_tasks():
    X, y = _data()
    task = make_task("t", X, y)

    part = task.subset(np.array([5, 0, 1]), name="part")
    bare = task.without_labels()

    assert part.name == "part" and part.n_rows == 3
    np.testing.assert_array_equal(part.X, task.X[[5, 0, 1]])
    np.testing.assert_array_equal(part.y, [0, 1, 1])
    assert bare.y is None and not bare.labelled and bare.n_anomalies == 0
    assert np.isnan(bare.anomaly_rate) and "unlabelled" in repr(bare)
    np.testing.assert_array_equal(bare.X, task.X)


def test_dataframe_with_numeric_and_boolean_columns_is_accepted():
    X, y = _data()
    frame = pd.DataFrame({"a": X[:, 0], "b": (X[:, 1] > 0), "c": np.arange(40)})

    task = make_task("frame", frame, pd.Series(y.astype(bool)))

    assert task.X.shape == (40, 3)
    np.testing.assert_array_equal(task.X[:, 2], np.arange(40))
    np.testing.assert_array_equal(task.y, y)


def test_object_array_of_numbers_is_converted():
    X = np.arange(60, dtype=float).reshape(20, 3).astype(object)

    task = make_task("objects", X)

    np.testing.assert_array_equal(task.X, np.arange(60).reshape(20, 3))


def test_labels_of_shape_n_by_1_are_flattened():
    X, y = _data()

    task = make_task("t", X, y.reshape(-1, 1))

    assert task.y.shape == (40,)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_rejected_by_default(bad):
    X, y = _data()
    X[3, 1] = bad

    with pytest.raises(ValueError, match=r"NaN or infinite values \(1 value\(s\), first at row 3, column 1\).*nan_policy='median'"):
        make_task("dirty", X, y)


def test_median_policy_replaces_non_finite_values_with_the_column_median():
    X, y = _data()
    X[3, 1], X[7, 1], X[5, 2] = np.nan, np.inf, np.nan
    finite = np.delete(X[:, 1], [3, 7])

    task = make_task("dirty", X, y, nan_policy="median")

    assert np.isfinite(task.X).all()
    assert task.X[3, 1] == task.X[7, 1] == pytest.approx(np.median(finite))
    assert task.X[5, 2] == pytest.approx(np.median(np.delete(X[:, 2], 5)))
    np.testing.assert_array_equal(task.X[:, 0], X[:, 0].astype(np.float32))


def test_median_policy_fails_on_a_column_without_finite_values():
    X, y = _data()
    X[:, 2] = np.nan

    with pytest.raises(ValueError, match=r"column 2 has no finite value to impute from"):
        make_task("empty-column", X, y, nan_policy="median")


@pytest.mark.parametrize("with_nan", [False, True])
def test_unknown_nan_policy_is_rejected(with_nan):
    X, y = _data()
    if with_nan:
        X[0, 0] = np.nan

    with pytest.raises(ValueError, match=r"nan_policy must be 'error' or 'median', got 'zero'"):
        make_task("t", X, y, nan_policy="zero")


def test_dataframe_with_a_string_column_names_it():
    X, _ = _data()
    frame = pd.DataFrame({"a": X[:, 0], "colour": ["red", "blue"] * 20, "b": X[:, 1]})

    with pytest.raises(TypeError, match=r"non-numeric column\(s\) \['colour'\]"):
        make_task("frame", frame)


def test_object_array_with_strings_is_rejected():
    X = np.arange(60, dtype=float).reshape(20, 3).astype(object)
    X[4, 1] = "n/a"

    with pytest.raises(TypeError, match=r"X holds non-numeric values"):
        make_task("objects", X)


def test_complex_values_are_rejected():
    with pytest.raises(TypeError, match=r"X must be numeric, got dtype complex128"):
        make_task("complex", np.ones((30, 2), dtype=complex))


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, 2], r"labels must be 0 \(normal\) or 1 \(anomaly\), found \[2\]"),
        ([-1, 1], r"found \[-1\]"),
        ([0.0, 0.5], r"found \[0.5\]"),
        (["normal", "anomaly"], r"labels must be 0 \(normal\) or 1 \(anomaly\), got values of type <U7"),
        ([0.0, np.nan], r"labels contain NaN"),
    ],
)
def test_labels_outside_zero_one_are_rejected(labels, message):
    X, _ = _data(n=30)
    y = np.resize(np.asarray(labels), 30)

    with pytest.raises(ValueError, match=message):
        make_task("labels", X, y)


def test_mismatched_lengths_are_rejected():
    X, y = _data(n=30)

    with pytest.raises(ValueError, match=r"X has 30 rows but y has shape \(29,\); give one label per row"):
        make_task("t", X, y[:-1])


def test_too_few_rows_are_rejected():
    X, y = _data(n=MIN_ROWS - 1)

    with pytest.raises(ValueError, match=rf"has {MIN_ROWS - 1} rows; at least {MIN_ROWS} are needed"):
        make_task("short", X, y)
    assert make_task("enough", *_data(n=MIN_ROWS)).n_rows == MIN_ROWS


def test_one_dimensional_x_is_rejected_with_the_fix():
    with pytest.raises(ValueError, match=r"X is 1-D with shape \(30,\).*X.reshape\(-1, 1\)"):
        make_task("flat", np.arange(30.0))


def test_three_dimensional_x_is_rejected():
    with pytest.raises(ValueError, match=r"X must be 2-D \(rows, columns\), got shape \(30, 2, 2\)"):
        make_task("cube", np.zeros((30, 2, 2)))


def test_x_without_columns_is_rejected():
    with pytest.raises(ValueError, match=r"has no feature columns"):
        make_task("empty", np.zeros((30, 0)))


def test_constant_columns_are_dropped_with_a_warning():
    X, y = _data(d=4)
    X[:, 1] = 3.0
    X[:, 3] = 0.0

    with pytest.warns(UserWarning, match=r"dropping 2 constant column\(s\) \[1, 3\]"):
        task = make_task("const", X, y)

    assert task.n_features == 2
    np.testing.assert_array_equal(task.X, X[:, [0, 2]].astype(np.float32))


def test_constant_columns_are_kept_on_request_without_warning():
    X, y = _data()
    X[:, 1] = 3.0

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task = make_task("const", X, y, drop_constant=False)

    assert task.n_features == 3


def test_all_constant_columns_are_rejected():
    with pytest.raises(ValueError, match=r"every column is constant"):
        make_task("flat", np.ones((30, 3)))


# --------------------------------------------------------------------------- training tasks


def test_check_training_task_accepts_both_classes():
    check_training_task(make_task("ok", *_data()))


@pytest.mark.parametrize(
    ("n_anomalies", "message"),
    [(0, r"has no anomalies \(no label equals 1\)"), (40, r"has only anomalies \(every label equals 1\)")],
)
def test_check_training_task_needs_both_classes(n_anomalies, message):
    task = make_task("one-class", *_data(n=40, n_anomalies=n_anomalies))

    with pytest.raises(ValueError, match=message):
        check_training_task(task)


def test_check_training_task_needs_labels():
    with pytest.raises(ValueError, match=r"has no labels; training and validation tasks need labels"):
        check_training_task(make_task("bare", _data()[0]))


# --------------------------------------------------------------------------- protocol


@pytest.fixture(scope="module")
def task() -> Task:
    """1000 rows, 8 columns, 50 anomalies."""
    return make_synthetic_task("global", n_rows=1000, n_features=8, contamination=0.05, seed=3)


def test_subsample_is_stratified_and_seeded(task):
    small = subsample(task, 200, seed=1)

    assert small.n_rows == 200 and small.n_anomalies == 10
    assert subsample(task, 200, seed=1).hash == small.hash
    assert subsample(task, 200, seed=2).hash != small.hash
    assert subsample(task, 5000, seed=1) is task


def test_subsample_of_an_unlabelled_task_keeps_row_order(task):
    bare = task.without_labels()

    small = subsample(bare, 100, seed=0)

    rows = [int(np.flatnonzero((bare.X == row).all(axis=1))[0]) for row in small.X]
    assert small.n_rows == 100 and small.y is None
    assert rows == sorted(set(rows))


def test_benchmark_split_is_a_stratified_70_30_partition(task):
    split = benchmark_split(task, seed=0, scale=False)
    train, test = split.train, split.test

    assert (train.n_rows, test.n_rows) == (700, 300)
    assert (train.n_anomalies, test.n_anomalies) == (35, 15)
    assert split.seed == 0
    together = np.vstack([train.X, test.X])
    assert len(np.unique(together, axis=0)) == task.n_rows
    np.testing.assert_array_equal(np.sort(together, axis=0), np.sort(task.X, axis=0))


def test_benchmark_split_keeps_both_classes_when_anomalies_are_few():
    X, y = _data(n=60, n_anomalies=2)
    split = benchmark_split(make_task("few", X, y), seed=0)

    assert split.train.n_anomalies == 1 and split.test.n_anomalies == 1
    check_training_task(split.train)
    check_training_task(split.test)


def test_benchmark_split_is_seeded(task):
    first, again, other = (benchmark_split(task, seed=s) for s in (5, 5, 6))

    assert first.train.hash == again.train.hash and first.test.hash == again.test.hash
    assert first.test.hash != other.test.hash


def test_benchmark_split_subsamples_to_max_rows(task):
    split = benchmark_split(task, seed=0, max_rows=400)

    assert split.train.n_rows + split.test.n_rows == 400
    assert split.test.n_rows == 120
    assert split.train.n_anomalies + split.test.n_anomalies == 20
    assert split.train.n_anomalies > 0 and split.test.n_anomalies > 0


def test_benchmark_split_scales_with_the_training_part(task):
    raw = benchmark_split(task, seed=2, scale=False)
    scaled = benchmark_split(task, seed=2)
    lo = raw.train.X.min(axis=0)
    span = raw.train.X.max(axis=0) - lo

    np.testing.assert_array_equal(scaled.train.X.min(axis=0), 0.0)
    np.testing.assert_array_equal(scaled.train.X.max(axis=0), 1.0)
    np.testing.assert_allclose(scaled.test.X, (raw.test.X - lo) / span, rtol=1e-5, atol=1e-6)
    assert scaled.test.X.min() < 0.0 or scaled.test.X.max() > 1.0
    np.testing.assert_array_equal(scaled.test.y, raw.test.y)


def test_benchmark_split_leaves_a_constant_training_column_unscaled():
    X, y = _data(n=60, n_anomalies=6)
    X[:, 1] = 2.0
    task = make_task("const", X, y, drop_constant=False)

    split = benchmark_split(task, seed=0)

    np.testing.assert_array_equal(split.train.X[:, 1], 0.0)
    np.testing.assert_array_equal(split.test.X[:, 1], 0.0)


@pytest.mark.parametrize("test_size", [0.0, 1.0, 1.5])
def test_benchmark_split_rejects_a_bad_test_size(task, test_size):
    with pytest.raises(ValueError, match=r"test_size must be in \(0, 1\)"):
        benchmark_split(task, test_size=test_size)


def test_benchmark_split_needs_a_training_task():
    with pytest.raises(ValueError, match=r"has no anomalies"):
        benchmark_split(make_task("normal-only", *_data(n_anomalies=0)))
