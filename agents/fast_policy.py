"""The policy network evaluated in numpy: scoring with a bundle needs neither torch nor stable-baselines3.

A bundle's policy is a small MLP (stable-baselines3's ``MlpPolicy`` on a flat feature
vector).  Scoring only needs its forward pass to the two action logits (or Q-values), so
:func:`load_scoring_bundle` reads the weights from ``policy.safetensors`` as numpy arrays
and builds a :class:`NumpyPolicy`, which computes the policy's preference for "anomaly"
(``logit(1) - logit(0)``, or ``Q(s, 1) - Q(s, 0)`` for DQN) in float64, for one row
(:meth:`NumpyPolicy.__call__`) or a batch (:meth:`NumpyPolicy.margin`).  The result is a
:class:`ScoringBundle`, which scores like a :class:`~anomaly_gym.agents.PolicyBundle`
(``anomaly_proba``, ``score``) but cannot be trained, adapted or saved.

    >>> from anomaly_gym.agents.fast_policy import load_scoring_bundle
    >>> bundle = load_scoring_bundle("run/best.bundle.zip")   # no torch import
    >>> scores = bundle.score(X)                              # P(anomaly) of each row of X

A policy the numpy evaluator cannot run (an activation it does not know, a custom
feature extractor) is loaded as a full :class:`~anomaly_gym.agents.PolicyBundle`
instead, with torch.  :func:`policy_from_model` builds the same evaluator from an SB3
model already in memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from anomaly_gym.agents import serialization as ser
from anomaly_gym.agents.head import HeadedScoring
from anomaly_gym.agents.serialization import BundleError
from scipy.special import erf, expit


def _relu(h):
    return np.maximum(h, 0.0)


def _elu(h):
    return np.where(h > 0.0, h, np.expm1(np.minimum(h, 0.0)))


def _leaky_relu(h):
    return np.where(h > 0.0, h, 0.01 * h)


def _silu(h):
    return h * expit(h)


def _gelu(h):
    return 0.5 * h * (1.0 + erf(h / math.sqrt(2.0)))


#: Activations the numpy evaluator runs, by the name a bundle stores (torch's defaults).
ACTIVATIONS = {
    "torch.nn.Tanh": np.tanh,
    "torch.nn.ReLU": _relu,
    "torch.nn.ELU": _elu,
    "torch.nn.LeakyReLU": _leaky_relu,
    "torch.nn.SiLU": _silu,
    "torch.nn.GELU": _gelu,
}
#: ``policy_kwargs`` that do not change the forward pass of an ``MlpPolicy`` on a flat vector.
_NEUTRAL_KWARGS = {"optimizer_class", "optimizer_kwargs", "ortho_init", "share_features_extractor", "normalize_images", "log_std_init"}
_DEFAULT_ACTIVATION = {"ppo": "torch.nn.Tanh", "a2c": "torch.nn.Tanh", "dqn": "torch.nn.ReLU"}


class NumpyPolicy:
    """The policy network's preference for "anomaly" over "normal", in numpy (float64).

    Picklable (a refit worker computes exactly what the main process does).

    Args:
        ops: The forward pass: ``("linear", W, b)`` with ``W`` of shape (inputs, outputs),
            or ``(activation,)`` naming one of :data:`ACTIVATIONS`.
    """

    def __init__(self, ops: list[tuple]) -> None:
        for op in ops:
            if op[0] != "linear" and op[0] not in ACTIVATIONS:
                raise ValueError(f"unknown operation {op[0]!r}; known: linear, {sorted(ACTIVATIONS)}")
        self.ops = ops

    @property
    def n_inputs(self) -> int:
        return int(next(op[1].shape[0] for op in self.ops if op[0] == "linear"))

    def __call__(self, x: np.ndarray) -> float:
        """The margin of one feature row."""
        h = np.asarray(x, dtype=np.float64)
        for op in self.ops:
            h = h @ op[1] + op[2] if op[0] == "linear" else ACTIVATIONS[op[0]](h)
        return float(h[1] - h[0])  # the logit (or Q) of 1 vs 0

    def margin(self, features: np.ndarray, chunk: int = 65_536) -> np.ndarray:
        """The margins of the rows of ``features`` (2-D), in float64."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.n_inputs:
            raise ValueError(f"features must be 2-D with {self.n_inputs} columns (the policy's inputs), got shape {features.shape}")
        out = np.empty(len(features), dtype=np.float64)
        for start in range(0, len(features), chunk):
            h = features[start : start + chunk].astype(np.float64)
            for op in self.ops:
                h = h @ op[1] + op[2] if op[0] == "linear" else ACTIVATIONS[op[0]](h)
            out[start : start + chunk] = h[:, 1] - h[:, 0]
        return out

    def proba(self, x: np.ndarray) -> float:
        """P(anomaly) of one feature row (the sigmoid of its margin)."""
        return sigmoid(self(x))


