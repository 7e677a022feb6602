"""``anomaly-gym benchmark --protocol active``: the thin command over :mod:`anomaly_gym.meta.discover_benchmark`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags only the active protocol reads."""
    g = p.add_argument_group("active protocol (--protocol active)")
    g.add_argument("--budget", type=int, default=100, help="queries per target and seed (default 100)")
    g.add_argument(
        "--steps",
        type=int,
        default=None,
        help="PPO steps of each fold's discovery policy after its supervised pretraining (default 100000; 0: pretraining only)",
    )
    g.add_argument("--max-rows", type=int, default=10_000, help="targets above this many rows are subsampled (stratified, seed 0; default 10000)")


def run_active(args: argparse.Namespace) -> int:
    """Check the arguments, load the datasets, run the protocol, print where the summary is."""
    from anomaly_gym.meta.discover import DiscoverTrainConfig
    from anomaly_gym.meta.discover_benchmark import METHODS, ActiveBenchmarkConfig, run_active_benchmark

    specs = list(args.targets or [])
    only_sources = [s for s in (args.sources or []) if s not in specs]
    if not specs:
        raise ValueError("--protocol active needs --targets (datasets that serve as targets and, in the other folds, as sources)")
    if args.model is not None and only_sources:
        raise ValueError("--model serves every target with one trained discovery bundle; --sources would train none (drop one of them)")
    if args.budget < 1:
        raise ValueError(f"--budget must be positive, got {args.budget}")
    if args.max_rows < 20:
        raise ValueError(f"--max-rows must be at least 20, got {args.max_rows}")
    methods = METHODS if args.methods in (None, "default") else tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"--methods: unknown method(s) {unknown} for the active protocol; choose from {', '.join(METHODS)}")
    train = DiscoverTrainConfig(device=args.device, budget=args.budget)
    if args.steps is not None:
        if args.steps < 0:
            raise ValueError(f"--steps must be 0 (supervised pretraining only) or positive, got {args.steps}")
        train = DiscoverTrainConfig(device=args.device, budget=args.budget, total_timesteps=args.steps)
    cfg = ActiveBenchmarkConfig(budget=args.budget, seeds=args.seeds, folds=args.folds, methods=methods, train=train)

    model = None
    if args.model is not None:
        from anomaly_gym.agents.discover import DiscoverBundle

        model = DiscoverBundle.load(args.model)  # a wrong file is refused before any dataset is loaded

    from anomaly_gym.envs.tasks import check_training_task, subsample
    from anomaly_gym.meta.benchmark.protocol import join_twins, load_task_sets, parse_twins

    targets = load_task_sets(specs)
    joined = join_twins([*targets, *(load_task_sets(only_sources) if only_sources else [])], parse_twins(args.twins))
    tasks, sources = joined[: len(targets)], joined[len(targets) :]
    if args.datasets:
        wanted = {d.strip().lower() for d in args.datasets.split(",") if d.strip()}
        missing = sorted(wanted - {t.name.lower() for t in tasks})
        if missing:
            raise ValueError(f"dataset(s) {missing} not among {specs}")
        tasks = [t for t in tasks if t.name.lower() in wanted]
    for task in [*tasks, *sources]:
        check_training_task(task)
    tasks, sources = ([subsample(t, args.max_rows, 0) for t in group] for group in (tasks, sources))
    say = (lambda msg: None) if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_active_benchmark(tasks, Path(args.out), cfg, sources=sources, model=model, progress=say)
    print(f"wrote {Path(args.out) / 'summary.md'}")
    return 0
