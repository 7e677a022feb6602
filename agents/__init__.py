"""stable-baselines3 agents, self-contained policy bundles, and target heads for few-shot adaptation."""

from anomaly_gym.agents.bundle import PolicyBundle, default_bundle_path, load_bundle, load_default_bundle
from anomaly_gym.agents.factory import ALGORITHMS, anomaly_proba, make_agent, policy_margin, resolve_device
from anomaly_gym.agents.head import HeadSettings, TargetHead, fit_head

__all__ = [
    "ALGORITHMS",
    "HeadSettings",
    "PolicyBundle",
    "TargetHead",
    "anomaly_proba",
    "default_bundle_path",
    "fit_head",
    "load_bundle",
    "load_default_bundle",
    "make_agent",
    "policy_margin",
    "resolve_device",
]
