"""``anomaly-gym detect``: score the rows of a CSV file or stream with a policy bundle."""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np
from anomaly_gym.scripts._args import add_list_argument

logger = logging.getLogger(__name__)

DEFAULT_CONTAMINATION = 0.05  # the share flagged when neither --threshold nor --contamination is given
BATCH_COLUMNS = ("anomaly_score", "is_anomaly", "error")
STREAM_COLUMNS = ("anomaly_score", "is_anomaly", "status", "error")

EPILOG = """\
output:
  every input row, in input order, with anomaly_score (the policy's P(anomaly), 0..1) and
  is_anomaly (1 when the score is above the threshold, see below) appended; stream mode adds status
  (ok / warmup / error); error gives the reason for a bad row.  Columns that are not
  feature columns (timestamps, ids, labels) pass through unchanged.

feature columns:
  each column's kind is inferred from the sample: the well-formed rows among the first 32
  data rows (stream mode: the first min(32, --warmup), which it echoes as warm-up anyway),
  decided once (a later row with text in a numeric column is a bad row; the column stays
  numeric).  numeric: over half of its non-empty values are numbers; categorical: other
  text, scored by how rare each value is among the rows the detectors are fitted on (a
  value never seen there counts as the rarest; stream mode counts the warm-up rows);
  boolean: true/false, yes/no.  Passed through unscored, with a note: columns named like a
  label (label, y, class, is_anomaly, ...), identifiers (named id, index, row or ..._id;
  whole numbers that only increase; text with over 90% distinct values), timestamps
  (dates, with or without a time).  --columns names the numeric feature columns,
  --categorical adds categorical ones (integer codes are categorical only when named
  there), --numeric reads a column as numbers, --ignore leaves one out; -v prints the
  schema.  A bundle adapted on a CSV (`anomaly-gym adapt`) brings its own columns and
  value frequencies: batch mode encodes new rows exactly as the target's rows were.

missing values (--on-missing):
  default: an empty or NA-like value (NA, N/A, nan, null, none, ?) is a value of its own in
  a categorical column and a bad row in a numeric one.  impute: a missing number gets the
  column's median over the fitting rows, plus a 0/1 missingness column when the fitting
  rows had missing values there.  error: a missing value in any feature column is a bad row.

input:
  UTF-8 (a byte-order mark is fine), or UTF-16/UTF-32 with a byte-order mark; other bytes
  stop the run with a message naming the line.  Rows may end in LF, CRLF or CR, mixed; a
  quoted field may hold commas, doubled quotes and line breaks; fields may be any length.
  The output quotes every field that needs it: one output record per input record.

threshold:
  default --contamination 0.05: flag the top 5% of the scores.  Batch: above their 0.95
  quantile over all rows.  Stream: a row is flagged when its conformal p-value among the
  current fit's out-of-sample scores is at most 0.05: each fit holds out every 4th row of
  its window and scores those rows as live rows are scored; the live rows' scores join
  them (ties broken at random).  On a stationary stream each row is then flagged with
  probability 0.05, independently of the others, from the first scored row on.  The
  policy's scores are dataset-relative and it is trained on class-balanced episodes, so
  its own decision boundary, --threshold 0.5, flags a large share of an ordinary dataset
  (about 40% of the rows of `anomaly-gym bench detect`'s data with the default policy);
  use --threshold T for a fixed cut on the score instead.

stream mode:
  the first --warmup valid rows are echoed with status=warmup and no score; then each row
  is scored as it arrives by detectors fitted on the last --window rows, refitted every
  --refit-every rows in a worker process while the rows go on being scored with the
  current fit (--refit inline pauses the stream instead, ~0.3-0.6 s a refit, and makes
  the output reproducible).  Each output row is flushed at once, and memory stays
  bounded however long the stream runs.  Follow a growing file with:
    tail -n +1 -f data.csv | anomaly-gym detect --mode stream -

bad input (--on-error):
  empty lines, rows with the wrong number of fields, and empty, non-numeric, NaN/inf or
  beyond-float32 (|x| > 3.4e38) values in feature columns are bad rows: mark (default) writes them with an error
  (score left empty; a row with the wrong number of fields is padded or cut to the
  header's), skip leaves them out, fail stops at the first one, naming its line.  A first
  line of numbers only (no header) stops the run under fail; otherwise the columns are
  named col1, col2, ... and the line is read as data.  A summary (rows read, scored, in
  warm-up, errors, flagged) always goes to stderr.

exit codes:
  0    success (bad rows marked or skipped count as success)
  1    internal error (a bug: with a traceback) or runtime failure (I/O error)
  2    bad usage or input, with a message naming the file and line where there is one:
       unknown option, missing file or model, empty input, text that is not UTF-8,
       unknown --columns, inputs with different headers, no numeric column, too few valid
       rows to fit (batch: 10), or, under --on-error fail, a bad row or a missing header
  130  interrupted (Ctrl-C); rows already written stay written
  141  the reader of the output went away (broken pipe)
"""


