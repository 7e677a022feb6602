"""FastFeaturizer gives Featurizer.transform's features; SlidingWindowFeaturizer's schedule."""

import dataclasses

import numpy as np
import pytest
from anomaly_gym.envs.features import PRESETS, Featurizer, FeaturizerConfig
from anomaly_gym.envs.stream import SMALL_BATCH, FastFeaturizer, SlidingWindowFeaturizer, _Fallback

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")


def _data(kind: str) -> np.ndarray:
    rng = np.random.default_rng(0)
    if kind == "continuous":  # two clusters and scattered outliers
        return np.vstack([rng.normal(size=(250, 4)), rng.normal(loc=5.0, size=(90, 4)), rng.normal(scale=8.0, size=(20, 4))])
    # few distinct values: many exactly tied neighbour distances and duplicate rows
    return rng.integers(0, 3, size=(360, 4)).astype(np.float64)


@pytest.mark.parametrize("preset, kind", [("default", "continuous"), ("default", "discrete"), ("rich", "continuous")])
def test_fast_featurizer_gives_the_featurizers_features(preset, kind):
    X = _data(kind)
    feat = Featurizer(dataclasses.replace(PRESETS[preset], max_fit_rows=300)).fit(X[:300])
    fast = FastFeaturizer(feat)
    # every detector of the bank has a fast path (or failed to fit and is neutral)
    assert not any(isinstance(s, _Fallback) for s in fast._scorers)
    assert len(X) > SMALL_BATCH  # the vectorised path: brute-force neighbours, tree apply
    expected = feat.transform(X)
    np.testing.assert_allclose(fast.transform(X), expected, rtol=0, atol=1e-6)
    # the single-row path, on rows seen in fitting and new ones (against the featurizer on
    # that one row: a matrix product of one row may round differently from a batch's)
    for i in range(0, len(X), 9):
        np.testing.assert_allclose(fast.transform_row(X[i]), feat.transform(X[i : i + 1])[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.raw_scores(X[:5]), feat.raw_scores(X[:5]), rtol=1e-12, atol=1e-12)


def test_wide_rows_searched_by_brute_force_agree_to_rounding():
    """Above 15 columns scikit-learn searches by brute force (its own distance expansion): the
    fast path agrees to rounding, and a fitting row can move one step in percentile rank."""
    X = np.random.default_rng(0).normal(size=(600, 20))  # 300 fitting rows: one rank step is 1/300
    feat = Featurizer(FeaturizerConfig(detectors=("knn", "lof"), descriptors=False, max_fit_rows=300)).fit(X)
    assert feat.detectors_[0].neigh_._fit_method == "brute"
    fast = FastFeaturizer(feat)
    np.testing.assert_allclose(fast.raw_scores(X), feat.raw_scores(X), rtol=1e-12, atol=0)
    np.testing.assert_allclose(fast.transform(X), feat.transform(X), rtol=0, atol=1.0 / 300 + 1e-6)


def test_fast_featurizer_checks_rows_like_the_featurizer():
    feat = Featurizer(FeaturizerConfig(detectors=("ecod", "pca"))).fit(_data("continuous"))
    fast = FastFeaturizer(feat)
    with pytest.raises(ValueError, match="columns"):
        fast.transform_row(np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        fast.transform_row(np.array([0.0, np.nan, 0.0, 0.0]))


def test_sliding_window_scores_each_row_before_it_joins_and_refits_on_schedule():
    config = FeaturizerConfig(detectors=("ecod", "hbos", "knn"))
    X = np.random.default_rng(1).normal(size=(200, 3))
    sw = SlidingWindowFeaturizer(config, 3, warmup=20, window=50, refit_every=30)
    out = [sw.update(x) for x in X]
    assert all(o is None for o in out[:20]) and all(o is not None for o in out[20:])
    # fitted after the warm-up, then after every 30 further rows
    assert sw.n_fits == 1 + (200 - 20) // 30
    # memory is bounded: only the last `window` rows are kept
    np.testing.assert_array_equal(sw.window_array(), X[-50:])
    # row 20 was featurized with the fit on rows 0..19, without itself
    first = Featurizer(config).fit(X[:20]).transform(X[20:21])[0]
    np.testing.assert_allclose(out[20], first, atol=1e-6)
    # rows 50..79 with the refit on the window of rows 0..49
    refit = Featurizer(config).fit(X[:50]).transform(X[50:80])
    np.testing.assert_allclose(np.array(out[50:80]), refit, atol=1e-6)


def test_sliding_window_refuses_bad_settings_and_rows():
    config = FeaturizerConfig(detectors=("ecod",))
    with pytest.raises(ValueError, match="warmup"):
        SlidingWindowFeaturizer(config, 2, warmup=5)
    with pytest.raises(ValueError, match="window"):
        SlidingWindowFeaturizer(config, 2, warmup=50, window=20)
    sw = SlidingWindowFeaturizer(config, 2, warmup=10)
    with pytest.raises(ValueError, match="NaN"):
        sw.add(np.array([1.0, np.inf]))
    with pytest.raises(ValueError, match="expected 2"):
        sw.add(np.zeros(3))


def test_values_near_float64s_limits_scale_to_finite_features():
    # -1e308 and 1e308 in one fit: their difference overflows; the scaling must not give NaN
    X = np.random.default_rng(5).normal(size=(60, 2))
    X[40, 0], X[45, 0] = 1e308, -1e308
    feat = Featurizer(PRESETS["default"]).fit(X)
    assert np.isfinite(feat.span_).all() and np.isfinite(feat._scale(X)).all()
    fast = FastFeaturizer(feat)  # raised StopIteration when the scaled columns held NaN
    rows = np.vstack([X, [[1e308, 0.0], [-1e308, 0.0], [5.0, -1e308]]])
    got = fast.transform(rows)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, feat.transform(rows), rtol=0, atol=1e-6)
    np.testing.assert_allclose(fast.transform_row(rows[-1]), feat.transform(rows[-1:])[0], rtol=0, atol=1e-6)
    # ordinary rows are scaled exactly as before: (x - lo) / span
    normal = Featurizer(PRESETS["default"]).fit(X[:30])
    np.testing.assert_array_equal(normal._scale(X[:30]), (X[:30] - X[:30].min(0)) / (X[:30].max(0) - X[:30].min(0)))


@pytest.mark.parametrize(
    "preset, kind, agreeing", [("default", "continuous", False), ("default", "discrete", False), ("rich", "continuous", False), ("rich", "continuous", True)]
)
def test_single_row_path_is_bit_identical_to_the_batch_code(preset, kind, agreeing):
    """transform_row's own code (row scorers, one-row post-processing) against the batch
    code on the same fast detector scores: fitting rows and far rows (outside HBOS's bins,
    beyond the scaling clip, with many candidate neighbours)."""
    X = _data(kind)
    feat = Featurizer(dataclasses.replace(PRESETS[preset], max_fit_rows=300, agreeing=agreeing)).fit(X[:300])
    fast = FastFeaturizer(feat)
    rows = np.vstack([X[::6], X[:20] * 3.0, X[:10] + 100.0, [X[0] + 1e9, np.full(4, -1e12)]])
    for x in rows:
        np.testing.assert_array_equal(fast.transform_row(x), fast.transform_row_generic(x))
        # each row scorer gives what its batch call gives for that one row
        z = fast._proxy._scale(x[None])
        for scorer in fast._scorers:
            assert scorer.row(z[0], {}) == float(np.asarray(scorer(z, {})).reshape(-1)[0])


@pytest.mark.parametrize("width", [4, 12, 33])
def test_row_scorers_equal_the_batch_scorers_at_any_width(width):
    """One row at a time and a large batch (scikit-learn's neighbour search) give the same
    scores bit for bit: the squared distances are summed column after column in both."""
    rng = np.random.default_rng(width)
    feat = Featurizer(FeaturizerConfig(max_fit_rows=300)).fit(rng.normal(size=(400, width)))
    fast = FastFeaturizer(feat)
    Z = fast._proxy._scale(rng.normal(size=(200, width)))
    for spec, scorer in zip(feat.config.detectors, fast._scorers):
        batch = np.asarray(scorer(Z, {}), dtype=np.float64).reshape(-1)
        np.testing.assert_array_equal([scorer.row(z, {}) for z in Z], batch, err_msg=spec)
