"""``anomaly-gym bench detect``: the speed of ``anomaly-gym detect`` in batch and stream mode.

Batch: on a generated CSV (default 1,000,000 rows x 10 numeric columns), the time pandas
takes to read it (``engine="pyarrow"``) and write it back (``DataFrame.to_csv``), against
``detect --mode batch`` end to end in a fresh process (start-up, model loading, reading,
fitting, scoring, writing).  Target: detect <= 5x read + write.

Stream: per-row time after warm-up over ``--stream-rows`` rows (default 100,000), from
reading the row to having written and flushed its output, with the CLI's defaults (refits
in a worker process every 1,024 rows, on a window of 2,048); the rows scored while a refit
runs are reported apart too.  Sustained throughput: scored rows over the sum of their
times.  Targets: >= 2,000 rows/s on 10 columns, p99 < 2 ms, max < 50 ms.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def add_parser(bsub) -> None:
    d = bsub.add_parser("detect", help="anomaly-gym detect: batch time vs pandas read+write, stream per-row latency")
    d.add_argument("--rows", type=int, default=1_000_000, help="rows of the generated CSV for batch mode (default 1,000,000)")
    d.add_argument("--n-columns", type=int, default=10, help="numeric columns of the generated CSV (default 10)")
    d.add_argument("--stream-rows", type=int, default=100_000, help="rows scored in stream mode after warm-up (default 100,000)")
    d.add_argument(
        "--model",
        type=Path,
        default=None,
        help="policy bundle (default: the bundled default policy, else an untrained policy with the default featurizer: speed does not depend on the weights)",
    )
    d.add_argument("--workdir", type=Path, default=None, help="folder for the generated files (default: a temporary folder)")
    d.add_argument("--threads", type=int, default=1, help="--threads of detect (default 1)")
    d.add_argument("--skip-batch", action="store_true", help="only the stream benchmark")
    d.add_argument("--skip-stream", action="store_true", help="only the batch benchmark")
    d.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    d.set_defaults(func=run)


def make_csv(path: Path, n_rows: int, n_columns: int, seed: int = 0) -> None:
    """Sensor-like rows: 3 latent factors mixed into the columns plus noise, 0.5% of rows
    shifted (anomalies), 4 decimals."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(3, n_columns))
    parts = []
    for start in range(0, n_rows, 250_000):
        m = min(250_000, n_rows - start)
        X = rng.normal(size=(m, 3)) @ mix + 0.3 * rng.normal(size=(m, n_columns))
        bad = rng.random(m) < 0.005
        X[bad] += rng.normal(scale=4.0, size=(int(bad.sum()), n_columns))
        parts.append(np.round(X, 4))
    X = np.vstack(parts)
    columns = {f"x{j}": pa.array(X[:, j]) for j in range(n_columns)}
    pacsv.write_csv(pa.table(columns), path, pacsv.WriteOptions(quoting_style="none"))


def _bundle(path: Path | None, workdir: Path) -> tuple[Path, str]:
    from anomaly_gym.agents.bundle import default_bundle_path

    if path is not None:
        return path, str(path)
    default = default_bundle_path()
    if default.is_file():
        return default, f"the default policy ({default})"
    from anomaly_gym.agents import PolicyBundle, make_agent
    from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task

    config = FeaturizerConfig()
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, seed=0)], featurizer=config)
    target = workdir / "untrained.bundle.zip"
    PolicyBundle(make_agent("ppo", env, device="cpu"), config).save(target)
    return target, f"an untrained PPO policy with the default featurizer ({len(config.detectors)} detectors)"


