"""``anomaly-gym benchmark``: outputs, resume, the protocol's split and leakage rules, error rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from anomaly_gym.agents import load_bundle
from anomaly_gym.detectors import DETECTORS, BaseDetector
from anomaly_gym.envs import builtin_suite
from anomaly_gym.envs.tasks import Task, benchmark_split
from anomaly_gym.meta.benchmark import COLUMNS, Setting, cells, draw_labels, plan_folds, protocol, report, results
from anomaly_gym.scripts.cli import main

# 4, 6, 10, 16, 4 and 13 columns: the two targets (4 columns each) share a fold
SOURCES = ["synthetic/global-00", "synthetic/local-01", "synthetic/dependency-02", "synthetic/clustered-03", "sklearn/iris-1", "sklearn/wine-0"]
TARGETS = "synthetic/global-00,sklearn/iris-1"
TINY_TOML = f"""
name = "tiny"
datasets = {json.dumps(SOURCES)}
val_tasks = 1
total_steps = 1024
n_envs = 16
n_steps = 32
batch_size = 256
eval_every = 1000000
checkpoint_every = 1000000
device = "cpu"

[featurizer]
detectors = ["iforest", "ecod", "hbos"]
max_fit_rows = 1000
"""


def _args(out: Path, config: Path, *extra: str) -> list[str]:
    return [
        "benchmark",
        "--sources",
        "builtin",
        "--targets",
        "builtin",
        "--datasets",
        TARGETS,
        "--seeds",
        "1",
        "--methods",
        "policy,iforest,feature_transfer_kmeans",
        "--train-config",
        str(config),
        "--folds",
        "2",
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


def _rows(out: Path) -> list[dict]:
    with (out / "results.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("config") / "tiny.toml"
    path.write_text(TINY_TOML)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_config) -> Path:
    """One tiny end-to-end benchmark on the built-in suite, shared by the tests below."""
    out = tmp_path_factory.mktemp("bench") / "out"
    assert main(_args(out, tiny_config)) == 0
    return out


def test_end_to_end_writes_results_summary_and_plots(run_dir):
    rows = _rows(run_dir)
    assert tuple(rows[0]) == COLUMNS
    assert len(rows) == 2 * 3  # 2 datasets x 3 methods x 1 seed x zero-shot
    assert {(r["dataset"], r["method"]) for r in rows} == {(d, m) for d in TARGETS.split(",") for m in ("policy", "iforest", "feature_transfer_kmeans")}
    for r in rows:
        assert r["status"] == "ok", r
        assert r["protocol"] == "zero-shot" and r["labels"] == "0" and r["seed"] == "0"
        assert 0.0 <= float(r["auroc"]) <= 1.0 and 0.0 <= float(r["auprc"]) <= 1.0
        assert float(r["fit_seconds"]) >= 0 and float(r["score_seconds"]) >= 0
    # IForest separates these two easy tasks: a real number, not a placeholder
    assert all(float(r["auroc"]) > 0.7 for r in rows if r["method"] == "iforest")
    summary = (run_dir / "summary.md").read_text()
    for heading in (
        "# Benchmark summary",
        "## zero-shot",
        "### Mean and median over datasets",
        "### The policy against each baseline",
        "### Where the transfer baselines win",
    ):
        assert heading in summary
    assert "| iforest | 2 |" in summary and "`feature_transfer_kmeans`" in summary
    for png in ("auroc_by_dataset_zero-shot.png", "average_rank_zero-shot.png"):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({png})" in summary


def test_summary_statistics_match_the_rows(run_dir):
    rows = _rows(run_dir)
    auroc = {(r["dataset"], r["method"]): float(r["auroc"]) for r in rows}
    diffs = [auroc[(d, "policy")] - auroc[(d, "iforest")] for d in TARGETS.split(",")]
    result = report.compare(
        *(report.group_tables(results.load_results(run_dir / "results.csv"))[("zero-shot", "0")]["auroc"][m] for m in ("policy", "iforest"))
    )
    assert result["n"] == 2
    assert result["wins"] == sum(d >= 1e-3 for d in diffs) and result["losses"] == sum(d <= -1e-3 for d in diffs)
    assert result["mean_diff"] == pytest.approx(np.mean(diffs), abs=1e-5)
    assert report._wilcoxon(np.zeros(4)) == 1.0  # all-zero differences: no evidence either way
    assert 0.0 < report._wilcoxon(np.array([0.1, 0.2, 0.3, -0.05, 0.0])) <= 1.0


def test_a_dataset_counts_for_a_method_only_when_every_seed_succeeded():
    import pandas as pd

    rows = []
    for d in ("d1", "d2"):
        for seed in (0, 1):
            for m, auroc in (("a", 0.9), ("b", 0.6)):
                failed = (d, seed, m) == ("d1", 1, "b")
                rows.append(
                    dict(
                        dataset=d,
                        method=m,
                        protocol="zero-shot",
                        labels="0",
                        seed=seed,
                        auroc=np.nan if failed else auroc + seed / 100,
                        auprc=0.5,
                        fit_seconds=0.1,
                        score_seconds=0.1,
                        status="error" if failed else "ok",
                        error="",
                    )
                )
    table = report.group_tables(pd.DataFrame(rows))[("zero-shot", "0")]["auroc"]
    assert np.isnan(table.loc["d1", "b"]) and table.loc["d2", "b"] == pytest.approx(0.605)
    assert table.loc["d1", "a"] == pytest.approx(0.905)
    ranks, complete = report.average_ranks(table)
    assert complete == ["d2"] and ranks["a"] == 1.0 and ranks["b"] == 2.0


def test_no_target_among_its_policys_training_tasks(run_dir):
    folds = json.loads((run_dir / "folds.json").read_text())
    tasks = {t.name: t for t in builtin_suite()}
    for fold, info in folds["folds"].items():
        assert not set(info["held_out"]) & set(info["sources"])
        for name in info["held_out"]:
            assert folds["target_fold"][name] == fold
            assert all(tasks[name].hash != tasks[s].hash and tasks[name].dataset != tasks[s].dataset for s in info["sources"])
    # every target of a source's dataset sits in a numbered fold (the other classes of iris-1 and wine-0
    # are the same dataset); the folds cover the shared datasets once
    held = [n for f, info in folds["folds"].items() if f != "all" for n in info["held_out"]]
    shared = [n for n, t in tasks.items() if any(t.dataset == tasks[s].dataset for s in SOURCES)]
    assert sorted(held) == sorted(shared) and len(shared) == len(SOURCES) + 4
    records = [json.loads(line) for line in (run_dir / "policies.jsonl").read_text().splitlines()]
    assert {r["dataset"] for r in records} == set(TARGETS.split(","))
    for r in records:
        bundle = load_bundle(r["bundle"], device="cpu")
        seen = set(bundle.metadata["train_tasks"]) | set(bundle.metadata["val_tasks"])
        assert r["dataset"] not in seen and seen, r
        assert not seen & set(folds["folds"][r["fold"]]["held_out"])
        assert seen <= set(SOURCES)  # the config's dataset selection is respected


def test_rerun_skips_finished_rows_and_reuses_fold_policies(run_dir, tiny_config, monkeypatch):
    before = (run_dir / "results.csv").read_text()

    def forbidden(*args, **kwargs):
        raise AssertionError("a finished row was run again")

    monkeypatch.setattr(cells, "evaluate", forbidden)
    monkeypatch.setattr("anomaly_gym.meta.training.MetaTrainer.train", forbidden)
    assert main(_args(run_dir, tiny_config)) == 0
    assert (run_dir / "results.csv").read_text() == before


def test_resume_after_a_killed_run_runs_only_the_missing_rows(run_dir, tiny_config, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    lines = (out / "results.csv").read_text().splitlines()
    # keep the header and two rows, and a third row cut off mid-line as a killed run leaves it
    (out / "results.csv").write_text("\n".join(lines[:3]) + "\n" + lines[3][:15])
    calls = []
    real = cells.evaluate
    monkeypatch.setattr(cells, "evaluate", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr("anomaly_gym.meta.training.MetaTrainer.train", lambda *a, **k: pytest.fail("retrained"))
    assert main(_args(out, tiny_config, "--executor", "serial")) == 0  # counted in this process
    assert len(calls) == 4
    rows = _rows(out)
    assert len(rows) == 6 and len({results.row_key(r) for r in rows}) == 6


def test_other_setup_in_the_same_out_is_refused(run_dir, tiny_config, capsys):
    assert main(_args(run_dir, tiny_config, "--source-rows", "500")) == 2
    assert "another setup" in capsys.readouterr().err


def test_policy_config_is_pinned_only_once_policy_rows_exist(run_dir, tiny_config, tmp_path, capsys):
    other = tmp_path / "other.toml"
    other.write_text(TINY_TOML.replace("total_steps = 1024", "total_steps = 2048"))
    # run_dir holds policy rows: a different training config would mix two policies
    assert main(_args(run_dir, other)) == 2
    assert "policy differ" in capsys.readouterr().err
    # baseline rows do not depend on the policy's config: adding the policy later with another config is fine
    out = tmp_path / "out"
    baselines = ["--methods", "iforest"]
    assert main(_args(out, tiny_config) + baselines) == 0
    assert main(_args(out, other) + ["--methods", "iforest,policy"]) == 0
    assert {r["method"] for r in _rows(out)} == {"iforest", "policy"}
    assert len(json.loads((out / "run.json").read_text())["commands"]) == 0  # in-process calls record no command line


def test_model_whose_training_tasks_hold_the_target_gives_error_rows(run_dir, tmp_path):
    bundle_path = next((run_dir / "models").glob("fold-*.bundle.zip"))
    trained_on = load_bundle(bundle_path, device="cpu").metadata["train_tasks"][0]
    out = tmp_path / "out"
    args = [
        "benchmark",
        "--sources",
        "builtin",
        "--targets",
        "builtin",
        "--datasets",
        f"{trained_on},sklearn/wine-1",
        "--seeds",
        "1",
        "--methods",
        "policy",
        "--model",
        str(bundle_path),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    rows = {r["dataset"]: r for r in _rows(out)}
    assert rows[trained_on]["status"] == "error"
    assert rows[trained_on]["error"] == "target among the bundle's training tasks"
    assert rows[trained_on]["auroc"] == ""
    assert rows["sklearn/wine-1"]["status"] == "ok"
    assert "## Errors" in (out / "summary.md").read_text()


# --------------------------------------------------------------------------- protocol units


class _Crash(BaseDetector):
    def _fit(self, X, y, source):
        raise RuntimeError("boom on purpose")

    def _decision_function(self, X):
        return X[:, 0]


class _LabelSpy(BaseDetector):
    """Records what a label-aware detector is given; scores by the first column."""

    requires_labels = True
    calls: list = []

    def _fit(self, X, y, source):
        _LabelSpy.calls.append((X.copy(), y.copy()))

    def _decision_function(self, X):
        return X[:, 0]


def test_a_crashing_method_is_an_error_row_not_the_end_of_the_run(tmp_path, monkeypatch):
    monkeypatch.setitem(DETECTORS, "crash", _Crash)
    out = tmp_path / "out"
    args = [
        "benchmark",
        "--sources",
        "builtin",
        "--targets",
        "builtin",
        "--datasets",
        "synthetic/global-00,sklearn/wine-1",
        "--seeds",
        "2",
        "--methods",
        "crash,hbos",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    rows = _rows(out)
    assert len(rows) == 2 * 2 * 2
    crash = [r for r in rows if r["method"] == "crash"]
    assert all(r["status"] == "error" and "RuntimeError: boom on purpose" in r["error"] for r in crash)
    assert all(r["status"] == "ok" and float(r["auroc"]) > 0.5 for r in rows if r["method"] == "hbos")
    summary = (out / "summary.md").read_text()
    assert "## Errors" in summary and "boom on purpose" in summary
    # --retry-errors runs them again (and they fail again), without duplicating rows
    assert main(args + ["--retry-errors"]) == 0
    assert len(_rows(out)) == 8


def test_few_shot_labels_come_from_the_training_part_only(tmp_path, monkeypatch):
    monkeypatch.setitem(DETECTORS, "label_spy", _LabelSpy)
    monkeypatch.setattr(_LabelSpy, "calls", [])
    out = tmp_path / "out"
    names = ["synthetic/global-00", "synthetic/local-02"]
    args = [
        "benchmark",
        "--sources",
        "builtin",
        "--targets",
        "builtin",
        "--datasets",
        ",".join(names),
        "--seeds",
        "2",
        "--protocol",
        "few-shot",
        "--labels",
        "3,7",
        "--label-ratio",
        "0.25",
        "--methods",
        "label_spy,hbos",
        "--out",
        str(out),
        "--no-progress",
        "--executor",
        "serial",
    ]
    assert main(args) == 0
    tasks = {t.name: t for t in builtin_suite()}
    splits = {(n, s): benchmark_split(tasks[n], s) for n in names for s in (0, 1)}
    assert len(_LabelSpy.calls) == 2 * 2 * 3
    seen_counts = []
    for X, y in _LabelSpy.calls:
        (key,) = [k for k, sp in splits.items() if sp.train.X.shape == X.shape and np.array_equal(sp.train.X, X)]
        split = splits[key]
        train_rows = {row.tobytes() for row in split.train.X.astype(np.float64)}
        test_rows = {row.tobytes() for row in split.test.X.astype(np.float64)}
        labelled = np.flatnonzero(y == 1)
        assert split.train.y[labelled].all()  # every labelled row is a training anomaly
        for i in labelled:
            assert X[i].tobytes() in train_rows and X[i].tobytes() not in test_rows
        seen_counts.append((key, int(y.sum()), int(split.train.y.sum())))
    for key, count, n_train_anomalies in seen_counts:
        assert count in (3, 7, max(1, round(0.25 * n_train_anomalies)))
    rows = _rows(out)
    assert {r["labels"] for r in rows} == {"3", "7", "25%"}
    # hbos uses no labels: run once per dataset and seed, its row repeated under each setting
    hbos = [r for r in rows if r["method"] == "hbos"]
    assert len(hbos) == 2 * 2 * 3 and len({(r["dataset"], r["seed"], r["auroc"], r["fit_seconds"]) for r in hbos}) == 4
    assert "## few-shot, 3 labelled anomalies" in (out / "summary.md").read_text()


def test_few_shot_ablations_use_the_held_out_policy(run_dir, tiny_config, tmp_path, monkeypatch):
    """policy_unguarded and head_without_policy get their target's fold bundle, like policy."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    monkeypatch.setattr("anomaly_gym.meta.training.MetaTrainer.train", lambda *a, **k: pytest.fail("fold policies are cached"))
    args = _args(out, tiny_config, "--protocol", "few-shot", "--labels", "5")
    args[args.index("--methods") + 1] = "policy,policy_unguarded,head_without_policy"
    assert main(args) == 0
    rows = [r for r in _rows(out) if r["protocol"] == "few-shot"]
    assert {(r["dataset"], r["method"]) for r in rows} == {(d, m) for d in TARGETS.split(",") for m in ("policy", "policy_unguarded", "head_without_policy")}
    assert all(r["status"] == "ok" and 0.0 <= float(r["auroc"]) <= 1.0 for r in rows), rows
    logged = [json.loads(line) for line in (out / "policies.jsonl").read_text().splitlines()]
    by_method = {r.get("method"): r for r in logged if r["protocol"] == "few-shot"}
    assert by_method["policy_unguarded"]["adaptation"]["kept"] == "adapted"
    assert by_method["head_without_policy"]["adaptation"]["policy_prior"] is False
    assert by_method["head_without_policy"]["fold"] == by_method["policy"]["fold"]


