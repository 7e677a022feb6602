"""``anomaly-gym benchmark``: the meta-policy against baselines on held-out datasets.

The protocol is ADBench's (Han et al., NeurIPS 2022).  For every target dataset and seed,
:func:`~anomaly_gym.envs.tasks.benchmark_split` subsamples the target to at most 10,000
rows, splits it 70/30 (stratified) and min-max scales both parts with the training
part's statistics.  Every method sees the same split:

- **unsupervised baselines** are fitted on the training part without labels and score
  the test part;
- **few-shot**: K anomalies are labelled, drawn (seeded) from the *training* part only;
  the label-aware baselines and the policy get exactly the same labels (1 = labelled
  anomaly, 0 = every other training row).  With a label ratio r, K is
  ``round(r * anomalies in the training part)``, at least 1.  The draws are nested: the
  5 labelled anomalies are among the 10, which are among the 20;
- **transfer baselines** get ``source=(list of X, list of y)`` from the source datasets
  (each subsampled to ``--source-rows`` rows and min-max scaled on itself), never the
  target nor, when folds are used, any dataset of the target's fold;
- **the policy** is trained on source datasets only.  With ``--train-config``, targets
  that are also sources are held out by dataset-level K-fold: the datasets are split
  into K folds (datasets with the same number of columns, often versions of one original
  dataset, always in the same fold) and the policy of fold k is trained on the sources
  minus fold k's datasets; targets that are not sources use one policy trained on every
  source.  A source counts as the target when their names or their contents agree.  With
  ``--model``, a target among the bundle's training (or validation) tasks gets an
  error row instead of a result.

Methods that use no labels (the unsupervised and transfer baselines) are run once per
dataset and seed; their row is repeated under every setting so that each setting's table
is complete.  The policy is run per setting: zero-shot, and adapted to each set of labels.

Outputs in ``--out``: ``results.csv`` (one row per dataset, method, protocol, labels and
seed, appended as each finishes; ``status`` is ``ok`` or ``error``, and ``error`` holds the
failure's message, or a note on a finished row such as "only 4 anomalies in the training
part: all of them are labelled"), ``summary.md``, PNG plots, ``folds.json``,
``policies.jsonl`` (which policy bundle scored which row, and what adaptation did),
``run.json`` (the setup, checked when a run is resumed) and ``models/`` (one policy
bundle per fold).  Rerunning with the same ``--out`` skips the rows already in
``results.csv``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import shlex
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_gym.scripts import _bench_active
from anomaly_gym.scripts._args import add_list_argument

logger = logging.getLogger(__name__)

#: Columns of ``results.csv``.
COLUMNS = ("dataset", "method", "protocol", "labels", "seed", "auroc", "auprc", "fit_seconds", "score_seconds", "status", "error")

#: Unsupervised baselines run by default (PyOD's classics, one deep model, the ensemble).
UNSUPERVISED = ("iforest", "ecod", "copod", "hbos", "knn", "lof", "pca", "ocsvm", "cblof", "autoencoder", "mean_rank")
#: Transfer-clustering baselines run by default.
TRANSFER = ("feature_transfer_kmeans", "model_transfer_kmeans", "coral_kmeans", "dtc", "prototype_meta")
#: GAN-based baselines (PyOD's GAAL pair, the Reptile meta-GAN and its from-scratch twin) and
#: transfer spectral clustering: opt-in (``--methods default,gan,spectral``), not in the default set.
GAN = ("so_gaal", "mo_gaal", "meta_gan", "gan_scratch")
SPECTRAL = ("transfer_spectral",)
#: Names that stand for a group of methods in ``--methods``.
GROUPS = {"gan": GAN, "spectral": SPECTRAL}
#: Label-aware baselines run by default in the few-shot protocol.
LABEL_AWARE = ("xgbod", "devnet", "gradient_boosting")
POLICY = "policy"
#: Methods backed by the policy bundle (the policy and its few-shot ablations): each gets its
#: target's held-out bundle, like ``policy``.  Ablations run only when asked for.
POLICY_BACKED = (POLICY, "policy_unguarded", "head_without_policy")
PROTOCOLS = ("zero-shot", "few-shot")
#: Per-dataset differences smaller than this count as ties.
TIE = 1e-3


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
    add_list_argument(p, "--sources", default=None, metavar="SRC",
                   help="source datasets: 'builtin', folders of ADBench NAME.npz files, or folders of NAME.csv.gz tables with "
                   "a 'label' column, categorical columns encoded by rarity (e.g. ../shared/data/tables); the policy and the "
                   "transfer baselines learn from these")
    add_list_argument(p, "--targets", default=None, metavar="SRC",
                      help="target datasets: 'builtin', folders of NAME.npz files or of NAME.csv.gz tables (label column 'label')")
    p.add_argument("--datasets", default=None, metavar="A,B,...", help="only these target names (default: every target)")
    p.add_argument("--protocol", choices=("zero-shot", "few-shot", "all", "active"), default="zero-shot",
                   help="zero-shot (no target labels), few-shot (a few labelled anomalies), both, or active (anomalies "
                   "found within a query budget; see anomaly_gym.meta.discover_benchmark) (default zero-shot)")
    p.add_argument("--labels", default="5,10,20", metavar="K,...",
                   help="few-shot: numbers of labelled anomalies, drawn from the training part (default 5,10,20; 'none' for none)")
    p.add_argument("--label-ratio", default=None, metavar="R,...",
                   help="few-shot: shares of the training part's anomalies to label, e.g. 0.01,0.05 (round(r * n), at least 1)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of the split, the label draw and the methods (default 3)")
    p.add_argument("--methods", default=None, metavar="M,...",
                   help="methods to run (detector names, 'policy', 'default' for the default set, 'gan' for "
                   f"{', '.join(GAN)}, 'spectral' for {', '.join(SPECTRAL)}); default: the policy, "
                   f"{', '.join(UNSUPERVISED)}, {', '.join(TRANSFER)}, and in few-shot {', '.join(LABEL_AWARE)}")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--model", type=Path, default=None, metavar="BUNDLE",
                     help="one trained policy bundle for every target (targets among its training tasks become error rows)")
    how.add_argument("--train-config", type=Path, default=None, metavar="CONFIG",
                     help="train the policy with this TOML config, holding each target out (see --folds)")
    p.add_argument("--folds", type=int, default=5,
                   help="with --train-config: dataset-level folds for targets that are also sources; datasets with "
                   "the same number of columns share a fold (default 5)")
    p.add_argument("--source-rows", type=int, default=2000,
                   help="rows kept of each source dataset for the transfer baselines (seeded subsample, default 2000)")
    p.add_argument("-o", "--out", "--output", dest="out", type=Path, default=Path("results"), help="output folder (default: results)")
    p.add_argument("--retry-errors", action="store_true", help="run again the rows recorded as errors")
    p.add_argument("--summary-only", action="store_true", help="only rewrite summary.md and the plots from OUT/results.csv")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="cpu",
                   help="device of the policies' training (detection and, with --protocol active, discovery) and of the torch detectors (default cpu: results do not depend "
                   "on the machine; auto picks CUDA when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _bench_active.add_arguments(p)
    p.set_defaults(func=run)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Setting:
    """One protocol setting: zero-shot, or few-shot with a count or a share of labelled anomalies."""

    protocol: str
    count: int | None = None
    ratio: float | None = None

    @property
    def labels(self) -> str:
        """The ``labels`` column: ``0``, ``10`` (a count) or ``1%`` (a share)."""
        if self.protocol == "zero-shot":
            return "0"
        if self.count is not None:
            return str(self.count)
        return f"{self.ratio * 100:g}%"

    def n_labels(self, n_train_anomalies: int) -> int:
        """Labelled anomalies asked for, given the training part's anomalies."""
        if self.protocol == "zero-shot":
            return 0
        if self.count is not None:
            return self.count
        return max(1, int(round(self.ratio * n_train_anomalies)))


