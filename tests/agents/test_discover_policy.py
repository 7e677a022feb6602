"""The discovery policy: per-candidate scoring, masking, the heuristic start, data-only bundles."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch
from anomaly_gym.agents.discover import DiscoverBundle, candidate_logits, make_discover_agent
from anomaly_gym.agents.serialization import BundleError
from anomaly_gym.envs import DiscoverEnv, FeaturizerConfig
from anomaly_gym.envs.discover import FEEDBACK_FEATURES
from anomaly_gym.envs.sources import make_synthetic_task
from stable_baselines3.common.vec_env import DummyVecEnv

TINY = FeaturizerConfig(detectors=("ecod", "copod"), descriptors=False)
SETTINGS = {"budget": 10, "pool_size": 8, "random_share": 0.25, "normal_reward": -1.0, "similarity_scale": 0.1, "raw_neighbours": True}


@pytest.fixture(scope="module")
def agent():
    torch.manual_seed(0)
    task = make_synthetic_task("global", n_rows=120, n_features=3, contamination=0.1, seed=0)
    env = DummyVecEnv([lambda: DiscoverEnv([task], featurizer=TINY, **SETTINGS)])
    column = len(TINY.feature_names()) + FEEDBACK_FEATURES.index("feedback/learned_score")
    return make_discover_agent(env, hidden=16, heuristic_column=column, heuristic_weight=50.0, n_steps=16, batch_size=16), column


def test_logits_follow_the_candidates_not_the_slots(agent):
    model, _ = agent
    obs = np.random.default_rng(0).uniform(0, 1, size=model.observation_space.shape).astype(np.float32)
    perm = np.random.default_rng(1).permutation(len(obs))
    assert np.allclose(candidate_logits(model, obs)[perm], candidate_logits(model, obs[perm]), atol=1e-5)


def test_untrained_policy_follows_the_heuristic_column(agent):
    model, column = agent
    obs = np.zeros(model.observation_space.shape, dtype=np.float32)
    obs[:, column] = np.linspace(0.1, 0.9, len(obs))
    bundle = DiscoverBundle(model, TINY, SETTINGS)
    mask = np.ones(len(obs), dtype=bool)
    assert bundle.choose(obs, mask) == len(obs) - 1
    mask[-1] = False
    assert bundle.choose(obs, mask) == len(obs) - 2


def test_bundle_round_trip_is_data_only(agent, tmp_path):
    model, _ = agent
    path = DiscoverBundle(model, TINY, SETTINGS, {"train_tasks": ["a"]}).save(tmp_path / "d.zip")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["bundle.json", "policy.safetensors"]
        header = json.loads(zf.read("bundle.json"))
    assert header["format"] == "anomaly-gym-discover-bundle" and header["env"] == SETTINGS
    loaded = DiscoverBundle.load(path)
    obs = np.random.default_rng(2).uniform(0, 1, size=model.observation_space.shape).astype(np.float32)
    assert np.allclose(candidate_logits(loaded.model, obs), candidate_logits(model, obs), atol=1e-6)
    assert loaded.featurizer_config == TINY and loaded.metadata == {"train_tasks": ["a"]}


def test_a_foreign_or_tampered_bundle_is_refused(agent, tmp_path):
    model, _ = agent
    good = DiscoverBundle(model, TINY, SETTINGS).to_bytes()
    with zipfile.ZipFile(tmp_path / "g.zip", "w") as zf:
        zf.writestr("bundle.json", json.dumps({"format": "anomaly-gym-policy-bundle", "version": 3}))
        zf.writestr("policy.safetensors", b"")
    with pytest.raises(BundleError, match="not a discovery bundle"):
        DiscoverBundle.load(tmp_path / "g.zip")
    with zipfile.ZipFile(__import__("io").BytesIO(good)) as zf:
        header = json.loads(zf.read("bundle.json"))
        tensors = zf.read("policy.safetensors")
    header["policy"]["policy_kwargs"]["hidden"] = 32  # weights no longer fit
    with zipfile.ZipFile(tmp_path / "t.zip", "w") as zf:
        zf.writestr("bundle.json", json.dumps(header))
        zf.writestr("policy.safetensors", tensors)
    with pytest.raises(BundleError, match="does not fit"):
        DiscoverBundle.load(tmp_path / "t.zip")


def test_tail_columns_keep_the_network_on_the_feedback_features():
    task = make_synthetic_task("global", n_rows=120, n_features=3, contamination=0.1, seed=0)
    env = DummyVecEnv([lambda: DiscoverEnv([task], featurizer=TINY, **SETTINGS)])
    column = len(TINY.feature_names()) + FEEDBACK_FEATURES.index("feedback/learned_score")
    model = make_discover_agent(env, hidden=16, heuristic_column=column, heuristic_weight=1.0, tail_columns=len(FEEDBACK_FEATURES), n_steps=16, batch_size=16)
    torch.nn.init.normal_(model.policy.mlp_extractor.logit.weight)  # make the network's part visible
    rng = np.random.default_rng(0)
    obs = rng.uniform(0, 1, size=model.observation_space.shape).astype(np.float32)
    changed = obs.copy()
    changed[:, : len(TINY.feature_names())] = rng.uniform(0, 1, size=(len(obs), len(TINY.feature_names())))
    assert np.allclose(candidate_logits(model, obs), candidate_logits(model, changed), atol=1e-6)
    changed[:, -1] += 0.5  # a feedback feature does move the logits
    assert not np.allclose(candidate_logits(model, obs), candidate_logits(model, changed), atol=1e-4)


def test_learning_writes_no_logger_folder_to_the_temporary_directory(agent, tmp_path, monkeypatch):
    """Without a custom logger, SB3 makes an empty ``SB3-<date>`` folder in the temp dir on every ``learn()``."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    agent[0].learn(16)
    assert not list(tmp_path.glob("SB3-*"))
