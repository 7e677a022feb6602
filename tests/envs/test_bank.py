"""The bank's detectors score exactly as PyOD's own classes do, and fitting them imports
neither PyOD nor numba.

PyOD is instantiated here as the reference: for each detector and parameter setting, on
seeded data with duplicated rows, constant and collinear columns, ties and few rows, the
bank's ``fit`` + ``decision_function`` must give PyOD's scores (relative 1e-9; in practice
bit for bit) on the fitting rows and on new rows, and raise where PyOD raises.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from anomaly_gym.envs import bank, features
from anomaly_gym.envs.features import PRESETS, Featurizer
from anomaly_gym.envs.stream import FastFeaturizer


def _datasets() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    gaussian = rng.normal(size=(200, 5))
    gaussian[-5:] += 6.0
    duplicated = np.vstack([rng.normal(size=(120, 4)), np.repeat(rng.normal(size=(3, 4)), 15, axis=0)])
    constant = np.column_stack([rng.normal(size=(150, 3)), np.full(150, 2.5), rng.exponential(size=150)])
    a, b = rng.normal(size=(2, 160))
    collinear = np.column_stack([a, b, a + b, 3.0 * a, np.zeros(160)])
    discrete = rng.integers(0, 4, size=(180, 3)).astype(np.float64)
    small = rng.uniform(size=(12, 3))
    return {"gaussian": gaussian, "duplicated": duplicated, "constant": constant, "collinear": collinear, "discrete": discrete, "small": small}


DATASETS = _datasets()

#: (bank class name, PyOD module, parameters): the default bank's settings and the rich bank's.
CASES = [
    ("IForest", "iforest", {"random_state": 0}),
    ("IForest", "iforest", {"random_state": 3, "max_samples": 64}),
    ("IForest", "iforest", {"random_state": 1, "n_estimators": 20, "max_features": 0.5, "contamination": 0.05}),
    ("KNN", "knn", {}),
    ("KNN", "knn", {"n_neighbors": 20}),
    ("KNN", "knn", {"n_neighbors": 50}),
    ("KNN", "knn", {"n_neighbors": 20, "method": "mean"}),
    ("KNN", "knn", {"n_neighbors": 8, "method": "median"}),
    ("LOF", "lof", {}),
    ("LOF", "lof", {"n_neighbors": 10}),
    ("LOF", "lof", {"n_neighbors": 40}),
    ("HBOS", "hbos", {}),
    ("HBOS", "hbos", {"n_bins": 5}),
    ("HBOS", "hbos", {"n_bins": 30}),
    ("HBOS", "hbos", {"n_bins": 7, "alpha": 0.5, "tol": 0.9}),
    ("PCA", "pca", {"random_state": 0}),
    ("PCA", "pca", {"random_state": 0, "n_components": 2}),
    ("PCA", "pca", {"random_state": 0, "n_selected_components": 1}),
    ("PCA", "pca", {"random_state": 0, "standardization": False, "weighted": False}),
    ("CBLOF", "cblof", {"random_state": 0}),
    ("CBLOF", "cblof", {"random_state": 0, "n_clusters": 16}),
    ("CBLOF", "cblof", {"random_state": 2, "n_clusters": 4, "alpha": 0.7, "beta": 2.0}),
    ("CBLOF", "cblof", {"random_state": 0, "n_clusters": 5, "alpha": 0.8, "beta": 1.5, "use_weights": True}),
]


def _pyod_class(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(f"pyod.models.{module}"), name)


def _fit_or_error(detector, X):
    """``detector`` fitted on ``X``, or the type of what its fit raised."""
    try:
        return detector.fit(X)
    except (ValueError, AssertionError) as exc:
        return type(exc)


@pytest.mark.parametrize("name, module, params", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_scores_equal_pyods_on_fitting_and_new_rows(name, module, params):
    new = np.random.default_rng(11)
    for key, X in DATASETS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ours = _fit_or_error(getattr(bank, name)(**params), X)
            theirs = _fit_or_error(_pyod_class(module, name)(**params), X)
            if isinstance(theirs, type):  # PyOD refuses these rows (too few for k, no cluster split)
                assert ours is ValueError, f"{key}: PyOD raised {theirs.__name__}, the bank did not"
                continue
            assert not isinstance(ours, type), f"{key}: the bank raised {ours.__name__}, PyOD did not"
            spread = X.std(axis=0) + 1.0
            fresh = np.vstack([X.mean(axis=0) + new.normal(size=(40, X.shape[1])) * spread * 2.0, X[:5], X[:3] + 1e-9])
            for rows in (X, fresh):
                expected = theirs.decision_function(rows)
                np.testing.assert_allclose(ours.decision_function(rows), expected, rtol=1e-9, atol=0, err_msg=key)


def test_each_case_is_compared_on_most_datasets():
    """The comparison above is not vacuous: PyOD fits every case on most of the datasets."""
    for name, module, params in CASES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fitted = [not isinstance(_fit_or_error(_pyod_class(module, name)(**params), X), type) for X in DATASETS.values()]
        assert sum(fitted) >= 3, (name, params)


def test_arguments_are_checked_where_pyod_checks_them():
    from pyod.models.cblof import CBLOF
    from pyod.models.hbos import HBOS
    from pyod.models.pca import PCA

    X = DATASETS["gaussian"]
    for params in ({"alpha": 0.0}, {"tol": 1.0}, {"contamination": 0.6}):
        with pytest.raises(ValueError):
            HBOS(**params)
        with pytest.raises(ValueError):
            bank.HBOS(**params)
    for ours, theirs in [
        (bank.HBOS(n_bins=2), HBOS(n_bins=2)),  # PyOD's bins must be more than 2
        (bank.PCA(n_selected_components=9), PCA(n_selected_components=9)),
        (bank.CBLOF(beta=1.0), CBLOF(beta=1.0)),
        (bank.CBLOF(alpha=1.0), CBLOF(alpha=1.0)),
    ]:
        with pytest.raises(ValueError):
            theirs.fit(X)
        with pytest.raises(ValueError):
            ours.fit(X)


def test_hbos_column_scores_are_pyods_kernel_bit_for_bit():
    from pyod.models.hbos import _calculate_outlier_scores

    X = DATASETS["constant"]
    det = bank.HBOS(n_bins=6, tol=0.3).fit(X)
    probes = np.vstack([det.bin_edges_, det.bin_edges_ - 0.01, det.bin_edges_ + 0.2, X.min(axis=0) - 1.0, X.max(axis=0) + 1.0])
    expected = _calculate_outlier_scores(probes, det.bin_edges_, det.hist_, 6, det.alpha, det.tol)
    np.testing.assert_array_equal(bank.hbos_column_scores(probes, det.bin_edges_, det.hist_, det.alpha, det.tol), expected)


def _pyod_bank() -> types.SimpleNamespace:
    """The bank as PyOD's classes: what the featurizer fitted before the bank existed."""
    classes = {name: _pyod_class(module, name) for name, module, _ in CASES}
    return types.SimpleNamespace(**classes)


