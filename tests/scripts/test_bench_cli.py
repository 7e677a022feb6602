"""``anomaly-gym bench ... --runs N``: every run reports, then the median and range of each headline figure."""

from __future__ import annotations

import re

import pytest
from anomaly_gym.scripts.bench import summarize_runs
from anomaly_gym.scripts.cli import main


def test_summary_gives_the_median_and_range_of_each_figure():
    text = summarize_runs([{"rows/s": 1000.0, "p99 (ms)": 3.0}, {"rows/s": 3000.0, "p99 (ms)": 1.0}, {"rows/s": 2000.0, "p99 (ms)": 9.0}], [0.5, 1.0, 2.0])
    assert "median of 3 runs" in text and "0.5, 1.0, 2.0" in text
    assert re.search(r"rows/s\s+median 2,000\s+\(range 1,000 to 3,000\)", text)
    assert re.search(r"p99 \(ms\)\s+median 3\s+\(range 1 to 9\)", text)


def test_runs_repeat_the_benchmark_and_summarize(capsys):
    assert main(["bench", "stream-temporal", "--rows", "1000", "--runs", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("throughput:") == 2
    assert "--- run 2 of 2" in out
    assert re.search(r"median of 2 runs \(load average before each run: [\d.]+, [\d.]+\)", out)
    for figure in ("rows/s", "first scored row (s)", "peak memory (MB)"):
        assert re.search(re.escape(figure) + r"\s+median [\d,.]+\s+\(range", out), figure


def test_runs_must_be_positive(capsys):
    assert main(["bench", "stream-temporal", "--rows", "1000", "--runs", "0"]) == 2
    assert "--runs must be a positive integer" in capsys.readouterr().err


def test_bench_encoding_prints_rows_per_second_and_peak_memory(capsys):
    assert main(["bench", "encoding", "--rows", "5000", "--repeats", "1", "--onehot-max", "5", "--no-detect"]) == 0
    out = capsys.readouterr().out
    assert "5,000 rows, 7 numeric + 3 categorical columns (cardinalities [4, 60, 50000])" in out
    # 7 numbers + 7 missingness indicators + 3 rarities + 5 one-hot (4 values and the empty one) + pairs/rarity
    assert re.search(r"fit: [\d.]+s \([\d,]+ rows/s\); transform: [\d.]+s \([\d,]+ rows/s\); 23 encoded columns", out)
    assert re.search(r"peak memory of fit \+ transform: [\d,]+ MiB", out)
    assert main(["bench", "encoding", "--rows", "5000", "--repeats", "1", "--no-pairs", "--no-detect"]) == 0
    assert "; 17 encoded columns" in capsys.readouterr().out
    assert main(["bench", "encoding", "--rows", "5000", "--missing", "1.5"]) == 2


@pytest.mark.slow  # two detect processes, each fitting the default policy's detector bank
def test_bench_encoding_prints_what_encoding_adds_to_detects_batch_time(capsys):
    assert main(["bench", "encoding", "--rows", "3000", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    with_cats = float(re.search(r"detect --mode batch, with the categorical columns: ([\d.]+)s \(CPU time", out).group(1))
    without = float(re.search(r"detect --mode batch, numeric columns only: ([\d.]+)s \(CPU time", out).group(1))
    added = re.search(r"encoding adds (-?[\d.]+)% to detect's batch time \(([\d.]+)s vs ([\d.]+)s", out)
    # the times are printed to 0.1 s: each may be off by 0.05 s, which moves their ratio by up to 0.1 / without
    assert float(added.group(1)) == pytest.approx(100 * (with_cats / without - 1), abs=100 * 0.1 / without + 0.1)
    assert (float(added.group(2)), float(added.group(3))) == (with_cats, without)


@pytest.mark.slow  # the default policy's 18-detector bank, fitted for four variants: over a minute on loaded cores
def test_bench_tables_compares_the_encodings_on_a_folder_of_tables(tmp_path, capsys):
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    n = 300
    y = (np.arange(n) % 30 == 0).astype(int)
    proto = np.where(y == 1, "gre", rng.choice(["tcp", "udp"], n))
    flag = np.where(proto == "tcp", "SF", "REJ")
    pd.DataFrame({"x": rng.normal(size=n) + y, "proto": proto, "flag": flag, "label": y}).to_csv(tmp_path / "net.csv.gz", index=False)
    assert main(["bench", "tables", "--data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    head, _, row, *means = out.splitlines()
    assert "| policy rarity | policy encoded | policy encoded+onehot |" in head
    cells = [c.strip() for c in row.split("|")[1:-1]]
    assert cells[:4] == ["net", "300", "1", "2"]
    assert all(0.0 <= float(c) <= 1.0 for c in cells[4:])
    assert float(cells[6]) > 0.9  # the rare protocol, found by its rarity
    assert any("tables with categorical columns" in m for m in means)
    assert main(["bench", "tables", "--data", str(tmp_path / "absent")]) == 2


def test_bench_tables_refuses_to_score_a_table_the_policy_was_trained_on(tmp_path, capsys):
    import numpy as np
    import pandas as pd
    from anomaly_gym.agents import default_bundle_path, load_default_bundle

    meta = load_default_bundle(device="cpu").metadata if default_bundle_path().is_file() else {}
    if "bank" not in [*meta.get("train_tasks", []), *meta.get("val_tasks", [])]:
        pytest.skip("the installed default policy was not trained (or validated) on the 'bank' table")
    rng = np.random.default_rng(0)
    pd.DataFrame({"x": rng.normal(size=50), "label": np.arange(50) % 10 == 0}).astype({"label": int}).to_csv(tmp_path / "bank.csv.gz", index=False)
    assert main(["bench", "tables", "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "trained on bank" in err and "--train-config configs/detect-default.toml" in err
