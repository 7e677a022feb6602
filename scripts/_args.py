"""Argument conventions shared by every subcommand.

Lists are comma-separated everywhere: ``--sources builtin,data/adbench``.  Flags that take
lists also accept the items as separate words (``--sources builtin data/adbench``), and
both forms mix.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Sequence

#: ``--twins``' default: datasets of ../shared/data made from the same original data under two
#: names (:data:`anomaly_gym.meta.benchmark.protocol.KNOWN_TWINS`, as text).
DEFAULT_TWINS = "bank=campaign,covertype=cover"


class CommaList(argparse.Action):
    """Collect ``a,b c`` into ``["a", "b", "c"]``; an empty item is a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = []
        for value in values if isinstance(values, list) else [values]:
            parts = [part.strip() for part in str(value).split(",")]
            if any(not part for part in parts):
                parser.error(f"{option_string}: empty item in {value!r}; give a comma-separated list such as a,b,c")
            items += parts
        setattr(namespace, self.dest, items)


def add_list_argument(parser: argparse.ArgumentParser, *flags: str, **kwargs) -> argparse.Action:
    """A list flag: ``--flag a,b,c`` (or ``--flag a b c``)."""
    kwargs.setdefault("nargs", "+")
    return parser.add_argument(*flags, action=CommaList, **kwargs)


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


def add_column_kind_arguments(
    parser: argparse.ArgumentParser,
    *,
    ignore_help: str = "columns to leave out",
    on_missing_default: str = "impute in categorical columns (an empty value is a value of its own), error in numeric ones",
) -> None:
    """The flags that override inferred column kinds of a CSV and say what a missing value does.

    ``--categorical A,B``, ``--numeric C``, ``--ignore D`` (lists, default ``[]``) and
    ``--on-missing impute|error`` (default ``None``: the command decides, as
    ``on_missing_default`` tells the user).

    Args:
        parser: The subcommand's parser.
        ignore_help: What ``--ignore`` does with a column in this command.
        on_missing_default: The ``--on-missing`` default, in words, for the help text.
    """
    add_list_argument(
        parser,
        "--categorical",
        default=[],
        metavar="A,B",
        help="columns to score as categorical (by how rare each value is), e.g. integer codes; text columns are categorical by default",
    )
    add_list_argument(parser, "--numeric", default=[], metavar="C", help="columns to read as numbers whatever they look like")
    add_list_argument(parser, "--ignore", default=[], metavar="D", help=ignore_help)
    parser.add_argument(
        "--on-missing",
        choices=("impute", "error"),
        default=None,
        help=f"empty or NA values: 'impute' (numeric: the column's median plus a missingness indicator) or 'error'. Default: {on_missing_default}",
    )


def add_executor_arguments(parser: argparse.ArgumentParser, work: str) -> None:
    """``--executor serial|local|ray`` (default local), ``--workers N`` and ``--address auto|HOST:PORT``.

    Args:
        parser: The subcommand's parser.
        work: What runs on the executor, in words for the help text ("the cells (target x method x seed)").
    """
    parser.add_argument(
        "--executor",
        choices=("serial", "local", "ray"),
        default="local",
        help=f"where {work} run: serial (this process), local (a process pool over "
        "the cores, the default) or ray (Ray tasks; pip install 'anomaly-gym[ray]'); results are the same "
        "whatever the executor",
    )
    parser.add_argument("--workers", type=int, default=None, metavar="N", help="items run at once (default: the cores for local, the cluster's CPUs for ray)")
    parser.add_argument(
        "--address",
        default=None,
        metavar="auto|HOST:PORT",
        help="with --executor ray: the Ray cluster to join ('auto': the one `ray start --head` started here); default: a local Ray instance for this run",
    )


def check_detect_args(args) -> None:
    """``detect``'s options checked before any work: a ValueError (exit 2) says which is wrong."""
    if args.threshold is not None and not math.isfinite(args.threshold):
        raise ValueError(f"--threshold must be a number, got {args.threshold}")
    if args.contamination is not None and not 0.0 < args.contamination < 1.0:
        raise ValueError(f"--contamination must be between 0 and 1 (exclusive), got {args.contamination}")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    if args.mode == "stream":
        if args.warmup < 10:
            raise ValueError(f"--warmup must be at least 10 rows (the detectors need 10 to fit), got {args.warmup}")
        if args.window < args.warmup:
            raise ValueError(f"--window ({args.window}) must be at least --warmup ({args.warmup})")
        if args.refit_every < 1:
            raise ValueError(f"--refit-every must be at least 1, got {args.refit_every}")
    if args.inputs.count("-") > 1:
        raise ValueError("standard input ('-') can be read only once")
    if args.output != "-":  # before any work, not after it
        if Path(args.output).is_dir():
            raise ValueError(f"--output {args.output} is a folder; give a file name")
        if not Path(args.output).parent.is_dir():
            raise FileNotFoundError(f"the folder of --output {args.output} does not exist")
