"""Scoring featurized rows with a bundle's policy, in batches and one row at a time.

With a :class:`~anomaly_gym.agents.fast_policy.ScoringBundle` (what ``detect`` loads)
both paths are the numpy evaluator and torch is never imported.  With a full
:class:`~anomaly_gym.agents.PolicyBundle`, batches go through the torch network and
single rows through its numpy copy, which avoids ~0.1 ms of torch overhead a call; the copy
is checked against torch when built and used only if they agree to 1e-5.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from anomaly_gym.agents.fast_policy import NumpyPolicy, policy_from_model, sigmoid

logger = logging.getLogger(__name__)

__all__ = ["NumpyPolicy", "PolicyScorer"]


class PolicyScorer:
    """P(anomaly) of featurized rows with a bundle's policy.

    A bundle with a target head (few-shot adaptation) also reads the rows' raw columns.
    """

    def __init__(self, bundle) -> None:
        self.bundle = bundle
        self.head = bundle.head
        policy = getattr(bundle, "policy", None)
        self._row = policy if isinstance(policy, NumpyPolicy) else _checked_copy(bundle)

    def check_width(self, n_columns: int) -> None:
        """A target head reads the columns it was adapted on: refuse other widths before scoring."""
        if self.head is not None:
            self.head.check_width(n_columns)

    def batch(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        return self.bundle.anomaly_proba(features, X)

    def row(self, features: np.ndarray, x: np.ndarray | None = None) -> float:
        if self._row is None:
            from anomaly_gym.agents.factory import policy_margin

            margin = float(policy_margin(self.bundle.model, features[None, :])[0])
        else:
            margin = self._row(features)
        if self.head is not None:
            margin = float(self.head.margin(np.asarray(x)[None, :], features[None, :], np.array([margin]))[0])
        return sigmoid(margin)

    def portable_row(self) -> NumpyPolicy | None:
        """What :meth:`row` computes, as a picklable object that needs neither torch nor the
        bundle; None when rows need torch or a target head."""
        return self._row if self.head is None else None


def _checked_copy(bundle) -> NumpyPolicy | None:
    """The numpy copy of a torch policy, when it agrees with torch on random feature rows."""
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.envs.features import Featurizer

    row = policy_from_model(bundle.model)
    if row is None:
        return None
    lo, hi = (np.asarray(b, dtype=np.float64) for b in Featurizer(bundle.featurizer_config).feature_bounds())
    probe = np.random.default_rng(0).uniform(lo, hi, size=(16, len(lo))).astype(np.float32)
    ref = policy_margin(bundle.model, probe)
    got = np.array([row(x) for x in probe])
    if not np.allclose(got, ref, atol=1e-5, rtol=0):
        logger.info("numpy policy head disagrees with torch (max %.2g); using torch for single rows", np.abs(got - ref).max())
        return None
    return row


def fitted_scorer(bundle, X: np.ndarray, *, featurizer=None):
    """A function giving P(anomaly) of rows with ``X``'s columns, its detectors fitted on ``X``.

    The detectors are fitted on ``X`` itself (a seeded subsample of at most ``max_fit_rows``
    rows, as the featurizer does), unless a fitted ``featurizer`` is given (a bundle's stored
    one: rows are then judged relative to the rows it was fitted on).  The function featurizes
    rows with the compiled featurizer and scores them, so any part of ``X`` can be scored when
    it is needed: :func:`score_rows` scores all of them, ``detect`` writes each part as soon as
    it is scored.
    """
    from anomaly_gym.envs.features import Featurizer
    from anomaly_gym.envs.stream import FastFeaturizer

    scorer = PolicyScorer(bundle)
    scorer.check_width(X.shape[1])
    if featurizer is None:
        t = time.perf_counter()
        featurizer = Featurizer(bundle.featurizer_config).fit(X)
        logger.info("detectors fitted on %d rows in %.2fs", min(len(X), bundle.featurizer_config.max_fit_rows), time.perf_counter() - t)
    elif featurizer.n_columns_ != X.shape[1]:
        raise ValueError(f"the fitted featurizer was fitted on {featurizer.n_columns_} columns but X has {X.shape[1]}")
    fast = FastFeaturizer(featurizer)
    step = bundle.featurizer_config.chunk_size

    def score(part: np.ndarray) -> np.ndarray:
        out = np.empty(len(part), dtype=np.float64)
        for start in range(0, len(part), step):
            rows = part[start : start + step]
            out[start : start + step] = scorer.batch(fast.transform(rows), rows)
        return out

    return score


def score_rows(bundle, X: np.ndarray, *, featurizer=None, progress=None) -> np.ndarray:
    """P(anomaly) of every row of ``X`` (float32, the bundle's input columns), in batch.

    Detectors fitted as :func:`fitted_scorer` does; rows scored in chunks of the config's
    ``chunk_size``.

    Args:
        bundle: A :class:`~anomaly_gym.agents.fast_policy.ScoringBundle` or a
            :class:`~anomaly_gym.agents.PolicyBundle`.
        X: The rows, 2-D.
        featurizer: A fitted :class:`~anomaly_gym.envs.features.Featurizer`, or None to fit one on ``X``.
        progress: Wraps the iterable of chunk starts (``progress(chunks, total)``), e.g. a progress bar.
    """
    score = fitted_scorer(bundle, X, featurizer=featurizer)
    t = time.perf_counter()
    scores = np.empty(len(X), dtype=np.float64)
    step = bundle.featurizer_config.chunk_size
    chunks = range(0, len(X), step)
    for start in chunks if progress is None else progress(chunks, len(X) // step + 1):
        scores[start : start + step] = score(X[start : start + step])
    logger.info("featurized and scored %d rows in %.2fs", len(X), time.perf_counter() - t)
    return scores
