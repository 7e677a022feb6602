"""Time-indexed series with anomaly windows: NAB's corpus and a seeded generator of synthetic ones.

A :class:`Series` is what ``AnomalyGym/Stream-v0`` walks and what the NAB benchmark scores:
values in time order, their timestamps, and the anomaly windows as inclusive row ranges.

:func:`make_synthetic_series` draws a series from a seeded generator: a level, a trend,
daily and weekly seasonality and noise (Gaussian or heavy-tailed), with anomalies of six
kinds placed after NAB's probationary period:

============  ===========================================================================
kind          what happens at the anomaly
============  ===========================================================================
spike         one to three rows far above or below the local level
level_shift   the level jumps and stays
variance      the noise scale grows several-fold for a while
seasonal      the daily pattern is shifted by several hours for a day (normal values, at
              the wrong time of day: a seasonal-context anomaly)
drift         the level starts to drift away steadily
flatline      the series freezes at one value for a while (a stuck sensor)
============  ===========================================================================

Each anomaly gets a NAB-style window centred on its start, ``0.1 * n / n_anomalies`` rows
wide, as NAB builds its windows from its labels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

ANOMALY_KINDS = ("spike", "level_shift", "variance", "seasonal", "drift", "flatline")


@dataclass(frozen=True, eq=False)
class Series:
    """One time-indexed series and its anomaly windows.

    Attributes:
        name: ``category/file.csv`` for NAB files, ``synthetic/...`` for generated ones.
        values: ``(n,)`` or ``(n, d)`` float64 values in time order.
        timestamps: ``(n,)`` ``datetime64[s]``, increasing.
        windows: Inclusive ``(first_row, last_row)`` anomaly windows, sorted and disjoint.
        category: The NAB category (``"synthetic"`` for generated series).
    """

    name: str
    values: np.ndarray
    timestamps: np.ndarray
    windows: tuple[tuple[int, int], ...]
    category: str

    def __post_init__(self) -> None:
        values = np.asarray(self.values, dtype=np.float64)
        ts = np.asarray(self.timestamps).astype("datetime64[s]")
        if values.ndim not in (1, 2) or len(values) < 2:
            raise ValueError(f"series {self.name!r}: values must be (n,) or (n, d) with n >= 2, got shape {values.shape}")
        if ts.shape != (len(values),):
            raise ValueError(f"series {self.name!r}: {len(ts)} timestamps for {len(values)} rows")
        if not np.isfinite(values).all():
            raise ValueError(f"series {self.name!r}: values must be finite (fill or drop NaN rows first)")
        if (np.diff(ts.astype(np.int64)) < 0).any():
            raise ValueError(f"series {self.name!r}: timestamps must not decrease")
        windows = tuple(sorted((int(a), int(b)) for a, b in self.windows))
        for k, (a, b) in enumerate(windows):
            if not 0 <= a <= b < len(values) or (k and a <= windows[k - 1][1]):
                raise ValueError(f"series {self.name!r}: window {(a, b)} is not a disjoint row range inside the series")
        values.setflags(write=False)
        ts.setflags(write=False)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "timestamps", ts)
        object.__setattr__(self, "windows", windows)

    @property
    def n_rows(self) -> int:
        return len(self.values)

    @property
    def labels(self) -> np.ndarray:
        """1 inside a window, 0 elsewhere (NAB's ``label`` column)."""
        out = np.zeros(self.n_rows, dtype=np.int64)
        for a, b in self.windows:
            out[a : b + 1] = 1
        return out


def load_windows(path: str | Path) -> dict[str, list[tuple[str, str]]]:
    """NAB's ``combined_windows.json``: ``category/file.csv -> [(start, end), ...]`` timestamps."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"NAB windows file not found: {path} (NAB keeps it as labels/combined_windows.json)")
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{path} must map 'category/file.csv' to a list of [start, end] windows")
    return {str(k): [(str(a), str(b)) for a, b in v] for k, v in data.items()}


def windows_to_rows(timestamps: np.ndarray, windows: Sequence[tuple[str, str]]) -> list[tuple[int, int]]:
    """Inclusive row ranges of timestamp windows: the rows whose timestamps lie in ``[start, end]``."""
    ts = np.asarray(timestamps).astype("datetime64[ns]")
    out = []
    for start, end in windows:
        a = int(np.searchsorted(ts, np.datetime64(start, "ns"), side="left"))
        b = int(np.searchsorted(ts, np.datetime64(end, "ns"), side="right")) - 1
        if b >= a:
            out.append((a, b))
    return out


def find_windows_file(path: Path) -> Path:
    for candidate in (path / "combined_windows.json", path.parent / "labels" / "combined_windows.json"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no combined_windows.json in {path} or {path.parent / 'labels'}; pass the windows file explicitly")


def read_series_csv(path: str | Path, name: str, windows: Sequence[tuple[str, str]] = (), category: str = "") -> Series:
    """One ``timestamp,value[,value...]`` CSV as a :class:`Series`."""
    import pandas as pd

    frame = pd.read_csv(path)
    if "timestamp" not in frame.columns or frame.shape[1] < 2:
        raise ValueError(f"{path}: expected a 'timestamp' column and at least one value column, got {list(frame.columns)}")
    ts = pd.to_datetime(frame.pop("timestamp"), errors="coerce")
    if ts.isna().any():
        bad = int(np.flatnonzero(ts.isna().to_numpy())[0]) + 2
        raise ValueError(f"{path}, line {bad}: the timestamp cannot be parsed")
    try:
        values = frame.to_numpy(dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: value columns must be numeric ({exc})") from None
    ts = ts.to_numpy().astype("datetime64[s]")
    return Series(
        name=name, values=values[:, 0] if values.shape[1] == 1 else values, timestamps=ts, windows=tuple(windows_to_rows(ts, windows)), category=category
    )


def load_nab_dir(path: str | Path, windows_file: str | Path | None = None) -> list[Series]:
    """Every ``category/file.csv`` of a NAB data folder that the windows file lists, with its windows.

    Args:
        path: A folder laid out as NAB's ``data/``: one sub-folder per category of
            ``timestamp,value`` CSV files.
        windows_file: NAB's ``combined_windows.json``; default ``path/combined_windows.json``
            (or ``path/../labels/combined_windows.json``, NAB's own layout).
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"NAB data folder not found: {path}")
    windows = load_windows(windows_file if windows_file is not None else find_windows_file(path))
    out = []
    for name in sorted(windows):
        csv = path / name
        if not csv.is_file():
            continue
        out.append(read_series_csv(csv, name, windows[name], category=name.rpartition("/")[0]))
    if not out:
        raise ValueError(f"none of the files listed in the windows file exists under {path}")
    return out


def _nab_window(n_rows: int, start: int, n_anomalies: int) -> tuple[int, int]:
    half = max(1, int(0.1 * n_rows / max(n_anomalies, 1)) // 2)
    return max(0, start - half), min(n_rows - 1, start + half)


def _inject(kind: str, y: np.ndarray, start: int, rng: np.random.Generator, scale: float, level: float, rows_per_day: int) -> None:
    """Plant one anomaly of ``kind`` in ``y`` from row ``start`` on (in place)."""
    n = len(y)
    size = float(rng.uniform(4.0, 9.0)) * scale  # far outside the noise
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "spike":
        width = int(rng.integers(1, 4))
        y[start : start + width] += sign * size
    elif kind == "level_shift":
        y[start:] += sign * max(size, 0.3 * abs(level))
    elif kind == "variance":
        end = min(n, start + int(rng.integers(rows_per_day // 4, rows_per_day)))
        y[start:end] += rng.normal(0.0, float(rng.uniform(4.0, 8.0)) * scale, end - start)
    elif kind == "seasonal":
        end = min(n, start + rows_per_day)
        lag = int(rng.integers(rows_per_day // 4, rows_per_day // 2))
        y[start:end] = y[start - lag : end - lag] if start >= lag else y[start:end]
    elif kind == "drift":
        rows = np.arange(n - start)
        y[start:] += sign * size * rows / float(rng.integers(rows_per_day // 4, rows_per_day))
    elif kind == "flatline":
        end = min(n, start + int(rng.integers(rows_per_day // 4, rows_per_day)))
        y[start:end] = y[start]
    else:
        raise ValueError(f"unknown anomaly kind {kind!r}; choose from {ANOMALY_KINDS}")


def make_synthetic_series(
    seed: int,
    *,
    n_rows: int = 4032,
    kinds: Sequence[str] | None = None,
    n_anomalies: int | None = None,
    minutes_per_row: int = 5,
) -> Series:
    """A seeded synthetic series with NAB-style anomaly windows.

    Args:
        seed: Seed of everything drawn (shape, noise, anomalies).
        n_rows: Length (NAB's most common is 4,032 rows of 5 minutes: two weeks).
        kinds: Anomaly kinds to draw from (default all of :data:`ANOMALY_KINDS`); an empty
            sequence gives a series without anomalies.
        n_anomalies: How many (default 1 to 3, drawn).
        minutes_per_row: Sampling interval.
    """
    rng = np.random.default_rng(seed)
    kinds = ANOMALY_KINDS if kinds is None else tuple(kinds)
    for k in kinds:
        if k not in ANOMALY_KINDS:
            raise ValueError(f"unknown anomaly kind {k!r}; choose from {ANOMALY_KINDS}")
    if n_rows < 500:
        raise ValueError(f"n_rows must be at least 500 (NAB's probation alone is 15 %), got {n_rows}")
    rows_per_day = max(4, 24 * 60 // minutes_per_row)
    t = np.arange(n_rows, dtype=np.float64)
    level = float(rng.lognormal(3.0, 1.5))
    scale = level * float(rng.uniform(0.02, 0.15))
    daily = scale * float(rng.choice([0.0, rng.uniform(1.0, 6.0)], p=[0.25, 0.75]))
    weekly = scale * float(rng.choice([0.0, rng.uniform(0.5, 3.0)], p=[0.6, 0.4]))
    phase = rng.uniform(0, 2 * np.pi, 2)
    shape = np.sin(2 * np.pi * t / rows_per_day + phase[0])
    if rng.random() < 0.5:  # sharper, business-hours shape
        shape = np.clip(shape * 2.0, -1.0, 1.0)
    y = level + daily * shape + weekly * np.sin(2 * np.pi * t / (7 * rows_per_day) + phase[1])
    y += float(rng.normal(0.0, 0.5)) * scale * t / n_rows  # gentle trend
    noise = rng.standard_t(3, n_rows) / 1.7 if rng.random() < 0.4 else rng.normal(0.0, 1.0, n_rows)
    y += scale * noise
    if rng.random() < 0.3:  # integer-valued metrics, as many real counters are
        y = np.round(y)

    count = int(rng.integers(1, 4)) if n_anomalies is None else int(n_anomalies)
    windows: list[tuple[int, int]] = []
    if kinds and count:
        probation = min(int(0.15 * n_rows), 750)
        starts = np.sort(rng.choice(np.arange(probation + n_rows // 20, n_rows - n_rows // 20), size=count, replace=False))
        for start in starts:
            a, b = _nab_window(n_rows, int(start), count)
            if windows and a <= windows[-1][1]:
                continue  # too close to the previous anomaly
            _inject(str(rng.choice(kinds)), y, int(start), rng, scale, level, rows_per_day)
            windows.append((a, b))
    stamps = np.datetime64("2015-01-05T00:00:00") + (t.astype(np.int64) * minutes_per_row * 60).astype("timedelta64[s]")
    return Series(name=f"synthetic/series_{seed}.csv", values=y, timestamps=stamps, windows=tuple(windows), category="synthetic")


def synthetic_suite(n_series: int, seed: int = 0, **kwargs) -> list[Series]:
    """``n_series`` synthetic series with seeds ``seed, seed + 1, ...``."""
    return [make_synthetic_series(seed + k, **kwargs) for k in range(int(n_series))]
