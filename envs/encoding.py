"""Numeric and categorical table columns encoded as one numeric matrix for the featurizer.

:class:`TableEncoder` follows scikit-learn's ``fit`` / ``transform``.  It is fitted on a
target's rows (numeric values, NaN where missing, and the text of the categorical columns)
and gives, per row:

- each numeric column, missing values replaced by the column's median over the fitting
  rows, plus a missingness indicator (1 = was missing) for every numeric column that had
  missing values among the fitting rows (a column that had none is imputed without one, so
  the width never depends on the rows being scored);
- per categorical column, the value's *rarity*: how many times its share among the ``n``
  fitting rows halves below ``1 / margin`` of the share every value would have if the
  column's ``k`` values were equally common, ``max(0, floor(log2(n / (margin * k *
  count))))``, with ``margin`` :data:`RARITY_MARGIN`; a value never seen there counts as
  half an occurrence, rarer than any value seen (a rare protocol or country is often the
  anomaly).  Values down to a quarter of the uniform share all get 0: the featurizer
  rescales every column to its range, so a finer measure would turn the sampling noise of
  a column of equally common values, or a moderately skewed one (a chess piece on an
  edge file), into a full-range feature that marks a large share of the rows as rare.
  An empty field is a value of its own (``""``): missingness imputed as a category;
- for categorical columns with at most ``onehot_max`` distinct values, additionally one
  indicator per value seen (unseen values: all zero).  Off by default (``onehot_max=0``):
  ``anomaly-gym bench tables`` measures what it gives;
- with ``pairs`` (the default), one more column, ``pairs/rarity``: the conditional rarity of value
  pairs.  For every pair of categorical columns with 2 to :data:`PAIR_MAX_VALUES` values
  each, a row's combination (a, b) is compared with how often it would occur if the two
  columns were independent, ``count(a) * count(b) / n``: ``max(0, floor(log2(expected /
  count(a, b))))``, a combination never seen counting as half an occurrence; the column
  holds the largest of these over the pairs (a combination of common values that never
  occur together is the anomaly that single-column rarity misses).  A value never seen
  has no expected count and adds nothing here (its own rarity already says it).
  ``anomaly-gym bench tables`` measures what it gives: on by default (:data:`PAIRS`);
- with ``even_onehot``, one-hot indicators for columns of at most :data:`EVEN_MAX_VALUES`
  values that are about equally common, whose rarities can hardly tell the values apart.
  Off by default: it helps a table of board coordinates and hurts a customer table.
- with ``letter_codes`` (the default), one more column, ``c/position``, for a column whose
  values are :data:`LETTER_MIN` or more consecutive single letters of one case (``a`` to
  ``h``, ``A`` to ``E``): such a column is an ordinal code (grades, size classes, board
  files), and the letter's place in the alphabet (``a`` = 1) keeps the order that rarity
  and one-hot indicators lose.  A letter never seen gets its place too; any other value
  never seen, and an empty field, get the fitting rows' median place (its rarity still
  marks it).  Columns of other values (``tcp``, ``S``/``M``/``L``, ``A``/``H``/``K``) get
  no such column.  ``anomaly-gym bench tables`` measures what it gives;
- with ``drop_constant``, no rarity column that is 0 on every fitting row: a column whose
  values are all about equally common (every value's rarity 0), and pair rarity when no
  combination seen is rare.  Such a column carries nothing about the fitting rows, yet
  it perturbs the randomised detectors (on chess, whose three text columns are board
  files of about equally common values, the four constant columns took the policy from
  0.722 to 0.715 AUROC in ``anomaly-gym bench tables``).  For an encoder that scores the
  rows it was fitted on (``detect --mode batch`` refitting, training tasks); off by
  default, because an encoder kept for new rows (an adapted bundle, a stream's warm-up)
  needs those columns to mark values it never saw.

Fitting and transforming are vectorised (pandas hashing, numpy indexing): no Python loop
runs over the rows; ``anomaly-gym bench encoding`` measures rows/s and peak memory.

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
#: A value is rare from ``1 / RARITY_MARGIN`` of the uniform share down (1: from the uniform
#: share itself, as bundles written before this setting existed encode).
RARITY_MARGIN = 2
#: Most distinct values a categorical column keeps counts of; the rest count as unseen.
MAX_CATEGORIES = 100_000

ON_MISSING = ("impute", "error")
#: The conditional rarity of value pairs is on by default: ``anomaly-gym bench tables``
#: measures what it gives.
PAIRS = True
#: Categorical columns with more distinct values than this take no part in pair rarity.
PAIR_MAX_VALUES = 100
#: A column of at most this many values that are about equally common gets one-hot
#: indicators (with ``even_onehot``): its values' rarities can hardly tell them apart.
EVEN_MAX_VALUES = 10
#: "About equally common": the values' entropy is at least this share of log(k).
EVEN_ENTROPY = 0.9
#: Columns of letter codes get a ``position`` column (see the module docstring) by default.
LETTER_CODES = True
#: Fewest distinct consecutive letters that make a column of letter codes.
LETTER_MIN = 3
#: Up to this many rows, values are looked up one by one in a dict (a stream scores rows
#: one at a time, where pandas' fixed cost per call would dominate).
SMALL_ROWS = 64
#: Rows encoded at a time by :meth:`TableEncoder.transform`.
CHUNK_ROWS = 32_768


class TableEncoder:
    """Encode numeric and categorical columns as one finite numeric matrix.

    Args:
        numeric: Names of the numeric columns, in the order of ``X_num``'s columns.
        categorical: Names of the categorical columns, in the order of ``X_cat``'s columns.
        onehot_max: Categorical columns with at most this many distinct values among the
            fitting rows also get one indicator per value (0: none).
        on_missing: ``"impute"`` (default) or ``"error"``: a missing numeric value raises
            ``ValueError`` (categorical columns always treat an empty field as a value).
        pairs: Add the ``pairs/rarity`` column, the conditional rarity of value pairs (when
            at least two categorical columns have 2 to :data:`PAIR_MAX_VALUES` values).
        even_onehot: Give one-hot indicators to columns of at most :data:`EVEN_MAX_VALUES`
            values that are about equally common (off by default: see the module docstring).
        rarity_margin: A value is rare from ``1 / rarity_margin`` of the uniform share down.
        drop_constant: Leave out rarity columns that are 0 on every fitting row (see the module
            docstring); for an encoder that only scores its fitting rows.
        letter_codes: Add a ``position`` column for each column of consecutive single letters
            (see the module docstring).

    Example:
        >>> enc = TableEncoder(["amount"], ["country"]).fit(X_num, X_cat)
        >>> X = enc.transform(X_num, X_cat)      # (n, enc.n_outputs), float64, finite
    """

    def __init__(
        self,
        numeric: Sequence[str] = (),
        categorical: Sequence[str] = (),
        *,
        onehot_max: int = ONEHOT_MAX,
        on_missing: str = "impute",
        pairs: bool = PAIRS,
        even_onehot: bool = False,
        rarity_margin: int = RARITY_MARGIN,
        drop_constant: bool = False,
        letter_codes: bool = LETTER_CODES,
    ) -> None:
        self.numeric = [str(c) for c in numeric]
        self.categorical = [str(c) for c in categorical]
        self.onehot_max = int(onehot_max)
        self.on_missing = on_missing
        self.pairs = bool(pairs)
        self.even_onehot = bool(even_onehot)
        self.rarity_margin = int(rarity_margin)
        self.drop_constant = bool(drop_constant)
        self.letter_codes = bool(letter_codes)
        if self.rarity_margin < 1:
            raise ValueError(f"rarity_margin must be 1 or more, got {rarity_margin}")
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
        """Learn medians, which columns need missingness indicators, value and pair counts."""
        self._fit(*self._check(X_num, X_cat))
        return self

    def _fit(self, X_num: np.ndarray, X_cat: np.ndarray) -> list[np.ndarray]:
        """:meth:`fit` on checked rows; returns each categorical column's codes of those rows."""
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
        texts = [_as_text(X_cat[:, j]) for j in range(len(self.categorical))]
        counted = [_value_counts(text) for text in texts]
        self.counts_ = [c for c, _ in counted]
        codes = [c for _, c in counted]  # as _codes gives them, without hashing the values again
        self.pair_counts_ = {}
        self._prepare()
        for i, j in self._pair_columns():
            ki, kj = len(self.counts_[i]), len(self.counts_[j])
            both = (codes[i] >= 0) & (codes[j] >= 0)
            table = np.bincount(codes[i][both] * kj + codes[j][both], minlength=ki * kj).reshape(ki, kj)
            self.pair_counts_[(i, j)] = table
        self._set_outputs()
        return codes

    # -- transforming ------------------------------------------------------------------
    def transform(self, X_num=None, X_cat=None) -> np.ndarray:
        """The encoded rows: float64, shape (n, :attr:`n_outputs`), finite.

        Encoded :data:`CHUNK_ROWS` rows at a time (the output columns of a block of rows stay
        in the CPU's cache; temporary arrays stay block-sized).
        """
        self._check_fitted()
        return self._transform(*self._check(X_num, X_cat))

    def _transform(self, X_num: np.ndarray, X_cat: np.ndarray, codes: list[np.ndarray] | None = None) -> np.ndarray:
        """:meth:`transform` of checked rows (``codes``: their categorical codes, when known)."""
        n = len(X_num)
        out = np.empty((n, self.n_outputs))
        for start in range(0, n, CHUNK_ROWS):  # a block of rows of a C-ordered array is contiguous
            stop = min(start + CHUNK_ROWS, n)
            part = None if codes is None else [c[start:stop] for c in codes]
            self._encode_rows(X_num[start:stop], X_cat[start:stop], out[start:stop], part)
        return out

    def _encode_rows(self, X_num: np.ndarray, X_cat: np.ndarray, out: np.ndarray, codes=None) -> None:
        """Write the encoding of some checked rows into ``out`` (rows x :attr:`n_outputs`)."""
        at = len(self.numeric)
        if self.numeric:
            missing = np.isnan(X_num)
            out[:, :at] = np.where(missing, self._medians_, X_num)
            out[:, at : at + len(self._flagged_)] = missing[:, self._flagged_]
            at += len(self._flagged_)
        if codes is None:
            codes = [self._column_codes(X_cat[:, j], j) for j in range(len(self.categorical))]
        for j, counts in enumerate(self.counts_):
            if self._positions_[j] is not None:
                out[:, at] = self._letter_positions(X_cat[:, j], codes[j], j)
                at += 1
            seen = self._count_arrays_[j][codes[j]]  # code -1 (unseen) picks the trailing 0
            if self._rarity_out_[j]:
                out[:, at] = rarity(seen, self.n_rows_, len(counts), self.rarity_margin)
                at += 1
            if self.onehot_[j]:
                width = len(self.onehot_[j])
                block = out[:, at : at + width]
                block[:] = 0.0
                hit = codes[j] >= 0
                block[np.flatnonzero(hit), self._onehot_pos_[j][codes[j][hit]]] = 1.0
                at += width
        if self._pairs_out_:
            out[:, at] = self._pair_rarity(codes)

    def _letter_positions(self, column: np.ndarray, codes: np.ndarray, j: int) -> np.ndarray:
        """Column ``j``'s letters' places in the alphabet; a value not seen, if a letter, its place."""
        positions = self._positions_[j][codes]  # code -1 (unseen) picks the trailing median
        for r in np.flatnonzero(codes < 0).tolist():
            place = _letter_place(_text(column[r]))
            if place is not None:
                positions[r] = place
        return positions

    def _pair_rarity(self, codes: list[np.ndarray]) -> np.ndarray:
        """Per row, the largest conditional rarity of its value pairs (0 without pairs)."""
        best = np.zeros(len(codes[0]) if codes else 0)
        if len(best) <= SMALL_ROWS:  # a stream's rows: plain Python beats a dozen numpy calls per pair
            lists, counts = [c.tolist() for c in codes], self._count_lists_
            for r in range(len(best)):
                for (i, j), table in self.pair_counts_.items():
                    a, b = lists[i][r], lists[j][r]
                    if a >= 0 and b >= 0:
                        ratio = counts[i][a] * counts[j][b] / self.n_rows_ / max(int(table[a, b]), 0.5)
                        best[r] = max(best[r], float(math.floor(math.log2(ratio))))
            return best
        for (i, j), table in self.pair_counts_.items():
            both = (codes[i] >= 0) & (codes[j] >= 0)
            a, b = codes[i][both], codes[j][both]
            expected = self._count_arrays_[i][a] * self._count_arrays_[j][b] / self.n_rows_
            observed = np.maximum(table[a, b], 0.5)
            score = np.maximum(0.0, np.floor(np.log2(expected / observed)))  # both counts >= 1: no zero
            best[both] = np.maximum(best[both], score)
        return best

    def fit_transform(self, X_num=None, X_cat=None) -> np.ndarray:
        """``fit(X_num, X_cat).transform(X_num, X_cat)``, the values hashed once."""
        X_num, X_cat = self._check(X_num, X_cat)
        return self._transform(X_num, X_cat, self._fit(X_num, X_cat))

    @property
    def n_outputs(self) -> int:
        """Width of the encoded matrix."""
        self._check_fitted()
        return self._n_outputs_

    @property
    def letter_columns(self) -> list[str]:
        """The categorical columns read as letter codes (each gets a ``position`` column)."""
        self._check_fitted()
        return [c for c, places in zip(self.categorical, self._positions_) if places is not None]

    @property
    def output_names(self) -> list[str]:
        """Name of each encoded column: ``x``, ``x/missing``, ``c/rarity``, ``c=value``, ``pairs/rarity``."""
        self._check_fitted()
        names = list(self.numeric) + [f"{c}/missing" for c, has in zip(self.numeric, self.indicators_) if has]
        for name, values, kept, places in zip(self.categorical, self.onehot_, self._rarity_out_, self._positions_):
            names += [f"{name}/position"] * (places is not None) + [f"{name}/rarity"] * kept + [f"{name}={v}" for v in values]
        return names + (["pairs/rarity"] if self._pairs_out_ else [])

    # -- storage -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The fitted state as plain JSON data (``pairs`` and ``even_onehot`` only when they are on)."""
        self._check_fitted()
        data = {
            "numeric": list(self.numeric),
            "categorical": list(self.categorical),
            "onehot_max": self.onehot_max,
            "on_missing": self.on_missing,
            "n_rows": self.n_rows_,
            "medians": list(self.medians_),
            "indicators": list(self.indicators_),
            "counts": [dict(c) for c in self.counts_],
            "rarity_margin": self.rarity_margin,
        }
        if self.even_onehot:
            data["even_onehot"] = True
        if self.drop_constant:
            data["drop_constant"] = True
        if self.letter_codes:
            data["letter_codes"] = True
        if self.pairs:
            data["pairs"] = []
            for (i, j), table in self.pair_counts_.items():
                a, b = np.nonzero(table)
                keys_i, keys_j = list(self.counts_[i]), list(self.counts_[j])
                data["pairs"].append({"columns": [i, j], "counts": [[keys_i[p], keys_j[q], int(table[p, q])] for p, q in zip(a.tolist(), b.tolist())]})
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "encoder") -> TableEncoder:
        """Rebuild a fitted encoder from :meth:`to_dict`'s data, checking every field's type."""
        if not isinstance(data, dict):
            raise ValueError(f"{where}: must be a JSON object, got {type(data).__name__}")
        expected = {"numeric", "categorical", "onehot_max", "on_missing", "n_rows", "medians", "indicators", "counts"}
        optional = {"pairs", "even_onehot", "rarity_margin", "drop_constant", "letter_codes"}
        if not expected <= set(data) <= expected | optional:
            raise ValueError(f"{where}: fields must be {sorted(expected)} (and optionally {sorted(optional)}), got {sorted(data)}")
        margin = data.get("rarity_margin", 1)  # absent: written before the margin existed
        if not _is_int(margin) or margin < 1:
            raise ValueError(f"{where}: rarity_margin must be a whole number, 1 or more")
        for flag in ("even_onehot", "drop_constant", "letter_codes"):
            if data.get(flag, True) is not True:
                raise ValueError(f"{where}: {flag}, when present, must be true")
        numeric = _str_list(data["numeric"], f"{where}.numeric")
        categorical = _str_list(data["categorical"], f"{where}.categorical")
        onehot_max, n_rows = data["onehot_max"], data["n_rows"]
        if not _is_int(onehot_max) or not _is_int(n_rows) or n_rows < 1:
            raise ValueError(f"{where}: onehot_max and n_rows must be whole numbers (n_rows at least 1)")
        if not isinstance(data["on_missing"], str):
            raise ValueError(f"{where}: on_missing must be a string")
        encoder = cls(
            numeric,
            categorical,
            onehot_max=onehot_max,
            on_missing=data["on_missing"],
            pairs="pairs" in data,
            even_onehot="even_onehot" in data,
            rarity_margin=margin,
            drop_constant="drop_constant" in data,
            letter_codes="letter_codes" in data,  # absent: written before letter codes, or off
        )
        medians, indicators, counts = data["medians"], data["indicators"], data["counts"]
        if not (
            isinstance(medians, list)
            and len(medians) == len(numeric)
            and all(isinstance(m, (int, float)) and not isinstance(m, bool) and math.isfinite(m) for m in medians)
        ):
            raise ValueError(f"{where}: medians must be one finite number per numeric column")
        if not (isinstance(indicators, list) and len(indicators) == len(numeric) and all(isinstance(b, bool) for b in indicators)):
            raise ValueError(f"{where}: indicators must be one boolean per numeric column")
        if not (
            isinstance(counts, list)
            and len(counts) == len(categorical)
            and all(isinstance(c, dict) and all(isinstance(k, str) and _is_int(v) and 1 <= v <= n_rows for k, v in c.items()) for c in counts)
        ):
            raise ValueError(f"{where}: counts must be one {{value: count}} object per categorical column, counts between 1 and n_rows")
        encoder.n_rows_ = int(n_rows)
        encoder.medians_ = [float(m) for m in medians]
        encoder.indicators_ = list(indicators)
        encoder.counts_ = [dict(c) for c in counts]
        encoder.pair_counts_ = {}
        encoder._prepare()
        encoder.pair_counts_ = _pair_tables(encoder, data.get("pairs", []), f"{where}.pairs")
        encoder._set_outputs()
        return encoder

    # -- helpers -----------------------------------------------------------------------
    def _prepare(self) -> None:
        """Lookup structures derived from the fitted state: per column a hash index, a dict and a
        count array; the one-hot columns; the width."""
        import pandas as pd

        self.onehot_ = [sorted(c) if len(c) <= self.onehot_max or (self.even_onehot and _even(c)) else [] for c in self.counts_]
        self._index_ = [pd.Index(list(c), dtype=object) for c in self.counts_]
        self._lookup_ = [{v: i for i, v in enumerate(c)} for c in self.counts_]
        self._count_arrays_ = [np.array([*c.values(), 0], dtype=np.float64) for c in self.counts_]
        self._onehot_pos_ = [np.argsort(np.argsort(list(c), kind="stable")) if hot else None for c, hot in zip(self.counts_, self.onehot_)]
        self._count_lists_ = [list(c.values()) for c in self.counts_]
        self._positions_ = [_letter_positions(c) if self.letter_codes else None for c in self.counts_]
        self._medians_ = np.asarray(self.medians_, dtype=np.float64)
        self._flagged_ = [j for j, has in enumerate(self.indicators_) if has]
        self._set_outputs()

    def _set_outputs(self) -> None:
        """Which rarity columns are written, and the width.  With ``drop_constant``, a column's
        rarity is left out when every value seen has rarity 0, and pair rarity when every
        combination seen scores 0: such a column is 0 on every fitting row.  (When that would
        leave no column at all, every column is kept.)"""
        keep = not self.drop_constant
        counts = [a[:-1] for a in self._count_arrays_]  # the values seen (the trailing 0 is "unseen")
        self._rarity_out_ = [
            keep
            or bool(rarity(counts[j], self.n_rows_, len(c), self.rarity_margin).any())
            or bool(counts[j].sum() < self.n_rows_)  # values past MAX_CATEGORIES: unseen, rare
            for j, c in enumerate(self.counts_)
        ]
        self._pairs_out_ = bool(self._pair_columns()) and (
            keep or any(_pair_scores(table, counts[i], counts[j], self.n_rows_).any() for (i, j), table in self.pair_counts_.items())
        )
        if not (self.numeric or any(self._rarity_out_) or any(self.onehot_) or self._pairs_out_ or any(p is not None for p in self._positions_)):
            self._rarity_out_, self._pairs_out_ = [True] * len(self.counts_), bool(self._pair_columns())
        self._n_outputs_ = len(self.output_names)

    def _column_codes(self, column: np.ndarray, j: int) -> np.ndarray:
        """:meth:`_codes` of a column of any values; a few rows (a stream's) by plain dict lookups,
        which cost less than pandas' fixed cost per call."""
        if len(column) > SMALL_ROWS:
            return self._codes(_as_text(column), j)
        lookup = self._lookup_[j]
        return np.fromiter((lookup.get(_text(v), -1) for v in column.tolist()), dtype=np.intp, count=len(column))

    def _codes(self, text: np.ndarray, j: int) -> np.ndarray:
        """Position of each value of column ``j`` (text) in ``counts_[j]``, -1 for a value not counted there."""
        import pandas as pd

        return self._index_[j].get_indexer(pd.Index(text, dtype=object, copy=False))

    def _pair_columns(self) -> list[tuple[int, int]]:
        if not self.pairs:
            return []
        usable = [j for j, c in enumerate(self.counts_) if 2 <= len(c) <= PAIR_MAX_VALUES]
        return [(i, j) for k, i in enumerate(usable) for j in usable[k + 1 :]]

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
            raise ValueError(
                f"missing value in numeric column {self.numeric[col]!r} (row {row}); pass on_missing='impute' (CLI: --on-missing impute) to impute it"
            )
        return X_num, X_cat

    def _check_fitted(self) -> None:
        if not hasattr(self, "counts_"):
            raise RuntimeError("this TableEncoder is not fitted yet; call fit first")

    def __repr__(self) -> str:
        return f"TableEncoder({len(self.numeric)} numeric, {len(self.categorical)} categorical)"


