"""``anomaly-gym detect``: round trips, streaming through a pipe, bad input, the default model."""

import csv
import io
import json
import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from anomaly_gym.agents import PolicyBundle, load_bundle, make_agent
from anomaly_gym.agents.scoring import PolicyScorer
from anomaly_gym.detectors.stream import StreamDetector, split_window
from anomaly_gym.envs import AnomalyDetectionEnv, Featurizer, FeaturizerConfig, make_synthetic_task
from anomaly_gym.scripts import cli, detect

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")

CONFIG = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))
HEADER = "ts,a,b,c,label"
PLANTED = (17, 61, 118, 170)  # rows shifted far from the rest


@pytest.fixture(scope="session")
def bundle_path(tmp_path_factory):
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, seed=0)], featurizer=CONFIG)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", n_steps=64, batch_size=64).learn(512)
    return PolicyBundle(model, CONFIG).save(tmp_path_factory.mktemp("bundle") / "tiny.bundle.zip")


@pytest.fixture(scope="session")
def bundle(bundle_path):
    return load_bundle(bundle_path, device="cpu")


@pytest.fixture
def model(monkeypatch, bundle):
    """detect uses the session's bundle (loaded once) whatever --model says."""
    monkeypatch.setattr(detect, "load_model", lambda path, device: bundle)


