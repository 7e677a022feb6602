"""Supervised meta-pretraining of the discovery policy: an in-context classifier of the candidates.

PPO from the feedback-greedy start learns little in the budgets we can afford: the policy
starts nearly deterministic on ``feedback/learned_score`` (weight 50), its network part
starts near zero, and a +1/-1 reward per query is a weak, noisy signal for the few
hundred episodes it sees.  But in Discover-v1 the reward of a query depends only on the
label of the row shown, so the myopic part of a good policy is a classifier: "is this
candidate an anomaly, given the answers so far?".  Its training signal is dense: every
candidate of every pool of every step on a source task has a known label.

:func:`pretrain_scorer` trains the policy's candidate scorer that way, across the source
tasks, by dataset aggregation (DAgger, Ross et al. 2011): round 0 plays the current
policy (the feedback-greedy start), every later round plays the scorer trained so far
(with a little random exploration), and the scorer is refitted on all states gathered.
The loss is listwise: the negative log of the probability mass the masked softmax puts on
the pool's anomalies (the log-likelihood of showing an anomaly next), plus a per-candidate
logistic loss that also ranks pools holding no anomaly.  Afterwards the critic's last
layer is fitted to the discounted returns of the collected episodes, so that PPO
fine-tuning (the same agent, :func:`~anomaly_gym.meta.discover.train_discover_policy`)
starts from a policy and a value estimate that both make sense.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from anomaly_gym.envs.discover import DiscoverEnv
from anomaly_gym.envs.tasks import Task


@dataclass(frozen=True)
class PretrainConfig:
    """Settings of :func:`pretrain_scorer`."""

    rounds: int = 4
    """DAgger rounds (round 0 plays the untrained policy)."""
    episodes: int = 2
    """Episodes per source task and round."""
    epochs: int = 4
    """Passes over all states gathered so far, after each round."""
    batch_size: int = 128
    """States per gradient step."""
    learning_rate: float = 1e-3
    """Adam's learning rate."""
    explore: float = 0.1
    """Chance per step of showing a random candidate while gathering states (rounds > 0)."""
    bce_weight: float = 0.1
    """Weight of the per-candidate logistic loss next to the listwise loss."""
    gamma: float = 0.99
    """Discount of the returns the critic is fitted to."""


def _scorer_logits(model, obs: torch.Tensor) -> torch.Tensor:
    features = model.policy.extract_features(obs, model.policy.pi_features_extractor)
    return model.policy.mlp_extractor.forward_actor(features)


def collect_states(model, env: DiscoverEnv, tasks: list[Task], episodes: int, explore: float, rng: np.random.Generator):
    """Play ``model`` greedily (``explore``: chance of a random candidate) on every task; the states seen.

    Returns observations (steps, pool, columns), masks, the candidates' labels (-1 for
    empty slots) and each step's discounted-return target inputs (rewards, episode ids).
    """
    obs_l, mask_l, lab_l, rew_l, ep_l = [], [], [], [], []
    episode = 0
    for task in tasks:
        for _ in range(episodes):
            obs, _ = env.reset(seed=int(rng.integers(2**31)), options={"task": task})
            done = False
            while not done:
                mask = env.action_masks()
                labels = env.candidate_labels()
                if rng.random() < explore:
                    action = int(rng.choice(np.flatnonzero(mask)))
                else:
                    with torch.no_grad():
                        logits = _scorer_logits(model, torch.as_tensor(obs[None], device=model.device))[0].cpu().numpy()
                    action = int(np.argmax(np.where(mask, logits, -np.inf)))
                obs_l.append(obs)
                mask_l.append(mask)
                lab_l.append(labels)
                obs, reward, done, _, _ = env.step(action)
                rew_l.append(reward)
                ep_l.append(episode)
            episode += 1
    return np.stack(obs_l), np.stack(mask_l), np.stack(lab_l), np.asarray(rew_l), np.asarray(ep_l)


def discounted_returns(rewards: np.ndarray, episodes: np.ndarray, gamma: float) -> np.ndarray:
    """The discounted return from every step to the end of its episode."""
    out = np.zeros(len(rewards))
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if i == len(rewards) - 1 or episodes[i + 1] != episodes[i]:
            running = 0.0
        running = rewards[i] + gamma * running
        out[i] = running
    return out


def listwise_loss(logits: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, bce_weight: float) -> torch.Tensor:
    """-log P(the masked softmax picks an anomaly), over pools holding one, plus ``bce_weight`` x per-candidate BCE."""
    neg = torch.finfo(logits.dtype).min / 2
    masked = torch.where(mask, logits, torch.full_like(logits, neg))
    anomalous = mask & (labels == 1)
    has = anomalous.any(dim=1)
    loss = logits.new_zeros(())
    if has.any():
        pos = torch.where(anomalous, logits, torch.full_like(logits, neg))
        loss = (torch.logsumexp(masked[has], dim=1) - torch.logsumexp(pos[has], dim=1)).mean()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], (labels[mask] == 1).float())
    return loss + bce_weight * bce


def _fit_actor(model, data, cfg: PretrainConfig, rng: np.random.Generator) -> float:
    obs, mask, labels = (torch.as_tensor(a, device=model.device) for a in data)
    params = list(model.policy.mlp_extractor.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    last = float("nan")
    for _ in range(cfg.epochs):
        order = torch.as_tensor(rng.permutation(len(obs)), device=model.device)
        for start in range(0, len(obs), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = listwise_loss(_scorer_logits(model, obs[idx]), mask[idx], labels[idx], cfg.bce_weight)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            last = float(loss.detach())
    return last


def _fit_critic(model, obs: np.ndarray, returns: np.ndarray) -> None:
    """Least squares of the returns on the critic's latent (the scorer stays as it is)."""
    policy = model.policy
    with torch.no_grad():
        t = torch.as_tensor(obs, device=model.device)
        latent = policy.mlp_extractor.forward_critic(policy.extract_features(t, policy.vf_features_extractor)).cpu().numpy()
    design = np.hstack([latent, np.ones((len(latent), 1))])
    coef = np.linalg.lstsq(design.T @ design + 1e-3 * np.eye(design.shape[1]), design.T @ returns, rcond=None)[0]
    with torch.no_grad():
        policy.value_net.weight.copy_(torch.as_tensor(coef[:-1][None], dtype=torch.float32))
        policy.value_net.bias.fill_(float(coef[-1]))


def pretrain_scorer(model, env: DiscoverEnv, tasks: list[Task], config: PretrainConfig | None = None, seed: int = 0, progress=None) -> list[float]:
    """Train ``model``'s candidate scorer across ``tasks`` by DAgger (see the module docstring); the last loss per round."""
    cfg = config or PretrainConfig()
    rng = np.random.default_rng(seed)
    gathered: list[tuple] = []
    losses = []
    for round_ in range(cfg.rounds):
        states = collect_states(model, env, tasks, cfg.episodes, cfg.explore if round_ else 0.0, rng)
        gathered.append(states)
        data = [np.concatenate([g[i] for g in gathered]) for i in range(3)]
        losses.append(_fit_actor(model, data, cfg, rng))
        if progress:
            progress(f"pretraining round {round_ + 1}/{cfg.rounds}: {len(data[0])} states, loss {losses[-1]:.3f}")
    obs = np.concatenate([g[0] for g in gathered])
    returns = np.concatenate([discounted_returns(g[3], g[4], cfg.gamma) for g in gathered])
    _fit_critic(model, obs, returns)
    return losses
