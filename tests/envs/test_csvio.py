"""The CSV reader of ``anomaly_gym.envs.csvio`` used from Python: records, rules, writing."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from anomaly_gym.envs import csvio
from anomaly_gym.envs.csvio import CsvReader, InputError, RowTexts, format_row, read_table
from hypothesis import given, settings
from hypothesis import strategies as st


def _read(data: bytes, **kwargs):
    return list(CsvReader([io.BytesIO(data)], **kwargs))


def test_records_keep_their_fields_and_start_lines():
    data = b'k,a,b\nx,1,2\ry,3,4\r\nz,5,"6\n7"\nw,8,9\n'
    recs = _read(data)
    assert [(r.line, r.fields) for r in recs] == [(2, ["x", "1", "2"]), (3, ["y", "3", "4"]), (4, ["z", "5", "6\n7"]), (6, ["w", "8", "9"])]
    assert recs[2].error == "non-numeric value '6\\n7' in column 'b'" and recs[2].values is None
    np.testing.assert_array_equal(recs[3].values, [8.0, 9.0])
    assert recs[3].values.dtype == np.float64


def test_read_table_collects_values_errors_and_places(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("ts,a,b\nt0,1,2\n\nt1,1e39,2\nt2,3\nt3,4,5\n")
    table = read_table([src])
    assert table.header == ["ts", "a", "b"] and table.feature_names == ["a", "b"]
    assert table.errors == {1: "empty line", 2: "value '1e39' in column 'a' is beyond float32's range (|x| <= 3.4e38)", 3: "expected 3 fields, got 2"}
    assert table.where(2) == f"{src}:4" and table.fields[3] == ["t2", "3", ""]
    np.testing.assert_array_equal(table.X[[0, 4]], [[1, 2], [4, 5]])
    assert np.isnan(table.X[1:4]).all()


def test_read_table_gives_the_same_table_whatever_its_block_size(tmp_path, monkeypatch):
    src = tmp_path / "t.csv"
    lines = [f"t{i},{i},{i * 2}" for i in range(20)]
    lines[4] = lines[5] = lines[6] = "bad"  # a whole block of bad rows
    lines[11] = 't11,"1,5",3'
    src.write_text("ts,a,b\n" + "\n".join(lines) + "\n")
    whole = read_table([src])
    monkeypatch.setattr(csvio, "READ_BLOCK", 3)
    blocks = read_table([src])
    assert list(blocks.fields) == list(whole.fields) and blocks.errors == whole.errors and len(blocks.errors) == 4
    np.testing.assert_array_equal(blocks.X, whole.X)
    np.testing.assert_array_equal(blocks.lines, whole.lines)
    assert blocks.fields[11] == ["t11", "1,5", "3"] and blocks.fields[4] == ["bad", "", ""]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.text(alphabet=st.sampled_from(list('ab,"\r\n xé')), max_size=5), min_size=1, max_size=4), max_size=6))
def test_row_texts_give_back_every_records_fields(records):
    texts = RowTexts()
    texts.extend(records)
    assert len(texts) == len(records) and list(texts) == records and texts[1:3] == records[1:3]
    assert all(texts[i] == fields and texts.line(i) + "\n" == format_row(fields) for i, fields in enumerate(records))


def test_feature_columns_come_from_the_sample_not_from_one_row():
    rows = ["abc,1,x"] + [f"{i},{i},y" for i in range(40)] + ["7,text,z"]
    reader = CsvReader([io.BytesIO(("a,b,c\n" + "\n".join(rows) + "\n").encode())], sample_rows=8)
    recs = list(reader)
    assert reader.feature_names == ["a", "b"]  # c is text in the sample, a mostly numbers
    assert recs[0].error == "non-numeric value 'abc' in column 'a'"
    assert recs[-1].error == "non-numeric value 'text' in column 'b'"  # after the sample: marked, not demoted
    assert reader.category_names == ["c"]  # text with repeated values: a categorical feature
    assert "categorical columns ['c']" in reader.notes[0]


def test_named_columns_and_file_level_errors():
    reader = CsvReader([io.BytesIO(b"a,b,c\n1,2,3\n")], columns=["c", "a"])
    np.testing.assert_array_equal(next(iter(reader)).values, [3.0, 1.0])
    for data, kwargs, message in [
        (b"", {}, "the input is empty"),
        (b"a,a\n1,2\n", {}, "more than once"),
        (b"a,score\n1,2\n", {"reserved": ["score"]}, "which detect adds"),
        (b"id,label\nx,y\nz,w\n", {}, "<stream>:2: no numeric or categorical column"),
        (b"1,2\n3,4\n", {"on_error": "fail"}, "<stream>:1: no header row"),
        (b"a,b\n1,2\n3,\xff\n", {}, "<stream>:3: not UTF-8 text: byte 0xff cannot be decoded"),
        ("a,b\n1,2\n".encode("utf-16-le"), {}, "not UTF-8 text (looks like UTF-16, little-endian, without a byte-order mark)"),
    ]:
        with pytest.raises(InputError, match=None) as exc:
            _read(data, **kwargs)
        assert message in str(exc.value), str(exc.value)
    with pytest.raises(ValueError, match=r"\['z'\], which the header does not have"):
        _read(b"a,b\n1,2\n", columns=["z"])


def test_several_inputs_read_as_one_table(tmp_path):
    one, two = tmp_path / "1.csv", tmp_path / "2.csv"
    one.write_text("a,b\n1,2\n")
    two.write_bytes(b"\xef\xbb\xbfa,b\r\n3,4\r\n")
    table = read_table([one, two])
    assert [table.where(i) for i in range(2)] == [f"{one}:2", f"{two}:2"]
    two.write_text("a,c\n3,4\n")
    with pytest.raises(InputError, match=r"2.csv:1: header \['a', 'c'\] differs"):
        read_table([one, two])


class Trickle(io.RawIOBase):
    """A pipe that has only delivered part of its data: reading past it fails the test."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if not self.data:
            raise AssertionError("read past what has arrived")
        n = min(len(buf), len(self.data))
        buf[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_a_stream_is_read_no_further_than_the_rows_asked_for():
    """Stream mode answers each row as it arrives: the reader must not wait for more bytes."""
    rows = "".join(f"{i},{i * 2}\n" for i in range(5))
    reader = iter(CsvReader([io.BufferedReader(Trickle(("a,b\n" + rows).encode()))], columns=["a", "b"]))
    got = [next(reader) for _ in range(5)]
    assert [r.fields for r in got] == [[str(i), str(i * 2)] for i in range(5)]


fields = st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=6), min_size=1, max_size=5)


