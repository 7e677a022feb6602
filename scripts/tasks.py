"""``anomaly-gym tasks``: list the built-in suite or the datasets of a directory."""

from __future__ import annotations

import argparse
import warnings

from rich.console import Console
from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("tasks", help="list tasks: the built-in suite, or the datasets in a directory")
    p.add_argument(
        "--data", "--data-dir", dest="data_dir", default="builtin", help="'builtin' (default), a folder of ADBench NAME.npz files, or one .npz/.csv file"
    )
    p.add_argument("--label-column", default=None, help="label column, for a CSV file")
    p.add_argument("--format", choices=("table", "csv"), default="table", help="output format")
    p.add_argument(
        "--impute",
        choices=("error", "median"),
        default="error",
        help="NaN or infinite values: stop with an error (default) or replace them with column medians",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.envs.sources import builtin_suite, load_csv, load_tasks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.data_dir == "builtin":
            tasks = builtin_suite()
        elif str(args.data_dir).endswith(".csv"):
            tasks = [load_csv(args.data_dir, label_column=args.label_column, drop_constant=False, nan_policy=args.impute)]
        else:
            # true sizes: keep constant columns when listing
            tasks = load_tasks(args.data_dir, drop_constant=False, nan_policy=args.impute)
    rows = [(t.name, t.n_rows, t.n_features, "-" if not t.labelled else f"{t.anomaly_rate:.2%}", t.source) for t in tasks]
    if args.format == "csv":
        print("name,rows,columns,anomaly_rate,source")
        for name, n, d, rate, source in rows:
            print(f"{name},{n},{d},{rate},{source}")
        return 0
    table = Table(title=f"{len(tasks)} tasks from {args.data_dir}")
    for col, justify in (("name", "left"), ("rows", "right"), ("columns", "right"), ("anomaly rate", "right"), ("source", "left")):
        table.add_column(col, justify=justify)
    for name, n, d, rate, source in rows:
        table.add_row(name, f"{n:,}", str(d), rate, source)
    Console().print(table)
    return 0
