"""The scheduler's modules stay small enough to read: none over :data:`MAX_LINES` lines,
each opening with a docstring that says what it owns (issue 14, "the split").

Read as text and ``ast``: nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "otpkit" / "scheduler"
#: The most lines a module of the scheduler has.
MAX_LINES = 500

MODULES = sorted(PACKAGE.glob("*.py"))


def test_the_package_is_found() -> None:
    assert len(MODULES) > 20, f"scheduler modules not found under {PACKAGE}"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_a_module_is_at_most_500_lines(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.name}: {lines} lines, split it (at most {MAX_LINES})"


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_a_module_opens_with_a_docstring(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc is not None and len(doc.split()) >= 8, f"{path.name}: no docstring of what it owns"
