"""Read CSV rows for detection: one reader, one set of rules, for whole files and for streams.

:class:`CsvReader` yields one :class:`Record` per CSV record, in input order, each with its
own fields and the line it starts on; :func:`read_table` collects them for batch use.
``anomaly-gym detect`` uses both (batch and stream mode), and so can any Python code::

    from anomaly_gym.envs.csvio import CsvReader
    reader = CsvReader(["metrics.csv"])
    for rec in reader:                      # reader.header / reader.feature_names after the first
        if rec.error is None:
            use(rec.values)                 # float64 feature values, finite
        else:
            print(f"{rec.source}:{rec.line}: {rec.error}")

Text
    UTF-8, with or without a byte-order mark; UTF-16 and UTF-32 with a byte-order mark.
    Anything else (UTF-16 without a byte-order mark, Latin-1 bytes) is refused with an
    :class:`InputError` that names the encoding problem.  Records end at CR, LF or CRLF,
    mixed freely; a quoted field may hold commas, quotes (doubled) and line breaks of any
    kind; a field may be any length.

Header
    The first record names the columns.  When every field of it is a number there is no
    header: under ``on_error="fail"`` that is an error, otherwise the columns are named
    ``col1``, ``col2``, ... and the record is data.  Several inputs are read as one table
    and must have the same header.

Feature columns
    ``columns`` when given.  Otherwise they are decided once, before the first record is
    returned, from the *sample*: the well-formed records (the header's number of fields)
    among the first ``sample_rows`` data records (32 by default; all of them when there are
    fewer; when none of them is well-formed, the reading goes on to the first one that is).  A
    column is a feature when more than half of its non-empty values in the sample are
    numbers (text that Python's ``float`` reads: ``7``, `` 7 ``, ``1e3``, ``nan``).  The
    decision never changes afterwards and no single row decides it: a row with text in a
    feature column is a bad row, it does not turn the column into text.  The sample is read
    before the first record comes back, so a stream answers its first rows once the sample
    is in (``detect --mode stream`` samples min(32, ``--warmup``) rows).

    Two kinds of numeric column are left out, with a note, unless ``columns`` names them:
    a column named like a label (``label``, ``y``, ``class``, ``is_anomaly``, ``target``,
    ... in any case: :data:`anomaly_gym.envs.tasks.LABEL_LIKE_NAMES`), and an identifier:
    a column named ``id``, ``index``, ``row`` or ``..._id``, or one whose sample values are
    whole numbers, all different and strictly increasing over at least 16 rows (a row
    counter or a Unix time).  Neither says anything about how anomalous a row is.

Bad rows
    Each comes back with ``error`` set to the reason and ``values`` None:

    - an empty line (``empty line``);
    - the wrong number of fields (``expected 5 fields, got 6``); ``fields`` is then padded
      or cut to the header's width;
    - a feature value that is empty, not a number, NaN or infinite, or beyond float32's
      range (|x| > 3.4e38, which the detectors' float32 features cannot hold):
      ``missing value in column 'x'``, ``non-numeric value 'abc' in column 'x'``,
      ``non-finite value 'nan' in column 'x'``, ``value '1e39' in column 'x' is beyond
      float32's range (|x| <= 3.4e38)``.

    File-level problems (no such file, an empty input, an undecodable text, headers that
    differ, a duplicate or reserved column name, no numeric column) raise
    :class:`InputError` (a ``ValueError``) or ``FileNotFoundError``.

Output
    :func:`format_row` writes one record per row, quoting every field that holds a comma,
    a quote, CR or LF, so that what is written reads back as the same fields.
    :class:`CsvOutput` and :class:`JsonlOutput` write rows with appended fields (the
    scores ``anomaly-gym detect`` adds) as CSV or as JSON Lines.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import io
import itertools
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence, Union

import numpy as np
from anomaly_gym.envs.tasks import LABEL_LIKE_NAMES

STDIN = "-"
SAMPLE_ROWS = 32  # data records that decide the feature columns
FLOAT32_MAX = float(np.finfo(np.float32).max)

Source = Union[str, Path, IO[bytes]]

_BOMS = (  # longest first: the UTF-32 LE mark starts like the UTF-16 LE one
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


class InputError(ValueError):
    """Bad input at a known place: ``<source>:<line>: <reason>``."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source, self.line, self.reason = source, line, reason


@dataclass(slots=True)
class Record:
    """One CSV record: where it starts, its fields (the header's width), and its feature
    values (float64) or the reason it is bad."""

    source: str
    line: int
    fields: list[str]
    values: np.ndarray | None = None
    error: str | None = None


