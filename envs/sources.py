"""Where tasks come from: the built-in suite, ADBench-format directories, CSV files.

The built-in suite needs no download: it is made from datasets scikit-learn ships and a
seeded synthetic generator with ADBench's four anomaly types (Han et al., NeurIPS 2022,
section 3.3): *local* (anomalies from the normal mixture with inflated covariance),
*global* (uniform over an enlarged bounding box), *dependency* (each feature drawn
independently from its normal marginal, breaking the correlations), and *clustered*
(a shifted copy of one normal component).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Iterable

import numpy as np
from anomaly_gym.envs.tasks import Task, check_training_task, make_task

SYNTHETIC_TYPES = ("local", "global", "dependency", "clustered")


# --------------------------------------------------------------------------- synthetic


def make_synthetic_task(
    anomaly_type: str,
    *,
    n_rows: int = 2000,
    n_features: int = 8,
    contamination: float = 0.05,
    n_clusters: int = 3,
    seed: int = 0,
    name: str | None = None,
) -> Task:
    """A seeded synthetic task with one of ADBench's anomaly types.

    Normal rows come from a Gaussian mixture with ``n_clusters`` random components (random
    means and random correlated covariances).  Anomalies, ``round(contamination * n_rows)``
    of them, follow ``anomaly_type``:

    - ``"local"``: the same mixture with every covariance scaled by 5 (alpha in ADBench);
    - ``"global"``: uniform over the normal data's bounding box enlarged by 10 % per side;
    - ``"dependency"``: each column drawn independently from the normal rows' marginal, so
      every single column looks normal but the joint structure is broken;
    - ``"clustered"``: one normal component with its mean shifted by 5 (alpha), a tight cluster.
    """
    if anomaly_type not in SYNTHETIC_TYPES:
        raise ValueError(f"anomaly_type must be one of {SYNTHETIC_TYPES}, got {anomaly_type!r}")
    if not 0.0 < contamination < 0.5:
        raise ValueError(f"contamination must be in (0, 0.5), got {contamination}")
    rng = np.random.default_rng(seed)
    n_anom = max(1, int(round(contamination * n_rows)))
    n_norm = n_rows - n_anom

    means = rng.uniform(-5.0, 5.0, size=(n_clusters, n_features))
    covs = []
    for _ in range(n_clusters):
        A = rng.normal(size=(n_features, n_features)) / np.sqrt(n_features)
        covs.append(A @ A.T + 0.1 * np.eye(n_features))
    weights = rng.dirichlet(np.full(n_clusters, 5.0))

    def mixture(n: int, cov_scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
        comp = rng.choice(n_clusters, size=n, p=weights)
        out = np.empty((n, n_features))
        for k in range(n_clusters):
            idx = comp == k
            out[idx] = rng.multivariate_normal(means[k] + shift, covs[k] * cov_scale, size=int(idx.sum()))
        return out

    X_norm = mixture(n_norm)
    if anomaly_type == "local":
        X_anom = mixture(n_anom, cov_scale=5.0)
    elif anomaly_type == "global":
        lo, hi = X_norm.min(axis=0), X_norm.max(axis=0)
        pad = 0.1 * (hi - lo)
        X_anom = rng.uniform(lo - pad, hi + pad, size=(n_anom, n_features))
    elif anomaly_type == "dependency":
        X_anom = np.column_stack([rng.choice(X_norm[:, j], size=n_anom) for j in range(n_features)])
        X_anom += rng.normal(scale=0.05 * X_norm.std(axis=0), size=X_anom.shape)
    else:  # clustered
        k = rng.integers(n_clusters)
        direction = rng.normal(size=n_features)
        direction /= np.linalg.norm(direction)
        X_anom = rng.multivariate_normal(means[k] + 5.0 * direction * np.sqrt(n_features), covs[k] * 0.25, size=n_anom)

    X = np.vstack([X_norm, X_anom])
    y = np.r_[np.zeros(n_norm), np.ones(n_anom)]
    order = rng.permutation(n_rows)
    name = name or f"synthetic/{anomaly_type}-n{n_rows}-d{n_features}-c{contamination:g}-s{seed}"
    return make_task(
        name,
        X[order],
        y[order],
        source="synthetic",
        description=f"{n_clusters}-component Gaussian mixture, {anomaly_type} anomalies at {contamination:.1%}",
    )


#: Varied sizes, widths and contamination rates for the synthetic part of the suite.
_SYNTHETIC_GRID = [
    # (n_rows, n_features, contamination, n_clusters)
    (500, 4, 0.05, 2),
    (1000, 6, 0.02, 3),
    (1500, 10, 0.08, 2),
    (2000, 16, 0.03, 4),
    (800, 24, 0.10, 3),
    (3000, 8, 0.01, 5),
    (1200, 32, 0.05, 2),
    (2500, 12, 0.04, 3),
]


# --------------------------------------------------------------------------- sklearn


def _rare_class_task(name: str, X: np.ndarray, classes: np.ndarray, anomaly_classes, rate: float, seed: int, what: str, family: str | None = None) -> Task:
    """Normal = every class except ``anomaly_classes``; those are down-sampled to ``rate``.

    ``family``: the dataset the classes come from when each class makes a task of its own
    (one-vs-rest): the tasks share rows, so they are one dataset for every split (``family``).
    """
    rng = np.random.default_rng(seed)
    is_anom = np.isin(classes, anomaly_classes)
    normal = np.flatnonzero(~is_anom)
    n_anom = max(2, int(round(rate * len(normal) / (1.0 - rate))))
    anomalous = rng.choice(np.flatnonzero(is_anom), size=min(n_anom, int(is_anom.sum())), replace=False)
    index = np.sort(np.r_[normal, anomalous])
    return make_task(
        name,
        X[index],
        is_anom[index].astype(np.int8),
        source="sklearn",
        description=f"{what}; anomaly = {anomaly_classes!r} down-sampled to {rate:.0%}",
        family=family,
    )


def _sklearn_tasks(seed: int = 0) -> list[Task]:
    from sklearn import datasets

    tasks = []
    bc = datasets.load_breast_cancer()
    # target 0 = malignant: the rare class in screening.
    tasks.append(_rare_class_task("sklearn/breast_cancer", bc.data, bc.target, [0], 0.05, seed, "breast cancer (malignant)"))
    wine = datasets.load_wine()
    for c in range(3):
        tasks.append(_rare_class_task(f"sklearn/wine-{c}", wine.data, wine.target, [c], 0.08, seed + c, f"wine cultivar {c}", "sklearn/wine"))
    iris = datasets.load_iris()
    for c in range(3):
        tasks.append(_rare_class_task(f"sklearn/iris-{c}", iris.data, iris.target, [c], 0.08, seed + c, f"iris species {c}", "sklearn/iris"))
    digits = datasets.load_digits()
    for c in range(10):
        tasks.append(_rare_class_task(f"sklearn/digits-{c}", digits.data, digits.target, [c], 0.03, seed + c, f"handwritten digit {c}", "sklearn/digits"))
    return tasks


@functools.lru_cache(maxsize=4)
def _builtin_suite_cached(seed: int) -> tuple[Task, ...]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # digits has constant pixel columns; they are dropped by design
        tasks = _sklearn_tasks(seed)
    for i, (n, d, c, k) in enumerate(_SYNTHETIC_GRID):
        for j, kind in enumerate(SYNTHETIC_TYPES):
            tasks.append(
                make_synthetic_task(
                    kind,
                    n_rows=n,
                    n_features=d,
                    contamination=c,
                    n_clusters=k,
                    seed=seed * 1000 + 10 * i + j,
                    name=f"synthetic/{kind}-{i:02d}",
                )
            )
    return tuple(tasks)


def builtin_suite(seed: int = 0) -> list[Task]:
    """The built-in suite: 17 tasks from scikit-learn's bundled datasets and 32 synthetic ones.

    scikit-learn tasks (one class plays the anomaly, down-sampled to a few percent):
    ``breast_cancer`` (malignant, 5 %), ``wine-{0,1,2}`` (one cultivar, 8 %),
    ``iris-{0,1,2}`` (one species, 8 %), ``digits-{0..9}`` (one digit, 3 %).  The classes
    of one dataset share its rows, so their tasks are one dataset for every split: their
    ``family`` (and :attr:`Task.dataset`) is ``sklearn/wine``, ``sklearn/iris`` or
    ``sklearn/digits``, and a validation split or a benchmark fold holds them out together.
    Synthetic tasks: the four ADBench anomaly types over eight (rows, columns,
    contamination, clusters) settings, ``synthetic/{type}-{00..07}``.
    """
    return list(_builtin_suite_cached(seed))


# --------------------------------------------------------------------------- files


def load_npz(path: str | Path, **task_kwargs) -> Task:
    """One ADBench-format ``NAME.npz`` file with arrays ``X`` and ``y``.

    When the file's folder has a ``SHA256SUMS`` that lists it (written by ``anomaly-gym
    datasets fetch``), the file is checked against it first.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file differs from its recorded checksum, or holds no ``X``.
    """
    from anomaly_gym.envs.datasets import verify_recorded

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such dataset file: {path}")
    verify_recorded(path)
    with np.load(path, allow_pickle=False) as data:
        if "X" not in data:
            raise ValueError(f"{path}: an ADBench .npz needs an array 'X' (and 'y'); found {list(data.keys())}")
        X = data["X"]
        y = data["y"] if "y" in data else None
    task_kwargs.setdefault("source", "adbench")
    return make_task(path.stem, X, y, **task_kwargs)


def load_adbench_dir(path: str | Path, names: Iterable[str] | None = None, **task_kwargs) -> list[Task]:
    """Every ``NAME.npz`` in ``path`` (or only ``names``), sorted by name."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"no such data directory: {path}. Give a folder of ADBench-format NAME.npz files (e.g. ../shared/data/adbench), or use the built-in suite."
        )
    files = sorted(path.glob("*.npz"), key=lambda p: p.stem.lower())
    if names is not None:
        wanted = {n.lower(): n for n in names}
        files = [f for f in files if f.stem.lower() in wanted]
        missing = set(wanted) - {f.stem.lower() for f in files}
        if missing:
            raise ValueError(f"datasets not found in {path}: {sorted(wanted[m] for m in missing)}")
    if not files:
        raise ValueError(f"{path} holds no .npz files; expected ADBench-format NAME.npz files with X and y.")
    return [load_npz(f, **task_kwargs) for f in files]


