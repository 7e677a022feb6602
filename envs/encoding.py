"""Numeric and categorical table columns encoded as one numeric matrix for the featurizer.

:class:`TableEncoder` follows scikit-learn's ``fit`` / ``transform``.  It is fitted on a
target's rows (numeric values, NaN where missing, and the text of the categorical columns)
and gives, per row:

- each numeric column, missing values replaced by the column's median over the fitting
  rows, plus a missingness indicator (1 = was missing) for every numeric column that had
  missing values among the fitting rows (a column that had none is imputed without one, so
  the width never depends on the rows being scored);
- per categorical column, the value's *rarity*: how many times its share among the ``n``
  fitting rows halves below the share every value would have if the column's ``k`` values
  were equally common, ``max(0, floor(log2(n / (k * count))))``; a value never seen there
  counts as half an occurrence, rarer than any value seen (a rare protocol or country is
  often the anomaly).  Values at or near the uniform share all get 0: the featurizer
  rescales every column to its range, so a finer measure would turn the sampling noise of
  a column of equally common values into a full-range feature.  An empty field is a value
  of its own (``""``): missingness imputed as a category;
- for categorical columns with at most ``onehot_max`` distinct values, additionally one
  indicator per value seen (unseen values: all zero).  Off by default (``onehot_max=0``):
  ``anomaly-gym bench tables`` measures what it gives.

The result goes into :class:`~anomaly_gym.envs.features.Featurizer` like any numeric
table, so one policy acts on tables of any width and mix.  :meth:`TableEncoder.to_dict`
and :meth:`TableEncoder.from_dict` store the fitted state as plain JSON data (policy
bundles keep it, so new rows are encoded exactly as the target's rows were).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

#: Categorical columns with at most this many distinct values also get one-hot indicators.
#: 0 (no one-hot) is the default: see the module docstring.
ONEHOT_MAX = 0
#: Most distinct values a categorical column keeps counts of; the rest count as unseen.
MAX_CATEGORIES = 100_000

ON_MISSING = ("impute", "error")


class TableEncoder:
    """Encode numeric and categorical columns as one finite numeric matrix.

    Args:
        numeric: Names of the numeric columns, in the order of ``X_num``'s columns.
        categorical: Names of the categorical columns, in the order of ``X_cat``'s columns.
        onehot_max: Categorical columns with at most this many distinct values among the
            fitting rows also get one indicator per value (0: none).
        on_missing: ``"impute"`` (default) or ``"error"``: a missing numeric value raises
            ``ValueError`` (categorical columns always treat an empty field as a value).

    Example:
        >>> enc = TableEncoder(["amount"], ["country"]).fit(X_num, X_cat)
        >>> X = enc.transform(X_num, X_cat)      # (n, enc.n_outputs), float64, finite
    """

    def __init__(self, numeric: Sequence[str] = (), categorical: Sequence[str] = (), *,
                 onehot_max: int = ONEHOT_MAX, on_missing: str = "impute") -> None:
        self.numeric = [str(c) for c in numeric]
        self.categorical = [str(c) for c in categorical]
        self.onehot_max = int(onehot_max)
        self.on_missing = on_missing
        names = self.numeric + self.categorical
        if len(set(names)) != len(names):
            raise ValueError(f"a column is named twice among the numeric and categorical columns: {names}")
        if not names:
            raise ValueError("the encoder needs at least one numeric or categorical column")
        if on_missing not in ON_MISSING:
            raise ValueError(f"on_missing must be one of {ON_MISSING}, got {on_missing!r}")
        if self.onehot_max < 0:
            raise ValueError(f"onehot_max must be 0 or more, got {onehot_max}")

    # -- fitting -----------------------------------------------------------------------
    def fit(self, X_num=None, X_cat=None) -> TableEncoder:
        """Learn medians, which columns need missingness indicators, and value counts."""
        X_num, X_cat = self._check(X_num, X_cat)
        n = len(X_num)
        if n == 0:
            raise ValueError("the encoder needs at least one row to fit")
        self.n_rows_ = n
        missing = np.isnan(X_num)
        self.medians_ = []
        for j, name in enumerate(self.numeric):
            finite = X_num[~missing[:, j], j]
            if finite.size == 0:
                raise ValueError(f"numeric column {name!r} has no value to impute from; leave it out (--ignore {name})")
            self.medians_.append(float(np.median(finite)))
        self.indicators_ = [bool(missing[:, j].any()) for j in range(len(self.numeric))]
        self.counts_ = []
        for j in range(len(self.categorical)):
            values, counts = np.unique(X_cat[:, j], return_counts=True)
            order = np.argsort(-counts, kind="stable")[:MAX_CATEGORIES]
            self.counts_.append({str(values[k]): int(counts[k]) for k in order})
        self.onehot_ = [sorted(c) if len(c) <= self.onehot_max else [] for c in self.counts_]
        return self

    # -- transforming ------------------------------------------------------------------
    def transform(self, X_num=None, X_cat=None) -> np.ndarray:
        """The encoded rows: float64, shape (n, :attr:`n_outputs`), finite."""
        self._check_fitted()
        X_num, X_cat = self._check(X_num, X_cat)
        parts = []
        if self.numeric:
            missing = np.isnan(X_num)
            parts.append(np.where(missing, np.asarray(self.medians_), X_num))
            flagged = [j for j, has in enumerate(self.indicators_) if has]
            if flagged:
                parts.append(missing[:, flagged].astype(np.float64))
        n = len(X_num)
        for j, counts in enumerate(self.counts_):
            column = X_cat[:, j]
            seen = np.array([counts.get(v, 0) for v in column.tolist()], dtype=np.float64)
            parts.append(rarity(seen, self.n_rows_, len(counts)).reshape(n, 1))
            if self.onehot_[j]:
                parts.append((column[:, None] == np.asarray(self.onehot_[j], dtype=object)[None, :]).astype(np.float64))
        return np.concatenate(parts, axis=1) if parts else np.empty((n, 0))

    def fit_transform(self, X_num=None, X_cat=None) -> np.ndarray:
        return self.fit(X_num, X_cat).transform(X_num, X_cat)

    @property
    def n_outputs(self) -> int:
        """Width of the encoded matrix."""
        self._check_fitted()
        return len(self.output_names)

    @property
    def output_names(self) -> list[str]:
        """Name of each encoded column: ``x``, ``x/missing``, ``c/rarity``, ``c=value``."""
        self._check_fitted()
        names = list(self.numeric) + [f"{c}/missing" for c, has in zip(self.numeric, self.indicators_) if has]
        for name, values in zip(self.categorical, self.onehot_):
            names += [f"{name}/rarity"] + [f"{name}={v}" for v in values]
        return names

    # -- storage -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON data."""
        self._check_fitted()
        return {"numeric": list(self.numeric), "categorical": list(self.categorical), "onehot_max": self.onehot_max,
                "on_missing": self.on_missing, "n_rows": self.n_rows_, "medians": list(self.medians_),
                "indicators": list(self.indicators_), "counts": [dict(c) for c in self.counts_]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "encoder") -> TableEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict`'s data, checking every field's type."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(data).__name__}")
        expected = {"numeric", "categorical", "onehot_max", "on_missing", "n_rows", "medians", "indicators", "counts"}
        if set(data) != expected:
            raise ValueError(f"{where}: fields must be {sorted(expected)}, got {sorted(data)}")
        numeric = _str_list(data["numeric"], f"{where}.numeric")
        categorical = _str_list(data["categorical"], f"{where}.categorical")
        onehot_max, n_rows = data["onehot_max"], data["n_rows"]
        if not _is_int(onehot_max) or not _is_int(n_rows) or n_rows < 1:
            raise ValueError(f"{where}: onehot_max and n_rows must be whole numbers (n_rows at least 1)")
        if not isinstance(data["on_missing"], str):
            raise ValueError(f"{where}: on_missing must be a string")
        encoder = cls(numeric, categorical, onehot_max=onehot_max, on_missing=data["on_missing"])
        medians, indicators, counts = data["medians"], data["indicators"], data["counts"]
        if not (isinstance(medians, list) and len(medians) == len(numeric)
                and all(isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) for m in medians)):
            raise ValueError(f"{where}: medians must be one finite number per numeric column")
        if not (isinstance(indicators, list) and len(indicators) == len(numeric) and all(isinstance(b, bool) for b in indicators)):
            raise ValueError(f"{where}: indicators must be one boolean per numeric column")
        if not (isinstance(counts, list) and len(counts) == len(categorical) and all(
                isinstance(c, dict) and all(isinstance(k, str) and _is_int(v) and 1 <= v <= n_rows for k, v in c.items())
                for c in counts)):
            raise ValueError(f"{where}: counts must be one {{value: count}} object per categorical column, "
                             f"counts between 1 and n_rows")
        encoder.n_rows_ = int(n_rows)
        encoder.medians_ = [float(m) for m in medians]
        encoder.indicators_ = list(indicators)
        encoder.counts_ = [dict(c) for c in counts]
        encoder.onehot_ = [sorted(c) if len(c) <= encoder.onehot_max else [] for c in encoder.counts_]
        return encoder

    # -- helpers -----------------------------------------------------------------------
    def _check(self, X_num, X_cat) -> tuple[np.ndarray, np.ndarray]:
        n_num, n_cat = len(self.numeric), len(self.categorical)
        if X_num is None:
            X_num = np.empty((0 if X_cat is None else len(X_cat), n_num))
        X_num = np.asarray(X_num, dtype=np.float64)
        if X_num.ndim != 2 or X_num.shape[1] != n_num:
            raise ValueError(f"expected {n_num} numeric column(s) {self.numeric}, got shape {X_num.shape}")
        if X_cat is None:
            X_cat = np.empty((len(X_num), n_cat), dtype=object)
        X_cat = np.asarray(X_cat, dtype=object)
        if X_cat.ndim != 2 or X_cat.shape[1] != n_cat:
            raise ValueError(f"expected {n_cat} categorical column(s) {self.categorical}, got shape {X_cat.shape}")
        if n_num and n_cat and len(X_num) != len(X_cat):
            raise ValueError(f"{len(X_num)} numeric rows but {len(X_cat)} categorical rows")
        if not n_num:
            X_num = np.empty((len(X_cat), 0))
        if not n_cat:
            X_cat = np.empty((len(X_num), 0), dtype=object)
        if np.isinf(X_num).any():
            raise ValueError("numeric columns hold infinite values; clean them first")
        if self.on_missing == "error" and np.isnan(X_num).any():
            row, col = np.argwhere(np.isnan(X_num))[0]
            raise ValueError(f"missing value in numeric column {self.numeric[col]!r} (row {row}); "
                             "pass on_missing='impute' (CLI: --on-missing impute) to impute it")
        if n_cat:  # text, with None and NaN as the empty value
            flat = ["" if _missing(v) else str(v) for v in X_cat.ravel().tolist()]
            X_cat = np.array(flat, dtype=object).reshape(X_cat.shape)
        return X_num, X_cat

    def _check_fitted(self) -> None:
        if not hasattr(self, "counts_"):
            raise RuntimeError("this TableEncoder is not fitted yet; call fit first")

    def __repr__(self) -> str:
        return f"TableEncoder({len(self.numeric)} numeric, {len(self.categorical)} categorical)"


def rarity(count: np.ndarray, n: int, k: int) -> np.ndarray:
    """``max(0, floor(log2(n / (k * count))))``, an unseen value (count 0) counted as 0.5."""
    with np.errstate(divide="ignore"):
        return np.maximum(0.0, np.floor(np.log2(n / (max(k, 1) * np.maximum(count, 0.5)))))


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_list(value, where: str) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{where}: must be a list of column names")
    return list(value)


def encode_frame(frame, categorical: Sequence[str], *, onehot_max: int = ONEHOT_MAX, on_missing: str = "impute",
                 encoder: TableEncoder | None = None) -> tuple[np.ndarray, TableEncoder]:
    """Encode a pandas DataFrame: ``categorical`` columns by rarity, the others as numbers.

    Fits a new encoder unless ``encoder`` (fitted) is given.  Returns (matrix, encoder).
    """
    import pandas as pd

    categorical = [c for c in frame.columns if c in set(categorical)]
    numeric = [c for c in frame.columns if c not in set(categorical)]
    if encoder is None:
        encoder = TableEncoder([str(c) for c in numeric], [str(c) for c in categorical], onehot_max=onehot_max,
                               on_missing=on_missing)
    X_num = frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) if numeric else None
    X_cat = frame[categorical].astype(object).where(frame[categorical].notna(), "").astype(str).to_numpy(dtype=object) if categorical else None
    if X_num is not None and encoder.on_missing == "error":
        bad = np.isnan(X_num) & frame[numeric].notna().to_numpy()
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"non-numeric value {frame[numeric].iloc[row, col]!r} in column {numeric[col]!r}")
    if not hasattr(encoder, "counts_"):
        encoder.fit(X_num, X_cat)
    return encoder.transform(X_num, X_cat), encoder


class WarmupEncoder:
    """A :class:`TableEncoder` fitted on the first ``warmup`` rows of a stream, then kept.

    Value frequencies are those of the warm-up rows, a value not seen among them scores as
    the rarest, and a missing number gets the warm-up rows' median.  Rows are held back
    until the encoder is fitted, then released together.

    Args:
        numeric: Names of the numeric columns.
        categorical: Names of the categorical columns.
        warmup: Rows the encoder is fitted on (at least 1).

    Example:
        >>> enc = WarmupEncoder(["x"], ["colour"], warmup=256)
        >>> for values, cats in rows:
        ...     for encoded in enc.rows(values, cats):   # nothing until 256 rows, then all of them
        ...         detector.process_one(encoded)
    """

    def __init__(self, numeric: Sequence[str], categorical: Sequence[str], warmup: int) -> None:
        if warmup < 1:
            raise ValueError(f"warmup must be at least 1 row, got {warmup}")
        self.numeric, self.categorical, self.warmup = list(numeric), list(categorical), warmup
        self.pending: list[tuple[np.ndarray, list[str]]] = []
        self.encoder: TableEncoder | None = None

    def rows(self, values: np.ndarray, categories: Sequence[str]) -> list[np.ndarray]:
        """The encoded rows ready now: none while the warm-up rows gather, all of them once
        there are ``warmup``, then each row as it comes."""
        cats = list(categories)
        if self.encoder is not None:
            return [self.encoder.transform(np.asarray(values)[None, :], np.array([cats], dtype=object))[0]]
        self.pending.append((values, cats))
        if len(self.pending) < self.warmup:
            return []
        X_num = np.array([v for v, _ in self.pending], dtype=np.float64).reshape(len(self.pending), -1)
        X_cat = np.array([c for _, c in self.pending], dtype=object).reshape(len(self.pending), -1)
        self.encoder = TableEncoder(self.numeric, self.categorical, on_missing="impute").fit(X_num, X_cat)
        self.pending = []
        return list(self.encoder.transform(X_num, X_cat))