def test_draw_labels_counts_ratios_nesting_and_cap():
    y = np.zeros(200, dtype=np.int8)
    y[np.random.default_rng(0).choice(200, size=12, replace=False)] = 1
    five, note = draw_labels(y, Setting("few-shot", count=5), seed=3)
    ten, _ = draw_labels(y, Setting("few-shot", count=10), seed=3)
    assert five.sum() == 5 and ten.sum() == 10 and note == ""
    assert set(np.flatnonzero(five)) <= set(np.flatnonzero(ten))  # nested draws
    assert set(np.flatnonzero(ten)) <= set(np.flatnonzero(y))
    assert not np.array_equal(five, draw_labels(y, Setting("few-shot", count=5), seed=4)[0])
    assert draw_labels(y, Setting("few-shot", ratio=0.25), seed=0)[0].sum() == 3  # round(0.25 * 12)
    assert draw_labels(y, Setting("few-shot", ratio=0.01), seed=0)[0].sum() == 1  # at least 1
    capped, note = draw_labels(y, Setting("few-shot", count=20), seed=0)
    assert capped.sum() == 12 and "only 12 anomalies" in note


def test_plan_folds_holds_out_shared_datasets_by_name_content_and_width():
    def task(name, seed, width=3):
        X = np.random.default_rng(seed).normal(size=(40, width))
        y = np.r_[np.zeros(36), np.ones(4)]
        return Task(name, X, y)

    sources = [task(f"s{i}", i, width=2 + i) for i in range(7)] + [task("s6-rescaled", 50, width=8)]
    renamed = Task("copy-of-s5", sources[5].X, sources[5].y)  # same rows under another name
    targets = sources[:5] + [renamed, sources[7], task("new", 99, width=8)]
    folds = plan_folds(sources, targets, k=3)
    assert folds["new"] == "all"  # not a source: scored by a policy trained on every source
    assert folds["copy-of-s5"] != "all"
    assert folds["s6-rescaled"] != "all"
    numbered = [f for f in folds.values() if f != "all"]
    assert sorted(set(numbered)) == ["1", "2", "3"] and len(numbered) == 7
    assert max(numbered.count(f) for f in "123") - min(numbered.count(f) for f in "123") <= 1
    for fold in ("1", "2", "3"):
        kept = protocol.fold_sources(sources, targets, folds, fold)
        held = [t for t in targets if folds[t.name] == fold]
        assert not any(protocol.same_dataset(s, t) for s in kept for t in held)
        if any(t.name == "copy-of-s5" for t in held):
            assert sources[5] not in kept
    # same width, same fold: a rescaled version of a dataset never teaches the policy tested on the other
    wide = [task("a", 1, 5), task("b", 2, 5), task("c", 3, 6), task("d", 4, 7), task("e", 5, 8)]
    f = plan_folds(wide, wide, k=4)
    assert f["a"] == f["b"] and len({f["a"], f["c"], f["d"], f["e"]}) == 4
    assert plan_folds(sources, targets, k=50)  # more folds than groups: one group per fold
    with pytest.raises(ValueError, match="at least 2"):
        plan_folds(sources, targets, k=1)