def is_number(text: str) -> bool:
    """Whether ``float(text)`` reads the text (NaN and infinity included)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_value(text: str, column: str) -> tuple[float, str | None]:
    """(value, None) for a finite number within float32's range, else (nan, the reason)."""
    if not text.strip():
        return math.nan, f"missing value in column {column!r}"
    try:
        value = float(text)
    except ValueError:
        return math.nan, f"non-numeric value {_clip(text)!r} in column {column!r}"
    if not math.isfinite(value):
        return math.nan, f"non-finite value {_clip(text)!r} in column {column!r}"
    if abs(value) > FLOAT32_MAX:
        return math.nan, f"value {_clip(text)!r} in column {column!r} is beyond float32's range (|x| <= 3.4e38)"
    return value, None


def parse_values(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`parse_value` over a whole column at once: (values, which are bad); a bad
    value is NaN."""
    try:
        values = np.fromiter(map(float, texts), dtype=np.float64, count=len(texts))
    except ValueError:
        try:  # empty fields (missing values) are NaN; the rest must still read as numbers
            values = np.fromiter((float(t) if t else math.nan for t in texts), dtype=np.float64, count=len(texts))
        except ValueError:  # some text is not a number: value by value
            values = np.array([parse_value(t, "")[0] for t in texts], dtype=np.float64)
    bad = ~(np.abs(values) <= FLOAT32_MAX)  # NaN and infinity included
    values[bad] = np.nan
    return values, bad


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def display_name(source: Source) -> str:
    if isinstance(source, (str, Path)):
        return "<stdin>" if str(source) == STDIN else str(source)
    return str(getattr(source, "name", "<stream>"))


ID_LIKE_NAMES = frozenset({"id", "index", "row", "idx"})
#: Sample rows needed before whole numbers that only grow are taken for an identifier.
ID_MIN_ROWS = 16


def feature_columns(header: Sequence[str], sample: Sequence[Sequence[str]]) -> list[int]:
    """The columns whose non-empty values in ``sample`` are mostly (over half) numbers,
    label-like and identifier-like columns left out (see :func:`classify_columns`)."""
    return classify_columns(header, sample)[0]


#: Column kinds :func:`infer_column_types` gives; the first three are features.
COLUMN_KINDS = ("numeric", "categorical", "boolean", "timestamp", "identifier", "label", "ignored", "empty")
BOOLEAN_TEXTS = frozenset({"true", "false", "yes", "no", "t", "f", "y", "n"})
#: Share of distinct values above which a text column counts as an identifier (nearly unique).
ID_DISTINCT_SHARE = 0.9
_TIMESTAMP = re.compile(
    r"^\s*(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})"
    r"([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?\s*(Z|[+-]\d{2}:?\d{2}|[AaPp][Mm])?)?\s*$"
)


@dataclass(frozen=True)
class ColumnType:
    """A column's inferred (or user-given) kind and why: ``numeric``, ``categorical`` and
    ``boolean`` columns are features; the others pass through."""

    name: str
    kind: str
    why: str

    @property
    def is_feature(self) -> bool:
        return self.kind in ("numeric", "categorical", "boolean")


def infer_column_types(
    header: Sequence[str], sample: Sequence[Sequence[str]], *, categorical: Sequence[str] = (), numeric: Sequence[str] = (), ignore: Sequence[str] = ()
) -> list[ColumnType]:
    """The kind of every column of ``header``, from the sample rows and the overrides.

    ``categorical``, ``numeric`` and ``ignore`` name columns whose kind the user sets (an
    integer code column is categorical only when named so).  Otherwise a column whose
    non-empty sample values are mostly numbers is numeric, unless it is named like a label
    or an identifier or holds whole numbers that only increase (a row counter, a Unix
    time); a text column is a label (by name), boolean (true/false, yes/no, t/f, y/n),
    a timestamp (dates, ISO or d/m/y, with or without a time of day), an identifier (named
    so, or over :data:`ID_DISTINCT_SHARE` of its values distinct over at least
    :data:`ID_MIN_ROWS` rows), or else categorical.
    """
    overrides = {}
    for kind, names in (("ignored", ignore), ("numeric", numeric), ("categorical", categorical)):
        for name in names:
            if name not in header:
                raise ValueError(
                    f"--{'ignore' if kind == 'ignored' else kind} names column {name!r}, which the header does not have; the columns are {list(header)}"
                )
            if name in overrides:
                raise ValueError(f"column {name!r} is named in two of --categorical, --numeric and --ignore")
            overrides[name] = kind
    return [
        ColumnType(name, overrides[name], "named by the user") if name in overrides else _infer_one(name, [row[i] for row in sample if row[i].strip()])
        for i, name in enumerate(header)
    ]


def _infer_one(name: str, texts: list[str]) -> ColumnType:
    key = name.strip().lower()
    if not texts:
        return ColumnType(name, "empty", "no value in the sample")
    if key in LABEL_LIKE_NAMES:
        return ColumnType(name, "label", "named like a label")
    if key in ID_LIKE_NAMES or key.endswith("_id"):
        return ColumnType(name, "identifier", "named like an identifier")
    if 2 * sum(map(is_number, texts)) > len(texts):
        if _increasing_whole_numbers(texts):
            return ColumnType(name, "identifier", f"whole numbers that only increase over the first {len(texts)} rows, like an identifier")
        return ColumnType(name, "numeric", "mostly numbers")
    values = [t.strip().lower() for t in texts]
    if set(values) <= BOOLEAN_TEXTS and len(set(values)) <= 2:
        return ColumnType(name, "boolean", "true/false or yes/no values")
    if 2 * sum(bool(_TIMESTAMP.match(t)) for t in texts) > len(texts):
        return ColumnType(name, "timestamp", "dates or times")
    if len(texts) >= ID_MIN_ROWS and len(set(texts)) > ID_DISTINCT_SHARE * len(texts):
        return ColumnType(name, "identifier", f"{len(set(texts))} distinct values in {len(texts)} rows, like an identifier")
    return ColumnType(name, "categorical", f"text with {len(set(texts))} distinct values in {len(texts)} rows")


def classify_columns(header: Sequence[str], sample: Sequence[Sequence[str]]) -> tuple[list[int], dict[str, str]]:
    """(numeric feature column indices, {numeric column left out: why}) for a header and
    sample rows (see :func:`infer_column_types`)."""
    chosen, left_out = [], {}
    for i, col in enumerate(infer_column_types(header, sample)):
        if col.kind == "numeric":
            chosen.append(i)
        elif col.kind in ("label", "identifier"):
            texts = [row[i] for row in sample if row[i].strip()]
            if 2 * sum(map(is_number, texts)) > len(texts):
                left_out[col.name] = col.why
    return chosen, left_out


def describe_schema(types: Sequence[ColumnType]) -> list[str]:
    """One line per column: ``name: kind (why)``."""
    return [f"{t.name}: {t.kind} ({t.why})" for t in types]


#: Texts read as a missing value (case-insensitive, surrounding spaces ignored).
MISSING_TEXTS = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})


def is_missing(text: str) -> bool:
    """Whether ``text`` is an empty or NA-like field (:data:`MISSING_TEXTS`)."""
    return text.strip().lower() in MISSING_TEXTS


def _mostly_numbers(values: Sequence[str]) -> bool:
    texts = [v for v in values if v.strip()]
    return bool(texts) and 2 * sum(map(is_number, texts)) > len(texts)


def _describe(left_out: dict[str, str]) -> str:
    return ", ".join(f"{name!r} ({why})" for name, why in left_out.items())


def _increasing_whole_numbers(texts: Sequence[str]) -> bool:
    if len(texts) < ID_MIN_ROWS:
        return False
    try:
        values = [float(t) for t in texts]
    except ValueError:
        return False
    return all(math.isfinite(v) and v == int(v) for v in values) and all(b > a for a, b in zip(values, values[1:]))


# --------------------------------------------------------------------------- bytes to text


class _Prefixed(io.RawIOBase):
    """A binary stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head, self._rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self._head:
            n = min(len(buf), len(self._head))
            buf[:n], self._head = self._head[:n], self._head[n:]
            return n
        read = getattr(self._rest, "read1", self._rest.read)  # what has arrived, not a full buffer
        data = read(len(buf))
        buf[: len(data)] = data
        return len(data)


def _read_head(raw: IO[bytes], n: int = 64) -> bytes:
    """Up to ``n`` bytes, fewer only where the first line ends (or the input does) sooner,
    so that a slow stream is never waited on beyond its first line."""
    head = b""
    read = getattr(raw, "read1", raw.read)
    while len(head) < n and not any(c in head for c in b"\n\r"):
        chunk = read(n - len(head))
        if not chunk:
            break
        head += chunk
    return head


def open_text(raw: IO[bytes], source: str) -> tuple[IO[str], str]:
    """The text of a binary stream: its byte-order mark decides the encoding (UTF-8 without
    one); a stream that looks like UTF-16 without a mark raises :class:`InputError`.
    Returns the text and the encoding's name for messages."""
    head = _read_head(raw)
    encoding, label = "utf-8", "UTF-8"
    for bom, name, text_label in _BOMS:
        if head.startswith(bom):
            head, encoding, label = head[len(bom) :], name, text_label
            break
    else:  # UTF-16 without a mark: NUL in every other byte of the first line
        ends = [i for i in (head.find(b"\n"), head.find(b"\r")) if i >= 0]
        first = head[: min(ends) + 1] if ends else head
        even, odd = first[0::2], first[1::2]
        if len(first) >= 2 and (odd.count(0) > len(odd) // 2 or even.count(0) > len(even) // 2):
            order = "little" if odd.count(0) > even.count(0) else "big"
            raise InputError(source, 1, f"not UTF-8 text (looks like UTF-16, {order}-endian, without a byte-order mark); re-save it as UTF-8")
    # undecodable bytes become lone surrogates, found in the record that holds them
    text = io.TextIOWrapper(io.BufferedReader(_Prefixed(head, raw)), encoding=encoding, errors="surrogateescape", newline="")
    return text, label


def _check_decoded(fields: list[str], source: str, line: int, label: str) -> None:
    text = "".join(fields)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: a byte the encoding could not decode
        char = exc.object[exc.start]
        what = f"byte 0x{ord(char) - 0xDC00:02x}" if 0xDC80 <= ord(char) <= 0xDCFF else f"character U+{ord(char):04X}"
        hint = " (the file may be Latin-1 or Windows-1252)" if label == "UTF-8" else ""
        raise InputError(source, line, f"not {label} text: {what} cannot be decoded{hint}; re-save it as UTF-8") from None


def _rows(text: IO[str], source: str, label: str) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its fields) for each CSV record, read as it arrives."""
    reader = csv.reader(text)
    line = 1  # where the next record starts
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise InputError(source, reader.line_num + 1, f"not {label} text ({exc.reason}, at or after this line); re-save it as UTF-8") from None
        except csv.Error as exc:  # not expected with these settings; still a fault of the input
            raise InputError(source, line, f"unreadable CSV ({exc})") from None
        start, line = line, reader.line_num + 1
        if not all(map(str.isascii, fields)):
            _check_decoded(fields, source, start, label)
        yield start, fields


def _whole_rows(text: IO[str], source: str, label: str) -> Iterator[tuple[int, list[str]]]:
    """:func:`_rows` over a whole input at once.  A text without CR or undecodable bytes,
    whose quotes (if any) all close on the line they open, has one record per LF-ended
    line: a line without quotes is one field per comma, exactly as the csv module reads
    it, and is split that way (several times faster); a line with quotes (a quoted header,
    say) goes through the csv module on its own.  Any other text goes through the csv
    module whole."""
    try:
        data = text.read()
    except UnicodeDecodeError as exc:
        raise InputError(source, 1, f"not {label} text ({exc.reason}); re-save it as UTF-8") from None
    lines = data.split("\n")
    quoted = _quoted_lines(lines) if '"' in data else {}
    if quoted is None or "\r" in data or not (data.isascii() or _decodes(data)):
        yield from _rows(io.StringIO(data, newline=""), source, label)
        return
    if lines[-1] == "":  # the last line's LF ends a record, it does not start one
        lines.pop()
    for k, line in enumerate(lines, 1):
        yield k, quoted[k] if k in quoted else line.split(",") if line else []


def _quoted_lines(lines: list[str]) -> dict[int, list[str]] | None:
    """The fields of every line (numbered from 1) that holds a quote, read by the csv module
    line by line; None when a quoted field goes on past its line's end (the csv module must
    then read the text as a whole)."""
    quoted = {}
    for k, line in enumerate(lines, 1):
        if '"' in line:
            reader = csv.reader([line, ""])  # a record that is not over at the line's end reads on
            try:
                quoted[k] = next(reader)
            except csv.Error:  # the csv module's reading of the whole text says where
                return None
            if reader.line_num != 1:
                return None
    return quoted


def _decodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------- records


class CsvReader:
    """Read the records of CSV files or streams, one at a time, in order (see the module
    docstring for the rules).

    Args:
        sources: Paths, ``"-"`` for standard input, or binary file objects; read one after
            the other as one table.
        columns: Feature column names, or ``None`` to decide them from the sample.
        on_error: ``"mark"``, ``"skip"`` or ``"fail"``; only a missing header depends on it
            here (``fail`` raises), bad rows come back with their reason whatever it is.
        reserved: Column names the caller adds to its output; an input that has them is refused.
        sample_rows: How many data records decide the feature columns.
        whole: Read each input whole before the first record (faster; for batch use), not
            as it arrives.
        categorical, numeric, ignore: Columns whose kind the user sets (see
            :func:`infer_column_types`); with ``columns``, only ``categorical`` adds features.
        on_missing: ``None`` (default): an empty or NA-like value (:data:`MISSING_TEXTS`) in a
            numeric column is a bad row, in a categorical one a value of its own; ``"impute"``:
            a missing numeric value is NaN in ``values`` (to impute), not an error;
            ``"error"``: a missing value in any feature column is a bad row.

    After the first record (or the end of an input with a header only): ``header``,
    ``feature_idx``, ``feature_names`` (the numeric feature columns), ``category_idx``,
    ``category_names`` (the categorical and boolean ones, read from ``fields``), ``types``
    (every column's :class:`ColumnType`); ``notes`` collects remarks worth showing a user.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        columns: Sequence[str] | None = None,
        on_error: str = "mark",
        reserved: Sequence[str] = (),
        sample_rows: int = SAMPLE_ROWS,
        whole: bool = False,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        ignore: Sequence[str] = (),
        on_missing: str | None = None,
    ) -> None:
        if on_error not in ("mark", "skip", "fail"):
            raise ValueError(f"on_error must be 'mark', 'skip' or 'fail', got {on_error!r}")
        if on_missing not in (None, "impute", "error"):
            raise ValueError(f"on_missing must be 'impute' or 'error', got {on_missing!r}")
        self.categorical, self.numeric, self.ignore = list(categorical), list(numeric), list(ignore)
        self.on_missing = on_missing
        self.category_idx: list[int] = []
        self.types: list[ColumnType] = []
        if sample_rows < 1:
            raise ValueError(f"sample_rows must be at least 1, got {sample_rows}")
        self.sources = list(sources) or [STDIN]
        self.columns = list(columns) if columns is not None else None
        self.on_error = on_error
        self.reserved = tuple(reserved)
        self.sample_rows = sample_rows
        self.whole = whole
        self.header: list[str] | None = None
        self.feature_idx: list[int] | None = None
        self.notes: list[str] = []
        self._generated = False

    @property
    def feature_names(self) -> list[str]:
        return [self.header[i] for i in self.feature_idx or ()]

    @property
    def category_names(self) -> list[str]:
        return [self.header[i] for i in self.category_idx]

    def __iter__(self) -> Iterator[Record]:
        return (self._parse(rec) for rec in self.shaped_records())

    def shaped_records(self) -> Iterator[Record]:
        """The records with the feature columns decided but the values not yet parsed
        (``values`` None; ``error`` set only for an empty line or a wrong number of fields):
        for callers that parse whole columns at once, with :func:`parse_values`."""
        shaped = self._shaped()
        buffer: list[Record] = []
        sample: list[list[str]] = []
        if self.columns is not None:  # the header names the feature columns
            buffer.extend(rec for rec in [next(shaped, None)] if rec is not None)
        else:
            for rec in shaped:
                buffer.append(rec)
                if rec.error is None:
                    sample.append(rec.fields)
                if sample and len(buffer) >= self.sample_rows:
                    break
        if self.header is None:
            raise InputError(display_name(self.sources[0]), 1, "the input is empty; expected a header row naming the columns")
        if self.columns is None:
            self._decide(sample, buffer)
        yield from buffer
        yield from shaped

    # -- columns

    def _decide(self, sample: list[list[str]], buffer: list[Record]) -> None:
        if not sample:  # no data yet: nothing to decide on
            self.feature_idx = []
            return
        self.types = infer_column_types(self.header, sample, categorical=self.categorical, numeric=self.numeric, ignore=self.ignore)
        self.feature_idx = [i for i, t in enumerate(self.types) if t.kind == "numeric"]
        self.category_idx = [i for i, t in enumerate(self.types) if t.kind in ("categorical", "boolean")]
        numbers = {i for i, row in enumerate(zip(*sample)) if _mostly_numbers(row)}
        left_out = {t.name: t.why for i, t in enumerate(self.types) if t.kind in ("label", "identifier") and i in numbers}
        if not self.feature_idx and not self.category_idx:
            first = next(rec for rec in buffer if rec.error is None)
            why = f" (left out: {_describe(left_out)})" if left_out else ""
            raise InputError(
                first.source,
                first.line,
                f"no numeric or categorical column in the first {len(sample)} data row(s){why}; name the feature columns with --columns or --categorical",
            )
        features = set(self.feature_idx) | set(self.category_idx)
        rest = [h for i, h in enumerate(self.header) if i not in features and h not in left_out]
        if rest or left_out or self.category_idx:
            note = f"feature columns {self.feature_names} (mostly numbers in the first {len(sample)} data row(s))"
            if self.category_idx:
                note += f"; categorical columns {self.category_names} (scored by how rare each value is)"
            if left_out:
                note += f"; left out: {_describe(left_out)} (name them in --columns to score them)"
            if rest:
                note += f"; passed through as text: {rest}"
            self.notes.append(note)

    def _parse(self, rec: Record) -> Record:
        if rec.error is not None:
            return rec
        values = np.empty(len(self.feature_idx))
        errors = []
        for j, i in enumerate(self.feature_idx):
            if self.on_missing == "impute" and is_missing(rec.fields[i]):
                values[j] = math.nan
                continue
            values[j], err = parse_value(rec.fields[i], self.header[i])
            if err:
                errors.append(err)
        if self.on_missing == "error":
            errors += [f"missing value in column {self.header[i]!r}" for i in self.category_idx if is_missing(rec.fields[i])]
        if errors:
            rec.error = "; ".join(errors)
        else:
            rec.values = values
        return rec

    # -- records of the right shape

    def _shaped(self) -> Iterator[Record]:
        """Every data record, ``fields`` at the header's width, ``error`` set for an empty
        line or a wrong number of fields."""
        if csv.field_size_limit() < sys.maxsize:
            csv.field_size_limit(sys.maxsize)  # a field may be any length
        for src in self.sources:
            yield from self._records_of(src)

    def _records_of(self, src: Source) -> Iterator[Record]:
        name = display_name(src)
        raw, close = self._open(src)
        try:
            text, label = open_text(raw, name)
            pending: list[Record] | None = []  # empty lines before this input's header; None after it
            for start, fields in (_whole_rows if self.whole else _rows)(text, name, label):
                if pending is None:
                    yield self._shape(fields, name, start)
                elif not fields:
                    pending.append(Record(name, start, [], error="empty line"))
                else:
                    is_data = self._take_header(fields, name, start)
                    yield from (self._pad(rec) for rec in pending)
                    pending = None
                    if is_data:
                        yield self._shape(fields, name, start)
            if pending and self.header is not None:  # an input of empty lines only
                yield from (self._pad(rec) for rec in pending)
        finally:
            if close:
                raw.close()

    @staticmethod
    def _open(src: Source) -> tuple[IO[bytes], bool]:
        if not isinstance(src, (str, Path)):
            return src, False
        if str(src) == STDIN:
            return sys.stdin.buffer, False
        if not Path(src).is_file():
            raise FileNotFoundError(f"no such input file: {src}")
        return open(src, "rb"), True

    def _take_header(self, fields: list[str], source: str, line: int) -> bool:
        """Read a header line; True when the line is data (no header)."""
        numbers = all(f.strip() and is_number(f) for f in fields)
        if self.header is not None:
            if self._generated and numbers and len(fields) == len(self.header):
                return True
            if fields != self.header:
                raise InputError(source, line, f"header {fields} differs from the first input's {self.header}")
            return False
        if numbers:
            reason = "no header row (every field of the first line is a number); add a first line naming the columns"
            if self.on_error == "fail":
                raise InputError(source, line, reason)
            self.header = [f"col{i + 1}" for i in range(len(fields))]
            self._generated = True
            self.notes.append(f"{source}:{line}: {reason}; the columns are named col1..col{len(fields)} and the line is read as data")
        else:
            self.header = list(fields)
        self._check_header(source)
        if self.columns is not None:
            missing = [c for c in self.columns if c not in self.header]
            if missing:
                raise ValueError(f"--columns names {missing}, which the header does not have; the columns are {self.header}")
            self.types = infer_column_types(self.header, [], categorical=self.categorical, numeric=self.numeric, ignore=self.ignore)
            named = set(self.columns) - set(self.categorical) - set(self.ignore)
            self.feature_idx = [self.header.index(c) for c in self.columns if c in named]
            self.category_idx = [self.header.index(c) for c in self.categorical]
            self.types = [
                ColumnType(t.name, "numeric", "named in --columns")
                if t.name in named
                else t
                if t.kind == "categorical"
                else ColumnType(t.name, "ignored", "not named in --columns")
                for t in self.types
            ]
        return self._generated

    def _check_header(self, source: str) -> None:
        header = self.header
        if len(set(header)) != len(header):
            dupes = sorted({h for h in header if header.count(h) > 1})
            raise InputError(source, 1, f"the header names column(s) {dupes} more than once; column names must be unique")
        clash = [name for name in self.reserved if name in header]
        if clash:
            raise InputError(source, 1, f"the input already has column(s) {clash}, which detect adds; rename them first")

    def _pad(self, rec: Record) -> Record:
        width = len(self.header)
        rec.fields = (rec.fields + [""] * width)[:width]
        return rec

    def _shape(self, fields: list[str], source: str, line: int) -> Record:
        width = len(self.header)
        if not fields:
            return Record(source, line, [""] * width, error="empty line")
        if len(fields) != width:
            extra = " (the extra fields are not in the output)" if len(fields) > width else ""
            return self._pad(Record(source, line, fields, error=f"expected {width} fields, got {len(fields)}{extra}"))
        return Record(source, line, fields)