def sigmoid(margin: float) -> float:
    return 1.0 / (1.0 + math.exp(min(700.0, -margin)))


# --------------------------------------------------------------------------- from a bundle's data


def _layer_sizes(algo: str, net_arch) -> tuple[list[int], list[int] | None]:
    """Hidden sizes of the action (or Q) network and of the value network (None for DQN)."""
    if algo == "dqn":
        arch = [64, 64] if net_arch is None else net_arch
        if not (isinstance(arch, list) and all(isinstance(n, int) and n > 0 for n in arch)):
            raise BundleError(f"a dqn policy's net_arch must be a list of layer sizes, got {net_arch!r}")
        return arch, None
    arch = {"pi": [64, 64], "vf": [64, 64]} if net_arch is None else net_arch
    if isinstance(arch, list):
        arch = {"pi": arch, "vf": arch}
    if not (
        isinstance(arch, dict)
        and all(isinstance(arch.get(k, []), list) for k in ("pi", "vf"))
        and all(isinstance(n, int) and n > 0 for k in ("pi", "vf") for n in arch.get(k, []))
    ):
        raise BundleError(f"net_arch must be a list of layer sizes or {{'pi': [...], 'vf': [...]}}, got {net_arch!r}")
    return list(arch.get("pi", [])), list(arch.get("vf", []))


def _expected_shapes(algo: str, n_inputs: int, pi: list[int], vf: list[int] | None) -> dict[str, tuple]:
    """Every tensor an SB3 ``MlpPolicy`` with these layers holds, with its shape."""
    shapes: dict[str, tuple] = {}

    def chain(prefix: str, sizes: list[int], n_in: int) -> int:
        for i, n_out in enumerate(sizes):
            shapes[f"{prefix}.{2 * i}.weight"], shapes[f"{prefix}.{2 * i}.bias"] = (n_out, n_in), (n_out,)
            n_in = n_out
        return n_in

    if algo == "dqn":
        for net in ("q_net", "q_net_target"):
            last = chain(f"{net}.q_net", pi, n_inputs)
            shapes[f"{net}.q_net.{2 * len(pi)}.weight"], shapes[f"{net}.q_net.{2 * len(pi)}.bias"] = (2, last), (2,)
        return shapes
    last = chain("mlp_extractor.policy_net", pi, n_inputs)
    shapes["action_net.weight"], shapes["action_net.bias"] = (2, last), (2,)
    last = chain("mlp_extractor.value_net", vf, n_inputs)
    shapes["value_net.weight"], shapes["value_net.bias"] = (1, last), (1,)
    return shapes


def policy_from_spec(algo: str, spec: dict, weights: bytes, origin: str) -> NumpyPolicy | None:
    """The policy described by a bundle's ``policy`` spec and ``policy.safetensors``, in numpy.

    Checks the spec and the tensors as strictly as loading the policy into torch does
    (:class:`BundleError` naming the problem); None when the network is one the numpy
    evaluator does not run (then load it with torch).
    """
    checked = ser.check_policy_spec(algo, spec, f"{origin}: bundle.json policy")
    kwargs = checked.policy_kwargs
    activation = kwargs.get("activation_fn", {"class": _DEFAULT_ACTIVATION[algo]})
    if set(kwargs) - _NEUTRAL_KWARGS - {"net_arch", "activation_fn"} or activation.get("class") not in ACTIVATIONS:
        return None
    pi, vf = _layer_sizes(algo, kwargs.get("net_arch"))
    expected = _expected_shapes(algo, checked.n_inputs, pi, vf)
    state = ser.load_tensors(weights, "policy.safetensors", origin)
    if set(state) != set(expected) or any(tuple(state[k].shape) != expected[k] for k in expected):
        raise BundleError(f"{origin}: policy.safetensors does not fit the policy described in bundle.json (tensors {sorted(state)} vs {sorted(expected)})")
    prefix = "q_net.q_net" if algo == "dqn" else "mlp_extractor.policy_net"
    ops: list[tuple] = []
    for i in range(len(pi)):
        ops += [_linear(state, f"{prefix}.{2 * i}"), (activation["class"],)]
    ops.append(_linear(state, f"q_net.q_net.{2 * len(pi)}" if algo == "dqn" else "action_net"))
    return NumpyPolicy(ops)