def _rows(n: int = 200, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    X = np.round(rng.normal(size=(n, 3)), 4)
    X[[p for p in PLANTED if p < n]] += 8.0
    lines = [f"2024-05-01 12:{i // 60:02d}:{i % 60:02d},{x[0]},{x[1]},{x[2]},{'yes' if i in PLANTED else 'no'}" for i, x in enumerate(X)]
    return X, lines


def _write(path, lines, header=HEADER):
    path.write_text("\n".join(([header] if header else []) + lines) + "\n")
    return path


def _detect(capsys, monkeypatch, *argv, stdin: str | None = None, background: bool = False):
    """Run detect in-process.  Stream runs refit inline unless ``background``: the tests of
    reading and writing do not need a worker process (its start-up dominates their time);
    the background refits have tests of their own.  Stream runs take the tabular path
    (``--temporal off``) unless told otherwise: the temporal path has tests of its own."""
    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
    argv = [str(a) for a in argv]
    if "stream" in argv and "--refit" not in argv and not background:
        argv += ["--refit", "inline"]
    if "stream" in argv and "--temporal" not in argv:  # these inputs have a timestamp column; they test the tabular path
        argv += ["--temporal", "off"]
    code = cli.main(["detect", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _table(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def test_batch_round_trip_appends_scores_and_keeps_every_line(tmp_path, model, bundle, capsys, monkeypatch):
    X, lines = _rows()
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "in.csv", lines), "--model", "x")
    assert code == 0, err
    out_lines = out.splitlines()
    assert out_lines[0] == HEADER + ",anomaly_score,is_anomaly,error"
    assert len(out_lines) == len(lines) + 1
    for original, written in zip(lines, out_lines[1:]):
        assert written.startswith(original + ",")  # the input line, untouched
    rows = _table(out)
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert ((scores >= 0) & (scores <= 1)).all()
    # by default the top 5% are flagged
    assert [int(r["is_anomaly"]) for r in rows] == [int(s > np.quantile(scores, 0.95)) for s in scores]
    assert sum(int(r["is_anomaly"]) for r in rows) == 10
    assert all(r["error"] == "" for r in rows)
    # timestamps and labels are not features: they pass through
    assert [r["ts"] for r in rows] == [line.split(",")[0] for line in lines]
    # the far-shifted rows are among the highest scores
    others = np.delete(scores, PLANTED)
    assert scores[list(PLANTED)].min() > np.quantile(others, 0.9)
    # the scores are the policy's on a featurizer fitted on all rows
    expected = bundle.anomaly_proba(Featurizer(CONFIG).fit(X).transform(X))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert "200 rows read, 200 scored, 0 errors" in err
    assert "passed through as text: ['ts', 'label']" in err


def test_data_flag_is_the_same_as_an_input(tmp_path, model, capsys, monkeypatch):
    _, lines = _rows()
    src = _write(tmp_path / "in.csv", lines)
    code, by_position, err = _detect(capsys, monkeypatch, src)
    assert code == 0, err
    code, by_flag, err = _detect(capsys, monkeypatch, "--data", src, "-q")
    assert code == 0, err
    assert by_flag == by_position
    code, both, err = _detect(capsys, monkeypatch, src, "--data", src)  # one table of both files, in order
    assert code == 0, err
    assert len(_table(both)) == 2 * len(lines)


def test_batch_jsonl_has_one_valid_object_per_row(tmp_path, model, capsys, monkeypatch):
    X, lines = _rows()
    src = _write(tmp_path / "in.csv", lines)
    code, out, err = _detect(capsys, monkeypatch, src, "--output", tmp_path / "out.jsonl")
    assert code == 0, err
    objs = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(objs) == len(lines)
    assert list(objs[0]) == ["ts", "a", "b", "c", "label", "anomaly_score", "is_anomaly", "error"]
    np.testing.assert_array_equal([[o["a"], o["b"], o["c"]] for o in objs], X)
    assert objs[0]["ts"] == "2024-05-01 12:00:00" and objs[17]["label"] == "yes"
    assert all(o["error"] is None and o["is_anomaly"] in (0, 1) for o in objs)
    code, out, _ = _detect(capsys, monkeypatch, src)
    np.testing.assert_allclose([o["anomaly_score"] for o in objs], [float(r["anomaly_score"]) for r in _table(out)])


def test_columns_option_leaves_other_numeric_columns_out(tmp_path, model, capsys, monkeypatch):
    _, lines = _rows()
    with_id = [f"{line},{1000 + i}" for i, line in enumerate(lines)]
    code, out_id, err = _detect(capsys, monkeypatch, _write(tmp_path / "id.csv", with_id, HEADER + ",id"), "--columns", "a,b", "--columns", "c")
    assert code == 0, err
    code, out_plain, _ = _detect(capsys, monkeypatch, _write(tmp_path / "plain.csv", lines))
    rows_id, rows_plain = _table(out_id), _table(out_plain)
    assert [r["id"] for r in rows_id] == [str(1000 + i) for i in range(len(lines))]
    assert [r["anomaly_score"] for r in rows_id] == [r["anomaly_score"] for r in rows_plain]


def test_contamination_or_threshold_sets_the_flags(tmp_path, model, capsys, monkeypatch):
    _, lines = _rows()
    src = _write(tmp_path / "in.csv", lines)
    code, out, err = _detect(capsys, monkeypatch, src, "--contamination", "0.1")
    assert code == 0, err
    rows = _table(out)
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    flags = np.array([int(r["is_anomaly"]) for r in rows])
    assert flags.sum() == 20 and "score > the 0.9 quantile" in err
    np.testing.assert_array_equal(flags, scores > np.quantile(scores, 0.9))
    code, out, err = _detect(capsys, monkeypatch, src, "--threshold", "0.5")
    rows = _table(out)
    assert [int(r["is_anomaly"]) for r in rows] == [int(float(r["anomaly_score"]) > 0.5) for r in rows]
    assert "(score > 0.5)" in err


def test_a_large_batch_is_written_part_by_part_with_a_sampled_cut(tmp_path, model, capsys, monkeypatch):
    """Above THRESHOLD_SAMPLE valid rows the cut is the quantile of a seeded sample's scores and
    the rows are written part by part; the scores are those of scoring the whole table at once."""
    from anomaly_gym.scripts import _detect_batch

    _, lines = _rows(600)
    lines[5] = lines[7] = "2024-05-01 12:00:05,oops,1,2,no"  # bad rows inside the first parts
    src = _write(tmp_path / "in.csv", lines)
    code, whole, err = _detect(capsys, monkeypatch, src)
    assert code == 0 and "of 10,000 rows drawn at random" not in err
    monkeypatch.setattr(_detect_batch, "THRESHOLD_SAMPLE", 200)
    monkeypatch.setattr(_detect_batch, "FIRST_PART", 16)
    monkeypatch.setattr(_detect_batch, "LARGEST_PART", 64)
    code, parts, err = _detect(capsys, monkeypatch, src)
    assert code == 0, err
    assert "quantile of 200 rows drawn at random" in err
    rows, expected = _table(parts), _table(whole)
    assert [r["ts"] for r in rows] == [r["ts"] for r in expected] and len(rows) == 600
    got, want = ([float(r["anomaly_score"] or "nan") for r in table] for table in (rows, expected))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)  # torch's float32 sums vary with the batch size
    assert rows[5]["error"] and rows[7]["error"] and rows[5]["anomaly_score"] == ""
    cut = float(err.split("drawn at random = ")[1].split(")")[0])
    scores = np.array([float(r["anomaly_score"]) for r in rows if not r["error"]])
    flags = np.array([int(r["is_anomaly"]) for r in rows if not r["error"]])
    assert (scores[flags == 1] > cut * (1 - 1e-3)).all() and (scores[flags == 0] <= cut * (1 + 1e-3)).all()  # 4 digits printed
    assert 0.02 <= flags.mean() <= 0.09  # about the top 5%
    code, again, _ = _detect(capsys, monkeypatch, src)
    assert again == parts  # the sample is seeded


def test_a_batch_reader_that_closes_early_stops_the_run_with_exit_141_and_counts_what_was_written(tmp_path, bundle_path):
    _, lines = _rows(3000)
    src = _write(tmp_path / "in.csv", lines)
    argv = [sys.executable, "-m", "anomaly_gym.scripts.cli", "detect", str(src), "--model", str(bundle_path), "--device", "cpu"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(HEADER.encode() + b",anomaly_score")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    scored = int(err.split(" scored")[0].split(", ")[-1].replace(",", ""))
    assert "broken pipe" in err and "3,000 rows read" in err and scored < 3000  # rows are counted once written


@pytest.mark.parametrize("contamination", [None, 0.2])
def test_stream_scores_each_row_with_detectors_fitted_on_the_window(tmp_path, model, bundle, capsys, monkeypatch, contamination):
    X, lines = _rows()
    extra = ["--contamination", contamination] if contamination else ["--threshold", 0.5]
    code, out, err = _detect(
        capsys,
        monkeypatch,
        "-",
        "--mode",
        "stream",
        "--warmup",
        40,
        "--window",
        60,
        "--refit-every",
        50,
        "--refit",
        "inline",
        *extra,
        stdin="\n".join([HEADER, *lines]) + "\n",
    )
    assert code == 0, err
    rows = _table(out)
    assert len(rows) == 200 and list(rows[0])[-4:] == ["anomaly_score", "is_anomaly", "status", "error"]
    assert all(r["status"] == "warmup" and r["anomaly_score"] == "" for r in rows[:40])
    assert all(r["status"] == "ok" for r in rows[40:])
    scores = np.array([float(r["anomaly_score"]) for r in rows[40:]])
    # rows 40..89: fitted on rows 0..39 less the held-out ones; rows 90..139: refitted on
    # the window, rows 30..89, less its held-out ones
    fit1, _ = split_window(40)
    fit2, _ = split_window(60)
    first = Featurizer(CONFIG).fit(X[:40][fit1])
    expected = np.concatenate(
        [bundle.anomaly_proba(first.transform(X[40:90])), bundle.anomaly_proba(Featurizer(CONFIG).fit(X[30:90][fit2]).transform(X[90:140]))]
    )
    np.testing.assert_allclose(scores[:100], expected, rtol=0, atol=1e-6)
    flags = [int(r["is_anomaly"]) for r in rows[40:]]
    if contamination is None:
        assert flags == [int(s > 0.5) for s in scores]
    else:  # the library's stream detector, row by row
        with StreamDetector(bundle, contamination=contamination, warmup=40, window=60, refit_every=50, background=False) as det:
            want = [det.process_one(x) for x in X]
        np.testing.assert_allclose([s for s, _ in want[40:]], scores, rtol=0, atol=1e-12)
        assert flags == [f for _, f in want[40:]]
        assert "conformal p-value <= 0.2" in err
    assert "200 rows read, 160 scored, 40 in warm-up, 0 errors" in err
    assert "detectors fitted 4 time(s) (inline)" in err


def test_stream_refits_in_the_background_by_default(tmp_path, model, capsys, monkeypatch):
    _, lines = _rows()
    code, out, err = _detect(
        capsys,
        monkeypatch,
        "-",
        "--mode",
        "stream",
        "--warmup",
        40,
        "--window",
        60,
        "--refit-every",
        20,
        stdin="\n".join([HEADER, *lines]) + "\n",
        background=True,
    )
    assert code == 0, err
    rows = _table(out)
    assert [r["status"] for r in rows] == ["warmup"] * 40 + ["ok"] * 160
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r in rows[40:])
    assert "(in the background)" in err


def test_stream_through_a_pipe_answers_each_row_before_the_next_arrives(bundle_path):
    _, lines = _rows(60)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "anomaly_gym.scripts.cli",
            "detect",
            "-",
            "--mode",
            "stream",
            "--warmup",
            "20",
            "--model",
            str(bundle_path),
            "--device",
            "cpu",
            "--temporal",
            "off",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    got: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [got.put(line) for line in proc.stdout], daemon=True)
    reader.start()

    def next_line(timeout: float) -> str:
        try:
            return got.get(timeout=timeout)
        except queue.Empty:
            proc.kill()
            pytest.fail(f"no output line within {timeout}s; stderr: {proc.stderr.read()[-2000:]}")

    try:
        proc.stdin.write(HEADER + "\n" + "\n".join(lines[:30]) + "\n")
        proc.stdin.flush()
        out = [next_line(180) for _ in range(31)]  # start-up and the first fit included
        assert out[0].startswith(HEADER) and out[30].rstrip().endswith(",ok,")
        for line in lines[30:40]:  # a slow writer: one row at a time, each answered at once
            time.sleep(0.05)
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            answer = next_line(30)
            assert answer.startswith(line + ",") and answer.rstrip().endswith(",ok,")
        proc.stdin.write("\n".join(lines[40:]) + "\n")
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
        reader.join(timeout=10)
        assert got.qsize() == 20  # the rest, nothing more
        assert "60 rows read, 40 scored, 20 in warm-up" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()


