"""A target head: a boosted correction of a policy's logit, fitted on one target's few labels.

The meta-policy sees only transferable features (detector scores made dataset-relative),
which is what lets it act on any dataset, and also what limits it once a target's labels
are known: what separates that target's anomalies may lie in its own columns.  A target
head keeps the policy as the prior and learns only the difference:

    margin(x) = a * policy_margin(features(x)) + b + w * trees([x, features(x)])

``a`` and ``b`` calibrate the policy's logit to the target's labels (Platt scaling), and
the trees are gradient-boosted (XGBoost) from that calibrated logit as their base margin,
on the target's raw columns next to the transferable features.  With few labels, a short,
shrunk boosting run moves the prior only where the labels insist, and each round averages
several trees grown on draws of rows and columns (bagging inside boosting), so that the
correction depends less on which few anomalies happened to be labelled.  P(anomaly) of the
adapted policy is ``sigmoid(margin)``.  :meth:`TargetHead.shrunk` blends a fitted head with
the unadapted policy's own logit, ``(1 - w) * policy_margin + w * head_margin``, by the
evidence the labels give (:mod:`anomaly_gym.meta.adapt`).

A head belongs to one target: it expects that target's columns, in the same order and
units as the rows it was fitted on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit


@dataclass(frozen=True)
class HeadSettings:
    """How a target head is fitted."""

    n_estimators: int = 50
    """Boosting rounds."""
    learning_rate: float = 0.05
    """Shrinkage of each round: small, so that a few labels move the prior only a little."""
    max_depth: int = 3
    """Depth of each tree."""
    num_parallel_tree: int = 5
    """Trees grown per round, each on its own draw of rows and columns, and averaged (bagging
    inside boosting): with a handful of labelled anomalies, one tree per round follows the
    draw of labels; several average that variance away.  1: plain gradient boosting."""
    subsample: float = 0.7
    """Share of the rows each tree sees (drawn per tree, without replacement)."""
    colsample_bynode: float = 0.7
    """Share of the columns each split may choose from."""
    min_child_weight: float = 0.1
    """Least summed Hessian a leaf may hold.  Boosting starts from the prior calibrated to the
    labels, so a row weighs ``p (1 - p)`` with ``p`` near the base rate, and all rows together
    weigh about as much as the labelled anomalies do in count.  XGBoost's usual 1 would then ask
    each leaf for ``1 / n_anomalies`` of that total: with one labelled anomaly no tree could
    split, with two only in halves.  0.1 lets a leaf hold a tenth of it."""
    unlabelled_as_normal: bool = True
    """Use the unlabelled rows as normal rows (anomalies are rare, so they are mostly normal: the
    semi-supervised convention of XGBOD and DevNet).  Off: fit on the labelled rows only."""
    max_unlabelled_rows: int | None = 20_000
    """With ``unlabelled_as_normal``: at most this many unlabelled rows (a seeded draw) join the
    labelled ones, which keeps the fit quick on large targets (``None``: all of them)."""
    folds: int = 5
    """Cross-validation folds of the negative-transfer guard (at most one per labelled anomaly)."""
    n_jobs: int = 1
    """XGBoost threads."""
    guard: bool = True
    """Shrink the head toward the unadapted policy by the evidence its out-of-fold predictions
    give (the negative-transfer guard).  Off: always keep it whole (no cross-validation)."""
    evidence_low: float = 1.0
    """Guard: labels ranked (by the head out of fold, or by the policy) this many standard errors
    above chance, or less, keep none of the head."""
    evidence_high: float = 2.0
    """Guard: this many standard errors above chance, or more, keep all of it."""
    disagreement_se: float = 3.0
    """Guard: a head that ranks the labels this many standard errors worse than the policy, or
    more, is not kept (partly kept in between)."""
    policy_prior: bool = True
    """Boost from the policy's calibrated logit.  Off (an ablation): boost from the base rate,
    so the head ignores the policy; the transferable features stay among its inputs."""

    def __post_init__(self) -> None:
        if not self.evidence_high > self.evidence_low:
            raise ValueError(f"evidence_high ({self.evidence_high}) must be above evidence_low ({self.evidence_low})")
        if self.num_parallel_tree < 1:
            raise ValueError(f"num_parallel_tree must be at least 1, got {self.num_parallel_tree}")
        for name in ("subsample", "colsample_bynode"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        if not self.min_child_weight >= 0:
            raise ValueError(f"min_child_weight must be non-negative, got {self.min_child_weight}")
        if not self.disagreement_se > 0:
            raise ValueError(f"disagreement_se must be positive, got {self.disagreement_se}")


@dataclass
class TargetHead:
    """A fitted target head (see the module docstring).

    Attributes:
        scale: ``a``, the calibration slope of the policy's logit.
        offset: ``b``, its intercept.
        n_columns: Width of the target's rows.
        booster: The boosted trees (an ``xgboost.Booster``) on ``[x, features(x)]``.
        settings: The settings it was fitted with (a record).
        weight: ``w``, the weight of the trees (1 for a fitted head, less once shrunk).
    """

    scale: float
    offset: float
    n_columns: int
    booster: Any
    settings: dict[str, Any] = field(default_factory=dict)
    weight: float = 1.0

    def describe(self) -> dict[str, Any]:
        """A JSON-ready record of the head: its fit settings, calibration and weight."""
        return {**self.settings, "scale": self.scale, "offset": self.offset, "weight": self.weight}

    def shrunk(self, w: float) -> TargetHead:
        """This head blended with the unadapted logit: ``(1 - w) * policy_margin + w * self.margin``.

        ``w = 1`` is this head, ``w = 0`` the unadapted policy (its logit exactly).
        """
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"a shrinkage weight must be in [0, 1], got {w}")
        return TargetHead(1.0 - w + w * self.scale, w * self.offset, self.n_columns, self.booster, self.settings, w * self.weight)

    def check_width(self, n_columns: int) -> None:
        if n_columns != self.n_columns:
            raise ValueError(
                f"this policy was adapted to a target with {self.n_columns} columns (its target head reads them), "
                f"but the data has {n_columns}; give it the target's columns in the order it was adapted on, "
                "or use the unadapted bundle"
            )

    def margin(self, X: np.ndarray, features: np.ndarray, policy_margin: np.ndarray) -> np.ndarray:
        """The adapted logit of rows ``X`` (raw columns), their ``features`` and the policy's logit."""
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (rows, columns), got shape {X.shape}")
        self.check_width(X.shape[1])
        base = self.scale * np.asarray(policy_margin, dtype=np.float64) + self.offset
        inputs = np.hstack([X, np.asarray(features, dtype=np.float32)])
        if self.weight == 0.0:
            return base
        trees = self.booster.inplace_predict(inputs, predict_type="margin", base_margin=np.zeros(len(X)))
        return base + self.weight * np.asarray(trees, dtype=np.float64)

    def proba(self, X: np.ndarray, features: np.ndarray, policy_margin: np.ndarray) -> np.ndarray:
        return expit(self.margin(X, features, policy_margin))

    # -- persistence (JSON header + XGBoost's own binary format; no pickle) -------------
    def to_files(self) -> tuple[str, bytes]:
        header = {"scale": self.scale, "offset": self.offset, "n_columns": self.n_columns, "settings": self.settings, "weight": self.weight}
        return json.dumps(header, indent=2), bytes(self.booster.save_raw("ubj"))

    @classmethod
    def from_files(cls, header: str, booster: bytes) -> TargetHead:
        import xgboost as xgb

        meta = json.loads(header)
        model = xgb.Booster()
        model.load_model(bytearray(booster))
        model.set_param({"nthread": int(meta.get("settings", {}).get("n_jobs", 1))})
        return cls(float(meta["scale"]), float(meta["offset"]), int(meta["n_columns"]), model, meta.get("settings", {}), float(meta.get("weight", 1.0)))


