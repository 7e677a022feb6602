"""Output for ``anomaly-gym detect``: CSV and JSON Lines writers, and ``--columns`` parsing.

Reading is :mod:`anomaly_gym.envs.csvio` (one reader, the same rules in batch and stream mode).
"""

from __future__ import annotations

import json
import math
from typing import IO, Sequence

from anomaly_gym.envs.csvio import format_row


def parse_columns(specs: Sequence[str] | None) -> list[str] | None:
    """``["a,b", "c"]`` -> ``["a", "b", "c"]``; ``None`` when no ``--columns`` was given."""
    if not specs:
        return None
    names = [name.strip() for spec in specs for name in spec.split(",") if name.strip()]
    if not names:
        raise ValueError("--columns names no column; give comma-separated column names, e.g. --columns x,y,z")
    if len(set(names)) != len(names):
        raise ValueError(f"--columns names a column twice: {names}")
    return names


class CsvOutput:
    """CSV rows, one record each (fields that need it quoted), each flushed at once when
    ``flush_rows`` is set."""

    def __init__(self, stream: IO[str], header: list[str], extra: Sequence[str], *, flush_rows: bool) -> None:
        self.stream = stream
        self.flush_rows = flush_rows
        stream.write(format_row(list(header) + list(extra)))
        if flush_rows:
            stream.flush()

    def write(self, fields: list[str], extra: Sequence) -> None:
        self.stream.write(format_row(fields + list(extra)))
        if self.flush_rows:
            self.stream.flush()


class JsonlOutput:
    """One JSON object a line: feature values as numbers (their text when they are not
    numbers), other columns as text, then the appended fields."""

    def __init__(self, stream: IO[str], header: list[str], extra: Sequence[str], feature_idx: Sequence[int], *, flush_rows: bool) -> None:
        self.stream = stream
        self.header = list(header)
        self.extra = list(extra)
        self.numeric = set(feature_idx)
        self.flush_rows = flush_rows

    def write(self, fields: list[str], extra: Sequence) -> None:
        obj = {}
        for i, (name, text) in enumerate(zip(self.header, fields)):
            if i in self.numeric:
                try:
                    value = float(text)
                    obj[name] = value if math.isfinite(value) else text
                except ValueError:
                    obj[name] = text
            else:
                obj[name] = text
        for name, value in zip(self.extra, extra):
            obj[name] = value
        self.stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
        if self.flush_rows:
            self.stream.flush()
