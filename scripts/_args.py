"""Argument conventions shared by every subcommand.

Lists are comma-separated everywhere: ``--sources builtin,data/adbench``.  Flags that take
lists also accept the items as separate words (``--sources builtin data/adbench``), and
both forms mix.
"""

from __future__ import annotations

import argparse
from typing import Sequence


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
