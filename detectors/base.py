"""The detector base class and the input checks every detector shares.

Every detector follows PyOD's contract: ``fit(X, y=None, source=None)`` returns the
detector, ``decision_function(X)`` returns one float per row, and higher always means
more anomalous.  ``__init__`` only stores its arguments; everything learned in ``fit``
ends in ``_``.  Detectors are scikit-learn estimators, so ``sklearn.base.clone``,
``get_params`` and ``set_params`` work.

Two class attributes say what a detector needs besides the target rows:

- ``requires_labels``: the detector is semi-supervised and ``fit`` needs ``y``, with
  **1 for the labelled anomalies and 0 for every other row** (normal or unlabelled), as in
  ADBench's and DevNet's semi-supervised setting.  At least one row must be labelled 1.
- ``uses_source``: the detector transfers from one or more labelled or unlabelled source
  datasets, passed as ``source=(X_source, y_source)`` (see :func:`check_source`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

#: Fewest rows a detector is fitted on (neighbour and cluster detectors need several).
MIN_FIT_ROWS = 5

#: One source dataset after :func:`check_source`: rows and labels (``None`` when unlabelled).
SourceData = tuple[np.ndarray, "np.ndarray | None"]


class BaseDetector(BaseEstimator):
    """Base class of every anomaly-gym detector.

    Subclasses implement ``_fit(X, y, source)`` and ``_decision_function(X)`` on checked
    float64 input; the public methods here validate the input first.

    Attributes:
        n_features_in_: Number of columns seen in ``fit``.
        decision_scores_: Scores of the training rows, shape (n,).
    """

    #: ``fit`` needs ``y`` (1 = labelled anomaly, 0 = normal or unlabelled).
    requires_labels: ClassVar[bool] = False
    #: ``fit`` needs ``source=(X_source, y_source)``.
    uses_source: ClassVar[bool] = False

    def fit(self, X, y=None, source=None) -> BaseDetector:
        """Fit the detector on the target rows ``X``.

        Args:
            X: Target rows, array-like of shape (n, d), finite.
            y: Optional labels of length n: 1 for labelled anomalies, 0 for every other
                row.  Required when ``requires_labels``; checked but not used otherwise.
            source: Source data for transfer detectors (``uses_source``), see
                :func:`check_source`; ignored by the others.

        Returns:
            The fitted detector.

        Raises:
            ValueError: bad shapes, NaN or infinite values, missing labels or source.
        """
        X = check_X(X, what="X")
        if len(X) < MIN_FIT_ROWS:
            raise ValueError(f"{type(self).__name__} needs at least {MIN_FIT_ROWS} rows to fit, got {len(X)}")
        if y is not None:
            y = check_labels(y, len(X))
        if self.requires_labels:
            if y is None:
                raise ValueError(f"{type(self).__name__} is semi-supervised: pass y with 1 for the labelled anomalies and 0 for every other row")
            if not y.any():
                raise ValueError(f"{type(self).__name__} needs at least one labelled anomaly (a 1 in y); y is all 0")
            if y.all():
                raise ValueError(f"{type(self).__name__} needs rows labelled 0 too; y is all 1")
        sources = None
        if self.uses_source:
            if source is None:
                raise ValueError(
                    f"{type(self).__name__} transfers from source data: pass source=(X_source, y_source) "
                    "with one or several source datasets (y_source may be None)"
                )
            sources = check_source(source)
        self.n_features_in_ = X.shape[1]
        self._fit(X, y, sources)
        scores = getattr(self, "decision_scores_", None)
        if scores is None or len(scores) != len(X):
            scores = self._decision_function(X)
        self.decision_scores_ = _as_scores(scores, len(X), type(self).__name__)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Anomaly scores of the rows of ``X``: float64, shape (n,), higher = more anomalous."""
        if not hasattr(self, "n_features_in_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(X) first")
        X = check_X(X, what="X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} columns but {type(self).__name__} was fitted on {self.n_features_in_}")
        return _as_scores(self._decision_function(X), len(X), type(self).__name__)

    def fit_decision_function(self, X, y=None, source=None) -> np.ndarray:
        """``fit`` then the scores of the training rows (``decision_scores_``)."""
        return self.fit(X, y, source).decision_scores_

    # -- for subclasses ------------------------------------------------------------------
    def _fit(self, X: np.ndarray, y: np.ndarray | None, source: list[SourceData] | None) -> None:
        raise NotImplementedError

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


# --------------------------------------------------------------------------- checks


def check_X(X, *, what: str = "X") -> np.ndarray:
    """``X`` as a finite float64 (n, d) array with n, d >= 1, or a ``ValueError``."""
    if hasattr(X, "X") and hasattr(X, "hash"):  # an anomaly_gym Task
        X = X.X
    try:
        arr = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be a numeric array of shape (rows, columns): {exc}") from None
    if arr.ndim == 1:
        raise ValueError(f"{what} is 1-D with shape {arr.shape}; pass a 2-D array of shape (rows, columns), e.g. x.reshape(-1, 1) for a single column")
    if arr.ndim != 2:
        raise ValueError(f"{what} must be 2-D (rows, columns), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{what} is empty (shape {arr.shape}); it needs at least one row and one column")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} has NaN or infinite values; clean or impute them first")
    return arr


