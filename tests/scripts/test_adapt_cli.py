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
    code = main(
        [
            "adapt",
            "--model",
            str(model_path),
            "--data",
            str(tmp_path / "t.csv"),
            "--label-column",
            "label",
            "--shots",
            "8",
            "--normal-shots",
            "40",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    record = load_bundle(out).metadata["adaptation"]
    assert record["mode"] == "few-shot" and record["labelled_rows"] == 48 and record["rows"] == target.n_rows
    adapted = load_bundle(out)
    assert adapted.featurizer.n_columns_ == target.n_features
    # the record and the bundle agree: a kept head is stored with the weight its evidence gave it
    if record["kept"] == "adapted":
        assert adapted.head is not None and record["head_weight"] > 0
        assert adapted.head.weight == pytest.approx(record["head_weight"])
    else:
        assert record["head_weight"] == 0 and adapted.head is None and "too little evidence" in record["reason"]


def test_zero_shot_from_an_npz_and_a_labels_file(model_path, target, tmp_path):
    np.savez(tmp_path / "t.npz", X=target.X)
    out = tmp_path / "zero.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--out", str(out)]) == 0
    assert load_bundle(out).metadata["adaptation"]["mode"] == "zero-shot"
    anomalies, normals = np.flatnonzero(target.y == 1)[:4], np.flatnonzero(target.y == 0)[:10]
    pd.DataFrame({"row": np.r_[anomalies, normals], "label": [1] * 4 + [0] * 10}).to_csv(tmp_path / "labels.csv", index=False)
    out2 = tmp_path / "few.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--labels", str(tmp_path / "labels.csv"), "--out", str(out2)]) == 0
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
    assert "column 'label', line 9: label 'yes'" in capsys.readouterr().err  # data row 7 is on line 9

    frame["label"] = target.y
    frame.loc[3, "c1"] = np.nan
    frame.to_csv(tmp_path / "nan.csv", index=False)
    assert main([*args, "--data", str(tmp_path / "nan.csv")]) == 2
    assert "--impute median" in capsys.readouterr().err
    assert main([*args, "--data", str(tmp_path / "nan.csv"), "--impute", "median"]) == 0


def test_few_shot_method_option_and_detect_reads_the_head(model_path, tmp_path, capsys):
    target = make_synthetic_task("clustered", n_rows=600, n_features=4, contamination=0.08, seed=11)
    frame = pd.DataFrame(target.X, columns=[f"c{j}" for j in range(target.n_features)])
    frame["label"] = target.y
    frame.to_csv(tmp_path / "t.csv", index=False)
    fine = tmp_path / "fine.zip"
    assert (
        main(
            [
                "adapt",
                "--model",
                str(model_path),
                "--data",
                str(tmp_path / "t.csv"),
                "--label-column",
                "label",
                "--shots",
                "8",
                "--few-shot",
                "fine-tune",
                "--out",
                str(fine),
            ]
        )
        == 0
    )
    assert load_bundle(fine).metadata["adaptation"]["method"] == "fine-tune" and load_bundle(fine).head is None

    unguarded = tmp_path / "unguarded.zip"
    assert (
        main(
            [
                "adapt",
                "--model",
                str(model_path),
                "--data",
                str(tmp_path / "t.csv"),
                "--label-column",
                "label",
                "--shots",
                "8",
                "--no-guard",
                "--out",
                str(unguarded),
            ]
        )
        == 0
    )
    record = load_bundle(unguarded).metadata["adaptation"]
    assert record["kept"] == "adapted" and "guard is off" in record["reason"]
    assert (
        main(
            [
                "adapt",
                "--model",
                str(model_path),
                "--data",
                str(tmp_path / "t.csv"),
                "--label-column",
                "label",
                "--shots",
                "8",
                "--no-guard",
                "--few-shot",
                "fine-tune",
                "--out",
                str(unguarded),
            ]
        )
        == 2
    )
    assert "--no-guard applies to --few-shot head" in capsys.readouterr().err

    headed = tmp_path / "head.zip"
    assert (
        main(
            [
                "adapt",
                "--model",
                str(model_path),
                "--data",
                str(tmp_path / "t.csv"),
                "--label-column",
                "label",
                "--shots",
                "10",
                "--normal-shots",
                "50",
                "--out",
                str(headed),
            ]
        )
        == 0
    )
    bundle = load_bundle(headed)
    record = bundle.metadata["adaptation"]
    assert record["method"] == "head" and record["head_rows"] == target.n_rows
    assert record["kept"] == "adapted" and bundle.head is not None and bundle.head.n_columns == target.n_features
    # detect scores the target's rows (label column left out) with the adapted bundle, head included
    capsys.readouterr()
    scored = tmp_path / "scored.csv"
    assert (
        main(
            [
                "detect",
                str(tmp_path / "t.csv"),
                "--model",
                str(headed),
                "--columns",
                ",".join(frame.columns[:-1]),
                "--device",
                "cpu",
                "--output",
                str(scored),
                "--no-progress",
            ]
        )
        == 0
    )
    out = pd.read_csv(scored)
    assert len(out) == target.n_rows
    # with the stored featurizer (fitted by adapt) and the head, detect gives the library's scores
    np.testing.assert_allclose(out["anomaly_score"], bundle.score(target.X, refit=False), rtol=1e-6)


