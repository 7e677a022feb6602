"""TableEncoder: rarity of categorical values, imputation with indicators, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from anomaly_gym.envs.encoding import TableEncoder, WarmupEncoder, encode_frame


def _fitted(**kwargs) -> TableEncoder:
    X_num = np.array([[1.0], [2.0], [np.nan], [4.0], [5.0]])
    X_cat = np.array([["tcp"], ["tcp"], ["udp"], [None], ["tcp"]], dtype=object)
    return TableEncoder(["bytes"], ["proto"], **kwargs).fit(X_num, X_cat)


def test_rarity_counts_halvings_below_half_the_uniform_share_and_unseen_values_are_rarest():
    values = ["a"] * 60 + ["b"] * 30 + ["c"] * 8 + ["d"] * 2  # k = 4 values: uniform share 25 rows
    X_cat = np.array(values, dtype=object).reshape(-1, 1)
    enc = TableEncoder([], ["v"], letter_codes=False).fit(None, X_cat)
    new = np.array([["a"], ["b"], ["c"], ["d"], ["zzz"]], dtype=object)
    assert enc.output_names == ["v/rarity"]
    # log2(100 / (2 * 4 * count)): a, b and c (a third of the uniform share) 0, d 2.6, unseen (0.5) 4.6
    np.testing.assert_array_equal(enc.transform(None, new)[:, 0], [0, 0, 0, 2, 4])
    # margin 1, rare from the uniform share down, as encoders stored without a margin encode
    np.testing.assert_array_equal(TableEncoder([], ["v"], rarity_margin=1, letter_codes=False).fit(None, X_cat).transform(None, new)[:, 0], [0, 0, 1, 3, 5])
    old = {k: v for k, v in enc.to_dict().items() if k not in ("rarity_margin", "pairs")}
    assert TableEncoder.from_dict(old).transform(None, new)[:, 0].tolist() == [0, 0, 1, 3, 5]
    # equally common values all score 0, whatever the sampling noise
    noisy = ["x"] * 27 + ["y"] * 23 + ["z"] * 25 + ["w"] * 25
    flat = TableEncoder([], ["v"], letter_codes=False).fit_transform(None, np.array(noisy, dtype=object).reshape(-1, 1))
    assert (flat == 0).all()


def test_missing_numbers_get_the_median_and_an_indicator():
    enc = _fitted()
    X = enc.transform(np.array([[np.nan], [7.0]]), np.array([["tcp"], ["tcp"]], dtype=object))
    np.testing.assert_array_equal(X[:, :2], [[3.0, 1.0], [7.0, 0.0]])
    # a column without missing values among the fitting rows gets no indicator, and is still imputed
    enc = TableEncoder(["a"]).fit(np.array([[1.0], [3.0], [5.0]]))
    assert enc.output_names == ["a"] and enc.transform(np.array([[np.nan]])).tolist() == [[3.0]]
    with pytest.raises(ValueError, match="missing value in numeric column 'a'"):
        TableEncoder(["a"], on_missing="error").fit(np.array([[1.0], [np.nan]]))


def test_one_hot_for_low_cardinality_columns():
    enc = _fitted(onehot_max=3)
    assert enc.output_names[-4:] == ["proto/rarity", "proto=", "proto=tcp", "proto=udp"]
    X = enc.transform(np.array([[1.0], [1.0]]), np.array([["udp"], ["new"]], dtype=object))
    np.testing.assert_array_equal(X[:, -3:], [[0, 0, 1], [0, 0, 0]])
    assert _fitted(onehot_max=2).output_names[-1] == "proto/rarity"  # 3 values: over the limit


def test_the_fitted_state_round_trips_through_json_and_is_checked():
    enc = _fitted(onehot_max=3)
    again = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    X_num, X_cat = np.array([[np.nan], [9.0]]), np.array([["udp"], ["zzz"]], dtype=object)
    np.testing.assert_array_equal(again.transform(X_num, X_cat), enc.transform(X_num, X_cat))
    bad = enc.to_dict()
    bad["counts"] = [{"tcp": "3"}]
    with pytest.raises(ValueError, match="counts"):
        TableEncoder.from_dict(bad)
    with pytest.raises(ValueError, match="fields must be"):
        TableEncoder.from_dict({**enc.to_dict(), "code": "import os"})


def test_encode_frame_splits_a_dataframe_and_reuses_a_fitted_encoder():
    frame = pd.DataFrame({"amount": [1.0, 2.0, 3.0, 2.5], "country": ["FR", "FR", "DE", np.nan]})
    X, enc = encode_frame(frame, ["country"])
    assert X.shape == (4, 2) and np.isfinite(X).all()
    Y, same = encode_frame(frame.iloc[:1], ["country"], encoder=enc)
    assert same is enc and Y.tolist() == X[:1].tolist()


def test_warmup_encoder_holds_rows_back_then_encodes_as_fitted_on_the_warmup_rows():
    values = [(np.array([float(i)]), ["tcp" if i % 3 else "udp"]) for i in range(6)]
    enc = WarmupEncoder(["bytes"], ["proto"], warmup=4)
    released = [enc.rows(v, c) for v, c in values[:4]]
    assert [len(r) for r in released] == [0, 0, 0, 4]
    reference = TableEncoder(["bytes"], ["proto"], on_missing="impute").fit(
        np.array([v for v, _ in values[:4]]), np.array([c for _, c in values[:4]], dtype=object)
    )
    expected = reference.transform(np.array([v for v, _ in values]), np.array([c for _, c in values], dtype=object))
    np.testing.assert_array_equal(np.array(released[-1]), expected[:4])
    later = [enc.rows(v, c) for v, c in values[4:]]
    assert [len(r) for r in later] == [1, 1]
    np.testing.assert_array_equal(np.array([r[0] for r in later]), expected[4:])
    with pytest.raises(ValueError, match="at least 1"):
        WarmupEncoder(["x"], [], warmup=0)


def _dependent_pairs() -> np.ndarray:
    """Columns a and b always agree (x with p, y with q), but one row pairs x with q; c is noise."""
    rng = np.random.default_rng(0)
    a = np.array(["x", "y"] * 100, dtype=object)
    b = np.where(a == "x", "p", "q").astype(object)
    b[0] = "q"
    c = rng.choice(["u", "v", "w"], size=200).astype(object)
    return np.column_stack([a, b, c])


def test_pair_rarity_finds_a_combination_of_common_values_that_single_rarity_misses():
    X_cat = _dependent_pairs()
    enc = TableEncoder([], ["a", "b", "c"], pairs=True, letter_codes=False).fit(X_cat=X_cat)
    X = enc.transform(X_cat=X_cat)
    assert enc.output_names == ["a/rarity", "b/rarity", "c/rarity", "pairs/rarity"]
    assert (X[:, :3] == 0).all()  # every single value is common
    # (x, q): expected 100 * 101 / 200 = 50.5 times, seen once: floor(log2(50.5)) = 5
    assert X[0, 3] == 5 and (X[1:, 3] == 0).all()
    # a combination never seen counts as half an occurrence; a value never seen adds nothing
    new = enc.transform(X_cat=np.array([["y", "p", "u"], ["zzz", "p", "u"]], dtype=object))
    assert new[0, 3] == 6 and new[1, 3] == 0 and new[1, 0] > 0
    assert TableEncoder([], ["a", "b", "c"], pairs=False, letter_codes=False).fit(X_cat=X_cat).n_outputs == 3
    assert TableEncoder([], ["a", "c"], letter_codes=False).fit(X_cat=X_cat[:, [0, 2]]).n_outputs == 3  # on by default


def test_pair_counts_round_trip_through_json_and_are_checked():
    X_cat = _dependent_pairs()
    enc = TableEncoder(["n"], ["a", "b", "c"], pairs=True).fit(np.arange(200.0).reshape(-1, 1), X_cat)
    data = json.loads(json.dumps(enc.to_dict()))
    again = TableEncoder.from_dict(data)
    X_new = np.array([["y", "p", "u"], ["x", "p", "w"]], dtype=object)
    np.testing.assert_array_equal(again.transform(np.zeros((2, 1)), X_new), enc.transform(np.zeros((2, 1)), X_new))
    data["pairs"][0]["counts"][0] = ["x", "nope", 3]
    with pytest.raises(ValueError, match="bad pair count"):
        TableEncoder.from_dict(data)
    assert "pairs" not in TableEncoder(["n"], ["a"], pairs=False).fit(np.zeros((2, 1)), X_cat[:2, :1]).to_dict()


def test_values_of_any_type_are_read_as_text_with_none_and_nan_as_the_empty_value():
    X_cat = np.array([[1], [1.5], [None], [np.nan], ["1"], [""]], dtype=object)
    enc = TableEncoder([], ["v"], onehot_max=5).fit(X_cat=X_cat)
    assert enc.counts_[0] == {"": 3, "1": 2, "1.5": 1}
    np.testing.assert_array_equal(enc.transform(X_cat=X_cat)[:, 1:], [[0, 1, 0], [0, 0, 1], [1, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0]])


def test_transform_in_chunks_gives_the_rows_encoded_one_at_a_time(monkeypatch):
    import anomaly_gym.envs.encoding as encoding

    rng = np.random.default_rng(1)
    X_num = np.where(rng.random((50, 2)) < 0.2, np.nan, rng.normal(size=(50, 2)))
    X_cat = rng.choice(np.array(["a", "b", "c", None], dtype=object), size=(50, 2))
    X_cat[5:, 1] = X_cat[5:, 0]  # d repeats c but in the first rows: combinations rarer than the marginals say
    enc = TableEncoder(["x", "y"], ["c", "d"], onehot_max=4, pairs=True).fit(X_num, X_cat)
    monkeypatch.setattr(encoding, "CHUNK_ROWS", 7)
    whole = enc.transform(X_num, X_cat)
    one_by_one = np.vstack([enc.transform(X_num[i : i + 1], X_cat[i : i + 1]) for i in range(50)])
    np.testing.assert_array_equal(whole, one_by_one)
    assert whole.shape == (50, enc.n_outputs) and np.isfinite(whole).all()
    assert enc.output_names[-1] == "pairs/rarity" and whole[:, -1].max() > 0  # rows scored one by one take the dict path
    X_cat[0, 0] = 3  # a number in a text column is read as its text
    assert enc.transform(X_num[:1], X_cat[:1]).tolist() == enc.transform(X_num[:65], X_cat[:65])[:1].tolist()


def test_even_onehot_expands_only_low_cardinality_columns_of_about_equally_common_values():
    rng = np.random.default_rng(0)
    even = rng.choice(list("abcdefgh"), size=800)  # 8 values, about equally common
    skewed = rng.choice(["tcp", "udp", "icmp"], size=800, p=[0.9, 0.08, 0.02])
    wide = rng.choice([f"v{i}" for i in range(40)], size=800)  # even, but too many values
    X_cat = np.column_stack([even, skewed, wide]).astype(object)
    enc = TableEncoder([], ["file", "proto", "id"], even_onehot=True, pairs=False, letter_codes=False).fit(X_cat=X_cat)
    assert [len(v) for v in enc.onehot_] == [8, 0, 0]
    assert enc.output_names[:2] == ["file/rarity", "file=a"] and enc.n_outputs == 3 + 8
    X = enc.transform(X_cat=X_cat)
    np.testing.assert_array_equal(X[:, 1:9].sum(axis=1), 1)
    again = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(again.transform(X_cat=X_cat[:20]), X[:20])
    assert TableEncoder([], ["file", "proto", "id"], pairs=False, letter_codes=False).fit(X_cat=X_cat).n_outputs == 3  # off: rarity only
    with pytest.raises(ValueError, match="even_onehot"):
        TableEncoder.from_dict({**enc.to_dict(), "even_onehot": "yes"})


def test_drop_constant_leaves_out_rarity_columns_that_are_zero_on_every_fitting_row():
    rng = np.random.default_rng(0)
    even = rng.choice(list("abcdefgh"), size=800)  # about equally common: every value's rarity is 0
    skewed = rng.choice(["tcp", "udp", "icmp"], size=800, p=[0.9, 0.08, 0.02])
    X_num = rng.normal(size=(800, 2))
    X_cat = np.column_stack([even, rng.choice(list("wxyz"), size=800), skewed]).astype(object)
    full = TableEncoder(["u", "v"], ["file", "rank", "proto"], letter_codes=False)
    dropped = TableEncoder(["u", "v"], ["file", "rank", "proto"], drop_constant=True, letter_codes=False)
    X_full, X_drop = full.fit_transform(X_num, X_cat), dropped.fit_transform(X_num, X_cat)
    assert "file/rarity" in full.output_names and "pairs/rarity" in full.output_names
    assert dropped.output_names == ["u", "v", "proto/rarity"] + ["pairs/rarity"] * int(X_full[:, -1].any())
    kept = [full.output_names.index(name) for name in dropped.output_names]
    np.testing.assert_array_equal(X_drop, X_full[:, kept])  # what is left is unchanged
    assert not X_full[:, [full.output_names.index("file/rarity"), full.output_names.index("rank/rarity")]].any()
    again = TableEncoder.from_dict(json.loads(json.dumps(dropped.to_dict())))
    assert again.output_names == dropped.output_names
    np.testing.assert_array_equal(again.transform(X_num[:70], X_cat[:70]), X_drop[:70])
    # only categorical columns, all of them flat: every column is kept rather than none
    only = TableEncoder([], ["file"], drop_constant=True, letter_codes=False).fit(X_cat=X_cat[:, :1])
    assert only.output_names == ["file/rarity"]
    with pytest.raises(ValueError, match="drop_constant"):
        TableEncoder.from_dict({**dropped.to_dict(), "drop_constant": 1})


def test_letter_codes_keep_the_order_of_consecutive_single_letters():
    rng = np.random.default_rng(0)
    files = rng.choice(list("abcdefgh"), size=400)
    grades = rng.choice(list("ABCDE"), size=400, p=[0.1, 0.2, 0.4, 0.2, 0.1])
    sizes = rng.choice(["S", "M", "L"], size=400)  # letters, but not consecutive: no order read
    gapped = rng.choice(list("AHKRS"), size=400)
    pair = rng.choice(list("ab"), size=400)  # fewer than LETTER_MIN
    mixed = rng.choice(list("abC"), size=400)  # two cases
    X_cat = np.column_stack([files, grades, sizes, gapped, pair, mixed]).astype(object)
    X_cat[:5, 1] = ""  # missing grades
    names = ["file", "grade", "size", "mcintosh", "pair", "mixed"]
    enc = TableEncoder([], names, pairs=False).fit(X_cat=X_cat)
    assert [n for n in enc.output_names if n.endswith("/position")] == ["file/position", "grade/position"]
    assert enc.letter_columns == ["file", "grade"]
    X = enc.transform(X_cat=X_cat)
    at = enc.output_names.index("file/position")
    np.testing.assert_array_equal(X[:, at], [ord(v) - 96 for v in files])
    grade = X[:, enc.output_names.index("grade/position")]
    assert (grade[:5] == 3).all()  # the median grade, C
    np.testing.assert_array_equal(grade[5:], [ord(v) - 64 for v in grades[5:]])
    # a letter never seen has its place; another value never seen the median place, and its rarity marks it
    new = np.array([["k", "F", "S", "A", "a", "a"], ["??", "A", "S", "A", "a", "a"]], dtype=object)
    Y = enc.transform(X_cat=new)
    assert Y[0, at] == 11 and Y[0, enc.output_names.index("grade/position")] == 6
    assert Y[1, at] == 4.0 or Y[1, at] == 5.0  # the median file of about equally common a..h
    assert Y[1, enc.output_names.index("file/rarity")] > 0
    again = TableEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(again.transform(X_cat=new), Y)
    # encoders stored before letter codes (no flag) encode as they did
    old = {k: v for k, v in enc.to_dict().items() if k != "letter_codes"}
    assert "file/position" not in TableEncoder.from_dict(old).output_names
    with pytest.raises(ValueError, match="letter_codes"):
        TableEncoder.from_dict({**enc.to_dict(), "letter_codes": "yes"})


def test_fit_transform_gives_fit_then_transform(monkeypatch):
    from anomaly_gym.envs import encoding

    monkeypatch.setattr(encoding, "CHUNK_ROWS", 1000)  # several blocks of rows
    rng = np.random.default_rng(1)
    n = 3000
    X_num = rng.normal(size=(n, 2))
    X_num[rng.random(X_num.shape) < 0.05] = np.nan
    X_cat = np.column_stack(
        [rng.choice(["tcp", "udp", "icmp", None], size=n, p=[0.7, 0.2, 0.08, 0.02]), rng.integers(0, 400, size=n), rng.choice(list("abcdefgh"), size=n)]
    ).astype(object)
    for options in ({}, {"drop_constant": True}, {"onehot_max": 5}):
        enc = TableEncoder(["u", "v"], ["proto", "code", "file"], **options)
        np.testing.assert_array_equal(enc.fit_transform(X_num, X_cat), enc.fit(X_num, X_cat).transform(X_num, X_cat))