def check_labels(y, n: int, *, what: str = "y") -> np.ndarray:
    """``y`` as an int8 array of n values in {0, 1}, or a ``ValueError``."""
    arr = np.asarray(y)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{what} must have one label per row ({n}), got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold 0 and 1 (1 = labelled anomaly), got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ValueError(f"{what} must hold 0 and 1 only (1 = labelled anomaly, 0 = normal or unlabelled); found {np.unique(arr[bad])[:5].tolist()}")
    return arr.astype(np.int8)


def check_source(source: Any) -> list[SourceData]:
    """Normalise the ``source`` argument of a transfer detector to ``[(X_i, y_i), ...]``.

    Accepted forms:

    - ``(X_source, y_source)``: ``X_source`` a 2-D array (one source dataset) or a list of
      2-D arrays (several); ``y_source`` ``None``, a 1-D array, or a list with one 1-D
      array or ``None`` per source dataset.  Labels use the same convention as ``y``.
    - a bare 2-D array, or a list of 2-D arrays: unlabelled source datasets;
    - an anomaly_gym ``Task`` or a list of them (their labels are used when present).

    Each source dataset may have its own number of columns.

    Raises:
        ValueError: the form is not one of these, or a dataset fails :func:`check_X`.
    """
    if _is_task(source):
        source = [source]
    if isinstance(source, tuple) and len(source) == 2 and _looks_like_labels(source[1]):
        X_part, y_part = source
        if _is_matrix(X_part):
            xs, ys = [X_part], [y_part]
        elif isinstance(X_part, Sequence) and not isinstance(X_part, str):
            xs = list(X_part)
            if y_part is None:
                ys = [None] * len(xs)
            elif isinstance(y_part, Sequence) and not _is_vector(y_part):
                ys = list(y_part)
            else:
                raise ValueError("with several source datasets, y_source must be None or a list with one entry per dataset")
        else:
            raise ValueError("source=(X_source, y_source): X_source must be a 2-D array or a list of 2-D arrays")
    elif _is_matrix(source):
        xs, ys = [source], [None]
    elif isinstance(source, Sequence) and not isinstance(source, str) and len(source) > 0:
        if all(_is_task(s) for s in source):
            xs, ys = [s.X for s in source], [s.y for s in source]
        elif all(_is_matrix(s) for s in source):
            xs, ys = list(source), [None] * len(source)
        else:
            raise ValueError(_SOURCE_HELP)
    else:
        raise ValueError(_SOURCE_HELP)
    if not xs:
        raise ValueError("source holds no dataset; " + _SOURCE_HELP)
    if len(xs) != len(ys):
        raise ValueError(f"source has {len(xs)} datasets but {len(ys)} label arrays; give one per dataset (or None)")
    out: list[SourceData] = []
    for i, (Xi, yi) in enumerate(zip(xs, ys)):
        Xi = check_X(Xi, what=f"source dataset {i}")
        if len(Xi) < MIN_FIT_ROWS:
            raise ValueError(f"source dataset {i} has {len(Xi)} rows; at least {MIN_FIT_ROWS} are needed")
        out.append((Xi, None if yi is None else check_labels(yi, len(Xi), what=f"labels of source dataset {i}")))
    return out


_SOURCE_HELP = (
    "source must be (X_source, y_source) with X_source a 2-D array or a list of 2-D arrays and "
    "y_source None, a 1-D array or a list of them; or a Task or list of Tasks"
)


def _is_task(obj) -> bool:
    return hasattr(obj, "X") and hasattr(obj, "hash") and hasattr(obj, "y")


def _is_matrix(obj) -> bool:
    if isinstance(obj, np.ndarray):
        return obj.ndim == 2
    return isinstance(obj, Sequence) and len(obj) > 0 and not _has_arrays(obj) and _ndim(obj) == 2


def _is_vector(obj) -> bool:
    if isinstance(obj, np.ndarray):
        return obj.ndim == 1
    return isinstance(obj, Sequence) and not isinstance(obj, str) and not _has_arrays(obj) and _ndim(obj) == 1


def _ndim(obj) -> int:
    try:
        return np.ndim(obj)
    except ValueError:  # ragged nesting
        return -1


def _has_arrays(obj) -> bool:
    return any(isinstance(o, np.ndarray) or o is None for o in obj)


def _looks_like_labels(obj) -> bool:
    """``None``, a 1-D label array, or a list of 1-D arrays / ``None``."""
    if obj is None or _is_vector(obj):
        return True
    if isinstance(obj, Sequence) and not isinstance(obj, str):
        return all(o is None or _is_vector(o) for o in obj)
    return False


def _as_scores(scores, n: int, name: str) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape != (n,):
        raise RuntimeError(f"{name} returned {scores.shape[0]} scores for {n} rows")
    if not np.isfinite(scores).all():
        # A detector may overflow on extreme rows: keep the order, make the values finite
        # (infinities just beyond the finite range, NaN at the median).
        finite = scores[np.isfinite(scores)]
        hi = finite.max() if finite.size else 0.0
        lo = finite.min() if finite.size else 0.0
        mid = float(np.median(finite)) if finite.size else 0.0
        span = max(hi - lo, 1.0)
        scores = np.nan_to_num(scores, nan=mid, posinf=hi + span, neginf=lo - span)
    return scores