def run(args: argparse.Namespace) -> dict[str, float]:
    for name in ("rows", "n_columns", "stream_rows", "threads"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        model, model_text = _bundle(args.model, workdir)
        print(f"model: {model_text}; cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}; detect --threads {args.threads}")
        figures = {}
        if not args.skip_batch:
            figures |= _batch(args, workdir, model)
        if not args.skip_stream:
            figures |= _stream(args, workdir, model)
    return figures


def _batch(args, workdir: Path, model: Path) -> dict[str, float]:
    import pandas as pd

    data = workdir / "bench.csv"
    t0 = time.perf_counter()
    make_csv(data, args.rows, args.n_columns, args.seed)
    print(
        f"data: {data} ({args.rows:,} rows x {args.n_columns} numeric columns, {data.stat().st_size / 1e6:.0f} MB), "
        f"generated in {time.perf_counter() - t0:.1f}s"
    )

    t0, c0 = time.perf_counter(), time.process_time()
    df = pd.read_csv(data, engine="pyarrow")
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    df.to_csv(workdir / "pandas_out.csv", index=False)
    t_write = time.perf_counter() - t0
    base_cpu = time.process_time() - c0
    del df
    base = t_read + t_write
    print(f"pandas read_csv(engine='pyarrow') {t_read:.2f}s + DataFrame.to_csv {t_write:.2f}s = read+write {base:.2f}s (CPU time {base_cpu:.2f}s)")

    out = workdir / "detect_out.csv"
    proc, wall, cpu = run_detect(data, model, out, "--threads", str(args.threads), level="-v")
    with open(out, "rb") as fh:
        n_out = sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 24), b""))
    print(
        f"detect --mode batch, end to end in a new process: {wall:.2f}s = {wall / base:.1f}x read+write "
        f"(target <= 5x: {'met' if wall <= 5 * base else 'NOT met'}); CPU time {cpu:.2f}s = {cpu / base_cpu:.1f}x "
        f"read+write's; {n_out - 1:,} rows written"
    )
    for line in proc.stderr.splitlines():
        if "anomaly_gym.scripts.detect:" in line or "anomaly_gym.agents.scoring:" in line or line.startswith("anomaly-gym detect:"):
            print("  " + line.split("detect: ", 1)[-1])
    return {"batch detect (s)": wall, "pandas read+write (s)": base, "batch detect / read+write (x)": wall / base}


def _stream(args, workdir: Path, model: Path) -> dict[str, float]:
    from anomaly_gym.scripts import detect
    from anomaly_gym.scripts.cli import build_parser
    from threadpoolctl import threadpool_limits

    warmup = 256
    data = workdir / "stream.csv"
    make_csv(data, warmup + args.stream_rows, args.n_columns, args.seed + 1)
    argv = ["detect", str(data), "--model", str(model), "--mode", "stream", "--warmup", str(warmup), "--output", os.devnull, "--threads", str(args.threads)]
    ns = build_parser().parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    timings: list[tuple[float, float, bool]] = []
    with threadpool_limits(args.threads), detect._quiet_repeated_warnings():
        bundle = detect.load_model(ns.model, "cpu")
        t0 = time.perf_counter()
        detect.run_stream(ns, bundle, None, "csv", timings=timings)
        wall = time.perf_counter() - t0
    wall_ms, cpu_ms = (np.array([t[:2] for t in timings]) * 1e3).T
    refitting = np.array([t[2] for t in timings], dtype=bool)
    for label, t in (("wall-clock", wall_ms), ("CPU time", cpu_ms), ("during refits", wall_ms[refitting])):
        if len(t) == 0:
            continue
        p50, p99, p999 = np.percentile(t, [50, 99, 99.9])
        print(
            f"  {label:<13} per row: p50 {p50:.3f} ms, p99 {p99:.3f} ms, p99.9 {p999:.1f} ms, max {t.max():.1f} ms; "
            f"{int((t > 2.0).sum()):,} of {len(t):,} rows over 2 ms"
        )
    p99, worst = float(np.percentile(wall_ms, 99)), float(wall_ms.max())
    rate = len(wall_ms) / (wall_ms.sum() / 1e3)
    print(
        f"detect --mode stream (refits in the background), {len(wall_ms):,} rows x {args.n_columns} columns after {warmup} "
        f"warm-up rows ({wall:.1f}s in all, {refitting.mean():.0%} of the rows during a refit):"
    )
    print(
        f"  sustained {rate:,.0f} rows/s (target >= 2,000: {'met' if rate >= 2000 else 'NOT met'}); wall-clock p99 "
        f"{p99:.3f} ms (target < 2 ms: {'met' if p99 < 2.0 else 'NOT met'}), max {worst:.1f} ms (target < 50 ms: "
        f"{'met' if worst < 50.0 else 'NOT met'}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores. "
        "The CPU-time figures leave out the time the process waited for a core."
    )
    p50 = float(np.percentile(wall_ms, 50))
    return {"stream rows/s": rate, "stream p50 (ms)": p50, "stream p99 (ms)": p99, "stream max (ms)": worst}


def run_detect(data: Path, model: Path, out: Path, *options: str, level: str = "-q") -> tuple[subprocess.CompletedProcess, float, float]:
    """``anomaly-gym {level} detect --mode batch`` on ``data`` with further ``options``, in a new process:
    its result, wall-clock seconds and CPU seconds. A RuntimeError with the end of its stderr when it fails."""
    cmd = [sys.executable, "-m", "anomaly_gym.scripts.cli", level, "detect", str(data), "--model", str(model)]
    cmd += ["--mode", "batch", "--output", str(out), "--no-progress", *options]
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"detect failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