def parse_settings(protocol: str, labels: str | None, ratios: str | None) -> list[Setting]:
    """The settings asked for on the command line."""
    out = []
    if protocol in ("zero-shot", "all"):
        out.append(Setting("zero-shot"))
    if protocol in ("few-shot", "all"):
        counts = [] if labels is None or labels.strip().lower() in ("", "none") else _int_list(labels, "--labels")
        if any(k < 1 for k in counts):
            raise ValueError(f"--labels must be positive integers, got {labels!r}")
        shares = [] if ratios is None else _float_list(ratios, "--label-ratio")
        if any(not 0.0 < r <= 1.0 for r in shares):
            raise ValueError(f"--label-ratio values must be in (0, 1], got {ratios!r}")
        if not counts and not shares:
            raise ValueError("the few-shot protocol needs --labels K,... or --label-ratio R,...")
        out += [Setting("few-shot", count=k) for k in dict.fromkeys(counts)]
        out += [Setting("few-shot", ratio=r) for r in dict.fromkeys(shares)]
    return out


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated integers, got {text!r}") from None


def _float_list(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"{flag} expects comma-separated numbers, got {text!r}") from None


def draw_labels(train_y: np.ndarray, setting: Setting, seed: int) -> tuple[np.ndarray, str]:
    """Few-shot labels over the training part: 1 for the labelled anomalies, 0 for every other row.

    The anomalies are drawn from the training part only, in a seeded order shared by every
    setting (the 5 labelled anomalies are among the 10).  When fewer anomalies exist than
    asked for, all are labelled and the returned note says so.
    """
    train_y = np.asarray(train_y)
    anomalies = np.flatnonzero(train_y == 1)
    k = setting.n_labels(len(anomalies))
    note = ""
    if k > len(anomalies):
        note = f"only {len(anomalies)} anomalies in the training part: all of them are labelled"
        k = len(anomalies)
    order = np.random.default_rng([int(seed), 7411]).permutation(anomalies)
    y = np.zeros(len(train_y), dtype=np.int8)
    y[order[:k]] = 1
    return y, note


def resolve_methods(text: str | None, settings: Sequence[Setting]) -> list[str]:
    """Method names to run, checked against the detector registry."""
    from anomaly_gym.detectors import DETECTORS

    few = any(s.protocol == "few-shot" for s in settings)
    default = [POLICY, *UNSUPERVISED, *TRANSFER, *(LABEL_AWARE if few else ())]
    if text is None:
        return default
    names: list[str] = []
    for token in (t.strip().lower() for t in text.split(",")):
        if not token:
            continue
        names += default if token == "default" else list(GROUPS.get(token, (token,)))
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from 'policy', 'default', {sorted(GROUPS)} "
                         f"and {sorted(DETECTORS)}")
    if not names:
        raise ValueError("--methods is empty")
    if not few:
        label_only = [n for n in names if DETECTORS[n].requires_labels]
        if label_only:
            warnings.warn(f"{label_only} need labels and run only in the few-shot protocol; they are skipped", UserWarning,
                          stacklevel=2)
    return list(dict.fromkeys(names))


def applies(method: str, setting: Setting) -> bool:
    """Whether ``method`` runs under ``setting`` (label-aware baselines only with labels)."""
    from anomaly_gym.detectors import DETECTORS

    return setting.protocol == "few-shot" or not DETECTORS[method].requires_labels


def uses_labels(method: str) -> bool:
    """Whether the method's result depends on the few-shot labels."""
    from anomaly_gym.detectors import DETECTORS

    return method in POLICY_BACKED or DETECTORS[method].requires_labels


# --------------------------------------------------------------------------- tasks and folds


def load_task_sets(specs: Sequence[str]) -> list:
    from anomaly_gym.envs.sources import load_tasks

    tasks = []
    for spec in specs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # constant columns are dropped by design
            tasks += load_tasks(spec)
    names = [t.name for t in tasks]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"dataset names must be unique across {list(specs)}; repeated: {repeated}")
    return tasks


def same_dataset(a, b) -> bool:
    """Two tasks are the same dataset when their names (case-insensitive) or their contents agree."""
    return a.name.lower() == b.name.lower() or a.hash == b.hash