BAD = {
    "empty line": ("", "empty line"),
    "too few fields": ("t,1.0,2.0", "expected 5 fields, got 3"),
    "too many fields": ("t,1,2,3,no,extra", "expected 5 fields, got 6"),
    "non-numeric": ("t,abc,2,3,no", "non-numeric value 'abc' in column 'a'"),
    "NaN": ("t,nan,2,3,no", "non-finite value 'nan' in column 'a'"),
    "missing value": ("t,,2,3,no", "missing value in column 'a'"),
}


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("policy", ["mark", "skip", "fail"])
@pytest.mark.parametrize("case", list(BAD))
def test_bad_rows_follow_the_on_error_policy(tmp_path, model, capsys, monkeypatch, case, policy, mode):
    _, lines = _rows(60)
    bad, reason = BAD[case]
    src = _write(tmp_path / "in.csv", lines[:30] + [bad] + lines[30:])  # the bad row is line 32
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--warmup", 20, "--on-error", policy)
    rows = _table(out)
    if policy == "fail":
        assert code == 2
        assert f"in.csv:32: {reason}" in err
        assert len(rows) == (30 if mode == "stream" else 0)  # stream had answered the rows before it
        return
    assert code == 0, err
    assert f"1 error ({'marked' if policy == 'mark' else 'skipped'})" in err
    if policy == "skip":
        assert len(rows) == 60 and all(r["error"] == "" for r in rows)
        assert [r["ts"] for r in rows] == [line.split(",")[0] for line in lines]
        return
    assert len(rows) == 61
    marked = rows[30]
    assert marked["error"].startswith(reason) and marked["anomaly_score"] == "" and marked["is_anomaly"] == ""
    if mode == "stream":
        assert marked["status"] == "error"
    if case not in ("empty line", "too few fields", "too many fields"):
        assert out.splitlines()[31].startswith(bad + ",")
    assert all(r["error"] == "" for i, r in enumerate(rows) if i != 30)


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_quoted_text_passes_through(tmp_path, model, capsys, monkeypatch, mode):
    _, lines = _rows(60)
    lines = [line.replace(",no", ',"no, really"') for line in lines]
    lines[40] = lines[40].replace(',"no, really"', ',"two\nlines"')  # a line break inside quotes
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "in.csv", lines), "--mode", mode, "--warmup", 20)
    assert code == 0, err
    rows = _table(out)
    assert len(rows) == 60 and all(r["error"] == "" for r in rows)
    assert rows[0]["label"] == "no, really" and rows[40]["label"] == "two\nlines" and rows[17]["label"] == "yes"


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_missing_header_is_named_or_fails(tmp_path, model, capsys, monkeypatch, mode):
    X, _ = _rows(40)
    src = _write(tmp_path / "nohead.csv", [",".join(map(str, x)) for x in X], header=None)
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--warmup", 10)
    assert code == 0, err
    assert out.splitlines()[0].startswith("col1,col2,col3,anomaly_score")
    assert len(_table(out)) == 40 and "no header row" in err
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--on-error", "fail")
    assert code == 2 and "nohead.csv:1: no header row" in err


