"""``anomaly-gym bench executors``: the zero-shot benchmark serially, on a local process pool and on Ray, timed in one run.

Every variant runs the same benchmark (:func:`anomaly_gym.meta.benchmark.run_benchmark`,
zero-shot, the datasets of ``--data`` as sources and targets) into its own folder with its
own empty feature cache, so that none reuses another's work, as ``anomaly-gym benchmark``
in a fresh process.  The wall time of each includes everything a user waits for: starting
Python, loading the datasets, starting the workers (and the local Ray instance), the
report.  The CPU seconds of each (its process and its workers; not Ray's daemons and
workers) show the work added by running in parallel, which the wall time alone hides on a
machine that other jobs load.  The results of the parallel variants are compared with the
serial ones (every column but the timings).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path("../shared/data/adbench")
VARIANTS = ("serial", "local", "ray")


def add_parser(bsub) -> None:
    p = bsub.add_parser("executors", help="wall time of the zero-shot benchmark serially, on a local process pool and on Ray")
    p.add_argument("--data", default=str(DEFAULT_DATA), help=f"targets and sources: 'builtin' or a folder of NAME.npz / NAME.csv.gz (default {DEFAULT_DATA})")
    p.add_argument("--max-datasets", type=int, default=None, metavar="N", help="only the first N targets by name (default: all)")
    p.add_argument("--datasets", default=None, metavar="A,B,...", help="only these targets")
    p.add_argument("--methods", default=None, metavar="M,...", help="methods, as for `anomaly-gym benchmark` (default: its zero-shot set)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per target (default 1)")
    p.add_argument("--workers", type=int, default=2, help="workers of the local pool and CPUs of the Ray instance (default 2)")
    p.add_argument("--executors", default=",".join(VARIANTS), metavar="E,...", help="variants to time, serial first (default serial,local,ray)")
    p.add_argument("--address", default=None, metavar="auto|HOST:PORT", help="time Ray on this cluster instead of a local instance")
    p.add_argument(
        "-o", "--out", "--output", dest="out", type=Path, default=None, help="folder of the variants' results (default: a temporary folder, removed at the end)"
    )
    p.set_defaults(func=run)


def _variants(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"--executors: choose among {', '.join(VARIANTS)}, got {text!r}")
    return list(dict.fromkeys(names))


def _targets(args: argparse.Namespace) -> list[str] | None:
    """The target names: ``--datasets``, or the first ``--max-datasets`` by name."""
    if args.datasets:
        return [d.strip() for d in args.datasets.split(",") if d.strip()]
    if args.max_datasets is None:
        return None
    if args.max_datasets < 1:
        raise ValueError(f"--max-datasets must be positive, got {args.max_datasets}")
    from anomaly_gym.meta.benchmark.protocol import load_task_sets

    return sorted((t.name for t in load_task_sets([args.data])), key=str.lower)[: args.max_datasets]


def _timed(args: argparse.Namespace, name: str, targets: list[str] | None, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of ``anomaly-gym benchmark`` with executor ``name`` in a fresh process with an empty feature cache."""
    command = [
        sys.executable,
        "-m",
        "anomaly_gym.scripts.cli",
        "benchmark",
        "-q",
        "--no-progress",
        "--sources",
        args.data,
        "--targets",
        args.data,
        "--seeds",
        str(args.seeds),
        "--executor",
        name,
        "--out",
        str(out),
    ]
    command += ["--datasets", ",".join(targets)] if targets else []
    command += ["--methods", args.methods] if args.methods else []
    command += ["--workers", str(args.workers)] if name != "serial" else []
    command += ["--address", args.address] if name == "ray" and args.address else []
    env = dict(os.environ, ANOMALY_GYM_CACHE=str(out / "feature-cache"))
    cpu = _children_cpu()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the {name} run failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return seconds, _children_cpu() - cpu


def _children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished descendants (a pool's workers too; Ray's daemons not)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _same_results(a: Path, b: Path) -> bool:
    from anomaly_gym.meta.benchmark import TIMING_COLUMNS, load_results

    keys = ["dataset", "method", "protocol", "labels", "seed"]
    frames = [load_results(p / "results.csv").drop(columns=list(TIMING_COLUMNS)).sort_values(keys).reset_index(drop=True) for p in (a, b)]
    return frames[0].equals(frames[1])


def run(args: argparse.Namespace) -> dict:
    from anomaly_gym.meta.benchmark import load_results

    variants = _variants(args.executors)
    if args.workers < 1:
        raise ValueError(f"--workers must be positive, got {args.workers}")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    if args.out is not None and args.out.exists() and any(args.out.iterdir()):
        raise ValueError(f"{args.out} is not empty; give --out a new folder (every variant must start from nothing)")
    targets = _targets(args)
    with tempfile.TemporaryDirectory(prefix="bench-executors-") as tmp:
        root = Path(args.out) if args.out is not None else Path(tmp)
        print(
            f"zero-shot benchmark: {len(targets) if targets else 'every'} target(s) of {args.data}, seeds {args.seeds}, "
            f"methods {args.methods or 'the default set'}; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}"
        )
        figures: dict[str, float] = {}
        first = variants[0]
        for name in variants:
            seconds, cpu = _timed(args, name, targets, root / name)
            figures[f"{name} s"] = seconds
            figures[f"{name} CPU s"] = cpu
            rows = len(load_results(root / name / "results.csv"))
            line = f"{name:>6} ({'1 process' if name == 'serial' else f'{args.workers} workers'}): {seconds:8.1f} s  {rows} rows"
            if name != first:
                same = "identical to" if _same_results(root / first, root / name) else "DIFFER from"
                line += f"  {seconds / figures[f'{first} s']:.2f}x {first}  results {same} {first}'s"
            print(f"{line}  CPU {cpu:.0f} s  (load average {os.getloadavg()[0]:.1f})", flush=True)
        for name in variants[1:]:
            figures[f"{name} / {variants[0]}"] = figures[f"{name} s"] / figures[f"{variants[0]} s"]
    return figures