def plan_folds(sources: Sequence, targets: Sequence, k: int, seed: int = 0) -> dict[str, str]:
    """Fold of each target: ``"1"`` .. ``"k"`` for targets among the sources, ``"all"`` for the others.

    The targets that are also sources are cut into ``k`` folds of near-equal size (fewer
    when there are fewer groups); the policy of fold ``i`` is trained on the sources minus
    fold ``i``'s datasets.  Datasets with the same number of columns are kept in the same
    fold: benchmark collections hold several versions of one original dataset (ADBench's
    landsat and satellite, both 36 columns; breastw and WBC, both 9), and one version must
    not teach the policy that is tested on another.  Groups are shuffled (seeded), then
    placed largest first, each into the fold with the fewest datasets.
    """
    if k < 2:
        raise ValueError(f"--folds must be at least 2, got {k}")
    shared = [t for t in targets if any(same_dataset(t, s) for s in sources)]
    folds = {t.name: "all" for t in targets}
    if not shared:
        return folds
    groups: dict[int, list[str]] = {}
    for t in sorted(shared, key=lambda t: t.name.lower()):
        groups.setdefault(t.n_features, []).append(t.name)
    ordered = [groups[w] for w in sorted(groups)]
    ordered = [ordered[int(i)] for i in np.random.default_rng(seed).permutation(len(ordered))]
    ordered.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
    sizes = [0] * min(k, len(ordered))
    for group in ordered:
        fold = int(np.argmin(sizes))
        sizes[fold] += len(group)
        for name in group:
            folds[name] = str(fold + 1)
    return folds


def fold_sources(sources: Sequence, targets: Sequence, folds: dict[str, str], fold: str) -> list:
    """The sources of ``fold``'s policy: every source that is none of the fold's targets."""
    held = [t for t in targets if folds.get(t.name) == fold]
    return [s for s in sources if not any(same_dataset(s, t) for t in held)]


# --------------------------------------------------------------------------- results file


def row_key(row: dict) -> tuple:
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
                raise ValueError(f"{self.path} is not a results file of this command (columns {reader.fieldnames}); "
                                 "use another --out")
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


# --------------------------------------------------------------------------- policies


class PolicySource:
    """Which policy bundle scores which target, and the guards that keep targets out of training.

    Modes: ``"model"`` (one given bundle), ``"train"`` (one bundle per fold, trained from a
    config and cached in ``OUT/models``), ``"default"`` (the bundle shipped with the package).
    """

    def __init__(self, mode: str, *, out: Path, model: Path | None = None, config: Path | None = None,
                 source_specs: Sequence[str] = (), sources: Sequence = (), targets: Sequence = (),
                 folds: dict[str, str] | None = None, progress: Callable[[str], None] | None = None,
                 device: str = "cpu") -> None:
        self.mode = mode
        self.device = device
        self.out = Path(out)
        self.model = model
        self.config = config
        self.source_specs = list(source_specs)
        self.sources = list(sources)
        self.targets = list(targets)
        self.folds = folds or {}
        self.progress = progress or (lambda text: None)
        self._bundles: dict[str, Any] = {}

    def fold_of(self, target: str) -> str:
        return self.folds.get(target, "all") if self.mode == "train" else self.mode

    def bundle_path(self, fold: str) -> Path:
        if self.mode == "model":
            return self.model
        if self.mode == "default":
            from anomaly_gym.agents.bundle import default_bundle_path

            return default_bundle_path()
        return self.out / "models" / (f"fold-{fold}.bundle.zip" if fold != "all" else "all-sources.bundle.zip")

    def bundle_for(self, target: str):
        """The bundle that scores ``target``; raises :class:`LeakError` if the target was trained on."""
        fold = self.fold_of(target)
        if fold not in self._bundles:
            self._bundles[fold] = self._train(fold) if self.mode == "train" else self._load(fold)
        bundle = self._bundles[fold]
        check_not_trained_on(bundle, target)
        return bundle

    def _load(self, fold: str):
        from anomaly_gym.agents import load_bundle

        path = self.bundle_path(fold)
        if not Path(path).is_file():
            raise FileNotFoundError(
                f"no policy bundle at {path}; pass --model BUNDLE or --train-config CONFIG, or leave 'policy' out of --methods"
            )
        return load_bundle(path, device=self.device)

    def _train(self, fold: str):
        """Train (or load the cached) policy of ``fold`` on the sources minus the fold's targets."""
        from anomaly_gym.agents import load_bundle
        from anomaly_gym.meta.config import TrainConfig
        from anomaly_gym.meta.training import MetaTrainer

        train_sources = fold_sources(self.sources, self.targets, self.folds, fold)
        held_out = sorted(t.name for t in self.targets if self.folds.get(t.name) == fold) if fold != "all" else []
        if not train_sources:
            raise ValueError(f"fold {fold} leaves no source dataset to train on; use more sources or more folds")
        base = TrainConfig.from_toml(self.config)
        data = base.to_dict()
        names = [s.name for s in train_sources]
        data.update(sources=self.source_specs, datasets=names, device=self.device)
        if isinstance(base.val_tasks, (list, tuple, str)):
            wanted = [base.val_tasks] if isinstance(base.val_tasks, str) else list(base.val_tasks)
            kept = [v for v in wanted if v in names]
            data["val_tasks"] = kept if kept else 0.2
        cfg = TrainConfig.from_dict(data)
        path = self.bundle_path(fold)
        record_path = path.with_name(path.name.replace(".bundle.zip", ".json"))
        record = {"fold": fold, "held_out": held_out, "sources": names, "config": cfg.to_dict()}
        if path.is_file():
            old = json.loads(record_path.read_text()) if record_path.is_file() else None
            if old != json.loads(json.dumps(record)):
                raise ValueError(
                    f"{path} was trained for another setup (sources, held-out datasets or config differ); "
                    "use another --out, or delete it to train again"
                )
            bundle = load_bundle(path, device=self.device)
        else:
            run_path = self.out / "models" / path.name.replace(".bundle.zip", "")
            resume = (run_path / "checkpoints" / "last.zip").is_file() and record_path.is_file() and \
                json.loads(record_path.read_text()) == json.loads(json.dumps(record))
            record_path.parent.mkdir(parents=True, exist_ok=True)
            record_path.write_text(json.dumps(record, indent=2))
            self.progress(f"training the policy of fold {fold} on {len(names)} sources ({cfg.total_steps:,} steps)")
            trainer = MetaTrainer(cfg, run_path, resume=resume)
            trainer.log_setup()
            trainer.train(progress=False)
            bundle = load_bundle(run_path / "best.bundle.zip", device=self.device)
            bundle.save(path)
        for name in held_out:
            check_not_trained_on(bundle, name)  # a bug if it ever fires: the fold's targets were held out
        return bundle