@settings(max_examples=500, deadline=None)
@given(rows=st.lists(fields, max_size=8))
def test_format_row_round_trips_through_the_reader(rows):
    """Whatever the fields (CR, LF, quotes, commas), what format_row writes reads back the same."""
    text = "".join(format_row(r) for r in rows)
    assert text.count("\n") >= len(rows)
    assert list(csv.reader(io.StringIO(text, newline=""))) == rows


plain_field = st.text(alphabet="ab1.-e x\x00é", max_size=4) | st.integers(-99, 99).map(str)
plain_rows = st.lists(st.lists(plain_field, min_size=0, max_size=4), min_size=1, max_size=30)


@settings(max_examples=500, deadline=None)
@given(rows=plain_rows, trailing=st.booleans(), quoted=st.booleans())
def test_reading_whole_inputs_gives_the_records_of_reading_as_they_arrive(rows, trailing, quoted):
    """Batch use splits a text without quotes or CR on LF and commas: the same records, lines
    and errors as the csv module reading it row by row."""
    header = "h1,h2,h3"
    body = "\n".join(",".join(f'"{f}"' if quoted else f for f in r) for r in rows)
    data = (header + "\n" + body + ("\n" if trailing else "")).encode()

    def records(whole):
        try:
            return [(r.line, r.fields, r.error, None if r.values is None else r.values.tolist()) for r in CsvReader([io.BytesIO(data)], whole=whole)]
        except InputError as exc:
            return str(exc)

    assert records(True) == records(False)