def load_csv(
    path: str | Path,
    label_column: str | None = None,
    columns: list[str] | None = None,
    *,
    categorical: list[str] | None = None,
    encode: bool = True,
    **task_kwargs,
) -> Task:
    """A CSV file (``.csv`` or ``.csv.gz``) with a header row; ``label_column`` (if given)
    holds 0/1 labels.

    Feature columns are ``columns`` if given, else every other column.  With ``encode``
    (default), text columns, and the columns named in ``categorical``, are categorical:
    each value becomes its rarity in the file (:class:`~anomaly_gym.envs.encoding.TableEncoder`);
    text columns that look like identifiers or timestamps
    (:func:`~anomaly_gym.envs.csvio.infer_column_types`) are left out with a warning unless
    named in ``columns``; missing numbers are imputed with an indicator when ``nan_policy``
    is ``"median"`` and are an error otherwise.  With ``encode=False`` text feature columns
    are an error that names them.
    """
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such CSV file: {path}")
    try:
        frame = pd.read_csv(path, engine="pyarrow")
    except Exception:  # pyarrow is strict on ragged rows; pandas' parser names the line
        frame = pd.read_csv(path)
    y = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise ValueError(f"{path}: no label column {label_column!r}; the columns are {list(frame.columns)}")
        y = frame.pop(label_column).to_numpy()
    if columns is not None:
        missing = [c for c in [*columns, *(categorical or [])] if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing}; the columns are {list(frame.columns)}")
        frame = frame[list(dict.fromkeys([*columns, *(categorical or [])]))]
    task_kwargs.setdefault("source", "csv")
    name = table_name(path)
    if encode:
        frame, cats = _categorical_columns(frame, name, categorical or [], named=columns is not None)
        if cats or task_kwargs.get("nan_policy") == "median":
            from anomaly_gym.envs.encoding import encode_frame

            on_missing = "impute" if task_kwargs.get("nan_policy") == "median" else "error"
            try:
                X, encoder = encode_frame(frame, cats, on_missing=on_missing, drop_constant=True)
            except ValueError as exc:
                raise ValueError(
                    f"{path}: {exc}; as a task source: nan_policy='median' (training config: nan_policy = \"median\") imputes missing numbers"
                ) from None
            task_kwargs.setdefault("description", f"{len(cats)} categorical column(s) encoded by rarity")
            return make_task(name, X, y, **task_kwargs)
    return make_task(name, frame, y, **task_kwargs)