def _text(value) -> str:
    """One categorical value as text, None and NaN as the empty value (as :func:`_as_text` does)."""
    if isinstance(value, str):
        return value
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _as_text(column: np.ndarray) -> np.ndarray:
    """A categorical column's values as text (``str``), None and NaN as the empty value ``""``."""
    import pandas as pd

    missing = pd.isna(column)
    if pd.api.types.infer_dtype(column, skipna=True) not in ("string", "empty"):
        column = column.astype(str).astype(object)  # numbers (integer codes): str() of each, in numpy's loop
    elif missing.any():
        column = column.copy()
    else:
        return column
    column[missing] = ""
    return column


def _even(counts: dict[str, int]) -> bool:
    """2 to :data:`EVEN_MAX_VALUES` values whose entropy is at least :data:`EVEN_ENTROPY` of log(k)."""
    k = len(counts)
    if not 2 <= k <= EVEN_MAX_VALUES:
        return False
    p = np.array(list(counts.values()), dtype=np.float64)
    p /= p.sum()
    return float(-(p * np.log(p)).sum() / np.log(k)) >= EVEN_ENTROPY


def _letter_place(value: str) -> int | None:
    """A single ASCII letter's place in the alphabet (``a`` and ``A`` = 1), else None."""
    return ord(value.lower()) - 96 if len(value) == 1 and value.isascii() and value.isalpha() else None