def _linear(state: dict, name: str) -> tuple:
    return ("linear", state[f"{name}.weight"].astype(np.float64).T.copy(), state[f"{name}.bias"].astype(np.float64))


def policy_from_model(model) -> NumpyPolicy | None:
    """The numpy evaluator of an SB3 model in memory (imports torch), or None for unsupported nets."""
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
    names = {getattr(nn, name.rsplit(".", 1)[1]): name for name in ACTIVATIONS}
    ops: list[tuple] = []
    for layer in layers:
        if isinstance(layer, nn.Linear):
            ops.append(("linear", layer.weight.detach().cpu().double().numpy().T.copy(), layer.bias.detach().cpu().double().numpy().copy()))
        elif type(layer) in names and _default_settings(layer):
            ops.append((names[type(layer)],))
        else:
            return None
    return NumpyPolicy(ops)


def _default_settings(layer) -> bool:
    """Whether an activation layer has torch's default settings (what :data:`ACTIVATIONS` computes)."""
    return getattr(layer, "alpha", 1.0) == 1.0 and getattr(layer, "negative_slope", 0.01) == 0.01 and getattr(layer, "approximate", "none") == "none"


# --------------------------------------------------------------------------- the scoring bundle


@dataclass
class ScoringBundle(HeadedScoring):
    """A policy bundle read for scoring only: the policy as a :class:`NumpyPolicy`.

    It scores exactly as :class:`~anomaly_gym.agents.PolicyBundle` does (``margin``,
    ``anomaly_proba``, ``fit_featurizer``, ``score``), in float64, without torch.

    Attributes:
        algo: ``"ppo"``, ``"a2c"`` or ``"dqn"``.
        policy: The policy network's forward pass.
        featurizer_config: The featurizer the policy was trained with.
        metadata: The bundle's metadata.
        featurizer: Optionally, a featurizer already fitted on a target's rows.
        head: Optionally, a target head from few-shot adaptation.
        path: The file the bundle was read from.
    """

    algo: str
    policy: NumpyPolicy
    featurizer_config: Any
    metadata: dict[str, Any] = field(default_factory=dict)
    featurizer: Any = None
    head: Any = None
    path: Path | None = None

    def policy_margin(self, features: np.ndarray) -> np.ndarray:
        return self.policy.margin(features)

    def fit_featurizer(self, X):
        """Fit a featurizer with this bundle's config on ``X`` (unlabelled) and keep it."""
        from anomaly_gym.envs.features import Featurizer

        self.featurizer = Featurizer(self.featurizer_config).fit(X)
        return self.featurizer

    def score(self, X, *, refit: bool = True) -> np.ndarray:
        """Anomaly scores in [0, 1] for the rows of ``X`` (see :meth:`PolicyBundle.score`)."""
        if refit or self.featurizer is None:
            if not refit:
                raise ValueError("this bundle has no fitted featurizer; call score(X, refit=True) or fit_featurizer first")
            self.fit_featurizer(X)
        return self.anomaly_proba(self.featurizer.transform(X), X)


def load_scoring_bundle(path: str | Path, *, device: str = "cpu"):
    """The bundle at ``path`` for scoring: a :class:`ScoringBundle` (numpy, no torch), or a
    full :class:`~anomaly_gym.agents.PolicyBundle` on ``device`` when the policy needs torch.

    Safe on files from anyone, as :meth:`PolicyBundle.load` is: nothing is executed.
    """
    from anomaly_gym.agents import bundle as bundle_module

    data = bundle_module._read_file(path)
    parts = bundle_module.read_parts(data, str(path))
    policy = policy_from_spec(parts.algo, parts.policy_spec, parts.weights, parts.origin)
    if policy is None:
        return bundle_module.PolicyBundle.from_bytes(data, device=device, origin=str(path))
    return ScoringBundle(parts.algo, policy, parts.config, parts.metadata, bundle_module.read_featurizer(parts), bundle_module.read_head(parts), Path(path))
