"""Scoring featurized rows with a bundle's policy: batches with torch, single rows in numpy."""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger(__name__)


class PolicyScorer:
    """P(anomaly) of featurized rows with a bundle's policy.

    Batches go through the policy network (torch, on its device).  Single rows go through
    the same network evaluated in numpy, which avoids ~0.1 ms of torch overhead a call; it
    is checked against torch when built and used only if they agree to 1e-5.  A bundle
    with a target head (few-shot adaptation) also reads the rows' raw columns.
    """

    def __init__(self, bundle) -> None:
        from anomaly_gym.agents.factory import policy_margin

        self.bundle = bundle
        self.head = bundle.head
        self._margin = policy_margin
        self._row = _numpy_policy(bundle.model)
        if self._row is not None:
            lo, hi = (np.asarray(b, dtype=np.float64) for b in _bounds(bundle.featurizer_config))
            probe = np.random.default_rng(0).uniform(lo, hi, size=(16, len(lo))).astype(np.float32)
            ref = policy_margin(bundle.model, probe)
            got = np.array([self._row(x) for x in probe])
            if not np.allclose(got, ref, atol=1e-5, rtol=0):
                logger.info("numpy policy head disagrees with torch (max %.2g); using torch for single rows", np.abs(got - ref).max())
                self._row = None

    def check_width(self, n_columns: int) -> None:
        """A target head reads the columns it was adapted on: refuse other widths before scoring."""
        if self.head is not None:
            self.head.check_width(n_columns)

    def batch(self, features: np.ndarray, X: np.ndarray | None = None) -> np.ndarray:
        return self.bundle.anomaly_proba(features, X)

    def row(self, features: np.ndarray, x: np.ndarray | None = None) -> float:
        if self._row is None:
            margin = float(self._margin(self.bundle.model, features[None, :])[0])
        else:
            margin = self._row(features)
        if self.head is not None:
            margin = float(self.head.margin(np.asarray(x)[None, :], features[None, :], np.array([margin]))[0])
        return _sigmoid(margin)

    def portable_row(self) -> NumpyPolicy | None:
        """What :meth:`row` computes, as a picklable object that needs neither torch nor the
        bundle; None when rows need torch or a target head."""
        return self._row if self.head is None else None


def _bounds(config):
    from anomaly_gym.envs.features import Featurizer

    return Featurizer(config).feature_bounds()


class NumpyPolicy:
    """The policy network's logit of "anomaly" for one feature row, in numpy (picklable:
    a worker process computes exactly what the main process does)."""

    def __init__(self, ops: list[tuple]) -> None:
        self.ops = ops  # ("linear", W, b), ("tanh",) or ("relu",)

    def __call__(self, x: np.ndarray) -> float:
        h = np.asarray(x, dtype=np.float64)
        for op in self.ops:
            if op[0] == "linear":
                h = h @ op[1] + op[2]
            elif op[0] == "tanh":
                h = np.tanh(h)
            else:
                h = np.maximum(h, 0.0)
        return float(h[1] - h[0])  # the logit (or Q) of 1 vs 0

    def proba(self, x: np.ndarray) -> float:
        """P(anomaly) of one feature row, as :meth:`PolicyScorer.row` gives it without a head."""
        return _sigmoid(self(x))


def _sigmoid(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(min(700.0, -margin)))


def _numpy_policy(model) -> NumpyPolicy | None:
    """The policy's logit of "anomaly" for one feature row in numpy, or None for unsupported nets."""
    import torch.nn as nn
    from stable_baselines3 import DQN
    from stable_baselines3.common.torch_layers import FlattenExtractor

    policy = model.policy
    if isinstance(model, DQN):
        extractor, layers = policy.q_net.features_extractor, list(policy.q_net.q_net)
    else:
        extractor = policy.features_extractor if policy.share_features_extractor else policy.pi_features_extractor
        layers = list(policy.mlp_extractor.policy_net) + [policy.action_net]
    if not isinstance(extractor, FlattenExtractor):
        return None
    ops: list[tuple] = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            ops.append(("linear", layer.weight.detach().cpu().double().numpy().T.copy(),
                        layer.bias.detach().cpu().double().numpy().copy()))
        elif isinstance(layer, nn.Tanh):
            ops.append(("tanh",))
        elif isinstance(layer, nn.ReLU):
            ops.append(("relu",))
        else:
            return None
    return NumpyPolicy(ops)
