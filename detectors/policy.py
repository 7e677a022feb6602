"""The trained policy as a detector: a policy bundle behind the detector API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from anomaly_gym.detectors._torch import seeded
from anomaly_gym.detectors.base import BaseDetector, SourceData


class PolicyDetector(BaseDetector):
    """A meta-trained policy bundle used as a detector.

    ``fit(X)`` adapts the bundle zero-shot (the featurizer is fitted on ``X``).  With
    ``fit(X, y)`` (1 = labelled anomaly, 0 = every other row, the semi-supervised
    convention of the label-aware baselines) it adapts few-shot with the negative-transfer
    guard (:func:`anomaly_gym.meta.adapt.adapt`): the labelled anomalies and
    ``normals_per_anomaly`` times as many rows drawn from the 0-rows are the labelled rows
    (those the guard judges by); the other 0-rows stay unlabelled, which a target head
    (the default few-shot method) takes as normal.  Scores are the adapted policy's
    P(anomaly).

    Args:
        model: Path of a policy bundle, or a loaded :class:`~anomaly_gym.agents.PolicyBundle`;
            ``None`` for the bundle shipped with the package.
        adapt_with_labels: Adapt few-shot when ``y`` has labelled anomalies (else zero-shot).
        normals_per_anomaly: Rows labelled normal per labelled anomaly in few-shot adaptation,
            drawn from the 0-rows, which are mostly normal (more normals give the early
            stopping and the guard a steadier held-out AUROC).
        few_shot: Few-shot method, ``"head"`` or ``"fine-tune"`` (see :class:`~anomaly_gym.meta.adapt.AdaptSettings`).
        guard: Keep a target head only if it beats the unadapted policy out of fold.
        policy_prior: Boost the target head from the policy's calibrated logit (off: from the base rate).
        random_state: Seed of the normal-row draw and of adaptation.
        device: Where the policy runs.
    """

    def __init__(
        self,
        model=None,
        adapt_with_labels: bool = True,
        normals_per_anomaly: int = 100,
        few_shot: str = "head",
        guard: bool = True,
        policy_prior: bool = True,
        random_state: int | None = 0,
        device: str = "cpu",
    ) -> None:
        self.model = model
        self.adapt_with_labels = adapt_with_labels
        self.normals_per_anomaly = normals_per_anomaly
        self.few_shot = few_shot
        self.guard = guard
        self.policy_prior = policy_prior
        self.random_state = random_state
        self.device = device

    def _load(self):
        from anomaly_gym.agents.bundle import PolicyBundle, load_bundle, load_default_bundle

        if isinstance(self.model, PolicyBundle):
            return self.model
        if self.model is None:
            return load_default_bundle(device=self.device)
        return load_bundle(Path(self.model), device=self.device)

    def _fit(self, X: np.ndarray, y: np.ndarray | None, source: list[SourceData] | None) -> None:
        from anomaly_gym.meta.adapt import adapt, min_anomalies

        labels = None
        settings = self._settings()
        if self.adapt_with_labels and y is not None and y.sum() >= min_anomalies(settings):
            rng = np.random.default_rng(self.random_state)
            anomalies = np.flatnonzero(y == 1)
            others = np.flatnonzero(y == 0)
            k = min(len(others), self.normals_per_anomaly * len(anomalies))
            labels = np.full(len(X), -1, dtype=np.int8)
            labels[anomalies] = 1
            labels[rng.choice(others, size=k, replace=False)] = 0
        seed = 0 if self.random_state is None else int(self.random_state)
        with seeded(seed):  # SB3 seeds the global generators when it loads or fine-tunes a model
            self.bundle_ = adapt(self._load(), X, labels, seed=seed, settings=settings, device=self.device)
        self.adaptation_ = self.bundle_.metadata["adaptation"]

    def _settings(self):
        from anomaly_gym.agents.head import HeadSettings
        from anomaly_gym.meta.adapt import AdaptSettings

        return AdaptSettings(few_shot=self.few_shot, head=HeadSettings(guard=self.guard, policy_prior=self.policy_prior))

    def _decision_function(self, X: np.ndarray) -> np.ndarray:
        return self.bundle_.score(X, refit=False)


class _HeadAblation(PolicyDetector):
    """A :class:`PolicyDetector` whose few-shot settings are fixed by the class (ablations)."""

    requires_labels = True
    adapt_with_labels = True
    few_shot = "head"

    def __init__(self, model=None, normals_per_anomaly: int = 100, random_state: int | None = 0, device: str = "cpu") -> None:
        self.model = model
        self.normals_per_anomaly = normals_per_anomaly
        self.random_state = random_state
        self.device = device


class UnguardedHeadDetector(_HeadAblation):
    """Ablation of :class:`PolicyDetector` few-shot: the target head always kept (no guard).

    Needs labels (``fit(X, y)``); the benchmark runs it beside ``policy`` to show what the
    guard costs or saves.
    """

    guard = False
    policy_prior = True


class HeadWithoutPolicyDetector(_HeadAblation):
    """Ablation of :class:`PolicyDetector` few-shot: a target head boosted from the base rate.

    The same inputs (the target's columns and the transferable features), the same boosting,
    no guard, but the policy's logit left out: the difference to :class:`UnguardedHeadDetector`
    is what the meta-learned policy adds as a prior.
    """

    guard = False
    policy_prior = False
