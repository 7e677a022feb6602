"""stable-baselines3 agents and self-contained policy bundles."""

from anomaly_gym.agents.bundle import PolicyBundle, load_bundle
from anomaly_gym.agents.factory import ALGORITHMS, anomaly_proba, make_agent, resolve_device

__all__ = ["ALGORITHMS", "PolicyBundle", "anomaly_proba", "load_bundle", "make_agent", "resolve_device"]
