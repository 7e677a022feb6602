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
        print(f"run {r + 1}: fit {t1 - t0:.2f}s + transform {t2 - t1:.2f}s = {t2 - t0:.2f}s "
              f"({task.n_rows / (t2 - t1):,.0f} rows/s scored; {out.shape[1]} features, {len(feat.config.detectors)} detectors)")
    print(f"featurizer fit+transform: best {min(times):.2f}s, mean {sum(times) / len(times):.2f}s (target: <= 60s on two cores)")
    return 0
