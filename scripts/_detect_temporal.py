"""``detect --mode stream`` on a time-indexed input: temporal features and a stream policy.

:func:`run_temporal` reads the header and the sample rows, looks for a timestamp column
(:func:`anomaly_gym.envs.temporal_stream.find_time_column`) and, when there is one
(``--temporal auto``, the default) or always (``--temporal on``), scores the stream with
:class:`~anomaly_gym.envs.temporal_stream.TemporalStreamDetector`.  Otherwise it puts back
what it read from standard input and returns None: detect's tabular stream path then reads
the same rows.  The policy bundle is not loaded (no torch).
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
from pathlib import Path

from anomaly_gym.envs.csvio import _Prefixed

TEMPORAL_HELP = (
    "stream: score with temporal features (deviation from the recent past, the daily/weekly profile, a forecast, "
    "change statistics) and a stream policy. auto (default): when the input has a timestamp column; on: "
    "always (error when there is none); off: the tabular stream path"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """detect's flags of the temporal stream path."""
    p.add_argument("--temporal", choices=("auto", "on", "off"), default="auto", help=TEMPORAL_HELP)
    p.add_argument(
        "--time-column",
        default=None,
        metavar="NAME",
        help="stream: the timestamp column (default: the first column of dates or date-times, else a column named like a time holding Unix times)",
    )
    p.add_argument(
        "--stream-policy",
        type=Path,
        default=None,
        metavar="PATH",
        help="stream policy (.policy.json from `anomaly-gym nab train`) of the temporal path; default: the shipped one",
    )


class _Recorded(io.RawIOBase):
    """Standard input, keeping a copy of every byte read while ``recording``."""

    name = "<stdin>"

    def __init__(self, raw) -> None:
        self._raw, self.recorded, self.recording = raw, bytearray(), True

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        data = getattr(self._raw, "read1", self._raw.read)(len(buf))
        buf[: len(data)] = data
        if self.recording:
            self.recorded += data
        return len(data)


class _Replayed(_Prefixed):
    """The bytes already read from standard input, then the rest of it."""

    name = "<stdin>"


def _check(args) -> None:
    if args.mode != "stream":
        if args.temporal == "on" or args.stream_policy is not None or args.time_column is not None:
            raise ValueError("--temporal on, --time-column and --stream-policy apply to --mode stream")
    elif args.temporal == "off" and (args.stream_policy is not None or args.time_column is not None):
        raise ValueError("--time-column and --stream-policy apply to the temporal path; drop --temporal off")
    if args.temporal != "off" and args.stream_policy is not None and not args.stream_policy.is_file():
        raise FileNotFoundError(f"stream policy not found: {args.stream_policy}")


def run_temporal(args, columns, fmt: str) -> int | None:
    """Run the temporal stream path; None when the input is not time-indexed (``--temporal auto``)."""
    _check(args)
    if args.mode != "stream" or args.temporal == "off":
        return None
    from anomaly_gym.envs.csvio import SAMPLE_ROWS, CsvReader
    from anomaly_gym.envs.temporal_stream import find_time_column
    from anomaly_gym.scripts import _detect_report as report
    from anomaly_gym.scripts._detect_stream import STREAM_COLUMNS

    stdin = _Recorded(sys.stdin.buffer) if "-" in args.inputs else None
    sources = [stdin if s == "-" else s for s in args.inputs]
    reader = CsvReader(
        sources, columns=columns, on_error=args.on_error, reserved=STREAM_COLUMNS, sample_rows=min(SAMPLE_ROWS, args.warmup), **report.schema_options(args)
    )
    records = iter(reader)
    head = list(itertools.islice(records, reader.sample_rows))  # already read: the sample decides the columns
    sample = [rec.fields for rec in head if rec.error is None]
    time_idx = find_time_column(reader.header, sample, args.time_column) if reader.header else None
    if time_idx is None:
        if args.temporal == "on":
            raise ValueError(
                f"--temporal on: no timestamp column in the first {len(sample)} data row(s) (dates, date-times, "
                "or Unix times in a column named like a time); name it with --time-column"
            )
        if stdin is not None:  # the tabular path reads the same rows again
            stdin.recording = False
            args.inputs = [_Replayed(stdin.recorded, sys.stdin.buffer) if s == "-" else s for s in args.inputs]
        return None
    if stdin is not None:
        stdin.recording = False
        stdin.recorded = bytearray()
    return _score(args, fmt, reader, itertools.chain(head, records), sample, time_idx)


