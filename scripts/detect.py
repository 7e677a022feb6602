"""``anomaly-gym detect``: score the rows of a CSV file or stream with a policy bundle."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from anomaly_gym.scripts._args import add_column_kind_arguments
from anomaly_gym.scripts._detect_batch import BATCH_COLUMNS, run_batch
from anomaly_gym.scripts._detect_report import DEFAULT_CONTAMINATION, Summary, quiet_repeated_warnings
from anomaly_gym.scripts._detect_stream import STREAM_COLUMNS, run_stream

logger = logging.getLogger(__name__)

__all__ = ["BATCH_COLUMNS", "DEFAULT_CONTAMINATION", "STREAM_COLUMNS", "Summary", "add_parser", "load_model", "run", "run_batch", "run_stream"]
_quiet_repeated_warnings = quiet_repeated_warnings  # the name benchmarks use

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
  quantile over all rows, or, on more than 10,000 valid rows, over 10,000 rows drawn at
  random (seeded): the rows are then written part by part as they are scored.  Stream: a row is flagged when its conformal p-value among the
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
        description="Flag anomalous rows of a CSV file (batch) or of a stream of CSV rows (stream) with a trained policy bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "inputs",
        nargs="*",
        default=None,
        metavar="INPUT",
        help="CSV files with a header row, read one after the other as one table (same header); '-' (default) reads standard input",
    )
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="PATH",
        help="an input file, as with adapt and tasks (the same as INPUT; may be repeated, after any INPUT)",
    )
    p.add_argument("--model", type=Path, default=None, help="policy bundle (.bundle.zip) from `anomaly-gym train`; default: the bundled default policy")
    p.add_argument(
        "--mode", choices=("batch", "stream"), default="batch", help="batch: fit on all rows, then score them (default); stream: score each row as it arrives"
    )
    p.add_argument(
        "--featurizer",
        choices=("auto", "refit", "stored"),
        default="auto",
        help="batch: 'refit' fits the detectors on the input's rows; 'stored' uses the featurizer an adapted bundle "
        "holds (rows are judged relative to its target; any number of rows); auto (default): stored when the "
        "bundle holds one. Stream mode always fits on its window",
    )
    p.add_argument("--warmup", type=int, default=256, help="stream: valid rows collected before scoring starts (default 256)")
    p.add_argument("--window", type=int, default=2048, help="stream: the detectors are fitted on the last N valid rows (default 2048)")
    p.add_argument("--refit-every", type=int, default=1024, help="stream: refit the detectors every N valid rows (default 1024)")
    p.add_argument(
        "--refit",
        choices=("background", "inline"),
        default="background",
        help="stream: refit in a worker process while rows go on being scored (default), or inline, pausing the "
        "stream (the same input then always gives the same output)",
    )
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, default=None, help="flag rows whose score is above T, e.g. 0.5")
    thr.add_argument("--contamination", type=float, default=None, help=f"flag the top C share of the scores, 0 < C < 1 (default {DEFAULT_CONTAMINATION})")
    p.add_argument(
        "--columns",
        action="append",
        default=None,
        metavar="A,B,...",
        help="numeric feature columns, comma-separated (default: the numeric columns); others pass through unless named in --categorical",
    )
    add_column_kind_arguments(p, ignore_help="columns to pass through unscored")
    p.add_argument("--format", choices=("csv", "jsonl"), default=None, help="output format (default: jsonl when --output ends in .jsonl or .ndjson, else csv)")
    p.add_argument("-o", "--out", "--output", dest="output", default="-", metavar="FILE", help="output file, or '-' for standard output (default)")
    p.add_argument(
        "--on-error", choices=("mark", "skip", "fail"), default="mark", help="what to do with a bad row: mark it (default), skip it, or stop with exit code 2"
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="device of a policy that needs torch (default auto; the usual MLP policy is evaluated in numpy on the CPU)",
    )
    p.add_argument("--threads", type=int, default=1, help="CPU threads of numpy/scikit-learn/torch (default 1: best on shared or busy cores)")
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
    """The bundle at ``path``, or the default bundle when ``path`` is None, read for scoring:
    the policy runs in numpy (no torch) unless it needs torch (see :mod:`anomaly_gym.agents.fast_policy`)."""
    from anomaly_gym.agents import load_default_bundle, load_scoring_bundle

    if path is not None:
        return load_scoring_bundle(path, device=device)
    return load_default_bundle(device=device, location=default_bundle_path(), scoring_only=True)


# --------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.scripts._args import check_detect_args, parse_columns
    from threadpoolctl import threadpool_limits

    args.inputs = (args.inputs or []) + (args.data or []) or ["-"]
    check_detect_args(args)
    columns = parse_columns(args.columns)
    fmt = args.format or ("jsonl" if str(args.output).lower().endswith((".jsonl", ".ndjson")) else "csv")
    if args.inputs == ["-"] and sys.stdin.isatty():
        raise ValueError("no input: give CSV files, or pipe rows into standard input (INPUT '-')")
    from anomaly_gym.scripts._detect_temporal import run_temporal

    status = run_temporal(args, columns, fmt)  # a time-indexed stream: temporal features and a stream policy
    if status is not None:
        return status
    from anomaly_gym.envs.bank import import_estimators

    import_estimators(without_pandas=True)  # this process hands no pandas objects to scikit-learn
    with threadpool_limits(args.threads), quiet_repeated_warnings():
        t0 = time.perf_counter()
        bundle = load_model(args.model, args.device)
        if "torch" in sys.modules:  # a policy the numpy evaluator cannot run
            sys.modules["torch"].set_num_threads(args.threads)
        logger.info("policy bundle loaded in %.2fs (%s, %d detectors)", time.perf_counter() - t0, bundle.algo, len(bundle.featurizer_config.detectors))
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
