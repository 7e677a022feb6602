"""Monotone linear policies: non-decreasing in every anomaly-score feature.

Every detector score points one way (higher = more anomalous), so a policy whose logit
for "anomaly" can only rise with them cannot learn a source dataset's quirk of the form
"this detector is wrong here, invert it", the kind of fit that does not transfer to
unseen datasets.  SB3 has no constrained optimiser, so
:class:`MonotoneLogitCallback` projects after every update (projected gradient descent).
"""

from __future__ import annotations

import numpy as np
import torch
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback

#: Features that carry no direction (spread, dataset descriptors): left free.
FREE_FEATURES = ("consensus/pct_std",)


def monotone_columns(feature_names: list[str]) -> np.ndarray:
    """Indices of the features the anomaly logit must not decrease in."""
    return np.array(
        [i for i, name in enumerate(feature_names) if name not in FREE_FEATURES and not name.startswith("dataset/")],
        dtype=np.int64,
    )


def _action_layer(model: BaseAlgorithm) -> torch.nn.Linear:
    policy = model.policy
    extractor = getattr(policy, "mlp_extractor", None)
    if extractor is None or not hasattr(policy, "action_net"):
        raise ValueError("monotone policies need an actor-critic policy (PPO or A2C)")
    if any(isinstance(m, torch.nn.Linear) for m in extractor.policy_net.modules()):
        raise ValueError("monotone policies must be linear: set net_arch=[] (a value network may keep hidden layers)")
    return policy.action_net


@torch.no_grad()
def project_monotone(model: BaseAlgorithm, columns: np.ndarray) -> None:
    """Clamp the anomaly-minus-normal logit weights of ``columns`` at zero (the policy's only degree of freedom)."""
    layer = _action_layer(model)
    w = layer.weight  # (2, n_features): logits of action 0 and action 1
    diff = w[1] - w[0]
    mean = (w[0] + w[1]) / 2
    idx = torch.as_tensor(columns, device=w.device)
    diff[idx] = diff[idx].clamp(min=0.0)
    w[0] = mean - diff / 2
    w[1] = mean + diff / 2


class MonotoneLogitCallback(BaseCallback):
    """Keep a linear policy non-decreasing in ``columns`` after every update."""

    def __init__(self, columns: np.ndarray) -> None:
        super().__init__()
        self.columns = np.asarray(columns, dtype=np.int64)

    def _on_training_start(self) -> None:
        project_monotone(self.model, self.columns)

    def _on_rollout_start(self) -> None:  # runs after each update, before the next rollout
        project_monotone(self.model, self.columns)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        project_monotone(self.model, self.columns)
