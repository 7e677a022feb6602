"""Active-discovery baselines: the shared interface, AAD's prior and its use of feedback."""

from __future__ import annotations

import numpy as np
import pytest
from anomaly_gym.detectors.active import (
    AADStrategy,
    ActiveLearningStrategy,
    DiscoveryData,
    RandomStrategy,
    RankingStrategy,
    forest_leaf_matrix,
    iforest_ranking,
    run_discovery,
)
from scipy.stats import spearmanr


@pytest.fixture(scope="module")
def decoy():
    """Normal Gaussian rows, far 'decoy' outliers labelled normal, and milder true anomalies."""
    rng = np.random.default_rng(0)
    n = 600
    X = rng.normal(size=(n, 4))
    y = np.zeros(n, dtype=np.int8)
    X[:30, 0] += rng.choice([-6.0, 6.0], 30)
    X[30:60, 1] += 3.5
    y[30:60] = 1
    return DiscoveryData(X, np.abs(X), np.abs(X).max(axis=1)), y


def _found(strategy, decoy, budget=40, seeds=(0, 1)):
    data, y = decoy
    return sum(int(run_discovery(strategy, data, y, budget, s).sum()) for s in seeds)


@pytest.mark.parametrize("strategy", [RandomStrategy(), RankingStrategy(), AADStrategy(n_trees=30), ActiveLearningStrategy()], ids=lambda s: s.name)
def test_strategies_show_distinct_rows_and_are_seeded(strategy, decoy):
    data, y = decoy
    strategy.start(data, seed=3)
    shown = []
    for _ in range(25):
        i = strategy.select()
        strategy.observe(i, int(y[i]))
        shown.append(i)
    assert len(set(shown)) == 25 and shown == strategy.indices_
    assert np.array_equal(run_discovery(strategy, data, y, 25, 3), y[shown])
    with pytest.raises(ValueError, match="already shown"):
        strategy.observe(shown[0], 0)


def test_aad_starts_from_the_isolation_forest_ranking(decoy):
    data, _ = decoy
    from sklearn.ensemble import IsolationForest

    Z = forest_leaf_matrix(data.X, n_trees=50, seed=1)
    forest = IsolationForest(n_estimators=50, max_samples=256, random_state=1).fit(data.X)
    rho = spearmanr(Z @ np.ones(Z.shape[1]), -forest.score_samples(data.X)).statistic
    assert rho > 0.999


def test_feedback_beats_the_unsupervised_ranking_on_decoys(decoy):
    iforest = _found(RankingStrategy(iforest_ranking, "iforest"), decoy)
    aad = _found(AADStrategy(n_trees=30), decoy)
    learner = _found(ActiveLearningStrategy(), decoy)
    random = _found(RandomStrategy(), decoy)
    assert aad > iforest > random
    assert learner > iforest


def test_data_shapes_are_checked():
    with pytest.raises(ValueError, match="same 3 rows"):
        DiscoveryData(np.zeros((3, 2)), np.zeros((3, 4)), np.zeros(2))
