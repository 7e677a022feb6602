"""``AnomalyGym/Stream-v0`` and the synthetic series: conformance, NAB-consistent rewards, seeding."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from anomaly_gym.envs import STREAM_ENV_ID
from anomaly_gym.envs.series import ANOMALY_KINDS, Series, make_synthetic_series, synthetic_suite
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES, StreamDetectionEnv, since_flag_feature
from anomaly_gym.meta import nab
from gymnasium.utils.env_checker import check_env


@pytest.fixture(scope="module")
def series():
    return synthetic_suite(3, seed=10, n_rows=1200)


def test_registered_and_check_env_clean(series):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        env = gym.make(STREAM_ENV_ID, series=series)
        check_env(env.unwrapped)
        env.close()
    assert [str(w.message) for w in caught] == []
    assert env.observation_space.shape == (len(OBSERVATION_NAMES),)


@pytest.mark.parametrize("profile", ["standard", "reward_low_FP_rate", "reward_low_FN_rate"])
def test_return_equals_the_nab_score_of_the_flags(series, profile):
    env = StreamDetectionEnv(series, profile=profile)
    rng = np.random.default_rng(0)
    for s in series:
        obs, info = env.reset(seed=1, options={"task": s})
        start = info["row"]
        flags = np.zeros(s.n_rows, dtype=bool)
        total, done = 0.0, False
        labels = s.labels
        while not done:
            row = env.unwrapped._row
            p = 0.3 if labels[row] else 0.02  # flag windows often, other rows rarely
            action = int(rng.random() < p)
            flags[row] = bool(action)
            obs, reward, terminated, truncated, info = env.step(action)
            assert env.observation_space.contains(obs)
            total += reward
            done = terminated or truncated
        assert start == nab.probation_length(s.n_rows)
        expected = nab.score_detections(nab.prepare_file(s.n_rows, s.windows, profile), flags).score
        assert total == pytest.approx(expected)
        assert info["nab_score"] == pytest.approx(expected)


def test_first_flag_in_a_window_pays_and_later_ones_do_not():
    s = make_synthetic_series(4, n_rows=1000, kinds=["spike"], n_anomalies=1)
    env = StreamDetectionEnv([s])
    env.reset(seed=0)
    ((a, b),) = s.windows
    rewards = {}
    for row in range(env.unwrapped._row, s.n_rows):
        action = int(row in (a, a + 1))
        _, r, terminated, _, _ = env.step(action)
        rewards[row] = r
        if terminated:
            break
    assert rewards[a] == pytest.approx(-1.0 + 1.0 + 1.0)  # charge, refund, A_TP at the window's first row
    assert rewards[a + 1] == 0.0
    assert all(rewards[r] == 0.0 for r in range(a + 2, b + 1))


def test_since_flag_observation_follows_the_agent():
    s = make_synthetic_series(5, n_rows=1000)
    env = StreamDetectionEnv([s])
    obs, _ = env.reset(seed=0)
    assert obs[-1] == 1.0
    obs, *_ = env.step(1)
    assert obs[-1] == pytest.approx(since_flag_feature(0)) and obs[-1] == 0.0
    for _ in range(9):
        obs, *_ = env.step(0)
    assert obs[-1] == pytest.approx(np.log1p(9) / np.log1p(1000))


def test_seeded_episodes_with_a_length_limit(series):
    def run(seed):
        env = StreamDetectionEnv(series, max_episode_steps=50)
        env.reset(seed=seed)
        task = env.sample_tasks(2)
        obs, info = env.reset(options={"task": task[0]})
        steps = 0
        while True:
            obs, r, term, trunc, _ = env.step(0)
            steps += 1
            if term or trunc:
                return [t.name for t in task], info["row"], steps, trunc

    assert run(3) == run(3)
    assert run(3)[2] == 50 and run(3)[3] is True


def test_bad_input_is_refused(series):
    env = StreamDetectionEnv(series)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(2)
    with pytest.raises(ValueError, match="profile"):
        StreamDetectionEnv(series, profile="strict")
    quiet = make_synthetic_series(1, n_rows=800, kinds=[])
    with pytest.raises(ValueError, match="no anomaly window"):
        StreamDetectionEnv([quiet])
    with pytest.raises(TypeError):
        env.set_task("not a series")


# -- the synthetic generator -----------------------------------------------------------------


def test_generator_is_seeded_and_plants_every_kind():
    a, b = make_synthetic_series(7), make_synthetic_series(7)
    np.testing.assert_array_equal(a.values, b.values)
    assert a.windows == b.windows
    assert not np.array_equal(a.values, make_synthetic_series(8).values)
    for kind in ANOMALY_KINDS:
        clean = make_synthetic_series(21, kinds=[], n_rows=2000)
        planted = make_synthetic_series(21, kinds=[kind], n_anomalies=1, n_rows=2000)
        ((lo, hi),) = planted.windows
        changed = np.flatnonzero(planted.values != clean.values)
        assert len(changed) > 0, kind
        # nothing changes before the window; the change starts inside it
        assert changed[0] >= lo and changed[0] <= hi, kind
        assert lo >= nab.probation_length(2000)


def test_series_validation():
    ts = np.arange(5).astype("datetime64[s]")
    with pytest.raises(ValueError, match="finite"):
        Series("x", np.array([1, 2, np.nan, 4, 5.0]), ts, (), "c")
    with pytest.raises(ValueError, match="decrease"):
        Series("x", np.arange(5.0), ts[::-1], (), "c")
    with pytest.raises(ValueError, match="window"):
        Series("x", np.arange(5.0), ts, ((3, 9),), "c")
