"""``anomaly-gym detect --mode stream``: read rows as they arrive, score each with a
:class:`~anomaly_gym.detectors.stream.StreamDetector`, write and flush it at once."""

from __future__ import annotations

import sys
import time

from anomaly_gym.scripts._detect_report import Summary, default_rule, describe_stream_rule, print_schema, schema_options, stream_to_output

STREAM_COLUMNS = ("anomaly_score", "is_anomaly", "status", "error")


def run_stream(args, bundle, columns, fmt: str, *, timings: list[tuple[float, float, bool]] | None = None) -> int:
    """Score rows as they arrive.  ``timings`` (benchmarks) receives, for each scored row,
    the wall-clock and the CPU seconds from reading it to having written and flushed its
    output, refits included, and whether a refit was running in the background."""
    from anomaly_gym.envs.csvio import SAMPLE_ROWS, CsvReader

    if args.featurizer == "stored":
        raise ValueError("--featurizer stored applies to batch mode; stream mode fits the detectors on its sliding window")
    default_rule(args)
    summary = Summary("stream", args.on_error, rule=describe_stream_rule(args))
    # the feature columns are decided on rows that stream mode echoes as warm-up anyway
    reader = CsvReader(
        args.inputs, columns=columns, on_error=args.on_error, reserved=STREAM_COLUMNS, sample_rows=min(SAMPLE_ROWS, args.warmup), **schema_options(args)
    )
    run = _StreamRun(args, bundle, reader, summary, timings)
    try:
        status = stream_to_output(args.output, summary, lambda out: run.loop(out, fmt))
    finally:
        if run.detector is not None:
            run.detector.close()
    if status == 141:
        return status
    detector = run.detector
    if detector is not None and detector.n_fits:
        where = "in the background" if detector.background else "inline"
        summary.extra.append(f"detectors fitted {detector.n_fits} time(s) ({where}), {detector.fit_seconds / detector.n_fits:.2f}s each")
    print(summary.text(), file=sys.stderr)
    return status


def stream_detector(args, bundle):
    """The stream detector of ``detect --mode stream`` (see :mod:`anomaly_gym.detectors.stream`)."""
    from anomaly_gym.detectors.stream import StreamDetector

    return StreamDetector(
        bundle,
        contamination=args.contamination,
        threshold=args.threshold,
        warmup=args.warmup,
        window=args.window,
        refit_every=args.refit_every,
        background=args.refit == "background",
        n_threads=args.threads,
    )


class _StreamRun:
    """One run of stream mode: the reader, the writer, the detector (made at the first valid row)."""

    def __init__(self, args, bundle, reader, summary: Summary, timings) -> None:
        self.args, self.bundle, self.reader, self.summary, self.timings = args, bundle, reader, summary, timings
        self.detector = None
        self.encoding = None  # a WarmupEncoder for categorical columns or imputed values; False when rows are used as read
        self.writer = None
        self.noted, self.schema_shown = 0, False

    def loop(self, out, fmt: str) -> None:
        from anomaly_gym.envs.csvio import CsvOutput, JsonlOutput

        records = iter(self.reader)
        t_row, c_row = time.perf_counter(), time.thread_time()
        rec = next(records, None)  # reads the header
        header = self.reader.header
        self.writer = CsvOutput(out, header, STREAM_COLUMNS, flush_rows=True) if fmt == "csv" else JsonlOutput(out, header, STREAM_COLUMNS, (), flush_rows=True)
        self.fmt = fmt
        while rec is not None:
            flag = self.record(rec)
            if self.timings is not None and flag is not None:
                self.timings.append((time.perf_counter() - t_row, time.thread_time() - c_row, self.detector.refitting))
            t_row, c_row = time.perf_counter(), time.thread_time()
            rec = next(records, None)

    def record(self, rec) -> int | None:
        """Handle one record: write it with its score, status and error; its flag (None when not scored)."""
        from anomaly_gym.envs.csvio import InputError

        self.summary.read += 1
        self._notes()
        if rec.error is not None:
            self.summary.error(rec.error)
            if self.args.on_error == "fail":
                raise InputError(rec.source, rec.line, f"{rec.error} (--on-error fail)")
            if self.args.on_error == "mark":
                self.writer.write(rec.fields, (None, None, "error", rec.error))
            return None
        xs = self._encoded(rec)
        if self.detector is None and xs:
            self.detector = stream_detector(self.args, self.bundle)
            if self.fmt == "jsonl":
                self.writer.numeric = set(self.reader.feature_idx)
        for x in xs[:-1]:  # warm-up rows held back until the encoder was fitted
            self.detector.process_one(x)
        score, flag = self.detector.process_one(xs[-1]) if xs else (None, None)
        if flag is None:
            self.summary.warmup += 1
            self.writer.write(rec.fields, (None, None, "warmup", None))
        else:
            self.summary.scored += 1
            self.summary.flagged += flag
            self.writer.write(rec.fields, (score, flag, "ok", None))
        return flag

    def _encoded(self, rec) -> list:
        """The detector's rows for ``rec``: its values, or what the warm-up encoder releases."""
        from anomaly_gym.envs.encoding import WarmupEncoder

        reader = self.reader
        if self.encoding is None:
            self.encoding = (
                WarmupEncoder(reader.feature_names, reader.category_names, self.args.warmup)
                if reader.category_idx or self.args.on_missing == "impute"
                else False
            )
        if not self.encoding:
            return [rec.values]
        return self.encoding.rows(rec.values, [rec.fields[i] for i in reader.category_idx])

    def _notes(self) -> None:
        reader = self.reader
        if len(reader.notes) > self.noted:
            for note in reader.notes[self.noted :]:
                print(f"anomaly-gym detect: note: {note}", file=sys.stderr)
            self.noted = len(reader.notes)
        if not self.schema_shown and reader.types:
            print_schema(self.args, reader.types)
            self.schema_shown = True
