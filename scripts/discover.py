"""``anomaly-gym discover``: an analyst checks the rows a discovery strategy shows, one at a time."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from anomaly_gym.scripts._args import add_list_argument

ANSWERS = {"y": 1, "yes": 1, "n": 0, "no": 0, "s": None, "skip": None}


def add_parser(sub) -> None:
    p = sub.add_parser(
        "discover",
        help="find anomalies with an analyst: show the next row to check, read y/n/s/q, learn from every answer",
        description="Active anomaly discovery on a CSV file. Each step shows the row the strategy picks next, with "
        "the columns that deviate most, and reads an answer: y (anomaly), n (normal), s (skip: cannot tell), q (quit; "
        "resume later with --resume). The answers are saved to the state file after every one. At the end (budget "
        "spent, q, or end of input) it writes OUT/labels.csv, OUT/scored.csv and OUT/adapted.bundle.zip (the shipped "
        "detection policy with a target head fitted on the answers) for `anomaly-gym detect --model`.",
    )
    p.add_argument("data", type=Path, metavar="DATA", help="CSV file with a header row")
    p.add_argument("--budget", type=int, default=100, help="rows to check at most (default 100)")
    p.add_argument(
        "--model",
        default="default",
        help="a discovery bundle (`anomaly-gym train --discover` trains one), 'default' (the shipped one, trained on the 31 "
        "ADBench datasets) or 'feedback-greedy' (the same candidate pool and feedback features with no trained network)",
    )
    p.add_argument("--state", type=Path, default=None, help="state file, rewritten after every answer (default: OUT/state.json)")
    p.add_argument("--resume", type=Path, default=None, metavar="STATE", help="continue the session saved in STATE")
    p.add_argument("--label-column", default=None, help="answer from this column (0/1) instead of asking: a simulation of the analyst")
    add_list_argument(p, "--columns", default=None, metavar="A,B", help="feature columns (default: the numeric columns)")
    p.add_argument("--seed", type=int, default=0, help="seed of the candidate pool and the featurizer (default 0)")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, default=Path("discovery"), help="output folder (default: discovery)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from anomaly_gym.meta.discovery_run import DiscoveryRun

    table, X, valid, truth = _read(args)
    state = args.state or args.out / "state.json"
    data_id = _file_id(args.data, table.feature_names)
    if args.resume is not None:
        session = DiscoveryRun.resume(args.resume, X, data_id=data_id, save_to=state)
        print(f"resumed {args.resume}: {len(session.answers)} answer(s), {session.found} anomaly(ies) so far", file=sys.stderr)
    else:
        if state.exists():
            raise ValueError(f"{state} already holds a session; continue it with --resume {state}, or pass --state NEW")
        session = DiscoveryRun(
            X, budget=args.budget, model=None if args.model == "feedback-greedy" else args.model, seed=args.seed, state_path=state, data_id=data_id
        )
        session.save()
    asking = truth is None
    interrupted = False
    try:
        while not session.done:
            row = session.next_row()
            if not asking:
                session.answer(int(truth[row]))
                continue
            label = _ask(session, table, valid, row)
            if label == "q":
                break
            session.answer(label)
    except KeyboardInterrupt:
        interrupted = True
    except EOFError:
        print("\nend of input: the answers so far are saved", file=sys.stderr)
    _finish(args, session, table, X, valid, state)
    return 130 if interrupted else 0


def _read(args):
    """The table, its valid rows' features, their positions and (with --label-column) their answers."""
    from anomaly_gym.envs.csvio import read_table

    if not args.data.is_file():
        raise FileNotFoundError(f"no such file: {args.data}")
    table = read_table([str(args.data)], columns=args.columns, on_error="mark")
    names = table.feature_names
    truth = None
    if args.label_column is not None:
        if args.label_column not in table.header:
            raise ValueError(f"--label-column {args.label_column!r} is not a column of {args.data}; its columns are {table.header}")
        j = table.header.index(args.label_column)
        texts = [f[j].strip() if j < len(f) else "" for f in table.fields]
        bad = [(table.where(i), t) for i, t in enumerate(texts) if t not in ("0", "1") and i not in table.errors]
        if bad:
            raise ValueError(
                f"--label-column {args.label_column!r} must hold 0 or 1; {bad[0][0]} holds {bad[0][1]!r}"
                + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else "")
            )
        if args.label_column in names:  # never a feature
            keep = [k for k, n in enumerate(names) if n != args.label_column]
            table.X, table.feature_idx = table.X[:, keep], [table.feature_idx[k] for k in keep]
        truth = np.array([int(t == "1") for t in texts])
    if table.n_rows == 0:
        raise ValueError(f"{args.data} holds no valid data row (only a header)")
    if not table.feature_idx:
        raise ValueError(f"{args.data} has no numeric feature column; name them with --columns")
    valid = np.array([i for i in range(table.n_rows) if i not in table.errors], dtype=np.int64)
    if len(valid) == 0:
        raise ValueError(f"{args.data} holds no valid data row ({len(table.errors)} bad row(s))")
    if args.budget > len(valid):
        raise ValueError(f"--budget {args.budget} is larger than the {len(valid)} valid row(s) of {args.data}; give a smaller --budget")
    for note in table.notes:
        print(f"anomaly-gym discover: note: {note}", file=sys.stderr)
    return table, table.X[valid], valid, None if truth is None else truth[valid]


