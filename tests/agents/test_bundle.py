import zipfile

import numpy as np
import pytest
from anomaly_gym.agents import PolicyBundle, anomaly_proba, load_bundle, make_agent, resolve_device
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))


@pytest.fixture(scope="module")
def task():
    return make_synthetic_task("global", n_rows=300, n_features=4, seed=3)


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_bundle_round_trip_gives_identical_scores_and_actions(task, tmp_path, algo):
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL, episode_length=32)
    kwargs = {"n_steps": 32, **({"batch_size": 32} if algo == "ppo" else {})} if algo != "dqn" else {"learning_starts": 32}
    model = make_agent(algo, env, net_arch=[8], device="cpu", seed=0, **kwargs)
    model.learn(64)
    bundle = PolicyBundle(model, SMALL, {"train_tasks": [task.name], "seed": 0})
    scores = bundle.score(task.X)
    assert scores.shape == (task.n_rows,)
    assert np.all((scores >= 0) & (scores <= 1))
    path = bundle.save(tmp_path / "policy.zip")
    loaded = load_bundle(path, device="cpu")
    assert loaded.algo == algo
    assert loaded.featurizer_config == SMALL
    assert loaded.metadata["train_tasks"] == [task.name]
    assert "package_version" in loaded.metadata
    np.testing.assert_allclose(loaded.score(task.X), scores, rtol=1e-6)
    obs = bundle.featurizer.transform(task.X[:50])
    np.testing.assert_array_equal(loaded.model.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0])


def test_bundle_keeps_a_fitted_featurizer(task, tmp_path):
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    bundle = PolicyBundle(make_agent("ppo", env, net_arch=[], device="cpu", n_steps=16, batch_size=16), SMALL)
    with pytest.raises(ValueError, match="no fitted featurizer"):
        bundle.score(task.X, refit=False)
    bundle.fit_featurizer(task.X)
    path = bundle.save(tmp_path / "b.zip")
    loaded = load_bundle(path)
    np.testing.assert_allclose(loaded.score(task.X[:20], refit=False), bundle.score(task.X[:20], refit=False))


def test_loading_refuses_files_that_are_not_bundles(task, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not an anomaly-gym policy bundle"):
        load_bundle(text)
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    bare = tmp_path / "bare.zip"
    make_agent("ppo", env, device="cpu", n_steps=16, batch_size=16).save(bare)
    with pytest.raises(ValueError, match="bare stable-baselines3 model"):
        load_bundle(bare)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("bundle.json", '{"format": "something-else"}')
    with pytest.raises(ValueError, match="format"):
        load_bundle(other)
    with pytest.raises(FileNotFoundError):
        load_bundle(tmp_path / "missing.zip")


def test_anomaly_proba_checks_width_and_devices(task):
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    model = make_agent("ppo", env, device="cpu", n_steps=16, batch_size=16)
    with pytest.raises(ValueError, match="columns"):
        anomaly_proba(model, np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="unknown algorithm"):
        make_agent("sac", env)


@pytest.mark.gpu
def test_cuda_bundle_scores_match_cpu(task, tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    model = make_agent("ppo", env, device="cuda", n_steps=32, batch_size=32)
    model.learn(64)
    bundle = PolicyBundle(model, SMALL)
    scores = bundle.score(task.X)
    path = bundle.save(tmp_path / "gpu.zip")
    np.testing.assert_allclose(load_bundle(path, device="cpu").score(task.X), scores, rtol=1e-4, atol=1e-6)


def _headed_bundle(task):
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.agents.head import HeadSettings, fit_head

    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    bundle = PolicyBundle(make_agent("ppo", env, net_arch=[], device="cpu", n_steps=16, batch_size=16), SMALL)
    features = bundle.fit_featurizer(task.X).transform(task.X)
    bundle.head = fit_head(task.X, features, policy_margin(bundle.model, features), task.y, HeadSettings(n_estimators=10))
    return bundle


def test_target_head_round_trips_without_pickle(task, tmp_path):
    bundle = _headed_bundle(task)
    scores = bundle.score(task.X, refit=False)
    path = bundle.save(tmp_path / "headed.zip")
    with zipfile.ZipFile(path) as zf:
        assert {"head.json", "head.ubj"} <= set(zf.namelist())
        import json

        assert json.loads(zf.read("bundle.json"))["format_version"] == 3
    loaded = load_bundle(path, device="cpu")
    assert loaded.head is not None and loaded.head.n_columns == task.n_features
    np.testing.assert_allclose(loaded.score(task.X, refit=False), scores, rtol=0, atol=1e-12)
    # pickling (multiprocessing, joblib) keeps the head
    import pickle

    np.testing.assert_allclose(pickle.loads(pickle.dumps(bundle)).score(task.X, refit=False), scores, rtol=0, atol=1e-12)


def test_bundles_hold_data_files_only(task, tmp_path):
    env = AnomalyDetectionEnv(tasks=[task], featurizer=SMALL)
    bundle = PolicyBundle(make_agent("ppo", env, device="cpu", n_steps=16, batch_size=16), SMALL)
    path = bundle.save(tmp_path / "plain.zip")
    import json

    with zipfile.ZipFile(path) as zf:
        assert json.loads(zf.read("bundle.json"))["format_version"] == 3
        assert set(zf.namelist()) == {"bundle.json", "policy.safetensors"}
    bundle.fit_featurizer(task.X)
    with zipfile.ZipFile(bundle.save(tmp_path / "fitted.zip")) as zf:
        assert set(zf.namelist()) == {"bundle.json", "policy.safetensors", "featurizer.json", "featurizer.safetensors"}


def test_head_margin_is_the_calibrated_policy_logit_plus_the_trees(task):
    from anomaly_gym.agents.factory import policy_margin

    bundle = _headed_bundle(task)
    features = bundle.featurizer.transform(task.X)
    base = bundle.head.scale * policy_margin(bundle.model, features) + bundle.head.offset
    import xgboost as xgb

    rows = xgb.DMatrix(np.hstack([task.X, features]), base_margin=base)  # how the trees were boosted: from the prior
    np.testing.assert_allclose(bundle.margin(features, task.X), bundle.head.booster.predict(rows, output_margin=True), rtol=1e-5, atol=1e-5)
    trees = bundle.head.booster.predict(xgb.DMatrix(np.hstack([task.X, features]), base_margin=np.zeros(task.n_rows)), output_margin=True)
    np.testing.assert_allclose(bundle.margin(features, task.X), base + trees, rtol=1e-5, atol=1e-5)


def test_head_without_the_policy_prior_ignores_the_policy(task):
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.agents.head import HeadSettings, fit_head

    bundle = _headed_bundle(task)
    features = bundle.featurizer.transform(task.X)
    margin = policy_margin(bundle.model, features)
    head = fit_head(task.X, features, margin, task.y, HeadSettings(n_estimators=10, policy_prior=False))
    assert head.scale == 0.0 and head.settings["policy_prior"] is False
    np.testing.assert_allclose(head.margin(task.X, features, margin), head.margin(task.X, features, margin + 5.0))
