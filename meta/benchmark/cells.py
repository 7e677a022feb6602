"""One benchmark cell (a target, a seed and a method under its settings), run where the executor puts it.

A cell is self-contained: it gets the target and seed, the (setting, method) pairs to run
and, for the policy, the path of its bundle (or why there is none), and returns the rows
of ``results.csv`` and the records of ``policies.jsonl``.  The work of the benchmark is
the same whatever the executor; only the timing columns differ.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from anomaly_gym.meta.benchmark.policies import error_text
from anomaly_gym.meta.benchmark.protocol import POLICY_BACKED, Setting, draw_labels, same_dataset, uses_labels

logger = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class Cell:
    """What one task of the executor runs: ``pairs`` of (setting, method) on ``dataset`` with ``seed``.

    A cell holds one method under each of its settings, or the transfer baselines together
    (they share the target's featurization).  ``bundle``/``policy_error`` are set for cells
    of policy-backed methods.
    """

    dataset: str
    seed: int
    pairs: tuple[tuple[Setting, str], ...]
    fold: str = "all"
    bundle: str | None = None
    policy_error: str | None = None

    def key_rows(self) -> list[dict]:
        """The row keys of this cell, for error rows when the cell as a whole failed."""
        return [{"dataset": self.dataset, "method": m, "protocol": s.protocol, "labels": s.labels, "seed": self.seed} for s, m in self.pairs]


@dataclass
class CellContext:
    """What every cell of one run shares (shipped once per worker): the datasets and the hold-out plan."""

    targets: dict[str, Any]
    sources: list
    all_targets: list
    folds: dict[str, str]
    mode: str
    source_rows: int
    device: str = "cpu"
    token: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class CellResult:
    """The rows of a cell, and the policy records for ``policies.jsonl``."""

    rows: list[dict]
    policy_log: list[dict] = field(default_factory=list)


_WORKER_STATE: dict[str, dict] = {}


def _state(ctx: CellContext) -> dict:
    """Per-process caches of one run: the transfer sources and the loaded bundles."""
    if ctx.token not in _WORKER_STATE:
        _WORKER_STATE.clear()
        _WORKER_STATE[ctx.token] = {"pool": SourcePool(ctx.sources, ctx.source_rows), "bundles": {}}
    return _WORKER_STATE[ctx.token]


def run_cell(ctx: CellContext, cell: Cell) -> CellResult:
    """Run ``cell`` single-threaded: one row per pair, failures as error rows."""
    import torch
    from anomaly_gym.envs.tasks import benchmark_split
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        split = benchmark_split(ctx.targets[cell.dataset], cell.seed)
        runner = _CellRunner(ctx, cell, split)
        for setting, method in cell.pairs:
            runner.run_pair(setting, method)
    return CellResult(runner.rows, runner.policy_log)


def featurize_source(ctx: CellContext, item: tuple[int, int]) -> str:
    """Featurize source ``item[0]`` (an index into ``ctx.sources``) for seed ``item[1]``, single-threaded.

    The features land in the disk cache of :func:`~anomaly_gym.envs.features.featurize_task`,
    where the transfer cells of that seed find them: run over the executor before the cells,
    each source is featurized once instead of once per worker.
    """
    from threadpoolctl import threadpool_limits

    index, seed = item
    with threadpool_limits(limits=1):
        _state(ctx)["pool"].features(ctx.sources[index], seed)
    return ctx.sources[index].name


class _CellRunner:
    """Runs the pairs of one cell; label-free methods run once and their row is repeated under each setting."""

    def __init__(self, ctx: CellContext, cell: Cell, split) -> None:
        self.ctx, self.cell, self.split = ctx, cell, split
        self.rows: list[dict] = []
        self.policy_log: list[dict] = []
        self.label_free: dict[str, dict] = {}
        self.transfer_inputs = None

    def run_pair(self, setting: Setting, method: str) -> None:
        key_row = {"dataset": self.cell.dataset, "method": method, "protocol": setting.protocol, "labels": setting.labels, "seed": self.cell.seed}
        if not uses_labels(method) and method in self.label_free:
            self.rows.append({**self.label_free[method], **key_row})
            return
        row = dict(key_row, auroc=float("nan"), auprc=float("nan"), fit_seconds=float("nan"), score_seconds=float("nan"), status="ok", error="")
        try:
            auroc, auprc, fit_s, score_s, note = self._evaluate(setting, method)
            row.update(auroc=auroc, auprc=auprc, fit_seconds=fit_s, score_seconds=score_s, error=note or "")
        except KeyboardInterrupt:
            raise
        except _Reported as exc:  # already worded for the error column
            row.update(status="error", error=str(exc))
        except Exception as exc:  # one method failing on one dataset is a row, not the end of the run
            logger.debug("%s on %s failed:\n%s", method, self.cell.dataset, traceback.format_exc())
            row.update(status="error", error=error_text(exc))
        self.rows.append(row)
        if not uses_labels(method):
            self.label_free[method] = row

    def _evaluate(self, setting: Setting, method: str):
        from anomaly_gym.detectors import DETECTORS

        train, test, seed, device = self.split.train, self.split.test, self.cell.seed, self.ctx.device
        y = note = None
        if setting.protocol == "few-shot" and uses_labels(method):
            y, note = draw_labels(train.y, setting, seed)
        if method in POLICY_BACKED:
            det = build_detector(method, seed, self._bundle(), device=device)
            auroc, auprc, fit_s, score_s = evaluate(det, train.X, test.X, test.y, y=y)
            self._log_policy(method, setting, det)
            if setting.protocol == "few-shot" and det.adaptation_.get("mode") != "few-shot":
                note = (note + "; " if note else "") + "too few labelled anomalies for its few-shot method: the policy ran zero-shot"
        elif DETECTORS[method].uses_source:
            if self.transfer_inputs is None:
                self.transfer_inputs = self._transfer_inputs()
            source_X, source_y, _space, train_X, test_X, extra = self.transfer_inputs
            det = build_detector(method, seed, feature_space="raw", device=device)
            auroc, auprc, fit_s, score_s = evaluate(det, train_X, test_X, test.y, source=(source_X, source_y))
            fit_s += extra  # the target's share of the shared featurization
        else:
            det = build_detector(method, seed, device=device)
            auroc, auprc, fit_s, score_s = evaluate(det, train.X, test.X, test.y, y=y if DETECTORS[method].requires_labels else None)
        return auroc, auprc, fit_s, score_s, note

    def _bundle(self):
        """The cell's policy bundle, loaded once per process; a missing policy raises with its reason."""
        from anomaly_gym.agents import load_bundle

        if self.cell.policy_error is not None or self.cell.bundle is None:
            raise _Reported(self.cell.policy_error or "no policy bundle was resolved for this target")
        bundles = _state(self.ctx)["bundles"]
        if self.cell.bundle not in bundles:
            bundles[self.cell.bundle] = load_bundle(self.cell.bundle, device=self.ctx.device)
        return bundles[self.cell.bundle]

    def _transfer_inputs(self):
        """Sources and target rows of the transfer baselines, in the shared space."""
        ctx, task, train, test = self.ctx, self.ctx.targets[self.cell.dataset], self.split.train, self.split.test
        excluded = [task]
        if ctx.mode == "train":
            fold = ctx.folds.get(task.name, "all")
            held = [t for t in ctx.all_targets if ctx.folds.get(t.name) == fold] if fold != "all" else []
            excluded = held or [task]
        source_X, source_y, space = _state(ctx)["pool"].for_target(excluded + [task], train.n_features, self.cell.seed)
        if space == "raw":
            return source_X, source_y, space, train.X, test.X, 0.0
        train_Z, test_Z, seconds = target_features(train.X, test.X)
        return source_X, source_y, space, train_Z, test_Z, seconds

    def _log_policy(self, method: str, setting: Setting, det) -> None:
        self.policy_log.append(
            {
                "dataset": self.cell.dataset,
                "method": method,
                "protocol": setting.protocol,
                "labels": setting.labels,
                "seed": self.cell.seed,
                "fold": self.cell.fold,
                "bundle": self.cell.bundle,
                "train_tasks": det.bundle_.metadata.get("train_tasks", []),
                "adaptation": det.adaptation_,
            }
        )


class _Reported(Exception):
    """A failure already worded for the ``error`` column (the policy could not be had for this target)."""


def error_rows(cell: Cell, message: str) -> list[dict]:
    """Error rows for every pair of ``cell`` (its worker died, or the cell could not be run at all)."""
    return [
        dict(r, auroc=float("nan"), auprc=float("nan"), fit_seconds=float("nan"), score_seconds=float("nan"), status="error", error=message)
        for r in cell.key_rows()
    ]
