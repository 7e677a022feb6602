"""``detect --mode stream`` on time-indexed input: --temporal auto|on|off, timestamps, the stream policy."""

import csv
import io
import json
import sys

import numpy as np
import pytest
from anomaly_gym.envs import FeaturizerConfig
from anomaly_gym.envs.stream_env import OBSERVATION_NAMES
from anomaly_gym.envs.stream_policy import StreamPolicy, default_stream_policy_path
from anomaly_gym.scripts import cli, detect

SPIKE = 700


@pytest.fixture(scope="module")
def policy_path(tmp_path_factory):
    """A linear stream policy that watches the level deviations (a planted spike crosses 0.5)."""
    w = np.array([[2.0 if n in ("level/mid", "level/slow") else 0.0 for n in OBSERVATION_NAMES]])
    path = tmp_path_factory.mktemp("policy") / "level.policy.json"
    return StreamPolicy(layers=[(w, np.array([-8.0]))], score_threshold=0.5).save(path)


def _lines(n: int = 1000, unix: bool = False) -> list[str]:
    rng = np.random.default_rng(0)
    t = np.arange(n)
    values = 10 + np.sin(2 * np.pi * t / 288) + 0.1 * rng.normal(size=n)
    values[SPIKE % n] += 8.0
    stamps = [str(1714521600 + 300 * i) if unix else f"2024-05-{1 + i // 288:02d} {(i % 288) // 12:02d}:{(i % 12) * 5:02d}:00" for i in range(n)]
    return [f"{s},{v:.4f},web" for s, v in zip(stamps, values)]


def _run(capsys, monkeypatch, lines, *argv, header="timestamp,value,host"):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join([header, *lines]) + "\n").encode())))
    code = cli.main(["detect", "-", "--mode", "stream", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out))), err


@pytest.mark.parametrize("unix", [False, True])
def test_auto_scores_a_time_indexed_stream_row_for_row(capsys, monkeypatch, policy_path, unix):
    lines = _lines(unix=unix)
    code, rows, err = _run(capsys, monkeypatch, lines, "--stream-policy", policy_path, "--warmup", 100)
    assert code == 0, err
    assert "temporal: time column 'timestamp'" in err
    assert len(rows) == len(lines)
    assert [r["timestamp"] + "," + r["value"] + "," + r["host"] for r in rows] == lines  # every row, its own fields
    assert {r["status"] for r in rows[:100]} == {"warmup"} and {r["status"] for r in rows[100:]} == {"ok"}
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert SPIKE in flagged and len(flagged) < 20
    assert all(float(r["anomaly_score"]) > 0.5 for r in rows if r["is_anomaly"] == "1")
    assert "score > 0.5" in err and "categorical column(s) ['host'] pass through unscored" in err


def test_the_same_input_gives_the_same_output(capsys, monkeypatch, policy_path):
    first = _run(capsys, monkeypatch, _lines(400), "--stream-policy", policy_path, "--warmup", 50)[1]
    second = _run(capsys, monkeypatch, _lines(400), "--stream-policy", policy_path, "--warmup", 50)[1]
    assert first == second


@pytest.mark.parametrize("on_error", ["mark", "skip", "fail"])
def test_bad_timestamps_are_bad_rows(capsys, monkeypatch, policy_path, on_error):
    lines = _lines(300)
    lines[150] = "2024-05-01 noon,10.0,web"
    lines[200] = "2024-05-01,10.0,web"  # a date without a time: not the first row's format
    code, rows, err = _run(capsys, monkeypatch, lines, "--stream-policy", policy_path, "--warmup", 50, "--on-error", on_error)
    if on_error == "fail":
        assert code == 2 and "<stdin>:152: timestamp '2024-05-01 noon' does not have the first row's format" in err
        assert len(rows) == 150  # the rows before it were answered
        return
    assert code == 0, err
    assert "2 errors" in err and "bad timestamp 2" in err
    if on_error == "skip":
        assert len(rows) == 298 and all(r["error"] == "" for r in rows)
        return
    assert len(rows) == 300
    for i in (150, 200):
        assert rows[i]["status"] == "error" and rows[i]["anomaly_score"] == ""
        assert "does not have the first row's format %Y-%m-%d %H:%M:%S" in rows[i]["error"]
    assert all(r["error"] == "" for i, r in enumerate(rows) if i not in (150, 200))


def test_bad_values_are_bad_rows_and_the_stream_goes_on(capsys, monkeypatch, policy_path):
    lines = _lines(300)
    lines[120] = lines[120].replace(",web", "").rsplit(",", 1)[0] + ",abc,web"
    code, rows, err = _run(capsys, monkeypatch, lines, "--stream-policy", policy_path, "--warmup", 50)
    assert code == 0, err
    assert rows[120]["error"].startswith("non-numeric value 'abc'") and rows[121]["status"] == "ok"