def test_usage_errors_exit_with_2(tmp_path, model, capsys, monkeypatch):
    _, lines = _rows(40)
    src = _write(tmp_path / "in.csv", lines)
    for argv, message in [
        ((src, "--contamination", "1.5"), "--contamination must be between 0 and 1"),
        ((src, "--columns", "a,nope"), "['nope'], which the header does not have"),
        ((tmp_path / "absent.csv",), "no such input file"),
        ((src, "--mode", "stream", "--warmup", "5"), "--warmup must be at least 10"),
    ]:
        code, _, err = _detect(capsys, monkeypatch, *argv)
        assert code == 2 and message in err, err
    (tmp_path / "empty.csv").write_text("")
    code, _, err = _detect(capsys, monkeypatch, tmp_path / "empty.csv")
    assert code == 2 and "the input is empty" in err
    with pytest.raises(SystemExit) as exc:
        cli.main(["detect", str(src), "--mode", "sideways"])
    assert exc.value.code == 2


def test_without_a_default_bundle_the_error_says_what_to_do(tmp_path, capsys, monkeypatch):
    _, lines = _rows(40)
    monkeypatch.setattr(detect, "default_bundle_path", lambda: tmp_path / "absent.bundle.zip")
    code, _, err = _detect(capsys, monkeypatch, _write(tmp_path / "in.csv", lines))
    assert code == 2 and "default policy bundle is not installed" in err and "--model" in err


