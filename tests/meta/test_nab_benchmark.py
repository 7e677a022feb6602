"""The NAB benchmark: leave-one-category-out folds, NAB-layout outputs, and the ``nab`` command."""

from __future__ import annotations

import csv
import json

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.envs.series import load_nab_dir, make_synthetic_series
from anomaly_gym.envs.stream_policy import StreamPolicy
from anomaly_gym.meta import nab
from anomaly_gym.meta.nab_benchmark import NabBenchmarkConfig, run_nab_benchmark
from anomaly_gym.scripts.cli import main


@pytest.fixture(scope="module")
def nab_like(tmp_path_factory):
    """A NAB-layout folder: two categories of two synthetic series each."""
    root = tmp_path_factory.mktemp("nab")
    windows = {}
    for c, cat in enumerate(("catA", "catB")):
        (root / cat).mkdir()
        for k in range(2):
            s = make_synthetic_series(100 + 10 * c + k, n_rows=900, n_anomalies=1)
            name = f"{cat}/s{k}.csv"
            pd.DataFrame({"timestamp": pd.to_datetime(s.timestamps).strftime("%Y-%m-%d %H:%M:%S"), "value": s.values}).to_csv(root / name, index=False)
            windows[name] = [[str(s.timestamps[a]).replace("T", " ") + ".000000", str(s.timestamps[b]).replace("T", " ") + ".000000"] for a, b in s.windows]
    (root / "combined_windows.json").write_text(json.dumps(windows))
    return root


@pytest.mark.slow
def test_folds_never_train_on_the_scored_category_and_outputs_follow_nab(nab_like, tmp_path):
    cfg = NabBenchmarkConfig(methods=("policy", "rolling_zscore", "windowed_gaussian"), synthetic_series=2, total_steps=1024, plots=True)
    rows = run_nab_benchmark(nab_like, tmp_path, cfg)
    corpus = load_nab_dir(nab_like)
    assert len(corpus) == 4 and all(s.windows for s in corpus)
    for cat in ("catA", "catB"):
        pol = StreamPolicy.load(tmp_path / "policies" / f"{cat}.policy.json")
        trained = pol.metadata["train_series"]
        assert not any(name.startswith(cat + "/") for name in trained)
        assert any(name.startswith("synthetic/") for name in trained)
    for method in cfg.methods:
        for s in corpus:
            ts, scores = nab.read_results(tmp_path / "results", method, s.name)
            assert len(scores) == s.n_rows and np.isfinite(scores).all()
    got = {(r["method"], r["category"], r["threshold_rule"]) for r in rows}
    assert ("policy", "ALL", "corpus") in got and ("rolling_zscore", "catB", "held-out") in got
    summary = (tmp_path / "summary.md").read_text()
    assert "| policy |" in summary and "held-out threshold" in summary
    assert (tmp_path / "plots" / "catA" / "s0.png").is_file()
    # the summary's corpus figure is NAB's score of the results files
    res = nab.score_corpus({s.name: (nab.read_results(tmp_path / "results", "rolling_zscore", s.name)[1], s.n_rows, s.windows) for s in corpus})
    row = next(r for r in rows if r["method"] == "rolling_zscore" and r["category"] == "ALL" and r["threshold_rule"] == "corpus")
    assert row["score"] == pytest.approx(res.score)


def test_nab_commands(nab_like, tmp_path, capsys):
    assert main(["nab", "benchmark", "--data", str(nab_like), "--out", str(tmp_path), "--methods", "rolling_zscore", "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "rolling_zscore" in out and "where the points go" in out and " FP |" in out
    assert "per-file threshold" in out and "upper bound" in out
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    best = {r["category"]: float(r["raw"]) for r in rows if r["threshold_rule"] == "per-file"}
    corpus = {r["category"]: float(r["raw"]) for r in rows if r["threshold_rule"] == "corpus"}
    assert best.keys() == corpus.keys() == {"catA", "catB", "ALL"}
    assert all(best[c] >= corpus[c] - 1e-9 for c in best)
    assert main(["nab", "score", str(tmp_path / "results"), "--detector", "rolling_zscore", "--data", str(nab_like)]) == 0
    out = capsys.readouterr().out
    assert "corpus-wide sweep" in out and "catA" in out
    assert main(["nab", "benchmark", "--data", str(nab_like), "--out", str(tmp_path), "--methods", "oracle"]) == 2
    assert "unknown method" in capsys.readouterr().err
    assert main(["nab", "score", str(tmp_path / "results"), "--detector", "nobody", "--data", str(nab_like)]) == 2


def test_benchmark_protocol_nab_runs_the_nab_benchmark(nab_like, tmp_path, capsys):
    assert main(["benchmark", "--protocol", "nab", "--data", str(nab_like), "--out", str(tmp_path), "--methods", "rolling_zscore"]) == 0
    assert "rolling_zscore" in capsys.readouterr().out
    assert (tmp_path / "summary.csv").is_file()
    assert main(["benchmark", "--protocol", "nab", "--out", str(tmp_path)]) == 2
    assert "--protocol nab needs --data" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(nab_like), "--out", str(tmp_path)]) == 2
    assert "--data is for --protocol nab" in capsys.readouterr().err