def _letter_positions(counts: dict[str, int]) -> np.ndarray | None:
    """Each counted value's place, then the median place for values not counted; None unless the
    values (the empty value aside) are :data:`LETTER_MIN` or more consecutive letters of one case."""
    letters = [v for v in counts if v != ""]
    if not LETTER_MIN <= len(letters) <= 26:
        return None
    places = [_letter_place(v) for v in letters]
    if None in places or not (all(v.islower() for v in letters) or all(v.isupper() for v in letters)):
        return None
    if max(places) - min(places) + 1 != len(places):
        return None
    order = np.argsort(places, kind="stable")
    cumulative = np.cumsum(np.array([counts[letters[i]] for i in order], dtype=np.float64))
    median = float(np.array(places)[order][np.searchsorted(cumulative, cumulative[-1] / 2)])
    return np.array([_letter_place(v) or median for v in counts] + [median], dtype=np.float64)


def _value_counts(column: np.ndarray) -> tuple[dict[str, int], np.ndarray]:
    """``{value: count}``, most common first (ties by value), at most :data:`MAX_CATEGORIES`
    values; and each row's position in it (-1 for a value left out)."""
    import pandas as pd

    codes, uniques = pd.factorize(column)
    counts = np.bincount(codes, minlength=len(uniques))
    values = np.asarray(uniques, dtype=object)
    order = np.lexsort((values.astype(str), -counts))[:MAX_CATEGORIES]
    position = np.full(len(uniques) + 1, -1, dtype=np.intp)  # the last slot: code -1 (none here: text has no NaN)
    position[order] = np.arange(len(order))
    return {str(values[k]): int(counts[k]) for k in order}, position[codes]


