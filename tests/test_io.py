"""Atomic writes: whole files or nothing, with the permissions a plainly created file would get."""
from __future__ import annotations

import os
import stat

import pytest

from get3d import io


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    io.atomic_write_json(path, {"fid": 1.5})
    assert stat.S_IMODE(os.stat(path).st_mode) == io.file_mode()
    assert io.file_mode() & 0o044, "with a usual umask (022, 002) others can read the outputs"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "no temp file left"


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    io.atomic_write_text(path, "old")

    with pytest.raises(TypeError):
        io.atomic_write_bytes(path, object())  # type: ignore[arg-type]
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
