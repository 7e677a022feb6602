"""Transferable features: detector scores made dataset-relative.

A policy trained on one dataset must act on another of a different width and scale, so
it never sees raw columns.  The :class:`Featurizer` fits a bank of detectors (PyOD's
formulas; those of the default bank from :mod:`anomaly_gym.envs.bank`, without PyOD) on
unlabelled rows and describes each row by how anomalous every detector finds it
*relative to the dataset it came from*:

- per detector, the score's percentile rank among the fitting rows' scores (0..1) and a
  log-compressed robust z-score (median / MAD of the fitting rows' scores);
- consensus across the bank: mean, max, min and spread of the percentile ranks, and the
  mean robust z-score;
- dataset-level descriptors (the same for every row of a dataset): its size and width,
  the share of discrete columns, and how much the detectors agree with each other.

Every feature has a fixed, finite range (see :meth:`Featurizer.feature_bounds`) and means
the same thing on every dataset.  Scores point one way: higher = more anomalous.

Large inputs are fitted on a seeded subsample of ``max_fit_rows`` rows and scored in chunks.
:func:`featurize_task` caches the features of a task on disk, keyed by the task's content
hash and the featurizer's configuration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_gym.envs import bank
from anomaly_gym.envs.bank import one_openmp_thread

logger = logging.getLogger(__name__)

DEFAULT_DETECTORS = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "pca", "cblof")

#: Robust z-scores are clipped here before log-compression: sign(z) * log1p(|z|).
Z_CLIP = 50.0
_Z_BOUND = float(np.log1p(Z_CLIP))

CONSENSUS_FEATURES = ("pct_mean", "pct_max", "pct_min", "pct_std", "z_mean")
DESCRIPTOR_FEATURES = ("log_rows", "log_cols", "discrete_share", "agreement")
AGREEING_FEATURES = ("pct_mean", "z_mean")


def parse_detector_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``"knn"`` or ``"knn:n_neighbors=20,method=mean"`` -> (name, params)."""
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in _DETECTOR_FACTORIES:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(_DETECTOR_FACTORIES)}")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"detector spec {spec!r}: parameter {item!r} must look like key=value")
        params[key.strip()] = _parse_value(value.strip())
    return name, params


def _parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


def _build_detector(name: str, params: dict[str, Any], n_fit: int, seed: int):
    return _DETECTOR_FACTORIES[name](dict(params), n_fit, seed)


def _neighbours(params: dict, n_fit: int, default: int) -> dict:
    params["n_neighbors"] = max(1, min(int(params.get("n_neighbors", default)), n_fit - 1))
    return params


def _iforest(p, n, seed):
    p.setdefault("random_state", seed)
    return bank.IForest(**p)


