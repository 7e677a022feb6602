"""The discovery policy: one shared network scores every candidate of Discover-v1's pool.

:class:`CandidatePolicy` is an sb3-contrib ``MaskableActorCriticPolicy`` whose actor reads
the observation as (pool_size, columns): every candidate, next to the pool's mean, goes
through the same small MLP, which returns that candidate's logit.  The policy is therefore
the same function of a candidate wherever it sits in the pool (permutation-equivariant),
and learns from every slot at once; the critic reads the mean of the candidates' hidden
vectors.  The action distribution is the masked softmax over the logits.

:class:`DiscoverBundle` stores a trained policy as data only, like the detection policy's
bundle (format 3, see :mod:`anomaly_gym.agents.serialization`): ``bundle.json`` (format,
policy spec, featurizer config, environment settings, metadata) and
``policy.safetensors``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from anomaly_gym.agents import serialization as ser
from anomaly_gym.agents.bundle import package_version
from anomaly_gym.agents.factory import quiet_logger
from anomaly_gym.agents.serialization import BundleError
from anomaly_gym.envs.features import FeaturizerConfig
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from torch import nn

BUNDLE_FORMAT = "anomaly-gym-discover-bundle"
BUNDLE_VERSION = 4
#: The environment settings a bundle records (arguments of ``DiscoverEnv``).
ENV_SETTINGS = ("budget", "pool_size", "random_share", "normal_reward", "similarity_scale", "raw_neighbours")


class CandidateScorer(nn.Module):
    """SB3's ``mlp_extractor`` for :class:`CandidatePolicy`: per-candidate logits and a pooled critic input."""

    def __init__(self, n_slots: int, n_columns: int, hidden: int, tail_columns: int = 0) -> None:
        super().__init__()
        self.n_slots = n_slots
        self.n_columns = n_columns
        self.first = n_columns - tail_columns if 0 < tail_columns < n_columns else 0
        n_in = n_columns - self.first
        self.encoder = nn.Sequential(nn.Linear(2 * n_in, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())
        self.logit = nn.Linear(hidden, 1)
        self.linear = nn.Linear(n_columns, 1, bias=False)
        self.latent_dim_pi = n_slots
        self.latent_dim_vf = hidden

    def start_from_heuristic(self, column: int, weight: float) -> None:
        """Make the linear part of the logit ``weight * x[column]`` (the network's part starts near 0).

        The untrained policy then shows candidates in the order of that column (a softmax
        at temperature ``1 / weight``), and training learns corrections to it: residual
        policy learning, instead of starting from a uniform choice among 64 candidates.
        """
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.weight[0, column] = weight

    def _hidden(self, features: torch.Tensor) -> torch.Tensor:
        x = features.reshape(-1, self.n_slots, self.n_columns)[..., self.first :]
        context = x.mean(dim=1, keepdim=True).expand_as(x)
        return self.encoder(torch.cat([x, context], dim=-1))

    def _logits(self, features: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        x = features.reshape(-1, self.n_slots, self.n_columns)
        return (self.logit(h) + self.linear(x)).squeeze(-1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self._hidden(features)
        return self._logits(features, h), h.mean(dim=1)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return self._logits(features, self._hidden(features))

    def forward_critic(self, features: torch.Tensor) -> torch.Tensor:
        return self._hidden(features).mean(dim=1)


class CandidatePolicy(MaskableActorCriticPolicy):
    """MaskablePPO's actor-critic with :class:`CandidateScorer`.

    ``hidden`` is the scorer's width; with ``heuristic_column`` >= 0 the untrained policy
    starts from ``heuristic_weight`` times that observation column
    (:meth:`CandidateScorer.start_from_heuristic`); with ``tail_columns`` > 0 the network
    reads only the last that many columns (the feedback features: quantities whose meaning
    does not depend on the dataset), while the linear part reads all.
    """

    def __init__(
        self,
        observation_space,
        action_space,
        lr_schedule,
        hidden: int = 64,
        heuristic_column: int = -1,
        heuristic_weight: float = 0.0,
        tail_columns: int = 0,
        **kwargs,
    ) -> None:
        self.hidden = int(hidden)
        self.tail_columns = int(tail_columns)
        self.heuristic_column = int(heuristic_column)
        self.heuristic_weight = float(heuristic_weight)
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build_mlp_extractor(self) -> None:
        n_slots, n_columns = self.observation_space.shape
        self.mlp_extractor = CandidateScorer(n_slots, n_columns, self.hidden, self.tail_columns)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        # the scorer's logits are the action logits: no linear layer mixes the slots
        self.action_net = nn.Identity()
        nn.init.orthogonal_(self.mlp_extractor.logit.weight, gain=0.01)
        nn.init.zeros_(self.mlp_extractor.logit.bias)
        if self.heuristic_column >= 0:
            self.mlp_extractor.start_from_heuristic(self.heuristic_column, self.heuristic_weight)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(hidden=self.hidden, heuristic_column=self.heuristic_column, heuristic_weight=self.heuristic_weight, tail_columns=self.tail_columns)
        return data


def make_discover_agent(
    env, *, hidden: int = 64, heuristic_column: int = -1, heuristic_weight: float = 0.0, tail_columns: int = 0, seed: int = 0, device: str = "cpu", **ppo_kwargs
):
    """A MaskablePPO agent with :class:`CandidatePolicy` on ``env`` (a VecEnv of Discover-v1)."""
    from sb3_contrib import MaskablePPO

    kwargs = {"hidden": hidden, "heuristic_column": heuristic_column, "heuristic_weight": heuristic_weight, "tail_columns": tail_columns}
    return quiet_logger(MaskablePPO(CandidatePolicy, env, policy_kwargs=kwargs, seed=seed, device=device, verbose=0, **ppo_kwargs))


def candidate_logits(model, observation: np.ndarray) -> np.ndarray:
    """The policy's logit of every slot for one observation (pool_size, columns)."""
    obs = torch.as_tensor(np.asarray(observation, dtype=np.float32)[None], device=model.device)
    with torch.no_grad():
        features = model.policy.extract_features(obs, model.policy.pi_features_extractor)
        return model.policy.mlp_extractor.forward_actor(features)[0].cpu().numpy()


@dataclass
class DiscoverBundle:
    """A trained discovery policy and the settings of the environment it was trained in."""

    model: Any
    featurizer_config: FeaturizerConfig
    env_settings: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)

    def choose(self, observation: np.ndarray, mask: np.ndarray) -> int:
        """The slot the policy shows next (its most likely action among the masked-in slots)."""
        logits = candidate_logits(self.model, observation)
        return int(np.argmax(np.where(mask, logits, -np.inf)))

    def to_bytes(self) -> bytes:
        spec, tensors = ser.encode_policy(self.model, "ppo")
        header = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "algo": "maskable_ppo",
            "policy": spec,
            "observation_shape": list(self.model.observation_space.shape),
            "featurizer": self.featurizer_config.to_dict(),
            "env": {k: self.env_settings[k] for k in ENV_SETTINGS},
            "metadata": self.metadata,
            "package_version": package_version(),
        }
        members = {"bundle.json": json.dumps(header, indent=2, default=_json_default).encode(), "policy.safetensors": tensors}
        return ser.write_archive(members)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> DiscoverBundle:
        """Read a bundle written by :meth:`save`; never unpickles.  Raises :class:`BundleError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no such discovery bundle: {path}")
        return cls.from_bytes(path.read_bytes(), str(path), device=device)

    @classmethod
    def from_bytes(cls, data: bytes, origin: str = "<bytes>", *, device: str = "cpu") -> DiscoverBundle:
        members = ser.read_archive(data, origin)
        if "bundle.json" not in members or "policy.safetensors" not in members:
            raise BundleError(f"{origin}: a discovery bundle needs bundle.json and policy.safetensors")
        header = ser.parse_json(members["bundle.json"], "bundle.json", origin)
        where = f"{origin}: bundle.json"
        if ser.field(header, "format", str, where) != BUNDLE_FORMAT:
            raise BundleError(f"{where}: not a discovery bundle (format {header.get('format')!r}, expected {BUNDLE_FORMAT!r})")
        ser.field(header, "version", int, where, check=lambda v: v == BUNDLE_VERSION)
        try:
            config = FeaturizerConfig.from_dict(ser.field(header, "featurizer", dict, where))
        except (TypeError, ValueError) as exc:
            raise BundleError(f"{where}: bad featurizer config ({exc})") from None
        env = ser.field(header, "env", dict, where)
        missing = set(ENV_SETTINGS) - set(env)
        if missing:
            raise BundleError(f"{where}: env settings lack {sorted(missing)}")
        shape = ser.field(header, "observation_shape", list, where, check=lambda s: len(s) == 2 and all(isinstance(v, int) and v > 0 for v in s))
        model = _decode_policy(ser.field(header, "policy", dict, where), tuple(shape), members["policy.safetensors"], device, origin)
        return cls(model, config, {k: env[k] for k in ENV_SETTINGS}, ser.field(header, "metadata", dict, where, default={}))


def _decode_policy(spec: dict, shape: tuple[int, int], tensors: bytes, device: str, origin: str):
    """Rebuild the MaskablePPO agent described by ``spec`` and load its weights."""
    from sb3_contrib import MaskablePPO

    where = f"{origin}: bundle.json policy"
    low = np.asarray(ser.field(spec, "observation_low", list, where), dtype=np.float64)
    high = np.asarray(ser.field(spec, "observation_high", list, where), dtype=np.float64)
    if low.shape != shape or high.shape != shape:
        raise BundleError(f"{where}: observation bounds must have shape {shape}")
    n_actions = ser.field(spec, "n_actions", int, where, check=lambda n: n == shape[0])
    kwargs = ser.field(spec, "policy_kwargs", dict, where)
    kinds = {"hidden": int, "heuristic_column": int, "heuristic_weight": (int, float), "tail_columns": int}
    kwargs = {"tail_columns": 0, **kwargs}  # bundles written before tail_columns existed
    if set(kwargs) != set(kinds) or not all(isinstance(kwargs[k], kind) and not isinstance(kwargs[k], bool) for k, kind in kinds.items()):
        raise BundleError(f"{where}: policy_kwargs must hold exactly {sorted(kinds)} as numbers, got {kwargs}")
    hyper = ser.field(spec, "hyperparameters", dict, where)
    unknown = set(hyper) - set(ser.HYPERPARAMETERS["ppo"])
    if unknown:
        raise BundleError(f"{where}: unknown hyperparameter(s) {sorted(unknown)}")
    model = ser.build_model(
        lambda: MaskablePPO(CandidatePolicy, env=None, device=device, _init_setup_model=False, policy_kwargs=kwargs, **hyper),
        low,
        high,
        n_actions,
        f"{where}: cannot build the policy from these settings",
    )
    ser.load_policy_state(model, tensors, origin)
    return model


def _json_default(obj):
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"cannot store a {type(obj).__name__} in bundle.json")


#: The discovery policy shipped inside the package, relative to ``anomaly_gym.agents``.
DEFAULT_DISCOVER_BUNDLE = ("models", "default.discover.bundle.zip")


def load_default_discover_bundle(*, device: str = "cpu") -> DiscoverBundle:
    """The discovery bundle shipped with the package (``anomaly-gym train --discover`` made it).

    Raises:
        FileNotFoundError: it is not installed (for example in a source tree without it).
    """
    from importlib import resources

    location = resources.files("anomaly_gym.agents").joinpath(*DEFAULT_DISCOVER_BUNDLE)
    if not location.is_file():
        raise FileNotFoundError(
            f"the default discovery bundle is not installed ({location}); train one with "
            "`anomaly-gym train --discover --sources SRC -o BUNDLE` and pass --model BUNDLE, or use --model feedback-greedy"
        )
    return DiscoverBundle.from_bytes(location.read_bytes(), str(location), device=device)