def test_off_and_no_timestamp_take_the_tabular_path_with_every_row(capsys, monkeypatch):
    """The tabular path gets the input whole, standard input included (what the temporal path read is put back)."""
    from anomaly_gym.envs.csvio import CsvReader

    seen = []

    def tabular(args, bundle, columns, fmt):
        seen.append([rec.fields for rec in CsvReader(args.inputs)])
        return 0

    monkeypatch.setattr(detect, "run_stream", tabular)
    monkeypatch.setattr(detect, "load_model", lambda path, device: type("Bundle", (), {"algo": "ppo", "featurizer_config": FeaturizerConfig()})())
    lines = _lines(120)
    assert _run(capsys, monkeypatch, lines, "--temporal", "off")[0] == 0
    plain = [line.split(",", 1)[1] for line in lines]  # no time column: auto falls back
    code, _, err = _run(capsys, monkeypatch, plain, header="value,host")
    assert code == 0, err
    assert seen == [[line.split(",") for line in lines], [line.split(",") for line in plain]]


def test_temporal_on_without_a_timestamp_and_other_misuse_exit_2(capsys, monkeypatch, policy_path, tmp_path):
    plain = [line.split(",", 1)[1] for line in _lines(60)]
    code, _, err = _run(capsys, monkeypatch, plain, "--temporal", "on", header="value,host")
    assert code == 2 and "no timestamp column" in err
    code, _, err = _run(capsys, monkeypatch, _lines(60), "--stream-policy", tmp_path / "none.json")
    assert code == 2 and "stream policy not found" in err
    (tmp_path / "bad.json").write_text("{}")
    code, _, err = _run(capsys, monkeypatch, _lines(60), "--stream-policy", tmp_path / "bad.json")
    assert code == 2 and "not a stream policy file" in err
    code, _, err = _run(capsys, monkeypatch, _lines(60), "--temporal", "off", "--stream-policy", policy_path)
    assert code == 2 and "drop --temporal off" in err
    code, _, err = _run(capsys, monkeypatch, _lines(60), "--time-column", "when")
    assert code == 2 and "--time-column 'when' is not a column" in err
    code, _, err = _run(capsys, monkeypatch, [line.split(",")[0] + ",x" for line in _lines(60)], header="timestamp,host")
    assert code == 2


def test_contamination_and_jsonl(capsys, monkeypatch, policy_path):
    lines = _lines(1000)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(("\n".join(["timestamp,value,host", *lines]) + "\n").encode())))
    code = cli.main(["detect", "-", "--mode", "stream", "--stream-policy", str(policy_path), "--warmup", "100", "--contamination", "0.1", "--format", "jsonl"])
    out, err = capsys.readouterr()
    assert code == 0, err
    recs = [json.loads(line) for line in out.splitlines()]
    assert len(recs) == 1000 and isinstance(recs[0]["value"], float) and recs[0]["timestamp"] == lines[0].split(",")[0]
    share = np.mean([r["is_anomaly"] for r in recs[100:]])
    assert 0.0 < share < 0.2 and recs[SPIKE]["is_anomaly"] == 1 and "conformal p-value <= 0.1" in err


@pytest.mark.skipif(not default_stream_policy_path().is_file(), reason="the default stream policy is not in this tree")
def test_the_shipped_stream_policy_flags_a_spike_and_little_else(capsys, monkeypatch):
    policy = StreamPolicy.load(default_stream_policy_path())
    assert 0.0 < policy.score_threshold < 1.0 and policy.metadata["train_series"]
    lines = _lines(2000)
    code, rows, err = _run(capsys, monkeypatch, lines)
    assert code == 0, err
    flagged = [i for i, r in enumerate(rows) if r["is_anomaly"] == "1"]
    assert any(SPIKE <= i <= SPIKE + 3 for i in flagged) and len(flagged) < 40


def test_a_reader_that_closes_early_stops_the_run_with_exit_141_and_a_summary(tmp_path):
    import subprocess

    src = tmp_path / "metrics.csv"
    src.write_text("\n".join(["timestamp,value,host", *_lines(20000)]) + "\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "anomaly_gym.scripts.cli", "detect", str(src), "--mode", "stream"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout.readline().startswith(b"timestamp,value,host,anomaly_score")
    proc.stdout.close()  # as `| head -1` does
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141, err
    assert "temporal: time column 'timestamp'" in err and "broken pipe" in err
