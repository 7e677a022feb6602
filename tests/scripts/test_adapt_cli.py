"""``anomaly-gym adapt``: CSV and .npz targets, label columns, shots, and bad input."""

import numpy as np
import pandas as pd
import pytest

from anomaly_gym.agents import PolicyBundle, load_bundle, make_agent
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.scripts.cli import main

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, n_features=4, seed=0)], featurizer=SMALL)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", seed=0, n_steps=128, batch_size=128)
    model.learn(512)
    return PolicyBundle(model, SMALL, {"train_tasks": ["global"]}).save(tmp_path_factory.mktemp("m") / "policy.zip")


@pytest.fixture(scope="module")
def target():
    return make_synthetic_task("local", n_rows=400, n_features=5, contamination=0.08, seed=3)


def test_few_shot_from_a_csv_label_column(model_path, target, tmp_path, capsys):
    frame = pd.DataFrame(target.X, columns=[f"c{j}" for j in range(target.n_features)])
    frame.insert(0, "when", "2026-01-01")  # non-numeric: left out of the features
    frame["label"] = target.y
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "adapted.zip"
    code = main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.csv"), "--label-column", "label",
                 "--shots", "8", "--normal-shots", "40", "--out", str(out)])
    assert code == 0
    record = load_bundle(out).metadata["adaptation"]
    assert record["mode"] == "few-shot" and record["labelled_rows"] == 48 and record["rows"] == target.n_rows
    assert record["kept"] in ("adapted", "unadapted")
    assert load_bundle(out).featurizer.n_columns_ == target.n_features


def test_zero_shot_from_an_npz_and_a_labels_file(model_path, target, tmp_path):
    np.savez(tmp_path / "t.npz", X=target.X)
    out = tmp_path / "zero.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--out", str(out)]) == 0
    assert load_bundle(out).metadata["adaptation"]["mode"] == "zero-shot"
    anomalies, normals = np.flatnonzero(target.y == 1)[:4], np.flatnonzero(target.y == 0)[:10]
    pd.DataFrame({"row": np.r_[anomalies, normals], "label": [1] * 4 + [0] * 10}).to_csv(tmp_path / "labels.csv", index=False)
    out2 = tmp_path / "few.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out2)]) == 0
    assert load_bundle(out2).metadata["adaptation"]["labelled_rows"] == 14


def test_bad_input_exits_2_with_a_clear_message(model_path, target, tmp_path, capsys):
    np.savez(tmp_path / "t.npz", X=target.X)
    cases = [
        (["--data", str(tmp_path / "missing.csv")], "no such data file"),
        (["--data", str(tmp_path / "t.npz"), "--shots", "5"], "--shots needs labels"),
        (["--data", str(tmp_path / "t.npz"), "--model", str(tmp_path / "t.npz")], "not an anomaly-gym policy bundle"),
    ]
    for extra, message in cases:
        args = ["adapt", "--model", str(model_path), "--out", str(tmp_path / "o.zip"), *extra]
        assert main(args) == 2
        assert message in capsys.readouterr().err


def test_bad_labels_and_missing_values_in_a_csv(model_path, target, tmp_path, capsys):
    frame = pd.DataFrame(target.X, columns=[f"c{j}" for j in range(target.n_features)])
    frame["label"] = target.y.astype(object)
    frame.loc[7, "label"] = "yes"
    frame.to_csv(tmp_path / "labels.csv", index=False)
    args = ["adapt", "--model", str(model_path), "--label-column", "label", "--out", str(tmp_path / "o.zip")]
    assert main([*args, "--data", str(tmp_path / "labels.csv")]) == 2
    assert "data row 7 has 'yes'" in capsys.readouterr().err

    frame["label"] = target.y
    frame.loc[3, "c1"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    assert main([*args, "--data", str(tmp_path / "nan.csv")]) == 2
    assert "--impute median" in capsys.readouterr().err
    assert main([*args, "--data", str(tmp_path / "nan.csv"), "--impute", "median"]) == 0
