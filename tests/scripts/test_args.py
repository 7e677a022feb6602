"""Shared argument definitions of the subcommands."""

import argparse

import pytest
from anomaly_gym.scripts._args import add_column_kind_arguments
from anomaly_gym.scripts.cli import build_parser


def test_column_kind_arguments_parse_lists_and_check_on_missing():
    p = argparse.ArgumentParser()
    add_column_kind_arguments(p, ignore_help="columns to pass through unscored")
    args = p.parse_args(["--categorical", "a,b", "c", "--numeric", "d", "--ignore", "e,f", "--on-missing", "impute"])
    assert (args.categorical, args.numeric, args.ignore, args.on_missing) == (["a", "b", "c"], ["d"], ["e", "f"], "impute")
    defaults = p.parse_args([])
    assert (defaults.categorical, defaults.numeric, defaults.ignore, defaults.on_missing) == ([], [], [], None)
    assert "pass through unscored" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--on-missing", "drop"])
    with pytest.raises(SystemExit):
        p.parse_args(["--categorical", "a,,b"])


def test_adapt_takes_the_shared_column_kind_arguments():
    args = build_parser().parse_args(["adapt", "--data", "t.csv", "-o", "a.zip", "--categorical", "proto,country", "--ignore", "id", "--on-missing", "error"])
    assert args.categorical == ["proto", "country"] and args.ignore == ["id"] and args.on_missing == "error"
