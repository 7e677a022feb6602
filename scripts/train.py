"""``anomaly-gym train``: meta-train a policy across source tasks, with TensorBoard logs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from anomaly_gym.scripts._args import add_executor_arguments, add_list_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="meta-train a policy across many source tasks",
        description="Meta-train one policy across source tasks and validate it zero-shot on held-out tasks. "
        "Logs go to RUN_DIR/{config}__{seed}__{time}/ (open TensorBoard on RUN_DIR). "
        "Ctrl-C writes a checkpoint; --resume continues it.",
    )
    p.add_argument("--config", type=Path, default=None, help="TOML config (default: the built-in defaults; see configs/default.toml)")
    add_list_argument(p, "--sources", default=None, help="'builtin', folders of NAME.npz files, or .npz/.csv files (comma-separated)")
    p.add_argument("--algo", choices=("ppo", "a2c", "dqn"), default=None)
    p.add_argument("--meta", choices=("multitask", "reptile"), default=None)
    p.add_argument("--total-steps", type=int, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--run-dir", default=None, help="parent folder of run folders (default: runs)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, typed as the field is: --set monotone=false --set net_arch=16,16 --set featurizer.max_fit_rows=2000 --set datasets=wine,glass (see --show-config)",
    )
    p.add_argument("--resume", type=Path, default=None, metavar="RUN", help="continue the run in this run folder from its last checkpoint")
    p.add_argument(
        "-o",
        "--out",
        "--output",
        dest="out",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="also copy the best bundle here when training ends (e.g. policy.bundle.zip)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(p, "the featurizations of the source tasks (before training)")
    p.add_argument("--show-config", action="store_true", help="print the resolved config with each field's documentation, then exit")
    g = p.add_argument_group("discovery policy (--discover)")
    g.add_argument(
        "--discover",
        action="store_true",
        help="train a discovery policy for `anomaly-gym discover --model` instead (supervised pretraining across --sources; "
        "--total-steps adds PPO steps, default 0), written to -o BUNDLE",
    )
    g.add_argument("--max-rows", type=int, default=2000, help="with --discover: sources above this many rows are subsampled (default 2000)")
    p.set_defaults(func=run)


def resolve_config(args: argparse.Namespace):
    from anomaly_gym.meta.config import TrainConfig, parse_override

    overrides: dict = {}
    for flag, key in (
        ("sources", "sources"),
        ("algo", "algo"),
        ("meta", "meta"),
        ("total_steps", "total_steps"),
        ("device", "device"),
        ("seed", "seed"),
        ("run_dir", "run_dir"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[key] = value
    featurizer: dict = {}
    for item in args.set:
        key, value = parse_override(item)
        if key.startswith("featurizer."):
            featurizer[key.removeprefix("featurizer.")] = value
        else:
            overrides[key] = value
    if args.resume is not None:
        base = TrainConfig.from_toml(args.resume / "config.toml")
        data = base.to_dict()
    elif args.config is not None:
        base = TrainConfig.from_toml(args.config)
        data = base.to_dict()
    else:
        data = TrainConfig().to_dict()
    data.update(overrides)
    if featurizer:
        data["featurizer"] = {**data["featurizer"], **featurizer}
    return TrainConfig.from_dict(data)


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from anomaly_gym.meta.evaluate import mean_metric
    from anomaly_gym.meta.executors import make_executor
    from anomaly_gym.meta.training import MetaTrainer, make_run_path
    from rich.console import Console

    if args.discover:
        from anomaly_gym.scripts import _train_discover

        return _train_discover.run(args)
    cfg = resolve_config(args)
    console = Console(stderr=True)
    if args.show_config:
        print(cfg.to_documented_toml(), end="")
        return 0
    run_path = args.resume if args.resume is not None else make_run_path(cfg)
    console.print(f"[bold]run folder[/bold] {run_path}   (tensorboard --logdir {Path(cfg.run_dir)})")
    # by name, the featurization sizes the local pool to its work; Ray, or flags, need the executor made (and checked) here
    by_name = args.executor != "ray" and args.workers is None and args.address is None
    with nullcontext(args.executor) if by_name else make_executor(args.executor, workers=args.workers, address=args.address) as executor:
        trainer = MetaTrainer(cfg, run_path, resume=args.resume is not None, executor=executor)
    console.print(
        f"{len(trainer.sampler.train_tasks)} training tasks, {len(trainer.sampler.val_tasks)} validation tasks; "
        f"{cfg.algo.upper()} {cfg.meta} on {trainer.device}, {cfg.total_steps:,} steps"
    )
    baselines = trainer.log_setup()
    try:
        bundle = trainer.train(progress=not args.no_progress)
    except KeyboardInterrupt:
        console.print(f"interrupted: checkpoint written at step {trainer.agent.num_timesteps:,}; continue with: anomaly-gym train --resume {run_path}")
        return 130
    metrics = bundle.metadata.get("val_metrics", {})
    if metrics:
        print_validation_table(metrics, baselines, cfg.featurizer)
        console.print(f"best mean validation AUROC {trainer.best_auroc:.4f}; IForest {mean_metric(baselines['iforest']):.4f}")
    console.print(f"bundles: {run_path / 'best.bundle.zip'}  {run_path / 'final.bundle.zip'}")
    if args.out is not None:
        import shutil

        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_path / "best.bundle.zip", args.out)
        console.print(f"best bundle copied to {args.out}")
    return 0


def print_validation_table(metrics: dict, baselines: dict, featurizer_config) -> None:
    """Per validation task: the policy, IForest, the bank's ensembles (mean rank, mean z, agreeing half) and its best single detector."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    ensembles = {"bank/mean_rank": "mean-rank ensemble", "bank/mean_z": "mean-z ensemble", "bank/agreeing_z": "agreeing-half ensemble"}
    detectors = [k for k in baselines if k.startswith("bank/") and k not in ensembles]
    columns = {"iforest": "IForest", **{k: v for k, v in ensembles.items() if k in baselines}}
    if detectors:  # the bank's columns are scored only when the features include each detector's
        best = max(detectors, key=lambda k: np.mean([m["auroc"] for m in baselines[k].values()]))
        columns[best] = f"best bank detector ({best.removeprefix('bank/')})"
    table = Table(title="zero-shot validation AUROC (test part of the benchmark split)")
    for col in ("task", "policy", *columns.values()):
        table.add_column(col, justify="left" if col == "task" else "right")
    rows = sorted(metrics)
    for name in rows:
        table.add_row(name, f"{metrics[name]['auroc']:.3f}", *(f"{baselines[k][name]['auroc']:.3f}" for k in columns))
    mean = lambda d: np.mean([d[n]["auroc"] for n in rows])  # noqa: E731
    table.add_row("[bold]mean[/bold]", f"[bold]{mean(metrics):.3f}[/bold]", *(f"{mean(baselines[k]):.3f}" for k in columns))
    Console(file=sys.stdout).print(table)
