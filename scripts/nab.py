"""``anomaly-gym nab``: the NAB benchmark (leave-one-category-out) and NAB scoring of results files."""

from __future__ import annotations

import argparse
from pathlib import Path

TRAINERS = ("window", "logistic", "search", "ppo")
TRAINER_HELP = (
    "window (default): monotone logistic fit on NAB's windows and false-positive rows, each window one positive "
    "(the soft maximum of its rows, weighted by what a first detection there earns); logistic: the same fit with every window row a positive; "
    "search: direct search on the training series' NAB score; ppo: PPO on Stream-v0"
)


def add_parser(sub) -> None:
    p = sub.add_parser("nab", help="Numenta Anomaly Benchmark: run the stream benchmark, or score NAB results files")
    nsub = p.add_subparsers(dest="nab", metavar="ACTION", required=True)
    b = nsub.add_parser("benchmark", help="stream policy (leave-one-category-out) and baselines on a NAB data folder")
    b.add_argument("--data", type=Path, required=True, help="a folder laid out as NAB's data/, with combined_windows.json")
    b.add_argument("--windows", type=Path, default=None, help="NAB's combined_windows.json (default: in --data)")
    b.add_argument("-o", "--out", "--output", dest="out", type=Path, default=Path("results-nab"), help="output folder (default results-nab/)")
    b.add_argument("--methods", default=None, help="comma-separated: policy,rolling_zscore,windowed_gaussian,half_space_trees")
    b.add_argument("--profile", default="standard", help="NAB profile (standard, reward_low_FP_rate, reward_low_FN_rate)")
    b.add_argument("--trainer", choices=TRAINERS, default="window", help=TRAINER_HELP)
    b.add_argument("--l2", type=float, default=None, help="ridge penalty of the logistic and window fits (default 1.0)")
    b.add_argument(
        "--free-signs", action="store_true", help="let the policy's weights take either sign (default: monotone, none negative on directed features)"
    )
    b.add_argument("--iterations", type=int, default=None, help="search steps (default 40)")
    b.add_argument("--total-steps", type=int, default=None, help="PPO steps per fold (default 150000)")
    b.add_argument("--synthetic", type=int, default=None, help="synthetic training series per fold (default 60)")
    b.add_argument("--synthetic-seed", type=int, default=None, help="seed of the first synthetic series (default 1000)")
    b.add_argument("--seed", type=int, default=0, help="seed of training")
    b.add_argument("--no-plots", action="store_true", help="skip the per-file plots")
    b.set_defaults(func=run_benchmark)
    t = nsub.add_parser("train", help="train a stream policy on every file of a NAB folder plus synthetic series (the default one)")
    t.add_argument("--data", type=Path, required=True, help="a folder laid out as NAB's data/, with combined_windows.json")
    t.add_argument("--windows", type=Path, default=None, help="NAB's combined_windows.json (default: in --data)")
    t.add_argument(
        "-o", "--out", "--output", dest="out", type=Path, default=Path("stream.policy.json"), help="the policy file to write (default stream.policy.json)"
    )
    t.add_argument("--profile", default="standard", help="NAB profile of the reward and the threshold")
    t.add_argument("--trainer", choices=TRAINERS, default="window", help=TRAINER_HELP)
    t.add_argument("--l2", type=float, default=None, help="ridge penalty of the logistic and window fits (default 1.0)")
    t.add_argument(
        "--free-signs", action="store_true", help="let the policy's weights take either sign (default: monotone, none negative on directed features)"
    )
    t.add_argument("--iterations", type=int, default=None, help="search steps (default 40)")
    t.add_argument("--total-steps", type=int, default=None, help="PPO steps (default 150000)")
    t.add_argument("--synthetic", type=int, default=None, help="synthetic training series (default 60)")
    t.add_argument("--synthetic-seed", type=int, default=None, help="seed of the first synthetic series (default 1000)")
    t.add_argument("--seed", type=int, default=0, help="seed of training")
    t.set_defaults(func=run_train)
    s = nsub.add_parser("score", help="NAB scores of a detector's results files (NAB's results/<detector>/ layout)")
    s.add_argument("results", type=Path, help="the results folder holding <detector>/<category>/<detector>_<file>.csv")
    s.add_argument("--detector", required=True, help="the detector's folder name")
    s.add_argument("--data", type=Path, required=True, help="the NAB data folder the results were made on")
    s.add_argument("--windows", type=Path, default=None, help="NAB's combined_windows.json (default: in --data)")
    s.add_argument("--profile", default="standard", help="NAB profile")
    s.add_argument("--threshold", type=float, default=None, help="a fixed threshold (default: NAB's corpus-wide sweep)")
    s.set_defaults(func=run_score)


