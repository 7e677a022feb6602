"""``anomaly-gym benchmark``: the meta-policy against baselines on held-out datasets.

The protocol, the runner, results storage and the report live in
:mod:`anomaly_gym.meta.benchmark` (``run_benchmark(BenchmarkConfig(...))`` is this command
from Python); the cells run through :mod:`anomaly_gym.meta.executors`.  This module parses
the arguments, prints, and maps failures to exit codes.

Outputs in ``--out``: ``results.csv`` (one row per dataset, method, protocol, labels and
seed, appended as each finishes; ``status`` is ``ok`` or ``error``, and ``error`` holds the
failure's message, or a note on a finished row), ``summary.md``, PNG plots, ``folds.json``,
``policies.jsonl`` (which policy bundle scored which row, and what adaptation did),
``run.json`` (the setup, checked when a run is resumed) and ``models/`` (one policy
bundle per fold).  Rerunning with the same ``--out`` skips the rows already in
``results.csv``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from anomaly_gym.scripts import _bench_active
from anomaly_gym.scripts._args import DEFAULT_TWINS, add_executor_arguments, add_list_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "benchmark",
        help="the meta-policy against baselines on held-out datasets (ADBench protocol)",
        description="Benchmark the meta-policy against unsupervised, label-aware and transfer baselines on target "
        "datasets, with ADBench's protocol: per target and seed a stratified 70/30 split (targets above 10,000 rows "
        "subsampled to 10,000), min-max scaling fitted on the training part, every method fitted on the training part "
        "and scored on the test part. The policy never trains on its target: with --train-config, targets that are "
        "also sources are held out by dataset-level K-fold (one policy per fold, cached in OUT/models/); with --model, "
        "a target among the bundle's training tasks is recorded as an error. Results are appended to OUT/results.csv "
        "as they finish; rerunning with the same --out resumes. Writes OUT/summary.md and PNG plots at the end "
        "(also after Ctrl-C).",
    )
    _add_data_arguments(p)
    _add_run_arguments(p)
    _bench_active.add_arguments(p)
    p.set_defaults(func=run)


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    """What is benchmarked: sources, targets, protocol, labels, seeds and methods."""
    add_list_argument(
        p,
        "--sources",
        default=None,
        metavar="SRC",
        help="source datasets: 'builtin', folders of ADBench NAME.npz files, or folders of NAME.csv.gz tables with "
        "a 'label' column, categorical columns encoded by rarity (e.g. ../shared/data/tables), or planted:SRC?...; the policy and the "
        "transfer baselines learn from these (with --protocol active: every fold's discovery policy, and they are never targets)",
    )
    add_list_argument(
        p,
        "--targets",
        default=None,
        metavar="SRC",
        help="target datasets: 'builtin', folders of NAME.npz files or of NAME.csv.gz tables (label column 'label')",
    )
    p.add_argument("--datasets", default=None, metavar="A,B,...", help="only these target names (default: every target)")
    p.add_argument(
        "--protocol",
        choices=("zero-shot", "few-shot", "all", "active", "nab"),
        default="zero-shot",
        help="zero-shot (no target labels), few-shot (a few labelled anomalies), both, active (anomalies "
        "found within a query budget; see anomaly_gym.meta.discover_benchmark), or nab (the stream policy "
        "and online baselines on NAB's corpus in --data, leave-one-category-out; the options of "
        "`anomaly-gym nab benchmark` tune it) (default zero-shot)",
    )
    p.add_argument(
        "--data", type=Path, default=None, metavar="DIR", help="with --protocol nab: a folder laid out as NAB's data/ with its combined_windows.json"
    )
    p.add_argument(
        "--labels",
        default="5,10,20",
        metavar="K,...",
        help="few-shot: numbers of labelled anomalies, drawn from the training part (default 5,10,20; 'none' for none)",
    )
    p.add_argument(
        "--label-ratio",
        default=None,
        metavar="R,...",
        help="few-shot: shares of the training part's anomalies to label, e.g. 0.01,0.05 (round(r * n), at least 1)",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of the split, the label draw and the methods (default 3)")
    # the method lists are spelled out so that building the parser imports no library code (a test checks them)
    p.add_argument(
        "--methods",
        default=None,
        metavar="M,...",
        help="methods to run (detector names, 'policy', 'default' for the default set, 'gan' for "
        "so_gaal, mo_gaal, meta_gan, gan_scratch, 'spectral' for transfer_spectral); default: the policy, "
        "iforest, ecod, copod, hbos, knn, lof, pca, ocsvm, cblof, autoencoder, mean_rank, mean_z, agreeing_z, feature_transfer_kmeans, model_transfer_kmeans, coral_kmeans, dtc, prototype_meta, and in few-shot xgbod, devnet, gradient_boosting",
    )


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How the policy is obtained, where results go, and where the work runs."""
    how = p.add_mutually_exclusive_group()
    how.add_argument(
        "--model",
        type=Path,
        default=None,
        metavar="BUNDLE",
        help="one trained policy bundle for every target (targets among its training tasks become error rows); with --protocol active, "
        "a discovery bundle (`anomaly-gym train --discover`)",
    )
    how.add_argument(
        "--train-config", type=Path, default=None, metavar="CONFIG", help="train the policy with this TOML config, holding each target out (see --folds)"
    )
    p.add_argument(
        "--folds",
        type=int,
        default=5,
        help="with --train-config, and in the active protocol: dataset-level folds for targets that are also sources; versions of one dataset (same name family such as CIFAR10_*, else same number of columns) share a fold (default 5)",
    )
    p.add_argument(
        "--twins",
        default=DEFAULT_TWINS,
        metavar="NAME=NAME,...",
        help=f"datasets made from the same original data under two names, held out together from each other's folds and transfer sources "
        f"(default {DEFAULT_TWINS}: the bank-marketing and covertype tables and ADBench's copies of them; 'none' for none)",
    )
    p.add_argument("--source-rows", type=int, default=2000, help="rows kept of each source dataset for the transfer baselines (seeded subsample, default 2000)")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, default=Path("results"), help="output folder (default: results)")
    p.add_argument("--retry-errors", action="store_true", help="run again the rows recorded as errors")
    p.add_argument("--summary-only", action="store_true", help="only rewrite summary.md and the plots from OUT/results.csv")
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="cpu",
        help="device of the policies' training (detection and, with --protocol active, discovery) and of the torch detectors (default cpu: results do not depend "
        "on the machine; auto picks CUDA when present)",
    )
    add_executor_arguments(p, "the cells (target x method x seed), the per-fold policy training and the featurizations of the source tasks")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def config_from_args(args: argparse.Namespace):
    """The :class:`~anomaly_gym.meta.benchmark.BenchmarkConfig` of the command line."""
    from anomaly_gym.meta.benchmark import BenchmarkConfig
    from anomaly_gym.meta.benchmark.protocol import parse_label_counts, parse_label_ratios, parse_twins

    return BenchmarkConfig(
        sources=args.sources or [],
        targets=args.targets or [],
        out=Path(args.out),
        datasets=[d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else None,
        protocol=args.protocol,
        labels=parse_label_counts(args.labels),
        label_ratios=parse_label_ratios(args.label_ratio),
        seeds=args.seeds,
        methods=args.methods,
        model=args.model,
        train_config=args.train_config,
        folds=args.folds,
        twins=parse_twins(args.twins),
        source_rows=args.source_rows,
        retry_errors=args.retry_errors,
        device=args.device,
        executor=args.executor,
        workers=args.workers,
        address=args.address,
        progress=not args.no_progress,
        command=_command_line(),
    )


def run(args: argparse.Namespace) -> int:
    if args.protocol == "active":
        return _bench_active.run_active(args)
    if args.protocol == "nab":
        return _run_nab(args)
    if args.data is not None:
        raise ValueError("--data is for --protocol nab; the ADBench protocols read --sources and --targets")
    if args.address is not None and args.executor != "ray":
        raise ValueError("--address is for --executor ray")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {args.workers}")
    out = Path(args.out)
    if args.summary_only:
        from anomaly_gym.meta.benchmark import write_summary

        if not (out / "results.csv").is_file():
            raise FileNotFoundError(f"no results to summarise: {out / 'results.csv'} does not exist")
        write_summary(out)
        print(f"wrote {out / 'summary.md'}")
        return 0
    from anomaly_gym.meta.benchmark import run_benchmark

    run_benchmark(config_from_args(args), notify=lambda text: print(text, file=sys.stderr))
    print(f"results: {out / 'results.csv'}  summary: {out / 'summary.md'}")
    return 0


def _run_nab(args: argparse.Namespace) -> int:
    """``--protocol nab``: :func:`anomaly_gym.meta.nab_benchmark.run_nab_benchmark` with its defaults."""
    from anomaly_gym.meta.nab_benchmark import NabBenchmarkConfig, run_nab_benchmark

    if args.data is None:
        raise ValueError("--protocol nab needs --data DIR: a folder laid out as NAB's data/ with combined_windows.json")
    cfg = NabBenchmarkConfig()
    if args.methods:
        cfg.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    out = Path(args.out)
    run_nab_benchmark(args.data, out, cfg)
    print((out / "summary.md").read_text())
    print(f"results files, policies, summary.csv and plots in {out}/")
    return 0


def _command_line() -> str | None:
    """This invocation as typed, when it came from the ``anomaly-gym`` command."""
    argv = sys.argv
    if "benchmark" not in argv[1:]:
        return None
    return "anomaly-gym " + " ".join(shlex.quote(a) for a in argv[argv.index("benchmark", 1) :])
