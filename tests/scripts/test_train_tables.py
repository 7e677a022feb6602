"""``anomaly-gym train`` on a folder of mixed tables (text columns, missing numbers), in-process, on a tiny budget."""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.agents import load_bundle
from anomaly_gym.meta.config import TrainConfig
from anomaly_gym.scripts import cli

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")


def _tables(folder, n: int = 160):
    """Three tables: two numeric columns (one with missing values), a protocol (rare ones are the anomalies), a label."""
    folder.mkdir()
    for t in range(3):
        rng = np.random.default_rng(t)
        y = np.zeros(n, dtype=int)
        y[rng.choice(n, 8, replace=False)] = 1
        proto = np.where(y == 1, rng.choice(["icmp", "gre"], n), rng.choice(["tcp", "udp"], n, p=[0.7, 0.3]))
        dur = rng.normal(size=n)
        dur[rng.random(n) < 0.05] = np.nan
        frame = pd.DataFrame({"bytes": rng.normal(size=n) + 2 * y, "dur": dur, "proto": proto, "label": y})
        frame.to_csv(folder / f"t{t}.csv.gz", index=False)
    return folder


def test_train_on_a_folder_of_mixed_tables_and_detect_unseen_categories(tmp_path, capsys):
    folder = _tables(tmp_path / "tables")
    base = [
        "train",
        "--sources",
        str(folder),
        "--total-steps",
        "256",
        "--device",
        "cpu",
        "--no-progress",
        "--run-dir",
        str(tmp_path / "runs"),
        "--set",
        "val_tasks=1",
        "--set",
        "n_envs=8",
        "--set",
        "n_steps=32",
        "--set",
        "batch_size=128",
        "--set",
        "eval_every=256",
        "--set",
        "checkpoint_every=256",
        "--set",
        "featurizer.detectors=['ecod','hbos']",
    ]
    # missing numbers: an error under nan_policy = "error", naming the file and the setting that imputes them
    assert cli.main([*base, "--set", "nan_policy=error"]) == 2
    err = capsys.readouterr().err
    assert "t0.csv.gz" in err and "missing value in numeric column 'dur'" in err and 'nan_policy = "median"' in err
    assert cli.main([*base, "--set", "nan_policy=median", "--out", str(tmp_path / "p.zip")]) == 0
    out = capsys.readouterr().out
    assert "zero-shot validation AUROC" in out
    bundle = load_bundle(tmp_path / "p.zip", device="cpu")
    assert sorted(bundle.metadata["train_tasks"] + bundle.metadata["val_tasks"]) == ["t0", "t1", "t2"]

    # the trained policy scores a new table whose protocol was never seen in training: scored, not an error
    new = pd.read_csv(folder / "t0.csv.gz").drop(columns="label")
    new.loc[7, "proto"] = "sctp"
    new.to_csv(tmp_path / "new.csv", index=False)
    assert cli.main(["detect", str(tmp_path / "new.csv"), "--model", str(tmp_path / "p.zip"), "--on-missing", "impute"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == len(new) and all(r["error"] == "" for r in rows)
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert np.isfinite(scores).all() and scores[7] >= np.quantile(scores, 0.9)


def test_the_default_config_trains_on_the_tables_folder():
    cfg = TrainConfig.from_toml("configs/detect-default.toml")
    assert cfg.sources == ["builtin", "../shared/data/adbench", "../shared/data/tables"] and cfg.nan_policy == "median"


def test_held_out_bundles_train_each_fold_without_its_tables_and_their_twins(tmp_path):
    from anomaly_gym.envs.sources import load_tables_dir
    from anomaly_gym.meta.benchmark.policies import held_out_bundles
    from anomaly_gym.meta.executors import make_executor

    folder = tmp_path / "tables"
    folder.mkdir()
    for t in range(4):  # widths 2..4: three groups of the fold rule; t3 is t0's data rescaled, under another name (other contents)
        rng = np.random.default_rng(0 if t == 3 else t)
        width = 2 + (0 if t == 3 else t)
        y = (np.arange(120) % 15 == 0).astype(int)
        frame = pd.DataFrame((rng.normal(size=(120, width)) + 3 * y[:, None]) * (2 if t == 3 else 1), columns=[f"x{j}" for j in range(width)])
        frame.assign(label=y).to_csv(folder / f"t{t}.csv.gz", index=False)
    small = {"n_envs": 8, "n_steps": 32, "batch_size": 128, "eval_every": 256, "checkpoint_every": 256, "val_tasks": 1}
    data = {**TrainConfig().to_dict(), "sources": [str(folder)], "total_steps": 256, "device": "cpu", **small}
    data["featurizer"] = {**data["featurizer"], "detectors": ["ecod", "hbos"]}
    cfg = TrainConfig.from_dict(data)
    config = tmp_path / "c.toml"
    config.write_text(cfg.to_toml())
    targets = load_tables_dir(folder, names=["t0", "t1", "t2"])
    bundles, plan = held_out_bundles(config, targets, folds=3, twins={"t0": "t3"}, out=tmp_path / "out", executor=make_executor("serial"))
    assert sorted(bundles) == ["t0", "t1", "t2"] and plan["t3"] == plan["t0"] and len({plan["t0"], plan["t1"], plan["t2"]}) == 3
    for name, bundle in bundles.items():
        seen = set(bundle.metadata["train_tasks"]) | set(bundle.metadata["val_tasks"])
        held = {name, "t3"} if name == "t0" else {name}
        assert not seen & held and seen == {"t0", "t1", "t2", "t3"} - held
    # a second call reuses the fold bundles
    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "models").glob("*.bundle.zip")}
    held_out_bundles(config, targets, folds=3, twins={"t0": "t3"}, out=tmp_path / "out", executor=make_executor("serial"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "out" / "models").glob("*.bundle.zip")} == stamp
