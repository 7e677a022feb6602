"""``anomaly-gym detect --mode batch``: read the table, score it, write every row with its score."""

from __future__ import annotations

import logging
import sys
import time
from typing import IO

import numpy as np
from anomaly_gym.scripts._detect_report import (
    Summary,
    broken_pipe,
    default_rule,
    describe_rule,
    open_output,
    print_schema,
    progress,
    schema_options,
)

logger = logging.getLogger("anomaly_gym.scripts.detect")

BATCH_COLUMNS = ("anomaly_score", "is_anomaly", "error")


#: With ``--contamination`` and more valid rows than this, the cut is the quantile of the scores
#: of this many rows drawn at random (seeded), and rows are written as they are scored; with
#: at most this many, the quantile of all scores.
THRESHOLD_SAMPLE = 10_000
#: The first part of the output holds this many rows, each next one twice as many, up to
#: :data:`LARGEST_PART` (or the featurizer's chunk size, if smaller): the first rows come out
#: soon after the detectors are fitted, and scoring a part needs little memory.
FIRST_PART = 1_024
LARGEST_PART = 16_384


def run_batch(args, bundle, columns, fmt: str) -> int:
    """``detect --mode batch``: read every row, fit on the valid ones (or use the stored
    featurizer), fix the cut, then score and write the rows part by part, in order."""
    default_rule(args)
    summary = Summary("batch", args.on_error)
    data = _read(args, bundle, columns, summary)
    valid = np.ones(data.n_rows, dtype=bool)
    valid[list(data.errors)] = False
    rows = np.flatnonzero(valid)
    score, X = _scorer(args, bundle, data, rows, summary)
    scores = np.full(data.n_rows, np.nan)
    cut = _cut(args, score, X, rows, scores, summary)
    t = time.perf_counter()
    try:
        with open_output(args.output, atomic=True) as out:
            write = _writer(out, data, fmt, skip=args.on_error == "skip")
            parts = _parts(data.n_rows, min(LARGEST_PART, bundle.featurizer_config.chunk_size))
            for start, stop in progress(parts, len(parts), args):
                lo, hi = np.searchsorted(rows, [start, stop])
                todo = lo + np.flatnonzero(np.isnan(scores[rows[lo:hi]]))  # the sampled rows have their scores
                if len(todo):
                    scores[rows[todo]] = score(X[todo])
                flags = np.zeros(stop - start, dtype=np.int8)
                flags[valid[start:stop]] = scores[start:stop][valid[start:stop]] > cut
                write(start, stop, scores[start:stop], flags, valid[start:stop])
                out.flush()
                summary.scored += int(valid[start:stop].sum())  # counted once written: a closed pipe stops the count
                summary.flagged += int(flags.sum())
    except BrokenPipeError:
        return broken_pipe(summary)
    logger.info("scored and wrote the output in %.2fs", time.perf_counter() - t)
    print(summary.text(), file=sys.stderr)
    return 0


def _cut(args, score, X: np.ndarray, rows: np.ndarray, scores: np.ndarray, summary: Summary) -> float:
    """The score above which a row is flagged (``summary.rule`` says which).  With
    ``--contamination`` on at most :data:`THRESHOLD_SAMPLE` rows, every row is scored here
    (into ``scores``) and the cut is their quantile; on more, the quantile of a seeded sample
    of that many rows, scored here too."""
    if args.contamination is None:
        summary.rule = describe_rule(args)
        return args.threshold
    q = 1.0 - args.contamination
    if len(rows) <= THRESHOLD_SAMPLE:
        scores[rows] = score(X)
        cut = float(np.quantile(scores[rows], q))
        summary.rule = describe_rule(args, cut)
        return cut
    sample = np.sort(np.random.default_rng(0).choice(len(rows), size=THRESHOLD_SAMPLE, replace=False))
    scores[rows[sample]] = score(X[sample])
    cut = float(np.quantile(scores[rows[sample]], q))
    summary.rule = f"score > the {q:.4g} quantile of {THRESHOLD_SAMPLE:,} rows drawn at random = {cut:.4g}"
    return cut


def _parts(n_rows: int, largest: int) -> list[tuple[int, int]]:
    """(start, stop) of the output's parts: :data:`FIRST_PART` rows, then twice as many each time, up to ``largest``."""
    parts, start, size = [], 0, min(FIRST_PART, largest)
    while start < n_rows:
        parts.append((start, min(start + size, n_rows)))
        start, size = start + size, min(2 * size, largest)
    return parts


def _read(args, bundle, columns, summary: Summary):
    """The input as a :class:`~anomaly_gym.envs.csvio.Table`; its notes printed, its bad rows counted."""
    from anomaly_gym.envs.csvio import read_table

    t = time.perf_counter()
    data = read_table(args.inputs, on_error=args.on_error, reserved=BATCH_COLUMNS, **_batch_columns(args, bundle, columns))
    logger.info("read %d rows x %d feature columns in %.2fs", data.n_rows, len(data.feature_idx), time.perf_counter() - t)
    for note in data.notes:
        print(f"anomaly-gym detect: note: {note}", file=sys.stderr)
    print_schema(args, data.types)
    summary.read = data.n_rows
    if data.errors and args.on_error == "fail":  # the run stops at the first bad row
        first = min(data.errors)
        summary.error(data.errors[first])
        if len(data.errors) > 1:
            summary.extra.append(f"{len(data.errors) - 1:,} more bad row(s) after it (see them with --on-error mark)")
        print(summary.text(), file=sys.stderr)
        raise ValueError(f"{data.where(first)}: {data.errors[first]} (--on-error fail)")
    for reason in data.errors.values():
        summary.error(reason)
    return data