@settings(max_examples=500, deadline=None)
@given(body=st.text(alphabet='a1,"\n ', max_size=60), header=st.sampled_from(["h1,h2", '"h1","h2"', 'h1,"h,2"']))
def test_lines_with_quotes_read_alone_or_with_the_whole_text_as_the_csv_module_reads_them(body, header):
    """Any text of quotes, commas and LF, well-formed CSV or not (stray quotes, quoted fields
    over several lines): reading a whole input gives what reading it as it arrives gives."""
    data = (header + "\n" + body).encode()

    def records(whole):
        try:
            return [(r.line, r.fields, r.error) for r in CsvReader([io.BytesIO(data)], whole=whole, columns=["h1"])]
        except InputError as exc:
            return str(exc)

    assert records(True) == records(False)


def test_column_kinds_are_inferred_from_the_sample():
    from anomaly_gym.envs.csvio import infer_column_types

    header = ["ts", "proto", "ok", "bytes", "code", "user", "row_id", "label", "blank"]
    sample = [
        [f"2024-05-01T12:{i:02d}:00", ["tcp", "udp", "icmp"][i % 3], ["yes", "no"][i % 2], str(i * 7 % 13), str(i % 4), f"u{i}", str(i), str(i % 2), ""]
        for i in range(20)
    ]
    kinds = {t.name: t.kind for t in infer_column_types(header, sample)}
    assert kinds == {
        "ts": "timestamp",
        "proto": "categorical",
        "ok": "boolean",
        "bytes": "numeric",
        "code": "numeric",
        "user": "identifier",
        "row_id": "identifier",
        "label": "label",
        "blank": "empty",
    }
    # integer codes are categorical only when the user says so; overrides win over inference
    kinds = {t.name: t.kind for t in infer_column_types(header, sample, categorical=["code"], numeric=["ok"], ignore=["proto"])}
    assert (kinds["code"], kinds["ok"], kinds["proto"]) == ("categorical", "numeric", "ignored")
    with pytest.raises(ValueError, match="--categorical names column 'nope'"):
        infer_column_types(header, sample, categorical=["nope"])
    with pytest.raises(ValueError, match="two of"):
        infer_column_types(header, sample, categorical=["code"], ignore=["code"])


def test_missing_values_are_imputed_or_errors_as_asked(tmp_path):
    src = tmp_path / "m.csv"
    src.write_text("a,b,c\n1,x,2\n,y,3\n4,,NA\n5,x,6\n")
    default = read_table([src])
    assert default.feature_names == ["a", "c"] and default.category_names == ["b"]
    assert default.errors == {1: "missing value in column 'a'", 2: "non-numeric value 'NA' in column 'c'"}
    imputed = read_table([src], on_missing="impute")
    assert imputed.errors == {} and np.isnan(imputed.X[1, 0]) and np.isnan(imputed.X[2, 1])
    assert imputed.categories([0, 2]).tolist() == [["x"], [""]]
    strict = read_table([src], on_missing="error")
    assert "missing value in column 'b'" in strict.errors[2] and 1 in strict.errors
    named = read_table([src], columns=["a"], categorical=["b"])
    assert named.feature_names == ["a"] and named.category_names == ["b"]


def test_parse_values_reads_empty_fields_as_missing_and_other_text_as_bad():
    from anomaly_gym.envs.csvio import parse_values

    for texts in (["1", "", "2.5", ""], ["1", "", "x", " ", "1e39", "nan", "-3"]):
        values, bad = parse_values(texts)
        expected = [float(t) if t.strip() and t != "x" and t not in ("1e39", "nan") else np.nan for t in texts]
        np.testing.assert_array_equal(values, expected)
        np.testing.assert_array_equal(bad, np.isnan(expected))