def test_the_search_trainer_raises_the_training_nab_score_and_keeps_monotone_weights(nab_like):
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    from anomaly_gym.meta.stream_training import featurize_series, search_stream_policy

    corpus = load_nab_dir(nab_like)
    feats = featurize_series(corpus)
    start = search_stream_policy(corpus, features=feats, iterations=0, seed=0)
    fitted = search_stream_policy(corpus, features=feats, iterations=15, seed=0)
    assert fitted.metadata["train_nab_score"] >= start.metadata["train_nab_score"]
    w = fitted.layers[0][0][0]
    directed = [i for i, n in enumerate(OBSERVATION_NAMES) if n not in ("stream/maturity", "self/since_flag")]
    assert (w[directed] >= 0).all() and w[OBSERVATION_NAMES.index("self/since_flag")] == 0.0
    assert fitted.gate_rows == 100


def test_window_rows_weigh_each_window_by_a_fn_and_each_outside_row_by_a_fp():
    from anomaly_gym.envs.series import Series
    from anomaly_gym.meta.stream_training import window_rows

    n = 1000
    s = Series("x/a.csv", np.zeros(n), np.arange(n).astype("datetime64[s]"), ((400, 409), (700, 739)), "x")
    feats = np.arange(n, dtype=np.float64)[:, None] * np.ones((1, 15))
    x, y, w = window_rows([s], [feats], "standard")
    probation = nab.probation_length(n)
    assert len(y) == n - probation and x.shape == (n - probation, 15)
    assert w[y == 1].sum() == pytest.approx(2.0)  # A_FN = 1 per window, shared by its rows
    assert np.allclose(w[y == 0], 0.11) and (y == 1).sum() == 50
    assert set(x[y == 1, 0].astype(int)) == set(range(400, 410)) | set(range(700, 740))


def test_the_logistic_trainer_fits_monotone_weights_that_separate_windows(nab_like):
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    from anomaly_gym.meta.stream_training import featurize_series, fit_logistic_stream_policy, window_rows

    corpus = load_nab_dir(nab_like)
    feats = featurize_series(corpus)
    policy = fit_logistic_stream_policy(corpus, features=feats, l2=1.0)
    again = fit_logistic_stream_policy(corpus, features=feats, l2=1.0)
    w = policy.layers[0][0][0]
    assert np.array_equal(w, again.layers[0][0][0])  # a convex fit: deterministic
    directed = [i for i, n in enumerate(OBSERVATION_NAMES) if n not in ("stream/maturity", "self/since_flag")]
    assert (w[directed] >= 0).all() and w[OBSERVATION_NAMES.index("self/since_flag")] == 0.0
    assert policy.gate_rows == 100 and policy.metadata["trainer"] == "logistic"
    x, y, weight = window_rows(corpus, feats)
    p = policy.proba(np.hstack([x, np.zeros((len(x), 1))]))
    assert np.average(p[y == 1], weights=weight[y == 1]) > np.average(p[y == 0], weights=weight[y == 0])
    with pytest.raises(ValueError, match="l2"):
        fit_logistic_stream_policy(corpus, features=feats, l2=-1.0)


def test_nab_train_writes_a_calibrated_stream_policy(nab_like, tmp_path, capsys):
    out = tmp_path / "p.policy.json"
    assert main(["nab", "train", "--data", str(nab_like), "--synthetic", "1", "--iterations", "3", "-o", str(out)]) == 0
    assert "score threshold" in capsys.readouterr().out
    policy = StreamPolicy.load(out)
    assert 0.0 <= policy.score_threshold <= 1.0 and policy.metadata["trainer"] == "logistic" and policy.metadata["pool"] == "window"  # the default trainer
    assert len(policy.metadata["train_series"]) == 5
    assert main(["nab", "train", "--data", str(nab_like), "--synthetic", "0", "--trainer", "search", "--iterations", "2", "-o", str(out)]) == 0
    assert StreamPolicy.load(out).metadata["trainer"] == "search"
    assert main(["nab", "train", "--data", str(nab_like), "--iterations", "-1", "-o", str(out)]) == 2


def test_window_bags_hold_each_window_as_one_positive_and_the_window_loss_has_its_gradient():
    from anomaly_gym.envs.series import Series
    from anomaly_gym.meta.stream_training import _window_loss, window_bags

    n = 1000
    s = Series("x/a.csv", np.zeros(n), np.arange(n).astype("datetime64[s]"), ((400, 409), (700, 739)), "x")
    feats = np.random.default_rng(0).normal(size=(n, 16))
    x_out, cost, x_in, reward_bag = window_bags([s], [feats], "standard")
    assert len(x_out) == n - nab.probation_length(n) - 50 and x_in.shape[1] == x_out.shape[1] == 15
    assert np.allclose(cost[:10], 0.11) and (cost > 0).all() and cost.min() < 0.11  # cheaper just after a window
    bags = reward_bag[:, 1].astype(int)
    assert list(np.unique(bags)) == [0, 1] and len(x_in) <= 50
    for k in (0, 1):  # what a first detection earns falls through the window, from about A_TP
        r = reward_bag[bags == k, 0]
        assert r[0] == pytest.approx(1.0, abs=0.02) and (np.diff(r) < 0).all() and r[-1] > 1e-3
    loss = _window_loss(x_out, cost, x_in, reward_bag, 0.5, 1.0)
    theta = np.random.default_rng(1).normal(scale=0.3, size=16)
    value, grad = loss(theta)
    step = 1e-6
    numeric = [(loss(theta + step * e)[0] - loss(theta - step * e)[0]) / (2 * step) for e in np.eye(16)]
    assert np.allclose(grad, numeric, rtol=1e-4, atol=1e-5)


