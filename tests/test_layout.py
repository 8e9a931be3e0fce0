"""The test tree: pytest imports test modules by basename (no packages), so two folders must not share one."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_test_module_basenames_are_unique():
    names = Counter(p.name for p in TESTS.rglob("*.py") if p.name not in ("conftest.py", "__init__.py"))
    assert not [n for n, c in names.items() if c > 1], "rename one of each pair (collection fails otherwise)"
