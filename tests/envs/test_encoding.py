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


def test_rarity_counts_halvings_below_the_uniform_share_and_unseen_values_are_rarest():
    values = ["a"] * 60 + ["b"] * 30 + ["c"] * 8 + ["d"] * 2  # k = 4 values: uniform share 25 rows
    enc = TableEncoder([], ["v"]).fit(None, np.array(values, dtype=object).reshape(-1, 1))
    X = enc.transform(None, np.array([["a"], ["b"], ["c"], ["d"], ["zzz"]], dtype=object))
    assert enc.output_names == ["v/rarity"]
    # log2(100 / (4 * count)): a and b above the uniform share, c 1.6, d 3.6, unseen (0.5) 5.6
    np.testing.assert_array_equal(X[:, 0], [0, 0, 1, 3, 5])
    # equally common values all score 0, whatever the sampling noise
    noisy = ["x"] * 27 + ["y"] * 23 + ["z"] * 25 + ["w"] * 25
    flat = TableEncoder([], ["v"]).fit_transform(None, np.array(noisy, dtype=object).reshape(-1, 1))
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
        np.array([v for v, _ in values[:4]]), np.array([c for _, c in values[:4]], dtype=object))
    expected = reference.transform(np.array([v for v, _ in values]), np.array([c for _, c in values], dtype=object))
    np.testing.assert_array_equal(np.array(released[-1]), expected[:4])
    later = [enc.rows(v, c) for v, c in values[4:]]
    assert [len(r) for r in later] == [1, 1]
    np.testing.assert_array_equal(np.array([r[0] for r in later]), expected[4:])
    with pytest.raises(ValueError, match="at least 1"):
        WarmupEncoder(["x"], [], warmup=0)