def add_parser(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="score the rows of a CSV file or stream with a policy bundle",
        description="Flag anomalous rows of a CSV file (batch) or of a stream of CSV rows (stream) "
        "with a trained policy bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", nargs="*", default=None, metavar="INPUT",
                   help="CSV files with a header row, read one after the other as one table (same header); "
                   "'-' (default) reads standard input")
    p.add_argument("--data", action="append", default=None, metavar="PATH",
                   help="an input file, as with adapt and tasks (the same as INPUT; may be repeated, after any INPUT)")
    p.add_argument("--model", type=Path, default=None,
                   help="policy bundle (.bundle.zip) from `anomaly-gym train`; default: the bundled default policy")
    p.add_argument("--mode", choices=("batch", "stream"), default="batch",
                   help="batch: fit on all rows, then score them (default); stream: score each row as it arrives")
    p.add_argument("--featurizer", choices=("auto", "refit", "stored"), default="auto",
                   help="batch: 'refit' fits the detectors on the input's rows; 'stored' uses the featurizer an adapted bundle "
                   "holds (rows are judged relative to its target; any number of rows); auto (default): stored when the "
                   "bundle holds one. Stream mode always fits on its window")
    p.add_argument("--warmup", type=int, default=256, help="stream: valid rows collected before scoring starts (default 256)")
    p.add_argument("--window", type=int, default=2048, help="stream: the detectors are fitted on the last N valid rows (default 2048)")
    p.add_argument("--refit-every", type=int, default=1024, help="stream: refit the detectors every N valid rows (default 1024)")
    p.add_argument("--refit", choices=("background", "inline"), default="background",
                   help="stream: refit in a worker process while rows go on being scored (default), or inline, pausing the "
                   "stream (the same input then always gives the same output)")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, default=None, help="flag rows whose score is above T, e.g. 0.5")
    thr.add_argument("--contamination", type=float, default=None,
                     help=f"flag the top C share of the scores, 0 < C < 1 (default {DEFAULT_CONTAMINATION})")
    p.add_argument("--columns", action="append", default=None, metavar="A,B,...",
                   help="numeric feature columns, comma-separated (default: the numeric columns); others pass through "
                   "unless named in --categorical")
    add_list_argument(p, "--categorical", default=[], metavar="A,B",
                      help="columns to score as categorical (by how rare each value is), e.g. integer codes; "
                      "text columns are categorical by default")
    add_list_argument(p, "--numeric", default=[], metavar="C", help="columns to read as numbers whatever they look like")
    add_list_argument(p, "--ignore", default=[], metavar="D", help="columns to pass through unscored")
    p.add_argument("--on-missing", choices=("impute", "error"), default=None,
                   help="empty or NA values: 'impute' (numeric: the column's median plus a missingness indicator) or "
                   "'error' (a bad row). Default: impute in categorical columns (an empty value is a value of its own), "
                   "error in numeric ones")
    p.add_argument("--format", choices=("csv", "jsonl"), default=None,
                   help="output format (default: jsonl when --output ends in .jsonl or .ndjson, else csv)")
    p.add_argument("-o", "--out", "--output", dest="output", default="-", metavar="FILE", help="output file, or '-' for standard output (default)")
    p.add_argument("--on-error", choices=("mark", "skip", "fail"), default="mark",
                   help="what to do with a bad row: mark it (default), skip it, or stop with exit code 2")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="device of the policy network (default auto)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU threads of numpy/scikit-learn/torch (default 1: best on shared or busy cores)")
    p.add_argument("--no-progress", action="store_true", help="batch: no progress bar (it only shows on a terminal)")
    from anomaly_gym.scripts._detect_temporal import add_arguments as add_temporal_arguments

    add_temporal_arguments(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- model


def default_bundle_path():
    """Where the shipped default policy lies (see :func:`anomaly_gym.agents.default_bundle_path`)."""
    from anomaly_gym.agents.bundle import default_bundle_path as shipped

    return shipped()


def load_model(path: Path | None, device: str):
    """The bundle at ``path``, or the default bundle when ``path`` is None."""
    from anomaly_gym.agents import load_bundle, load_default_bundle

    if path is not None:
        return load_bundle(path, device=device)
    return load_default_bundle(device=device, location=default_bundle_path())


def __getattr__(name: str):
    if name == "PolicyScorer":  # moved to the library; imported on use (it needs the policy's stack)
        from anomaly_gym.agents.scoring import PolicyScorer

        return PolicyScorer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- summary


@dataclass
class Summary:
    """What happened to the rows; printed to stderr at the end."""

    mode: str
    on_error: str
    rule: str = ""
    read: int = 0
    scored: int = 0
    warmup: int = 0
    errors: int = 0
    flagged: int = 0
    reasons: Counter = field(default_factory=Counter)
    extra: list[str] = field(default_factory=list)
    t0: float = field(default_factory=time.perf_counter)

    def error(self, reason: str) -> None:
        self.errors += 1
        self.reasons[_error_kind(reason)] += 1

    def text(self) -> str:
        fate = {"mark": "marked", "skip": "skipped", "fail": "stopped the run"}[self.on_error]
        parts = [f"{self.read:,} rows read", f"{self.scored:,} scored"]
        if self.mode == "stream":
            parts.append(f"{self.warmup:,} in warm-up")
        parts.append(f"{self.errors:,} error{'' if self.errors == 1 else 's'}" + (f" ({fate})" if self.errors else ""))
        parts.append(f"{self.flagged:,} flagged{' (' + self.rule + ')' if self.rule else ''}")
        lines = [f"anomaly-gym detect: {', '.join(parts)}; {time.perf_counter() - self.t0:.1f}s"]
        if self.reasons:
            lines.append("  errors: " + ", ".join(f"{kind} {n:,}" for kind, n in self.reasons.most_common()))
        lines += [f"  {e}" for e in self.extra]
        return "\n".join(lines)


def _error_kind(reason: str) -> str:
    for prefix, kind in (("empty line", "empty line"), ("expected", "wrong number of fields"), ("missing", "missing value"),
                         ("non-numeric", "non-numeric value"), ("non-finite", "NaN or infinite value"),
                         ("value ", "value beyond float32's range")):
        if reason.startswith(prefix):
            return kind
    return reason


# --------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.scripts._csvio import parse_columns
    from threadpoolctl import threadpool_limits

    args.inputs = (args.inputs or []) + (args.data or []) or ["-"]
    _check_args(args)
    columns = parse_columns(args.columns)
    fmt = args.format or ("jsonl" if str(args.output).lower().endswith((".jsonl", ".ndjson")) else "csv")
    if args.inputs == ["-"] and sys.stdin.isatty():
        raise ValueError("no input: give CSV files, or pipe rows into standard input (INPUT '-')")
    from anomaly_gym.scripts._detect_temporal import run_temporal

    status = run_temporal(args, columns, fmt)  # a time-indexed stream: temporal features and a stream policy
    if status is not None:
        return status
    import torch

    torch.set_num_threads(args.threads)
    cache_pyod_kernels()
    with threadpool_limits(args.threads), _quiet_repeated_warnings():
        t0 = time.perf_counter()
        bundle = load_model(args.model, args.device)
        logger.info("policy bundle loaded in %.2fs (%s, %d detectors)", time.perf_counter() - t0,
                    bundle.algo, len(bundle.featurizer_config.detectors))
        try:
            if args.mode == "batch":
                return run_batch(args, bundle, columns, fmt)
            return run_stream(args, bundle, columns, fmt)
        except FileNotFoundError:
            raise
        except (IsADirectoryError, NotADirectoryError) as exc:  # a path given wrongly: bad usage
            raise ValueError(str(exc)) from None
        except OSError as exc:  # a runtime failure, not bad usage: exit code 1
            print(f"anomaly-gym detect: error: {exc}", file=sys.stderr)
            return 1


def cache_pyod_kernels() -> None:
    """See :func:`anomaly_gym.envs.stream.cache_pyod_kernels`."""
    from anomaly_gym.envs.stream import cache_pyod_kernels as cache

    cache()


def _check_args(args) -> None:
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a number, got {args.threshold}")
    if args.contamination is not None and not 0.0 < args.contamination < 1.0:
        raise ValueError(f"--contamination must be between 0 and 1 (exclusive), got {args.contamination}")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.mode == "stream":
        if args.warmup < 10:
            raise ValueError(f"--warmup must be at least 10 rows (the detectors need 10 to fit), got {args.warmup}")
        if args.window < args.warmup:
            raise ValueError(f"--window ({args.window}) must be at least --warmup ({args.warmup})")
        if args.refit_every < 1:
            raise ValueError(f"--refit-every must be at least 1, got {args.refit_every}")
    if args.inputs.count("-") > 1:
        raise ValueError("standard input ('-') can be read only once")
    if args.output != "-":  # before any work, not after it
        if Path(args.output).is_dir():
            raise ValueError(f"--output {args.output} is a folder; give a file name")
        if not Path(args.output).parent.is_dir():
            raise FileNotFoundError(f"the folder of --output {args.output} does not exist")


@contextlib.contextmanager
def _quiet_repeated_warnings():
    """Each distinct featurizer warning once (a failing detector would repeat at every refit)."""
    import warnings

    seen: set[str] = set()

    class Once(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            msg = record.getMessage()
            if msg in seen:
                return False
            seen.add(msg)
            return True

    target = logging.getLogger("anomaly_gym.envs.features")
    once = Once()
    target.addFilter(once)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="detector .* failed to fit")  # the logger reports it
            yield
    finally:
        target.removeFilter(once)


@contextlib.contextmanager
def _open_output(path: str, *, atomic: bool):
    if path == "-":
        yield sys.stdout
        sys.stdout.flush()
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"--output {path} is a folder; give a file name")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"the folder of --output {path} does not exist")
    tmp = target.with_name(target.name + ".partial") if atomic else target
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            yield fh
        if atomic:
            os.replace(tmp, target)
    finally:
        if atomic and tmp.exists():  # the run failed: no half-written output
            tmp.unlink()


