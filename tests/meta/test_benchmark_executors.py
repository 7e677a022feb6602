"""The benchmark gives the same results whatever the executor; crashes, interruptions and resume."""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from anomaly_gym.detectors import DETECTORS, BaseDetector
from anomaly_gym.meta.benchmark import TIMING_COLUMNS, BenchmarkConfig, load_results, run_benchmark
from anomaly_gym.meta.benchmark.results import ResultsFile
from anomaly_gym.meta.executors import WORKER_DIED

TARGETS = ["synthetic/global-00", "sklearn/iris-1", "sklearn/wine-0"]


def _config(out: Path, executor: str, **kw) -> BenchmarkConfig:
    return BenchmarkConfig(
        sources=["builtin"],
        targets=["builtin"],
        datasets=TARGETS,
        methods=["hbos", "iforest"],
        seeds=1,
        out=out,
        executor=executor,
        workers=None if executor == "serial" else 2,
        progress=False,
        **kw,
    )


def _table(out: Path) -> pd.DataFrame:
    """results.csv without the timing columns, in a fixed row order."""
    frame = load_results(out / "results.csv").drop(columns=list(TIMING_COLUMNS))
    return frame.sort_values(["dataset", "method", "protocol", "labels", "seed"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("serial") / "out"
    result = run_benchmark(_config(out, "serial"))
    assert result.ran == 6
    return out


def test_local_executor_gives_the_serial_results(serial_run, tmp_path):
    out = tmp_path / "local"
    result = run_benchmark(_config(out, "local"))
    assert result.ran == 6 and len(result.frame()) == 6
    serial, local = _table(serial_run), _table(out)
    assert (serial["status"] == "ok").all() and serial["auroc"].between(0.5, 1.0).all()
    pd.testing.assert_frame_equal(local, serial)
    assert (out / "summary.md").is_file()


class _Die(BaseDetector):
    """Kills the process that fits it, as a segfault or the OOM killer would."""

    def _fit(self, X, y, source):
        os._exit(9)

    def _decision_function(self, X):
        return X[:, 0]


def test_a_worker_that_dies_becomes_error_rows(serial_run, tmp_path, monkeypatch):
    monkeypatch.setitem(DETECTORS, "die", _Die)  # the forked workers inherit the registry
    out = tmp_path / "out"
    run_benchmark(replace(_config(out, "local"), methods=["die", "hbos"]))
    frame = _table(out)
    died = frame[frame["method"] == "die"]
    assert len(died) == 3 and (died["status"] == "error").all() and (died["error"] == WORKER_DIED).all()
    hbos = frame[frame["method"] == "hbos"].reset_index(drop=True)
    pd.testing.assert_frame_equal(hbos, _table(serial_run).query("method == 'hbos'").reset_index(drop=True))


def test_an_interrupted_run_keeps_its_rows_and_resumes(serial_run, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_add, added = ResultsFile.add, []

    def add_then_interrupt(self, row):
        if len(added) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the third row comes in
        added.append(row)
        real_add(self, row)

    monkeypatch.setattr(ResultsFile, "add", add_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(_config(out, "local"))
    assert len(load_results(out / "results.csv")) == 2 and (out / "summary.md").is_file()
    monkeypatch.setattr(ResultsFile, "add", real_add)
    resumed = run_benchmark(_config(out, "local"))
    assert resumed.ran == 4 and resumed.skipped == 2
    pd.testing.assert_frame_equal(_table(out), _table(serial_run))


def test_resume_with_another_executor_runs_only_the_new_rows(serial_run, tmp_path):
    out = tmp_path / "out"
    run_benchmark(replace(_config(out, "local"), methods=["hbos"]))
    before = (out / "results.csv").read_text()
    result = run_benchmark(_config(out, "serial"))
    assert result.ran == 3 and result.skipped == 3
    assert (out / "results.csv").read_text().startswith(before)
    pd.testing.assert_frame_equal(_table(out), _table(serial_run))
    assert run_benchmark(_config(out, "local")).ran == 0


@pytest.fixture(scope="module")
def ray_address():
    """A real Ray instance on this machine (2 CPUs), started once for the Ray tests and stopped after them."""
    ray = pytest.importorskip("ray")
    info = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield info.address_info["gcs_address"]
    finally:
        ray.shutdown()


@pytest.mark.slow  # 20-45 s on two busy cores (starting Ray, importing the library in its workers); `make test` runs it
@pytest.mark.ray
def test_ray_executor_gives_the_serial_results(serial_run, ray_address, tmp_path):
    """The benchmark joins the test's Ray instance by address."""
    out = tmp_path / "ray"
    result = run_benchmark(replace(_config(out, "ray"), address=ray_address))
    assert result.ran == 6
    pd.testing.assert_frame_equal(_table(out), _table(serial_run))


def _crash_on_wine(ctx, cell):
    """``run_cell``, except that the Ray worker running wine's cell dies (as a segfault or the OOM killer would end it)."""
    from anomaly_gym.meta.benchmark.cells import run_cell

    if cell.dataset == "sklearn/wine-0":
        os._exit(9)
    return run_cell(ctx, cell)


@pytest.mark.slow  # a few seconds once the Ray instance is up; `make test` runs it
@pytest.mark.ray
def test_a_crashed_ray_task_becomes_error_rows(serial_run, ray_address, tmp_path, monkeypatch):
    import cloudpickle
    from anomaly_gym.meta.benchmark import runner

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the Ray workers cannot import this test module
    try:
        monkeypatch.setattr(runner, "run_cell", _crash_on_wine)
        out = tmp_path / "ray-crash"
        config = replace(_config(out, "ray"), datasets=["sklearn/iris-1", "sklearn/wine-0"], methods=["hbos"])
        result = run_benchmark(replace(config, address=ray_address))
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    frame = _table(out)
    assert result.ran == 2
    crashed = frame[frame["dataset"] == "sklearn/wine-0"]
    assert len(crashed) == 1 and (crashed["status"] == "error").all() and (crashed["error"] == WORKER_DIED).all()
    others = frame[frame["dataset"] != "sklearn/wine-0"].reset_index(drop=True)
    expected = _table(serial_run).query("dataset == 'sklearn/iris-1' and method == 'hbos'").reset_index(drop=True)
    pd.testing.assert_frame_equal(others, expected)


def test_executor_flags_are_checked(tmp_path, monkeypatch, capsys):
    from anomaly_gym.scripts.cli import main

    base = [
        "benchmark",
        "--sources",
        "builtin",
        "--targets",
        "builtin",
        "--datasets",
        "sklearn/iris-1",
        "--seeds",
        "1",
        "--methods",
        "hbos",
        "--out",
        str(tmp_path / "o"),
        "--no-progress",
    ]
    assert main(base + ["--executor", "local", "--address", "auto"]) == 2
    assert "--address is for --executor ray" in capsys.readouterr().err
    assert main(base + ["--workers", "0"]) == 2
    assert "--workers must be a positive integer" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    assert main(base + ["--executor", "ray"]) == 2
    assert "pip install 'anomaly-gym[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "o" / "results.csv").is_file() or len(load_results(tmp_path / "o" / "results.csv")) == 0
