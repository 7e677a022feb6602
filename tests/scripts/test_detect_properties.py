"""Malformed CSVs thrown at ``anomaly-gym detect`` in-process (hypothesis).

Whatever the bytes: no traceback, exit code 0 or 2 (2 with a message), and under
``--on-error mark`` every input record comes out once, in order, with its own fields; a
record gets an error exactly when the documented rules say so
(:mod:`anomaly_gym.envs.csvio`).
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import math
import sys

import pytest
from anomaly_gym.agents import PolicyBundle, load_bundle, make_agent
from anomaly_gym.envs import AnomalyDetectionEnv, FeaturizerConfig, make_synthetic_task
from anomaly_gym.scripts import cli, detect
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.filterwarnings("ignore:detector .* failed to fit")

FLOAT32_MAX = 3.4028234663852886e38
WARMUP = 10  # stream mode; the feature columns are decided on min(32, WARMUP) rows
HEADER_NAMES = ["a", "b c", "x,y", 'q"r', "t\r\nu", "é"]
ODD_NUMBERS = [
    "1e39",
    "-1e39",
    "1e308",
    "-1e308",
    "3e38",
    "-3.4e38",
    "1e-320",
    "-0",
    "+5",
    " 7 ",
    "1_000",
    "nan",
    "-inf",
    "Infinity",
    "0x10",
    "1e",
    "--1",
    "",
    " ",
    "1.5.2",
    "١٢",
]
LONG = ["x" * 140_000, "7" * 140_000, '"' * 140_000]

numbers = st.one_of(st.integers(-1000, 1000).map(str), st.floats(-1e3, 1e3).map(repr))
text = st.text(alphabet=',"\r\n \x00aé1.e-', max_size=8)


def _field(k: int):
    if k < 90:
        return numbers
    if k < 95:
        return st.sampled_from(ODD_NUMBERS)
    if k < 99:
        return text
    return st.sampled_from(LONG)


field = st.integers(0, 99).flatmap(_field)


@st.composite
def csv_inputs(draw):
    """(header, records, the bytes that hold them)."""
    header = draw(st.permutations(HEADER_NAMES))[: draw(st.integers(1, 4))]
    n = len(header)
    width = st.integers(0, 99).flatmap(lambda k: st.just(n) if k < 90 else st.integers(0, n + 2))
    records = draw(st.lists(width.flatmap(lambda w: st.lists(field, min_size=w, max_size=w)), min_size=12, max_size=40))
    parts = [_record(header, draw)]
    for fields in records:
        part = _record(fields, draw)
        if parts[-1].endswith("\r") and part.startswith("\n"):  # CR then an empty LF line reads as one CRLF
            parts[-1] += "\n"
        parts.append(part)
    if draw(st.booleans()) and records and records[-1]:
        parts[-1] = parts[-1].rstrip("\r\n")  # no line ending after the last record (an unquoted field holds none)
    body = "".join(parts)
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8", "utf-8-bom", "utf-16-le-bom", "utf-16-be-bom"]))
    data = {
        "utf-8": lambda: body.encode("utf-8"),
        "utf-8-bom": lambda: codecs.BOM_UTF8 + body.encode("utf-8"),
        "utf-16-le-bom": lambda: codecs.BOM_UTF16_LE + body.encode("utf-16-le"),
        "utf-16-be-bom": lambda: codecs.BOM_UTF16_BE + body.encode("utf-16-be"),
    }[encoding]()
    return header, records, data


def _record(fields: list[str], draw) -> str:
    """One record as CSV text: quoted where needed (or at random), any line ending."""
    if fields == [""]:
        line = '""'
    else:
        line = ",".join(f'"{f.replace(chr(34), 2 * chr(34))}"' if draw(st.booleans()) or any(c in f for c in ',"\r\n') else f for f in fields)
    return line + draw(st.sampled_from(["\n", "\r\n", "\r"]))


# --------------------------------------------------------------------------- the documented rules, restated


def _bad_value(text: str) -> bool:
    if not text.strip():
        return True
    try:
        value = float(text)
    except ValueError:
        return True
    return not math.isfinite(value) or abs(value) > FLOAT32_MAX


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _counter(texts: list[str]) -> bool:
    """Whole numbers that only increase over at least 16 rows: an identifier, left out of the features."""
    try:
        values = [float(t) for t in texts]
    except ValueError:
        return False
    return len(values) >= 16 and all(math.isfinite(v) and v == int(v) for v in values) and all(b > a for a, b in zip(values, values[1:]))


def expected(header: list[str], records: list[list[str]], sample_rows: int) -> tuple[list[int] | None, list[bool]]:
    """(feature columns, or None when the input has none; whether each record is bad)."""
    n = len(header)
    sample = [r for r in records[:sample_rows] if len(r) == n] or [r for r in records if len(r) == n][:1]
    features = [
        i for i in range(n) if (texts := [r[i] for r in sample if r[i].strip()]) and 2 * sum(map(_is_number, texts)) > len(texts) and not _counter(texts)
    ]
    if sample and not features:
        return None, []
    return features, [len(r) != n or any(_bad_value(r[i]) for i in features) for r in records]


# --------------------------------------------------------------------------- running detect


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A policy on a one-detector bank: each detect call takes milliseconds."""
    config = FeaturizerConfig(detectors=("ecod",))
    env = AnomalyDetectionEnv(tasks=[make_synthetic_task("global", n_rows=100, seed=0)], featurizer=config)
    model = make_agent("ppo", env, net_arch=[8], device="cpu", n_steps=64, batch_size=64).learn(64)
    return load_bundle(PolicyBundle(model, config).save(tmp_path_factory.mktemp("bundle") / "ecod.bundle.zip"), device="cpu")