def _default_rule(args) -> None:
    if args.threshold is None and args.contamination is None:
        args.contamination = DEFAULT_CONTAMINATION


def _describe_rule(args, value: float | None = None) -> str:
    if args.contamination is not None:
        where = f"= {value:.4g}" if value is not None else "of the window"
        return f"score > the {1 - args.contamination:.4g} quantile {where}"
    return f"score > {args.threshold:g}"


def _broken_pipe(summary: Summary) -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
    summary.extra.append("the output was closed early (broken pipe); stopped")
    print(summary.text(), file=sys.stderr)
    return 141


# --------------------------------------------------------------------------- batch


def run_batch(args, bundle, columns, fmt: str) -> int:
    from anomaly_gym.agents.scoring import PolicyScorer
    from anomaly_gym.envs.csvio import read_table
    from anomaly_gym.envs.features import Featurizer
    from anomaly_gym.envs.stream import FastFeaturizer

    _default_rule(args)
    summary = Summary("batch", args.on_error)
    t = time.perf_counter()
    data = read_table(args.inputs, on_error=args.on_error, reserved=BATCH_COLUMNS, **_batch_columns(args, bundle, columns))
    logger.info("read %d rows x %d feature columns in %.2fs", data.n_rows, len(data.feature_idx), time.perf_counter() - t)
    for note in data.notes:
        print(f"anomaly-gym detect: note: {note}", file=sys.stderr)
    _print_schema(args, data.types)
    n = data.n_rows
    summary.read = n
    if data.errors and args.on_error == "fail":  # the run stops at the first bad row
        first = min(data.errors)
        summary.error(data.errors[first])
        if len(data.errors) > 1:
            summary.extra.append(f"{len(data.errors) - 1:,} more bad row(s) after it (see them with --on-error mark)")
        print(summary.text(), file=sys.stderr)
        raise ValueError(f"{data.where(first)}: {data.errors[first]} (--on-error fail)")
    for reason in data.errors.values():
        summary.error(reason)
    valid = np.ones(n, dtype=bool)
    valid[list(data.errors)] = False
    n_valid = int(valid.sum())
    rows = np.flatnonzero(valid)
    stored = bundle.featurizer if _stored_featurizer(args, bundle) else None
    X, encoder = _encoded_rows(args, data, rows, stored)
    scorer = PolicyScorer(bundle)
    scorer.check_width(X.shape[1])
    if stored is not None:
        if stored.n_columns_ != X.shape[1]:
            raise ValueError(
                f"the bundle's stored featurizer was fitted on {stored.n_columns_} columns but the input has "
                f"{X.shape[1]}; pick the target's columns with --columns, or pass --featurizer refit"
            )
        fast = FastFeaturizer(stored)
        summary.extra.append("features relative to the rows the bundle was adapted on (stored featurizer)")
    else:
        if n_valid < 10:
            raise ValueError(f"only {n_valid} valid row(s); the detectors need at least 10 to fit")
        t = time.perf_counter()
        fast = FastFeaturizer(Featurizer(bundle.featurizer_config).fit(X))
        logger.info("detectors fitted on %d rows in %.2fs", min(n_valid, bundle.featurizer_config.max_fit_rows), time.perf_counter() - t)
    if encoder is not None and encoder.categorical:
        summary.extra.append(f"{len(encoder.categorical)} categorical column(s) scored by rarity; "
                             f"{X.shape[1]} encoded feature column(s)")
    t = time.perf_counter()
    scores = np.full(n, np.nan)
    step = bundle.featurizer_config.chunk_size
    for start in _progress(range(0, len(rows), step), len(rows) // step + 1, args):
        part = X[start : start + step]
        scores[rows[start : start + step]] = scorer.batch(fast.transform(part), part)
    logger.info("featurized and scored %d rows in %.2fs", n_valid, time.perf_counter() - t)

    if args.contamination is not None:
        cut = float(np.quantile(scores[valid], 1.0 - args.contamination))
        summary.rule = _describe_rule(args, cut)
    else:
        cut = args.threshold
        summary.rule = _describe_rule(args)
    flags = np.zeros(n, dtype=np.int8)
    flags[valid] = scores[valid] > cut
    summary.scored = n_valid
    summary.flagged = int(flags.sum())

    t = time.perf_counter()
    try:
        with _open_output(args.output, atomic=True) as out:
            _write_batch(out, data, scores, flags, valid, fmt, skip=args.on_error == "skip")
    except BrokenPipeError:
        return _broken_pipe(summary)
    logger.info("wrote the output in %.2fs", time.perf_counter() - t)
    print(summary.text(), file=sys.stderr)
    return 0


def _schema_options(args) -> dict:
    return {"categorical": getattr(args, "categorical", []), "numeric": getattr(args, "numeric", []),
            "ignore": getattr(args, "ignore", []), "on_missing": getattr(args, "on_missing", None)}


def _batch_columns(args, bundle, columns) -> dict:
    """``read_table``'s column options: the user's, or, for a bundle whose stored featurizer
    has an encoder, the columns and kinds of the rows it was adapted on."""
    options = dict(_schema_options(args), columns=columns)
    stored_encoder = getattr(bundle.featurizer, "encoder_", None) if _stored_featurizer(args, bundle) else None
    if stored_encoder is not None and columns is None and not options["categorical"]:
        options["columns"], options["categorical"] = list(stored_encoder.numeric), list(stored_encoder.categorical)
        options["on_missing"] = options["on_missing"] or stored_encoder.on_missing
    return options


def _print_schema(args, types) -> None:
    from anomaly_gym.envs.csvio import describe_schema

    if getattr(args, "verbose", False) and types:  # -v/--verbose: the inferred column schema
        print("anomaly-gym detect: schema:\n" + "\n".join(f"  {line}" for line in describe_schema(types)), file=sys.stderr)


def _encoded_rows(args, data, rows: np.ndarray, stored) -> tuple[np.ndarray, object]:
    """The valid rows as the featurizer's numeric matrix (float32), and the encoder used
    (None when the rows are numeric, complete and not encoded)."""
    from anomaly_gym.envs.encoding import TableEncoder

    encoder = getattr(stored, "encoder_", None) if stored is not None else None
    if encoder is not None:
        if (encoder.numeric, encoder.categorical) != (data.feature_names, data.category_names):
            raise ValueError(
                f"the bundle was adapted on numeric columns {encoder.numeric} and categorical columns {encoder.categorical}, "
                f"but the input's are {data.feature_names} and {data.category_names}; name them with --columns and "
                "--categorical, or pass --featurizer refit")
    elif data.category_idx or getattr(args, "on_missing", None) == "impute":
        if stored is not None:
            raise ValueError("the bundle's stored featurizer was adapted on numeric columns only, but this input has "
                             f"categorical columns {data.category_names} or missing values to impute; leave them out "
                             "(--ignore) or pass --featurizer refit")
        encoder = TableEncoder(data.feature_names, data.category_names, on_missing="impute")
        encoder.fit(data.X[rows], data.categories(rows))
    if encoder is None:
        return data.X[rows].astype(np.float32), None  # the precision tasks have in training (make_task)
    return encoder.transform(data.X[rows], data.categories(rows)).astype(np.float32), encoder


def _progress(iterable, total: int, args):
    if args.no_progress or not sys.stderr.isatty() or total < 2:
        return iterable
    from rich.console import Console
    from rich.progress import track

    return track(iterable, total=total, description="scoring", transient=True, console=Console(stderr=True))


def _write_batch(out: IO[str], data, scores, flags, valid, fmt: str, *, skip: bool) -> None:
    from anomaly_gym.scripts._csvio import CsvOutput, JsonlOutput

    header = data.header
    writer = (CsvOutput(out, header, BATCH_COLUMNS, flush_rows=False) if fmt == "csv"
              else JsonlOutput(out, header, BATCH_COLUMNS, data.feature_idx, flush_rows=False))
    for i, fields in enumerate(data.fields):
        if valid[i]:
            writer.write(fields, (float(scores[i]), int(flags[i]), None))
        elif not skip:
            writer.write(fields, (None, None, data.errors[i]))


# --------------------------------------------------------------------------- stream


def _stored_featurizer(args, bundle) -> bool:
    """Whether batch mode uses the bundle's stored featurizer (``--featurizer``)."""
    if args.featurizer == "stored" and bundle.featurizer is None:
        raise ValueError("--featurizer stored: this bundle holds no fitted featurizer (adapt it with `anomaly-gym adapt` first, "
                         "or pass --featurizer refit)")
    return args.featurizer == "stored" or (args.featurizer == "auto" and bundle.featurizer is not None)


def run_stream(args, bundle, columns, fmt: str, *, timings: list[tuple[float, float]] | None = None) -> int:
    """Score rows as they arrive.  ``timings`` (benchmarks) receives, for each scored row,
    the wall-clock and the CPU seconds from reading it to having written and flushed its
    output, refits included, and whether a refit was running in the background."""
    from anomaly_gym.envs.csvio import SAMPLE_ROWS, CsvReader, InputError
    from anomaly_gym.scripts._csvio import CsvOutput, JsonlOutput

    if args.featurizer == "stored":
        raise ValueError("--featurizer stored applies to batch mode; stream mode fits the detectors on its sliding window")
    _default_rule(args)
    summary = Summary("stream", args.on_error, rule=_describe_stream_rule(args))
    # the feature columns are decided on rows that stream mode echoes as warm-up anyway
    reader = CsvReader(args.inputs, columns=columns, on_error=args.on_error, reserved=STREAM_COLUMNS,
                       sample_rows=min(SAMPLE_ROWS, args.warmup), **_schema_options(args))
    detector = None
    encoding = None
    records = iter(reader)
    status = 0
    try:
        with _open_output(args.output, atomic=False) as out:
            t_row, c_row = time.perf_counter(), time.thread_time()
            first = next(records, None)  # reads the header
            writer = (CsvOutput(out, reader.header, STREAM_COLUMNS, flush_rows=True) if fmt == "csv"
                      else JsonlOutput(out, reader.header, STREAM_COLUMNS, (), flush_rows=True))
            noted, schema_shown = 0, False
            rec = first
            while rec is not None:
                summary.read += 1
                if len(reader.notes) > noted:
                    for note in reader.notes[noted:]:
                        print(f"anomaly-gym detect: note: {note}", file=sys.stderr)
                    noted = len(reader.notes)
                if not schema_shown and reader.types:
                    _print_schema(args, reader.types)
                    schema_shown = True
                if rec.error is not None:
                    summary.error(rec.error)
                    if args.on_error == "fail":
                        raise InputError(rec.source, rec.line, f"{rec.error} (--on-error fail)")
                    if args.on_error == "mark":
                        writer.write(rec.fields, (None, None, "error", rec.error))
                else:
                    if encoding is None:
                        encoding = _WarmupEncoder(reader, args) if reader.category_idx or args.on_missing == "impute" else False
                    xs = encoding.rows(rec) if encoding else [rec.values]
                    if detector is None and xs:
                        detector = _stream_detector(args, bundle)
                        if fmt == "jsonl":
                            writer.numeric = set(reader.feature_idx)
                    for x in xs[:-1]:  # warm-up rows held back until the encoder was fitted
                        detector.process_one(x)
                    score, flag = detector.process_one(xs[-1]) if xs else (None, None)
                    if flag is None:
                        summary.warmup += 1
                        writer.write(rec.fields, (None, None, "warmup", None))
                    else:
                        summary.scored += 1
                        summary.flagged += flag
                        writer.write(rec.fields, (score, flag, "ok", None))
                    if timings is not None and flag is not None:
                        timings.append((time.perf_counter() - t_row, time.thread_time() - c_row, detector.refitting))
                t_row, c_row = time.perf_counter(), time.thread_time()
                rec = next(records, None)
    except BrokenPipeError:
        return _broken_pipe(summary)
    except KeyboardInterrupt:
        summary.extra.append("interrupted")
        status = 130
    except (ValueError, OSError):
        print(summary.text(), file=sys.stderr)
        raise
    finally:
        if detector is not None:
            detector.close()
    if detector is not None and detector.n_fits:
        where = "in the background" if detector.background else "inline"
        summary.extra.append(f"detectors fitted {detector.n_fits} time(s) ({where}), {detector.fit_seconds / detector.n_fits:.2f}s each")
    print(summary.text(), file=sys.stderr)
    return status


class _WarmupEncoder:
    """Stream mode with categorical columns (or numeric values to impute): the encoder is
    fitted on the first ``--warmup`` valid rows, which are warm-up rows anyway, and then
    kept: value frequencies are those of the warm-up rows, a value not seen among them
    scores as the rarest, and a missing number gets the warm-up rows' median."""

    def __init__(self, reader, args) -> None:
        self.reader = reader
        self.warmup = args.warmup
        self.pending: list[tuple[np.ndarray, list[str]]] = []
        self.encoder = None

    def rows(self, rec) -> list[np.ndarray]:
        """The encoded rows ready for the detector: none while the warm-up rows gather,
        all of them once there are ``warmup``, then each row as it comes."""
        from anomaly_gym.envs.encoding import TableEncoder

        cats = [rec.fields[i] for i in self.reader.category_idx]
        if self.encoder is not None:
            return [self.encoder.transform(rec.values[None, :], np.array([cats], dtype=object))[0]]
        self.pending.append((rec.values, cats))
        if len(self.pending) < self.warmup:
            return []
        X_num = np.array([v for v, _ in self.pending], dtype=np.float64).reshape(len(self.pending), -1)
        X_cat = np.array([c for _, c in self.pending], dtype=object).reshape(len(self.pending), -1)
        self.encoder = TableEncoder(self.reader.feature_names, self.reader.category_names, on_missing="impute").fit(X_num, X_cat)
        self.pending = []
        return list(self.encoder.transform(X_num, X_cat))


def _stream_detector(args, bundle):
    """The stream detector of ``detect --mode stream`` (see :mod:`anomaly_gym.detectors.stream`)."""
    from anomaly_gym.detectors.stream import StreamDetector

    return StreamDetector(bundle, contamination=args.contamination, threshold=args.threshold, warmup=args.warmup,
                          window=args.window, refit_every=args.refit_every, background=args.refit == "background",
                          n_threads=args.threads)


def _describe_stream_rule(args) -> str:
    if args.contamination is not None:
        return f"conformal p-value <= {args.contamination:.4g} among the current fit's held-out and live scores"
    return f"score > {args.threshold:g}"