class LeakError(ValueError):
    """The target is among the tasks the policy was trained (or selected) on."""


def check_not_trained_on(bundle, target: str) -> None:
    meta = getattr(bundle, "metadata", {}) or {}
    lower = target.lower()
    if lower in {str(n).lower() for n in meta.get("train_tasks", [])}:
        raise LeakError("target among the bundle's training tasks")
    if lower in {str(n).lower() for n in meta.get("val_tasks", [])}:
        raise LeakError("target among the bundle's validation tasks (they chose the checkpoint)")


# --------------------------------------------------------------------------- transfer sources


class SourcePool:
    """The source datasets of the transfer baselines, prepared once per seed.

    Each source is subsampled (seeded, stratified) to ``rows`` rows and min-max scaled on
    itself, as the target is on its training part.  When a source's width differs from the
    target's, the baselines work in the featurizer's space; the sources' features are
    computed once per seed (and cached on disk by :func:`featurize_task`), the target's
    are fitted on its training part, exactly as the detectors' ``feature_space="features"``
    does internally.
    """

    def __init__(self, sources: Sequence, rows: int) -> None:
        if rows < 20:
            raise ValueError(f"--source-rows must be at least 20, got {rows}")
        self.sources = list(sources)
        self.rows = rows
        self._scaled: dict[tuple[str, int], Any] = {}
        self._features: dict[tuple[str, int], np.ndarray] = {}

    def scaled(self, task, seed: int):
        from anomaly_gym.envs.tasks import Task, subsample

        key = (task.name, seed)
        if key not in self._scaled:
            sub = subsample(task, self.rows, seed)
            lo = sub.X.min(axis=0)
            span = sub.X.max(axis=0) - lo
            span[span == 0] = 1.0
            self._scaled[key] = Task(sub.name, (sub.X - lo) / span, sub.y, sub.source, sub.description)
        return self._scaled[key]

    def features(self, task, seed: int) -> np.ndarray:
        from anomaly_gym.detectors.transfer import DEFAULT_TRANSFER_FEATURIZER
        from anomaly_gym.envs.features import featurize_task

        key = (task.name, seed)
        if key not in self._features:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                self._features[key] = featurize_task(self.scaled(task, seed), DEFAULT_TRANSFER_FEATURIZER).astype(np.float64)
        return self._features[key]

    def for_target(self, excluded: Sequence, width: int, seed: int) -> tuple[list[np.ndarray], list, str]:
        """(source rows, source labels, space) for a target of ``width`` columns, leaving out ``excluded``."""
        chosen = [s for s in self.sources if not any(same_dataset(s, t) for t in excluded)]
        if not chosen:
            raise ValueError("no source dataset left for the transfer baselines once the target is left out")
        tasks = [self.scaled(s, seed) for s in chosen]
        if all(t.n_features == width for t in tasks):
            return [t.X.astype(np.float64) for t in tasks], [t.y for t in tasks], "raw"
        return [self.features(s, seed) for s in chosen], [t.y for t in tasks], "features"


