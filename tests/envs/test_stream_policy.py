"""The numpy stream policy and the streaming scorer: file format, agreement with cached features, flag feedback."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from anomaly_gym.envs.series import make_synthetic_series
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
from anomaly_gym.envs.stream_policy import StreamPolicy, TemporalScorer, policy_margin, score_with_feedback
from anomaly_gym.envs.temporal import TemporalFeaturizer

W = len(OBSERVATION_NAMES)


def _linear(bias=-3.0):
    w = np.linspace(0.1, 1.0, W)
    return StreamPolicy(layers=[(w[None, :], [bias])])


def test_margin_of_linear_and_mlp_layers():
    rng = np.random.default_rng(0)
    obs = rng.random((5, W))
    lin = _linear()
    np.testing.assert_allclose(lin.margin(obs), obs @ np.linspace(0.1, 1.0, W) - 3.0)
    w1, b1, w2, b2 = rng.normal(size=(4, W)), rng.normal(size=4), rng.normal(size=(1, 4)), rng.normal(size=1)
    mlp = StreamPolicy(layers=[(w1, b1), (w2, b2)])
    np.testing.assert_allclose(mlp.margin(obs), np.tanh(obs @ w1.T + b1) @ w2[0] + b2[0])
    assert policy_margin([(w1, b1), (w2, b2)], obs, "relu") == pytest.approx(np.maximum(obs @ w1.T + b1, 0) @ w2[0] + b2[0])
    assert mlp.proba_one(obs[0].tolist()) == pytest.approx(1 / (1 + np.exp(-mlp.margin(obs[:1])[0])))


def test_save_load_roundtrip_and_bad_files(tmp_path):
    pol = _linear()
    pol.metadata["seed"] = 3
    path = pol.save(tmp_path / "p.policy.json")
    back = StreamPolicy.load(path)
    np.testing.assert_array_equal(back.layers[0][0], pol.layers[0][0])
    assert back.metadata == {"seed": 3}
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a stream policy"):
        StreamPolicy.load(tmp_path / "bad.json")
    (tmp_path / "junk.json").write_bytes(b"\x00\x01")
    with pytest.raises(ValueError, match="not a stream policy"):
        StreamPolicy.load(tmp_path / "junk.json")
    with pytest.raises(FileNotFoundError):
        StreamPolicy.load(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="inputs"):
        StreamPolicy(layers=[(np.ones((1, 3)), [0.0])])


def test_scorer_equals_cached_feature_scoring_and_resets_its_flag_clock():
    s = make_synthetic_series(2, n_rows=1500)
    pol = _linear(bias=-9.0)
    streamed = TemporalScorer(pol).score_series(s.values, s.timestamps)
    cached = score_with_feedback(pol, TemporalFeaturizer().transform(s.values, s.timestamps))
    np.testing.assert_allclose(streamed, cached, atol=1e-4)
    assert ((streamed >= 0.5).sum() > 0) and ((streamed < 0.5).sum() > 0)
    # after a flag, the since_flag feature drops to 0: the next row's score falls by its weight's worth
    scorer = TemporalScorer(StreamPolicy(layers=[(np.r_[np.zeros(W - 1), 5.0][None, :], [-4.0])]))
    p = [scorer.process_one(1.0, 60.0 * i) for i in range(3)]
    assert p[0] > 0.5 and p[1] < 0.5 and p[2] > p[1]


def test_score_one_does_not_learn():
    scorer = TemporalScorer(_linear())
    for i in range(50):
        scorer.process_one(float(i % 7), 60.0 * i)
    a = scorer.score_one(3.0, 3000.0)
    b = scorer.score_one(3.0, 3000.0)
    assert a == b and scorer.featurizer.n_seen == 50


def test_streaming_path_imports_no_heavy_library():
    code = "import sys; import anomaly_gym.envs.stream_policy; print([m for m in ('torch', 'sklearn', 'pyod', 'stable_baselines3') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_rising_gate_online_equals_the_whole_series_and_keeps_one_high_score_per_event():
    from anomaly_gym.envs.stream_policy import RisingGate, rising_gate

    rng = np.random.default_rng(0)
    s = rng.random(3000) * 0.1
    s[1000:1010] = 0.9  # an event: ten high rows in a row
    for rows in (0, 1, 7, 100):
        gate = RisingGate(rows)
        online = np.array([gate(x) for x in s])
        np.testing.assert_allclose(online, rising_gate(s, rows), rtol=0, atol=1e-15)
    g = rising_gate(s, 100)
    assert g[1000] > 0.7 and (g[1001:1010] < 1e-8).all()  # the first row of the event only
    assert (g >= 0).all()


def test_a_gated_policy_scores_the_same_row_by_row_and_from_cached_features(tmp_path):
    from anomaly_gym.envs.series import make_synthetic_series
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    from anomaly_gym.envs.stream_policy import TemporalScorer, score_with_feedback
    from anomaly_gym.envs.temporal import TemporalFeaturizer

    w = np.array([[1.0 if n.startswith("level") else 0.0 for n in OBSERVATION_NAMES]])
    policy = StreamPolicy.load(StreamPolicy(layers=[(w, np.array([-4.0]))], gate_rows=50, score_threshold=0.2).save(tmp_path / "g.json"))
    assert policy.gate_rows == 50 and policy.score_threshold == 0.2
    s = make_synthetic_series(3, n_rows=1500)
    live = TemporalScorer(policy).score_series(s.values, s.timestamps)
    cached = score_with_feedback(policy, TemporalFeaturizer().transform(s.values, s.timestamps))
    np.testing.assert_allclose(live, cached, atol=1e-6)
