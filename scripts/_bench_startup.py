"""``anomaly-gym bench detect-startup``: how soon ``detect`` gives its first scored row, and its peak memory.

Each mode runs ``anomaly-gym detect`` in a new Python process on a seeded CSV, reading its
standard output as it comes: the time from starting the process to its first output row
and to its first scored row, the total time, the process's CPU time and its peak resident
memory (``ru_maxrss`` of the child, from ``os.wait4``).  Batch mode scores a table of
``--rows`` rows (it writes after scoring them all); stream mode echoes ``--warmup`` warm-up
rows, fits, then scores each row as it arrives (refits in a background worker process,
whose memory is its own and is not counted).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_FIRST_ROW_S = 2.0
TARGET_RSS_MB = 300.0


def add_parser(sub) -> None:
    p = sub.add_parser("detect-startup", help="detect with a bundle in a new process: seconds to the first scored row and peak memory, batch and stream")
    p.add_argument("--model", type=Path, default=None, help="policy bundle (default: the bundled default policy)")
    p.add_argument("--rows", type=int, default=100_000, help="rows of the batch table (default 100000)")
    p.add_argument("--columns", type=int, default=10, help="numeric columns (default 10)")
    p.add_argument("--stream-rows", type=int, default=2_000, help="stream: rows after the warm-up (default 2000)")
    p.add_argument("--warmup", type=int, default=256, help="stream: warm-up rows (default 256, detect's default)")
    p.add_argument("--threads", type=int, default=1, help="detect's --threads (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument("--mode", choices=("both", "batch", "stream"), default="both", help="which modes to measure (default both)")
    p.set_defaults(func=run)


def write_csv(path: Path, n_rows: int, n_columns: int, seed: int) -> Path:
    """A seeded table of Gaussian rows with 1% shifted rows, header ``x0,x1,...``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n_rows, n_columns))
    X[rng.random(n_rows) < 0.01] += 5.0
    np.savetxt(path, X, delimiter=",", fmt="%.5f", header=",".join(f"x{i}" for i in range(n_columns)), comments="")
    return path


def measure(argv: list[str], *, scored_column: int) -> dict[str, float]:
    """Run ``argv``; seconds to its first output row and first scored row (``scored_column``
    of the row not empty), total seconds, CPU seconds and peak RSS (MB) of the process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first_row = first_scored = None
    rows = 0
    proc.stdout.readline()  # the header
    for line in proc.stdout:
        now = time.perf_counter() - t0
        rows += 1
        first_row = now if first_row is None else first_row
        if first_scored is None and line.rstrip("\r\n").split(",")[scored_column] != "":
            first_scored = now
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"detect failed (exit {proc.returncode}):\n{err[-2000:]}")
    rss_mb = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return {
        "first row (s)": first_row,
        "first scored row (s)": first_scored,
        "total (s)": total,
        "CPU (s)": usage.ru_utime + usage.ru_stime,
        "peak RSS (MB)": rss_mb,
        "rows": rows,
        "summary": err.strip(),
    }


#: A process that loads the bundle and fits its featurizer on 50 rows, as detect does: the imports scoring needs,
#: and little data.
FLOOR = """
import sys
import numpy as np
from anomaly_gym.envs.bank import import_estimators
from anomaly_gym.scripts.detect import load_model
import_estimators(without_pandas=True)
bundle = load_model(None if sys.argv[1] == "-" else sys.argv[1], "cpu")
bundle.score(np.random.default_rng(0).normal(size=(50, int(sys.argv[2]))))
print("x0\\n0")
"""


def run(args: argparse.Namespace) -> dict[str, float]:
    for name in ("rows", "columns", "stream_rows", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(args, name)}")
    if args.warmup < 10:
        raise ValueError(f"--warmup must be at least 10, got {args.warmup}")
    if args.model is not None and not args.model.is_file():
        raise FileNotFoundError(f"no such policy bundle: {args.model}")
    base = [sys.executable, "-m", "anomaly_gym.scripts.cli", "detect", "--threads", str(args.threads), "-o", "-"]
    base += ["--model", str(args.model)] if args.model is not None else []
    figures: dict[str, float] = {}
    print(
        f"anomaly-gym detect in a new process, {args.columns} columns; load average {os.getloadavg()[0]:.1f} on "
        f"{os.cpu_count()} cores; targets: first scored row <= {TARGET_FIRST_ROW_S:g}s, peak RSS < {TARGET_RSS_MB:g} MB"
    )
    floor = measure([sys.executable, "-c", FLOOR, str(args.model or "-"), str(args.columns)], scored_column=0)
    print(
        f"the imports alone (load the bundle, fit and score 50 rows in a new process): {floor['total (s)']:.2f}s, "
        f"CPU {floor['CPU (s)']:.2f}s, peak RSS {floor['peak RSS (MB)']:.0f} MB"
    )
    figures["imports peak RSS (MB)"] = floor["peak RSS (MB)"]
    with tempfile.TemporaryDirectory(prefix="anomaly-gym-startup-") as tmp:
        if args.mode in ("both", "batch"):
            data = write_csv(Path(tmp) / "batch.csv", args.rows, args.columns, args.seed)
            figures |= _report(f"batch, {args.rows:,} rows", measure(base + [str(data), "--no-progress"], scored_column=args.columns), "batch")
        if args.mode in ("both", "stream"):
            data = write_csv(Path(tmp) / "stream.csv", args.warmup + args.stream_rows, args.columns, args.seed + 1)
            argv = base + [str(data), "--mode", "stream", "--warmup", str(args.warmup)]
            figures |= _report(f"stream, {args.warmup} warm-up + {args.stream_rows:,} rows", measure(argv, scored_column=args.columns), "stream")
    return figures


def _report(label: str, m: dict, mode: str) -> dict[str, float]:
    def met(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(
        f"{label}: first output row {m['first row (s)']:.2f}s, first scored row {m['first scored row (s)']:.2f}s "
        f"(target: {met(m['first scored row (s)'] <= TARGET_FIRST_ROW_S)}), all {m['rows']:,} rows {m['total (s)']:.2f}s, "
        f"CPU {m['CPU (s)']:.2f}s, peak RSS {m['peak RSS (MB)']:.0f} MB (target: {met(m['peak RSS (MB)'] < TARGET_RSS_MB)})"
    )
    for line in m["summary"].splitlines():
        print(f"  {line}")
    return {f"{mode} {name}": m[name] for name in ("first row (s)", "first scored row (s)", "total (s)", "peak RSS (MB)")}