def _pair_tables(encoder: TableEncoder, pairs: Any, where: str) -> dict[tuple[int, int], np.ndarray]:
    """The pair count tables of :meth:`TableEncoder.to_dict`'s ``pairs``, checked."""
    tables, wanted = {}, encoder._pair_columns()
    if not isinstance(pairs, list) or len(pairs) != len(wanted):
        raise ValueError(f"{where}: must be a list of {len(wanted)} pair(s) of categorical columns")
    for entry, (i, j) in zip(pairs, wanted):
        if not (isinstance(entry, dict) and set(entry) == {"columns", "counts"} and entry["columns"] == [i, j] and isinstance(entry["counts"], list)):
            raise ValueError(f"{where}: each pair must be {{'columns': [{i}, {j}], 'counts': [[a, b, count], ...]}}")
        table = np.zeros((len(encoder.counts_[i]), len(encoder.counts_[j])), dtype=np.int64)
        for item in entry["counts"]:
            if not (
                isinstance(item, list)
                and len(item) == 3
                and isinstance(item[0], str)
                and isinstance(item[1], str)
                and item[0] in encoder.counts_[i]
                and item[1] in encoder.counts_[j]
                and _is_int(item[2])
                and 1 <= item[2] <= encoder.n_rows_
            ):
                raise ValueError(f"{where}: bad pair count {item!r}: give [value, value, count] with counted values")
            table[encoder._index_[i].get_loc(item[0]), encoder._index_[j].get_loc(item[1])] = item[2]
        tables[(i, j)] = table
    return tables


