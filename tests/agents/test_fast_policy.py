"""The numpy policy evaluator: the same margins as the torch policy, read from a bundle without torch."""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pytest
from anomaly_gym.agents import BundleError, PolicyBundle, ScoringBundle, load_scoring_bundle, make_agent, policy_margin
from anomaly_gym.agents.fast_policy import NumpyPolicy, policy_from_model
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.envs.features import Featurizer

CONFIG = FeaturizerConfig(detectors=("ecod", "hbos"))


@pytest.fixture(scope="module")
def env():
    return AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=100, seed=1)], featurizer=CONFIG)


def _features(n: int = 64, seed: int = 2) -> np.ndarray:
    lo, hi = Featurizer(CONFIG).feature_bounds()
    return np.random.default_rng(seed).uniform(lo, hi, size=(n, len(lo))).astype(np.float32)


@pytest.mark.parametrize(
    ("algo", "net_arch", "activation"),
    [
        ("ppo", [16, 8], None),
        ("ppo", [], None),
        ("a2c", [12], "ReLU"),
        ("dqn", [16, 16], None),
        ("dqn", [8], "ELU"),
        ("ppo", [8], "GELU"),
        ("ppo", [8], "SiLU"),
        ("a2c", [8], "LeakyReLU"),
    ],
)
def test_the_bundle_read_without_torch_gives_the_torch_margins(tmp_path, env, algo, net_arch, activation):
    import torch.nn as nn

    kwargs = {"policy_kwargs": {"activation_fn": getattr(nn, activation)}} if activation else {}
    model = make_agent(algo, env, net_arch=net_arch, device="cpu", seed=3, **kwargs)
    for p in model.policy.parameters():  # away from the initial weights (small outputs hide mistakes)
        p.data.normal_(0.0, 0.5)
    path = PolicyBundle(model, CONFIG).save(tmp_path / "p.bundle.zip")
    scoring = load_scoring_bundle(path)
    assert isinstance(scoring, ScoringBundle) and scoring.algo == algo
    feats = _features()
    ref = policy_margin(model, feats)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(scoring.policy.margin(feats), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose([scoring.policy(f) for f in feats], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(policy_from_model(model).margin(feats), ref, rtol=1e-5, atol=1e-5)


def test_scoring_bundle_scores_like_the_policy_bundle(tmp_path, env):
    model = make_agent("ppo", env, net_arch=[8], device="cpu", seed=0)
    path = PolicyBundle(model, CONFIG).save(tmp_path / "p.bundle.zip")
    X = np.random.default_rng(0).normal(size=(80, 3)).astype(np.float32)
    X[:4] += 6
    full, fast = PolicyBundle.load(path, device="cpu").score(X), load_scoring_bundle(path).score(X)
    np.testing.assert_allclose(fast, full, rtol=0, atol=1e-6)
    assert fast[:4].mean() != fast[4:].mean()


def _rewrite(path, out, *, header=None, weights=None):
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    if header is not None:
        members["bundle.json"] = json.dumps(header(json.loads(members["bundle.json"]))).encode()
    if weights is not None:
        members["policy.safetensors"] = weights(members["policy.safetensors"])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    out.write_bytes(buf.getvalue())
    return out


def test_a_bundle_whose_weights_do_not_fit_its_network_is_refused(tmp_path, env):
    from safetensors.numpy import load, save

    path = PolicyBundle(make_agent("ppo", env, net_arch=[8], device="cpu"), CONFIG).save(tmp_path / "p.bundle.zip")

    def shrink(data):
        state = load(data)
        state["action_net.weight"] = state["action_net.weight"][:, :4].copy()
        return save(state)

    with pytest.raises(BundleError, match="does not fit the policy"):
        load_scoring_bundle(_rewrite(path, tmp_path / "bad.bundle.zip", weights=shrink))

    def foreign_class(header):
        header["policy"]["policy_kwargs"]["activation_fn"] = {"class": "os.system"}
        return header

    with pytest.raises(BundleError, match="not one a bundle may name"):
        load_scoring_bundle(_rewrite(path, tmp_path / "class.bundle.zip", header=foreign_class))


def test_a_network_the_numpy_evaluator_does_not_run_is_loaded_with_torch(tmp_path, env):
    path = PolicyBundle(make_agent("ppo", env, net_arch=[8], device="cpu"), CONFIG).save(tmp_path / "p.bundle.zip")

    def extra_setting(header):  # a setting that may change the forward pass: not evaluated in numpy
        header["policy"]["policy_kwargs"]["squash_output"] = False
        return header

    loaded = load_scoring_bundle(_rewrite(path, tmp_path / "other.bundle.zip", header=extra_setting))
    assert isinstance(loaded, PolicyBundle)


def test_numpy_policy_refuses_unknown_operations_and_wrong_widths():
    with pytest.raises(ValueError, match="unknown operation"):
        NumpyPolicy([("softplus",)])
    policy = NumpyPolicy([("linear", np.ones((3, 2)), np.zeros(2))])
    with pytest.raises(ValueError, match="3 columns"):
        policy.margin(np.ones((4, 5)))
