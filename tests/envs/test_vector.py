"""BatchedDetectEnv: step-for-step agreement with Detect-v0, episode rules, tasks, SB3."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, featurize_task, make_synthetic_task
from anomaly_gym.envs.vector import BatchedDetectEnv
from stable_baselines3 import PPO
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

CFG = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))


@pytest.fixture(scope="module")
def tasks():
    kinds = ("local", "global", "clustered")
    return [make_synthetic_task(kind, n_rows=300 + 20 * i, n_features=4 + i, contamination=0.05 + 0.03 * i, seed=i) for i, kind in enumerate(kinds)]


@pytest.fixture(scope="module")
def features(tasks):
    return {t.name: featurize_task(t, CFG) for t in tasks}


def _batched(tasks, n_envs, **kwargs) -> BatchedDetectEnv:
    return BatchedDetectEnv(tasks, n_envs=n_envs, featurizer=CFG, **kwargs)


def _actions(n_steps: int, n_envs: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2, size=(n_steps, n_envs))


def _assert_same_step(ref, got, step: int) -> None:
    """One step of DummyVecEnv(Detect-v0) and of BatchedDetectEnv are identical."""
    (obs1, rew1, done1, infos1), (obs2, rew2, done2, infos2) = ref, got
    np.testing.assert_array_equal(obs1, obs2, err_msg=f"observations differ at step {step}")
    np.testing.assert_array_equal(rew1, rew2, err_msg=f"rewards differ at step {step}")
    np.testing.assert_array_equal(done1, done2, err_msg=f"dones differ at step {step}")
    for i, (a, b) in enumerate(zip(infos1, infos2)):
        for key in ("index", "label", "task", "next_index"):
            assert a[key] == b[key], f"info {key!r} of env {i} differs at step {step}"
        assert a["TimeLimit.truncated"] == b.get("TimeLimit.truncated", False)
        if "terminal_observation" in a:
            np.testing.assert_array_equal(a["terminal_observation"], b["terminal_observation"])
        else:
            assert "terminal_observation" not in b


# -- agreement with Detect-v0 ----------------------------------------------------------


@pytest.mark.parametrize("n_envs, seed, anomaly_fraction", [(1, 0, 0.5), (4, 7, 0.5), (5, 123, None), (3, 2024, 0.2)])
def test_per_env_mode_agrees_with_detect_v0_step_for_step(tasks, n_envs, seed, anomaly_fraction):
    task = tasks[0]
    kwargs = dict(episode_length=6, anomaly_fraction=anomaly_fraction)
    ref = DummyVecEnv([lambda: AnomalyDetectionEnv([task], featurizer=CFG, **kwargs) for _ in range(n_envs)])
    venv = _batched([task], n_envs, rng_mode="per_env", **kwargs)  # one-task pool: resampling draws nothing
    ref.seed(seed)
    venv.seed(seed)
    np.testing.assert_array_equal(ref.reset(), venv.reset())
    assert ref.reset_infos == venv.reset_infos
    for step, actions in enumerate(_actions(20, n_envs, seed)):
        _assert_same_step(ref.step(actions), venv.step(actions), step)
        assert ref.reset_infos == venv.reset_infos


def test_per_env_mode_agrees_with_one_plain_env_per_task(tasks):
    """Each sub-env pinned to its own task of a multi-task table matches Detect-v0 on that task."""
    pinned = [tasks[i % len(tasks)] for i in range(5)]
    ref = DummyVecEnv([lambda t=t: AnomalyDetectionEnv([t], featurizer=CFG, episode_length=4) for t in pinned])
    venv = _batched(tasks, 5, episode_length=4, rng_mode="per_env")
    for i, t in enumerate(pinned):
        venv.set_task(t, indices=i)
    ref.seed(11)
    venv.seed(11)
    np.testing.assert_array_equal(ref.reset(), venv.reset())
    for step, actions in enumerate(_actions(12, 5, 1)):
        _assert_same_step(ref.step(actions), venv.step(actions), step)
    assert [t.name for t in venv.get_tasks()] == [t.name for t in pinned]


# -- observations, rewards, episode rules ------------------------------------------------


def test_observations_are_the_featurized_rows_and_inside_the_space(tasks, features):
    venv = _batched(tasks, 16, episode_length=1000)
    venv.seed(0)
    obs = venv.reset()
    assert obs.dtype == np.float32 and obs.shape == (16, len(CFG.feature_names()))
    for i, info in enumerate(venv.reset_infos):
        np.testing.assert_array_equal(obs[i], features[info["task"]][info["index"]])
    for actions in _actions(10, 16):
        obs, _, _, infos = venv.step(actions)
        for i, info in enumerate(infos):
            assert venv.observation_space.contains(obs[i])
            np.testing.assert_array_equal(obs[i], features[info["task"]][info["next_index"]])


def test_reward_table(tasks):
    labels = {t.name: t.y for t in tasks}
    venv = _batched(tasks, 32)
    venv.seed(3)
    venv.reset()
    seen = set()
    for actions in [np.ones(32, dtype=np.int64), np.zeros(32, dtype=np.int64)] * 5:
        _, rewards, _, infos = venv.step(actions)
        assert rewards.dtype == np.float32
        for a, r, info in zip(actions, rewards, infos):
            assert info["label"] == labels[info["task"]][info["index"]]
            assert r == (1.0 if a == info["label"] else -1.0)
            seen.add((int(a), info["label"], float(r)))
    assert seen == {(1, 1, 1.0), (1, 0, -1.0), (0, 1, -1.0), (0, 0, 1.0)}


def test_truncation_at_episode_length_with_terminal_observation(tasks, features):
    venv = _batched(tasks, 8, episode_length=5)
    venv.seed(5)
    venv.reset()
    for step in range(1, 11):
        obs, _, dones, infos = venv.step(np.ones(8, dtype=np.int64))
        if step % 5:
            assert not dones.any() and not any("terminal_observation" in i or "TimeLimit.truncated" in i for i in infos)
            continue
        assert dones.all()
        for i, info in enumerate(infos):
            assert info["TimeLimit.truncated"] is True
            np.testing.assert_array_equal(info["terminal_observation"], features[info["task"]][info["next_index"]])
            start = venv.reset_infos[i]  # the automatic reset's first row is what obs shows
            np.testing.assert_array_equal(obs[i], features[start["task"]][start["index"]])


@pytest.mark.parametrize("anomaly_fraction", [0.5, 0.2, None])
def test_anomaly_fraction_and_uniform_rows(tasks, anomaly_fraction):
    task = tasks[0]
    venv = _batched([task], 64, anomaly_fraction=anomaly_fraction)
    venv.seed(0)
    venv.reset()
    labels, rows = [], []
    for actions in _actions(200, 64):
        _, _, _, infos = venv.step(actions)
        labels += [i["label"] for i in infos]
        rows += [i["index"] for i in infos if i["label"] == 1]
    expected = task.anomaly_rate if anomaly_fraction is None else anomaly_fraction
    assert abs(np.mean(labels) - expected) < 0.02  # 12,800 draws: 5 standard errors or more
    assert set(rows) == set(np.flatnonzero(task.y == 1).tolist())  # every anomaly is drawn


def test_batched_mode_seeding_is_reproducible(tasks):
    def run(seed):
        venv = _batched(tasks, 8, episode_length=3)
        venv.seed(seed)
        out = [venv.reset()]
        for actions in _actions(9, 8):
            out.append(venv.step(actions)[0])
        return np.stack(out)

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))


# -- tasks -----------------------------------------------------------------------------


def test_resample_task_on_reset_draws_several_tasks(tasks):
    venv = _batched(tasks, 16, episode_length=3)
    venv.seed(0)
    venv.reset()
    current = [i["task"] for i in venv.reset_infos]
    drawn = set(current)
    for _ in range(12):
        _, _, dones, infos = venv.step(np.zeros(16, dtype=np.int64))
        assert [i["task"] for i in infos] == current  # the task holds within an episode
        current = [i["task"] for i in venv.reset_infos]
        drawn |= set(current)
    assert drawn == {t.name for t in tasks}

    fixed = _batched(tasks, 16, episode_length=3, resample_task_on_reset=False)
    fixed.seed(0)
    fixed.reset()
    for _ in range(6):
        fixed.step(np.zeros(16, dtype=np.int64))
    assert {t.name for t in fixed.get_tasks()} == {tasks[0].name}


def test_set_task_pins_until_released(tasks, features):
    venv = _batched(tasks[:2], 6, episode_length=2)
    venv.seed(0)
    venv.reset()
    outside = tasks[2]  # not in the pool: added to the table
    venv.set_task(outside)
    obs = venv.reset()
    assert all(t is outside for t in venv.get_tasks()) and venv.get_task(3) is outside
    for i, info in enumerate(venv.reset_infos):
        np.testing.assert_array_equal(obs[i], features[outside.name][info["index"]])
    for _ in range(6):
        venv.step(np.ones(6, dtype=np.int64))
    assert all(t is outside for t in venv.get_tasks())
    assert [t.name for t in venv.tasks] == [t.name for t in tasks[:2]]
    venv.set_task(None)
    for _ in range(8):
        venv.step(np.ones(6, dtype=np.int64))
    assert {t.name for t in venv.get_tasks()} <= {t.name for t in tasks[:2]}


def test_vecenv_attribute_and_method_api(tasks):
    venv = _batched(tasks, 4, episode_length=8)
    venv.env_method("set_task", tasks[1], indices=[1, 2])
    venv.set_options({"task": tasks[2]})  # Detect-v0's reset(options={"task": ...})
    venv.reset()
    assert [t.name for t in venv.get_attr("task")] == [tasks[2].name] * 4
    assert venv.env_method("get_task", indices=0) == [tasks[2]]
    assert venv.get_attr("episode_length", indices=[0, 3]) == [8, 8]
    assert venv.get_attr("render_mode") == [None] * 4 and venv.has_attr("anomaly_fraction")
    assert not venv.has_attr("no_such_thing")
    venv.set_attr("episode_length", 3)
    assert venv.episode_length == 3
    with pytest.raises(ValueError, match="shared"):
        venv.set_attr("episode_length", 4, indices=[0])
    with pytest.raises(AttributeError, match="cannot set"):
        venv.set_attr("observation_space", None)
    with pytest.raises(AttributeError, match="no method"):
        venv.env_method("render")
    assert venv.env_is_wrapped(Monitor) == [False] * 4
    assert len(venv.env_method("sample_tasks", 2, indices=[0])[0]) == 2


@pytest.mark.parametrize(
    "actions, match",
    [
        (np.full(4, 2), r"0 \(normal\) or 1"),
        (np.full(4, -1), r"0 \(normal\) or 1"),
        (np.zeros(4, dtype=np.float32), "integer"),
        (np.zeros(3, dtype=np.int64), "shape"),
    ],
)
def test_bad_actions_raise(tasks, actions, match):
    venv = _batched(tasks, 4)
    venv.reset()
    with pytest.raises(ValueError, match=match):
        venv.step(actions)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(n_envs=0), "n_envs"),
        (dict(episode_length=0), "episode_length"),
        (dict(anomaly_fraction=1.0), "anomaly_fraction"),
        (dict(rng_mode="fast"), "rng_mode"),
        (dict(backend="jax"), "backend"),
        (dict(backend="numpy", device="cuda"), "CPU only"),
    ],
)
def test_bad_arguments_raise(tasks, kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchedDetectEnv(tasks, featurizer=CFG, **kwargs)


# -- SB3 and backends ------------------------------------------------------------------


def test_ppo_learns_on_the_batched_env(tasks):
    venv = VecMonitor(_batched(tasks, 8, episode_length=16))
    model = PPO("MlpPolicy", venv, n_steps=32, batch_size=64, n_epochs=1, seed=0, device="cpu")
    model.learn(256)
    assert model.num_timesteps == 256
    episodes = list(model.ep_info_buffer)
    assert len(episodes) == 16 and all(e["l"] == 16 and -16 <= e["r"] <= 16 for e in episodes)  # 2 episodes x 8 envs
    # SB3 bootstraps truncated episodes with the value of infos["terminal_observation"]:
    # the last step of each episode (rows 15 and 31) carries reward + gamma * V, the rest +-1.
    rewards = model.rollout_buffer.rewards
    last = np.zeros(32, dtype=bool)
    last[[15, 31]] = True
    assert set(np.unique(rewards[~last])) <= {-1.0, 1.0}
    assert not np.isin(rewards[last], [-1.0, 1.0]).any()
    assert model.predict(venv.reset(), deterministic=True)[0].shape == (8,)


@pytest.mark.parametrize("rng_mode", ["batched", "per_env"])
def test_torch_backend_agrees_with_numpy_backend(tasks, rng_mode):
    numpy_env = _batched(tasks, 6, episode_length=4, rng_mode=rng_mode)
    torch_env = _batched(tasks, 6, episode_length=4, rng_mode=rng_mode, backend="torch", device="cpu")
    assert torch_env.backend == "torch" and numpy_env.backend == "numpy"
    numpy_env.seed(9)
    torch_env.seed(9)
    np.testing.assert_array_equal(numpy_env.reset(), torch_env.reset())
    for step, actions in enumerate(_actions(10, 6)):
        _assert_same_step_batched(numpy_env.step(actions), torch_env.step(actions), step)


def _assert_same_step_batched(ref, got, step):
    (obs1, rew1, done1, infos1), (obs2, rew2, done2, infos2) = ref, got
    assert obs2.dtype == np.float32 and rew2.dtype == np.float32 and isinstance(obs2, np.ndarray)
    np.testing.assert_array_equal(obs1, obs2, err_msg=f"observations differ at step {step}")
    np.testing.assert_array_equal(rew1, rew2, err_msg=f"rewards differ at step {step}")
    np.testing.assert_array_equal(done1, done2)
    for a, b in zip(infos1, infos2):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_cuda_device_needs_cuda(tasks, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA"):
        BatchedDetectEnv(tasks, featurizer=CFG, device="cuda")
    assert BatchedDetectEnv(tasks, featurizer=CFG, device="auto").backend == "numpy"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_backend_agrees_with_numpy_backend(tasks):
    numpy_env = _batched(tasks, 32, episode_length=4)
    cuda_env = _batched(tasks, 32, episode_length=4, device="cuda")
    assert cuda_env.backend == "torch" and cuda_env.device.startswith("cuda")
    numpy_env.seed(4)
    cuda_env.seed(4)
    np.testing.assert_array_equal(numpy_env.reset(), cuda_env.reset())
    for step, actions in enumerate(_actions(10, 32)):
        _assert_same_step_batched(numpy_env.step(actions), cuda_env.step(actions), step)
