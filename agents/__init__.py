"""stable-baselines3 agents, self-contained policy bundles, and target heads for few-shot adaptation.

Reading a bundle and scoring with it (:mod:`anomaly_gym.agents.fast_policy`) import
neither torch nor stable-baselines3; the names that need them (``ALGORITHMS``,
``make_agent``, ``policy_margin``, ``anomaly_proba``, ``resolve_device``) are imported on
first use.
"""

from anomaly_gym.agents.bundle import PolicyBundle, convert_legacy_bundle, default_bundle_path, load_bundle, load_default_bundle
from anomaly_gym.agents.fast_policy import NumpyPolicy, ScoringBundle, load_scoring_bundle
from anomaly_gym.agents.head import HeadSettings, TargetHead, fit_head
from anomaly_gym.agents.serialization import BundleError

_FROM_FACTORY = ("ALGORITHMS", "anomaly_proba", "make_agent", "policy_margin", "resolve_device")


def __getattr__(name: str):
    if name in _FROM_FACTORY:  # torch and stable-baselines3: imported when first needed
        from anomaly_gym.agents import factory

        return getattr(factory, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ALGORITHMS",
    "BundleError",
    "HeadSettings",
    "NumpyPolicy",
    "PolicyBundle",
    "ScoringBundle",
    "TargetHead",
    "anomaly_proba",
    "convert_legacy_bundle",
    "default_bundle_path",
    "fit_head",
    "load_bundle",
    "load_default_bundle",
    "load_scoring_bundle",
    "make_agent",
    "policy_margin",
    "resolve_device",
]