# --------------------------------------------------------------------------- whole tables


class RowTexts(Sequence):
    """The fields of every record, held as one CSV line a record (:func:`format_row`'s text
    without its line end) rather than as a list of strings: a tenth of the memory.  Indexing
    gives the record's fields as a list; :meth:`line` gives the line itself."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def extend(self, records: Sequence[list[str]]) -> None:
        self._lines.extend(_line_of(fields) for fields in records)

    def line(self, i: int) -> str:
        return self._lines[i]

    def __len__(self) -> int:
        return len(self._lines)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [_fields_of(line) for line in self._lines[i]]
        return _fields_of(self._lines[i])

    def __iter__(self) -> Iterator[list[str]]:
        return map(_fields_of, self._lines)


def _line_of(fields: list[str]) -> str:
    line = ",".join(fields)
    if '"' in line or "\r" in line or "\n" in line or line.count(",") != len(fields) - 1 or len(fields) < 2:
        return format_row(fields)[:-1]
    return line


def _fields_of(line: str) -> list[str]:
    if '"' not in line:
        return line.split(",")
    return next(csv.reader([line], strict=True))


@dataclass
class Table:
    """Every record of an input, for batch use: ``X`` holds the feature values (float64,
    NaN in bad rows), ``errors`` maps a row index to its reason, ``fields`` each row's text."""

    header: list[str]
    feature_idx: list[int]
    X: np.ndarray
    errors: dict[int, str]
    fields: RowTexts
    sources: list[str]
    lines: np.ndarray
    notes: list[str] = field(default_factory=list)
    category_idx: list[int] = field(default_factory=list)
    types: list[ColumnType] = field(default_factory=list)

    @property
    def n_rows(self) -> int:
        return len(self.fields)

    @property
    def feature_names(self) -> list[str]:
        return [self.header[i] for i in self.feature_idx]

    @property
    def category_names(self) -> list[str]:
        return [self.header[i] for i in self.category_idx]

    def categories(self, rows) -> np.ndarray:
        """The text of the categorical columns in ``rows``: an object array (rows, columns)."""
        out = np.empty((len(rows), len(self.category_idx)), dtype=object)
        records = [self.fields[r] for r in (rows.tolist() if isinstance(rows, np.ndarray) else rows)]
        for j, i in enumerate(self.category_idx):  # column by column: one list, one assignment
            out[:, j] = [fields[i] for fields in records]
        return out

    def where(self, i: int) -> str:
        return f"{self.sources[i]}:{self.lines[i]}"


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (on again after it, if it was on)."""
    was_on = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_on:
            gc.enable()


#: :func:`read_table` parses this many records at a time, then keeps only their lines.
READ_BLOCK = 4_096


@_gc_paused()  # millions of new records and lists hold no cycles: the collector's passes over them are waste
def read_table(
    sources: Sequence[Source],
    *,
    columns: Sequence[str] | None = None,
    on_error: str = "mark",
    reserved: Sequence[str] = (),
    sample_rows: int = SAMPLE_ROWS,
    categorical: Sequence[str] = (),
    numeric: Sequence[str] = (),
    ignore: Sequence[str] = (),
    on_missing: str | None = None,
) -> Table:
    """Every record of ``sources`` (see :class:`CsvReader`), collected; the records are
    parsed :data:`READ_BLOCK` at a time and kept as :class:`RowTexts`."""
    reader = CsvReader(
        sources,
        columns=columns,
        on_error=on_error,
        reserved=reserved,
        sample_rows=sample_rows,
        whole=True,
        categorical=categorical,
        numeric=numeric,
        ignore=ignore,
        on_missing=on_missing,
    )
    texts, names, where, blocks, errors = RowTexts(), [], [], [], {}
    records = reader.shaped_records()
    while block := list(itertools.islice(records, READ_BLOCK)):
        blocks.append(_parse_block(reader, block, len(texts), errors, on_missing))
        texts.extend([rec.fields for rec in block])
        names += [rec.source for rec in block]
        where += [rec.line for rec in block]
    return Table(
        header=reader.header,
        feature_idx=list(reader.feature_idx),
        X=np.concatenate(blocks) if blocks else np.full((0, len(reader.feature_idx)), np.nan),
        errors=dict(sorted(errors.items())),
        fields=texts,
        sources=names,
        lines=np.array(where, dtype=np.int64),
        notes=list(reader.notes),
        category_idx=list(reader.category_idx),
        types=list(reader.types),
    )


def _parse_block(reader: CsvReader, records: list[Record], offset: int, errors: dict[int, str], on_missing: str | None) -> np.ndarray:
    """The feature values of ``records`` (rows ``offset`` on), NaN in bad rows; their reasons into ``errors``."""
    X = np.full((len(records), len(reader.feature_idx)), np.nan)
    errors.update({offset + r: rec.error for r, rec in enumerate(records) if rec.error is not None})
    rows = [r for r, rec in enumerate(records) if rec.error is None]
    if not rows:
        return X
    columns_text = list(zip(*[records[r].fields for r in rows]))
    reasons: dict[int, list[str]] = {}
    at = np.array(rows, dtype=np.int64)
    for j, i in enumerate(reader.feature_idx):
        X[at, j], bad = parse_values(columns_text[i])
        for k in np.flatnonzero(bad).tolist():
            if on_missing == "impute" and is_missing(columns_text[i][k]):
                continue  # NaN: imputed by the encoder
            reasons.setdefault(rows[k], []).append(parse_value(columns_text[i][k], reader.header[i])[1])
    if on_missing == "error":
        for i in reader.category_idx:
            for k, text in enumerate(columns_text[i]):
                if is_missing(text):
                    reasons.setdefault(rows[k], []).append(f"missing value in column {reader.header[i]!r}")
    for r, why in reasons.items():
        X[r] = np.nan
        errors[offset + r] = "; ".join(why)
    return X


# --------------------------------------------------------------------------- writing


def format_row(fields: Sequence[object]) -> str:
    """One CSV record, ending in LF: fields holding a comma, a quote, CR or LF are quoted
    (quotes doubled), so that every reader sees the same fields.  (The ``csv`` module's
    writer leaves a field with a bare CR unquoted when the line ends in LF.)"""
    texts = ["" if f is None else str(f) for f in fields]
    if texts == [""]:
        return '""\n'
    line = ",".join(texts)  # one scan of the whole line: most records need no quoting
    if '"' in line or "\r" in line or "\n" in line or line.count(",") != len(texts) - 1:
        line = ",".join(_quote(t) for t in texts)
    return line + "\n"


def _quote(text: str) -> str:
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


# --------------------------------------------------------------------------- writing scored rows


class CsvOutput:
    """CSV rows, one record each (fields that need it quoted), each flushed at once when
    ``flush_rows`` is set."""

    def __init__(self, stream: IO[str], header: list[str], extra: Sequence[str], *, flush_rows: bool) -> None:
        self.stream = stream
        self.flush_rows = flush_rows
        stream.write(format_row(list(header) + list(extra)))
        if flush_rows:
            stream.flush()

    def write(self, fields: list[str], extra: Sequence) -> None:
        self.stream.write(format_row(fields + list(extra)))
        if self.flush_rows:
            self.stream.flush()

    def write_lines(self, rows: Iterator[tuple[str, Sequence]], block: int = 16_384) -> None:
        """Records given as their CSV text (:meth:`RowTexts.line`), each with fields appended
        (quoted where they need it), written ``block`` records at a time."""
        lines: list[str] = []
        for text, extra in rows:
            lines.append(text + "," + ",".join("" if f is None else _quote(str(f)) for f in extra) + "\n")
            if len(lines) >= block:
                self._put(lines)
        self._put(lines)

    def _put(self, lines: list[str]) -> None:
        self.stream.write("".join(lines))
        lines.clear()
        if self.flush_rows:
            self.stream.flush()


class JsonlOutput:
    """One JSON object a line: feature values as numbers (their text when they are not
    numbers), other columns as text, then the appended fields."""

    def __init__(self, stream: IO[str], header: list[str], extra: Sequence[str], feature_idx: Sequence[int], *, flush_rows: bool) -> None:
        self.stream = stream
        self.header = list(header)
        self.extra = list(extra)
        self.numeric = set(feature_idx)
        self.flush_rows = flush_rows

    def write(self, fields: list[str], extra: Sequence) -> None:
        obj = {}
        for i, (name, text) in enumerate(zip(self.header, fields)):
            if i in self.numeric:
                try:
                    value = float(text)
                    obj[name] = value if math.isfinite(value) else text
                except ValueError:
                    obj[name] = text
            else:
                obj[name] = text
        for name, value in zip(self.extra, extra):
            obj[name] = value
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        if self.flush_rows:
            self.stream.flush()
