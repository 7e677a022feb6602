"""Mixed tables end to end: categorical columns in detect (batch and stream) and adapt, the
column encoder stored in adapted bundles, and folders of NAME.csv.gz tables as a source."""

from __future__ import annotations

import csv
import gzip
import io
import json
import zipfile

import numpy as np
import pytest
from anomaly_gym.agents import PolicyBundle, load_bundle, make_agent
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.scripts import cli

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")

SMALL = FeaturizerConfig(detectors=("iforest", "ecod", "hbos"))
RARE = (13, 77, 150, 222, 281)  # rows with a protocol seen nowhere else


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=300, n_features=4, seed=0)], featurizer=SMALL)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", seed=0, n_steps=128, batch_size=128).learn(256)
    return PolicyBundle(model, SMALL).save(tmp_path_factory.mktemp("m") / "policy.zip")


def _mixed(path, n: int = 300, seed: int = 0, rare=RARE, unseen: str | None = None):
    rng = np.random.default_rng(seed)
    lines = ["when,proto,a,b,code"]
    for i in range(n):
        proto = "gre" if i in rare else ("udp" if i % 10 == 0 else "tcp")
        if unseen is not None and i == n - 1:
            proto = unseen
        a = "" if i == 5 else f"{rng.normal():.4f}"  # one missing number
        lines.append(f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d},{proto},{a},{rng.normal():.4f},{i % 3}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _detect(capsys, *argv):
    code = cli.main(["detect", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out))), err


def test_detect_scores_a_rare_category_and_imputes_a_missing_number(model_path, tmp_path, capsys):
    src = _mixed(tmp_path / "m.csv")
    code, rows, err = _detect(capsys, src, "--model", model_path, "--on-missing", "impute", "-v")
    assert code == 0, err
    assert "proto: categorical" in err and "when: timestamp" in err and "code: numeric" in err
    assert len(rows) == 300 and all(r["error"] == "" for r in rows)  # the missing number is imputed, not an error
    scores = np.array([float(r["anomaly_score"]) for r in rows])
    assert scores[list(RARE)].mean() > np.median(np.delete(scores, RARE))
    # without the categorical column those rows are ordinary
    code, plain, err = _detect(capsys, src, "--model", model_path, "--on-missing", "impute", "--ignore", "proto")
    assert code == 0 and "categorical columns" not in err
    assert [float(r["anomaly_score"]) for r in plain] != scores.tolist()
    # integer codes become categorical only when named
    code, _, err = _detect(capsys, src, "--model", model_path, "--on-missing", "impute", "--categorical", "code", "-v")
    assert code == 0 and "code: categorical (named by the user)" in err
    code, _, err = _detect(capsys, src, "--model", model_path, "--categorical", "nope")
    assert code == 2 and "--categorical names column 'nope'" in err


def test_a_stream_scores_unseen_categories_instead_of_failing(model_path, tmp_path, capsys):
    src = _mixed(tmp_path / "s.csv", n=120, rare=(), unseen="sctp")
    code, rows, err = _detect(
        capsys, src, "--model", model_path, "--mode", "stream", "--temporal", "off", "--warmup", 40, "--refit", "inline", "--on-missing", "impute"
    )
    assert code == 0, err
    assert [r["status"] for r in rows] == ["warmup"] * 40 + ["ok"] * 80
    assert rows[-1]["error"] == "" and 0.0 <= float(rows[-1]["anomaly_score"]) <= 1.0


def test_adapt_stores_the_encoder_and_detect_encodes_new_rows_the_same_way(model_path, tmp_path, capsys):
    out = tmp_path / "adapted.zip"
    code = cli.main(["adapt", "--model", str(model_path), "--data", str(_mixed(tmp_path / "t.csv")), "--on-missing", "impute", "--out", str(out)])
    assert code == 0
    with zipfile.ZipFile(out) as zf:
        header = json.loads(zf.read("featurizer.json"))
    encoder = header["encoder"]
    assert encoder["categorical"] == ["proto"] and set(encoder["numeric"]) == {"a", "b", "code"}
    assert encoder["counts"][0]["gre"] == len(RARE) and encoder["indicators"][encoder["numeric"].index("a")] is True
    adapted = load_bundle(out)
    assert adapted.featurizer.encoder_.to_dict() == encoder
    # new rows, one with a protocol the target never had: scored relative to the target's rows
    capsys.readouterr()
    code, rows, err = _detect(capsys, _mixed(tmp_path / "new.csv", n=30, seed=5, rare=(), unseen="sctp"), "--model", out)
    assert code == 0, err
    assert "stored featurizer" in err and len(rows) == 30 and all(r["error"] == "" for r in rows)
    # a tampered encoder is refused like any malformed bundle
    with zipfile.ZipFile(out) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header["encoder"]["counts"] = [{"tcp": "many"}]
    members["featurizer.json"] = json.dumps(header).encode()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    code, _, err = _detect(capsys, tmp_path / "new.csv", "--model", bad)
    assert code == 2 and "counts" in err


def test_a_folder_of_tables_is_a_task_source(tmp_path):
    from anomaly_gym.envs.sources import load_tasks

    for name, seed in (("alpha", 1), ("beta", 2)):
        text = _mixed(tmp_path / "x.csv", n=60, seed=seed).read_text().replace(",code\n", ",label\n", 1)
        text = "\n".join(line if k == 0 else line[: line.rfind(",")] + f",{int(k - 1 in RARE[:1] or k % 20 == 0)}" for k, line in enumerate(text.splitlines()))
        (tmp_path / f"{name}.csv.gz").write_bytes(gzip.compress(text.encode()))
    (tmp_path / "x.csv").unlink()
    tasks = load_tasks(tmp_path)
    assert [t.name for t in tasks] == ["alpha", "beta"] and all(t.source == "tables" for t in tasks)
    assert tasks[0].n_features == 4 and tasks[0].labelled  # a, b, a/missing, proto/rarity; 'when' left out
    assert np.isfinite(tasks[0].X).all()
