"""Results storage: ``results.csv`` appended row by row (resume skips what is there), ``run.json``, ``folds.json``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anomaly_gym.meta.benchmark.protocol import COLUMNS, POLICY_BACKED, dataset_groups, fold_sources, split_groups

#: Columns of ``results.csv`` that hold wall-clock times (they differ between runs and executors).
TIMING_COLUMNS = ("fit_seconds", "score_seconds")


def row_key(row: dict) -> tuple:
    """(dataset, method, protocol, labels, seed): what identifies a row."""
    return (row["dataset"], row["method"], row["protocol"], str(row["labels"]), int(row["seed"]))


class ResultsFile:
    """``results.csv``: rows appended (and flushed) as they finish; what is there on start counts as done."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.rows: dict[tuple, dict] = {}
        if self.path.is_file():
            self._load()
        else:
            self._rewrite()

    def _load(self) -> None:
        clean = True
        with self.path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != COLUMNS:
                raise ValueError(f"{self.path} is not a results file of this command (columns {reader.fieldnames}); use another --out")
            for row in reader:
                try:
                    if None in row.values() or None in row:
                        raise ValueError
                    self.rows[row_key(row)] = row
                except (ValueError, TypeError, KeyError):
                    clean = False  # a line cut off when a run was killed
        if not clean:
            self._rewrite()

    def _rewrite(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(self.rows.values())
        tmp.replace(self.path)

    def drop_errors(self) -> int:
        bad = [k for k, r in self.rows.items() if r["status"] != "ok"]
        for k in bad:
            del self.rows[k]
        if bad:
            self._rewrite()
        return len(bad)

    def __contains__(self, key: tuple) -> bool:
        return key in self.rows

    def get(self, key: tuple) -> dict | None:
        return self.rows.get(key)

    def add(self, row: dict) -> None:
        row = {c: row.get(c, "") for c in COLUMNS}
        for c in ("auroc", "auprc", "fit_seconds", "score_seconds"):
            if isinstance(row[c], float):
                row[c] = "" if math.isnan(row[c]) else f"{row[c]:.6g}"
        row["error"] = " ".join(str(row["error"]).split())[:500]
        with self.path.open("a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=COLUMNS).writerow(row)
            fh.flush()
        self.rows[row_key(row)] = {k: str(v) for k, v in row.items()}

    def earlier(self, dataset: str, method: str, seed: int) -> dict | None:
        """A finished row of ``method`` on ``dataset`` and ``seed`` under any setting."""
        for (d, m, _protocol, _labels, s), row in self.rows.items():
            if d == dataset and m == method and s == seed:
                return dict(row)
        return None


def load_results(path: Path):
    """``results.csv`` as a DataFrame: metrics and times as floats (NaN when empty), seeds as ints."""
    import pandas as pd

    frame = pd.read_csv(
        path, dtype={"labels": str, "error": str}, keep_default_na=False, na_values={"auroc": [""], "auprc": [""], "fit_seconds": [""], "score_seconds": [""]}
    )
    for c in ("auroc", "auprc", "fit_seconds", "score_seconds"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame["seed"] = frame["seed"].astype(int)
    return frame


def fold_order(fold: str) -> tuple:
    """Numbered folds first, in order, then ``all``."""
    return (0, int(fold)) if fold.isdigit() else (1, 0)


def check_setup(out: Path, setup: dict, results_path: Path) -> None:
    """Refuse to mix results of another setup in ``out``; record this setup (and command) in ``run.json``."""
    path = out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ["sources", "holdout", "source_rows"]
        if has_policy_rows(results_path):
            keys.append("policy")
        for key in keys:
            if old.get(key) != setup[key]:
                raise ValueError(f"{out} holds results of another setup ({key} differ from this command's); use another --out to keep them apart")
        changed = [n for n, h in setup["targets"].items() if old.get("targets", {}).get(n, h) != h]
        if changed:
            raise ValueError(f"target dataset(s) {changed} changed since the results in {out} were written; use another --out")
        setup = {
            **setup,
            "targets": {**old.get("targets", {}), **setup["targets"]},
            "commands": old.get("commands", []) + [c for c in setup["commands"] if c not in old.get("commands", [])],
        }
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(setup, indent=2))


def has_policy_rows(results_path: Path) -> bool:
    """Whether ``results_path`` holds rows of a policy-backed method."""
    if not results_path.is_file():
        return False
    with results_path.open(newline="") as fh:
        return any(row.get("method") in POLICY_BACKED for row in csv.DictReader(fh))


def write_folds(out: Path, sources: Sequence, targets: Sequence, folds: dict[str, str], extra: dict[str, Any] | None = None) -> None:
    """``folds.json``: each target's fold, each fold's held-out datasets and sources, the groups and any split group.

    ``groups`` are the versions-of-one-original groups (:func:`~anomaly_gym.meta.benchmark.protocol.dataset_groups`)
    among the numbered folds' targets; ``split`` lists those dealt across folds because
    they were the only group (their figures may be inflated).  ``extra`` adds top-level fields.
    """
    held = [t for t in targets if folds.get(t.name, "all") != "all"]
    record: dict[str, Any] = {
        "target_fold": folds,
        "groups": dataset_groups(held),
        "split": split_groups(targets, folds),
        "folds": {},
    }
    for fold in sorted(set(folds.values()), key=fold_order):
        record["folds"][fold] = {
            "held_out": sorted(n for n, f in folds.items() if f == fold) if fold != "all" else [],
            "sources": [s.name for s in fold_sources(sources, targets, folds, fold)],
        }
    record.update(extra or {})
    (out / "folds.json").write_text(json.dumps(record, indent=2))
