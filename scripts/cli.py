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
COMMANDS = ("tasks", "train", "adapt", "detect", "discover", "demo", "bench", "benchmark", "nab", "datasets", "bundle")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anomaly-gym",
        description="Meta-reinforcement learning for anomaly detection: learn how to detect on many labelled datasets, transfer to a new one.",
    )
    parser.add_argument("--version", action="version", version=f"anomaly-gym {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"anomaly_gym.scripts.{name}").add_parser(sub)
    _add_verbosity(parser, top=True)
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v/--verbose`` and ``-q/--quiet`` on every command, before or after its name.

    Sub-command parsers default to ``SUPPRESS`` so that ``anomaly-gym -v detect`` is not undone
    by the sub-command's own default.
    """
    default = False if top else argparse.SUPPRESS
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log progress details to stderr (detect also prints the inferred column schema)"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default,
        help="less on stderr: no log messages below errors, no Python warnings, no progress bars "
        "(the notes on which columns were used and the run's summary stay)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):  # aliases map to the same parser
                _add_verbosity(child)


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("anomaly-gym")
    except metadata.PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose and args.quiet:
        parser.error("-v/--verbose and -q/--quiet exclude each other")
    level = logging.INFO if args.verbose else logging.ERROR if args.quiet else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        import warnings

        warnings.simplefilter("ignore")
        if hasattr(args, "no_progress"):
            args.no_progress = True
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
