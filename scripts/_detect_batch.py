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


def run_batch(args, bundle, columns, fmt: str) -> int:
    """``detect --mode batch``: read every row, fit on the valid ones (or use the stored featurizer), score, write."""
    default_rule(args)
    summary = Summary("batch", args.on_error)
    data = _read(args, bundle, columns, summary)
    valid = np.ones(data.n_rows, dtype=bool)
    valid[list(data.errors)] = False
    scores = np.full(data.n_rows, np.nan)
    scores[valid] = _score(args, bundle, data, np.flatnonzero(valid), summary)
    if args.contamination is not None:
        cut = float(np.quantile(scores[valid], 1.0 - args.contamination))
        summary.rule = describe_rule(args, cut)
    else:
        cut = args.threshold
        summary.rule = describe_rule(args)
    flags = np.zeros(data.n_rows, dtype=np.int8)
    flags[valid] = scores[valid] > cut
    summary.scored = int(valid.sum())
    summary.flagged = int(flags.sum())
    t = time.perf_counter()
    try:
        with open_output(args.output, atomic=True) as out:
            _write_batch(out, data, scores, flags, valid, fmt, skip=args.on_error == "skip")
    except BrokenPipeError:
        return broken_pipe(summary)
    logger.info("wrote the output in %.2fs", time.perf_counter() - t)
    print(summary.text(), file=sys.stderr)
    return 0


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


def _score(args, bundle, data, rows: np.ndarray, summary: Summary) -> np.ndarray:
    """P(anomaly) of the valid ``rows`` of ``data`` (:func:`anomaly_gym.agents.scoring.score_rows`)."""
    from anomaly_gym.agents.scoring import score_rows

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
        summary.extra.append(f"{len(encoder.categorical)} categorical column(s) scored by rarity; {X.shape[1]} encoded feature column(s)")
    return score_rows(bundle, X, featurizer=stored, progress=lambda chunks, total: progress(chunks, total, args))


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


def _write_batch(out: IO[str], data, scores, flags, valid, fmt: str, *, skip: bool) -> None:
    from anomaly_gym.envs.csvio import CsvOutput, JsonlOutput

    header = data.header
    if fmt == "csv":
        writer = CsvOutput(out, header, BATCH_COLUMNS, flush_rows=False)
        writer.write_many(_scored_rows(data, scores, flags, valid, skip=skip))
        return
    writer = JsonlOutput(out, header, BATCH_COLUMNS, data.feature_idx, flush_rows=False)
    for fields, extra in _scored_rows(data, scores, flags, valid, skip=skip):
        writer.write(fields, extra)


def _scored_rows(data, scores, flags, valid, *, skip: bool):
    """(fields, (score, flag, error)) of every row written, in order."""
    score_list, flag_list, valid_list = scores.tolist(), flags.tolist(), valid.tolist()
    for i, fields in enumerate(data.fields):
        if valid_list[i]:
            yield fields, (score_list[i], flag_list[i], None)
        elif not skip:
            yield fields, (None, None, data.errors[i])


def _stored_featurizer(args, bundle) -> bool:
    """Whether batch mode uses the bundle's stored featurizer (``--featurizer``)."""
    if args.featurizer == "stored" and bundle.featurizer is None:
        raise ValueError("--featurizer stored: this bundle holds no fitted featurizer (adapt it with `anomaly-gym adapt` first, or pass --featurizer refit)")
    return args.featurizer == "stored" or (args.featurizer == "auto" and bundle.featurizer is not None)
