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

from typing import Any

from anomaly_gym.detectors.base import BaseDetector, check_labels, check_source, check_X
from anomaly_gym.detectors.gan import MetaGANDetector, MOGAALDetector, ScratchGANDetector, SOGAALDetector
from anomaly_gym.detectors.pyod_baselines import (
    DEFAULT_BANK,
    ADEngineDetector,
    AutoEncoderDetector,
    CBLOFDetector,
    COPODDetector,
    DeepSVDDDetector,
    DevNetDetector,
    ECODDetector,
    GradientBoostingDetector,
    HBOSDetector,
    IForestDetector,
    KNNDetector,
    LightGBMDetector,
    LOFDetector,
    MeanRankEnsemble,
    OCSVMDetector,
    PCADetector,
    PyODDetector,
    XGBODCompactDetector,
    XGBODDetector,
    percentile_rank,
)
from anomaly_gym.detectors.spectral import TransferSpectralClustering
from anomaly_gym.detectors.transfer import (
    CORALKMeans,
    DeepTransferClustering,
    FeatureTransferKMeans,
    ModelTransferKMeans,
    PrototypeMetaClustering,
    TransferDetector,
)

#: Registered detectors, name -> class.  Unsupervised, then semi-supervised, then transfer.
DETECTORS: dict[str, type[BaseDetector]] = {
    "iforest": IForestDetector,
    "ecod": ECODDetector,
    "copod": COPODDetector,
    "hbos": HBOSDetector,
    "knn": KNNDetector,
    "lof": LOFDetector,
    "pca": PCADetector,
    "ocsvm": OCSVMDetector,
    "cblof": CBLOFDetector,
    "autoencoder": AutoEncoderDetector,
    "so_gaal": SOGAALDetector,
    "mo_gaal": MOGAALDetector,
    "deepsvdd": DeepSVDDDetector,
    "mean_rank": MeanRankEnsemble,
    "adengine": ADEngineDetector,
    "xgbod": XGBODDetector,
    "xgbod_compact": XGBODCompactDetector,
    "lightgbm": LightGBMDetector,
    "devnet": DevNetDetector,
    "gradient_boosting": GradientBoostingDetector,
    "feature_transfer_kmeans": FeatureTransferKMeans,
    "model_transfer_kmeans": ModelTransferKMeans,
    "coral_kmeans": CORALKMeans,
    "dtc": DeepTransferClustering,
    "prototype_meta": PrototypeMetaClustering,
    "transfer_spectral": TransferSpectralClustering,
    "meta_gan": MetaGANDetector,
    "gan_scratch": ScratchGANDetector,
}


def make_detector(name: str, **kwargs: Any) -> BaseDetector:
    """A new, unfitted detector of the registered ``name`` with ``kwargs`` as its parameters.

    Raises:
        ValueError: ``name`` is not registered, or a keyword is not one of its parameters.
    """
    key = name.strip().lower()
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
    if not (isinstance(cls, type) and issubclass(cls, BaseDetector)):
        raise TypeError(f"only BaseDetector subclasses can be registered, got {cls!r}")
    key = name.strip().lower()
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


_register_policy()
