"""CSV input and CSV / JSON Lines output for ``anomaly-gym detect``.

Two readers share one set of rules:

- :class:`RowReader` parses rows one at a time with the ``csv`` module (stream mode, and
  batch mode when the fast reader cannot vouch for the line numbers);
- :func:`read_batch` reads whole files with pyarrow's CSV reader, every column as text,
  and parses the feature columns in bulk.  Output lines are the input lines, byte for
  byte, with the new fields appended.

What counts as a bad row, and the reason given for it:

- an empty line (``empty line``);
- the wrong number of fields (``expected 5 fields, got 6``);
- a feature value that is empty, not a number, or NaN / infinite
  (``missing value in column 'x'``, ``non-numeric value 'abc' in column 'x'``,
  ``non-finite value 'nan' in column 'x'``).

A missing header (every field of the first line is a number) is a file-level problem:
under ``--on-error fail`` it stops the run; otherwise the columns are named ``col1``,
``col2``, ... and the first line is read as data.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

STDIN = "-"
BOM = "\ufeff".encode()


class InputError(ValueError):
    """Bad input at a known place: ``<source>:<line>: <reason>``."""

    def __init__(self, source: str, line: int, reason: str) -> None:
        super().__init__(f"{source}:{line}: {reason}")
        self.source, self.line, self.reason = source, line, reason


def display_name(path: str) -> str:
    return "<stdin>" if path == STDIN else str(path)


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_value(text: str, column: str) -> tuple[float, str | None]:
    """(value, None) for a finite number, else (nan, the reason)."""
    if not text.strip():
        return math.nan, f"missing value in column {column!r}"
    try:
        value = float(text)
    except ValueError:
        return math.nan, f"non-numeric value {_clip(text)!r} in column {column!r}"
    if not math.isfinite(value):
        return math.nan, f"non-finite value {_clip(text)!r} in column {column!r}"
    return value, None


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def parse_columns(specs: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; ``None`` when no ``--columns`` was given."""
    if not specs:
        return None
    names = [name.strip() for spec in specs for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError("--columns names no column; give comma-separated column names, e.g. --columns x,y,z")
    if len(set(names)) != len(names):
        raise ValueError(f"--columns names a column twice: {names}")
    return names


def check_header(header: list[str], source: str, reserved: Sequence[str]) -> None:
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise InputError(source, 1, f"the header names column(s) {dupes} more than once; column names must be unique")
    clash = [name for name in reserved if name in header]
    if clash:
        raise InputError(source, 1, f"the input already has column(s) {clash}, which detect adds; rename them first")


def select_columns(header: list[str], names: list[str]) -> list[int]:
    missing = [n for n in names if n not in header]
    if missing:
        raise ValueError(f"--columns names {missing}, which the header does not have; the columns are {header}")
    return [header.index(n) for n in names]


def headerless(fields: list[str]) -> bool:
    """True when a first line looks like data: every field a number."""
    return bool(fields) and all(f.strip() and is_number(f) for f in fields)


# --------------------------------------------------------------------------- row by row


@dataclass
class Record:
    """One input row: where it was, its fields (padded to the header's width), and its
    feature values or the reason it is bad."""

    source: str
    line: int
    fields: list[str]
    values: np.ndarray | None = None
    error: str | None = None


class RowReader:
    """Read CSV rows one at a time from files or standard input (``"-"``).

    Several inputs are read as one table: each must start with the same header.  The
    feature columns are ``columns`` when given, else the columns whose value in the first
    well-formed data row parses as a number.

    Args:
        paths: Files, or ``"-"`` for standard input.
        columns: Feature column names (``--columns``), or ``None`` to infer them.
        on_error: ``"mark"``, ``"skip"`` or ``"fail"`` (here only the missing-header case
            depends on it; bad rows come back with their reason).
        reserved: Column names the output adds; an input that has them is refused.
        parse: Parse the feature values (``False``: only check the shape of each row).
    """

    def __init__(self, paths: Sequence[str], *, columns: list[str] | None = None, on_error: str = "mark",
                 reserved: Sequence[str] = (), parse: bool = True) -> None:
        self.paths = list(paths)
        self.columns = columns
        self.on_error = on_error
        self.reserved = reserved
        self.parse = parse
        self.header: list[str] | None = None
        self.feature_idx: list[int] | None = None
        self.notes: list[str] = []
        self._generated = False

    def __iter__(self) -> Iterator[Record]:
        """Every record of every input, in order.  The header of the first input is read
        before the first record is returned; an input without one raises InputError."""
        it = self._records()
        first = next(it, None)
        if self.header is None:
            raise InputError(display_name(self.paths[0]), 1, "the input is empty; expected a header row naming the columns")
        if first is not None:
            yield first
        yield from it

    def _open(self, path: str) -> IO[str]:
        if path == STDIN:
            return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", errors="replace", newline="")
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such input file: {path}")
        return open(path, encoding="utf-8-sig", errors="replace", newline="")

    def _records(self) -> Iterator[Record]:
        for path in self.paths:
            source = display_name(path)
            stream = self._open(path)
            reader = csv.reader(stream)
            pending: list[Record] | None = []  # empty lines before this input's header; None after it
            try:
                for fields in reader:
                    line = reader.line_num
                    if pending is None:
                        yield self._record(fields, source, line)
                    elif not fields:
                        pending.append(Record(source, line, [], error="empty line"))
                    else:
                        is_data = self._take_header(fields, source, line, first=self.header is None)
                        for rec in pending:
                            yield self._pad(rec)
                        pending = None
                        if is_data:
                            yield self._record(fields, source, line)
            except csv.Error as exc:
                raise InputError(source, reader.line_num, f"unreadable CSV ({exc})") from None
            finally:
                if path != STDIN:
                    stream.close()
            if pending and self.header is not None:  # an input of empty lines only
                for rec in pending:
                    yield self._pad(rec)

    def _take_header(self, fields: list[str], source: str, line: int, *, first: bool) -> bool:
        """Read a header line; True when the line is data (no header)."""
        if not first:
            if self._generated and headerless(fields) and len(fields) == len(self.header):
                return True
            if fields != self.header:
                raise InputError(source, line, f"header {fields} differs from the first input's {self.header}")
            return False
        if headerless(fields):
            reason = "no header row (every field of the first line is a number); add a first line naming the columns"
            if self.on_error == "fail":
                raise InputError(source, line, reason)
            self.header = [f"col{i + 1}" for i in range(len(fields))]
            self._generated = True
            self.notes.append(f"{source}:{line}: {reason}; the columns are named col1..col{len(fields)} and the line is read as data")
        else:
            self.header = list(fields)
        check_header(self.header, source, self.reserved)
        if self.columns is not None:
            self.feature_idx = select_columns(self.header, self.columns)
        return self._generated

    def _pad(self, rec: Record) -> Record:
        width = len(self.header or ())
        rec.fields = (rec.fields + [""] * width)[:width]
        return rec

    def _record(self, fields: list[str], source: str, line: int) -> Record:
        width = len(self.header)
        if not fields:
            return Record(source, line, [""] * width, error="empty line")
        if len(fields) != width:
            extra = " (the extra fields are not in the output)" if len(fields) > width else ""
            return self._pad(Record(source, line, fields, error=f"expected {width} fields, got {len(fields)}{extra}"))
        if not self.parse:
            return Record(source, line, fields)
        if self.feature_idx is None:
            self.feature_idx = [i for i, f in enumerate(fields) if f.strip() and is_number(f)]
            if not self.feature_idx:
                raise InputError(source, line, "no numeric column in the first data row; name the feature columns with --columns")
            if len(self.feature_idx) < width:
                self.notes.append(f"feature columns {[self.header[i] for i in self.feature_idx]} (numbers in the first data "
                                  f"row, {source}:{line}); passed through: {[h for i, h in enumerate(self.header) if i not in self.feature_idx]}")
        values = np.empty(len(self.feature_idx))
        errors = []
        for j, i in enumerate(self.feature_idx):
            values[j], err = parse_value(fields[i], self.header[i])
            if err:
                errors.append(err)
        if errors:
            return Record(source, line, fields, error="; ".join(errors))
        return Record(source, line, fields, values=values)


# --------------------------------------------------------------------------- whole files


@dataclass
class BatchInput:
    """A whole input, read for batch detection.

    ``X`` holds the feature values (NaN in bad rows), ``errors`` maps a row index to its
    reason, ``where(i)`` gives a row's ``source:line``.  For output, ``raw`` is each row's
    original text (fast reader) or ``fields`` each row's parsed fields (row reader).
    """

    header: list[str]
    feature_idx: list[int]
    X: np.ndarray
    errors: dict[int, str]
    sources: list[str]
    source_of: np.ndarray
    lines: np.ndarray
    header_raw: str | None = None
    raw: list[str] | None = None
    fields: list[list[str]] | None = None
    notes: list[str] = field(default_factory=list)
    text_table: object = None  # fast reader: the well-formed rows, every column as text
    in_table: np.ndarray | None = None  # fast reader: which rows are in text_table
    bad_fields: dict[int, list[str]] = field(default_factory=dict)  # fast reader: the other rows' fields

    @property
    def n_rows(self) -> int:
        return len(self.X)

    def where(self, i: int) -> str:
        return f"{self.sources[self.source_of[i]]}:{self.lines[i]}"

    def row_fields(self) -> Iterator[list[str]]:
        """Each row's fields (text), in order."""
        if self.fields is not None:
            yield from self.fields
            return
        good = zip(*[col.to_pylist() for col in self.text_table.columns])
        for i, present in enumerate(self.in_table):
            yield list(next(good)) if present else self.bad_fields[i]


def read_batch(paths: Sequence[str], columns: list[str] | None, on_error: str, reserved: Sequence[str]) -> BatchInput:
    """Read every input for batch detection (fast reader, or the row reader as fallback)."""
    blobs = []
    for path in paths:
        if path == STDIN:
            blobs.append((display_name(path), sys.stdin.buffer.read()))
        else:
            p = Path(path)
            if not p.is_file():
                raise FileNotFoundError(f"no such input file: {path}")
            blobs.append((str(path), p.read_bytes()))
    fast = _read_fast(blobs, columns, reserved)
    if fast is not None:
        return fast
    return _read_rows(blobs, columns, on_error, reserved)


def _split_lines(data: bytes) -> list[str] | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if "\r" in text:
        lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    return lines


def _read_fast(blobs, columns, reserved) -> BatchInput | None:
    """pyarrow's reader, every column as text, rows with the wrong number of fields set
    aside with their line numbers; ``None`` when the row reader must do it (a missing
    header, quoted line breaks, bad UTF-8, CSV pyarrow cannot parse)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv

    tables, raws, header, header_raw = [], [], None, None
    sources, source_of, lines, in_table = [], [], [], []
    malformed: dict[int, str] = {}  # row index (over all inputs) -> reason
    offset = 0
    for source, data in blobs:
        data = data.removeprefix(BOM)
        text_lines = _split_lines(data)
        if not text_lines or not text_lines[0]:
            return None
        first = next(csv.reader([text_lines[0]]), [])
        if not first or headerless(first):
            return None
        if header is None:
            header, header_raw = first, text_lines[0]
            check_header(header, source, reserved)
        elif first != header:
            raise InputError(source, 1, f"header {first} differs from the first input's {header}")
        width = len(header)
        bad_lines: dict[int, str] = {}

        def handler(row, bad_lines=bad_lines, width=width):
            if row.number is None:
                raise ValueError("no line number")
            if not row.text.strip("\r"):
                bad_lines[row.number] = "empty line"
            else:
                extra = " (the extra fields are not in the output)" if row.actual_columns > width else ""
                bad_lines[row.number] = f"expected {width} fields, got {row.actual_columns}{extra}"
            return "skip"

        try:
            table = pacsv.read_csv(
                io.BytesIO(data),
                read_options=pacsv.ReadOptions(use_threads=False, block_size=1 << 24),  # line numbers need one thread
                parse_options=pacsv.ParseOptions(ignore_empty_lines=False, newlines_in_values=False, invalid_row_handler=handler),
                convert_options=pacsv.ConvertOptions(column_types={name: pa.string() for name in header}, strings_can_be_null=False),
            )
        except (pa.ArrowInvalid, ValueError):
            return None
        n_rows = len(text_lines) - 1
        if table.num_rows + len(bad_lines) != n_rows or table.column_names != header:
            return None
        present = np.ones(n_rows, dtype=bool)
        for number, reason in bad_lines.items():
            present[number - 2] = False
            malformed[offset + number - 2] = reason
        for r, line in enumerate(text_lines[1:]):
            if not line and present[r]:  # pyarrow reads an empty line as a row of empty values
                malformed[offset + r] = "empty line"
        sources.append(source)
        source_of.append(np.full(n_rows, len(sources) - 1, dtype=np.int32))
        lines.append(np.arange(2, n_rows + 2, dtype=np.int64))
        in_table.append(present)
        tables.append(table)
        raws.append(text_lines[1:])
        offset += n_rows
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    raw = raws[0] if len(raws) == 1 else [line for r in raws for line in r]
    present = np.concatenate(in_table)
    rows = np.flatnonzero(present)  # the rows of the table, in row-index order

    notes: list[str] = []
    parsed: dict[int, np.ndarray] = {}
    if columns is not None:
        feature_idx = select_columns(header, columns)
    else:
        feature_idx = []
        for i in range(len(header)):
            values, share = _parse_column(table.column(i), pc, pa)
            if share > 0.5:
                feature_idx.append(i)
                parsed[i] = values
        if not feature_idx:
            raise ValueError("no numeric column found (none has mostly numbers); name the feature columns with --columns")
        if len(feature_idx) < len(header):
            notes.append(f"feature columns {[header[i] for i in feature_idx]}; passed through: "
                         f"{[h for i, h in enumerate(header) if i not in feature_idx]}")
    X = np.full((len(present), len(feature_idx)), np.nan)
    for j, i in enumerate(feature_idx):
        X[rows, j] = parsed[i] if i in parsed else _parse_column(table.column(i), pc, pa)[0]
    errors: dict[int, str] = dict(malformed)
    bad = [t for t in np.flatnonzero(~np.isfinite(X[rows]).all(axis=1)) if int(rows[t]) not in errors]
    if bad:
        text_cols = {i: table.column(i).take(pa.array(bad)).to_pylist() for i in feature_idx}
        for k, t in enumerate(bad):
            reasons = [err for i in feature_idx for _, err in [parse_value(text_cols[i][k], header[i])] if err]
            errors[int(rows[t])] = "; ".join(reasons) or "unreadable value"
    bad_fields = {r: (next(csv.reader([raw[r]]), []) + [""] * len(header))[: len(header)] for r in malformed}
    return BatchInput(
        header=header, feature_idx=feature_idx, X=X, errors=dict(sorted(errors.items())), sources=sources,
        source_of=np.concatenate(source_of), lines=np.concatenate(lines), header_raw=header_raw, raw=raw,
        notes=notes, text_table=table, in_table=present, bad_fields=bad_fields,
    )


def _parse_column(column, pc, pa) -> tuple[np.ndarray, float]:
    """Numbers of a text column (NaN where a value is not a number), and the share of its
    non-empty values that are numbers."""
    try:
        values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        return values, 1.0
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    import pandas as pd

    text = column.to_pandas()
    values = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
    non_empty = (text.str.strip() != "").to_numpy()
    share = float((~np.isnan(values) & non_empty).sum() / max(1, non_empty.sum()))
    return values, share


def _read_rows(blobs, columns, on_error, reserved) -> BatchInput:
    """The row reader over in-memory inputs: every rule of stream mode, any CSV."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for k, (source, data) in enumerate(blobs):
            path = Path(tmp) / f"input{k}.csv"
            path.write_bytes(data)
            paths.append(str(path))
        names = {display_name(p): s for p, (s, _) in zip(paths, blobs)}
        reader = RowReader(paths, columns=columns, on_error=on_error, reserved=reserved, parse=False)
        try:
            records = list(reader)
        except InputError as exc:
            raise InputError(names.get(exc.source, exc.source), exc.line, exc.reason) from None
    header = reader.header
    shaped = [rec for rec in records if rec.error is None]
    if columns is None:  # mostly numbers, as the fast reader decides
        feature_idx = []
        for i in range(len(header)):
            texts = [rec.fields[i] for rec in shaped if rec.fields[i].strip()]
            if texts and sum(map(is_number, texts)) / len(texts) > 0.5:
                feature_idx.append(i)
        if not feature_idx:
            raise ValueError("no numeric column found (none has mostly numbers); name the feature columns with --columns")
    else:
        feature_idx = reader.feature_idx
    X = np.full((len(records), len(feature_idx)), np.nan)
    errors: dict[int, str] = {}
    for r, rec in enumerate(records):
        if rec.error:
            errors[r] = rec.error
            continue
        reasons = []
        for j, i in enumerate(feature_idx):
            X[r, j], err = parse_value(rec.fields[i], header[i])
            if err:
                reasons.append(err)
        if reasons:
            errors[r] = "; ".join(reasons)
    notes = []
    for note in reader.notes:
        for tmp_name, source in names.items():
            note = note.replace(tmp_name, source)
        notes.append(note)
    if len(feature_idx) < len(header):
        notes.append(f"feature columns {[header[i] for i in feature_idx]}; passed through: "
                     f"{[h for i, h in enumerate(header) if i not in feature_idx]}")
    sources = [s for s, _ in blobs]
    index = {display_name(p): k for k, p in enumerate(paths)}
    return BatchInput(
        header=header, feature_idx=feature_idx, X=X, errors=errors, sources=sources,
        source_of=np.array([index[rec.source] for rec in records], dtype=np.int32),
        lines=np.array([rec.line for rec in records], dtype=np.int64),
        fields=[rec.fields for rec in records], notes=notes,
    )


# --------------------------------------------------------------------------- output


class CsvOutput:
    """CSV rows, each flushed at once when ``flush_rows`` is set."""

    def __init__(self, stream: IO[str], header: list[str], extra: Sequence[str], *, flush_rows: bool) -> None:
        self.stream = stream
        self.writer = csv.writer(stream, lineterminator="\n")
        self.flush_rows = flush_rows
        self.writer.writerow(list(header) + list(extra))
        if flush_rows:
            stream.flush()

    def write(self, fields: list[str], extra: Sequence) -> None:
        self.writer.writerow(fields + ["" if v is None else v for v in extra])
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


def csv_field(value: str) -> str:
    """One field as the csv module would write it in a row (quoted only when needed)."""
    if not value:
        return ""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="").writerow([value])
    return buf.getvalue()