def test_bench_adapt_runs_on_a_data_folder(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for name, kind in (("alpha", "local"), ("beta", "clustered")):
        task = make_synthetic_task(kind, n_rows=300, n_features=4, contamination=0.1, seed=5)
        np.savez(data / f"{name}.npz", X=task.X, y=task.y)
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, n_features=4, seed=0)], featurizer=SMALL)
    model = make_agent("ppo", env, net_arch=[], device="cpu", seed=0, n_steps=64, batch_size=64).learn(128)
    path = PolicyBundle(model, SMALL, {"train_tasks": ["global"], "val_tasks": ["alpha", "beta"]}).save(tmp_path / "b.zip")
    capsys.readouterr()
    assert main(["bench", "adapt", "--model", str(path), "--data-dir", str(data), "--seeds", "1", "--shots", "5", "--normals", "20"]) == 0
    out = capsys.readouterr().out
    assert "alpha" in out and "beta" in out and "few-shot - zero-shot:" in out
    assert "guarded few-shot vs zero-shot on the unseen test part: mean" in out and " of 2 runs (worst " in out
    assert main(["bench", "adapt", "--model", str(path), "--data-dir", str(data), "--seeds", "1", "--ablate-prior"]) == 0
    assert "without it:" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["bench", "adapt", "--model", str(path), "--data-dir", str(data), "--few-shot", "boost"])


@pytest.mark.parametrize("value", ["2", "255", "256", "0.5", "yes"])
def test_a_bad_label_in_a_labels_file_names_its_line(model_path, target, tmp_path, capsys, value):
    np.savez(tmp_path / "t.npz", X=target.X)
    (tmp_path / "labels.csv").write_text(f"row,label\n0,1\n1,0\n2,{value}\n3,1\n")
    code = main(
        ["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--labels", str(tmp_path / "labels.csv"), "--out", str(tmp_path / "o.zip")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "line 4" in err and repr(value) in err and not (tmp_path / "o.zip").exists()


def test_labels_file_rows_unknowns_and_duplicates(tmp_path):
    from anomaly_gym.meta.adapt import read_labels_file

    (tmp_path / "ok.csv").write_text("row,label\n0,1\n1,0\n2,\n3,-1\n4,1.0\n")
    assert read_labels_file(tmp_path / "ok.csv", 6).tolist() == [1, 0, -1, -1, 1, -1]
    (tmp_path / "dup.csv").write_text("row,label\n0,1\n1,0\n0,0\n")
    with pytest.raises(ValueError, match="line 4: row 0 is labelled again \\(first on line 2\\)"):
        read_labels_file(tmp_path / "dup.csv", 6)
    (tmp_path / "range.csv").write_text("row,label\n0,1\n6,0\n")
    with pytest.raises(ValueError, match="line 3: row '6' is not a data row number in 0..5"):
        read_labels_file(tmp_path / "range.csv", 6)
    (tmp_path / "frac.csv").write_text("row,label\n1.5,1\n")
    with pytest.raises(ValueError, match="line 2"):
        read_labels_file(tmp_path / "frac.csv", 6)


def test_parse_labels_keeps_blank_unknown_and_refuses_wraparound():
    from anomaly_gym.meta.adapt import parse_labels

    assert parse_labels(["1", "0", "", None, float("nan"), "-1", 1.0]).tolist() == [1, 0, -1, -1, -1, -1, 1]
    for value in (255, 256, -2, 2):  # an int8 cast would turn 255 into -1 and 256 into 0
        with pytest.raises(ValueError, match="line 2: label"):
            parse_labels([0, value], first_line=1)


def test_an_npz_with_y_is_not_silently_few_shot(model_path, target, tmp_path, capsys):
    np.savez(tmp_path / "t.npz", X=target.X, y=target.y)
    out = tmp_path / "a.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.npz"), "--out", str(out)]) == 0
    assert load_bundle(out).metadata["adaptation"]["mode"] == "zero-shot"
    assert "holds labels (y); adapting without them" in capsys.readouterr().err
    np.savez(tmp_path / "bad.npz", X=target.X, y=np.where(np.arange(target.n_rows) == 9, 255, target.y.astype(np.int64)))
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "bad.npz"), "--shots", "3", "--out", str(out)]) == 2
    assert "array y, entry 9: label 255" in capsys.readouterr().err


def test_zero_shot_csv_leaves_a_label_named_column_out_and_columns_take_commas(model_path, target, tmp_path, capsys):
    frame = pd.DataFrame(target.X, columns=[f"f{j}" for j in range(target.n_features)])
    frame["Label"] = target.y
    frame.to_csv(tmp_path / "t.csv", index=False)
    out = tmp_path / "a.zip"
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.csv"), "--out", str(out)]) == 0
    assert "['Label'] (named like a label" in capsys.readouterr().err
    assert load_bundle(out).featurizer.n_columns_ == target.n_features
    assert main(["adapt", "--model", str(model_path), "--data", str(tmp_path / "t.csv"), "--columns", "f0,f1", "--out", str(out)]) == 0
    assert load_bundle(out).featurizer.n_columns_ == 2