def target_features(train_X: np.ndarray, test_X: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The target in the transfer baselines' feature space: a featurizer fitted on the training part."""
    from anomaly_gym.detectors.transfer import DEFAULT_TRANSFER_FEATURIZER
    from anomaly_gym.envs.features import Featurizer

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        featurizer = Featurizer(DEFAULT_TRANSFER_FEATURIZER).fit(train_X)
        train = featurizer.transform(train_X).astype(np.float64)
        test = featurizer.transform(test_X).astype(np.float64)
    return train, test, time.perf_counter() - t0


# --------------------------------------------------------------------------- one method


def build_detector(method: str, seed: int, bundle=None, feature_space: str | None = None, device: str = "cpu"):
    """An unfitted detector of ``method``, seeded, single-threaded, on ``device`` (torch detectors only)."""
    from anomaly_gym.detectors import make_detector

    if method in POLICY_BACKED:
        return make_detector(method, model=bundle, random_state=seed, device=device)
    det = make_detector(method)
    params = det.get_params()
    updates: dict[str, Any] = {}
    if "random_state" in params:
        updates["random_state"] = seed
    if "n_jobs" in params:
        updates["n_jobs"] = 1
    if "device" in params:
        updates["device"] = device
    if feature_space is not None and "feature_space" in params:
        updates["feature_space"] = feature_space
    return det.set_params(**updates)


def evaluate(det, X_train, X_test, y_test, *, y=None, source=None) -> tuple[float, float, float, float]:
    """Fit ``det`` on the training part, score the test part: (AUROC, AUPRC, fit s, score s)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        det.fit(X_train, y=y, source=source)
        t1 = time.perf_counter()
        scores = np.asarray(det.decision_function(X_test), dtype=np.float64)
    t2 = time.perf_counter()
    if scores.shape != (len(X_test),):
        raise ValueError(f"{type(det).__name__} returned {scores.shape} scores for {len(X_test)} rows")
    if not np.isfinite(scores).all():
        raise ValueError(f"{type(det).__name__} returned {int((~np.isfinite(scores)).sum())} non-finite scores")
    return float(roc_auc_score(y_test, scores)), float(average_precision_score(y_test, scores)), t1 - t0, t2 - t1


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if not isinstance(exc, LeakError) else str(exc)
    return " ".join(text.split())


# --------------------------------------------------------------------------- the run


@dataclass
class Plan:
    """What one invocation runs."""

    targets: list
    seeds: list[int]
    settings: list[Setting]
    methods: list[str]
    todo: dict[tuple, list[tuple[Setting, str]]] = field(default_factory=dict)

    def build(self, results: ResultsFile) -> int:
        """Fill ``todo[(target, seed)]`` with the (setting, method) pairs not in ``results``; return their count."""
        total = 0
        for task in self.targets:
            for seed in self.seeds:
                pairs = [(s, m) for s in self.settings for m in self.methods
                         if applies(m, s) and (task.name, m, s.protocol, s.labels, seed) not in results]
                if pairs:
                    self.todo[(task.name, seed)] = pairs
                    total += len(pairs)
        return total


def run(args: argparse.Namespace) -> int:
    if args.protocol == "active":
        return _bench_active.run_active(args)
    out = Path(args.out)
    if args.summary_only:
        path = out / "results.csv"
        if not path.is_file():
            raise FileNotFoundError(f"no results to summarise: {path} does not exist")
        write_summary(out)
        print(f"wrote {out / 'summary.md'}")
        return 0
    if not args.sources or not args.targets:
        raise ValueError("--sources and --targets are required (or --summary-only)")
    if args.seeds < 1:
        raise ValueError(f"--seeds must be positive, got {args.seeds}")
    settings = parse_settings(args.protocol, args.labels, args.label_ratio)
    methods = resolve_methods(args.methods, settings)
    if args.train_config is not None and not args.train_config.is_file():
        raise FileNotFoundError(f"no such config file: {args.train_config}")
    if args.model is not None and not args.model.is_file():
        raise FileNotFoundError(f"no such policy bundle: {args.model}")

    from anomaly_gym.envs.tasks import check_training_task

    sources = load_task_sets(args.sources)
    all_targets = load_task_sets(args.targets)
    for task in all_targets:
        check_training_task(task)  # a target needs labels for AUROC and both classes
    targets = all_targets
    if args.datasets:
        wanted = [d.strip() for d in args.datasets.split(",") if d.strip()]
        by_name = {t.name.lower(): t for t in all_targets}
        missing = [d for d in wanted if d.lower() not in by_name]
        if missing:
            raise ValueError(f"dataset(s) {missing} not among the targets; the targets are {sorted(by_name)}")
        targets = [by_name[d.lower()] for d in dict.fromkeys(wanted)]
    if args.train_config is not None:
        from anomaly_gym.meta.config import TrainConfig

        cfg = TrainConfig.from_toml(args.train_config)
        if cfg.datasets:  # the config's dataset selection narrows the sources (of every method)
            keep = {d.lower() for d in cfg.datasets}
            sources = [s for s in sources if s.name.lower() in keep]
    sources = [s for s in sources if s.labelled]
    if not sources:
        raise ValueError(f"no labelled source dataset in {args.sources}")

    mode = "model" if args.model is not None else "train" if args.train_config is not None else "default"
    if mode == "default" and any(m in POLICY_BACKED for m in methods):
        from anomaly_gym.agents.bundle import default_bundle_path

        if not default_bundle_path().is_file():
            raise FileNotFoundError(
                "the 'policy' method needs a policy: pass --train-config CONFIG (trained here, each target held out) "
                "or --model BUNDLE, or leave 'policy' out of --methods (no default bundle is installed)"
            )
    folds = plan_folds(sources, all_targets, args.folds) if mode == "train" else {}
    from anomaly_gym.agents.factory import resolve_device

    device = resolve_device(args.device)  # 'cuda' without a GPU is a ValueError: exit 2 with the reason
    setup = _setup_record(args, sources, targets, folds, mode)
    _check_setup(out, setup, out / "results.csv")

    results = ResultsFile(out / "results.csv")
    if args.retry_errors:
        dropped = results.drop_errors()
        if dropped:
            print(f"running again {dropped} row(s) recorded as errors", file=sys.stderr)
    plan = Plan(targets, list(range(args.seeds)), settings, methods)
    total = plan.build(results)
    if mode == "train":
        _write_folds(out, sources, all_targets, folds)
    if total == 0:
        print(f"nothing to run: every row is already in {results.path}", file=sys.stderr)
        write_summary(out)
        return 0

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with threadpool_limits(limits=1), Progress(*columns, disable=args.no_progress, transient=False) as bar:
            job = bar.add_task("benchmark", total=total)
            policies = PolicySource(mode, out=out, model=args.model, config=args.train_config, source_specs=args.sources,
                                    sources=sources, targets=all_targets, folds=folds,
                                    progress=lambda text: bar.update(job, description=text), device=device)
            pool = SourcePool(sources, args.source_rows)
            runner = _Runner(out, results, policies, pool, all_targets, folds, mode,
                             advance=lambda n=1: bar.advance(job, n), describe=lambda t: bar.update(job, description=t))
            # Fold by fold, so that each fold's policy is trained once and an interrupted run has whole datasets.
            order = sorted(plan.todo, key=lambda key: (_fold_order(policies.fold_of(key[0])), key[0].lower(), key[1]))
            by_name = {t.name: t for t in targets}
            for name, seed in order:
                runner.run_target(by_name[name], seed, plan.todo[(name, seed)])
    finally:
        try:
            write_summary(out)
        except Exception as exc:  # never hide the run's own outcome behind a summary failure
            print(f"could not write the summary: {_error_text(exc)}", file=sys.stderr)
    print(f"results: {out / 'results.csv'}  summary: {out / 'summary.md'}")
    return 0


def _fold_order(fold: str) -> tuple:
    return (0, int(fold)) if fold.isdigit() else (1, 0)


class _Runner:
    """Runs the (setting, method) pairs of one target and seed and records each row."""

    def __init__(self, out, results, policies, pool, all_targets, folds, mode, advance, describe) -> None:
        self.out, self.results, self.policies, self.pool = out, results, policies, pool
        self.all_targets, self.folds, self.mode = all_targets, folds, mode
        self.advance, self.describe = advance, describe

    def run_target(self, task, seed: int, pairs: list[tuple[Setting, str]]) -> None:
        from anomaly_gym.detectors import DETECTORS
        from anomaly_gym.envs.tasks import benchmark_split

        split = benchmark_split(task, seed)
        train, test = split.train, split.test
        label_free: dict[str, dict] = {}  # method -> finished row, reused under every setting
        transfer_inputs = None
        for setting, method in pairs:
            self.describe(f"{task.name} seed {seed} {setting.protocol} {setting.labels}: {method}")
            key_row = {"dataset": task.name, "method": method, "protocol": setting.protocol, "labels": setting.labels,
                       "seed": seed}
            if not uses_labels(method):
                done = label_free.get(method) or self._earlier(task.name, method, seed)
                if done is not None:
                    self.results.add({**done, **key_row})
                    self.advance()
                    continue
            row = dict(key_row, auroc=float("nan"), auprc=float("nan"), fit_seconds=float("nan"),
                       score_seconds=float("nan"), status="ok", error="")
            try:
                y = note = None
                if setting.protocol == "few-shot" and uses_labels(method):
                    y, note = draw_labels(train.y, setting, seed)
                if method in POLICY_BACKED:
                    bundle = self.policies.bundle_for(task.name)
                    det = build_detector(method, seed, bundle, device=self.policies.device)
                    auroc, auprc, fit_s, score_s = evaluate(det, train.X, test.X, test.y, y=y)
                    self._log_policy(task.name, method, setting, seed, det)
                    if setting.protocol == "few-shot" and det.adaptation_.get("mode") != "few-shot":
                        note = (note + "; " if note else "") + "fewer than 2 labelled anomalies: the policy ran zero-shot"
                elif DETECTORS[method].uses_source:
                    if transfer_inputs is None:
                        transfer_inputs = self._transfer_inputs(task, train, test, seed)
                    source_X, source_y, space, train_X, test_X, extra = transfer_inputs
                    det = build_detector(method, seed, feature_space="raw", device=self.policies.device)
                    auroc, auprc, fit_s, score_s = evaluate(det, train_X, test_X, test.y, source=(source_X, source_y))
                    fit_s += extra  # the target's share of the shared featurization
                else:
                    det = build_detector(method, seed, device=self.policies.device)
                    auroc, auprc, fit_s, score_s = evaluate(det, train.X, test.X, test.y,
                                                            y=y if DETECTORS[method].requires_labels else None)
                row.update(auroc=auroc, auprc=auprc, fit_seconds=fit_s, score_seconds=score_s, error=note or "")
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # one method failing on one dataset is a row, not the end of the run
                logger.debug("%s on %s failed:\n%s", method, task.name, traceback.format_exc())
                row.update(status="error", error=_error_text(exc))
            self.results.add(row)
            if not uses_labels(method):
                label_free[method] = row
            self.advance()

    def _earlier(self, dataset: str, method: str, seed: int) -> dict | None:
        """A finished row of a label-free method under another setting (same split, same result)."""
        for (d, m, _protocol, _labels, s), row in self.results.rows.items():
            if d == dataset and m == method and s == seed:
                return dict(row)
        return None

    def _transfer_inputs(self, task, train, test, seed):
        """Sources and target rows of the transfer baselines, in the shared space."""
        if self.mode == "train":
            fold = self.folds.get(task.name, "all")
            excluded = [t for t in self.all_targets if self.folds.get(t.name) == fold] if fold != "all" else []
            excluded = excluded or [task]
        else:
            excluded = [task]
        source_X, source_y, space = self.pool.for_target(excluded + [task], train.n_features, seed)
        if space == "raw":
            return source_X, source_y, space, train.X, test.X, 0.0
        train_Z, test_Z, seconds = target_features(train.X, test.X)
        return source_X, source_y, space, train_Z, test_Z, seconds

    def _log_policy(self, dataset: str, method: str, setting: Setting, seed: int, det) -> None:
        record = {
            "dataset": dataset, "method": method, "protocol": setting.protocol, "labels": setting.labels, "seed": seed,
            "fold": self.policies.fold_of(dataset), "bundle": str(self.policies.bundle_path(self.policies.fold_of(dataset))),
            "train_tasks": det.bundle_.metadata.get("train_tasks", []), "adaptation": det.adaptation_,
        }
        with (self.out / "policies.jsonl").open("a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")


def _setup_record(args, sources, targets, folds, mode) -> dict:
    """What results in ``--out`` depend on besides the row keys; a resumed run must match it.

    ``sources``, ``source_rows`` and ``holdout`` (which datasets are left out of a target's
    sources) shape every transfer and policy row; ``policy`` (the bundle, or the training
    config) shapes the policy rows only.
    """
    policy: dict[str, Any] = {"mode": mode}
    if mode == "model":
        policy["bundle_sha256"] = hashlib.sha256(Path(args.model).read_bytes()).hexdigest()
    elif mode == "train":
        policy["config_sha256"] = hashlib.sha256(Path(args.train_config).read_bytes()).hexdigest()
    return {
        "sources": {s.name: s.hash for s in sources},
        "targets": {t.name: t.hash for t in targets},
        "holdout": {"folds": args.folds, "target_fold": folds} if mode == "train" else "target",
        "policy": policy,
        "source_rows": args.source_rows,
        "commands": [c for c in [_command_line()] if c],
    }


def _command_line() -> str | None:
    """This invocation as typed, when it came from the ``anomaly-gym`` command."""
    argv = sys.argv
    if "benchmark" not in argv[1:]:
        return None
    return "anomaly-gym " + " ".join(shlex.quote(a) for a in argv[argv.index("benchmark", 1):])


def _check_setup(out: Path, setup: dict, results_path: Path) -> None:
    path = out / "run.json"
    if path.is_file():
        old = json.loads(path.read_text())
        keys = ["sources", "holdout", "source_rows"]
        if _has_policy_rows(results_path):
            keys.append("policy")
        for key in keys:
            if old.get(key) != setup[key]:
                raise ValueError(
                    f"{out} holds results of another setup ({key} differ from this command's); use another --out "
                    "to keep them apart"
                )
        changed = [n for n, h in setup["targets"].items() if old.get("targets", {}).get(n, h) != h]
        if changed:
            raise ValueError(f"target dataset(s) {changed} changed since the results in {out} were written; use another --out")
        setup = {**setup, "targets": {**old.get("targets", {}), **setup["targets"]},
                 "commands": old.get("commands", []) + [c for c in setup["commands"] if c not in old.get("commands", [])]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(setup, indent=2))


def _has_policy_rows(results_path: Path) -> bool:
    if not results_path.is_file():
        return False
    with results_path.open(newline="") as fh:
        return any(row.get("method") in POLICY_BACKED for row in csv.DictReader(fh))


def _write_folds(out: Path, sources, targets, folds) -> None:
    record: dict[str, Any] = {"target_fold": folds, "folds": {}}
    for fold in sorted(set(folds.values()), key=_fold_order):
        record["folds"][fold] = {
            "held_out": sorted(n for n, f in folds.items() if f == fold) if fold != "all" else [],
            "sources": [s.name for s in fold_sources(sources, targets, folds, fold)],
        }
    (out / "folds.json").write_text(json.dumps(record, indent=2))


# --------------------------------------------------------------------------- summary


def _group_slug(protocol: str, labels: str) -> str:
    return protocol if protocol == "zero-shot" else f"{protocol}-{labels.replace('%', 'pct')}"


def _wilcoxon(diff: np.ndarray) -> float:
    from scipy.stats import wilcoxon

    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        return float("nan")
    if np.all(np.abs(diff) < 1e-12):
        return 1.0
    try:
        return float(wilcoxon(diff).pvalue)
    except ValueError:
        return 1.0


def _fmt(x: float, digits: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if math.isnan(p):
        return "–"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def load_results(path: Path):
    import pandas as pd

    frame = pd.read_csv(path, dtype={"labels": str, "error": str}, keep_default_na=False,
                        na_values={"auroc": [""], "auprc": [""], "fit_seconds": [""], "score_seconds": [""]})
    for c in ("auroc", "auprc", "fit_seconds", "score_seconds"):
        frame[c] = pd.to_numeric(frame[c], errors="coerce")
    frame["seed"] = frame["seed"].astype(int)
    return frame


def group_tables(frame) -> dict:
    """Per (protocol, labels): per-dataset mean over seeds of AUROC and AUPRC, one column per method.

    A method counts on a dataset only when it succeeded on every seed run there (by any
    method), so that every cell is a mean over the same seeds.
    """
    tables = {}
    for (protocol, labels), part in frame.groupby(["protocol", "labels"], sort=False):
        seeds = part.groupby("dataset")["seed"].nunique()
        ok = part[part["status"] == "ok"]
        if ok.empty:
            continue
        grouped = ok.groupby(["dataset", "method"])
        means = grouped[["auroc", "auprc"]].mean()
        complete = grouped["seed"].nunique() == seeds.reindex(means.index.get_level_values("dataset")).to_numpy()
        means = means[complete.to_numpy()]
        if means.empty:
            continue
        tables[(protocol, labels)] = {
            "auroc": means["auroc"].unstack("method"),
            "auprc": means["auprc"].unstack("method"),
        }
    return tables


def average_ranks(auroc) -> tuple[Any, list[str]]:
    """Average rank (1 = best) of each method over the datasets where every method has a result."""
    from scipy.stats import rankdata

    complete = auroc.dropna(axis=0, how="any")
    if complete.empty:
        return None, []
    ranks = np.vstack([rankdata(-row.to_numpy()) for _, row in complete.iterrows()])
    import pandas as pd

    return pd.Series(ranks.mean(axis=0), index=complete.columns), list(complete.index)


def compare(a, b) -> dict:
    """Paired comparison of two per-dataset columns: wins/ties/losses of ``a``, mean difference, Wilcoxon p."""
    pair = np.column_stack([a.to_numpy(), b.to_numpy()])
    pair = pair[~np.isnan(pair).any(axis=1)]
    diff = pair[:, 0] - pair[:, 1] if len(pair) else np.array([])
    return {
        "n": len(diff),
        "wins": int((diff >= TIE).sum()),
        "ties": int((np.abs(diff) < TIE).sum()),
        "losses": int((diff <= -TIE).sum()),
        "mean_diff": float(diff.mean()) if len(diff) else float("nan"),
        "p": _wilcoxon(diff),
    }


def write_summary(out: Path) -> Path:
    """Write ``summary.md`` and the PNG plots from ``out/results.csv``."""
    out = Path(out)
    frame = load_results(out / "results.csv")
    setup = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    lines = ["# Benchmark summary", ""]
    commands = setup.get("commands", [])
    if commands:
        lines += ["Command" + ("s (the rows of each were added to the same results):" if len(commands) > 1 else ":"), ""]
        lines += [f"    {c}" for c in commands] + [""]
    lines += [
        "Protocol (ADBench): per target and seed, targets above 10,000 rows are subsampled to 10,000, split 70/30 "
        "(stratified), min-max scaled with the training part's statistics; every method is fitted on the training "
        "part and scored on the test part. Figures are per-dataset means over seeds, then summarised across datasets. "
        f"Ties: per-dataset differences below {TIE}. The policy never trains on its target "
        f"({_policy_line(setup)}).",
        "",
    ]
    if frame.empty:
        lines.append("No results yet.")
    tables = group_tables(frame)
    for (protocol, labels), tab in sorted(tables.items(), key=lambda kv: _setting_order(*kv[0])):
        lines += _group_section(out, frame, protocol, labels, tab)
    errors = frame[frame["status"] != "ok"]
    if len(errors):
        lines += ["## Errors", "", f"{len(errors)} row(s) failed and are left out of the tables above:", ""]
        for (method, message), part in errors.groupby(["method", "error"], sort=True):
            where = ", ".join(sorted({f"{d}" for d in part["dataset"]}, key=str.lower))
            lines.append(f"- `{method}` on {where} ({len(part)} row(s)): {message}")
        lines.append("")
    path = out / "summary.md"
    path.write_text("\n".join(lines))
    return path


def _setting_order(protocol: str, labels: str) -> tuple:
    if protocol == "zero-shot":
        return (0, 0.0)
    if labels.endswith("%"):
        return (2, float(labels[:-1]))
    return (1, float(labels)) if labels.isdigit() else (3, 0.0)


def _policy_line(setup: dict) -> str:
    policy = setup.get("policy", {})
    mode = policy.get("mode")
    if mode == "train":
        folds = setup.get("holdout", {}).get("folds") if isinstance(setup.get("holdout"), dict) else None
        return (f"trained from a config per fold of a dataset-level {folds}-fold split of the targets that are also "
                "sources, on the sources minus the fold; see folds.json")
    if mode == "model":
        return "one given bundle; targets among its training tasks are error rows"
    if mode == "default":
        return "the shipped bundle; targets among its training tasks are error rows"
    return "see run.json"


def _group_section(out: Path, frame, protocol: str, labels: str, tab: dict) -> list[str]:
    from anomaly_gym.detectors import DETECTORS

    auroc, auprc = tab["auroc"], tab["auprc"]
    part = frame[(frame["protocol"] == protocol) & (frame["labels"] == labels)]
    title = "zero-shot" if protocol == "zero-shot" else f"few-shot, {labels} labelled anomalies"
    seeds = sorted(part["seed"].unique())
    lines = [f"## {title}", "", f"{auroc.shape[0]} datasets, seeds {', '.join(map(str, seeds))}.", ""]
    ranks, complete = average_ranks(auroc)
    errors = part[part["status"] != "ok"].groupby("method").size()
    order = auroc.mean().sort_values(ascending=False).index
    lines += [
        "### Mean and median over datasets",
        "",
        f"A method counts on a dataset when it succeeded on every seed there. Average rank by AUROC (1 = best) over the "
        f"{len(complete)} datasets where every method has a result.",
        "",
        "| method | datasets | mean AUROC | median AUROC | mean AUPRC | median AUPRC | avg rank | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in order:
        name = f"**{m}**" if m == POLICY else m
        rank = _fmt(float(ranks[m]), 2) if ranks is not None else "–"
        lines.append(
            f"| {name} | {int(auroc[m].notna().sum())} | {_fmt(auroc[m].mean())} | {_fmt(auroc[m].median())} | "
            f"{_fmt(auprc[m].mean())} | {_fmt(auprc[m].median())} | {rank} | {int(errors.get(m, 0))} |"
        )
    lines.append("")
    if POLICY in auroc.columns:
        lines += [
            "### The policy against each baseline",
            "",
            "Wins / ties / losses of the policy on per-dataset means; mean difference (policy minus baseline); "
            "two-sided Wilcoxon signed-rank p-value over the paired datasets.",
            "",
            "| baseline | datasets | W / T / L AUROC | mean Δ AUROC | p (AUROC) | W / T / L AUPRC | mean Δ AUPRC | p (AUPRC) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for m in order:
            if m == POLICY:
                continue
            a, b = compare(auroc[POLICY], auroc[m]), compare(auprc[POLICY], auprc[m])
            lines.append(
                f"| {m} | {a['n']} | {a['wins']} / {a['ties']} / {a['losses']} | {a['mean_diff']:+.3f} | {_fmt_p(a['p'])} | "
                f"{b['wins']} / {b['ties']} / {b['losses']} | {b['mean_diff']:+.3f} | {_fmt_p(b['p'])} |"
                if a["n"] else f"| {m} | 0 | – | – | – | – | – | – |"
            )
        lines.append("")
    transfer = [m for m in order if m in DETECTORS and DETECTORS[m].uses_source]
    if transfer:
        reference = POLICY if POLICY in auroc.columns else None
        lines += ["### Where the transfer baselines win", ""]
        others = [m for m in auroc.columns if m not in transfer]
        for m in transfer:
            lines.append("- " + _transfer_note(auroc, m, reference, others))
        lines.append("")
    slug = _group_slug(protocol, labels)
    try:
        plot_by_dataset(auroc, out / f"auroc_by_dataset_{slug}.png", title=f"AUROC by dataset ({title})")
        if ranks is not None:
            plot_ranks(ranks, out / f"average_rank_{slug}.png", title=f"average AUROC rank over {len(complete)} datasets ({title})")
        lines += [f"![AUROC by dataset](auroc_by_dataset_{slug}.png)", ""]
        if ranks is not None:
            lines += [f"![average rank](average_rank_{slug}.png)", ""]
    except Exception as exc:  # a plotting failure must not lose the summary
        lines += [f"(plots failed: {_error_text(exc)})", ""]
    return lines


def _transfer_note(auroc, method: str, reference: str | None, others: list[str]) -> str:
    col = auroc[method]
    parts = []
    if reference is not None:
        pair = auroc[[method, reference]].dropna()
        diff = (pair[method] - pair[reference]).sort_values(ascending=False)
        wins = diff[diff >= TIE]
        listed = ", ".join(f"{d} {v:+.3f}" for d, v in wins.head(5).items())
        more = f", and {len(wins) - 5} more" if len(wins) > 5 else ""
        parts.append(f"beats the policy on {len(wins)} of {len(pair)} datasets" + (f" ({listed}{more})" if len(wins) else ""))
    if others:
        rest = auroc[others].max(axis=1)
        mask = col.notna() & rest.notna()
        best = [d for d in auroc.index[mask] if col[d] - rest[d] >= TIE]
        parts.append(f"beats every non-transfer method on {len(best)} of {int(mask.sum())}" + (f" ({', '.join(best[:5])}{', ...' if len(best) > 5 else ''})" if best else ""))
    return f"`{method}` (mean AUROC {_fmt(col.mean())}): " + "; ".join(parts) + "."


def plot_by_dataset(auroc, path: Path, title: str) -> Path:
    """Dot plot: one row per dataset, one marker per method (the policy drawn large)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = auroc[POLICY] if POLICY in auroc.columns else auroc.mean(axis=1)
    data = auroc.loc[key.sort_values(na_position="first").index]
    methods = list(data.columns)
    fig, ax = plt.subplots(figsize=(9, 1.5 + 0.32 * len(data)))
    cmap = plt.get_cmap("tab10")
    markers = "osv^<>PXdh"
    y = np.arange(len(data))
    for i, m in enumerate(m for m in methods if m != POLICY):
        ax.scatter(data[m], y, s=20, color=cmap(i % 10), marker=markers[(i // 10 + i) % len(markers)], label=m,
                   alpha=0.8, zorder=2)
    if POLICY in methods:
        ax.scatter(data[POLICY], y, s=90, marker="D", color="black", label=POLICY, zorder=3)
    ax.set_yticks(y, [str(d) for d in data.index], fontsize=8)
    ax.set_xlabel("AUROC (test part, mean over seeds)")
    ax.set_xlim(0, 1.01)
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_ranks(ranks, path: Path, title: str) -> Path:
    """Horizontal bars of the average rank (shorter is better)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = ranks.sort_values(ascending=False)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.3 * len(ranks)))
    colors = ["black" if m == POLICY else "tab:blue" for m in ranks.index]
    ax.barh(np.arange(len(ranks)), ranks.to_numpy(), color=colors)
    ax.set_yticks(np.arange(len(ranks)), list(ranks.index), fontsize=8)
    ax.set_xlabel("average rank (1 = best)")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
