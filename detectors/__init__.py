"""Detectors: PyOD baselines, transfer-clustering baselines, and the registry.

Every detector is a :class:`BaseDetector`: ``fit(X, y=None, source=None)`` then
``decision_function(X)``, higher = more anomalous.  Look detectors up by name:

    >>> from anomaly_gym.detectors import DETECTORS, make_detector
    >>> det = make_detector("iforest", n_estimators=50).fit(X_train)
    >>> scores = det.decision_function(X_test)

``DETECTORS[name].requires_labels`` says whether ``fit`` needs ``y`` (1 = labelled
anomaly, 0 = every other row); ``DETECTORS[name].uses_source`` whether it needs
``source=(X_source, y_source)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anomaly_gym.detectors.base import BaseDetector

# The detectors' modules (PyOD, scikit-learn, torch) are imported when a name is first used,
# so that importing one module of this package (the stream detector) stays light.
_NAMES = {
    "BaseDetector": "base",
    "check_labels": "base",
    "check_source": "base",
    "check_X": "base",
    "MetaGANDetector": "gan",
    "MOGAALDetector": "gan",
    "ScratchGANDetector": "gan",
    "SOGAALDetector": "gan",
    "DEFAULT_BANK": "pyod_baselines",
    "ADEngineDetector": "pyod_baselines",
    "AutoEncoderDetector": "pyod_baselines",
    "CBLOFDetector": "pyod_baselines",
    "COPODDetector": "pyod_baselines",
    "DeepSVDDDetector": "pyod_baselines",
    "DevNetDetector": "pyod_baselines",
    "ECODDetector": "pyod_baselines",
    "GradientBoostingDetector": "pyod_baselines",
    "HBOSDetector": "pyod_baselines",
    "IForestDetector": "pyod_baselines",
    "KNNDetector": "pyod_baselines",
    "LightGBMDetector": "pyod_baselines",
    "LOFDetector": "pyod_baselines",
    "MeanRankEnsemble": "pyod_baselines",
    "MeanZEnsemble": "pyod_baselines",
    "AgreeingZEnsemble": "pyod_baselines",
    "OCSVMDetector": "pyod_baselines",
    "PCADetector": "pyod_baselines",
    "PyODDetector": "pyod_baselines",
    "XGBODCompactDetector": "pyod_baselines",
    "XGBODDetector": "pyod_baselines",
    "percentile_rank": "pyod_baselines",
    "TransferSpectralClustering": "spectral",
    "CORALKMeans": "transfer",
    "DeepTransferClustering": "transfer",
    "FeatureTransferKMeans": "transfer",
    "ModelTransferKMeans": "transfer",
    "PrototypeMetaClustering": "transfer",
    "TransferDetector": "transfer",
}

#: Registered detectors, name -> class name (resolved on first use of :data:`DETECTORS`).
_REGISTERED = (
    ("iforest", "IForestDetector"),
    ("ecod", "ECODDetector"),
    ("copod", "COPODDetector"),
    ("hbos", "HBOSDetector"),
    ("knn", "KNNDetector"),
    ("lof", "LOFDetector"),
    ("pca", "PCADetector"),
    ("ocsvm", "OCSVMDetector"),
    ("cblof", "CBLOFDetector"),
    ("autoencoder", "AutoEncoderDetector"),
    ("so_gaal", "SOGAALDetector"),
    ("mo_gaal", "MOGAALDetector"),
    ("deepsvdd", "DeepSVDDDetector"),
    ("mean_rank", "MeanRankEnsemble"),
    ("mean_z", "MeanZEnsemble"),
    ("agreeing_z", "AgreeingZEnsemble"),
    ("adengine", "ADEngineDetector"),
    ("xgbod", "XGBODDetector"),
    ("xgbod_compact", "XGBODCompactDetector"),
    ("lightgbm", "LightGBMDetector"),
    ("devnet", "DevNetDetector"),
    ("gradient_boosting", "GradientBoostingDetector"),
    ("feature_transfer_kmeans", "FeatureTransferKMeans"),
    ("model_transfer_kmeans", "ModelTransferKMeans"),
    ("coral_kmeans", "CORALKMeans"),
    ("dtc", "DeepTransferClustering"),
    ("prototype_meta", "PrototypeMetaClustering"),
    ("transfer_spectral", "TransferSpectralClustering"),
    ("meta_gan", "MetaGANDetector"),
    ("gan_scratch", "ScratchGANDetector"),
)


def __getattr__(name: str):
    import importlib

    if name == "DETECTORS":
        return _registry()
    if name in _NAMES:
        value = getattr(importlib.import_module(f"anomaly_gym.detectors.{_NAMES[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _registry() -> dict[str, type[BaseDetector]]:
    """:data:`DETECTORS`, name -> class: unsupervised, then semi-supervised, then transfer."""
    registry = globals().get("DETECTORS")
    if registry is None:
        registry = globals()["DETECTORS"] = {key: __getattr__(cls) for key, cls in _REGISTERED}
        _register_policy()
    return registry


def make_detector(name: str, **kwargs: Any) -> BaseDetector:
    """A new, unfitted detector of the registered ``name`` with ``kwargs`` as its parameters.

    Raises:
        ValueError: ``name`` is not registered, or a keyword is not one of its parameters.
    """
    key = name.strip().lower()
    DETECTORS = _registry()
    if key not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {sorted(DETECTORS)}")
    cls = DETECTORS[key]
    known = cls._get_param_names()
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise ValueError(f"{cls.__name__} has no parameter(s) {unknown}; its parameters are {known}")
    return cls(**kwargs)


def register_detector(name: str, cls: type[BaseDetector]) -> None:
    """Add a detector class to :data:`DETECTORS` (for detectors defined outside this package)."""
    from anomaly_gym.detectors.base import BaseDetector

    if not (isinstance(cls, type) and issubclass(cls, BaseDetector)):
        raise TypeError(f"only BaseDetector subclasses can be registered, got {cls!r}")
    key = name.strip().lower()
    DETECTORS = _registry()
    if key in DETECTORS and DETECTORS[key] is not cls:
        raise ValueError(f"a different detector is already registered as {key!r}: {DETECTORS[key].__name__}")
    DETECTORS[key] = cls


__all__ = [
    "DEFAULT_BANK",
    "DETECTORS",
    "ADEngineDetector",
    "AutoEncoderDetector",
    "BaseDetector",
    "CBLOFDetector",
    "COPODDetector",
    "CORALKMeans",
    "DeepSVDDDetector",
    "DeepTransferClustering",
    "DevNetDetector",
    "ECODDetector",
    "FeatureTransferKMeans",
    "GradientBoostingDetector",
    "HBOSDetector",
    "IForestDetector",
    "KNNDetector",
    "LOFDetector",
    "MOGAALDetector",
    "MeanRankEnsemble",
    "MeanZEnsemble",
    "AgreeingZEnsemble",
    "MetaGANDetector",
    "ModelTransferKMeans",
    "OCSVMDetector",
    "PCADetector",
    "PrototypeMetaClustering",
    "PyODDetector",
    "SOGAALDetector",
    "ScratchGANDetector",
    "TransferDetector",
    "TransferSpectralClustering",
    "XGBODDetector",
    "XGBODCompactDetector",
    "LightGBMDetector",
    "check_X",
    "check_labels",
    "check_source",
    "make_detector",
    "percentile_rank",
    "register_detector",
]


def _register_policy() -> None:
    from anomaly_gym.detectors.policy import HeadWithoutPolicyDetector, PolicyDetector, UnguardedHeadDetector

    register_detector("policy", PolicyDetector)
    register_detector("policy_unguarded", UnguardedHeadDetector)
    register_detector("head_without_policy", HeadWithoutPolicyDetector)
