"""The shape of the code: no function over 80 lines in the package, no command module over 250.

Functions are measured with :mod:`ast` from their ``def`` line (decorators left out) to their
last line, docstring and comments included.  The allow-lists name what is still over, with
its length today: an entry may shrink (or go), never grow.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ("envs", "agents", "meta", "detectors", "scripts")
MAX_FUNCTION_LINES = 80
MAX_SCRIPT_LINES = 250

#: ``path::qualified name`` -> its length today.
LONG_FUNCTIONS: dict[str, int] = {}
#: ``path`` -> its length today.
LONG_SCRIPTS: dict[str, int] = {}


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            name = f"{prefix}{node.name}"
            yield name, node.end_lineno - node.lineno + 1
            yield from _functions(node, f"{name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def _sources():
    for folder in PACKAGE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")


def function_lengths() -> dict[str, int]:
    return {f"{rel}::{name}": n for rel, text in _sources() for name, n in _functions(ast.parse(text, rel))}


def test_functions_are_at_most_80_lines():
    lengths = function_lengths()
    assert len(lengths) > 500  # the walk found the package
    too_long = {key: n for key, n in lengths.items() if n > LONG_FUNCTIONS.get(key, MAX_FUNCTION_LINES)}
    assert not too_long, f"functions over {MAX_FUNCTION_LINES} lines (or longer than their allow-list entry); split them: {too_long}"


def test_command_modules_are_at_most_250_lines():
    lengths = {rel: len(text.splitlines()) for rel, text in _sources() if rel.startswith("scripts/")}
    assert "scripts/detect.py" in lengths
    too_long = {rel: n for rel, n in lengths.items() if n > LONG_SCRIPTS.get(rel, MAX_SCRIPT_LINES)}
    assert not too_long, f"command modules over {MAX_SCRIPT_LINES} lines: move library code out of them: {too_long}"


def test_the_measure_counts_what_it_should():
    text = "class A:\n    def f(self):\n" + "        x = 1\n" * 3 + "\n\ndef g():\n    def h():\n        pass\n    return h\n"
    assert dict(_functions(ast.parse(text))) == {"A.f": 4, "g": 4, "g.h": 2}
