"""``anomaly-gym bench executors``: every variant timed in one run, results compared."""

from __future__ import annotations

import re

import pytest
from anomaly_gym.scripts.cli import main


def test_bad_arguments_exit_2(tmp_path, capsys):
    base = ["bench", "executors", "--data", "builtin"]
    assert main(base + ["--executors", "serial,threads"]) == 2
    assert "choose among serial, local, ray" in capsys.readouterr().err
    assert main(base + ["--max-datasets", "0"]) == 2
    assert "--max-datasets must be positive" in capsys.readouterr().err
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("")
    assert main(base + ["--max-datasets", "1", "--out", str(tmp_path / "taken")]) == 2
    assert "not empty" in capsys.readouterr().err


@pytest.mark.slow  # two fresh processes that import the library: 20-60 s on two busy cores
def test_serial_and_local_are_timed_and_agree(tmp_path, capsys):
    out = tmp_path / "bench"
    assert (
        main(["bench", "executors", "--data", "builtin", "--max-datasets", "2", "--methods", "hbos,iforest", "--executors", "serial,local", "--out", str(out)])
        == 0
    )
    text = capsys.readouterr().out
    serial = re.search(r"serial \(1 process\): +([\d.]+) s  4 rows", text)
    local = re.search(r"local \(2 workers\): +([\d.]+) s  4 rows  ([\d.]+)x serial  results identical to serial's", text)
    assert serial and local, text
    assert float(local.group(2)) == pytest.approx(float(local.group(1)) / float(serial.group(1)), abs=0.01)
    assert (out / "serial" / "results.csv").is_file() and (out / "local" / "summary.md").is_file()
