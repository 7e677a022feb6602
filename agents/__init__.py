"""stable-baselines3 agents and self-contained policy bundles."""

from anomaly_gym.agents.bundle import PolicyBundle, default_bundle_path, load_bundle, load_default_bundle
from anomaly_gym.agents.factory import ALGORITHMS, anomaly_proba, make_agent, resolve_device

__all__ = [
    "ALGORITHMS",
    "PolicyBundle",
    "anomaly_proba",
    "default_bundle_path",
    "load_bundle",
    "load_default_bundle",
    "make_agent",
    "resolve_device",
]
