"""stable-baselines3 agents for the detection environments, and the anomaly score they give."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.special import expit
from stable_baselines3 import A2C, DQN, PPO
from stable_baselines3.common.base_class import BaseAlgorithm

ALGORITHMS: dict[str, type[BaseAlgorithm]] = {"ppo": PPO, "a2c": A2C, "dqn": DQN}


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; ``"cuda"`` without one is an error."""
    device = str(device).lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA GPU is visible to torch; use --device cpu or auto")
        return device
    if device != "cpu":
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return device


def make_agent(
    algo: str,
    env,
    *,
    net_arch: list[int] | None = None,
    device: str = "auto",
    seed: int | None = 0,
    tensorboard_log: str | None = None,
    verbose: int = 0,
    **algo_kwargs: Any,
) -> BaseAlgorithm:
    """Build an SB3 agent for a detection environment.

    Args:
        algo: ``"ppo"`` (default choice of the toolkit), ``"a2c"`` or ``"dqn"``.
        env: A Gymnasium environment or an SB3 ``VecEnv``.
        net_arch: Hidden layer sizes of the policy (and value / Q) networks; ``[]`` is a
            linear policy on the features.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        seed: Seed of the agent's own randomness.
        tensorboard_log: Folder for SB3's ``rollout/`` and ``train/`` scalars.
        **algo_kwargs: Passed to the SB3 constructor (``learning_rate``, ``n_steps``, ...).
    """
    key = algo.lower()
    if key not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {sorted(ALGORITHMS)}")
    policy_kwargs = dict(algo_kwargs.pop("policy_kwargs", None) or {})
    if net_arch is not None:
        arch = list(net_arch)
        policy_kwargs["net_arch"] = arch if key == "dqn" else dict(pi=arch, vf=arch or [64])
    model = ALGORITHMS[key](
        "MlpPolicy",
        env,
        policy_kwargs=policy_kwargs,
        device=resolve_device(device),
        seed=seed,
        tensorboard_log=tensorboard_log,
        verbose=verbose,
        **algo_kwargs,
    )
    if tensorboard_log is None:
        quiet_logger(model)
    return model


def quiet_logger(model: BaseAlgorithm) -> BaseAlgorithm:
    """Give ``model`` a logger that writes to stdout when verbose and nowhere else.

    Without one, every ``learn()`` call makes SB3 create an empty ``SB3-<date>`` folder
    in the temporary directory.
    """
    import sys

    from stable_baselines3.common.logger import HumanOutputFormat, Logger

    formats = [HumanOutputFormat(sys.stdout)] if model.verbose else []
    model.set_logger(Logger(folder=None, output_formats=formats))
    return model


@torch.no_grad()
def policy_margin(model: BaseAlgorithm, features: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """The policy's preference for "anomaly" over "normal", in float64, for each row of ``features``.

    For PPO and A2C it is the logit difference of the categorical policy; for DQN,
    ``Q(s, 1) - Q(s, 0)``.  :func:`anomaly_proba` is its sigmoid.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim != 2:
        raise ValueError(f"features must be 2-D (rows, features), got shape {features.shape}")
    expected = model.observation_space.shape[0]
    if features.shape[1] != expected:
        raise ValueError(f"features have {features.shape[1]} columns but the policy expects {expected}")
    policy = model.policy
    policy.set_training_mode(False)
    out = np.empty(len(features), dtype=np.float64)
    with torch.no_grad():
        for start in range(0, len(features), batch_size):
            obs = torch.as_tensor(features[start : start + batch_size], device=model.device)
            if isinstance(model, DQN):
                q = policy.q_net(obs)
                margin = q[:, 1] - q[:, 0]
            else:
                logits = policy.get_distribution(obs).distribution.logits
                margin = logits[:, 1] - logits[:, 0]
            out[start : start + batch_size] = margin.double().cpu().numpy()
    return out


def anomaly_proba(model: BaseAlgorithm, features: np.ndarray, batch_size: int = 65_536) -> np.ndarray:
    """The policy's probability of action 1 ("anomaly") for each row of ``features``.

    This is the anomaly score used everywhere (AUROC, AUPRC, ``detect``).  For PPO and
    A2C it is the categorical policy's probability (computed in float64 from the logits,
    so confident scores keep their order); for DQN, which has no stochastic
    policy, it is ``sigmoid(Q(s, 1) - Q(s, 0))``, monotone in the greedy preference.
    """
    # sigmoid of the margin in float64: a confident policy's float32 probabilities
    # round to exactly 0 or 1 and would turn its ranking into ties.
    return expit(policy_margin(model, features, batch_size))