@pytest.mark.skipif(not detect.default_bundle_path().is_file(), reason="the default policy bundle is not installed")
def test_detection_with_the_default_model(tmp_path, capsys, monkeypatch):
    _, lines = _rows()
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "in.csv", lines), "--device", "cpu")
    assert code == 0, err
    scores = np.array([float(r["anomaly_score"]) for r in _table(out)])
    assert ((scores >= 0) & (scores <= 1)).all()
    assert scores[list(PLANTED)].mean() > np.delete(scores, PLANTED).mean()


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_the_numpy_policy_head_matches_torch(algo, bundle):
    if algo == "ppo":
        b = bundle
    else:
        config = FeaturizerConfig(detectors=("ecod",))
        env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=100, seed=1)], featurizer=config)
        b = PolicyBundle(make_agent(algo, env, net_arch=[16, 16], device="cpu"), config)
    scorer = PolicyScorer(b)
    assert scorer._row is not None  # the numpy head passed its own check against torch
    lo, hi = Featurizer(b.featurizer_config).feature_bounds()
    feats = np.random.default_rng(2).uniform(lo, hi, size=(50, len(lo))).astype(np.float32)
    np.testing.assert_allclose([scorer.row(f) for f in feats], b.anomaly_proba(feats), rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def headed(bundle_path):
    """The session's policy with a target head fitted on the rows of ``_rows()`` (planted rows labelled)."""
    from anomaly_gym.agents.factory import policy_margin
    from anomaly_gym.agents.head import HeadSettings, fit_head

    b = load_bundle(bundle_path, device="cpu")
    X = _rows()[0].astype(np.float32)  # tasks hold float32, as detect reads its input
    y = np.zeros(len(X), dtype=np.int8)
    y[list(PLANTED)] = 1
    features = b.fit_featurizer(X).transform(X)
    b.head = fit_head(X, features, policy_margin(b.model, features), y, HeadSettings(n_estimators=10))
    return b


def test_batch_scores_with_a_target_head(tmp_path, headed, capsys, monkeypatch):
    monkeypatch.setattr(detect, "load_model", lambda path, device: headed)
    X, lines = _rows()
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "in.csv", lines), "--model", "x")
    assert code == 0, err
    scores = np.array([float(r["anomaly_score"]) for r in _table(out)])
    # the stored featurizer (fitted on these rows) and the head on their columns
    np.testing.assert_allclose(scores, headed.score(X.astype(np.float32), refit=False), rtol=1e-6)


def test_single_rows_with_a_target_head_match_the_batch_path(headed):
    scorer = PolicyScorer(headed)
    X, _ = _rows(60, seed=4)
    feats = headed.featurizer.transform(X)
    np.testing.assert_allclose([scorer.row(f, x) for f, x in zip(feats, X)], scorer.batch(feats, X), rtol=0, atol=1e-6)


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_target_head_refuses_rows_of_another_width(tmp_path, headed, capsys, monkeypatch, mode):
    monkeypatch.setattr(detect, "load_model", lambda path, device: headed)
    _, lines = _rows()
    narrow = [",".join(line.split(",")[:3] + line.split(",")[4:]) for line in lines]  # drop column c
    src = _write(tmp_path / "narrow.csv", narrow, "ts,a,b,label")
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--model", "x")
    assert code == 2 and "adapted to a target with 3 columns" in err and "has 2" in err, err


