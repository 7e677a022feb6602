"""Planted-anomaly source tasks: ADBench's four anomaly types in the real normal rows of a dataset.

A source dataset's anomalies are one draw of what can go wrong in it.  Planting anomalies of
known types into its *normal* rows gives many more realistic training tasks from the same
data: the normal rows stay real (their marginals, correlations, discrete columns), only the
anomalies are generated.  The types follow ADBench (Han et al., NeurIPS 2022, section 3.3,
"realistic synthetic datasets"), which fits a Gaussian mixture (GMM, components chosen by BIC; here 1 to 3, fitted on at most 1000 rows)
to the normal rows and draws

- **local** anomalies from the same mixture with every covariance scaled by ``alpha``
  (ADBench: 5);
- **global** anomalies uniformly from the normal rows' bounding box enlarged by ``alpha``
  (ADBench: 1.1);
- **dependency** anomalies with the dependence between columns broken (ADBench: a vine copula
  for the normal rows, independent marginals for the anomalies).  Here, more simply: an
  anomaly starts as a real normal row and a share of its columns is replaced, each column
  by that column's value in another random normal row, so every single value is normal and
  only the joint structure is wrong;
- **clustered** anomalies from one mixture component with its mean moved away (ADBench scales
  the means by 5): a tight group where no normal rows lie.

One ``strength`` ``s`` > 0 sets the size of every type's departure; ``s = 1`` is ADBench's
setting:

==============  ===============================================================
local           covariance scale ``1 + 4 s``
global          each side of the bounding box moved out by ``0.55 s`` of its range
dependency      share ``min(1, s)`` of the columns resampled (at least one)
clustered       component mean moved by ``4 s`` standard deviations of the data
==============  ===============================================================

Generated values of discrete columns (few distinct normal values) are snapped to the nearest
value the normal rows take, so an anomaly is not given away by a fractional count.  The
parent's own anomalies are left out.  Every task records its ``parent``; dataset-level
splits keep it with that dataset (:class:`~anomaly_gym.meta.sampler.TaskSampler`,
:func:`~anomaly_gym.meta.training.load_sources`).

Source spec (the training config's ``sources``)::

    planted:PATH?types=local+global&rates=0.02+0.05&strengths=0.5+1&per_dataset=8&max_rows=500&max_columns=64&seed=0

``PATH`` is any other source (a folder of ADBench .npz files, ``builtin``, a file).  List
items are joined by ``+`` (or by commas, in a TOML file; on the command line commas
separate sources).
"""

from __future__ import annotations

import itertools
import warnings
import zlib
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

import numpy as np
from anomaly_gym.envs.tasks import Task, make_task

PLANTED_TYPES = ("local", "global", "dependency", "clustered")

#: Columns with at most this many distinct normal values are discrete: generated values snap to them.
DISCRETE_MAX_VALUES = 20

#: Normal rows the mixture is fitted on (a seeded subsample of larger parents).
GMM_FIT_ROWS = 1000

#: Widest data a full-covariance mixture is fitted to; wider data get diagonal covariances.
FULL_COVARIANCE_MAX_COLUMNS = 32


@dataclass(frozen=True)
class PlantSettings:
    """Which planted tasks to make from each parent dataset."""

    types: tuple[str, ...] = PLANTED_TYPES
    """Anomaly types, from ``local``, ``global``, ``dependency``, ``clustered``."""
    rates: tuple[float, ...] = (0.05,)
    """Shares of anomalies among a task's rows, each in (0, 0.5)."""
    strengths: tuple[float, ...] = (0.5, 1.0)
    """Departures from the normal rows (1 = ADBench's setting; see the module docstring)."""
    per_dataset: int | None = None
    """Tasks per parent, drawn from the grid types x rates x strengths in a seeded order
    (cycling with fresh seeds past its size); ``None``: the whole grid once."""
    max_rows: int = 500
    """Most normal rows per task (a seeded subsample of the parent's normal rows)."""
    max_columns: int = 64
    """Wider parents keep a seeded random subset of this many columns (one per parent): the
    detector bank's cost grows with the width, and a subset of a table is still real data."""
    seed: int = 0
    """Seed of the row subsamples, the grid order and the generated anomalies."""

    def __post_init__(self) -> None:
        bad = sorted(set(self.types) - set(PLANTED_TYPES))
        if bad or not self.types:
            raise ValueError(f"planted types must be among {PLANTED_TYPES}, got {list(self.types)}")
        for rate in self.rates:
            if not 0.0 < rate < 0.5:
                raise ValueError(f"planted rates must be in (0, 0.5), got {rate}")
        for strength in self.strengths:
            if not strength > 0:
                raise ValueError(f"planted strengths must be positive, got {strength}")
        if not self.rates or not self.strengths:
            raise ValueError("planted tasks need at least one rate and one strength")
        if self.per_dataset is not None and self.per_dataset < 1:
            raise ValueError(f"per_dataset must be a positive integer, got {self.per_dataset}")
        if self.max_rows < 20:
            raise ValueError(f"max_rows must be at least 20, got {self.max_rows}")
        if self.max_columns < 1:
            raise ValueError(f"max_columns must be a positive integer, got {self.max_columns}")

    def grid(self) -> list[tuple[str, float, float]]:
        return list(itertools.product(self.types, self.rates, self.strengths))


