"""stable-baselines3 agents, self-contained policy bundles, and target heads for few-shot adaptation."""

from anomaly_gym.agents.bundle import PolicyBundle, convert_legacy_bundle, default_bundle_path, load_bundle, load_default_bundle
from anomaly_gym.agents.factory import ALGORITHMS, anomaly_proba, make_agent, policy_margin, resolve_device
from anomaly_gym.agents.head import HeadSettings, TargetHead, fit_head
from anomaly_gym.agents.serialization import BundleError

__all__ = [
    "ALGORITHMS",
    "BundleError",
    "HeadSettings",
    "PolicyBundle",
    "TargetHead",
    "anomaly_proba",
    "convert_legacy_bundle",
    "default_bundle_path",
    "fit_head",
    "load_bundle",
    "load_default_bundle",
    "make_agent",
    "policy_margin",
    "resolve_device",
]
