"""Anomaly-detection tasks: the typed task record, validation, and the benchmark split.

A :class:`Task` is one dataset: rows ``X`` (float32, n x d), labels ``y`` (1 = anomaly,
0 = normal, or ``None`` for an unlabelled target), where it came from, and a stable
content hash that keys every on-disk cache.  Tasks are frozen: every transformation
(subsampling, splitting, scaling) returns a new one.

Tasks are built through :func:`make_task`, which checks the data before any detector
sees it and fails with a message that says what is wrong and how to fix it.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

#: Fewest rows a task may have: the detector bank's neighbour-based detectors need
#: several neighbours per row, and percentile features need a distribution to rank in.
MIN_ROWS = 20

NanPolicy = Literal["error", "median"]


#: Column names (compared case-insensitively) that hold labels, never features, unless a user names them.
LABEL_LIKE_NAMES = frozenset({"label", "labels", "y", "class", "is_anomaly", "anomaly", "target", "outlier", "ground_truth"})


@dataclass(frozen=True, eq=False)
class Task:
    """One anomaly-detection dataset.

    Attributes:
        name: Short unique name, e.g. ``"adbench/cardio"`` or ``"synthetic/local-03"``.
        X: Feature matrix, float32, shape (n, d), finite.
        y: Labels, int8, shape (n,), 1 = anomaly and 0 = normal; ``None`` when unlabelled.
        source: Where the task came from (``"sklearn"``, ``"synthetic"``, ``"adbench"``, ``"csv"``).
        description: How the task was made (for example which class plays the anomaly).
        parent: The name of the dataset a derived task was made from (planted anomalies in
            its normal rows, :mod:`anomaly_gym.envs.planted`), ``None`` for an original one.
            Dataset-level splits keep a derived task with its parent.
        family: The multi-class dataset a one-vs-rest task was cut from (``sklearn/digits``
            for ``sklearn/digits-4``), ``None`` for a task of its own.  Sibling tasks share
            rows, so dataset-level splits keep a family together.
        hash: Hex digest of ``X`` and ``y``: equal data, equal hash, across processes.
    """

    name: str
    X: np.ndarray
    y: np.ndarray | None
    source: str = "unknown"
    description: str = ""
    parent: str | None = None
    family: str | None = None
    hash: str = field(init=False)

    def __post_init__(self) -> None:
        X = np.ascontiguousarray(self.X, dtype=np.float32)
        X.setflags(write=False)
        object.__setattr__(self, "X", X)
        if self.y is not None:
            y = np.ascontiguousarray(self.y, dtype=np.int8)
            y.setflags(write=False)
            object.__setattr__(self, "y", y)
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(str(X.shape).encode())
        digest.update(X.tobytes())
        if self.y is not None:
            digest.update(self.y.tobytes())
        object.__setattr__(self, "hash", digest.hexdigest()[:16])

    @property
    def n_rows(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def labelled(self) -> bool:
        return self.y is not None

    @property
    def n_anomalies(self) -> int:
        return int(self.y.sum()) if self.y is not None else 0

    @property
    def anomaly_rate(self) -> float:
        """Fraction of anomalies, ``nan`` when the task is unlabelled."""
        return float(self.y.mean()) if self.y is not None else float("nan")

    def subset(self, index: np.ndarray, name: str | None = None) -> Task:
        """A new task holding the rows ``index`` (in that order)."""
        index = np.asarray(index)
        return Task(
            name=name or self.name,
            X=self.X[index],
            y=None if self.y is None else self.y[index],
            source=self.source,
            description=self.description,
            parent=self.parent,
            family=self.family,
        )

    @property
    def dataset(self) -> str:
        """The original dataset: ``family`` for a one-vs-rest task, ``parent`` for a derived task, else ``name``."""
        return self.family or self.parent or self.name

    def without_labels(self) -> Task:
        """The same rows with the labels removed (what a detector may see of a target)."""
        return Task(self.name, self.X, None, self.source, self.description, self.parent, self.family)

    def __repr__(self) -> str:
        rate = f"{self.anomaly_rate:.2%}" if self.labelled else "unlabelled"
        return f"Task({self.name!r}, rows={self.n_rows}, cols={self.n_features}, anomalies={rate}, source={self.source!r})"


def make_task(
    name: str,
    X,
    y=None,
    *,
    source: str = "unknown",
    description: str = "",
    nan_policy: NanPolicy = "error",
    drop_constant: bool = True,
    min_rows: int = MIN_ROWS,
    family: str | None = None,
) -> Task:
    """Validate raw data and build a :class:`Task`.

    Args:
        name: Name of the task, used in messages and listings.
        X: Array-like of shape (n, d) with numeric values (a pandas DataFrame is accepted).
        y: Optional labels of length n with values in {0, 1} (booleans accepted).
        source: Where the data came from.
        description: How the task was made.
        nan_policy: ``"error"`` (default) rejects NaN or infinite values; ``"median"``
            replaces them with the column's median over the finite values.
        drop_constant: Drop columns with a single value (with a warning): they carry no
            information and break per-column scaling.
        min_rows: Fewest rows accepted.
        family: The multi-class dataset a one-vs-rest task was cut from (:attr:`Task.family`).

    Raises:
        ValueError: the data cannot be used as it is; the message says why and how to fix it.
        TypeError: ``X`` holds non-numeric values.
    """
    if nan_policy not in ("error", "median"):
        raise ValueError(f"nan_policy must be 'error' or 'median', got {nan_policy!r}")
    X = _as_numeric_matrix(name, X)
    n, d = X.shape
    if n < min_rows:
        raise ValueError(
            f"task {name!r} has {n} rows; at least {min_rows} are needed for the detector bank "
            "(neighbour-based detectors and percentile features need a distribution). "
            "Provide more rows."
        )
    if d == 0:
        raise ValueError(f"task {name!r} has no feature columns; provide at least one numeric column.")

    bad = ~np.isfinite(X)
    if bad.any():
        rows, cols = np.nonzero(bad)
        where = f"{int(bad.sum())} value(s), first at row {int(rows[0])}, column {int(cols[0])}"
        if nan_policy == "error":
            raise ValueError(
                f"task {name!r} has NaN or infinite values ({where}). Clean the data, or pass "
                "nan_policy='median' (CLI: --impute median; training config: nan_policy = \"median\") "
                "to replace them with column medians."
            )
        X = X.copy()
        for j in np.unique(cols):
            finite = X[np.isfinite(X[:, j]), j]
            if finite.size == 0:
                raise ValueError(f"task {name!r}: column {int(j)} has no finite value to impute from; drop that column.")
            X[~np.isfinite(X[:, j]), j] = np.median(finite)

    if y is not None:
        y = _as_labels(name, y, n)

    if drop_constant:
        constant = np.ptp(X, axis=0) == 0
        if constant.all():
            raise ValueError(f"task {name!r}: every column is constant; there is nothing to detect.")
        if constant.any():
            warnings.warn(
                f"task {name!r}: dropping {int(constant.sum())} constant column(s) {np.flatnonzero(constant).tolist()[:10]}",
                UserWarning,
                stacklevel=2,
            )
            X = X[:, ~constant]

    return Task(name=name, X=X, y=y, source=source, description=description, family=family)


def check_training_task(task: Task) -> None:
    """Raise ``ValueError`` unless ``task`` can teach a policy: labelled, with both classes."""
    if task.y is None:
        raise ValueError(
            f"task {task.name!r} has no labels; training and validation tasks need labels "
            "(load it with its label column, or use it as an unlabelled adaptation target)."
        )
    n_anomalies = task.n_anomalies
    if n_anomalies == 0:
        raise ValueError(
            f"task {task.name!r} has no anomalies (no label equals 1); a training task needs "
            "both classes. Check the label column, or leave this task out of the sources."
        )
    if n_anomalies == task.n_rows:
        raise ValueError(
            f"task {task.name!r} has only anomalies (every label equals 1); a training task "
            "needs normal rows too. Check the label column's encoding (1 = anomaly)."
        )


class NonNumericDataError(TypeError, ValueError):
    """A task's data holds values that are not numbers: a ``TypeError`` for library callers,
    and a ``ValueError`` (bad input, exit code 2) for the command line."""


def _as_numeric_matrix(name: str, X) -> np.ndarray:
    if hasattr(X, "dtypes") and hasattr(X, "columns"):  # pandas DataFrame
        non_numeric = [str(c) for c, t in zip(X.columns, X.dtypes) if not _is_numeric_dtype(t)]
        if non_numeric:
            raise NonNumericDataError(
                f"task {name!r}: non-numeric column(s) {non_numeric[:10]}; encode them as numbers or leave them out of the feature columns."
            )
        X = X.to_numpy(dtype=np.float64, na_value=np.nan)
    arr = np.asarray(X)
    if arr.dtype == object or arr.dtype.kind in "USVM":
        try:
            arr = arr.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise NonNumericDataError(f"task {name!r}: X holds non-numeric values ({exc}); encode them as numbers or leave those columns out.") from None
    if arr.dtype.kind not in "biuf":
        raise NonNumericDataError(f"task {name!r}: X must be numeric, got dtype {arr.dtype}.")
    if arr.ndim == 1:
        raise ValueError(
            f"task {name!r}: X is 1-D with shape {arr.shape}; pass a 2-D array of shape (rows, columns), e.g. X.reshape(-1, 1) for a single feature."
        )
    if arr.ndim != 2:
        raise ValueError(f"task {name!r}: X must be 2-D (rows, columns), got shape {arr.shape}.")
    return arr.astype(np.float32, copy=False)


def _is_numeric_dtype(dtype) -> bool:
    import pandas.api.types as ptypes

    return ptypes.is_numeric_dtype(dtype) and not ptypes.is_datetime64_any_dtype(dtype)


def _as_labels(name: str, y, n: int) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        y = y.reshape(-1) if y.size == n else y
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"task {name!r}: X has {n} rows but y has shape {np.shape(y)}; give one label per row.")
    if y.dtype == bool:
        return y.astype(np.int8)
    if y.dtype.kind not in "biuf":
        raise ValueError(f"task {name!r}: labels must be 0 (normal) or 1 (anomaly), got values of type {y.dtype}. Map them to 0/1 first.")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise ValueError(f"task {name!r}: labels contain NaN; every labelled row needs 0 or 1.")
    values = np.unique(y)
    outside = values[~np.isin(values, [0, 1])]
    if outside.size:
        raise ValueError(f"task {name!r}: labels must be 0 (normal) or 1 (anomaly), found {outside[:5].tolist()}. Map your classes to 0/1 (1 = anomaly).")
    return y.astype(np.int8)


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Split:
    """A task split by the benchmark protocol; both parts scaled with the training part's min-max."""

    train: Task
    test: Task
    seed: int


