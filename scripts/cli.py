"""The ``anomaly-gym`` command.

Each subcommand lives in its own module of ``anomaly_gym.scripts`` and exposes
``add_parser(subparsers)``, which registers its arguments and sets ``func`` to the
function that runs it.  Exit codes: 0 success; 1 an internal error or runtime failure (with
a traceback for a bug); 2 bad usage or input (a ``ValueError`` or ``FileNotFoundError`` that
says what is wrong); 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

#: Subcommand modules, in the order ``--help`` lists them.
COMMANDS = ("tasks", "train", "adapt", "detect", "demo", "bench", "benchmark", "nab", "datasets", "bundle")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly-gym",
        description="Meta-reinforcement learning for anomaly detection: learn how to detect on many "
        "labelled datasets, transfer to a new one.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    parser.add_argument("--version", action="version", version=f"anomaly-gym {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"anomaly_gym.scripts.{name}").add_parser(sub)
    return parser


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("anomaly-gym")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # bad usage or input; anything else is a bug: exit 1
        print(f"anomaly-gym {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"anomaly-gym {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
