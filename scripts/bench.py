"""``anomaly-gym bench``: benchmark commands that print their figures."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

DEFAULT_DONORS = Path("../shared/data/adbench/donors.npz")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed benchmarks that print their figures")
    bsub = p.add_subparsers(dest="bench", metavar="BENCH", required=True)
    f = bsub.add_parser("featurizer", help="featurizer fit + transform time on a large dataset (default: ADBench donors)")
    f.add_argument("--data", type=Path, default=None, help=f"an .npz or .csv dataset (default: {DEFAULT_DONORS})")
    f.add_argument("--repeats", type=int, default=1, help="timed repetitions (the best is reported too)")
    f.set_defaults(func=run_featurizer)
    from anomaly_gym.scripts import _bench_env, _bench_startup

    _bench_env.add_parser(bsub)  # `bench env`
    from anomaly_gym.scripts import _bench_detect

    _bench_detect.add_parser(bsub)  # `bench detect`, kept in its own module
    from anomaly_gym.scripts import _bench_adapt

    _bench_adapt.add_parser(bsub)  # `bench adapt`
    from anomaly_gym.scripts import _bench_stream

    _bench_stream.add_parser(bsub)  # `bench stream-temporal`
    from anomaly_gym.scripts import _bench_tables

    _bench_tables.add_parser(bsub)  # `bench tables`
    from anomaly_gym.scripts import _bench_encoding

    _bench_encoding.add_parser(bsub)  # `bench encoding`
    from anomaly_gym.scripts import _bench_discover

    _bench_discover.add_parser(bsub)  # `bench discover`
    from anomaly_gym.scripts import _bench_executors

    _bench_executors.add_parser(bsub)  # `bench executors`
    _bench_startup.add_parser(bsub)  # `bench detect-startup`
    for name in ("featurizer", "env", "detect", "stream-temporal", "discover", "executors", "detect-startup", "encoding"):
        sp = bsub.choices[name]
        sp.add_argument(
            "--runs",
            type=int,
            default=1,
            help="run the whole benchmark N times and print the median, range and load average of each headline figure (default 1; the README's figures use 3)",
        )
        sp.set_defaults(func=repeated(sp.get_default("func")))


def repeated(func):
    """Wrap a benchmark that returns its headline figures: run it ``--runs`` times and print their medians.

    Each run of ``func(args)`` prints its own report and returns ``{figure: value}``; with
    ``--runs N > 1`` a summary follows with, per figure, the median, the range over the runs,
    and the one-minute load average before each run, so a figure can be quoted with how much
    it varies and on how busy a machine.
    """

    def run(args: argparse.Namespace) -> int:
        if args.runs < 1:
            raise ValueError(f"--runs must be a positive integer, got {args.runs}")
        results, loads = [], []
        for r in range(args.runs):
            if args.runs > 1:
                print(f"--- run {r + 1} of {args.runs} (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
            loads.append(os.getloadavg()[0])
            results.append(func(args) or {})
        if args.runs > 1:
            print(summarize_runs(results, loads))
        return 0

    return run


def summarize_runs(results: list[dict[str, float]], loads: list[float]) -> str:
    """The median and range of every figure over the runs, as printed by ``--runs``."""
    import numpy as np

    lines = [f"median of {len(results)} runs (load average before each run: {', '.join(f'{x:.1f}' for x in loads)}):"]
    for name in results[0]:
        values = np.array([r[name] for r in results if name in r], dtype=float)
        lo, mid, hi = values.min(), float(np.median(values)), values.max()
        lines.append(f"  {name:<40} median {_fmt(mid)}  (range {_fmt(lo)} to {_fmt(hi)})")
    return "\n".join(lines)


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _find_donors(path: Path | None) -> Path:
    if path is not None:
        return path
    env = os.environ.get("ANOMALY_GYM_DATA")
    candidates = [Path(env) / "adbench" / "donors.npz"] if env else []
    candidates.append(DEFAULT_DONORS)
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no benchmark dataset found at {', '.join(map(str, candidates))}; pass --data PATH (.npz or .csv), "
        "or set ANOMALY_GYM_DATA to the folder holding adbench/"
    )


def run_featurizer(args: argparse.Namespace) -> int:
    from anomaly_gym.envs import Featurizer, load_tasks

    path = _find_donors(args.data)
    t0 = time.perf_counter()
    task = load_tasks(path)[0]
    load_s = time.perf_counter() - t0
    print(f"dataset: {path} ({task.n_rows:,} rows x {task.n_features} columns), loaded in {load_s:.2f}s; cores: {os.cpu_count()}")
    times = []
    for r in range(args.repeats):
        feat = Featurizer()
        t0 = time.perf_counter()
        feat.fit(task.X)
        t1 = time.perf_counter()
        out = feat.transform(task.X)
        t2 = time.perf_counter()
        times.append(t2 - t0)
        print(
            f"run {r + 1}: fit {t1 - t0:.2f}s + transform {t2 - t1:.2f}s = {t2 - t0:.2f}s "
            f"({task.n_rows / (t2 - t1):,.0f} rows/s scored; {out.shape[1]} features, {len(feat.config.detectors)} detectors)"
        )
    print(f"featurizer fit+transform: best {min(times):.2f}s, mean {sum(times) / len(times):.2f}s (target: <= 60s on two cores)")
    return {"featurizer fit+transform, best (s)": min(times)}