def _setup(args, reader, sample, time_idx):
    """The detector, the value columns (indices into ``values``), the timestamp format and the notes."""
    from anomaly_gym.envs.stream_policy import StreamPolicy, load_default_stream_policy
    from anomaly_gym.envs.temporal_stream import TemporalStreamDetector, TimestampFormat

    if args.on_missing == "impute":
        raise ValueError(
            "--on-missing impute applies to the tabular stream path; the temporal path marks a row with a missing value as bad (or pass --temporal off)"
        )
    time_name = reader.header[time_idx]
    value_idx = [j for j, i in enumerate(reader.feature_idx) if i != time_idx]
    if not value_idx:
        raise ValueError(f"no numeric column to score besides the timestamp column {time_name!r}; name them with --columns")
    stamps = [row[time_idx] for row in sample if row[time_idx].strip()]
    for k, text in enumerate(stamps):
        try:
            stamp_format = TimestampFormat.detect(text, stamps[k + 1 :])
            break
        except ValueError:
            continue
    else:
        raise ValueError(
            f"column {time_name!r} holds no timestamp in the first {len(sample)} data row(s) (dates like "
            "2024-05-01 12:00:00, ISO 8601, or Unix times); name the right one with --time-column"
        )
    policy = StreamPolicy.load(args.stream_policy) if args.stream_policy is not None else load_default_stream_policy()
    det = TemporalStreamDetector(policy, len(value_idx), warmup=args.warmup, threshold=args.threshold, contamination=args.contamination, window=args.window)
    names = [reader.feature_names[j] for j in value_idx]
    notes = [f"temporal: time column {time_name!r} ({stamp_format.describe()}), value column(s) {names}, stream policy {args.stream_policy or 'default'}"]
    if reader.category_idx:
        notes.append(f"temporal: categorical column(s) {reader.category_names} pass through unscored (--temporal off scores them)")
    if args.model is not None:
        notes.append("temporal: --model is not used (the stream policy scores time-indexed rows; --temporal off uses the bundle)")
    return det, value_idx, stamp_format, notes


def _score(args, fmt, reader, records, sample, time_idx) -> int:
    from anomaly_gym.envs.csvio import CsvOutput, InputError, JsonlOutput
    from anomaly_gym.scripts import _detect_report as report
    from anomaly_gym.scripts._detect_stream import STREAM_COLUMNS

    det, value_idx, stamp_format, notes = _setup(args, reader, sample, time_idx)
    summary = report.Summary("stream", args.on_error, rule=det.describe_rule())
    for note in reader.notes + notes:
        print(f"anomaly-gym detect: note: {note}", file=sys.stderr)
    report.print_schema(args, reader.types)

    def write_rows(out) -> None:
        writer = (
            CsvOutput(out, reader.header, STREAM_COLUMNS, flush_rows=True)
            if fmt == "csv"
            else JsonlOutput(out, reader.header, STREAM_COLUMNS, reader.feature_idx, flush_rows=True)
        )
        for rec in records:
            summary.read += 1
            error = rec.error
            if error is None:
                try:
                    stamp = stamp_format.parse(rec.fields[time_idx])
                except ValueError as exc:
                    error = str(exc)
            if error is not None:
                if rec.error is None:
                    summary.errors += 1
                    summary.reasons["bad timestamp"] += 1
                else:
                    summary.error(error)
                if args.on_error == "fail":
                    raise InputError(rec.source, rec.line, f"{error} (--on-error fail)")
                if args.on_error == "mark":
                    writer.write(rec.fields, (None, None, "error", error))
                continue
            score, flag = det.process_one([float(rec.values[j]) for j in value_idx], stamp)
            if flag is None:
                summary.warmup += 1
                writer.write(rec.fields, (None, None, "warmup", None))
            else:
                summary.scored += 1
                summary.flagged += flag
                writer.write(rec.fields, (score, flag, "ok", None))

    status = report.stream_to_output(args.output, summary, write_rows)
    if status == 141:
        return status
    summary.extra.append("temporal features and a stream policy (--temporal off: the tabular stream path)")
    print(summary.text(), file=sys.stderr)
    return status
