"""What ``anomaly-gym detect`` prints and writes: the summary, the output file, the rule's description."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_CONTAMINATION = 0.05  # the share flagged when neither --threshold nor --contamination is given


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
    for prefix, kind in (
        ("empty line", "empty line"),
        ("expected", "wrong number of fields"),
        ("missing", "missing value"),
        ("non-numeric", "non-numeric value"),
        ("non-finite", "NaN or infinite value"),
        ("value ", "value beyond float32's range"),
    ):
        if reason.startswith(prefix):
            return kind
    return reason


@contextlib.contextmanager
def quiet_repeated_warnings():
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
def open_output(path: str, *, atomic: bool):
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


def default_rule(args) -> None:
    if args.threshold is None and args.contamination is None:
        args.contamination = DEFAULT_CONTAMINATION


def describe_rule(args, value: float | None = None) -> str:
    if args.contamination is not None:
        where = f"= {value:.4g}" if value is not None else "of the window"
        return f"score > the {1 - args.contamination:.4g} quantile {where}"
    return f"score > {args.threshold:g}"


def broken_pipe(summary: Summary) -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
    summary.extra.append("the output was closed early (broken pipe); stopped")
    print(summary.text(), file=sys.stderr)
    return 141


def stream_to_output(path: str, summary: Summary, body) -> int:
    """Run ``body(out)`` with the stream's output open (written row by row, not atomically).

    Returns 0, or 130 after Ctrl-C (noted in ``summary``), or 141 after the reader closed the
    output (the summary is then already printed). A ValueError or OSError prints the summary
    so far and propagates.
    """
    try:
        with open_output(path, atomic=False) as out:
            body(out)
    except BrokenPipeError:
        return broken_pipe(summary)
    except KeyboardInterrupt:
        summary.extra.append("interrupted")
        return 130
    except (ValueError, OSError):
        print(summary.text(), file=sys.stderr)
        raise
    return 0


def describe_stream_rule(args) -> str:
    if args.contamination is not None:
        return f"conformal p-value <= {args.contamination:.4g} among the current fit's held-out and live scores"
    return f"score > {args.threshold:g}"


def schema_options(args) -> dict:
    return {
        "categorical": getattr(args, "categorical", []),
        "numeric": getattr(args, "numeric", []),
        "ignore": getattr(args, "ignore", []),
        "on_missing": getattr(args, "on_missing", None),
    }


def print_schema(args, types) -> None:
    from anomaly_gym.envs.csvio import describe_schema

    if getattr(args, "verbose", False) and types:  # -v/--verbose: the inferred column schema
        print("anomaly-gym detect: schema:\n" + "\n".join(f"  {line}" for line in describe_schema(types)), file=sys.stderr)


def progress(iterable, total: int, args):
    if args.no_progress or not sys.stderr.isatty() or total < 2:
        return iterable
    from rich.console import Console
    from rich.progress import track

    return track(iterable, total=total, description="scoring", transient=True, console=Console(stderr=True))
