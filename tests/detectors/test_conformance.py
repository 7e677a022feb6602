"""One conformance check run over every registered detector, then a few targeted tests.

Every detector in ``DETECTORS`` must: clone to an unfitted copy with equal parameters,
survive a pickle round trip with identical scores, give the same scores for the same
``random_state``, return finite float scores of shape (n,), score planted far-away rows
above Gaussian inliers, and reach an AUROC floor on seeded synthetic data.  Label-aware
detectors see a few labelled anomalies of the training part; transfer detectors get a
source made by the same generator with another seed.
"""

from __future__ import annotations

import functools
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.detectors import (
    DETECTORS,
    BaseDetector,
    CORALKMeans,
    DeepTransferClustering,
    FeatureTransferKMeans,
    MeanRankEnsemble,
    MeanZEnsemble,
    ModelTransferKMeans,
    PrototypeMetaClustering,
    check_source,
    make_detector,
    percentile_rank,
    register_detector,
)
from anomaly_gym.detectors.transfer import gaussian_mmd, lloyd_steps, trimmed_mean_cov
from anomaly_gym.envs import benchmark_split, make_synthetic_task
from anomaly_gym.envs.features import FeaturizerConfig
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import roc_auc_score

NAMES = sorted(DETECTORS)

#: A small featurizer bank for the ``"features"`` space (fast, still informative).
SMALL_FEATURIZER = FeaturizerConfig(detectors=("knn", "hbos", "ecod", "pca"), descriptors=False)

#: Parameters the checks use instead of a detector's defaults, each with its reason.
TEST_PARAMS: dict[str, dict] = {
    # Two seeds of the generator are unrelated Gaussian mixtures: their raw columns share
    # nothing, and this baseline does not adapt to the target, so it can only transfer
    # through the dataset-relative features.
    "feature_transfer_kmeans": {"feature_space": "features", "featurizer": SMALL_FEATURIZER},
    # PyOD's standard bank fits 41 detectors per call (about a minute over every check here);
    # the checks run the same code with the reduced bank, and a test below fits the standard one.
    "xgbod": {"bank": "compact"},
    # The rich bank (18 detectors) runs the same code; the default bank keeps the checks quick.
    "mean_z": {"bank": "default"},
}

AUROC_FLOOR = 0.8

#: Lower floors, each with its reason.  PyOD's GAAL models at PyOD's defaults are weak
#: on these data (SO-GAAL's single generator collapses, which is why MO-GAAL exists; both
#: sit near the bottom of ADBench's rankings); the floors still fail on an inverted or
#: random score.  Keys: detector -> (floor on the seeded data, floor on the planted rows).
WEAK_FLOORS: dict[str, tuple[float, float]] = {
    "so_gaal": (0.55, 0.65),
    "mo_gaal": (0.6, 0.85),
}


#: Holds the tiny bundle for the session; removed when the interpreter exits.
_BUNDLE_DIR = tempfile.TemporaryDirectory(prefix="policy-detector-")


@functools.lru_cache(maxsize=1)
def tiny_policy_bundle() -> str:
    """A policy bundle trained briefly on synthetic 'global' tasks (the policy detector's model)."""
    from anomaly_gym.agents import PolicyBundle, make_agent
    from anomaly_gym.envs import AnomalyDetectionEnv

    tasks = [make_synthetic_task("global", n_rows=300, n_features=4, seed=200 + s, name=f"src{s}") for s in range(2)]
    env = AnomalyDetectionEnv(tasks=tasks, featurizer=SMALL_FEATURIZER, episode_length=64)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", seed=0, n_steps=256, batch_size=128, ent_coef=0.01)
    model.learn(2048)
    path = Path(_BUNDLE_DIR.name) / "policy.zip"
    return str(PolicyBundle(model, SMALL_FEATURIZER).save(path))


def build(name: str, **overrides) -> BaseDetector:
    params = dict(TEST_PARAMS.get(name, {}))
    if name == "policy":
        params["model"] = tiny_policy_bundle()
    return make_detector(name, **{**params, **overrides})


@dataclass(frozen=True)
class Data:
    X_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    y_labelled: np.ndarray
    """Training labels with only a few anomalies marked 1 (the semi-supervised setting)."""
    source: tuple[np.ndarray, np.ndarray]