def test_batch_uses_an_adapted_bundles_stored_featurizer(tmp_path, headed, capsys, monkeypatch):
    """Rows of the target are judged relative to the rows it was adapted on, however few arrive."""
    monkeypatch.setattr(detect, "load_model", lambda path, device: headed)
    X, lines = _rows(200, seed=9)  # new rows of the same target
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "few.csv", lines[:5]), "--model", "x")
    assert code == 0, err
    assert "stored featurizer" in err
    scores = np.array([float(r["anomaly_score"]) for r in _table(out)])
    np.testing.assert_allclose(scores, headed.score(X[:5].astype(np.float32), refit=False), rtol=1e-6)
    # --featurizer refit fits on the input (and needs at least 10 rows)
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "few.csv", lines[:5]), "--model", "x", "--featurizer", "refit")
    assert code == 2 and "at least 10" in err


def test_stored_featurizer_errors(tmp_path, model, headed, capsys, monkeypatch):
    _, lines = _rows()
    src = _write(tmp_path / "in.csv", lines)
    code, out, err = _detect(capsys, monkeypatch, src, "--featurizer", "stored")
    assert code == 2 and "holds no fitted featurizer" in err
    monkeypatch.setattr(detect, "load_model", lambda path, device: headed)
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", "stream", "--featurizer", "stored")
    assert code == 2 and "applies to batch mode" in err


# --------------------------------------------------------------------------- reproductions of issue 9 (CSV reader)


def _detect_bytes(capsys, monkeypatch, data: bytes, *argv):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return _detect(capsys, monkeypatch, "-", *argv)


def _out_rows(out: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(out, newline="")))


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("ending", ["\r", "\r\n", "\n", "mixed"])
def test_any_line_ending_reads_every_row(model, capsys, monkeypatch, mode, ending):
    _, lines = _rows(60)
    ends = ["\r", "\r\n", "\n"] if ending == "mixed" else [ending]
    text = "".join(line + ends[i % len(ends)] for i, line in enumerate([HEADER, *lines]))
    code, out, err = _detect_bytes(capsys, monkeypatch, text.encode(), "--mode", mode, "--warmup", 20)
    assert code == 0, err
    rows = _out_rows(out)
    assert len(rows) == 61 and [r[:5] for r in rows[1:]] == [line.split(",") for line in lines]
    assert all(r[-1] == "" for r in rows[1:])


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-le-bom", "utf-16-be-bom"])
def test_byte_order_marks_are_read(model, capsys, monkeypatch, mode, encoding):
    import codecs

    _, lines = _rows(40)
    text = "\r\n".join([HEADER, *lines]) + "\r\n"
    data = {
        "utf-8-sig": lambda: text.encode("utf-8-sig"),
        "utf-16": lambda: text.encode("utf-16"),
        "utf-16-le-bom": lambda: codecs.BOM_UTF16_LE + text.encode("utf-16-le"),
        "utf-16-be-bom": lambda: codecs.BOM_UTF16_BE + text.encode("utf-16-be"),
    }[encoding]()
    code, out, err = _detect_bytes(capsys, monkeypatch, data, "--mode", mode, "--warmup", 20)
    assert code == 0, err
    rows = _out_rows(out)
    assert rows[0][:5] == HEADER.split(",") and len(rows) == 41


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_utf16_without_a_byte_order_mark_is_named(tmp_path, model, capsys, monkeypatch, mode, encoding):
    _, lines = _rows(40)
    src = tmp_path / "file.csv"
    src.write_bytes("\n".join([HEADER, *lines]).encode(encoding))
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--warmup", 20)
    assert code == 2 and out == ""
    assert "file.csv:1: not UTF-8 text (looks like UTF-16" in err and "without a byte-order mark" in err
    assert "re-save it as UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_latin1_bytes_name_their_line(tmp_path, model, capsys, monkeypatch, mode):
    _, lines = _rows(40)
    lines[5] = lines[5].replace(",no", ",caf\xe9")
    src = tmp_path / "latin.csv"
    src.write_bytes("\n".join([HEADER, *lines]).encode("latin-1"))
    code, out, err = _detect(capsys, monkeypatch, src, "--mode", mode, "--warmup", 20)
    assert code == 2 and "latin.csv:7: not UTF-8 text: byte 0xe9 cannot be decoded" in err


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_field_longer_than_the_csv_modules_default_limit(tmp_path, model, capsys, monkeypatch, mode):
    _, lines = _rows(60)
    lines[40] = lines[40].replace(",no", "," + "L" * 200_000)  # a pass-through column: the row is scored
    lines[30] = lines[30].split(",", 2)[0] + "," + "9" * 140_000 + "," + lines[30].split(",", 2)[2]  # a feature: marked
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "long.csv", lines), "--mode", mode, "--warmup", 20, "--on-error", "mark")
    assert code == 0, err
    rows = _table(out)
    assert len(rows) == 60 and rows[40]["label"] == "L" * 200_000 and rows[40]["anomaly_score"] != ""
    assert rows[30]["error"].startswith("non-finite value '9999") and rows[30]["a"] == "9" * 140_000
    assert [r["ts"] for r in rows] == [line.split(",")[0] for line in lines]  # the rest of the input is kept
    assert "1 error (marked)" in err


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_a_stray_cr_and_a_quoted_newline_do_not_shift_rows(tmp_path, model, capsys, monkeypatch, mode):
    header = "k,a,b,c"
    rng = np.random.default_rng(5)
    body = [f"r{i},{x[0]:.4f},{x[1]:.4f},{x[2]:.4f}" for i, x in enumerate(rng.normal(size=(40, 3)))]
    text = "\n".join([header, *body[:20], "x,1,2,3\ry,4,5,6", 'z,7,8,"9\n10"', 'w,1,2,"3"', '"cr\rin quotes",1,2,3', *body[20:]]) + "\n"
    code, out, err = _detect_bytes(capsys, monkeypatch, text.encode(), "--mode", mode, "--warmup", 20)
    assert code == 0, err
    rows = _out_rows(out)
    expected = [line.split(",") for line in body[:20]] + [
        ["x", "1", "2", "3"],
        ["y", "4", "5", "6"],
        ["z", "7", "8", "9\n10"],
        ["w", "1", "2", "3"],
        ["cr\rin quotes", "1", "2", "3"],
    ]
    expected += [line.split(",") for line in body[20:]]
    assert [r[:4] for r in rows[1:]] == expected  # each row keeps its own fields
    by_key = {r[0]: r for r in rows[1:]}
    assert by_key["z"][-1] == "non-numeric value '9\\n10' in column 'c'" and by_key["z"][4] == ""
    assert by_key["y"][-1] == "" and by_key["cr\rin quotes"][-1] == ""
    assert '"cr\rin quotes"' in out  # a CR inside a field is written quoted: one record per input record


