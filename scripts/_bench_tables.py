"""``anomaly-gym bench tables``: what categorical columns are worth on real mixed tables.

For every ``NAME.csv.gz`` table (label column ``label``) of a folder, the labels held out:

Means are taken over the tables where every variant applies (a table without numeric
columns has no numeric-only variants) and over the tables with categorical columns.

- the zero-shot policy (the default bundle, or ``--model``), as ``detect`` scores a file:
  the featurizer fitted on the table's own rows, on the numeric columns only ("numeric");
  with each categorical column's rarity alone, rare from the uniform share down
  ("rarity", the first encoding); with the encoder's defaults ("encoded": rare from half
  the uniform share down, plus the conditional rarity of value pairs); and with the
  defaults plus one-hot indicators for columns of at most ``--onehot-max`` values;
- IForest (PyOD, seeded) on the numeric columns only, on the numeric columns plus one-hot
  encoded categorical columns (``pandas.get_dummies``), and on the default encoding.

Every encoding is fitted on the rows it scores, as ``detect --mode batch`` does: rarity
columns that are 0 on every row are left out (``drop_constant``).

AUROC of every variant on every table; tables above ``--max-rows`` rows are subsampled
(stratified, seeded) first.  Nothing is tuned on these tables.

With ``--train-config CONFIG`` the figures are cross-validated: the policy that scores a
table is trained from ``CONFIG`` with that table held out (dataset-level folds, and the
sources made from the same original data, ``--twins``, held out with it), as the issue's
protocol asks when the tables are among the training sources (``configs/detect-default.toml``,
the shipped default's config).  A bundle that was trained on a table (the shipped default is)
cannot score it here: the figure would be in-sample.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from anomaly_gym.scripts._args import DEFAULT_TWINS

DEFAULT_TABLES = Path("../shared/data/tables")
VARIANTS = ("policy numeric", "policy rarity", "policy encoded", "policy encoded+onehot", "IForest numeric", "IForest one-hot", "IForest encoded")
#: The first encoding: each categorical column's rarity from the uniform share down, nothing more.
RARITY_ONLY = {"rarity_margin": 1, "pairs": False, "letter_codes": False}
#: As ``detect --mode batch`` encodes a table it fits on: rarity columns 0 on every row left out.
AS_DETECT = {"drop_constant": True}


def add_parser(bsub) -> None:
    t = bsub.add_parser("tables", help="AUROC with and without categorical features on NAME.csv.gz tables (label column 'label')")
    t.add_argument("--data", type=Path, default=DEFAULT_TABLES, help=f"folder of NAME.csv.gz tables (default {DEFAULT_TABLES})")
    how = t.add_mutually_exclusive_group()
    how.add_argument("--model", type=Path, default=None, help="one policy bundle for every table (default: the bundled default policy)")
    how.add_argument(
        "--train-config",
        type=Path,
        default=None,
        metavar="CONFIG",
        help="cross-validate: train the policy with this config once per fold, the fold's tables (and their --twins) held out",
    )
    t.add_argument("--folds", type=int, default=4, help="with --train-config: dataset-level folds of the tables among the config's sources (default 4)")
    t.add_argument(
        "--twins",
        default=DEFAULT_TWINS,
        metavar="TABLE=SOURCE,...",
        help=f"with --train-config: sources made from the same original data as a table, held out with it (default {DEFAULT_TWINS}: "
        "ADBench's one-hot copy of the bank-marketing data and its copy of the covertype data; 'none' for none)",
    )
    t.add_argument("-o", "--out", type=Path, default=Path("results/bench-tables"), help="with --train-config: folder of the fold policies (OUT/models, reused)")
    t.add_argument("--max-rows", type=int, default=10_000, help="stratified, seeded subsample above this (default 10000)")
    t.add_argument("--onehot-max", type=int, default=10, help="one-hot for categorical columns of at most N values (default 10)")
    t.add_argument("--names", default=None, help="only these tables, comma-separated")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run)


def _table(path: Path, max_rows: int, seed: int):
    """(frame of feature columns, labels, categorical column names) of one table."""
    import pandas as pd
    from anomaly_gym.envs.sources import _categorical_columns, table_name
    from anomaly_gym.envs.tasks import _stratified_choice

    frame = pd.read_csv(path)
    if "label" not in frame.columns:
        raise ValueError(f"{path}: no 'label' column; the columns are {list(frame.columns)}")
    y = frame.pop("label").to_numpy().astype(np.int8)
    if len(frame) > max_rows:
        index = _stratified_choice(y, max_rows, np.random.default_rng(seed))
        frame, y = frame.iloc[index].reset_index(drop=True), y[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frame, cats = _categorical_columns(frame, table_name(path), [], named=False)
    return frame, y, cats


def _policy_auroc(bundle, X: np.ndarray, y: np.ndarray) -> float:
    from anomaly_gym.envs.features import Featurizer
    from sklearn.metrics import roc_auc_score

    X = X.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        feats = Featurizer(bundle.featurizer_config).fit(X).transform(X)
    return float(roc_auc_score(y, bundle.anomaly_proba(feats, X)))


def _iforest_auroc(X: np.ndarray, y: np.ndarray, seed: int) -> float:
    from pyod.models.iforest import IForest
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, IForest(random_state=seed).fit(X).decision_scores_))


def measure(path: Path, bundle, *, max_rows: int = 10_000, onehot_max: int = 10, seed: int = 0) -> dict:
    """AUROC of every variant of :data:`VARIANTS` on one table (NaN where a variant has no column)."""
    import pandas as pd
    from anomaly_gym.envs.encoding import encode_frame

    frame, y, cats = _table(path, max_rows, seed)
    numeric = frame[[c for c in frame.columns if c not in cats]]
    row = {"rows": len(frame), "numeric": numeric.shape[1], "categorical": len(cats)}
    X_num = encode_frame(numeric, [], on_missing="impute")[0] if numeric.shape[1] else None
    X_rare = encode_frame(frame, cats, on_missing="impute", **RARITY_ONLY, **AS_DETECT)[0]
    X_enc = encode_frame(frame, cats, on_missing="impute", **AS_DETECT)[0]
    X_hot = encode_frame(frame, cats, on_missing="impute", onehot_max=onehot_max, **AS_DETECT)[0]
    dummies = pd.get_dummies(frame[cats].astype(str), dtype=np.float64).to_numpy() if cats else np.empty((len(frame), 0))
    X_onehot = np.hstack([X_num, dummies]) if X_num is not None else dummies
    nan = float("nan")
    row["policy numeric"] = _policy_auroc(bundle, X_num, y) if X_num is not None else nan
    row["policy rarity"] = _policy_auroc(bundle, X_rare, y) if cats else row["policy numeric"]
    row["policy encoded"] = _policy_auroc(bundle, X_enc, y) if cats else row["policy numeric"]
    row["policy encoded+onehot"] = _policy_auroc(bundle, X_hot, y) if X_hot.shape[1] > X_enc.shape[1] else row["policy encoded"]
    row["IForest numeric"] = _iforest_auroc(X_num, y, seed) if X_num is not None else nan
    row["IForest one-hot"] = _iforest_auroc(X_onehot, y, seed) if cats else row["IForest numeric"]
    row["IForest encoded"] = _iforest_auroc(X_enc, y, seed) if cats else row["IForest numeric"]
    return row


def _check_held_out(bundle, names: list[str], what: str) -> None:
    """ValueError naming the tables ``bundle`` was trained (or validated) on: their figures would be in-sample."""
    from anomaly_gym.meta.benchmark.protocol import LeakError, check_not_trained_on

    seen = []
    for name in names:
        try:
            check_not_trained_on(bundle, name)
        except LeakError:
            seen.append(name)
    if seen:
        raise ValueError(
            f"{what} was trained on {', '.join(seen)}: its figures there would be in-sample; cross-validate with "
            "--train-config configs/detect-default.toml (each table held out), or pass --model with a policy trained without them"
        )


def _held_out_bundles(args: argparse.Namespace, files: list[Path]) -> dict:
    """{table: the policy trained without it} (:func:`~anomaly_gym.meta.benchmark.policies.held_out_bundles`); the plan on stderr."""
    import sys

    from anomaly_gym.envs.sources import load_tables_dir, table_name
    from anomaly_gym.meta.benchmark.policies import held_out_bundles
    from anomaly_gym.meta.benchmark.protocol import parse_twins

    names = {table_name(f) for f in files}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        targets = load_tables_dir(args.data, names=names)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    bundles, plan = held_out_bundles(args.train_config, targets, folds=args.folds, twins=parse_twins(args.twins), out=args.out, progress=say)
    by_fold: dict[str, list[str]] = {}
    for name, fold in sorted(plan.items()):
        by_fold.setdefault(fold, []).append(name)
    say("held out: " + "; ".join(f"fold {fold}: {', '.join(names)}" for fold, names in sorted(by_fold.items())))
    return bundles


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.agents import load_bundle, load_default_bundle
    from anomaly_gym.envs.sources import table_name

    if not args.data.is_dir():
        raise FileNotFoundError(f"no such folder of tables: {args.data}; pass --data FOLDER")
    files = sorted(args.data.glob("*.csv.gz"), key=lambda p: table_name(p).lower())
    if args.names:
        wanted = {n.strip().lower() for n in args.names.split(",")}
        files = [f for f in files if table_name(f).lower() in wanted]
    if not files:
        raise ValueError(f"{args.data} holds no NAME.csv.gz tables" + (f" named {args.names}" if args.names else ""))
    if args.train_config is not None:
        bundles = _held_out_bundles(args, files)
    else:
        bundle = load_default_bundle(device="cpu") if args.model is None else load_bundle(args.model, device="cpu")
        bundles = {table_name(f): bundle for f in files}
        _check_held_out(bundle, list(bundles), "the default policy" if args.model is None else str(args.model))
    heads = ["table", "rows", "num", "cat", *VARIANTS]
    print("| " + " | ".join(heads) + " |")
    print("|---|" + "---:|" * (len(heads) - 1))
    rows = []
    for path in files:
        t0 = time.perf_counter()
        row = measure(path, bundles[table_name(path)], max_rows=args.max_rows, onehot_max=args.onehot_max, seed=args.seed)
        rows.append(row)
        cells = [table_name(path), f"{row['rows']:,}", str(row["numeric"]), str(row["categorical"])]
        cells += ["—" if np.isnan(row[v]) else f"{row[v]:.3f}" for v in VARIANTS]
        print("| " + " | ".join(cells) + f" |  ({time.perf_counter() - t0:.0f}s)", flush=True)
    complete = [r for r in rows if not any(np.isnan(r[v]) for v in VARIANTS)]
    mixed = [r for r in rows if r["categorical"]]
    for label, subset in (
        (f"mean, the {len(complete)} tables with numeric columns", complete),
        (f"mean, the {len(mixed)} tables with categorical columns", mixed),
    ):
        if subset:
            means = [np.mean([r[v] for r in subset]) if not any(np.isnan(r[v]) for r in subset) else float("nan") for v in VARIANTS]
            print(f"| {label} | | | | " + " | ".join("—" if np.isnan(m) else f"{m:.3f}" for m in means) + " |")
    return 0