def table_name(path: Path) -> str:
    """``bank`` for ``bank.csv.gz`` or ``bank.csv``."""
    name = path.name
    for suffix in (".gz", ".csv"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return name


def _categorical_columns(frame, name: str, categorical: list[str], *, named: bool):
    """(frame without identifier- and timestamp-like text columns, the categorical columns)."""
    from anomaly_gym.envs.csvio import infer_column_types
    from anomaly_gym.envs.tasks import _is_numeric_dtype

    text = [c for c, t in zip(frame.columns, frame.dtypes) if not _is_numeric_dtype(t) and c not in categorical]
    if not text:
        return frame, [c for c in frame.columns if c in set(categorical)]
    sample = frame[text].head(SAMPLE_FOR_TYPES).astype(object).where(frame[text].head(SAMPLE_FOR_TYPES).notna(), "")
    types = infer_column_types([str(c) for c in text], sample.astype(str).values.tolist())
    dropped = {t.name: f"{t.kind}: {t.why}" for t in types if t.kind in ("identifier", "timestamp", "empty") and not named}
    if dropped:
        warnings.warn(f"task {name!r}: leaving out text column(s) {dropped}", UserWarning, stacklevel=3)
    frame = frame[[c for c in frame.columns if str(c) not in dropped]]
    return frame, [c for c in frame.columns if c in set(categorical) or c in set(text)]


#: Rows of a CSV file that decide whether a text column is an identifier or a timestamp.
SAMPLE_FOR_TYPES = 1000


def load_tables_dir(path: str | Path, names: Iterable[str] | None = None, label_column: str = "label", **task_kwargs) -> list[Task]:
    """Every ``NAME.csv.gz`` or ``NAME.csv`` table in ``path`` (or only ``names``), with labels in
    ``label_column``, sorted by name, categorical columns encoded (:func:`load_csv`)."""
    path = Path(path)
    files = sorted([*path.glob("*.csv.gz"), *path.glob("*.csv")], key=lambda p: table_name(p).lower())
    if names is not None:
        wanted = {n.lower() for n in names}
        files = [f for f in files if table_name(f).lower() in wanted]
    if not files:
        raise ValueError(f"{path} holds no NAME.csv.gz or NAME.csv tables")
    task_kwargs.setdefault("source", "tables")
    task_kwargs.setdefault("nan_policy", "median")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant columns dropped, identifiers left out: by design
        return [load_csv(f, label_column=label_column, **task_kwargs) for f in files]


def training_pool(tasks: Iterable[Task] | None, owner: str) -> list[Task]:
    """The task pool of an environment: ``tasks`` (default: the built-in suite), each checked.

    Raises:
        ValueError: the pool is empty, or a task lacks labels or one of the classes.
        TypeError: an element is not a :class:`Task`.
    """
    tasks = builtin_suite() if tasks is None else list(tasks)
    if not tasks:
        raise ValueError(f"{owner} needs at least one task")
    for task in tasks:
        if not isinstance(task, Task):
            raise TypeError(f"tasks must be anomaly_gym Task objects, got {type(task).__name__}")
        check_training_task(task)
    return tasks


def load_tasks(spec: str | Path, **task_kwargs) -> list[Task]:
    """Resolve a task source: ``"builtin"``, a directory of .npz files, a directory of
    ``NAME.csv.gz`` tables with a ``label`` column (:func:`load_tables_dir`, e.g.
    ../shared/data/tables), one .npz, one .csv, or ``planted:SOURCE?...``: anomalies planted
    into the normal rows of another source's datasets (:mod:`anomaly_gym.envs.planted`)."""
    if str(spec) == "builtin":
        return builtin_suite()
    if str(spec).startswith("planted:"):
        from anomaly_gym.envs.planted import load_planted

        return load_planted(str(spec), **task_kwargs)
    path = Path(spec)
    if path.is_dir():
        if not any(path.glob("*.npz")) and (any(path.glob("*.csv.gz")) or any(path.glob("*.csv"))):
            return load_tables_dir(path, **task_kwargs)  # NAME.csv.gz tables with a label column
        return load_adbench_dir(path, **task_kwargs)
    if path.suffix == ".npz":
        return [load_npz(path, **task_kwargs)]
    if path.suffix == ".csv" or path.name.endswith(".csv.gz"):
        return [load_csv(path, **task_kwargs)]
    if not path.exists():
        raise FileNotFoundError(
            f"no such data directory: {path}. Give 'builtin', a folder of ADBench-format NAME.npz files "
            "(e.g. ../shared/data/adbench), a .npz file or a .csv file."
        )
    raise ValueError(f"cannot load tasks from {str(spec)!r}: give 'builtin', a directory of NAME.npz files, a .npz file or a .csv file")
