"""Supervised pretraining of the discovery policy: the loss, the returns, the DAgger loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomaly_gym.agents.discover import make_discover_agent
from anomaly_gym.envs import DiscoverEnv, FeaturizerConfig
from anomaly_gym.envs.discover import FEEDBACK_FEATURES
from anomaly_gym.envs.sources import make_synthetic_task
from anomaly_gym.meta.discover_pretrain import (
    PretrainConfig,
    _fit_actor,
    _scorer_logits,
    collect_states,
    discounted_returns,
    listwise_loss,
    pretrain_scorer,
)
from stable_baselines3.common.vec_env import DummyVecEnv

TINY = FeaturizerConfig(detectors=("ecod", "copod", "hbos"), descriptors=False)


def test_listwise_loss_is_minus_log_of_the_mass_on_anomalies():
    logits = torch.tensor([[0.0, np.log(3.0), 50.0], [1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])  # the masked slot's huge logit must not count
    labels = torch.tensor([[0, 1, 1], [0, 0, 0]])  # the second pool holds no anomaly: no listwise term
    loss = listwise_loss(logits, mask, labels, bce_weight=0.0)
    assert float(loss) == pytest.approx(-np.log(0.75), rel=1e-5)
    with_bce = listwise_loss(logits, mask, labels, bce_weight=1.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], (labels[mask] == 1).float())
    assert float(with_bce) == pytest.approx(float(loss + bce), rel=1e-5)


def test_discounted_returns_restart_at_every_episode():
    rewards = np.array([1.0, -1.0, 1.0, 1.0, 1.0])
    episodes = np.array([0, 0, 0, 1, 1])
    assert np.allclose(discounted_returns(rewards, episodes, 0.5), [0.75, -0.5, 1.0, 1.5, 1.0])


@pytest.fixture(scope="module")
def setup():
    kinds = ("clustered", "local", "global")
    tasks = [make_synthetic_task(kinds[i], n_rows=200, n_features=3, contamination=0.1, seed=i) for i in range(3)]
    env = DiscoverEnv(tasks, featurizer=TINY, pool_size=16, budget=15)
    vec = DummyVecEnv([lambda: DiscoverEnv(tasks, featurizer=TINY, pool_size=16, budget=15)])
    column = len(TINY.feature_names()) + FEEDBACK_FEATURES.index("feedback/learned_score")
    agent = make_discover_agent(vec, hidden=16, heuristic_column=column, heuristic_weight=50.0, tail_columns=len(FEEDBACK_FEATURES), n_steps=16, batch_size=16)
    return tasks, env, agent


@pytest.mark.slow
def test_collected_labels_are_the_pool_rows_labels(setup):
    tasks, env, agent = setup
    obs, mask, labels, rewards, episodes = collect_states(agent, env, tasks[:1], 1, 0.0, np.random.default_rng(0))
    assert obs.shape[0] == mask.shape[0] == labels.shape[0] == len(rewards) == 15
    assert np.all(labels[mask] >= 0) and np.all(labels[~mask] == -1)
    assert rewards.sum() == 2 * np.sum(rewards == 1.0) - 15 and np.all(episodes == 0)
    env.reset(seed=0, options={"task": tasks[0]})
    pool = env._session._pool
    assert np.array_equal(env.candidate_labels()[pool >= 0], tasks[0].y[pool[pool >= 0]])


@pytest.mark.slow
def test_fitting_lowers_the_loss_on_the_gathered_states(setup):
    tasks, env, agent = setup
    rng = np.random.default_rng(1)
    obs, mask, labels, _, _ = collect_states(agent, env, tasks, 2, 0.2, rng)
    t = [torch.as_tensor(a) for a in (obs, mask, labels)]
    cfg = PretrainConfig(epochs=6, batch_size=16)
    with torch.no_grad():
        before = float(listwise_loss(_scorer_logits(agent, t[0]), t[1], t[2], cfg.bce_weight))
    _fit_actor(agent, (obs, mask, labels), cfg, rng)
    with torch.no_grad():
        after = float(listwise_loss(_scorer_logits(agent, t[0]), t[1], t[2], cfg.bce_weight))
    assert after < before


@pytest.mark.slow
def test_pretraining_fits_the_critic_to_the_returns(setup):
    tasks, env, agent = setup
    losses = pretrain_scorer(agent, env, tasks, PretrainConfig(rounds=2, episodes=1, epochs=1, batch_size=16), seed=0)
    assert len(losses) == 2 and all(np.isfinite(losses))
    obs, _, _, rewards, episodes = collect_states(agent, env, tasks, 1, 0.0, np.random.default_rng(3))
    returns = discounted_returns(rewards, episodes, 0.99)
    with torch.no_grad():
        values = agent.policy.predict_values(torch.as_tensor(obs)).numpy().ravel()
    assert np.mean((values - returns) ** 2) < np.mean((returns - returns.mean()) ** 2) * 1.5
    assert np.corrcoef(values, returns)[0, 1] > 0.3