def _pair_scores(table: np.ndarray, counts_i: np.ndarray, counts_j: np.ndarray, n: int) -> np.ndarray:
    """The conditional rarity of every combination counted in a pair table (see the module docstring)."""
    a, b = np.nonzero(table)
    return np.maximum(0.0, np.floor(np.log2(counts_i[a] * counts_j[b] / n / table[a, b])))


def rarity(count: np.ndarray, n: int, k: int, margin: int = RARITY_MARGIN) -> np.ndarray:
    """``max(0, floor(log2(n / (margin * k * count))))``, an unseen value (count 0) counted as 0.5."""
    return np.maximum(0.0, np.floor(np.log2(n / (margin * max(k, 1) * np.maximum(count, 0.5)))))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_list(value, where: str) -> list[str]:
    if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        raise ValueError(f"{where}: must be a list of column names")
    return list(value)


def encode_frame(
    frame, categorical: Sequence[str], *, on_missing: str = "impute", encoder: TableEncoder | None = None, **options
) -> tuple[np.ndarray, TableEncoder]:
    """Encode a pandas DataFrame: ``categorical`` columns by rarity, the others as numbers.

    Fits a new encoder (``options``: :class:`TableEncoder`'s keyword arguments such as
    ``onehot_max`` or ``pairs``) unless ``encoder`` (fitted) is given.  Returns (matrix, encoder).
    """
    import pandas as pd

    categorical = [c for c in frame.columns if c in set(categorical)]
    numeric = [c for c in frame.columns if c not in set(categorical)]
    if encoder is None:
        encoder = TableEncoder([str(c) for c in numeric], [str(c) for c in categorical], on_missing=on_missing, **options)
    X_num = frame[numeric].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64) if numeric else None
    X_cat = frame[categorical].astype(object).where(frame[categorical].notna(), "").astype(str).to_numpy(dtype=object) if categorical else None
    if X_num is not None and encoder.on_missing == "error":
        bad = np.isnan(X_num) & frame[numeric].notna().to_numpy()
        if bad.any():
            row, col = np.argwhere(bad)[0]
            raise ValueError(f"non-numeric value {frame[numeric].iloc[row, col]!r} in column {numeric[col]!r}")
    if not hasattr(encoder, "counts_"):
        return encoder.fit_transform(X_num, X_cat), encoder
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
