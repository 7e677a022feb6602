"""``anomaly-gym discover``: a real terminal session, resume, simulated answers, and bad input."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
from anomaly_gym.envs import make_synthetic_task
from anomaly_gym.scripts.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    task = make_synthetic_task("global", n_rows=300, n_features=4, seed=3)
    path = tmp_path_factory.mktemp("discover") / "data.csv"
    lines = ["id,a,b,c,d,label"] + [f"r{i}," + ",".join(f"{v:.4f}" for v in x) + f",{int(y)}" for i, (x, y) in enumerate(zip(task.X, task.y))]
    path.write_text("\n".join(lines) + "\n")
    return path, task.y


def _state(path):
    return json.loads(path.read_text())


@pytest.mark.slow  # about 10 s: featurizes, adapts the shipped policy, then runs detect on the bundle
def test_simulated_analyst_finds_anomalies_and_writes_every_output(data, tmp_path, capsys):
    path, y = data
    assert main(["discover", str(path), "--budget", "20", "--label-column", "label", "-o", str(tmp_path)]) == 0
    state = _state(tmp_path / "state.json")
    rows = [r for r, _ in state["answers"]]
    assert len(rows) == 20 and len(set(rows)) == 20
    assert [label for _, label in state["answers"]] == [int(y[r]) for r in rows]
    assert sum(label for _, label in state["answers"]) >= 10  # random picking would find about 1
    scored = list(csv.DictReader((tmp_path / "scored.csv").open()))
    assert len(scored) == len(y) and [r["id"] for r in scored] == [f"r{i}" for i in range(len(y))]
    assert sum(r["analyst_label"] != "" for r in scored) == 20
    assert main(["detect", str(path), "--model", str(tmp_path / "adapted.bundle.zip"), "-o", str(tmp_path / "d.csv")]) == 0


def test_a_terminal_session_saves_each_answer_and_resumes(data, tmp_path):
    pexpect = pytest.importorskip("pexpect")
    path, _ = data
    state = tmp_path / "state.json"
    cmd = [sys.executable, "-m", "anomaly_gym.scripts.cli", "discover", str(path), "--budget", "4", "-o", str(tmp_path)]
    child = pexpect.spawn(cmd[0], cmd[1:], encoding="utf-8", timeout=120)
    for answer in ("y", "maybe", "n", "s"):
        child.expect(r"anomaly\? \[y\]es")
        child.sendline(answer)
    child.expect(r"anomaly\? \[y\]es")
    assert [a[1] for a in _state(state)["answers"]] == [1, 0, None]  # saved before the next question
    child.sendline("q")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    first = _state(state)["answers"]
    child = pexpect.spawn(cmd[0], [*cmd[1:], "--resume", str(state)], encoding="utf-8", timeout=120)
    child.expect(r"resumed .*3 answer")
    child.expect(r"anomaly\? \[y\]es")
    child.sendline("n")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    answers = _state(state)["answers"]
    assert answers[:3] == first and len(answers) == 4 and answers[3][1] == 0
    labels = (tmp_path / "labels.csv").read_text().splitlines()
    assert labels[0] == "line,label" and len(labels) == 5 and labels[3].endswith(",")  # the skip is unlabelled


@pytest.mark.parametrize("case", ["budget", "labels", "empty", "other-data", "not-a-state"])
def test_bad_input_exits_2_with_a_message(data, tmp_path, capsys, case):
    path, _ = data
    argv = ["discover", str(path), "-o", str(tmp_path)]
    if case == "budget":
        argv += ["--budget", "1000"]
        expected = "larger than the 300 valid row"
    elif case == "labels":
        bad = tmp_path / "bad.csv"
        bad.write_text(path.read_text().replace(",1\n", ",2\n", 1))
        argv = ["discover", str(bad), "--label-column", "label", "-o", str(tmp_path)]
        expected = "must hold 0 or 1"
    elif case == "empty":
        empty = tmp_path / "empty.csv"
        empty.write_text("a,b\n")
        argv = ["discover", str(empty), "-o", str(tmp_path)]
        expected = "no valid data row"
    elif case == "other-data":
        assert main(["discover", str(path), "--budget", "2", "--label-column", "label", "-o", str(tmp_path / "first")]) == 0
        other = tmp_path / "other.csv"
        other.write_text(path.read_text().replace("r0,", "r0,9", 1))
        argv = ["discover", str(other), "--resume", str(tmp_path / "first" / "state.json"), "-o", str(tmp_path)]
        expected = "saved for other data"
    else:
        (tmp_path / "x.json").write_text(json.dumps([1, 2]))
        argv += ["--resume", str(tmp_path / "x.json")]
        expected = "not a discovery state file"
    capsys.readouterr()
    assert main(argv) == 2
    assert expected in capsys.readouterr().err


def test_the_default_model_is_the_shipped_discovery_policy(data, tmp_path):
    from anomaly_gym.meta.discover import FeedbackGreedyStrategy, PolicyStrategy
    from anomaly_gym.meta.discovery_run import DiscoveryRun

    path, y = data
    X = np.loadtxt(path, delimiter=",", skiprows=1, usecols=(1, 2, 3, 4))
    run = DiscoveryRun(X, budget=5, model="default", state_path=tmp_path / "state.json")
    assert isinstance(run.strategy, PolicyStrategy)
    assert len(run.strategy.bundle.metadata["train_tasks"]) >= 20  # trained across many datasets, see README
    for _ in range(3):
        run.answer(int(y[run.next_row()]))
    run.save()
    again = DiscoveryRun.resume(tmp_path / "state.json", X)
    assert again.model == "default" and again.answers == run.answers
    assert isinstance(DiscoveryRun(X, budget=5, model=None).strategy, FeedbackGreedyStrategy)


@pytest.mark.slow  # adapts the shipped policy at the end (about 10 s)
def test_cli_names_the_untrained_strategy_feedback_greedy(data, tmp_path):
    path, _ = data
    args = ["discover", str(path), "--budget", "3", "--label-column", "label", "--model", "feedback-greedy"]
    assert main([*args, "-o", str(tmp_path)]) == 0
    assert _state(tmp_path / "state.json")["model"] is None


def test_train_discover_refuses_detection_flags_and_needs_an_output(capsys):
    assert main(["train", "--discover", "--sources", "builtin"]) == 2
    assert "-o BUNDLE" in capsys.readouterr().err
    assert main(["train", "--discover", "--sources", "builtin", "--algo", "a2c", "-o", "x.zip"]) == 2
    assert "--algo configure(s) the detection policy" in capsys.readouterr().err


@pytest.mark.slow  # trains a discovery policy on three small tables (about 20 s)
def test_train_discover_writes_a_bundle_that_discover_uses(data, tmp_path):
    rng = np.random.default_rng(1)
    (tmp_path / "src").mkdir()
    for i in range(3):
        y = np.r_[np.zeros(90), np.ones(10)]
        np.savez(tmp_path / "src" / f"s{i}.npz", X=rng.normal(size=(100, 3 + i)) + 3 * y[:, None], y=y)
    bundle = tmp_path / "d.bundle.zip"
    assert main(["train", "--discover", "--sources", str(tmp_path / "src"), "--no-progress", "-o", str(bundle)]) == 0
    path, _ = data
    args = ["discover", str(path), "--budget", "5", "--label-column", "label", "--model", str(bundle)]
    assert main([*args, "-o", str(tmp_path / "out")]) == 0
    assert _state(tmp_path / "out" / "state.json")["model"] == str(bundle)
