"""Shared fixtures: the reference data folder and an isolated feature cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(os.environ.get("ANOMALY_GYM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session", autouse=True)
def _feature_cache(tmp_path_factory):
    """One feature cache per test session, never the user's own."""
    old = os.environ.get("ANOMALY_GYM_CACHE")
    os.environ["ANOMALY_GYM_CACHE"] = str(tmp_path_factory.mktemp("feature-cache"))
    yield
    if old is None:
        os.environ.pop("ANOMALY_GYM_CACHE", None)
    else:
        os.environ["ANOMALY_GYM_CACHE"] = old


@pytest.fixture(scope="session")
def adbench_dir() -> Path:
    """``../shared/data/adbench``; the test is skipped when it is absent."""
    path = SHARED_DATA / "adbench"
    if not path.is_dir() or not any(path.glob("*.npz")):
        pytest.skip(f"reference data not found at {path}")
    return path


@pytest.fixture(scope="session")
def nab_dir() -> Path:
    """``../shared/data/nab``; the test is skipped when it is absent."""
    path = SHARED_DATA / "nab"
    if not path.is_dir():
        pytest.skip(f"reference data not found at {path}")
    return path