@pytest.mark.parametrize("mode", ["batch", "stream"])
@pytest.mark.parametrize("value", ["1e39", "-1e39", "1e308"])
def test_a_value_beyond_float32_marks_its_row_only(tmp_path, model, capsys, monkeypatch, mode, value):
    _, lines = _rows(60)
    lines[30] = lines[30].replace(lines[30].split(",")[1], value, 1)
    lines[31] = lines[31].replace(lines[31].split(",")[1], "-" + value.lstrip("-"), 1)
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "big.csv", lines), "--mode", mode, "--warmup", 20)
    assert code == 0, err
    rows = _table(out)
    assert len(rows) == 60
    assert rows[30]["error"] == f"value {value!r} in column 'a' is beyond float32's range (|x| <= 3.4e38)"
    assert all(r["error"] == "" and r["anomaly_score"] != "" for i, r in enumerate(rows) if i not in (30, 31) and (mode == "batch" or i >= 20))
    assert "2 errors (marked)" in err
    code, out, err = _detect(capsys, monkeypatch, tmp_path / "big.csv", "--mode", mode, "--warmup", 20, "--on-error", "fail")
    assert code == 2 and "big.csv:32: value" in err


def test_a_text_first_row_does_not_turn_a_stream_column_into_text(tmp_path, model, capsys, monkeypatch):
    rng = np.random.default_rng(6)
    X = np.round(rng.normal(size=(120, 2)), 4)
    lines = [f"r{i},{x[0]},{x[1]}" for i, x in enumerate(X)]
    lines[0] = "r0,abc,0.5"
    lines[100] = "r100,1000,0.1"  # a spike in column a
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "s.csv", lines, "k,a,b"), "--mode", "stream", "--warmup", 20, "--threshold", "0.5")
    assert code == 0, err
    rows = _table(out)
    assert rows[0]["status"] == "error" and rows[0]["error"] == "non-numeric value 'abc' in column 'a'"
    assert "feature columns ['a', 'b']" in err and "passed through as text: ['k']" in err
    assert rows[100]["status"] == "ok" and rows[100]["is_anomaly"] == "1"
    scores = [float(r["anomaly_score"]) for r in rows if r["status"] == "ok"]
    assert float(rows[100]["anomaly_score"]) > np.median(scores)
    # what the spike's row would get if column a passed through (the old behaviour)
    code, out, err = _detect(capsys, monkeypatch, tmp_path / "s.csv", "--mode", "stream", "--warmup", 20, "--columns", "b")
    without_a = _table(out)
    assert without_a[0]["error"] == "" and float(without_a[100]["anomaly_score"]) != float(rows[100]["anomaly_score"])