def test_a_planted_task_is_its_parent_dataset_in_folds_and_source_pools():
    rng = np.random.default_rng(0)
    parent = Task("wine", rng.normal(size=(40, 3)), np.r_[np.zeros(36), np.ones(4)])
    child = Task("planted/wine/local-0", rng.normal(size=(40, 3)), np.r_[np.zeros(36), np.ones(4)], parent="wine")
    other = Task("iris", rng.normal(size=(40, 4)), np.r_[np.zeros(36), np.ones(4)])
    assert protocol.same_dataset(child, parent) and not protocol.same_dataset(child, other)
    folds = plan_folds([parent, child, other], [parent, other], k=2)
    kept = protocol.fold_sources([parent, child, other], [parent, other], folds, folds["wine"])
    assert [t.name for t in kept] == ["iris"]  # the held-out dataset's planted child is held out with it


def test_transfer_inputs_equal_the_detectors_own_feature_space():
    """Precomputed source features give exactly the scores of the detector's feature_space='features'."""
    tasks = {t.name: t for t in builtin_suite()}
    target = tasks["synthetic/global-00"]
    sources = [tasks[n] for n in ("synthetic/local-01", "sklearn/iris-1", "sklearn/wine-0")]
    split = benchmark_split(target, 0)
    pool = cells.SourcePool(sources, 150)
    X_src, y_src, space = pool.for_target([target], split.train.n_features, 0)
    assert space == "features" and len(X_src) == 3 and all(len(x) <= 150 for x in X_src)
    train_Z, test_Z, _ = cells.target_features(split.train.X, split.test.X)
    for method in ("feature_transfer_kmeans", "coral_kmeans"):
        ours = cells.build_detector(method, 0, feature_space="raw").fit(train_Z, source=(X_src, y_src))
        scaled = [pool.scaled(s, 0) for s in sources]
        direct = cells.build_detector(method, 0).fit(split.train.X, source=([t.X for t in scaled], [t.y for t in scaled]))
        np.testing.assert_allclose(ours.decision_function(test_Z), direct.decision_function(split.test.X), rtol=1e-9)
    # the target itself is never among the sources handed out
    X_src2, _, _ = pool.for_target([sources[1]], split.train.n_features, 0)
    assert len(X_src2) == 2