def calibrate(policy_margin: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` of the logistic regression of ``y`` on the policy's logit."""
    from sklearn.linear_model import LogisticRegression

    m = np.asarray(policy_margin, dtype=np.float64)[:, None]
    if np.ptp(m) == 0:  # a constant logit carries no ranking: the base rate only
        rate = float(np.clip(np.mean(y), 1e-6, 1 - 1e-6))
        return 0.0, float(np.log(rate / (1 - rate)))
    fit = LogisticRegression(C=1.0).fit(m, y)
    return float(fit.coef_[0, 0]), float(fit.intercept_[0])


def fit_head(X: np.ndarray, features: np.ndarray, policy_margin: np.ndarray, y: np.ndarray, settings: HeadSettings, seed: int = 0) -> TargetHead:
    """Fit a target head on rows ``X`` with their ``features``, the policy's logit and labels ``y`` (0/1)."""
    import xgboost as xgb

    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int8)
    a, b = calibrate(policy_margin if settings.policy_prior else np.zeros(len(y)), y)
    base = a * np.asarray(policy_margin, dtype=np.float64) + b
    model = xgb.XGBClassifier(
        n_estimators=settings.n_estimators,
        learning_rate=settings.learning_rate,
        max_depth=settings.max_depth,
        num_parallel_tree=settings.num_parallel_tree,
        subsample=settings.subsample,
        colsample_bynode=settings.colsample_bynode,
        min_child_weight=settings.min_child_weight,
        n_jobs=settings.n_jobs,
        random_state=int(seed),
        verbosity=0,
    )
    model.fit(np.hstack([X, np.asarray(features, dtype=np.float32)]), y, base_margin=base)
    record = {
        "n_estimators": settings.n_estimators,
        "learning_rate": settings.learning_rate,
        "max_depth": settings.max_depth,
        "num_parallel_tree": settings.num_parallel_tree,
        "subsample": settings.subsample,
        "colsample_bynode": settings.colsample_bynode,
        "min_child_weight": settings.min_child_weight,
        "n_jobs": settings.n_jobs,
        "policy_prior": settings.policy_prior,
    }
    return TargetHead(a, b, X.shape[1], model.get_booster(), record)


class HeadedScoring:
    """``margin`` and ``anomaly_proba`` of a bundle: its policy's logit, moved by its target head when it has one.

    A subclass has a ``head`` attribute (a :class:`TargetHead` or None) and implements
    :meth:`policy_margin`.
    """

    def policy_margin(self, features: np.ndarray) -> np.ndarray:
        """The unadapted policy's logit of "anomaly" for featurized rows."""
        raise NotImplementedError

    def margin(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """The adapted policy's logit of "anomaly" for featurized rows (``X``: their raw columns, needed with a head)."""
        margin = self.policy_margin(features)
        if self.head is None:
            return margin
        if X is None:
            raise ValueError("this bundle has a target head, which reads the target's raw columns: pass X as well as the features")
        return self.head.margin(X, features, margin)

    def anomaly_proba(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        """P(anomaly) for rows already featurized with this bundle's featurizer config.

        ``X`` (the same rows' raw columns) is needed when the bundle has a target head.
        """
        return expit(self.margin(features, X))
