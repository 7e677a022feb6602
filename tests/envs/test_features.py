"""The transferable featurizer: score direction, bounds, width, pickling, chunking, cache."""

from __future__ import annotations

import dataclasses
import pickle
import warnings

import numpy as np
import pytest
from anomaly_gym.envs import features
from anomaly_gym.envs.features import (
    DEFAULT_DETECTORS,
    Featurizer,
    FeaturizerConfig,
    featurize_task,
    parse_detector_spec,
)
from anomaly_gym.envs.sources import make_synthetic_task
from sklearn.metrics import roc_auc_score

TINY = ("iforest", "ecod", "hbos")


def _gaussian(n: int = 200, d: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


@pytest.fixture(scope="module")
def planted() -> tuple[np.ndarray, np.ndarray]:
    """300 standard-normal rows and 6 rows at distance 8 in random directions (label 1)."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(6, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    X = np.vstack([rng.normal(size=(300, 4)), 8.0 * directions])
    return X, np.r_[np.zeros(300), np.ones(6)]


@pytest.fixture(scope="module")
def fitted(planted) -> Featurizer:
    """The default bank fitted on the planted data."""
    return Featurizer().fit(planted[0])


def _column(feat: Featurizer, F: np.ndarray, name: str) -> np.ndarray:
    return F[:, feat.feature_names.index(name)]


# --------------------------------------------------------------------------- meaning


def test_planted_outliers_get_high_percentiles_from_every_detector(fitted, planted):
    X, y = planted
    F = fitted.transform(X)

    for spec in DEFAULT_DETECTORS:
        pct = _column(fitted, F, f"{spec}/pct")
        assert pct[y == 1].min() > 0.95, spec
        assert 0.4 < np.median(pct[y == 0]) < 0.6, spec
        assert roc_auc_score(y, pct) > 0.9, spec
        assert _column(fitted, F, f"{spec}/z")[y == 1].min() > 1.0, spec
    consensus = _column(fitted, F, "consensus/pct_mean")
    assert consensus[y == 1].min() > 0.95
    assert roc_auc_score(y, consensus) > 0.99
    assert roc_auc_score(y, _column(fitted, F, "consensus/z_mean")) > 0.99


def test_dataset_descriptors(fitted, planted):
    F = fitted.transform(planted[0])
    descriptors = F[:, -4:]

    assert (descriptors == descriptors[0]).all()
    assert descriptors[0, 0] == pytest.approx(np.log10(306) / 3)
    assert descriptors[0, 1] == pytest.approx(np.log10(4) / 2)
    assert descriptors[0, 2] == 0.0
    assert 0.3 < descriptors[0, 3] <= 1.0


def test_discrete_share_counts_columns_with_few_values():
    X = _gaussian(d=4)
    X[:, 0] = np.arange(200) % 3
    X[:, 1] = np.arange(200) % 2

    feat = Featurizer(detectors=TINY).fit(X)

    assert _column(feat, feat.transform(X[:5]), "dataset/discrete_share")[0] == pytest.approx(0.5)


# --------------------------------------------------------------------------- shape and bounds


def test_feature_names_and_bounds_match_the_configuration():
    feat = Featurizer(detectors=("iforest", "knn:n_neighbors=3"))
    low, high = feat.feature_bounds()

    assert feat.feature_names[:4] == ["iforest/pct", "iforest/z", "knn:n_neighbors=3/pct", "knn:n_neighbors=3/z"]
    assert feat.feature_names[4:] == [
        "consensus/pct_mean", "consensus/pct_max", "consensus/pct_min", "consensus/pct_std", "consensus/z_mean",
        "dataset/log_rows", "dataset/log_cols", "dataset/discrete_share", "dataset/agreement",
    ]  # fmt: skip
    assert feat.n_features == 13 == len(low) == len(high)
    assert low.dtype == high.dtype == np.float32
    assert np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()
    assert high[1] == pytest.approx(np.log1p(features.Z_CLIP))


@pytest.mark.parametrize(
    ("parts", "width"),
    [
        ({"consensus": False, "descriptors": False}, 6),
        ({"per_detector": False, "descriptors": False}, 5),
        ({"per_detector": False, "consensus": False}, 4),
        ({"per_detector": False, "consensus": False, "descriptors": False, "agreeing": True}, 2),
    ],
)
def test_feature_groups_can_be_left_out(parts, width):
    X = _gaussian()
    feat = Featurizer(detectors=TINY, **parts).fit(X)

    F = feat.transform(X)
    low, high = feat.feature_bounds()

    assert F.shape == (200, width) == (200, feat.n_features)
    assert ((F >= low) & (F <= high)).all()


def test_agreeing_features_average_the_half_of_the_bank_that_agrees_with_it():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    X[:6] += 6.0  # far rows that every detector of this bank sees
    bank = ("iforest", "knn", "knn:n_neighbors=20", "ecod", "pca")
    feat = Featurizer(detectors=bank, agreeing=True, descriptors=False).fit(X)
    F = feat.transform(X)

    assert feat.feature_names[-2:] == ["agreeing/pct_mean", "agreeing/z_mean"]
    kept = feat.agreeing_
    assert len(kept) == 3 and list(kept) == sorted(kept)
    np.testing.assert_allclose(_column(feat, F, "agreeing/pct_mean"), F[:, [2 * j for j in kept]].mean(1), rtol=0, atol=1e-6)
    np.testing.assert_allclose(_column(feat, F, "agreeing/z_mean"), F[:, [2 * j + 1 for j in kept]].mean(1), rtol=0, atol=1e-6)
    # the kept detectors are those whose z-scores on the fitting rows correlate best with the bank's mean z
    Z = F[:, 1 : 2 * len(bank) : 2].astype(np.float64)
    corr = [np.corrcoef(Z[:, j], Z.mean(1))[0, 1] for j in range(len(bank))]
    assert set(kept) == set(np.argsort(corr)[-3:])
    assert roc_auc_score(np.r_[np.ones(6), np.zeros(294)], _column(feat, F, "agreeing/z_mean")) > 0.99


def test_the_agreeing_preset_is_the_rich_bank_seen_through_its_agreeing_half(planted):
    X, y = planted
    feat = Featurizer(dataclasses.replace(features.PRESETS["agreeing"], max_fit_rows=300)).fit(X)
    F = feat.transform(X)

    assert feat.feature_names == ["agreeing/pct_mean", "agreeing/z_mean"] and F.shape == (len(X), 2)
    assert len(feat.agreeing_) == 9 == (len(features.RICH_DETECTORS) + 1) // 2
    assert roc_auc_score(y, F[:, 1]) > 0.99


def test_a_detector_with_constant_scores_is_never_among_the_agreeing():
    X = np.random.default_rng(1).normal(size=(200, 3))
    feat = Featurizer(detectors=("iforest", "knn", "lof", "ecod"), agreeing=True, descriptors=False).fit(X)
    ref = feat.raw_scores(X)
    ref[:, 1] = 3.0  # a live detector that scores every row alike

    assert 1 not in feat._agreeing_detectors(ref) and len(feat._agreeing_detectors(ref)) == 2
    feat.detectors_[0] = None  # a detector that failed to fit is left out, and the half is of the live ones
    assert list(feat._agreeing_detectors(ref)) == [2, 3]  # ceil(3 / 2) of the live, the constant one never


def test_the_agreeing_option_keys_the_cache_only_when_on():
    assert FeaturizerConfig(agreeing=True).key() != FeaturizerConfig().key()
    assert FeaturizerConfig().key() == "743151605094a11a"  # the key from before the option (update with FEATURE_VERSION)


def test_width_does_not_depend_on_the_dataset_width():
    narrow, wide = _gaussian(d=2), _gaussian(d=40)

    F_narrow = Featurizer(detectors=TINY).fit_transform(narrow)
    F_wide = Featurizer(detectors=TINY).fit_transform(wide)

    assert F_narrow.shape == F_wide.shape == (200, 15)
    assert F_narrow.dtype == F_wide.dtype == np.float32


@pytest.mark.parametrize("case", ["constant-column", "all-constant", "duplicated-columns", "huge-values"])
def test_features_stay_finite_and_inside_the_bounds(case):
    X = _gaussian(d=3)
    if case == "constant-column":
        X = np.column_stack([X, np.full(200, 7.0)])
    elif case == "all-constant":
        X = np.full((200, 3), 2.0)
    elif case == "duplicated-columns":
        X = np.column_stack([X, X, X[:, :1]])
    else:
        X = X * 1e30
    feat = Featurizer()
    low, high = feat.feature_bounds()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # CBLOF cannot cluster constant rows
        feat.fit(X)
    F = np.vstack([feat.transform(X), feat.transform(X * 3 + 1)])

    assert F.dtype == np.float32
    assert np.isfinite(F).all()
    assert ((F >= low) & (F <= high)).all()


def test_duplicated_columns_raise_only_the_featurizers_own_warnings():
    X = _gaussian(d=3)
    X = np.column_stack([X, X])

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        F = Featurizer(detectors=("pca", "iforest")).fit_transform(X)

    assert all(str(w.message).startswith("detector ") for w in caught), [str(w.message) for w in caught]
    assert np.isfinite(F).all()


# --------------------------------------------------------------------------- consistency


def test_chunked_transform_equals_unchunked(fitted, planted):
    X = planted[0]
    chunked = pickle.loads(pickle.dumps(fitted))
    chunked.config = FeaturizerConfig(chunk_size=7)

    np.testing.assert_array_equal(chunked.transform(X), fitted.transform(X))


def test_a_rows_features_do_not_depend_on_the_rows_scored_with_it(fitted, planted):
    X = planted[0]
    full = fitted.transform(X)

    np.testing.assert_array_equal(fitted.transform(X[[3]]), full[[3]])
    np.testing.assert_array_equal(fitted.transform(X[-6:]), full[-6:])


@pytest.mark.parametrize("method", ["ecod", "copod"])
def test_tail_probability_detectors_score_a_row_as_pyod_scores_it_alone(method):
    from pyod.models.copod import COPOD
    from pyod.models.ecod import ECOD

    rng = np.random.default_rng(1)
    X = rng.gamma(2.0, size=(150, 3))
    X[:, 2] = X[:, 2].round()  # ties
    new = np.vstack([rng.gamma(2.0, size=(10, 3)), X[:5]])
    reference = {"ecod": ECOD, "copod": COPOD}[method]().fit(X)

    ours = features._DETECTOR_FACTORIES[method]({}, len(X), 0).fit(X).decision_function(new)

    alone = [reference.decision_function(row[None])[0] for row in new]
    np.testing.assert_allclose(ours, alone, rtol=1e-12)


def test_pickled_featurizer_transforms_identically(fitted, planted):
    X = planted[0]

    restored = pickle.loads(pickle.dumps(fitted))

    np.testing.assert_array_equal(restored.transform(X), fitted.transform(X))
    assert restored.config == fitted.config


def test_fitting_is_seeded():
    X = _gaussian(n=300)

    first = Featurizer(detectors=TINY, seed=3).fit_transform(X)
    again = Featurizer(detectors=TINY, seed=3).fit_transform(X)
    other = Featurizer(detectors=TINY, seed=4).fit_transform(X)

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_large_inputs_are_fitted_on_a_subsample():
    X = _gaussian(n=600)
    feat = Featurizer(detectors=TINY, max_fit_rows=100).fit(X)

    F = feat.transform(X)
    pct = _column(feat, F, "iforest/pct")

    assert feat.sorted_scores_.shape == (100, 3)
    assert feat.n_rows_seen_ == 600
    assert F.shape == (600, feat.n_features)
    assert _column(feat, F, "dataset/log_rows")[0] == pytest.approx(np.log10(600) / 3)
    assert 0.4 < pct.mean() < 0.6  # the subsample is representative: percentiles stay centred
    full = Featurizer(detectors=TINY).fit(X)
    assert full.sorted_scores_.shape == (600, 3)


# --------------------------------------------------------------------------- failures


def test_a_failing_detector_gives_neutral_features_with_a_warning(monkeypatch):
    class Broken:
        def fit(self, X):
            raise RuntimeError("boom")

    monkeypatch.setitem(features._DETECTOR_FACTORIES, "hbos", lambda params, n, seed: Broken())
    X = _gaussian()
    feat = Featurizer(detectors=TINY)

    with pytest.warns(RuntimeWarning, match=r"detector hbos failed to fit \(boom\); its features are neutral"):
        feat.fit(X)
    F = feat.transform(X)

    assert feat.detectors_[2] is None
    np.testing.assert_array_equal(_column(feat, F, "hbos/pct"), 0.5)
    np.testing.assert_array_equal(_column(feat, F, "hbos/z"), 0.0)
    live = (_column(feat, F, "iforest/pct") + _column(feat, F, "ecod/pct")) / 2
    np.testing.assert_allclose(_column(feat, F, "consensus/pct_mean"), live, rtol=1e-6)


class _FixedScores:
    """A detector whose scores are ``values`` repeated over the rows."""

    def __init__(self, values):
        self.values = values

    def fit(self, X):
        return self

    def decision_function(self, X):
        return np.resize(np.asarray(self.values, dtype=float), len(X))


@pytest.mark.parametrize("values", [[np.nan], [np.inf], [np.nan, -np.inf]])
def test_a_detector_without_a_finite_score_counts_as_failed(monkeypatch, values):
    monkeypatch.setitem(features._DETECTOR_FACTORIES, "ecod", lambda params, n, seed: _FixedScores(values))

    with pytest.warns(RuntimeWarning, match=r"detector ecod failed to fit \(all scores are NaN or infinite\)"):
        feat = Featurizer(detectors=TINY).fit(_gaussian())

    assert feat.detectors_[1] is None
    np.testing.assert_array_equal(_column(feat, feat.transform(_gaussian()), "ecod/pct"), 0.5)


def test_a_detector_with_some_infinite_scores_stays_in_the_bank(monkeypatch):
    monkeypatch.setitem(features._DETECTOR_FACTORIES, "ecod", lambda params, n, seed: _FixedScores([1.0, np.inf, np.nan, 2.0]))
    X = _gaussian()
    feat = Featurizer(detectors=TINY)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F = feat.fit(X).transform(X)
    pct = _column(feat, F, "ecod/pct")

    assert feat.detectors_[1] is not None
    assert np.isfinite(F).all()
    np.testing.assert_allclose(pct[:4], [0.125, 0.875, 0.5, 0.5])  # NaN -> the median score


@pytest.mark.parametrize(
    ("overrides", "error", "message"),
    [
        ({"detectors": ("iforest", "magic")}, ValueError, r"unknown detector 'magic'; choose from \['cblof', 'copod'"),
        ({"detectors": ("knn:n_neighbors",)}, ValueError, r"parameter 'n_neighbors' must look like key=value"),
        ({"detectors": ()}, ValueError, r"detectors is empty"),
        ({"max_fit_rows": 10}, ValueError, r"max_fit_rows must be at least 20, got 10"),
        ({"chunk_size": 0}, ValueError, r"chunk_size must be positive, got 0"),
        ({"per_detector": False, "consensus": False, "descriptors": False}, ValueError, r"must produce something"),
    ],
)
def test_bad_configurations_are_rejected(overrides, error, message):
    with pytest.raises(error, match=message):
        FeaturizerConfig(**overrides)
    with pytest.raises(error, match=message):
        Featurizer(**overrides)


def test_detector_specs_are_parsed():
    assert parse_detector_spec(" KNN:n_neighbors=20, method=mean,contamination=0.2,flag=true") == (
        "knn",
        {"n_neighbors": 20, "method": "mean", "contamination": 0.2, "flag": True},
    )
    assert parse_detector_spec("iforest") == ("iforest", {})


def test_detector_parameters_reach_the_detector():
    feat = Featurizer(detectors=("knn:n_neighbors=500,method=mean", "iforest:n_estimators=7")).fit(_gaussian(n=50))

    knn, iforest = feat.detectors_
    assert knn.n_neighbors == 49 and knn.method == "mean"  # capped below the number of fitting rows
    assert iforest.n_estimators == 7


def test_config_round_trips_through_a_dict_and_keys_what_changes_features():
    config = FeaturizerConfig(detectors=["iforest", "knn"], max_fit_rows=300)

    assert FeaturizerConfig.from_dict(config.to_dict()) == config
    assert config.detectors == ("iforest", "knn")
    assert FeaturizerConfig(detectors=("iforest", "knn"), max_fit_rows=300, chunk_size=5).key() == config.key()
    assert FeaturizerConfig(detectors=("iforest",), max_fit_rows=300).key() != config.key()
    with pytest.raises(ValueError, match=r"unknown featurizer option\(s\) \['colour'\]"):
        FeaturizerConfig.from_dict({"colour": "red"})


def test_input_is_checked():
    feat = Featurizer(detectors=TINY)
    with pytest.raises(RuntimeError, match=r"not fitted yet; call fit\(X\) first"):
        feat.transform(_gaussian())
    with pytest.raises(ValueError, match=r"at least 10 rows to fit, got 9"):
        feat.fit(_gaussian(n=9))
    with pytest.raises(ValueError, match=r"X must be 2-D"):
        feat.fit(np.arange(50.0))
    X = _gaussian()
    X[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"NaN or infinite values"):
        feat.fit(X)
    feat.fit(_gaussian())
    with pytest.raises(ValueError, match=r"X has 5 columns but the featurizer was fitted on 4"):
        feat.transform(_gaussian(d=5))


# --------------------------------------------------------------------------- cache


@pytest.fixture
def small_task():
    return make_synthetic_task("local", n_rows=120, n_features=3, seed=11)


def test_featurize_task_writes_the_cache_and_reads_it_back(small_task, monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALY_GYM_CACHE", str(tmp_path))
    config = FeaturizerConfig(detectors=TINY)

    first = featurize_task(small_task, config)
    path = tmp_path / "features" / f"{small_task.hash}-{config.key()}.npy"

    assert path.is_file()
    assert list(path.parent.iterdir()) == [path]
    np.testing.assert_array_equal(np.load(path), first)
    np.testing.assert_array_equal(first, Featurizer(config).fit_transform(small_task.X))

    def no_fitting(self, X):
        raise AssertionError("the cached features should have been read")

    monkeypatch.setattr(Featurizer, "fit", no_fitting)
    np.testing.assert_array_equal(featurize_task(small_task, config), first)


def test_featurize_task_recomputes_a_damaged_cache_file(small_task, tmp_path):
    config = FeaturizerConfig(detectors=TINY)
    expected = featurize_task(small_task, config, cache_dir=False)
    path = tmp_path / "features" / f"{small_task.hash}-{config.key()}.npy"
    path.parent.mkdir()
    path.write_bytes(b"not a numpy file")

    np.testing.assert_array_equal(featurize_task(small_task, config, cache_dir=tmp_path), expected)
    np.testing.assert_array_equal(np.load(path), expected)


def test_featurize_task_without_cache_writes_nothing(small_task, monkeypatch, tmp_path):
    monkeypatch.setenv("ANOMALY_GYM_CACHE", str(tmp_path))

    featurize_task(small_task, FeaturizerConfig(detectors=TINY), cache_dir=False)

    assert not any(tmp_path.iterdir())


def test_the_fit_and_the_scores_do_not_depend_on_the_number_of_threads():
    """On tied distances (integer pixels) the neighbours a search keeps depend on its threads; the bank pins them.

    (Without ``bank.one_openmp_thread`` the LOF columns differ here between 1 and 2 threads.)
    """
    from anomaly_gym.envs.stream import FastFeaturizer
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    X = load_digits().data[:1200]
    runs = []
    for n_threads in (1, 2):
        with threadpool_limits(n_threads, user_api="openmp"):
            f = features.Featurizer().fit(X)
            runs.append((f.sorted_scores_, f.transform(X[:300]), FastFeaturizer(f).transform(X[:300])))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