def _file_id(path: Path, columns: list[str]) -> str:
    import hashlib

    digest = hashlib.sha256(",".join(columns).encode())
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ask(session, table, valid, row: int):
    """Show ``row`` and read an answer: 1, 0, None (skip) or "q"."""
    i = int(valid[row])
    names = table.feature_names
    shown = ", ".join(f"{names[j]}={table.X[i, j]:g} ({z:+.1f} sd)" for j, z in session.deviations(row))
    print(f"\n[{len(session.answers) + 1}/{session.budget}, {session.found} found] {table.where(i)}")
    print(f"  row:        {','.join(table.fields[i])}")
    print(f"  deviations: {shown}")
    while True:
        text = input("anomaly? [y]es / [n]o / [s]kip / [q]uit: ").strip().lower()
        if text in ("q", "quit"):
            return "q"
        if text in ANSWERS:
            return ANSWERS[text]
        print("please answer y, n, s or q")


def _finish(args, session, table, X, valid, state: Path) -> None:
    """Write the labels, a scored copy of the input and the adapted bundle."""
    from anomaly_gym.envs.csvio import format_row

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    labels = session.labels()
    with open(out / "labels.csv", "w") as fh:
        fh.write("line,label\n")
        for row, label in session.answers:
            fh.write(f"{table.lines[valid[row]]},{'' if label is None else label}\n")
    bundle, how = _adapted(X, labels, args.seed)
    scores = bundle.score(X, refit=bundle.featurizer is None)
    by_row = dict(zip(valid.tolist(), scores.tolist()))
    answered = {int(valid[r]): ("" if lab is None else str(lab)) for r, lab in session.answers}
    with open(out / "scored.csv", "w", newline="") as fh:
        fh.write(format_row([*table.header, "anomaly_score", "analyst_label", "error"]))
        for i, fields in enumerate(table.fields):
            score = by_row.get(i)
            fh.write(format_row([*fields, "" if score is None else f"{score:.6g}", answered.get(i, ""), table.errors.get(i, "")]))
    bundle.save(out / "adapted.bundle.zip")
    print(f"{len(session.answers)} row(s) checked, {session.found} anomaly(ies) found; state: {state}", file=sys.stderr)
    print(f"wrote {out / 'labels.csv'}, {out / 'scored.csv'} and {out / 'adapted.bundle.zip'} ({how})", file=sys.stderr)


def _adapted(X: np.ndarray, labels: np.ndarray, seed: int):
    import logging
    import warnings

    from anomaly_gym.agents.bundle import load_default_bundle
    from anomaly_gym.meta.adapt import adapt

    base = load_default_bundle(device="cpu")
    enough = (labels == 1).sum() >= 2 and (labels == 0).sum() >= 2
    quiet = logging.getLogger("anomaly_gym")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if enough:
                return adapt(base, X, labels, seed=seed), "the target head fitted on the answers"
            return adapt(base, X, seed=seed), "zero-shot: fewer than 2 anomalies and 2 normal rows were labelled"
    finally:
        quiet.setLevel(level)