@pytest.mark.parametrize("mode", ["batch", "stream"])
def test_batch_and_stream_choose_the_same_feature_columns(tmp_path, model, capsys, monkeypatch, mode):
    _, lines = _rows(60)
    lines = [f"{line},{i if i % 3 else 'n/a'}" for i, line in enumerate(lines)]  # mostly numbers: a feature
    lines[1] = lines[1].replace(",no,", ",7,")  # one number in a text column: not a feature
    code, out, err = _detect(capsys, monkeypatch, _write(tmp_path / "f.csv", lines, HEADER + ",n"), "--mode", mode, "--warmup", 20)
    assert code == 0, err
    assert "feature columns ['a', 'b', 'c', 'n']" in err and "passed through as text: ['ts', 'label']" in err
    rows = _table(out)
    assert rows[3]["error"] == "non-numeric value 'n/a' in column 'n'" and rows[1]["error"] == ""


def test_internal_errors_are_not_bad_usage(tmp_path, model, capsys, monkeypatch):
    """A bug (here a TypeError) propagates with its traceback (exit code 1), not as exit code 2."""
    _, lines = _rows(40)

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s)")

    monkeypatch.setattr(detect, "run_batch", broken)
    with pytest.raises(TypeError):
        cli.main(["detect", str(_write(tmp_path / "in.csv", lines))])
    from anomaly_gym.envs.tasks import NonNumericDataError

    assert issubclass(NonNumericDataError, TypeError) and issubclass(NonNumericDataError, ValueError)  # bad data: exit 2


def test_a_stream_with_values_near_float64s_limits_answers_every_row(model, capsys, monkeypatch):
    # 1e308 and -1e308 in one window overflowed the scaling to NaN: StopIteration after 30 rows
    values = np.round(np.random.default_rng(7).normal(size=(62, 3)), 4).astype(object)
    values[30, 0], values[33, 0] = "1e308", "-1e308"
    lines = [",".join(map(str, row)) for row in values]
    code, out, err = _detect(
        capsys, monkeypatch, "-", "--mode", "stream", "--warmup", 20, "--window", 60, "--refit-every", 10, stdin="\n".join(["a,b,c", *lines]) + "\n"
    )
    assert code == 0, err
    rows = _table(out)
    assert [",".join([r["a"], r["b"], r["c"]]) for r in rows] == lines
    # beyond float32's range: those two rows are marked (with their lines), every other row is answered
    expected = ["warmup"] * 20 + ["ok"] * 42
    expected[30] = expected[33] = "error"
    assert [r["status"] for r in rows] == expected
    assert all(0.0 <= float(r["anomaly_score"]) <= 1.0 for r, s in zip(rows, expected) if s == "ok")


def test_label_and_identifier_columns_are_left_out_with_a_note_unless_named(model, tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(3)
    lines = [f"{i},{1714521600 + 60 * i},{rng.normal():.4f},{rng.normal():.4f},{int(i % 40 == 0)},{rng.integers(0, 9)}" for i in range(120)]
    src = _write(tmp_path / "ids.csv", lines, header="row_id,epoch,a,b,Is_Anomaly,k")
    code, out, err = _detect(capsys, monkeypatch, src)
    assert code == 0, err
    assert "feature columns ['a', 'b', 'k']" in err
    assert "'row_id' (named like an identifier)" in err and "'Is_Anomaly' (named like a label)" in err
    assert "'epoch' (whole numbers that only increase" in err
    code, out, err = _detect(capsys, monkeypatch, src, "--columns", "a,b,Is_Anomaly")
    assert code == 0 and "left out" not in err
    only = _write(tmp_path / "only.csv", [f"{i},{i % 2}" for i in range(40)], header="id,label")
    code, out, err = _detect(capsys, monkeypatch, only)
    assert code == 2 and "'id' (named like an identifier)" in err and "--columns" in err


def test_on_error_fail_reports_the_first_bad_row_only(model, tmp_path, capsys, monkeypatch):
    lines = ["1,2,3", "x,3,4", "4,y,5", *[f"{i},{i + 1},{i + 2}" for i in range(40)], "q,r,s"]
    src = _write(tmp_path / "bad.csv", lines, header="a,b,c")
    code, out, err = _detect(capsys, monkeypatch, src, "--on-error", "fail")
    assert code == 2
    assert "1 error (stopped the run)" in err and "2 more bad row(s) after it" in err
    assert "bad.csv:3: non-numeric value 'x' in column 'a'" in err
