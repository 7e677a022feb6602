"""``anomaly-gym tasks``: list the built-in suite or the datasets of a folder."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from anomaly_gym.scripts.cli import main

HEADER = ["name", "rows", "columns", "anomaly_rate", "source"]


def _listing(capsys, *args: str) -> dict[str, dict[str, str]]:
    """Run ``anomaly-gym tasks --format csv ARGS`` and return its rows by name."""
    code = main(["tasks", "--format", "csv", *args])
    out = capsys.readouterr().out
    assert code == 0
    reader = csv.DictReader(io.StringIO(out))
    assert reader.fieldnames == HEADER
    rows = list(reader)
    by_name = {row["name"]: row for row in rows}
    assert len(by_name) == len(rows)
    return by_name


def test_lists_the_builtin_suite(capsys):
    rows = _listing(capsys)

    assert len(rows) == 49
    assert rows["sklearn/iris-0"] == {
        "name": "sklearn/iris-0", "rows": "109", "columns": "4", "anomaly_rate": "8.26%", "source": "sklearn",
    }  # fmt: skip
    assert rows["synthetic/global-00"]["rows"] == "500"
    assert rows["synthetic/global-00"]["columns"] == "4"
    assert sum(row["source"] == "synthetic" for row in rows.values()) == 32


def test_lists_a_folder_with_true_sizes(capsys, adbench_dir):
    rows = _listing(capsys, "--data-dir", str(adbench_dir))

    assert len(rows) == 31
    assert (rows["donors"]["rows"], rows["donors"]["columns"]) == ("619326", "10")
    assert (rows["Hepatitis"]["rows"], rows["Hepatitis"]["anomaly_rate"]) == ("80", "16.25%")
    assert rows["mnist"]["columns"] == "100"  # constant columns are kept when listing
    assert {row["source"] for row in rows.values()} == {"adbench"}


def test_lists_one_csv_file(capsys, tmp_path):
    path = tmp_path / "readings.csv"
    values = np.random.default_rng(0).normal(size=(25, 2)).round(3)
    path.write_text("a,b,flag\n" + "".join(f"{a},{b},{int(i % 5 == 0)}\n" for i, (a, b) in enumerate(values)))

    labelled = _listing(capsys, "--data-dir", str(path), "--label-column", "flag")
    unlabelled = _listing(capsys, "--data-dir", str(path))

    assert labelled["readings"] == {"name": "readings", "rows": "25", "columns": "2", "anomaly_rate": "20.00%", "source": "csv"}
    assert (unlabelled["readings"]["columns"], unlabelled["readings"]["anomaly_rate"]) == ("3", "-")


def test_table_format_shows_a_titled_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out

    assert "49 tasks from builtin" in out
    assert "sklearn/breast_cancer" in out and "synthetic/clustered-07" in out


def test_a_missing_folder_is_a_usage_error(capsys, tmp_path):
    missing = tmp_path / "no-such-folder"

    code = main(["tasks", "--data-dir", str(missing), "--format", "csv"])
    captured = capsys.readouterr()

    assert code == 2
    assert captured.out == ""
    assert f"anomaly-gym tasks: error: no such data directory: {missing}" in captured.err


def test_a_missing_label_column_is_a_usage_error(capsys, tmp_path):
    path = tmp_path / "readings.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i % 3}\n" for i in range(25)))

    code = main(["tasks", "--data-dir", str(path), "--label-column", "flag"])

    assert code == 2
    assert "no label column 'flag'" in capsys.readouterr().err


def test_an_unknown_format_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "--format", "xml"])

    assert exit_info.value.code == 2
    assert "invalid choice: 'xml'" in capsys.readouterr().err
