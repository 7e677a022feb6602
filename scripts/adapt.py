"""``anomaly-gym adapt``: tune a meta-trained policy to a new target dataset."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from anomaly_gym.scripts._args import add_column_kind_arguments, add_list_argument


def add_parser(sub) -> None:
    p = sub.add_parser(
        "adapt",
        help="adapt a policy bundle to a new dataset (zero-shot, few-shot or self-training)",
        description="Adapt a meta-trained policy to a target dataset and write a new bundle. With no labels the "
        "featurizer is fitted on the target (zero-shot); with labels a target head corrects the policy's logit on the "
        "target's columns, or the policy is fine-tuned (few-shot); "
        "--mode unsupervised self-trains on confident pseudo-labels. A guard keeps the unadapted policy when "
        "adaptation does not beat it on held-out rows.",
    )
    p.add_argument("--model", type=Path, default=None, help="policy bundle (default: the bundled default policy)")
    p.add_argument("--data", type=Path, required=True, help="target rows: a .csv file (header row) or an ADBench-style .npz (X, optional y)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--label-column", default=None, help="CSV column with labels: 1 = anomaly, 0 = normal, empty or -1 = unknown")
    labels.add_argument(
        "--labels", type=Path, default=None, help="CSV file with columns row,label (row = 0-based data row, once each; label 1, 0, or empty/-1)"
    )
    p.add_argument("--shots", type=int, default=None, help="reveal only this many labelled anomalies (and --normal-shots normal rows), chosen at random")
    p.add_argument("--normal-shots", type=int, default=None, help="labelled normal rows to reveal with --shots (default 5 x shots)")
    add_list_argument(p, "--columns", default=None, help="CSV feature columns, comma-separated, e.g. a,b,c (default: every numeric column but the label)")
    p.add_argument("--mode", choices=("auto", "zero-shot", "few-shot", "unsupervised"), default="auto")
    p.add_argument(
        "--few-shot",
        dest="few_shot",
        choices=("head", "fine-tune"),
        default="head",
        help="few-shot method: 'head' (default: a boosted correction of the policy's logit on the target's "
        "columns, which then needs those columns to score) or 'fine-tune' (PPO/A2C updates of the policy)",
    )
    p.add_argument(
        "--no-guard",
        action="store_true",
        help="few-shot head: keep the head without the out-of-fold check against the unadapted policy "
        "(for labels you trust; the check is noisy with a handful of labelled anomalies)",
    )
    p.add_argument(
        "--impute",
        choices=("error", "median"),
        default="error",
        help="NaN or infinite feature values: stop with an error (default) or replace them with column medians",
    )
    add_column_kind_arguments(p, on_missing_default="as --impute says (median: impute, error: error); an empty categorical value is a value of its own")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, required=True, help="where to write the adapted bundle")
    p.set_defaults(func=run)


def _read_target(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray | None, object]:
    """(X, labels with -1 = unknown, or None, the CSV column encoder or None)."""
    import pandas as pd
    from anomaly_gym.envs.tasks import make_task
    from anomaly_gym.meta.adapt import parse_labels, read_labels_file
    from rich.console import Console

    console = Console(stderr=True, soft_wrap=True, highlight=False)

    def note(text: str) -> None:
        console.print(text, markup=False)

    path = args.data
    encoder = None
    if not path.is_file():
        raise FileNotFoundError(f"no such data file: {path}")
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as data:
            if "X" not in data:
                raise ValueError(f"{path}: expected an array 'X' (and optionally 'y'); found {list(data.keys())}")
            X, y = data["X"], (data["y"] if "y" in data else None)
        if args.label_column or args.columns or args.categorical or args.numeric or args.ignore:
            raise ValueError("--label-column, --columns, --categorical, --numeric and --ignore apply to CSV input; an .npz holds X and y")
        labels = None if y is None else parse_labels(np.asarray(y).ravel(), where=f"{path}, array y", first_line=0, unit="entry")
        if labels is not None and args.shots is None and args.mode not in ("few-shot",) and args.labels is None:
            note(f"{path} holds labels (y); adapting without them. To use them, pass --shots N (draw a few) or --mode few-shot (every label)")
            labels = None
    elif path.suffix == ".csv":
        frame = pd.read_csv(path)
        labels = None
        if args.label_column is not None:
            if args.label_column not in frame.columns:
                raise ValueError(f"{path}: no label column {args.label_column!r}; the columns are {list(frame.columns)}")
            labels = parse_labels(frame.pop(args.label_column).to_numpy(), where=f"{path}, column {args.label_column!r}", first_line=2)
        X, encoder = _encode_csv(args, frame, note)
    else:
        raise ValueError(f"--data must be a .csv or .npz file, got {path}")
    task = make_task(path.stem, X, source="adapt", drop_constant=False, nan_policy=args.impute)
    if args.labels is not None:
        labels = read_labels_file(args.labels, task.n_rows)
    return task.X, labels, encoder


def _encode_csv(args: argparse.Namespace, frame, note):
    """The CSV's feature columns as a numeric matrix, and the encoder (None for numeric,
    complete columns read as they are)."""
    from anomaly_gym.envs.encoding import encode_frame
    from anomaly_gym.envs.sources import _categorical_columns
    from anomaly_gym.envs.tasks import LABEL_LIKE_NAMES

    named = [*(args.columns or []), *args.categorical, *args.numeric, *args.ignore]
    missing = [c for c in named if c not in frame.columns]
    if missing:
        raise ValueError(f"{args.data}: no column(s) {missing}; the columns are {list(frame.columns)}")
    if args.columns:
        frame = frame[list(dict.fromkeys([*args.columns, *args.categorical]))]
    else:
        label_like = [c for c in frame.columns if str(c).strip().lower() in LABEL_LIKE_NAMES and c not in named]
        if label_like:
            note(
                f"left out of the features: {label_like} (named like a label; give --label-column to use it as "
                "labels, or name it in --columns to use it as a feature)"
            )
            frame = frame.drop(columns=label_like)
    frame = frame.drop(columns=list(args.ignore))
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        numbers = frame[list(args.numeric)]
        frame, cats = _categorical_columns(frame.drop(columns=list(args.numeric)), args.data.stem, list(args.categorical), named=bool(args.columns))
        frame = frame.join(numbers) if len(args.numeric) else frame
    for w in caught:
        note(str(w.message))
    on_missing = args.on_missing or ("impute" if args.impute == "median" else "error")
    if not cats and on_missing == "error":
        return frame, None
    X, encoder = encode_frame(frame, cats, on_missing=on_missing)
    if cats:
        note(f"categorical columns {cats} (scored by how rare each value is); numeric columns {encoder.numeric}")
    return X, encoder


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.agents import load_bundle, load_default_bundle
    from anomaly_gym.agents.head import HeadSettings
    from anomaly_gym.meta.adapt import AdaptSettings, adapt, few_shot_labels
    from rich.console import Console

    console = Console(stderr=True)
    X, labels, encoder = _read_target(args)
    if args.shots is not None:
        if labels is None:
            raise ValueError("--shots needs labels to draw from: give --label-column, --labels, or an .npz with y")
        known = np.where(labels == -1, 0, labels)
        n_normals = args.normal_shots if args.normal_shots is not None else 5 * args.shots
        revealed = few_shot_labels(known, args.shots, n_normals, seed=args.seed)
        labels = np.where(labels == -1, -1, revealed)
    if labels is not None and args.mode in ("zero-shot", "unsupervised"):
        console.print(f"--mode {args.mode}: the labels are not used")
        labels = None
    bundle = load_default_bundle(device=args.device) if args.model is None else load_bundle(args.model, device=args.device)
    if args.no_guard and args.few_shot != "head":
        raise ValueError("--no-guard applies to --few-shot head")
    settings = AdaptSettings(few_shot=args.few_shot, head=HeadSettings(guard=not args.no_guard))
    adapted = adapt(bundle, X, labels, mode=args.mode, seed=args.seed, settings=settings, device="cpu" if args.device == "auto" else args.device)
    if encoder is not None and adapted.featurizer is not None:
        adapted.featurizer.encoder_ = encoder  # stored in the bundle: detect encodes new rows the same way
    adapted.save(args.out)
    record = adapted.metadata["adaptation"]
    console.print(f"[bold]{record['mode']}[/bold] on {record['rows']:,} rows: kept the {record['kept']} policy — {record['reason']}")
    console.print(f"adapted bundle: {args.out}")
    print(json.dumps({k: v for k, v in record.items() if k != "held_out_auroc_curve"}, default=float))
    return 0