def _config(args: argparse.Namespace):
    from anomaly_gym.meta.nab_benchmark import NabBenchmarkConfig

    cfg = NabBenchmarkConfig(profile=args.profile, seed=args.seed, plots=not getattr(args, "no_plots", False))
    cfg.trainer = args.trainer
    cfg.monotone = not args.free_signs
    if args.free_signs and args.trainer == "search":
        raise ValueError("--free-signs needs --trainer window, logistic or ppo; the search fits monotone policies only")
    if args.l2 is not None:
        if not args.l2 >= 0:
            raise ValueError(f"--l2 must not be negative, got {args.l2}")
        cfg.l2 = args.l2
    if args.iterations is not None:
        if args.iterations < 0:
            raise ValueError(f"--iterations must not be negative, got {args.iterations}")
        cfg.search_iterations = args.iterations
    if args.total_steps is not None:
        if args.total_steps < 1:
            raise ValueError(f"--total-steps must be positive, got {args.total_steps}")
        cfg.total_steps = args.total_steps
    if args.synthetic is not None:
        if args.synthetic < 0:
            raise ValueError(f"--synthetic must not be negative, got {args.synthetic}")
        cfg.synthetic_series = args.synthetic
    if args.synthetic_seed is not None:
        cfg.synthetic_seed = args.synthetic_seed
    return cfg


def run_benchmark(args: argparse.Namespace) -> int:
    from anomaly_gym.meta.nab_benchmark import run_nab_benchmark

    cfg = _config(args)
    if args.methods:
        cfg.methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    run_nab_benchmark(args.data, args.out, cfg, windows_file=args.windows)
    print((args.out / "summary.md").read_text())
    print(f"results files, policies, summary.csv and plots in {args.out}/")
    return 0


def run_score(args: argparse.Namespace) -> int:
    from anomaly_gym.envs.series import load_nab_dir
    from anomaly_gym.meta import nab

    corpus = load_nab_dir(args.data, args.windows)
    files, groups = {}, {}
    for s in corpus:
        ts, scores = nab.read_results(args.results, args.detector, s.name)
        if len(scores) != s.n_rows:
            raise ValueError(f"{nab.results_path(args.results, args.detector, s.name)} has {len(scores)} rows, the data file {s.n_rows}")
        files[s.name], groups[s.name] = (scores, s.n_rows, s.windows), s.category
    res = nab.score_corpus(files, args.profile, threshold=args.threshold, groups=groups)
    print(f"{args.detector}, {args.profile} profile, threshold {res.threshold:.6g} ({'given' if args.threshold is not None else 'corpus-wide sweep'})")
    for g, v in res.groups.items():
        shown = f"{v['score']:.1f}" if v["score"] == v["score"] else f"raw {v['raw']:.2f} (no windows)"
        print(f"  {g:<28} {shown}")
    print(f"  {'all':<28} {res.score:.1f} (raw {res.raw:.3f}, null {res.null:.1f}, perfect {res.perfect:.1f})")
    return 0


def run_train(args: argparse.Namespace) -> int:
    from anomaly_gym.meta.nab_benchmark import train_nab_policy

    if args.out.is_dir():
        raise ValueError(f"--out {args.out} is a folder; give a file name")
    policy = train_nab_policy(args.data, _config(args), windows_file=args.windows)
    policy.save(args.out)
    print(
        f"stream policy ({args.trainer}) trained on {len(policy.metadata['train_series'])} series in {policy.metadata['train_seconds']:.0f}s; "
        f"score threshold {policy.score_threshold:.4g} (NAB corpus-wide sweep on them); written to {args.out}"
    )
    return 0
