import numpy as np
import pytest
import torch
from anomaly_gym.agents import anomaly_proba, make_agent
from anomaly_gym.agents.monotone import MonotoneLogitCallback, monotone_columns, project_monotone
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from stable_baselines3.common.callbacks import BaseCallback, CallbackList

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))


@pytest.fixture(scope="module")
def env():
    return AnomalyDetectionEnv(tasks=[make_synthetic_task("local", n_rows=300, n_features=4, seed=5)], featurizer=SMALL)


def test_projection_makes_the_anomaly_logit_non_decreasing_in_score_features(env):
    model = make_agent("ppo", env, net_arch=[], device="cpu", seed=0, n_steps=32, batch_size=32)
    with torch.no_grad():
        model.policy.action_net.weight.normal_(0, 1.0)  # many negative weights
    cols = monotone_columns(SMALL.feature_names())
    before = model.policy.action_net.weight.detach().clone()
    project_monotone(model, cols)
    w = model.policy.action_net.weight.detach()
    diff = w[1] - w[0]
    assert torch.all(diff[cols] >= 0)
    free = np.setdiff1d(np.arange(len(diff)), cols)
    torch.testing.assert_close(diff[free], (before[1] - before[0])[free])  # free columns untouched
    torch.testing.assert_close(w[0] + w[1], before[0] + before[1])  # only the difference moved
    # raising any monotone feature never lowers P(anomaly)
    rng = np.random.default_rng(0)
    low, high = env.observation_space.low, env.observation_space.high
    x = rng.uniform(low, high, size=(50, len(low))).astype(np.float32)
    for c in cols:
        y = x.copy()
        y[:, c] = np.minimum(y[:, c] + 0.5, high[c])
        assert np.all(anomaly_proba(model, y) >= anomaly_proba(model, x) - 1e-6)  # float32 logits


class _WeightWatcher(BaseCallback):
    """Records, at every environment step, the smallest anomaly-minus-normal weight on the
    monotone columns: the weights the policy acts with during the rollouts."""

    def __init__(self, columns) -> None:
        super().__init__()
        self.columns = columns
        self.lowest: list[float] = []

    def _on_step(self) -> bool:
        w = self.model.policy.action_net.weight.detach()
        self.lowest.append(float((w[1] - w[0])[self.columns].min()))
        return True


def _watched_training(env, callbacks, seed=1):
    model = make_agent("ppo", env, net_arch=[], device="cpu", seed=seed, n_steps=64, batch_size=64, learning_rate=3e-2)
    with torch.no_grad():
        model.policy.action_net.weight.normal_(0, 1.0)  # start outside the constraint
    watcher = _WeightWatcher(monotone_columns(SMALL.feature_names()))
    model.learn(1024, callback=CallbackList([*callbacks, watcher]))
    return watcher.lowest


def test_callback_keeps_the_constraint_during_every_rollout(env):
    cols = monotone_columns(SMALL.feature_names())
    lowest = _watched_training(env, [MonotoneLogitCallback(cols)])
    assert len(lowest) == 1024  # one environment: a record per step
    assert min(lowest) >= 0.0  # every step of every rollout acted with a monotone policy


def test_the_watcher_sees_violations_without_the_callback(env):
    """The check above can fail: without the projection, the watched weights go negative."""
    assert min(_watched_training(env, [])) < 0.0


def test_monotone_needs_a_linear_policy(env):
    model = make_agent("ppo", env, net_arch=[8], device="cpu", n_steps=32, batch_size=32)
    with pytest.raises(ValueError, match="linear"):
        project_monotone(model, monotone_columns(SMALL.feature_names()))
    assert "consensus/pct_std" not in [SMALL.feature_names()[i] for i in monotone_columns(SMALL.feature_names())]