def fit(detector: BaseDetector, data: Data) -> BaseDetector:
    return detector.fit(
        data.X_train,
        y=data.y_labelled if detector.requires_labels else None,
        source=data.source if detector.uses_source else None,
    )


@pytest.fixture(scope="module")
def data() -> Data:
    """ADBench 'global' anomalies: 600 rows, 6 columns, 10 % anomalies, 70/30 split."""
    split = benchmark_split(make_synthetic_task("global", n_rows=600, n_features=6, contamination=0.1, seed=0), 0)
    labelled = np.zeros(split.train.n_rows, dtype=np.int8)
    labelled[np.flatnonzero(split.train.y == 1)[:10]] = 1
    source = make_synthetic_task("global", n_rows=600, n_features=6, contamination=0.1, seed=100)
    return Data(split.train.X, split.test.X, split.test.y, labelled, (source.X, source.y))


@pytest.fixture(scope="module")
def planted() -> Data:
    """200 standard-normal rows plus 8 rows at distance 10; the source is another normal draw."""
    rng = np.random.default_rng(1)
    directions = rng.normal(size=(8, 4))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    X = np.vstack([rng.normal(size=(200, 4)), 10.0 * directions])
    y = np.r_[np.zeros(200), np.ones(8)].astype(np.int8)
    labelled = y.copy()
    labelled[np.flatnonzero(y)[4:]] = 0  # half of the outliers are labelled
    source = np.random.default_rng(2).normal(size=(200, 4))
    return Data(X, X, y, labelled, (source, None))


@pytest.fixture(scope="module")
def fitted(data):
    """Each detector fitted once on ``data``, shared by the checks that only read it."""
    cache: dict[str, BaseDetector] = {}

    def get(name: str) -> BaseDetector:
        if name not in cache:
            cache[name] = fit(build(name), data)
        return cache[name]

    return get


# --------------------------------------------------------------------------- conformance


@pytest.mark.parametrize("name", NAMES)
def test_init_only_stores_parameters(name):
    detector = DETECTORS[name]()
    assert set(vars(detector)) == set(detector.get_params(deep=False))
    assert not [k for k in vars(detector) if k.endswith("_")]
    assert isinstance(DETECTORS[name].requires_labels, bool)
    assert isinstance(DETECTORS[name].uses_source, bool)


@pytest.mark.parametrize("name", NAMES)
def test_clone_is_unfitted_with_equal_params(name, fitted, data):
    detector = fitted(name)
    copy = clone(detector)
    assert type(copy) is type(detector)
    assert copy.get_params(deep=False) == detector.get_params(deep=False)
    assert not hasattr(copy, "n_features_in_")
    with pytest.raises(NotFittedError):
        copy.decision_function(data.X_test)


@pytest.mark.parametrize("name", NAMES)
def test_pickle_round_trip_gives_identical_scores(name, fitted, data):
    detector = fitted(name)
    restored = pickle.loads(pickle.dumps(detector))
    np.testing.assert_array_equal(restored.decision_function(data.X_test), detector.decision_function(data.X_test))