def tail_counts(sorted_columns: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per row and column, how many fitting values are <= and >= the row's value."""
    n = len(sorted_columns)
    columns = range(X.shape[1])
    at_most = np.column_stack([np.searchsorted(sorted_columns[:, j], X[:, j], side="right") for j in columns])
    at_least = n - np.column_stack([np.searchsorted(sorted_columns[:, j], X[:, j], side="left") for j in columns])
    return at_most, at_least


def tail_outlyingness(u_left: np.ndarray, u_right: np.ndarray, skew_sign: np.ndarray, method: str) -> np.ndarray:
    """ECOD's or COPOD's score from the negative log tail probabilities (PyOD's formulas)."""
    u_skew = -u_left * np.sign(skew_sign - 1) + u_right * np.sign(skew_sign + 1)
    if method == "ecod":
        outlying = np.maximum(np.maximum(u_left, u_right), u_skew)
    elif method == "copod":
        outlying = np.maximum(u_skew, (u_left + u_right) / 2)
    else:
        raise ValueError(f"method must be 'ecod' or 'copod', got {method!r}")
    return outlying.sum(axis=1)


#: Scaled values are clipped to +-this: far outside the fitting rows' [0, 1] for every
#: detector (they saturate the features long before), and small enough that squared
#: distances over many columns stay finite.
SCALE_CLIP = 1e6


def minmax_span(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per column ``hi - lo``: 1 for constant columns, and the largest float where the
    difference overflows (finite columns as far apart as ``-1e308`` and ``1e308``)."""
    with np.errstate(over="ignore", invalid="ignore"):
        span = np.asarray(hi, dtype=np.float64) - np.asarray(lo, dtype=np.float64)
    span = np.where(np.isfinite(span), span, np.finfo(np.float64).max)
    return np.where(span > 0, span, 1.0)


def scale_rows(X: np.ndarray, lo: np.ndarray, span: np.ndarray) -> np.ndarray:
    """``(X - lo) / span``, clipped to +-:data:`SCALE_CLIP`, and finite for every finite ``X``.

    Where ``X - lo`` overflows (values near float64's limits) the quotient is taken as
    ``X / span - lo / span`` instead; what is still infinite there is clipped.  Rows inside
    the usual range get exactly ``(X - lo) / span``.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        Z = (np.asarray(X, dtype=np.float64) - lo) / span
        if not np.isfinite(Z).all():
            Z = np.where(np.isfinite(Z), Z, X / span - lo / span)
    return np.clip(np.nan_to_num(Z, nan=0.0, posinf=SCALE_CLIP, neginf=-SCALE_CLIP), -SCALE_CLIP, SCALE_CLIP)


def percentile_rank(sorted_reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mid-rank percentile (0..1) of each score among ``sorted_reference`` (ties count half)."""
    left = np.searchsorted(sorted_reference, scores, side="left")
    right = np.searchsorted(sorted_reference, scores, side="right")
    return (left + right) / (2.0 * len(sorted_reference))


class _TailProbabilityDetector:
    """ECOD or COPOD, scoring every row against the fitting rows alone.

    PyOD's ECOD and COPOD rebuild their empirical CDFs over the fitting rows *and the
    whole batch being scored*, so there a row's score depends on the rows scored with it
    (and so on ``chunk_size``).  Here a row gets the score PyOD gives it when it is scored
    on its own: tail probabilities over the fitting rows plus that row, and the fitting
    rows' skewness.  ``contamination`` and ``n_jobs`` are PyOD's arguments (unused).
    """

    def __init__(self, method: str, contamination: float = 0.1, n_jobs: int = 1) -> None:
        self.method = method
        self.contamination = contamination
        self.n_jobs = n_jobs

    def fit(self, X) -> _TailProbabilityDetector:
        from scipy.stats import skew

        X = np.asarray(X, dtype=np.float64)
        self.sorted_ = np.sort(X, axis=0)
        self.skew_sign_ = np.sign(np.nan_to_num(skew(X, axis=0)))
        return self

    def decision_function(self, X) -> np.ndarray:
        n = len(self.sorted_)
        at_most, at_least = tail_counts(self.sorted_, np.asarray(X, dtype=np.float64))
        u_left = -np.log((at_most + 1.0) / (n + 1.0))
        u_right = -np.log((at_least + 1.0) / (n + 1.0))
        return tail_outlyingness(u_left, u_right, self.skew_sign_, self.method)


def _ecod(p, n, seed):
    return _TailProbabilityDetector("ecod", **p)


def _copod(p, n, seed):
    return _TailProbabilityDetector("copod", **p)


def _hbos(p, n, seed):
    if isinstance(p.get("n_bins"), str):  # n_bins="auto": PyOD's own choice of bins
        from pyod.models.hbos import HBOS

        return HBOS(**p)
    return bank.HBOS(**p)


def _knn(p, n, seed):
    return bank.KNN(**_neighbours(p, n, 5))


def _lof(p, n, seed):
    return bank.LOF(**_neighbours(p, n, 20))


#: Principal components explaining less than this share of the total variance are taken for
#: numerical rank deficiency (collinear or constant columns) and left out of PCA's score.
PCA_MIN_VARIANCE_RATIO = 1e-9


class _RankPCA:
    """PyOD's PCA (:class:`anomaly_gym.envs.bank.PCA`) restricted to the components the data span.

    PyOD's PCA scores a row by its distances to the smallest components, each divided by
    the share of the variance that component explains.  On rank-deficient data (collinear
    columns, as in ADBench's campaign, fault or mnist) the smallest shares are zero or
    rounding noise, and the scores become infinite or are dominated by that noise.  Here
    the detector is fitted with ``n_components`` limited to the components explaining at
    least :data:`PCA_MIN_VARIANCE_RATIO` of the variance (``svd_solver="full"``, exact);
    data of full rank get PyOD's PCA unchanged.  Data with no variance at all raise
    ``ValueError``.
    """

    def __init__(self, **params) -> None:
        self.params = params

    def fit(self, X) -> _RankPCA:
        X = np.asarray(X, dtype=np.float64)
        with warnings.catch_warnings():  # zero variance: scikit-learn divides by it
            warnings.simplefilter("ignore", RuntimeWarning)
            detector = bank.PCA(**self.params).fit(X)
        ratio = np.nan_to_num(np.asarray(detector.explained_variance_ratio_, dtype=np.float64), nan=0.0)
        rank = int(np.sum(ratio >= PCA_MIN_VARIANCE_RATIO))
        if rank == 0:
            raise ValueError("the rows have no variance to find principal components in (every column is constant)")
        if rank < len(ratio):
            params = dict(self.params, n_components=rank, svd_solver="full")
            if params.get("n_selected_components") is not None:
                params["n_selected_components"] = min(int(params["n_selected_components"]), rank)
            detector = bank.PCA(**params).fit(X)
        self.detector_ = detector
        self.rank_ = rank
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.detector_.decision_function(X)


def _pca(p, n, seed):
    p.setdefault("random_state", seed)
    return _RankPCA(**p)


#: (alpha, beta) tried in turn when PyOD's CBLOF cannot split large from small clusters.
CBLOF_RELAXED = ((0.8, 3.0), (0.7, 2.0))


def fit_cblof(X: np.ndarray, *, n_clusters: int = 8, alpha: float = 0.9, beta: float = 5.0, random_state=None, cblof_class=None, **params):
    """Fit PyOD's CBLOF, relaxing the cluster split when it raises.

    PyOD raises when no (alpha, beta) boundary separates large from small clusters (e.g.
    Hepatitis and Waveform in ADBench).  The given values are tried first, then the ones in
    :data:`CBLOF_RELAXED`, each with ``n_clusters`` down to 2.  Raises the last error if
    nothing works.  ``cblof_class`` is PyOD's ``CBLOF`` by default; the bank passes
    :class:`anomaly_gym.envs.bank.CBLOF` (the same fit, without importing PyOD).
    """
    if cblof_class is None:
        from pyod.models.cblof import CBLOF as cblof_class

    k0 = max(2, min(int(n_clusters), len(X) // 10))
    error = None
    for a, b in ((alpha, beta), *CBLOF_RELAXED):
        for k in range(k0, 1, -1):
            detector = cblof_class(n_clusters=k, alpha=a, beta=b, random_state=random_state, **params)
            try:
                return detector.fit(X)
            except ValueError as exc:
                error = exc
    raise ValueError(f"CBLOF could not separate large from small clusters ({error})")


class _RelaxedCBLOF:
    """CBLOF for the bank (:class:`anomaly_gym.envs.bank.CBLOF`), fitted with :func:`fit_cblof`."""

    def __init__(self, **params) -> None:
        self.params = params

    def fit(self, X) -> _RelaxedCBLOF:
        self.detector_ = fit_cblof(np.asarray(X), cblof_class=bank.CBLOF, **self.params)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self.detector_.decision_function(X)


def _cblof(p, n, seed):
    p.setdefault("random_state", seed)
    return _RelaxedCBLOF(**p)


def _ocsvm(p, n, seed):
    from pyod.models.ocsvm import OCSVM

    return OCSVM(**p)


def _gmm(p, n, seed):
    from pyod.models.gmm import GMM

    p.setdefault("random_state", seed)
    return GMM(**p)


_DETECTOR_FACTORIES = {
    "iforest": _iforest,
    "ecod": _ecod,
    "copod": _copod,
    "hbos": _hbos,
    "knn": _knn,
    "lof": _lof,
    "pca": _pca,
    "cblof": _cblof,
    "ocsvm": _ocsvm,
    "gmm": _gmm,
}


@dataclass(frozen=True)
class FeaturizerConfig:
    """What the featurizer computes; part of every policy bundle and of the feature cache key."""

    detectors: tuple[str, ...] = DEFAULT_DETECTORS
    """Detector specs, ``name`` or ``name:key=value,...`` (PyOD parameters)."""
    max_fit_rows: int = 5000
    """Detectors are fitted on a seeded subsample of at most this many rows."""
    chunk_size: int = 50_000
    """Rows scored per chunk in ``transform`` (bounds memory on large inputs)."""
    per_detector: bool = True
    """Include each detector's percentile rank and robust z-score."""
    consensus: bool = True
    """Include the bank's consensus features (mean/max/min/std of percentiles, mean z)."""
    agreeing: bool = False
    """Include the agreeing half of the bank's mean percentile and mean z (its detectors that correlate best with the bank's mean z, per dataset)."""
    descriptors: bool = True
    """Include dataset-level descriptors (size, width, discrete share, detector agreement)."""
    seed: int = 0
    """Seed of the fitting subsample and of the randomised detectors."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "detectors", tuple(self.detectors))
        if not self.detectors:
            raise ValueError("FeaturizerConfig.detectors is empty; name at least one detector")
        for spec in self.detectors:
            parse_detector_spec(spec)
        if self.max_fit_rows < 20:
            raise ValueError(f"max_fit_rows must be at least 20, got {self.max_fit_rows}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {self.chunk_size}")
        if not (self.per_detector or self.consensus or self.agreeing or self.descriptors):
            raise ValueError("the featurizer must produce something: enable per_detector, consensus, agreeing or descriptors")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeaturizerConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown featurizer option(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["detectors"] = list(self.detectors)
        return out

    def key(self) -> str:
        """Stable digest of everything that changes the features (``chunk_size`` does not)."""
        data = self.to_dict()
        data.pop("chunk_size")
        if not data["agreeing"]:  # configs from before the option keep their cache keys
            data.pop("agreeing")
        data["version"] = FEATURE_VERSION
        return hashlib.sha1(json.dumps(data, sort_keys=True).encode(), usedforsecurity=False).hexdigest()[:16]

    def feature_names(self) -> list[str]:
        names: list[str] = []
        if self.per_detector:
            for spec in self.detectors:
                names += [f"{spec}/pct", f"{spec}/z"]
        if self.consensus:
            names += [f"consensus/{n}" for n in CONSENSUS_FEATURES]
        if self.agreeing:
            names += [f"agreeing/{n}" for n in AGREEING_FEATURES]
        if self.descriptors:
            names += [f"dataset/{n}" for n in DESCRIPTOR_FEATURES]
        return names


#: Bump when the meaning of any feature changes: it invalidates cached features.
FEATURE_VERSION = 5  # 5: the bank fits and scores on one OpenMP thread (LOF among tied distances)

#: A larger bank: the default eight plus further hyperparameters of the same families and
#: a Gaussian mixture.  The training default (configs/default.toml); `anomaly-gym
#: benchmark` measures what it gives.
RICH_DETECTORS = DEFAULT_DETECTORS + (
    "knn:n_neighbors=20",
    "knn:n_neighbors=50",
    "knn:n_neighbors=20,method=mean",
    "lof:n_neighbors=10",
    "lof:n_neighbors=40",
    "hbos:n_bins=5",
    "hbos:n_bins=30",
    "iforest:max_samples=64",
    "gmm:n_components=4",
    "cblof:n_clusters=16",
)

#: Named configurations, e.g. ``Featurizer(PRESETS["rich"])``.
PRESETS: dict[str, FeaturizerConfig] = {
    "default": FeaturizerConfig(),
    "rich": FeaturizerConfig(detectors=RICH_DETECTORS, descriptors=False),
    # The rich bank seen only through its agreeing half: the training default
    # (configs/default.toml).  Per-detector columns let a linear policy fit the sources' own
    # detector preferences; the agreeing half is chosen on each dataset instead.
    "agreeing": FeaturizerConfig(detectors=RICH_DETECTORS, per_detector=False, consensus=False, agreeing=True, descriptors=False),
}


class Featurizer:
    """Fit a detector bank on unlabelled rows; turn rows into dataset-relative features.

    Args:
        config: A :class:`FeaturizerConfig`; keyword overrides are applied on top of it.
        **overrides: Fields of :class:`FeaturizerConfig`, e.g. ``detectors=("iforest", "knn")``.

    Example:
        >>> feat = Featurizer(detectors=("iforest", "ecod")).fit(X)
        >>> obs = feat.transform(X)          # (n, feat.n_features), float32
    """

    def __init__(self, config: FeaturizerConfig | None = None, **overrides: Any) -> None:
        config = config or FeaturizerConfig()
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    # -- shape -------------------------------------------------------------------------
    @property
    def n_features(self) -> int:
        return len(self.config.feature_names())

    @property
    def feature_names(self) -> list[str]:
        return self.config.feature_names()

    def feature_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Finite lower and upper bounds of every feature, for the observation space."""
        lows, highs = [], []
        if self.config.per_detector:
            for _ in self.config.detectors:
                lows += [0.0, -_Z_BOUND]
                highs += [1.0, _Z_BOUND]
        if self.config.consensus:
            lows += [0.0, 0.0, 0.0, 0.0, -_Z_BOUND]
            highs += [1.0, 1.0, 1.0, 0.5, _Z_BOUND]
        if self.config.agreeing:
            lows += [0.0, -_Z_BOUND]
            highs += [1.0, _Z_BOUND]
        if self.config.descriptors:
            lows += [0.0, 0.0, 0.0, -1.0]
            highs += [2.0, 2.0, 1.0, 1.0]
        return np.asarray(lows, dtype=np.float32), np.asarray(highs, dtype=np.float32)

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X) -> Featurizer:
        """Fit the detector bank on the rows of ``X`` (no labels are used)."""
        X = self._check_X(X, fitting=True)
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        n = len(X)
        if n > cfg.max_fit_rows:
            X_fit = X[np.sort(rng.choice(n, size=cfg.max_fit_rows, replace=False))]
        else:
            X_fit = X
        return self._fit_rows(X_fit, n)

    def _fit_rows(self, X_fit: np.ndarray, n_rows_seen: int) -> Featurizer:
        """Fit on the (already subsampled) rows ``X_fit`` of a dataset of ``n_rows_seen`` rows."""
        cfg = self.config
        self.fit_rows_ = X_fit
        self.n_columns_ = X_fit.shape[1]
        self.n_rows_seen_ = int(n_rows_seen)
        # Min-max scale on the fitting rows; constant columns get span 1 (they stay constant).
        self.lo_ = X_fit.min(axis=0)
        self.span_ = minmax_span(self.lo_, X_fit.max(axis=0))
        Z_fit = self._scale(X_fit)

        self.detectors_ = []
        ref_scores = []
        with one_openmp_thread():  # the same neighbours among ties on any machine
            for spec in cfg.detectors:
                name, params = parse_detector_spec(spec)
                detector = _build_detector(name, params, len(Z_fit), cfg.seed)
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        detector.fit(Z_fit)
                        raw = np.asarray(detector.decision_function(Z_fit), dtype=np.float64).reshape(-1)
                    if not np.isfinite(raw).any():
                        raise ValueError("all scores are NaN or infinite")
                    scores = self._finite(raw)
                except Exception as exc:  # one failing detector must not sink the bank
                    logger.warning("detector %s failed to fit (%s); its features are set to neutral values", spec, exc)
                    warnings.warn(f"detector {spec} failed to fit ({exc}); its features are neutral", RuntimeWarning, stacklevel=2)
                    detector, scores = None, np.zeros(len(Z_fit))
                self.detectors_.append(detector)
                ref_scores.append(scores)

        ref = np.column_stack(ref_scores)
        self.sorted_scores_ = np.sort(ref, axis=0)
        med = np.median(ref, axis=0)
        mad = 1.4826 * np.median(np.abs(ref - med), axis=0)
        iqr = (np.percentile(ref, 75, axis=0) - np.percentile(ref, 25, axis=0)) / 1.349
        with np.errstate(over="ignore", invalid="ignore"):  # scores clipped near float64's max
            std = ref.std(axis=0)
        scale = np.where(mad > 1e-12, mad, np.where(iqr > 1e-12, iqr, np.where(std > 1e-12, std, 1.0)))
        self.median_ = med
        self.scale_ = scale
        self.agreeing_ = self._agreeing_detectors(ref) if cfg.agreeing else None
        self.descriptors_ = self._dataset_descriptors(X_fit, ref)
        return self

    # -- transforming ------------------------------------------------------------------
    def transform(self, X) -> np.ndarray:
        """Features of every row of ``X``: float32, shape (n, ``n_features``), inside the bounds."""
        self._check_fitted()
        X = self._check_X(X, fitting=False)
        out = np.empty((len(X), self.n_features), dtype=np.float32)
        step = self.config.chunk_size
        for start in range(0, len(X), step):
            out[start : start + step] = self._transform_chunk(X[start : start + step])
        return out

    def fit_transform(self, X) -> np.ndarray:
        return self.fit(X).transform(X)

    def raw_scores(self, X) -> np.ndarray:
        """Each detector's raw score (higher = more anomalous), shape (n, n_detectors)."""
        self._check_fitted()
        Z = self._scale(self._check_X(X, fitting=False))
        with one_openmp_thread():  # the same neighbours among ties on any machine
            return np.column_stack([self._score_one(det, Z) for det in self.detectors_])

    def _transform_chunk(self, X: np.ndarray) -> np.ndarray:
        cfg = self.config
        scores = self.raw_scores(X)
        n = len(X)
        ref = self.sorted_scores_
        pct = np.column_stack([percentile_rank(ref[:, j], scores[:, j]) for j in range(scores.shape[1])])
        z = self._robust_z(scores)
        dead = self._dead()
        pct[:, dead], z[:, dead] = 0.5, 0.0
        parts = []
        if cfg.per_detector:
            parts.append(np.stack([pct, z], axis=2).reshape(n, -1))
        if cfg.consensus:
            live = self._live()
            p, zz = pct[:, live], z[:, live]
            parts.append(np.column_stack([p.mean(1), p.max(1), p.min(1), p.std(1), zz.mean(1)]))
        if cfg.agreeing:
            parts.append(np.column_stack([pct[:, self.agreeing_].mean(1), z[:, self.agreeing_].mean(1)]))
        if cfg.descriptors:
            parts.append(np.broadcast_to(self.descriptors_, (n, len(self.descriptors_))))
        feats = np.concatenate(parts, axis=1)
        lo, hi = self.feature_bounds()
        return np.clip(np.nan_to_num(feats, nan=0.0), lo, hi).astype(np.float32)

    # -- helpers -----------------------------------------------------------------------
    def _robust_z(self, scores: np.ndarray) -> np.ndarray:
        """Robust z-scores of raw scores against the fitting rows' (clipped at +-``Z_CLIP``, log-compressed)."""
        z = (scores - self.median_) / self.scale_
        z = np.clip(np.nan_to_num(z, nan=0.0, posinf=Z_CLIP, neginf=-Z_CLIP), -Z_CLIP, Z_CLIP)
        return np.sign(z) * np.log1p(np.abs(z))

    def _dead(self) -> np.ndarray:
        return np.array([det is None for det in self.detectors_])

    def _live(self) -> np.ndarray:
        """Indices of the detectors that fitted, or of all of them when none did (their features are then neutral)."""
        live = np.flatnonzero(~self._dead())
        return live if len(live) else np.arange(len(self.detectors_))

    def _agreeing_detectors(self, ref: np.ndarray) -> np.ndarray:
        """Indices of the agreeing half of the bank on the fitting rows' raw scores ``ref``.

        Each live detector's robust z-scores are correlated (Pearson) with the mean z-score
        of the live bank; the ``ceil(live / 2)`` best-correlated detectors are kept, in bank
        order.  Detectors that agree with the bank's consensus are the ones that see the
        same structure in this dataset, so their mean is a pseudo ground truth with less of
        the noise of the detectors that see something else (vertical selection, as in
        Rayana and Akoglu's SELECT, 2016).  A detector with constant scores never agrees.
        """
        live = self._live()
        z = self._robust_z(ref)[:, live]
        centred = z - z.mean(axis=0)
        consensus = centred.mean(axis=1)
        norms = np.sqrt((centred**2).sum(axis=0) * (consensus**2).sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(norms > 1e-12, centred.T @ consensus / norms, -np.inf)
        keep = np.argsort(-corr, kind="stable")[: (len(live) + 1) // 2]
        return np.sort(live[keep])

    def _scale(self, X: np.ndarray) -> np.ndarray:
        return scale_rows(X, self.lo_, self.span_)

    @staticmethod
    def _score_one(detector, Z: np.ndarray) -> np.ndarray:
        if detector is None:
            return np.zeros(len(Z))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = np.asarray(detector.decision_function(Z), dtype=np.float64).reshape(-1)
        return Featurizer._finite(scores)

    @staticmethod
    def _finite(scores: np.ndarray) -> np.ndarray:
        return np.nan_to_num(
            scores, nan=np.nanmedian(scores) if np.isfinite(scores).any() else 0.0, posinf=np.finfo(np.float64).max / 4, neginf=-np.finfo(np.float64).max / 4
        )

    def _dataset_descriptors(self, X_fit: np.ndarray, ref: np.ndarray) -> np.ndarray:
        n, d = self.n_rows_seen_, self.n_columns_
        distinct = np.array([len(np.unique(X_fit[:, j])) for j in range(X_fit.shape[1])])
        discrete_share = float(np.mean(distinct <= 10))
        live = np.flatnonzero(~self._dead())
        agreement = 0.0
        if len(live) >= 2:
            ranks = np.argsort(np.argsort(ref[:, live], axis=0), axis=0).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                corr = np.corrcoef(ranks, rowvar=False)
            upper = corr[np.triu_indices(len(live), k=1)]
            agreement = float(np.nanmean(upper)) if np.isfinite(upper).any() else 0.0
        return np.array([np.log10(max(n, 1)) / 3.0, np.log10(max(d, 1)) / 2.0, discrete_share, agreement], dtype=np.float32)

    def _check_fitted(self) -> None:
        if not hasattr(self, "detectors_"):
            raise RuntimeError("this Featurizer is not fitted yet; call fit(X) first")

    def _check_X(self, X, *, fitting: bool) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, columns), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X has NaN or infinite values; clean or impute them before featurizing")
        if fitting:
            if len(X) < 10:
                raise ValueError(f"the featurizer needs at least 10 rows to fit, got {len(X)}")
        elif X.shape[1] != self.n_columns_:
            raise ValueError(f"X has {X.shape[1]} columns but the featurizer was fitted on {self.n_columns_}")
        return X

    def __repr__(self) -> str:
        fitted = "fitted" if hasattr(self, "detectors_") else "unfitted"
        return f"Featurizer({len(self.config.detectors)} detectors, {self.n_features} features, {fitted})"


# --------------------------------------------------------------------------- cache


def default_cache_dir() -> Path:
    """``$ANOMALY_GYM_CACHE``, else ``~/.cache/anomaly-gym``."""
    env = os.environ.get("ANOMALY_GYM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "anomaly-gym"


def feature_cache_path(name: str, config: FeaturizerConfig, cache_dir: str | Path | None | bool = None) -> Path | None:
    """Where the features of ``name`` (a task's hash, or ``FIT-SCORE`` hashes of a split) are cached; None with ``cache_dir=False``."""
    if cache_dir is False:
        return None
    root = default_cache_dir() if cache_dir in (None, True) else Path(cache_dir)
    return root / "features" / f"{name}-{config.key()}.npy"


def load_cached_features(name: str, n_rows: int, config: FeaturizerConfig, cache_dir=None) -> np.ndarray | None:
    """The cached features of ``name`` if the cache holds a valid copy (``n_rows`` rows), else None."""
    path = feature_cache_path(name, config, cache_dir)
    if path is None or not path.is_file():
        return None
    try:
        feats = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None  # a truncated or foreign file: recompute and overwrite
    return feats if feats.shape == (n_rows, len(config.feature_names())) else None


def store_features(name: str, feats: np.ndarray, config: FeaturizerConfig, cache_dir=None) -> None:
    """Write ``feats`` as the cached features of ``name`` (atomically; a failure is only logged)."""
    path = feature_cache_path(name, config, cache_dir)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, feats)
        os.replace(tmp, path)
    except OSError as exc:
        logger.warning("could not write the feature cache %s: %s", path, exc)


def _cached(name: str, n_rows: int, config: FeaturizerConfig, cache_dir, compute) -> np.ndarray:
    """Load ``cache_dir/features/{name}-{config.key()}.npy`` if valid, else compute and store it."""
    feats = load_cached_features(name, n_rows, config, cache_dir)
    if feats is None:
        feats = compute()
        store_features(name, feats, config, cache_dir)
    return feats


def featurize_task(task, config: FeaturizerConfig | None = None, *, cache_dir: str | Path | None | bool = None) -> np.ndarray:
    """Features of every row of ``task``, with the featurizer fitted on the task's own rows.

    Cached on disk under ``cache_dir/features/{task.hash}-{config.key()}.npy``; pass
    ``cache_dir=False`` to neither read nor write the cache.
    """
    config = config or FeaturizerConfig()
    return _cached(task.hash, task.n_rows, config, cache_dir, lambda: Featurizer(config).fit_transform(task.X))


def featurize_split(fit_task, score_task, config: FeaturizerConfig | None = None, *, cache_dir: str | Path | None | bool = None) -> np.ndarray:
    """Features of ``score_task``'s rows with the featurizer fitted on ``fit_task``'s rows.

    The inductive setting of the benchmark protocol: fit on a target's training part
    (labels unused), score its test part.  Cached like :func:`featurize_task`.
    """
    config = config or FeaturizerConfig()
    return _cached(
        f"{fit_task.hash}-{score_task.hash}",
        score_task.n_rows,
        config,
        cache_dir,
        lambda: Featurizer(config).fit(fit_task.X).transform(score_task.X),
    )
