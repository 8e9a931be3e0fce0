"""Fixtures of the export tests: one smoke-config generator snapshot per session."""
from __future__ import annotations

import pytest
from export_helpers import write_snapshot


@pytest.fixture(scope="session")
def snapshot(tmp_path_factory):
    return write_snapshot(tmp_path_factory.mktemp("model") / "generator.pt")
