"""``anomaly-gym bench discover``: the time of one Discover-v1 step once the features are computed."""

from __future__ import annotations

import argparse


def add_parser(bsub) -> None:
    d = bsub.add_parser("discover", help="time of one AnomalyGym/Discover-v1 step on an N-row task (features precomputed)")
    d.add_argument("--rows", type=int, default=10_000, help="rows of the synthetic task (default 10000)")
    d.add_argument("--steps", type=int, default=100, help="steps timed; the median is reported (default 100)")
    d.add_argument("--repeats", type=int, default=3, help="timed episodes; the best median is reported (default 3)")
    d.add_argument("--seed", type=int, default=0, help="seed of the task and the environment")
    d.set_defaults(func=run)


def run(args: argparse.Namespace) -> dict[str, float]:
    from anomaly_gym.envs.discover import bench_step

    if args.rows < 100 or args.steps < 1 or args.repeats < 1:
        raise ValueError("--rows must be at least 100 and --steps, --repeats positive")
    times = [bench_step(args.rows, args.steps, args.seed + r) for r in range(args.repeats)]
    print(
        f"Discover-v1 step on {args.rows} rows: {min(times) * 1e3:.3f} ms median per step "
        f"(best of {args.repeats} episodes of {args.steps} steps; all: {', '.join(f'{t * 1e3:.3f}' for t in times)} ms)"
    )
    return {"Discover-v1 step, best median (ms)": min(times) * 1e3}
