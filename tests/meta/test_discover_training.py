"""Meta-training the discovery policy and the active benchmark protocol (slow: they train policies)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.agents.discover import DiscoverBundle
from anomaly_gym.detectors.active import DiscoveryData, run_discovery
from anomaly_gym.envs import FeaturizerConfig, featurize_task
from anomaly_gym.envs.discover import default_prior
from anomaly_gym.envs.sources import make_synthetic_task
from anomaly_gym.envs.tasks import Task
from anomaly_gym.meta.discover import FOUND_AT, DiscoverTrainConfig, PolicyStrategy, train_discover_policy
from anomaly_gym.meta.discover_benchmark import ActiveBenchmarkConfig, compare, dataset_folds, run_active_benchmark
from anomaly_gym.scripts.cli import main

TINY = FeaturizerConfig(detectors=("ecod", "copod", "hbos"), descriptors=False)
SMALL = DiscoverTrainConfig(total_timesteps=1200, n_envs=2, budget=30, pool_size=16, n_steps=100, batch_size=100, n_epochs=2, device="cpu")


def _tasks(n=4):
    kinds = ("local", "clustered", "dependency", "global")  # the held-out target (last) is one detectors can see
    return [make_synthetic_task(kinds[i % 4], n_rows=300, n_features=3 + i % 3, contamination=0.08, seed=i) for i in range(n)]


def test_dataset_folds_are_balanced_and_seeded():
    rng = np.random.default_rng(0)
    tasks = [Task(f"d{i}", rng.normal(size=(30, 2 + i)), np.r_[np.zeros(27), np.ones(3)]) for i in range(11)]  # 11 widths
    folds = dataset_folds(tasks, 3)
    assert sorted(np.bincount(list(folds.values()))) == [3, 4, 4]
    assert folds == dataset_folds(list(reversed(tasks)), 3)


def test_compare_counts_wins_and_tests():
    table = pd.DataFrame({"meta-policy": [5, 6, 7, 8, 9, 3], "aad": [4, 5, 6, 7, 8, 3]})
    c = compare(table, "aad")
    assert (c["wins"], c["ties"], c["losses"]) == (5, 1, 0) and c["p"] < 0.1


def test_summary_says_where_no_method_can_be_ahead(tmp_path):
    from anomaly_gym.meta.discover_benchmark import write_summary

    # found@10 per target: "easy" has 6 anomalies and the best baseline found all 6; "open" has 50
    found = {
        "easy": {"meta-policy": 6, "iforest": 6, "random": 2},
        "open": {"meta-policy": 9, "iforest": 7, "random": 1},
        "lost": {"meta-policy": 3, "iforest": 5, "random": 0},
    }
    anomalies = {"easy": 6, "open": 50, "lost": 40}
    rows = [
        {"dataset": d, "method": m, "seed": 0, "n_rows": 500, "n_anomalies": anomalies[d], "found@10": f, "status": "ok"}
        for d, by in found.items()
        for m, f in by.items()
    ]
    write_summary(tmp_path, pd.DataFrame(rows), ActiveBenchmarkConfig(budget=10, seeds=1))
    text = (tmp_path / "summary.md").read_text()
    assert "above every baseline on 33% of 3 targets (at least tied with the best on 67%)" in text
    assert "On 1 of them the best baseline found every anomaly it could" in text
    assert "on the other 2 the policy is above every baseline on 1." in text


@pytest.mark.slow
def test_training_logs_found_at_k_and_the_bundle_serves_a_new_target(tmp_path):
    tasks = _tasks()
    bundle = train_discover_policy(tasks[:3], SMALL, featurizer=TINY, run_dir=tmp_path / "run")
    assert (tmp_path / "run" / "discover.bundle.zip").is_file()
    log = pd.read_csv(tmp_path / "run" / "progress.csv")
    assert {"discover/found@10", "discover/found@25"} <= set(log.columns)
    assert FOUND_AT == (10, 25, 50, 100)
    loaded = DiscoverBundle.load(tmp_path / "run" / "discover.bundle.zip")
    target = tasks[3]
    feats = featurize_task(target, TINY)
    data = DiscoveryData(target.X, feats, default_prior(feats, TINY))
    found = [run_discovery(PolicyStrategy(b), data, target.y, 30, seed=0) for b in (bundle, loaded)]
    assert np.array_equal(found[0], found[1])
    assert found[0].sum() > 30 * target.anomaly_rate  # better than showing rows at random


@pytest.mark.slow
def test_active_benchmark_writes_results_summary_and_curves(tmp_path):
    cfg = ActiveBenchmarkConfig(budget=30, seeds=2, folds=2, methods=("meta-policy", "random", "iforest", "aad"), train=SMALL)
    frame = run_active_benchmark(_tasks(), tmp_path, cfg, featurizer=TINY)
    assert len(frame) == 4 * 2 * 4 and set(frame["status"]) == {"ok"}
    assert {"found@10", "found@25", "found@30"} <= set(frame.columns)
    assert (frame["found@30"] >= frame["found@10"]).all()
    summary = (tmp_path / "summary.md").read_text()
    assert "meta-policy vs" in summary and "Wilcoxon" in summary
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "models" / "fold1.bundle.zip").is_file()
    again = run_active_benchmark(_tasks(), tmp_path, cfg, featurizer=TINY)  # resumes: nothing to redo
    assert len(again) == len(frame)


def test_cli_rejects_bad_active_arguments(capsys):
    assert main(["benchmark", "--protocol", "active", "--targets", "builtin", "--budget", "0"]) == 2
    assert "--budget must be positive" in capsys.readouterr().err
    assert main(["benchmark", "--protocol", "active", "--targets", "builtin", "--methods", "nope"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["benchmark", "--protocol", "active", "--targets", "builtin", "--sources", "extra", "--model", "d.zip"]) == 2
    assert "--sources would train none" in capsys.readouterr().err


def test_source_only_tasks_train_every_fold_but_never_a_version_of_its_targets(tmp_path, monkeypatch):
    import json

    from anomaly_gym.detectors.active import RandomStrategy
    from anomaly_gym.meta import discover_benchmark

    trained_on = {}

    def fake_fold_policy(out, fold, sources, *args):  # records what each fold's policy would train on
        trained_on[str(fold)] = sorted(t.name for t in sources)

    monkeypatch.setattr(discover_benchmark, "_fold_policy", fake_fold_policy)
    monkeypatch.setattr(discover_benchmark, "make_strategy", lambda *args: RandomStrategy())
    tasks = _tasks()
    rng = np.random.default_rng(5)
    extra = Task("extra", rng.normal(size=(80, 3)), np.r_[np.zeros(74), np.ones(6)])
    child = Task("planted_child", rng.normal(size=(80, 3)), np.r_[np.zeros(74), np.ones(6)], parent=tasks[0].name)
    cfg = ActiveBenchmarkConfig(budget=10, seeds=1, folds=2, methods=("meta-policy",))
    frame = run_active_benchmark(tasks, tmp_path, cfg, sources=[extra, child], featurizer=TINY)
    assert set(frame["dataset"]) == {t.name for t in tasks}  # source-only tasks are never targets
    record = json.loads((tmp_path / "folds.json").read_text())
    home = record["target_fold"][tasks[0].name]
    assert set(trained_on) == set(record["folds"])
    for fold, entry in record["folds"].items():
        assert sorted(entry["sources"]) == trained_on[fold]
        assert "extra" in entry["sources"]
        assert not set(entry["held_out"]) & set(entry["sources"])
        assert ("planted_child" in entry["sources"]) == (fold != home)  # a version of a held-out target stays out
    with pytest.raises(ValueError, match="unique"):
        run_active_benchmark(tasks, tmp_path, cfg, sources=[tasks[1]], featurizer=TINY)


def test_cli_sources_train_the_policies_but_are_not_targets(tmp_path):
    import json

    rng = np.random.default_rng(0)
    for folder, names in (("targets", ("t3", "t4", "t5")), ("extra", ("s3",))):
        (tmp_path / folder).mkdir()
        for name in names:
            y = np.r_[np.zeros(54), np.ones(6)]
            np.savez(tmp_path / folder / f"{name}.npz", X=rng.normal(size=(60, int(name[1]))) + 3 * y[:, None], y=y)
    args = ["--targets", str(tmp_path / "targets"), "--sources", str(tmp_path / "extra"), "--folds", "2", "--seeds", "1"]
    out = tmp_path / "out"
    assert main(["benchmark", "--protocol", "active", *args, "--budget", "5", "--methods", "random", "--no-progress", "-o", str(out)]) == 0
    assert set(pd.read_csv(out / "results.csv")["dataset"]) == {"t3", "t4", "t5"}
    folds = json.loads((out / "folds.json").read_text())
    assert set(folds["target_fold"]) == {"t3", "t4", "t5"}
    assert all("s3" in entry["sources"] for entry in folds["folds"].values())


@pytest.mark.slow
def test_one_given_bundle_serves_every_target_and_never_one_it_trained_on(tmp_path):
    import json

    tasks = _tasks()
    bundle = train_discover_policy(tasks[:2], dataclasses.replace(SMALL, total_timesteps=0), featurizer=TINY)
    cfg = ActiveBenchmarkConfig(budget=20, seeds=1, folds=2, methods=("meta-policy", "random"))
    frame = run_active_benchmark(tasks, tmp_path, cfg, model=bundle, featurizer=TINY)
    policy = frame[frame["method"] == "meta-policy"].set_index("dataset")["status"]
    assert policy.to_dict() == {t.name: "error" if t in tasks[:2] else "ok" for t in tasks}  # its own sources are refused
    assert not (tmp_path / "models").exists()  # no fold was trained
    assert "one given discovery bundle for every target (trained on 2 datasets" in (tmp_path / "summary.md").read_text()
    assert json.loads((tmp_path / "folds.json").read_text())["model_train_tasks"] == sorted(t.name for t in tasks[:2])
    again = run_active_benchmark(tasks, tmp_path, cfg, model=bundle, featurizer=TINY)  # resumes: the ok rows hold
    assert len(again[again["status"] == "ok"]) == len(frame[frame["status"] == "ok"])
