"""``AnomalyGym/Detect-v0``: Gymnasium conformance, rewards, seeding, episodes, tasks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from anomaly_gym.envs import ENV_ID, AnomalyDetectionEnv, Featurizer, FeaturizerConfig, featurize_task
from anomaly_gym.envs.sources import make_synthetic_task
from anomaly_gym.envs.tasks import Task, make_task
from gymnasium.utils.env_checker import check_env

TINY = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))
# tabular environments built like Detect-v0 (Stream-v0 has its own tests)
REGISTERED = sorted(
    env_id for env_id, spec in gym.registry.items() if env_id.startswith("AnomalyGym/") and str(spec.entry_point).startswith("anomaly_gym.envs.detect:")
)


@pytest.fixture(scope="module")
def tasks():
    """Three small tasks of different widths and anomaly rates."""
    return [
        make_synthetic_task("global", n_rows=200, n_features=4, contamination=0.05, seed=0),
        make_synthetic_task("local", n_rows=240, n_features=7, contamination=0.2, seed=1),
        make_synthetic_task("clustered", n_rows=160, n_features=3, contamination=0.1, seed=2),
    ]


def _env(tasks, **kwargs) -> AnomalyDetectionEnv:
    return AnomalyDetectionEnv(tasks, featurizer=TINY, **kwargs)


def _normal_only(n: int = 60) -> Task:
    X = np.random.default_rng(0).normal(size=(n, 3))
    return make_task("normal-only", X, np.zeros(n))


# --------------------------------------------------------------------------- conformance


def test_detect_v0_is_registered():
    assert ENV_ID == "AnomalyGym/Detect-v0"
    assert ENV_ID in REGISTERED


@pytest.mark.parametrize("env_id", REGISTERED)
def test_check_env_passes_without_warnings(env_id, tasks):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(env_id, tasks=tasks[:2], featurizer=TINY, episode_length=16)
        check_env(env.unwrapped)
        env.close()

    assert [str(w.message) for w in caught] == []


def test_check_env_passes_without_warnings_for_the_default_construction():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(ENV_ID)
        check_env(env.unwrapped)
        obs, info = env.reset(seed=0)
        env.close()

    assert [str(w.message) for w in caught] == []
    assert env.unwrapped.get_task().name == "sklearn/breast_cancer"
    assert env.observation_space.shape == (len(FeaturizerConfig().feature_names()),)
    assert env.observation_space.contains(obs)


def test_spaces(tasks):
    env = _env(tasks)
    low, high = env.observation_space.low, env.observation_space.high

    assert env.action_space == gym.spaces.Discrete(2)
    assert env.observation_space.shape == (15,) and env.observation_space.dtype == np.float32
    assert np.isfinite(low).all() and np.isfinite(high).all()
    expected_low, expected_high = Featurizer(TINY).feature_bounds()
    np.testing.assert_array_equal(low, expected_low)
    np.testing.assert_array_equal(high, expected_high)


def test_observations_are_float32_inside_the_space(tasks):
    env = _env(tasks, episode_length=50)
    obs, _ = env.reset(seed=1)
    seen = [obs]
    for t in range(3 * 50):
        if t % 50 == 0:
            env.set_task(tasks[(t // 50) % len(tasks)])
            obs, _ = env.reset()
            seen.append(obs)
        obs, *_ = env.step(t % 2)
        seen.append(obs)

    for obs in seen:
        assert obs.dtype == np.float32 and obs.shape == (15,)
        assert env.observation_space.contains(obs)


def test_returned_observations_are_copies(tasks):
    env = _env(tasks)
    obs, info = env.reset(seed=0)
    obs[:] = 99.0

    again, _ = env.reset(seed=0)

    assert not np.array_equal(again, obs)


# --------------------------------------------------------------------------- rewards


@pytest.mark.parametrize(("action", "label", "reward"), [(1, 1, 1.0), (0, 0, 1.0), (1, 0, -1.0), (0, 1, -1.0)])
def test_reward_table(tasks, action, label, reward):
    env = _env(tasks)
    env.reset(seed=0)
    seen = 0
    for _ in range(200):
        _, r, terminated, truncated, info = env.step(action)
        if info["label"] == label:
            assert r == reward
            seen += 1
        else:
            assert r == -reward

    assert seen > 50


def test_step_info_describes_the_row_just_judged(tasks):
    env = _env(tasks)
    _, info = env.reset(seed=4)
    task = env.get_task()

    for _ in range(20):
        shown = info["index"] if "next_index" not in info else info["next_index"]
        _, _, _, _, info = env.step(0)
        assert info["index"] == shown
        assert info["label"] == int(task.y[shown])
        assert info["task"] == task.name


# --------------------------------------------------------------------------- seeding


def _rollout(env: AnomalyDetectionEnv, seed: int, episodes: int = 3) -> tuple[list[np.ndarray], list[float], list[int]]:
    observations, rewards, rows = [], [], []
    obs, info = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, info = env.reset()
        observations.append(obs)
        rows.append(info["index"])
        truncated = False
        t = 0
        while not truncated:
            obs, reward, _, truncated, info = env.step((t // 3) % 2)
            observations.append(obs)
            rewards.append(reward)
            rows.append(info["next_index"])
            t += 1
    return observations, rewards, rows


def test_same_seed_same_episodes(tasks):
    first = _rollout(_env(tasks, episode_length=30), seed=7)
    again = _rollout(_env(tasks, episode_length=30), seed=7)

    assert len(first[1]) == 90
    np.testing.assert_array_equal(np.stack(first[0]), np.stack(again[0]))
    assert first[1] == again[1] and first[2] == again[2]


def test_different_seeds_differ(tasks):
    first = _rollout(_env(tasks, episode_length=30), seed=7)
    other = _rollout(_env(tasks, episode_length=30), seed=8)

    assert first[2] != other[2]
    assert not np.array_equal(np.stack(first[0]), np.stack(other[0]))


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("episode_length", [1, 5, 17])
def test_truncation_exactly_at_episode_length(tasks, episode_length):
    env = _env(tasks, episode_length=episode_length)
    env.reset(seed=0)

    for episode in range(3):
        for t in range(1, episode_length + 1):
            *_, terminated, truncated, _ = env.step(t % 2)
            assert terminated is False
            assert truncated is (t == episode_length)
        env.reset()


def test_default_episode_length_is_256(tasks):
    env = _env(tasks)
    env.reset(seed=0)

    flags = [env.step(0)[3] for _ in range(256)]

    assert flags.index(True) == 255 and env.episode_length == 256


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.8])
def test_anomaly_fraction_sets_the_share_of_anomalies(tasks, fraction):
    env = _env(tasks[:1], anomaly_fraction=fraction, episode_length=10_000)
    env.reset(seed=3)

    labels = [env.step(0)[4]["label"] for _ in range(4000)]

    assert tasks[0].anomaly_rate == pytest.approx(0.05)
    assert np.mean(labels) == pytest.approx(fraction, abs=0.03)


def test_anomaly_fraction_none_keeps_the_natural_rate(tasks):
    env = _env(tasks[1:2], anomaly_fraction=None, episode_length=10_000)
    env.reset(seed=3)

    rows = [env.step(0)[4]["index"] for _ in range(4000)]

    assert np.mean(tasks[1].y[rows]) == pytest.approx(tasks[1].anomaly_rate, abs=0.03)
    assert len(set(rows)) > 0.95 * tasks[1].n_rows


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_anomaly_fraction_outside_zero_one_is_rejected(tasks, fraction):
    with pytest.raises(ValueError, match=r"anomaly_fraction must be in \(0, 1\) or None for natural rates"):
        _env(tasks, anomaly_fraction=fraction)


@pytest.mark.parametrize("action", [2, -1, 0.5, 1.0, "a", np.array([0, 1]), [1, 1], None])
def test_bad_actions_are_rejected(tasks, action):
    env = _env(tasks)
    env.reset(seed=0)

    with pytest.raises(ValueError, match=r"action must be 0 \(normal\) or 1 \(anomaly\)"):
        env.step(action)


@pytest.mark.parametrize("action", [1, np.int64(1), np.array(1), np.array([1])])
def test_integer_like_actions_are_accepted(tasks, action):
    env = _env(tasks)
    env.reset(seed=0)

    _, reward, *_, info = env.step(action)

    assert reward == (1.0 if info["label"] == 1 else -1.0)


def test_render_ansi_describes_the_current_row(tasks):
    env = _env(tasks, render_mode="ansi", episode_length=8)
    _, info = env.reset(seed=0)
    env.step(1)

    text = env.render()

    assert text.startswith(f"task={tasks[0].name} step=1/8 row=")
    assert "consensus/pct_mean=" in text
    assert _env(tasks).render() is None
    with pytest.raises(ValueError, match=r"render_mode must be None or one of \['ansi'\]"):
        _env(tasks, render_mode="human")


# --------------------------------------------------------------------------- tasks


def test_first_task_is_used_until_another_is_set(tasks):
    env = _env(tasks)
    _, info = env.reset(seed=0)

    assert env.get_task() is tasks[0] and info["task"] == tasks[0].name


def test_set_task_switches_the_data(tasks):
    env = _env(tasks)
    env.reset(seed=0)
    target = tasks[1]
    expected = featurize_task(target, TINY)

    env.set_task(target)
    obs, reward, _, _, info = env.step(1)

    assert env.get_task() is target
    assert info["task"] == target.name
    np.testing.assert_array_equal(obs, expected[info["next_index"]])
    for _ in range(30):
        obs, reward, _, _, info = env.step(1)
        np.testing.assert_array_equal(obs, expected[info["next_index"]])
        assert info["label"] == target.y[info["index"]]


def test_reset_with_a_task_option_switches_the_data(tasks):
    env = _env(tasks)
    env.reset(seed=0)
    target = tasks[2]

    obs, info = env.reset(options={"task": target})

    assert env.get_task() is target and info["task"] == target.name
    np.testing.assert_array_equal(obs, featurize_task(target, TINY)[info["index"]])
    assert info["label"] == target.y[info["index"]]
    _, info = env.reset(options={"task": None})
    assert info["task"] == target.name


def test_set_task_accepts_a_task_outside_the_pool(tasks):
    env = _env(tasks[:1])
    outside = make_synthetic_task("dependency", n_rows=120, n_features=5, seed=9)

    env.set_task(outside)
    obs, info = env.reset(seed=0)

    assert info["task"] == outside.name
    np.testing.assert_array_equal(obs, featurize_task(outside, TINY)[info["index"]])


def test_sample_tasks_draws_from_the_pool_and_is_seeded(tasks):
    env, twin = _env(tasks), _env(tasks)
    env.reset(seed=5)
    twin.reset(seed=5)

    drawn = env.sample_tasks(3)

    assert all(any(t is task for task in tasks) for t in drawn)
    assert len({t.hash for t in drawn}) == 3  # without replacement while the pool lasts
    assert [t.name for t in twin.sample_tasks(3)] == [t.name for t in drawn]
    assert len(env.sample_tasks(7)) == 7
    names = {tuple(t.name for t in _seeded(tasks, seed).sample_tasks(2)) for seed in range(8)}
    assert len(names) > 1


def _seeded(tasks, seed: int) -> AnomalyDetectionEnv:
    env = _env(tasks)
    env.reset(seed=seed)
    return env


def test_sample_tasks_rejects_a_non_positive_count(tasks):
    with pytest.raises(ValueError, match=r"n must be positive, got 0"):
        _env(tasks).sample_tasks(0)


# --------------------------------------------------------------------------- bad construction


def test_construction_needs_tasks_with_both_classes(tasks):
    with pytest.raises(ValueError, match=r"task 'normal-only' has no anomalies"):
        _env([tasks[0], _normal_only()])


def test_set_task_needs_a_task_with_both_classes(tasks):
    env = _env(tasks)
    env.reset(seed=0)

    with pytest.raises(ValueError, match=r"task 'normal-only' has no anomalies"):
        env.set_task(_normal_only())
    with pytest.raises(ValueError, match=r"has no labels"):
        env.set_task(tasks[1].without_labels())
    with pytest.raises(ValueError, match=r"has no anomalies"):
        env.reset(options={"task": _normal_only()})
    assert env.get_task() is tasks[0]


def test_set_task_needs_a_task_object(tasks):
    with pytest.raises(TypeError, match=r"set_task expects a Task, got dict"):
        _env(tasks).set_task({"X": [[0.0]]})


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ([], {}, ValueError, r"needs at least one task"),
        (["not a task"], {}, TypeError, r"tasks must be anomaly_gym Task objects, got str"),
        (None, {"episode_length": 0}, ValueError, r"episode_length must be a positive integer, got 0"),
    ],
)
def test_bad_construction_is_rejected(tasks, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        AnomalyDetectionEnv(tasks if args is None else args, featurizer=TINY, **kwargs)