@pytest.mark.parametrize("name", NAMES)
def test_same_random_state_gives_same_scores(name, data):
    params = {"random_state": 7} if "random_state" in DETECTORS[name]._get_param_names() else {}
    first = fit(build(name, **params), data).decision_function(data.X_test)
    second = fit(build(name, **params), data).decision_function(data.X_test)
    np.testing.assert_allclose(first, second, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_scores_are_finite_floats_of_shape_n(name, fitted, data):
    detector = fitted(name)
    scores = detector.decision_function(data.X_test)
    assert scores.shape == (len(data.X_test),)
    assert scores.dtype == np.float64
    assert np.isfinite(scores).all()
    assert detector.decision_scores_.shape == (len(data.X_train),)
    assert np.isfinite(detector.decision_scores_).all()
    assert np.ptp(scores) > 0, "a detector that gives every row the same score ranks nothing"
    one = detector.decision_function(data.X_test[:1])
    assert one.shape == (1,)
    np.testing.assert_allclose(one, scores[:1], rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("name", NAMES)
def test_planted_outliers_score_higher(name, planted):
    scores = fit(build(name), planted).decision_function(planted.X_test)
    outliers, inliers = scores[planted.y_test == 1], scores[planted.y_test == 0]
    assert outliers.mean() > inliers.mean()
    assert roc_auc_score(planted.y_test, scores) > WEAK_FLOORS.get(name, (AUROC_FLOOR, 0.85))[1]


@pytest.mark.parametrize("name", NAMES)
def test_auroc_floor_on_seeded_synthetic_data(name, fitted, data):
    auroc = roc_auc_score(data.y_test, fitted(name).decision_function(data.X_test))
    floor = WEAK_FLOORS.get(name, (AUROC_FLOOR, 0.85))[0]
    assert auroc >= floor, f"{name}: AUROC {auroc:.3f} below {floor}"


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_clear_errors(name, fitted, data):
    cls = DETECTORS[name]
    bad = data.X_train.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit(cls(), Data(bad, data.X_test, data.y_test, data.y_labelled, data.source))
    with pytest.raises(ValueError, match="2-D"):
        cls().fit(data.X_train[:, 0])
    with pytest.raises(NotFittedError):
        cls().decision_function(data.X_test)
    with pytest.raises(ValueError, match="columns"):
        fitted(name).decision_function(data.X_test[:, :-1])
    with pytest.raises(ValueError, match="0 and 1"):
        cls().fit(data.X_train, y=np.full(len(data.X_train), 2), source=data.source)
    if cls.requires_labels:
        with pytest.raises(ValueError, match="labelled anomal"):
            cls().fit(data.X_train, source=data.source)
        with pytest.raises(ValueError, match="at least one labelled anomaly"):
            cls().fit(data.X_train, y=np.zeros(len(data.X_train)), source=data.source)
    if cls.uses_source:
        with pytest.raises(ValueError, match="source"):
            cls().fit(data.X_train, y=data.y_labelled)


@pytest.mark.parametrize("name", NAMES)
def test_fit_leaves_global_random_state_alone(name, planted):
    import random

    import torch

    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    expected = (np.random.random(), random.random(), torch.rand(1).item())
    np.random.seed(123)
    random.seed(123)
    torch.manual_seed(123)
    fit(build(name), planted)
    assert (np.random.random(), random.random(), torch.rand(1).item()) == expected


# --------------------------------------------------------------------------- registry and base


def test_make_detector_rejects_unknown_names_and_parameters():
    with pytest.raises(ValueError, match="unknown detector"):
        make_detector("no-such-detector")
    with pytest.raises(ValueError, match="n_trees"):
        make_detector("iforest", n_trees=10)
    assert make_detector("IForest", n_estimators=10).n_estimators == 10


def test_register_detector_only_takes_detector_classes():
    with pytest.raises(TypeError):
        register_detector("dict", dict)
    with pytest.raises(ValueError, match="already registered"):
        register_detector("iforest", MeanRankEnsemble)
    register_detector("iforest", DETECTORS["iforest"])  # re-registering the same class is a no-op


def test_check_source_accepts_the_documented_forms():
    rng = np.random.default_rng(0)
    A, B = rng.normal(size=(30, 3)), rng.normal(size=(40, 5))
    yA = (rng.random(30) < 0.1).astype(int)
    one = check_source((A, yA))
    assert len(one) == 1 and one[0][0].shape == (30, 3) and one[0][1].tolist() == yA.tolist()
    assert check_source((A, None))[0][1] is None
    assert check_source((A.tolist(), yA.tolist()))[0][1].tolist() == yA.tolist()
    two = check_source(([A, B], [yA, None]))
    assert [s[0].shape for s in two] == [(30, 3), (40, 5)] and two[1][1] is None
    assert len(check_source([A, B])) == 2
    assert len(check_source(A)) == 1
    task = make_synthetic_task("local", n_rows=60, n_features=3, seed=0)
    assert check_source(task)[0][1].sum() == task.n_anomalies
    with pytest.raises(ValueError, match="source"):
        check_source("data.csv")
    with pytest.raises(ValueError, match="one label per row"):
        check_source((A, yA[:-1]))
    with pytest.raises(ValueError, match="one entry per dataset|datasets but"):
        check_source(([A, B], [yA]))


# --------------------------------------------------------------------------- targeted


def _correlated(n: int, d: int, seed: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(d, d))
    return rng.normal(size=(n, d)) @ A * scale + shift


def test_coral_aligns_target_covariance_to_source():
    source = _correlated(2000, 4, seed=0)
    target = _correlated(2000, 4, seed=1, scale=3.0, shift=5.0)
    exact = CORALKMeans(trim=0.0, reg=1e-6).fit(target, source=(source, None))
    aligned = exact.transform(target)
    np.testing.assert_allclose(np.cov(aligned, rowvar=False), np.cov(source, rowvar=False), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(aligned.mean(axis=0), source.mean(axis=0), atol=1e-8)
    assert not np.allclose(np.cov(target, rowvar=False), np.cov(source, rowvar=False), rtol=0.2)
    # Trimmed alike on both sides, the default still matches the covariances closely.
    default = CORALKMeans().fit(target, source=(source, None)).transform(target)
    C, C_s = np.cov(default, rowvar=False), np.cov(source, rowvar=False)
    assert np.linalg.norm(C - C_s) / np.linalg.norm(C_s) < 0.1


def test_model_transfer_starts_from_the_source_centroids():
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    source = np.vstack([c + rng.normal(size=(100, 2)) for c in centres])
    target = np.vstack([c + 0.5 + rng.normal(size=(80, 2)) for c in centres])
    frozen = ModelTransferKMeans(n_clusters=3, fine_tune_steps=0).fit(target, source=(source, None))
    np.testing.assert_array_equal(frozen.cluster_centers_, frozen.source_centers_)
    # One untrimmed step: every centre moves to the mean of the target rows nearest to it.
    one = ModelTransferKMeans(n_clusters=3, fine_tune_steps=1, trim=0.0).fit(target, source=(source, None))
    np.testing.assert_allclose(one.source_centers_, frozen.source_centers_)
    Z = one.target_scaler_.transform(target)
    nearest = np.argmin(((Z[:, None, :] - one.source_centers_[None]) ** 2).sum(-1), axis=1)
    expected = np.array([Z[nearest == k].mean(axis=0) for k in range(3)])
    np.testing.assert_allclose(one.cluster_centers_, expected)


def test_lloyd_steps_trim_the_farthest_rows_and_keep_empty_centres():
    Z = np.r_[np.zeros((9, 1)), [[100.0]]]
    centres = np.array([[1.0], [-50.0]])
    np.testing.assert_allclose(lloyd_steps(Z, centres, 1, trim=0.0), [[10.0], [-50.0]])
    np.testing.assert_allclose(lloyd_steps(Z, centres, 1, trim=0.1), [[0.0], [-50.0]])


def test_trimmed_covariance_ignores_a_far_cluster():
    rng = np.random.default_rng(0)
    clean = rng.normal(size=(900, 3))
    Z = np.vstack([clean, 20.0 + rng.normal(size=(100, 3))])
    mean, cov = trimmed_mean_cov(Z, trim=0.2)
    assert np.abs(mean).max() < 0.2
    assert np.abs(cov - np.eye(3) * np.diag(cov).mean()).max() < 0.2
    plain_mean, _ = trimmed_mean_cov(Z, trim=0.0)
    np.testing.assert_allclose(plain_mean, Z.mean(axis=0))


def test_mean_rank_is_the_mean_of_member_percentiles(planted):
    ensemble = MeanRankEnsemble(detectors=("knn", "hbos", "iforest")).fit(planted.X_train)
    scores = ensemble.decision_function(planted.X_test)
    expected = np.mean([percentile_rank(np.sort(m.decision_scores_), m.decision_function(planted.X_test)) for m in ensemble.members_], axis=0)
    np.testing.assert_allclose(scores, expected)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    far = ensemble.decision_function(np.full((1, 4), 1e3))
    assert far[0] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unsupervised"):
        MeanRankEnsemble(detectors=("knn", "devnet")).fit(planted.X_train)


def test_mean_z_is_the_mean_of_the_banks_log_robust_z(planted):
    ensemble = MeanZEnsemble(bank="default").fit(planted.X_train)
    scores = ensemble.decision_function(planted.X_test)
    feats = ensemble.featurizer_.transform(planted.X_test)
    z_cols = [i for i, n in enumerate(ensemble.featurizer_.feature_names) if n.endswith("/z")]
    assert len(z_cols) == 8
    np.testing.assert_allclose(scores, feats[:, z_cols].astype(np.float64).mean(axis=1), atol=1e-5)
    assert roc_auc_score(planted.y_test, scores) > 0.9
    far = ensemble.decision_function(np.full((1, 4), 1e3))
    assert far[0] > scores.max()
    with pytest.raises(ValueError, match="bank must be one of"):
        MeanZEnsemble(bank="huge").fit(planted.X_train)


def test_transfer_across_widths_goes_through_the_features(data):
    wide = make_synthetic_task("global", n_rows=400, n_features=9, contamination=0.1, seed=5)
    narrow = make_synthetic_task("global", n_rows=300, n_features=4, contamination=0.1, seed=6)
    source = ([wide.X, narrow.X], [wide.y, narrow.y])
    for cls in (FeatureTransferKMeans, CORALKMeans, DeepTransferClustering, PrototypeMetaClustering):
        detector = cls(featurizer=SMALL_FEATURIZER).fit(data.X_train, source=source)
        assert detector.feature_space_ == "features"
        assert detector.target_featurizer_ is not None
        auroc = roc_auc_score(data.y_test, detector.decision_function(data.X_test))
        # Refining on the contaminated target pulls prototypes onto the grouped anomalies
        # of this space (see the transfer module's docstring): only better than chance.
        assert auroc >= (0.6 if cls is PrototypeMetaClustering else AUROC_FLOOR), f"{cls.__name__}: {auroc:.3f}"
    with pytest.raises(ValueError, match="feature_space='raw'"):
        ModelTransferKMeans(feature_space="raw").fit(data.X_train, source=source)


def test_prototypes_weigh_every_source_task_equally():
    from sklearn.preprocessing import RobustScaler

    rng = np.random.default_rng(0)
    big = rng.normal(size=(1000, 2))
    small = rng.exponential(size=(50, 2))  # skewed: its mean sits off its median
    detector = PrototypeMetaClustering(n_prototypes=1, clusters_per_task=1, refine_steps=0)
    detector.fit(rng.normal(size=(100, 2)), source=[big, small])
    task_means = [RobustScaler(unit_variance=True).fit_transform(T).mean(axis=0) for T in (big, small)]
    np.testing.assert_allclose(detector.prototypes_[0], np.mean(task_means, axis=0), atol=1e-8)
    np.testing.assert_array_equal(detector.cluster_centers_, detector.prototypes_)


def test_mmd_separates_shifted_batches():
    import torch

    gen = torch.Generator().manual_seed(0)
    a = torch.randn(64, 3, generator=gen)
    b = torch.randn(64, 3, generator=gen)
    assert gaussian_mmd(a, a).item() == pytest.approx(0.0, abs=1e-6)
    assert gaussian_mmd(a, b + 3.0).item() > 10 * gaussian_mmd(a, b).item()


def test_deep_detectors_refuse_a_missing_cuda_device(data):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    for name in ("dtc", "devnet"):
        with pytest.raises(ValueError, match="CUDA"):
            fit(build(name, device="cuda"), data)


def test_xgbod_uses_pyods_standard_detector_set():
    """``xgbod`` is the published method (PyOD's 41 default detectors); ``xgbod_compact`` says it is not."""
    task = make_synthetic_task("global", n_rows=200, n_features=3, seed=5)
    y = np.zeros(task.n_rows, dtype=int)
    y[np.flatnonzero(task.y)[:5]] = 1
    standard = make_detector("xgbod", random_state=0).fit(task.X, y)
    compact = make_detector("xgbod_compact", random_state=0).fit(task.X, y)
    assert standard.bank == "pyod" and compact.bank == "compact"
    assert standard.detector_.n_detector_ > 30
    assert compact.detector_.n_detector_ == 8
    assert roc_auc_score(task.y, standard.decision_function(task.X)) > 0.8