def subsample(task: Task, max_rows: int, seed: int) -> Task:
    """Seeded subsample to at most ``max_rows`` rows, stratified by label when labelled."""
    if task.n_rows <= max_rows:
        return task
    rng = np.random.default_rng(seed)
    if task.y is None:
        index = np.sort(rng.choice(task.n_rows, size=max_rows, replace=False))
    else:
        index = _stratified_choice(task.y, max_rows, rng)
    return task.subset(index)


def benchmark_split(
    task: Task,
    seed: int = 0,
    *,
    test_size: float = 0.3,
    max_rows: int | None = 10_000,
    scale: bool = True,
) -> Split:
    """The ADBench protocol's split, the same for every method.

    1. tasks above ``max_rows`` rows are subsampled (stratified, seeded) to ``max_rows``;
    2. a stratified ``1 - test_size`` / ``test_size`` split, seeded;
    3. min-max scaling fitted on the training part only, applied to both parts.
    """
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    check_training_task(task)
    if max_rows is not None:
        task = subsample(task, max_rows, seed)
    rng = np.random.default_rng(seed + 1)
    test_index = _stratified_choice(task.y, int(round(task.n_rows * test_size)), rng)
    mask = np.zeros(task.n_rows, dtype=bool)
    mask[test_index] = True
    train, test = task.subset(np.flatnonzero(~mask)), task.subset(np.flatnonzero(mask))
    if scale:
        lo = train.X.min(axis=0)
        span = train.X.max(axis=0) - lo
        span[span == 0] = 1.0
        train = Task(train.name, (train.X - lo) / span, train.y, train.source, train.description)
        test = Task(test.name, (test.X - lo) / span, test.y, test.source, test.description)
    return Split(train=train, test=test, seed=seed)


def _stratified_choice(y: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``size`` rows keeping the class proportions (at least one of each class)."""
    classes = [np.flatnonzero(y == c) for c in (0, 1)]
    n = len(y)
    counts = [int(round(size * len(idx) / n)) for idx in classes]
    for c, idx in enumerate(classes):
        if len(idx) > 0:
            counts[c] = min(max(counts[c], 1), len(idx))
    picked = [rng.choice(idx, size=k, replace=False) for idx, k in zip(classes, counts) if k > 0]
    return np.sort(np.concatenate(picked))
