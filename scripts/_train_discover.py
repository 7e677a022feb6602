"""``anomaly-gym train --discover``: one discovery policy across source tasks, for ``anomaly-gym discover --model``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

#: Flags of ``train`` that configure the detection policy only.
DETECTION_ONLY = ("config", "algo", "meta", "resume", "show_config")


def run(args: argparse.Namespace) -> int:
    """Check the flags, train on ``--sources``, write the bundle to ``-o``."""
    from anomaly_gym.meta.discover import DiscoverTrainConfig, train_discover_bundle

    given = [f"--{name.replace('_', '-')}" for name in DETECTION_ONLY if getattr(args, name) not in (None, False)]
    if args.set:
        given.append("--set")
    if given:
        raise ValueError(
            f"{', '.join(given)} configure(s) the detection policy; with --discover give --sources, --total-steps, --seed, --device, --max-rows, -o"
        )
    if not args.sources:
        raise ValueError("--discover needs --sources (labelled datasets to learn discovery from, e.g. ../shared/data/adbench)")
    if args.out is None:
        raise ValueError("--discover needs -o BUNDLE (where to write the discovery bundle, e.g. discover.bundle.zip)")
    steps = 0 if args.total_steps is None else args.total_steps
    if steps < 0:
        raise ValueError(f"--total-steps must be 0 (supervised pretraining only, the default with --discover) or positive, got {steps}")
    config = DiscoverTrainConfig(total_timesteps=steps, seed=0 if args.seed is None else args.seed, device=args.device or "cpu")
    say = (lambda msg: None) if args.no_progress else (lambda msg: print(msg, file=sys.stderr, flush=True))
    run_dir = None if args.run_dir is None else Path(args.run_dir)
    bundle = train_discover_bundle(args.sources, config, max_rows=args.max_rows, run_dir=run_dir, progress=say)
    path = bundle.save(args.out)
    print(f"wrote {path} (trained on {len(bundle.metadata['train_tasks'])} datasets; use it with anomaly-gym discover DATA.csv --model {path})")
    return 0