# --------------------------------------------------------------------------- the normal model


@dataclass
class NormalModel:
    """What planting needs to know of a parent's normal rows (fitted once per parent)."""

    X: np.ndarray
    """The parent's normal rows (float64)."""
    gmm: object
    """A ``sklearn.mixture.GaussianMixture`` fitted to the standardized normal rows."""
    center: np.ndarray
    scale: np.ndarray
    discrete: list[np.ndarray | None]
    """Per column: its sorted distinct normal values when discrete, else ``None``."""


def fit_normal_model(X_normal: np.ndarray, *, max_components: int = 3, seed: int = 0) -> NormalModel:
    """Fit ADBench's GMM (components by BIC, 1..``max_components``) to standardized normal rows."""
    from sklearn.mixture import GaussianMixture

    X = np.asarray(X_normal, dtype=np.float64)
    rng = np.random.default_rng(seed)
    fit_rows = X if len(X) <= GMM_FIT_ROWS else X[rng.choice(len(X), GMM_FIT_ROWS, replace=False)]
    center, scale = fit_rows.mean(axis=0), fit_rows.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    Z = (fit_rows - center) / scale
    kind = "full" if X.shape[1] <= FULL_COVARIANCE_MAX_COLUMNS else "diag"
    best, best_bic = None, np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings on small or discrete data
        for k in range(1, max(1, min(max_components, len(Z) // 20)) + 1):
            gmm = GaussianMixture(k, covariance_type=kind, reg_covar=1e-3, max_iter=50, tol=1e-2, init_params="k-means++", random_state=seed).fit(Z)
            bic = gmm.bic(Z)
            if bic < best_bic:
                best, best_bic = gmm, bic
    discrete = []
    for j in range(X.shape[1]):
        values = np.unique(fit_rows[:, j])
        discrete.append(values if len(values) <= DISCRETE_MAX_VALUES else None)
    return NormalModel(X, best, center, scale, discrete)


def _component_cov(gmm, k: int) -> np.ndarray:
    cov = gmm.covariances_[k]
    return cov if cov.ndim == 2 else np.diag(cov)


def _sample_mixture(gmm, n: int, rng: np.random.Generator, *, cov_scale: float = 1.0) -> np.ndarray:
    comp = rng.choice(len(gmm.weights_), size=n, p=gmm.weights_ / gmm.weights_.sum())
    out = np.empty((n, gmm.means_.shape[1]))
    for k in np.unique(comp):
        idx = comp == k
        out[idx] = _gaussian(gmm, k, int(idx.sum()), rng, gmm.means_[k], cov_scale)
    return out


def _gaussian(gmm, k: int, n: int, rng: np.random.Generator, mean: np.ndarray, cov_scale: float) -> np.ndarray:
    if gmm.covariance_type == "diag":
        return mean + rng.normal(size=(n, len(mean))) * np.sqrt(gmm.covariances_[k] * cov_scale)
    return rng.multivariate_normal(mean, _component_cov(gmm, k) * cov_scale, size=n, method="cholesky")


def generate_anomalies(model: NormalModel, anomaly_type: str, n: int, strength: float, rng: np.random.Generator) -> np.ndarray:
    """``n`` anomalies of ``anomaly_type`` at ``strength`` for the normal rows ``model`` describes."""
    if anomaly_type not in PLANTED_TYPES:
        raise ValueError(f"anomaly_type must be one of {PLANTED_TYPES}, got {anomaly_type!r}")
    if not strength > 0:
        raise ValueError(f"strength must be positive, got {strength}")
    gmm, d = model.gmm, model.X.shape[1]
    if anomaly_type == "dependency":
        return _break_dependence(model.X, n, min(1.0, strength), rng)
    if anomaly_type == "local":
        Z = _sample_mixture(gmm, n, rng, cov_scale=1.0 + 4.0 * strength)
    elif anomaly_type == "global":
        Zn = (model.X - model.center) / model.scale
        lo, hi = Zn.min(axis=0), Zn.max(axis=0)
        pad = 0.55 * strength * (hi - lo)
        Z = rng.uniform(lo - pad, hi + pad, size=(n, d))
    else:  # clustered: one component, its mean moved 4 s standard deviations (of the standardized data)
        k = int(rng.choice(len(gmm.weights_), p=gmm.weights_ / gmm.weights_.sum()))
        direction = rng.normal(size=d)
        direction *= np.sqrt(d) / np.linalg.norm(direction)
        Z = _gaussian(gmm, k, n, rng, gmm.means_[k] + 4.0 * strength * direction, 1.0)
    return _snap_discrete(Z * model.scale + model.center, model.discrete)


def _break_dependence(X: np.ndarray, n: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Real normal rows with a share of their columns each taken from another random normal row."""
    m, d = X.shape
    out = X[rng.integers(m, size=n)].copy()
    k = max(1, int(round(share * d)))
    for i in range(n):
        cols = rng.choice(d, size=k, replace=False)
        out[i, cols] = X[rng.integers(m, size=k), cols]
    return out


def _snap_discrete(X: np.ndarray, discrete: Sequence[np.ndarray | None]) -> np.ndarray:
    for j, values in enumerate(discrete):
        if values is not None:
            pos = np.clip(np.searchsorted(values, X[:, j]), 1, len(values) - 1) if len(values) > 1 else None
            if pos is None:
                X[:, j] = values[0]
                continue
            left, right = values[pos - 1], values[pos]
            X[:, j] = np.where(np.abs(X[:, j] - left) <= np.abs(right - X[:, j]), left, right)
    return X


# --------------------------------------------------------------------------- tasks


def plant(
    parent: Task,
    anomaly_type: str,
    *,
    rate: float = 0.05,
    strength: float = 1.0,
    seed: int = 0,
    max_rows: int = 500,
    model: NormalModel | None = None,
    name: str | None = None,
) -> Task:
    """A task of up to ``max_rows`` of ``parent``'s normal rows and planted anomalies at ``rate``.

    Args:
        parent: A labelled task; its normal rows (label 0) are kept, its anomalies left out.
        anomaly_type: ``local``, ``global``, ``dependency`` or ``clustered``.
        rate: Share of planted anomalies among the task's rows, in (0, 0.5).
        strength: Size of the departure (1 = ADBench's setting).
        seed: Seed of the row subsample and of the anomalies.
        max_rows: Most normal rows (a seeded subsample).
        model: The parent's :class:`NormalModel` when already fitted (it is reused across tasks).
        name: Task name (default ``{parent}/planted-{type}-s{strength}-r{rate}-{seed}``).

    Raises:
        ValueError: an unlabelled parent, fewer than 20 normal rows, or a bad type, rate or strength.
    """
    if parent.y is None:
        raise ValueError(f"task {parent.name!r} has no labels: planting needs to know its normal rows")
    if not 0.0 < rate < 0.5:
        raise ValueError(f"rate must be in (0, 0.5), got {rate}")
    normal = np.flatnonzero(parent.y == 0)
    if len(normal) < 20:
        raise ValueError(f"task {parent.name!r} has {len(normal)} normal rows; planting needs at least 20")
    rng = np.random.default_rng(seed)
    model = model or fit_normal_model(parent.X[normal], seed=seed)
    rows = normal if len(normal) <= max_rows else np.sort(rng.choice(normal, max_rows, replace=False))
    n_anom = max(2, int(round(rate * len(rows) / (1.0 - rate))))
    anomalies = generate_anomalies(model, anomaly_type, n_anom, strength, rng)
    X = np.vstack([parent.X[rows].astype(np.float64), anomalies])
    y = np.r_[np.zeros(len(rows), dtype=np.int8), np.ones(n_anom, dtype=np.int8)]
    order = rng.permutation(len(y))
    name = name or f"{parent.name}/planted-{anomaly_type}-s{strength:g}-r{rate:g}-{seed}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # constant columns of a subsample are dropped by design
        task = make_task(
            name,
            X[order],
            y[order],
            source="planted",
            description=f"{anomaly_type} anomalies (strength {strength:g}) planted at {rate:.1%} into {len(rows)} normal rows of {parent.name}",
        )
    return Task(task.name, task.X, task.y, task.source, task.description, parent=parent.parent or parent.name, family=parent.family)


def planted_tasks(parents: Iterable[Task], settings: PlantSettings | None = None) -> list[Task]:
    """Planted tasks of every labelled parent with at least 20 normal rows (others are skipped with a warning)."""
    settings = settings or PlantSettings()
    grid = settings.grid()
    per = settings.per_dataset or len(grid)
    out: list[Task] = []
    for parent in parents:
        if parent.y is None or int((parent.y == 0).sum()) < 20:
            warnings.warn(f"no planted tasks from {parent.name!r}: it needs labels and at least 20 normal rows", UserWarning, stacklevel=2)
            continue
        salt = zlib.crc32(parent.name.encode())
        rng = np.random.default_rng([settings.seed, salt])
        if parent.n_features > settings.max_columns:
            cols = np.sort(rng.choice(parent.n_features, settings.max_columns, replace=False))
            parent = Task(
                parent.name,
                parent.X[:, cols],
                parent.y,
                parent.source,
                f"{settings.max_columns} of the {parent.n_features} columns of {parent.name}",
                parent.parent,
                parent.family,
            )
        normal = parent.X[parent.y == 0]
        model = fit_normal_model(normal, seed=int(rng.integers(2**31)))
        order = rng.permutation(len(grid))
        for k in range(per):
            kind, rate, strength = grid[int(order[k % len(grid)])]
            seed = int(np.random.default_rng([settings.seed, salt, k]).integers(2**31))
            out.append(
                plant(
                    parent,
                    kind,
                    rate=rate,
                    strength=strength,
                    seed=seed,
                    max_rows=settings.max_rows,
                    model=model,
                    name=f"{parent.name}/planted-{kind}-s{strength:g}-r{rate:g}-{k}",
                )
            )
    return out


# --------------------------------------------------------------------------- the source spec

PREFIX = "planted:"


def parse_planted_spec(spec: str) -> tuple[str, PlantSettings]:
    """``planted:PATH?key=value&...`` -> (PATH, settings).  Keys: the fields of :class:`PlantSettings`;
    list items are joined by ``+`` or ``,``.

    Raises:
        ValueError: no ``planted:`` prefix, no PATH, an unknown key or a bad value.
    """
    if not spec.startswith(PREFIX):
        raise ValueError(f"a planted source starts with {PREFIX!r}, got {spec!r}")
    path, _, query = spec[len(PREFIX) :].partition("?")
    if not path:
        raise ValueError(f"{spec!r}: name the parent source after 'planted:', e.g. planted:../shared/data/adbench")
    known = {f.name for f in fields(PlantSettings)}
    values: dict = {}
    for part in filter(None, query.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in known:
            raise ValueError(f"{spec!r}: unknown or empty option {part!r}; options are {sorted(known)} (key=value, joined by &)")
        items = [v.strip() for v in value.replace("+", ",").split(",") if v.strip()]
        try:
            if key == "types":
                values[key] = tuple(items)
            elif key in ("rates", "strengths"):
                values[key] = tuple(float(v) for v in items)
            else:
                values[key] = int(value)
        except ValueError:
            raise ValueError(f"{spec!r}: {key}={value!r} is not a {'number' if key != 'types' else 'type'} list") from None
    try:
        return path, PlantSettings(**values)
    except ValueError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None


def load_planted(spec: str, **task_kwargs) -> list[Task]:
    """The planted tasks of a ``planted:PATH?...`` source spec (:func:`parse_planted_spec`)."""
    from anomaly_gym.envs.sources import load_tasks

    path, settings = parse_planted_spec(spec)
    parents = [t for t in load_tasks(path, **task_kwargs) if t.labelled]
    if not parents:
        raise ValueError(f"{spec!r}: the source {path!r} holds no labelled task to plant anomalies into")
    return planted_tasks(parents, settings)
