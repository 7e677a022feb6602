"""Every detector of the bank scores rank-deficient (collinear) data with finite, informative
scores, in the featurizer and in the stream fast path alike."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from anomaly_gym.envs.features import RICH_DETECTORS, Featurizer, _RankPCA
from anomaly_gym.envs.stream import FastFeaturizer, _Fallback
from sklearn.metrics import roc_auc_score


def _collinear(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """3 latent columns spread over 8: sums, scaled copies, a constant; the 10 last rows are
    outliers at 5 to 8 standard deviations in random latent directions (they keep the
    collinear structure)."""
    rng = np.random.default_rng(seed)
    latent = rng.normal(size=(n, 3))
    directions = rng.normal(size=(10, 3))
    latent[-10:] = directions / np.linalg.norm(directions, axis=1, keepdims=True) * rng.uniform(5, 8, size=(10, 1))
    a, b, c = latent.T
    X = np.column_stack([a, b, c, a + b, 2 * a - c, 3 * b, np.full(n, 7.0), a + b + c])
    return X, np.r_[np.zeros(n - 10), np.ones(10)]


def test_pyods_pca_alone_fails_on_collinear_data():
    """The failure the bank's PCA works around (if PyOD fixes it, this test says so)."""
    from pyod.models.pca import PCA

    X, _ = _collinear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = PCA(random_state=0).fit(X).decision_function(X)
    assert not np.isfinite(scores).all()


def test_rank_pca_keeps_only_the_components_the_data_span():
    X, y = _collinear()
    det = _RankPCA(random_state=0).fit(X)
    scores = det.decision_function(X)
    assert det.rank_ == 3
    assert np.isfinite(scores).all()
    assert roc_auc_score(y, scores) > 0.9


def test_rank_pca_leaves_full_rank_data_to_pyod():
    from pyod.models.pca import PCA

    X = np.random.default_rng(1).normal(size=(200, 5))
    ours = _RankPCA(random_state=0).fit(X)
    np.testing.assert_array_equal(ours.decision_function(X), PCA(random_state=0).fit(X).decision_function(X))
    assert ours.rank_ == 5


def test_rank_pca_refuses_data_without_variance():
    with pytest.raises(ValueError, match="no variance"):
        _RankPCA().fit(np.ones((50, 3)))


@pytest.fixture(scope="module")
def fitted_rich():
    X, y = _collinear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        feat = Featurizer(detectors=RICH_DETECTORS + ("ocsvm",)).fit(X)
    return feat, X, y, [str(w.message) for w in caught]


def test_every_detector_scores_collinear_data_finitely_and_informatively(fitted_rich):
    feat, X, y, caught = fitted_rich
    assert not [m for m in caught if "failed to fit" in m], caught
    assert all(det is not None for det in feat.detectors_)
    raw = feat.raw_scores(X)
    assert np.isfinite(raw).all()
    for spec, scores in zip(feat.config.detectors, raw.T):
        assert roc_auc_score(y, scores) > 0.8, spec


def test_the_stream_fast_path_gives_the_batch_scores_on_collinear_data(fitted_rich):
    feat, X, _, _ = fitted_rich
    fast = FastFeaturizer(feat)
    pca = feat.config.detectors.index("pca")
    assert not isinstance(fast._scorers[pca], _Fallback)
    np.testing.assert_allclose(fast.raw_scores(X), feat.raw_scores(X), rtol=1e-9, atol=1e-9)
    # PCA's features (percentile and z-score) are the batch path's; other detectors' may move
    # by half a rank where a last-bit rounding difference breaks a tie (see envs/stream.py)
    columns = [2 * pca, 2 * pca + 1]
    np.testing.assert_allclose(fast.transform(X)[:, columns], feat.transform(X)[:, columns], rtol=0, atol=1e-6)
    for i in (0, 150, len(X) - 1):
        np.testing.assert_allclose(fast.transform_row(X[i])[columns], feat.transform(X[i : i + 1])[0, columns], rtol=0, atol=1e-6)


def test_only_genuinely_broken_input_warns():
    """Constant rows: PCA has nothing to work with and says so; the features stay finite."""
    X = np.ones((40, 3))
    with pytest.warns(RuntimeWarning, match="pca failed to fit"):
        feat = Featurizer(detectors=("pca", "ecod")).fit(X)
    assert np.isfinite(feat.transform(X)).all()