def test_the_window_fit_is_monotone_and_the_cli_takes_the_trainer_and_penalty(nab_like, tmp_path, capsys):
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    from anomaly_gym.meta.stream_training import featurize_series, fit_logistic_stream_policy

    corpus = load_nab_dir(nab_like)
    feats = featurize_series(corpus)
    policy = fit_logistic_stream_policy(corpus, features=feats, l2=1.0, pool="window")
    w = policy.layers[0][0][0]
    directed = [i for i, n in enumerate(OBSERVATION_NAMES) if n not in ("stream/maturity", "self/since_flag")]
    assert (w[directed] >= 0).all() and w.any() and policy.metadata["pool"] == "window"
    with pytest.raises(ValueError, match="pool"):
        fit_logistic_stream_policy(corpus, features=feats, pool="mean")
    out = tmp_path / "p.policy.json"
    assert main(["nab", "train", "--data", str(nab_like), "--synthetic", "0", "--l2", "2.5", "--trainer", "window", "-o", str(out)]) == 0
    meta = StreamPolicy.load(out).metadata
    assert meta["l2"] == 2.5 and meta["pool"] == "window"
    capsys.readouterr()
    assert main(["nab", "train", "--data", str(nab_like), "--l2", "-1", "-o", str(out)]) == 2
    assert "--l2 must not be negative" in capsys.readouterr().err


def test_free_signs_let_a_feature_lower_the_score_and_the_cli_takes_them(nab_like, tmp_path, capsys):
    from anomaly_gym.envs.series import Series
    from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
    from anomaly_gym.meta.stream_training import fit_logistic_stream_policy

    # every window and some rows outside them raise season/lag; only those outside also raise level/fast
    n = 2000
    lag, fast = OBSERVATION_NAMES.index("season/lag"), OBSERVATION_NAMES.index("level/fast")
    feats = np.random.default_rng(0).normal(scale=0.05, size=(n, len(OBSERVATION_NAMES) - 1))
    windows = ((1000, 1099), (1500, 1599))
    for a, _ in windows:
        feats[a : a + 5, lag] = 3.0
    spikes = np.arange(400, n, 37)
    spikes = spikes[~np.any([(spikes >= a - 10) & (spikes <= b + 10) for a, b in windows], axis=0)]
    feats[spikes, lag] = feats[spikes, fast] = 3.0
    series = [Series("x/a.csv", np.zeros(n), np.arange(n).astype("datetime64[s]"), windows, "x")]
    mono = fit_logistic_stream_policy(series, features=[feats], pool="window", l2=0.01)
    free = fit_logistic_stream_policy(series, features=[feats], pool="window", l2=0.01, monotone=False)
    assert mono.layers[0][0][0][fast] == 0.0 and mono.metadata["monotone"] is True
    assert free.layers[0][0][0][fast] < -0.5 and free.metadata["monotone"] is False
    x = np.hstack([feats, np.zeros((n, 1))])
    starts = [a for a, _ in windows]
    # the free policy scores the windows' onsets above the lone spikes; the monotone one cannot tell them apart
    assert free.proba(x[starts]).min() > free.proba(x[spikes]).max()
    assert mono.proba(x[starts]).min() <= mono.proba(x[spikes]).max() + 1e-9

    out = tmp_path / "free.policy.json"
    assert main(["nab", "train", "--data", str(nab_like), "--synthetic", "0", "--free-signs", "-o", str(out)]) == 0
    assert StreamPolicy.load(out).metadata["monotone"] is False
    capsys.readouterr()
    assert main(["nab", "train", "--data", str(nab_like), "--free-signs", "--trainer", "search", "-o", str(out)]) == 2
    assert "--free-signs needs --trainer window" in capsys.readouterr().err
    with pytest.raises(ValueError, match="monotone policies only"):
        from anomaly_gym.meta.nab_benchmark import fit_policy

        fit_policy(series, [feats], NabBenchmarkConfig(trainer="search", monotone=False))


def test_the_window_fit_needs_a_window_after_the_probationary_period():
    from anomaly_gym.envs.series import Series
    from anomaly_gym.meta.stream_training import fit_logistic_stream_policy

    n = 1000
    s = Series("x/a.csv", np.zeros(n), np.arange(n).astype("datetime64[s]"), ((10, 20),), "x")  # inside the probation
    with pytest.raises(ValueError, match="probationary period"):
        fit_logistic_stream_policy([s], features=[np.zeros((n, 16))], pool="window")