def test_bad_arguments_exit_2(tmp_path, capsys):
    base = ["benchmark", "--sources", "builtin", "--targets", "builtin", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(base + ["--methods", "nosuch"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(base + ["--methods", "iforest", "--datasets", "nosuch"]) == 2
    assert "not among the targets" in capsys.readouterr().err
    assert main(base + ["--methods", "iforest", "--protocol", "few-shot", "--labels", "none"]) == 2
    assert "needs --labels" in capsys.readouterr().err


def test_gan_and_spectral_groups_are_opt_in():
    from anomaly_gym.meta.benchmark.protocol import GAN, SPECTRAL, resolve_methods

    zero = [Setting("zero-shot")]
    default = resolve_methods(None, zero)
    assert not set(GAN + SPECTRAL) & set(default)
    chosen = resolve_methods("iforest,gan,spectral", zero)
    assert chosen == ["iforest", "so_gaal", "mo_gaal", "meta_gan", "gan_scratch", "transfer_spectral"]
    assert resolve_methods("default,gan", zero) == default + list(GAN)


def test_transfer_rows_are_the_same_serially_and_on_the_process_pool(run_dir, tiny_config, tmp_path):
    """run_dir ran on the default local pool (sources featurized over the workers first); serially the rows agree."""
    import shutil

    out = tmp_path / "out"
    shutil.copytree(run_dir, out)
    lines = (out / "results.csv").read_text().splitlines()
    kept = [line for line in lines if ",feature_transfer_kmeans," not in line]
    assert len(kept) == len(lines) - 2
    (out / "results.csv").write_text("\n".join(kept) + "\n")
    assert main(_args(out, tiny_config, "--executor", "serial")) == 0

    def transfer(path):
        return sorted((r["dataset"], r["auroc"], r["auprc"], r["status"]) for r in _rows(path) if r["method"] == "feature_transfer_kmeans")

    assert transfer(out) == transfer(run_dir) and all(r[3] == "ok" for r in transfer(out))


@pytest.mark.slow  # trains the fold's policy again, in this process: 20-60 s on two busy cores
def test_fold_policies_are_the_same_trained_serially_and_on_the_process_pool(run_dir, tiny_config, tmp_path):
    """run_dir trained its folds' policies as items of the default local pool; serially they score the same."""
    out = tmp_path / "serial"
    assert main(_args(out, tiny_config, "--executor", "serial", "--methods", "policy")) == 0

    def policy(path):
        return sorted((r["dataset"], r["auroc"], r["auprc"], r["status"]) for r in _rows(path) if r["method"] == "policy")

    assert len(policy(out)) == 2 and all(r[3] == "ok" for r in policy(out))
    assert policy(out) == policy(run_dir)
    records = sorted(p.name for p in (out / "models").glob("fold-*.json"))
    folds = json.loads((run_dir / "folds.json").read_text())["target_fold"]
    assert len(records) == len({folds[t] for t in TARGETS.split(",")}) and records == sorted(p.name for p in (run_dir / "models").glob("fold-*.json"))
    for name in records:  # the same sources, held-out datasets and config
        assert json.loads((out / "models" / name).read_text()) == json.loads((run_dir / "models" / name).read_text())


def test_methods_help_names_every_method_of_the_protocols_lists():
    """The --methods help spells out the lists (building the parser imports no library code); it must match them."""
    from anomaly_gym.meta.benchmark.protocol import GAN, LABEL_AWARE, SPECTRAL, TRANSFER, UNSUPERVISED
    from anomaly_gym.scripts.cli import build_parser

    sub = [a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction"][0].choices["benchmark"]
    (methods,) = [a for a in sub._actions if "--methods" in a.option_strings]
    for group in (GAN, SPECTRAL, UNSUPERVISED, TRANSFER, LABEL_AWARE):
        assert ", ".join(group) in methods.help