@pytest.mark.parametrize("preset, kind", [("default", "gaussian"), ("default", "discrete"), ("rich", "duplicated"), ("rich", "collinear")])
def test_featurizer_features_equal_the_pyod_banks(preset, kind, monkeypatch):
    X = DATASETS[kind]
    config = dataclasses.replace(PRESETS[preset], max_fit_rows=150)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = Featurizer(config).fit(X)
        monkeypatch.setattr(features, "bank", _pyod_bank())
        theirs = Featurizer(config).fit(X)

    def modules(featurizer: Featurizer) -> set[str]:
        """The modules of the detectors the bank provides (inside the PCA and CBLOF wrappers)."""
        inner = [d.detector_ if type(d).__name__ in ("_RankPCA", "_RelaxedCBLOF") else d for d in featurizer.detectors_]
        return {type(d).__module__ for d in inner if type(d).__name__ in ("IForest", "KNN", "LOF", "HBOS", "PCA", "CBLOF")}

    assert modules(ours) == {"anomaly_gym.envs.bank"} and all(m.startswith("pyod.models.") for m in modules(theirs))
    np.testing.assert_allclose(ours.raw_scores(X), theirs.raw_scores(X), rtol=1e-9, atol=0)
    expected = theirs.transform(X)
    np.testing.assert_array_equal(ours.transform(X), expected)
    # The fast paths compile both (PyOD's classes in featurizers pickled before the bank).
    np.testing.assert_allclose(FastFeaturizer(ours).raw_scores(X), ours.raw_scores(X), rtol=1e-12, atol=0)
    np.testing.assert_allclose(FastFeaturizer(ours).transform(X), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(FastFeaturizer(theirs).transform(X), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(FastFeaturizer(ours).transform_row(X[3]), expected[3], rtol=0, atol=1e-6)


def test_the_banks_factories_build_the_bank_not_pyod():
    built = [features._build_detector(*features.parse_detector_spec(spec), 100, 0) for spec in PRESETS["rich"].detectors]
    assert {type(d).__module__ for d in built if type(d).__name__ != "GMM"} == {"anomaly_gym.envs.bank", "anomaly_gym.envs.features"}
    assert type(features._build_detector("hbos", {"n_bins": "auto"}, 100, 0)).__module__ == "pyod.models.hbos"


SCORE_PROBE = """
import json, sys
import numpy as np
import anomaly_gym.scripts.detect as detect
from anomaly_gym.agents.scoring import score_rows
bundle = detect.load_model(None, "cpu")
X = np.random.default_rng(0).normal(size=(200, 6))
X[7] += 8.0
scores = score_rows(bundle, X)
print(json.dumps({"argmax": int(np.argmax(scores)), "finite": bool(np.isfinite(scores).all()),
                  "modules": [m for m in ("pyod", "numba", "llvmlite", "torch", "pytest") if m in sys.modules]}))
"""


def test_scoring_rows_with_the_default_bundle_imports_neither_pyod_nor_numba():
    from anomaly_gym.agents.bundle import default_bundle_path

    if not default_bundle_path().is_file():
        pytest.skip("the default policy bundle is not installed")
    proc = subprocess.run([sys.executable, "-c", SCORE_PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"argmax": 7, "finite": True, "modules": []}


def test_the_refit_workers_warm_up_imports_no_pyod():
    code = "import sys; from anomaly_gym.envs.bank import import_estimators; import_estimators(); print([m for m in ('pyod', 'numba') if m in sys.modules])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_estimators_import_without_pandas_when_asked_and_pandas_imports_afterwards():
    code = (
        "import sys; from anomaly_gym.envs.bank import import_estimators; import_estimators(without_pandas=True); "
        "before = 'pandas' in sys.modules; import sklearn.utils.fixes as fixes; import pandas; "
        "from sklearn.preprocessing import StandardScaler; "
        "out = StandardScaler().set_output(transform='pandas').fit_transform(pandas.DataFrame({'a': [1.0, 2.0]})); "
        "print(before, fixes.pd is None, type(out).__name__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "DataFrame"]
