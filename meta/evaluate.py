"""Zero-shot validation: AUROC and AUPRC of a policy on tasks it never trained on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from anomaly_gym.envs.features import FeaturizerConfig, featurize_split
from anomaly_gym.envs.tasks import Task, benchmark_split
from sklearn.metrics import average_precision_score, roc_auc_score


@dataclass(frozen=True)
class ValidationItem:
    """One validation task under one seed of the benchmark split, already featurized."""

    name: str
    seed: int
    features: np.ndarray
    """Features of the test part, with the featurizer fitted on the (unlabelled) training part."""
    y: np.ndarray
    """Labels of the test part."""
    train_X: np.ndarray
    test_X: np.ndarray


def prepare_validation(tasks: Sequence[Task], config: FeaturizerConfig, seeds: Sequence[int] = (0,), *, max_rows: int = 10_000) -> list[ValidationItem]:
    """Split each task by the benchmark protocol and featurize its test part (cached)."""
    items = []
    for task in tasks:
        for seed in seeds:
            split = benchmark_split(task, seed, max_rows=max_rows)
            feats = featurize_split(split.train, split.test, config)
            items.append(ValidationItem(task.name, seed, feats, np.asarray(split.test.y), split.train.X, split.test.X))
    return items


def score_metrics(y: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """(AUROC, AUPRC) of ``scores`` against labels ``y``."""
    return float(roc_auc_score(y, scores)), float(average_precision_score(y, scores))


def evaluate_scores(items: Sequence[ValidationItem], score_fn: Callable[[ValidationItem], np.ndarray]) -> dict[str, dict[str, float]]:
    """Per task name: AUROC and AUPRC averaged over seeds, for scores from ``score_fn(item)``."""
    per: dict[str, list[tuple[float, float]]] = {}
    for item in items:
        per.setdefault(item.name, []).append(score_metrics(item.y, score_fn(item)))
    return {name: {"auroc": float(np.mean([m[0] for m in ms])), "auprc": float(np.mean([m[1] for m in ms]))} for name, ms in per.items()}


def evaluate_policy(model, items: Sequence[ValidationItem]) -> dict[str, dict[str, float]]:
    """Zero-shot metrics of an SB3 policy: its P(anomaly) on each item's test rows."""
    from anomaly_gym.agents.factory import anomaly_proba

    return evaluate_scores(items, lambda item: anomaly_proba(model, item.features))


def evaluate_iforest(items: Sequence[ValidationItem]) -> dict[str, dict[str, float]]:
    """IForest fitted on each item's training part, the reference to beat."""
    from pyod.models.iforest import IForest

    def score(item: ValidationItem) -> np.ndarray:
        return IForest(random_state=item.seed).fit(item.train_X).decision_function(item.test_X)

    return evaluate_scores(items, score)


def evaluate_feature_columns(items: Sequence[ValidationItem], config: FeaturizerConfig) -> dict[str, dict[str, dict[str, float]]]:
    """Each percentile column of the bank used directly as a score.

    Keys are ``"bank/{detector}"``, ``"bank/mean_rank"`` (the consensus mean percentile,
    i.e. the mean-rank ensemble) and ``"bank/mean_z"`` (the consensus mean robust z-score,
    the ensemble a monotone linear policy starts from) and, with the agreeing features,
    ``"bank/agreeing_z"`` (the mean z of the agreeing half), each mapping task name -> metrics.
    """
    names = config.feature_names()
    ensembles = {"consensus/pct_mean": "bank/mean_rank", "consensus/z_mean": "bank/mean_z", "agreeing/z_mean": "bank/agreeing_z"}
    out = {}
    for col, name in enumerate(names):
        if name.endswith("/pct") or name in ensembles:
            key = ensembles.get(name) or "bank/" + name.removesuffix("/pct")
            out[key] = evaluate_scores(items, lambda item, c=col: item.features[:, c])
    return out


def mean_metric(metrics: dict[str, dict[str, float]], key: str = "auroc") -> float:
    return float(np.mean([m[key] for m in metrics.values()])) if metrics else float("nan")