def _scorer(args, bundle, data, rows: np.ndarray, summary: Summary):
    """A function scoring the valid ``rows`` of ``data`` given as the featurizer's matrix, and
    that matrix (:func:`anomaly_gym.agents.scoring.fitted_scorer`)."""
    from anomaly_gym.agents.scoring import fitted_scorer

    stored = bundle.featurizer if _stored_featurizer(args, bundle) else None
    X, encoder = _encoded_rows(args, data, rows, stored)
    if bundle.head is not None:  # a target head reads the columns it was adapted on: its message first
        bundle.head.check_width(X.shape[1])
    if stored is not None:
        if stored.n_columns_ != X.shape[1]:
            raise ValueError(
                f"the bundle's stored featurizer was fitted on {stored.n_columns_} columns but the input has "
                f"{X.shape[1]}; pick the target's columns with --columns, or pass --featurizer refit"
            )
        summary.extra.append("features relative to the rows the bundle was adapted on (stored featurizer)")
    elif len(rows) < 10:
        raise ValueError(f"only {len(rows)} valid row(s); the detectors need at least 10 to fit")
    if encoder is not None and encoder.categorical:
        letters = encoder.letter_columns
        coded = f" ({', '.join(letters)}: letter codes, also by their place in the alphabet)" if letters else ""
        summary.extra.append(f"{len(encoder.categorical)} categorical column(s) scored by rarity{coded}; {X.shape[1]} encoded feature column(s)")
    return fitted_scorer(bundle, X, featurizer=stored), X


def _batch_columns(args, bundle, columns) -> dict:
    """``read_table``'s column options: the user's, or, for a bundle whose stored featurizer
    has an encoder, the columns and kinds of the rows it was adapted on."""
    options = dict(schema_options(args), columns=columns)
    stored_encoder = getattr(bundle.featurizer, "encoder_", None) if _stored_featurizer(args, bundle) else None
    if stored_encoder is not None and columns is None and not options["categorical"]:
        options["columns"], options["categorical"] = list(stored_encoder.numeric), list(stored_encoder.categorical)
        options["on_missing"] = options["on_missing"] or stored_encoder.on_missing
    return options


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
                "--categorical, or pass --featurizer refit"
            )
    elif data.category_idx or getattr(args, "on_missing", None) == "impute":
        if stored is not None:
            raise ValueError(
                "the bundle's stored featurizer was adapted on numeric columns only, but this input has "
                f"categorical columns {data.category_names} or missing values to impute; leave them out "
                "(--ignore) or pass --featurizer refit"
            )
        # fitted on the rows it encodes: a rarity column 0 on all of them is left out
        encoder = TableEncoder(data.feature_names, data.category_names, on_missing="impute", drop_constant=True)
        return encoder.fit_transform(data.X[rows], data.categories(rows)).astype(np.float32), encoder
    if encoder is None:
        return data.X[rows].astype(np.float32), None  # the precision tasks have in training (make_task)
    return encoder.transform(data.X[rows], data.categories(rows)).astype(np.float32), encoder


def _writer(out: IO[str], data, fmt: str, *, skip: bool):
    """``write(start, stop, scores, flags, valid)``: rows ``start:stop`` of ``data`` with their
    score, flag and error (bad rows left out with ``skip``)."""
    from anomaly_gym.envs.csvio import CsvOutput, JsonlOutput

    if fmt == "csv":  # the records' CSV text as read, with the scores appended: no splitting and joining again
        writer = CsvOutput(out, data.header, BATCH_COLUMNS, flush_rows=False)
        return lambda start, stop, *part: writer.write_lines(_scored_rows(data, start, stop, *part, skip=skip, text=data.fields.line))
    writer = JsonlOutput(out, data.header, BATCH_COLUMNS, data.feature_idx, flush_rows=False)

    def write(start, stop, *part):
        for fields, extra in _scored_rows(data, start, stop, *part, skip=skip):
            writer.write(fields, extra)

    return write


def _scored_rows(data, start: int, stop: int, scores, flags, valid, *, skip: bool, text=None):
    """(fields, (score, flag, error)) of every row of ``start:stop`` written, in order; the
    record's CSV text instead of its fields when ``text`` (``RowTexts.line``) is given."""
    score_list, flag_list, valid_list = scores.tolist(), flags.tolist(), valid.tolist()
    records = data.fields[start:stop] if text is None else map(text, range(start, stop))
    for i, fields in enumerate(records):
        if valid_list[i]:
            yield fields, (score_list[i], flag_list[i], None)
        elif not skip:
            yield fields, (None, None, data.errors[start + i])


def _stored_featurizer(args, bundle) -> bool:
    """Whether batch mode uses the bundle's stored featurizer (``--featurizer``)."""
    if args.featurizer == "stored" and bundle.featurizer is None:
        raise ValueError("--featurizer stored: this bundle holds no fitted featurizer (adapt it with `anomaly-gym adapt` first, or pass --featurizer refit)")
    return args.featurizer == "stored" or (args.featurizer == "auto" and bundle.featurizer is not None)
