"""NAB scoring: hand-computed cases, NAB's published per-row scores, and the sweep's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from anomaly_gym.envs.series import load_nab_dir
from anomaly_gym.meta import nab


def sig(y: float) -> float:
    """The scaled sigmoid, written out again for the hand computations."""
    return -1.0 if y > 3 else 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


MAX_TP = sig(-1.0)


def test_scaled_sigmoid_and_probation():
    assert float(nab.scaled_sigmoid(0.0)) == pytest.approx(0.0)
    assert float(nab.scaled_sigmoid(-1.0)) == pytest.approx(0.9866142981514305)
    assert float(nab.scaled_sigmoid(3.5)) == -1.0
    assert float(nab.scaled_sigmoid(1.0)) == pytest.approx(-0.9866142981514305)
    assert nab.probation_length(4032) == 604  # NAB's 4,032-row files: TN + FP + TP + FN = 3,428
    assert nab.probation_length(10_000) == 750
    assert nab.probation_length(100) == 15


def test_hand_computed_file():
    # 100 rows, probation 15, one window of 10 rows (40..49)
    prep = nab.prepare_file(100, [(40, 49)])
    det = np.zeros(100, dtype=bool)
    det[[10, 20, 45, 47, 60]] = True  # probation (ignored), FP before any window, TP, 2nd TP, FP after
    got = nab.score_detections(prep, det)

    expected = -0.11 + sig(-(49 - 45 + 1) / 10) / MAX_TP + 0.11 * sig((60 - 49) / 9)
    assert got.score == pytest.approx(expected)
    assert (got.tp, got.fp, got.windows_detected) == (2, 2, 1)
    assert got.tp + got.fp + got.tn + got.fn == 100 - 15
    # the window's first row earns A_TP exactly; a miss costs A_FN
    first = np.zeros(100, dtype=bool)
    first[40] = True
    assert nab.score_detections(prep, first).score == pytest.approx(1.0)
    assert nab.score_detections(prep, np.zeros(100, dtype=bool)).score == -1.0
    # profiles change the weights
    low_fn = nab.prepare_file(100, [(40, 49)], "reward_low_FN_rate")
    assert nab.score_detections(low_fn, np.zeros(100, dtype=bool)).score == -2.0
    low_fp = nab.prepare_file(100, [(40, 49)], "reward_low_FP_rate")
    assert low_fp.weight[20] == pytest.approx(-0.22)


def test_window_in_probation_is_not_scored():
    prep = nab.prepare_file(100, [(2, 5), (40, 49)])
    assert prep.n_windows == 1
    assert nab.score_detections(prep, np.zeros(100, dtype=bool)).score == -1.0


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match="overlap"):
        nab.prepare_file(100, [(10, 20), (15, 30)])
    with pytest.raises(ValueError, match="inside"):
        nab.prepare_file(100, [(90, 120)])
    with pytest.raises(ValueError, match="finite"):
        nab.best_threshold([nab.prepare_file(100, [])], [np.full(100, np.nan)])


def _corpus(rng, n_files=4):
    files = {}
    for k in range(n_files):
        n = int(rng.integers(300, 600))
        wins = [(200, 229), (n - 60, n - 31)] if k % 2 == 0 else [(150, 170)]
        files[f"cat{k % 2}/f{k}.csv"] = (rng.random(n), n, wins)
    return files


def test_sweep_matches_brute_force_over_every_threshold():
    rng = np.random.default_rng(0)
    files = _corpus(rng)
    # coarse scores make ties, which must be detected together
    files = {k: (np.round(v[0], 1), v[1], v[2]) for k, v in files.items()}
    prepared = [nab.prepare_file(n, w) for _, n, w in files.values()]
    scores = [s for s, _, _ in files.values()]
    thresholds, totals = nab.sweep_thresholds(prepared, scores)
    for t, total in zip(thresholds, totals):
        brute = sum(nab.score_detections(p, s >= t).score for p, s in zip(prepared, scores))
        assert total == pytest.approx(brute)
    assert np.isinf(thresholds[0]) and totals[0] == -sum(p.n_windows for p in prepared)


def test_perfect_null_and_flag_everything():
    rng = np.random.default_rng(1)
    files = _corpus(rng)
    groups = {k: k.split("/")[0] for k in files}
    perfect = {}
    for name, (_, n, wins) in files.items():
        s = np.zeros(n)
        for a, _ in wins:
            s[a] = 1.0
        perfect[name] = (s, n, wins)
    res = nab.score_corpus(perfect, groups=groups)
    assert res.score == pytest.approx(100.0)
    assert all(g["score"] == pytest.approx(100.0) for g in res.groups.values())
    for g, v in res.groups.items():  # every window found at its first row, nothing flagged outside
        n_windows = sum(len(w) for k, (_, _, w) in files.items() if groups[k] == g)
        assert v["detected"] == v["windows"] == n_windows and v["false_positives"] == 0

    null = nab.score_corpus({k: (np.full(n, 0.5), n, w) for k, (_, n, w) in files.items()})
    assert null.score == pytest.approx(0.0) and np.isinf(null.threshold)

    everything = nab.score_corpus({k: (np.ones(n), n, w) for k, (_, n, w) in files.items()}, threshold=0.5)
    expected_raw = 0.0
    for _, n, wins in files.values():
        prep = nab.prepare_file(n, wins)
        expected_raw += len(wins) * 1.0 + prep.weight[prep.kind == nab.OUTSIDE].sum()
    assert everything.raw == pytest.approx(expected_raw)
    assert everything.score == pytest.approx(100 * (expected_raw - null.raw) / (res.perfect - null.raw))
    assert everything.score < 0
    flagged = nab.score_corpus({k: (np.ones(n), n, w) for k, (_, n, w) in files.items()}, threshold=0.5, groups=groups)
    outside = sum(int((nab.prepare_file(n, w).kind == nab.OUTSIDE).sum()) for _, n, w in files.values())
    assert sum(v["false_positives"] for v in flagged.groups.values()) == outside


def test_per_file_thresholds_give_each_file_its_own_best_cut():
    rng = np.random.default_rng(2)
    files = _corpus(rng, n_files=6)
    groups = {k: k.split("/")[0] for k in files}
    # one file scores on another scale: one corpus-wide cut cannot serve both
    name = next(iter(files))
    s, n, w = files[name]
    files[name] = (10.0 + s, n, w)
    per_file = nab.score_corpus(files, threshold="per-file", groups=groups)
    corpus = nab.score_corpus(files, groups=groups)
    assert np.isnan(per_file.threshold)
    for k, (scores, n, wins) in files.items():
        prepared = nab.prepare_file(n, wins)
        assert per_file.files[k].score == pytest.approx(nab.best_threshold([prepared], [scores])[1])
        assert per_file.files[k].score >= corpus.files[k].score - 1e-12
    assert per_file.raw == pytest.approx(sum(f.score for f in per_file.files.values()))
    assert per_file.score > corpus.score
    assert per_file.groups.keys() == corpus.groups.keys()
    with pytest.raises(ValueError, match="per-file"):
        nab.score_corpus(files, threshold="each")


def test_ties_between_thresholds_go_to_the_higher_one():
    prep = [nab.prepare_file(100, [])]  # no windows: flagging anything only costs
    t, raw = nab.best_threshold(prep, [np.linspace(0, 1, 100)])
    assert np.isinf(t) and raw == 0.0


# NAB's published results file for Numenta HTM on realTraffic/speed_7578.csv (results/numenta/)
# records the score of each window and each false positive under the three profiles.
PUBLISHED_DETECTIONS = [
    "2015-09-12 00:16:00",
    "2015-09-14 17:45:00",
    "2015-09-15 06:05:00",  # false positives
    "2015-09-15 14:34:00",
    "2015-09-16 14:19:00",
    "2015-09-16 17:15:00",
    "2015-09-16 17:45:00",
]
PUBLISHED = {  # profile -> (per-window scores in order, false-positive scores in order)
    "standard": ([-1.0, 0.871604206333, 0.847084961863, 0.847084961863], [-0.109276714495, -0.11, -0.11]),
    "reward_low_FP_rate": ([-1.0, 0.871604206333, 0.847084961863, 0.847084961863], [-0.21855342899, -0.22, -0.22]),
    "reward_low_FN_rate": ([-2.0, 0.871604206333, 0.847084961863, 0.847084961863], [-0.109276714495, -0.11, -0.11]),
}


@pytest.mark.parametrize("profile", sorted(PUBLISHED))
def test_reproduces_nab_published_scores_on_speed_7578(nab_dir, profile):
    series = {s.name: s for s in load_nab_dir(nab_dir)}["realTraffic/speed_7578.csv"]
    ts = series.timestamps
    rows = [int(np.flatnonzero(ts == np.datetime64(t))[0]) for t in PUBLISHED_DETECTIONS]
    det = np.zeros(series.n_rows, dtype=bool)
    det[rows] = True
    prep = nab.prepare_file(series.n_rows, series.windows, profile)
    windows, fps = PUBLISHED[profile]

    assert prep.weight[rows[:3]] == pytest.approx(fps, abs=1e-9)
    got = nab.score_detections(prep, det)
    assert got.score == pytest.approx(sum(windows) + sum(fps), abs=1e-9)
    assert got.windows_detected == 3 and got.fp == 3


def test_nab_corpus_loads_with_its_windows(nab_dir):
    corpus = load_nab_dir(nab_dir)
    assert len(corpus) == 41
    assert sum(len(s.windows) for s in corpus) == 64
    assert {s.category for s in corpus} == {"artificialNoAnomaly", "artificialWithAnomaly", "realAWSCloudwatch", "realAdExchange", "realTraffic"}
