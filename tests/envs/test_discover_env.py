"""``AnomalyGym/Discover-v1``: conformance, masks, rewards, feedback features, seeding, speed."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from anomaly_gym.envs import DISCOVER_ENV_ID, DiscoverEnv, FeaturizerConfig
from anomaly_gym.envs.discover import FEEDBACK_FEATURES, DiscoverySession, bench_step, raw_embedding
from anomaly_gym.envs.sources import make_synthetic_task
from gymnasium.utils.env_checker import check_env

TINY = FeaturizerConfig(detectors=("ecod", "copod"))  # no PyOD import: fast to fit


@pytest.fixture(scope="module")
def tasks():
    return [
        make_synthetic_task("global", n_rows=300, n_features=4, contamination=0.05, seed=0),
        make_synthetic_task("local", n_rows=240, n_features=6, contamination=0.1, seed=1),
    ]


def _env(tasks, **kwargs) -> DiscoverEnv:
    kwargs.setdefault("pool_size", 16)
    kwargs.setdefault("budget", 20)
    return DiscoverEnv(tasks, featurizer=TINY, **kwargs)


def _run(env: DiscoverEnv, seed: int, policy=lambda obs, mask: int(np.flatnonzero(mask)[0])):
    obs, _ = env.reset(seed=seed)
    rows, rewards, done = [], [], False
    while not done:
        obs, reward, done, truncated, info = env.step(policy(obs, env.action_masks()))
        assert not truncated
        rows.append(info["index"])
        rewards.append(reward)
    return rows, rewards, info


def _col(name: str) -> int:
    return len(TINY.feature_names()) + FEEDBACK_FEATURES.index(f"feedback/{name}")


def test_registered_and_check_env_clean(tasks):
    assert DISCOVER_ENV_ID in gym.registry
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(DISCOVER_ENV_ID, tasks=tasks, featurizer=TINY, pool_size=16, budget=10)
        check_env(env.unwrapped)
    assert [str(w.message) for w in caught] == []


def test_observation_shape_and_bounds(tasks):
    env = _env(tasks)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (16, len(TINY.feature_names()) + len(FEEDBACK_FEATURES))
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert env.action_space.n == 16 and env.action_masks().all()
    # before any answer: no similarity, full budget
    assert np.all(obs[:, [_col("sim_anomaly"), _col("sim_normal"), _col("raw_anomaly"), _col("raw_normal")]] == 0)
    assert np.all(obs[:, _col("budget_left")] == 1.0)


def test_rows_are_never_shown_twice_and_rewards_follow_labels(tasks):
    env = _env(tasks, normal_reward=-0.1)
    rows, rewards, info = _run(env, seed=3, policy=lambda o, m: int(np.flatnonzero(m)[-1]))
    y = tasks[0].y
    assert len(rows) == 20 and len(set(rows)) == 20
    assert rewards == [1.0 if y[r] else -0.1 for r in rows]
    assert info["found"] == int(y[rows].sum()) == env.state().found


def test_feedback_features_react_to_answers(tasks):
    env = _env(tasks)
    obs, _ = env.reset(seed=0)
    # show the candidate with the highest prior rank
    obs, *_, info = env.step(int(np.argmax(np.where(env.action_masks(), obs[:, _col("prior_rank")], -1))))
    cls = 0 if info["label"] == 1 else 1  # sim_anomaly when an anomaly was found, else sim_normal
    assert (obs[:, _col(("sim_anomaly", "sim_normal")[cls])] > 0).any()
    assert (obs[:, _col(("raw_anomaly", "raw_normal")[cls])] > 0).any()
    assert np.allclose(obs[:, _col("budget_left")], 1 - 1 / 20)
    assert np.allclose(obs[:, _col("hit_rate")], float(info["label"]))


def test_small_task_masks_empty_slots_and_ends_when_rows_run_out():
    task = make_synthetic_task("global", n_rows=30, n_features=3, contamination=0.2, seed=4)
    env = DiscoverEnv([task], featurizer=TINY, pool_size=40, budget=100)
    obs, _ = env.reset(seed=0)
    mask = env.action_masks()
    assert mask.sum() == 30 and np.all(obs[~mask] == 0)
    with pytest.raises(ValueError, match="holds no candidate"):
        env.step(int(np.flatnonzero(~mask)[0]))
    rows, rewards, info = _run(env, seed=0)
    assert sorted(rows) == list(range(30)) and info["found"] == task.n_anomalies


def test_same_seed_same_episode_and_seeds_differ(tasks):
    env = _env(tasks, random_share=0.5)
    pick_random = lambda o, m: int(np.flatnonzero(m)[-1])  # noqa: E731 - the random slots sit at the end
    a, _, _ = _run(env, 5, pick_random)
    b, _, _ = _run(env, 5, pick_random)
    c, _, _ = _run(env, 6, pick_random)
    assert a == b and a != c


def test_a_session_serves_an_unlabelled_target_one_answer_at_a_time(tasks):
    env = _env(tasks)
    obs, _ = env.reset(seed=2)
    feats, prior = env._data[tasks[0].hash]
    session = DiscoverySession(feats, prior, env._pct_cols, budget=20, pool_size=16, random_share=0.25, similarity_scale=0.1, rng=np.random.default_rng(0))
    assert np.array_equal(session.observation()[:12], obs[:12])  # the prior's part of the pool (the rest is random)
    row = session.reveal(0, 1)
    assert session.shown == [row] and session.labels == [1] and session.observation()[0, _col("hit_rate")] == 1.0
    with pytest.raises(ValueError, match="label must be 0 or 1"):
        session.reveal(1, 2)


def test_resampling_tasks_on_reset(tasks):
    env = _env(tasks, resample_task_on_reset=True)
    names = {env.reset(seed=s)[1]["task"] for s in range(8)}
    assert names == {t.name for t in tasks}


def test_bad_arguments():
    with pytest.raises(ValueError, match="normal_reward"):
        DiscoverEnv(None, normal_reward=0.5)
    with pytest.raises(ValueError, match="budget"):
        DiscoverEnv(None, budget=0)


def test_one_step_on_10000_rows_is_under_a_millisecond():
    # best of three medians, as `anomaly-gym bench discover` reports: robust to a busy shared machine
    assert min(bench_step(10_000, 40, seed) for seed in range(3)) < 1e-3


def test_raw_embedding_is_in_units_of_the_nearest_neighbour_distance(tasks):
    Z = raw_embedding(tasks[0].X[:150])
    d = np.sqrt(((Z[:, None] - Z[None]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    assert Z.shape == (150, 4) and np.median(d.min(axis=1)) == pytest.approx(1.0, rel=1e-6)


def test_raw_features_are_the_similarity_to_the_nearest_labelled_row(tasks):
    env = _env(tasks)
    env.reset(seed=0)
    feats, prior = env._data[tasks[0].hash]
    Z = raw_embedding(tasks[0].X)
    session = DiscoverySession(
        feats, prior, env._pct_cols, budget=20, pool_size=16, random_share=0.25, similarity_scale=0.1, rng=np.random.default_rng(0), raw=Z
    )
    shown = session.reveal(0, 1)
    live = session.action_masks()
    rows = session._pool[live]
    obs = session.observation()[live]
    assert np.allclose(obs[:, _col("raw_anomaly")], np.exp(-np.linalg.norm(Z[rows] - Z[shown], axis=1)), atol=1e-6)
    assert np.all(obs[:, _col("raw_normal")] == 0)