def run_detect(bundle, data: bytes, *argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(newline=""), io.StringIO()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(detect, "load_model", lambda path, device: bundle)
        mp.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["detect", "-", *argv])
    return code, out.getvalue(), err.getvalue()


def check(bundle, example, mode: str, on_error: str) -> None:
    header, records, data = example
    argv = ["--mode", mode, "--on-error", on_error, "--no-progress"]
    if mode == "stream":
        argv += ["--warmup", str(WARMUP), "--window", str(WARMUP), "--refit-every", "1000", "--refit", "inline", "--temporal", "off"]
    code, out, err = run_detect(bundle, data, *argv)
    features, bad = expected(header, records, min(32, WARMUP) if mode == "stream" else 32)
    event(f"{mode} --on-error {on_error}: exit {code}")
    assert code in (0, 2), err
    assert "Traceback" not in err
    if code == 2:
        assert "anomaly-gym detect: error: <stdin>:" in err or "valid row(s)" in err, err
        if features is not None:  # the only reasons left: too few rows to fit, or a bad row under fail
            assert (mode == "batch" and len(bad) - sum(bad) < 10) or (on_error == "fail" and any(bad)), err
        return
    assert features is not None, err
    if on_error == "fail":
        assert not any(bad)
    rows = list(csv.reader(io.StringIO(out, newline="")))
    n = len(header)
    extra = ["anomaly_score", "is_anomaly", "error"] if mode == "batch" else ["anomaly_score", "is_anomaly", "status", "error"]
    assert rows[0] == header + extra
    kept = [(r, b) for r, b in zip(records, bad) if not (b and on_error == "skip")]
    assert len(rows) - 1 == len(kept)
    if any(bad) and on_error == "mark":
        event("bad rows marked")
    for got, (fields, is_bad) in zip(rows[1:], kept):
        assert len(got) == n + len(extra)
        assert got[:n] == (fields + [""] * n)[:n]  # its own fields
        assert (got[-1] != "") == is_bad, (fields, got[-1])
        if is_bad:
            assert got[n] == ""  # no score
        elif mode == "batch" or got[n + 2] == "ok":
            assert 0.0 <= float(got[n]) <= 1.0


MODES = st.sampled_from(["batch", "stream"])
POLICIES = st.sampled_from(["mark", "mark", "skip", "fail"])


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(example=csv_inputs(), mode=MODES, on_error=POLICIES)
def test_detect_keeps_every_row_with_its_own_fields(tiny_bundle, example, mode, on_error):
    check(tiny_bundle, example, mode, on_error)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(example=csv_inputs(), mode=MODES, on_error=POLICIES)
def test_detect_keeps_every_row_with_its_own_fields_many(tiny_bundle, example, mode, on_error):
    check(tiny_bundle, example, mode, on_error)
