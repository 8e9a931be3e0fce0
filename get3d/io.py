"""Atomic writes and content hashes shared by every stage: outputs are never half-written.

A write goes to a temp file in the target's folder, is flushed (and fsynced), then ``os.replace``d over the
target, and the folder is fsynced: after a crash the file is either the old or the new version.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _process_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: read once at import: os.umask can only be read by setting it, which would race with other threads
_UMASK = _process_umask()


def file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask): temp files of atomic writes are created 0600
    by ``mkstemp`` and are given this mode before they replace the target, so outputs stay readable to others."""
    return 0o666 & ~_UMASK


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically.

    ``fsync=False`` keeps the rename atomicity (no torn file after a process crash) but skips the disk flush:
    for derived files that are regenerated anyway (plot CSVs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        os.chmod(tmp, file_mode())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if fsync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)


def atomic_write_text(path, text: str, fsync: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def json_default(o):
    """JSON fallback for numpy/torch scalars and paths."""
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def atomic_write_json(path, obj: Any, *, indent: int | None = 2, sort_keys: bool = True, newline: bool = True,
                      allow_nan: bool = True, fsync: bool = True) -> None:
    """The one JSON writer of the library: numpy/torch scalars and paths are converted (:func:`json_default`)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, allow_nan=allow_nan, default=json_default)
    atomic_write_text(path, text + ("\n" if newline else ""), fsync=fsync)


def atomic_write_npz(path, fsync: bool = True, **arrays) -> None:
    """``np.savez`` of ``arrays``, written atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)


def atomic_write_image(path, image, format: str = "PNG", fsync: bool = True) -> None:
    """A PIL image (or a uint8 array) encoded as ``format``, written atomically."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=format)
    atomic_write_bytes(path, buf.getvalue(), fsync=fsync)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(paths: Iterable[Path], root: Path | None = None) -> str:
    """Hash of the contents (and relative names, when ``root`` is given) of several files, in sorted order."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        name = str(p.relative_to(root)) if root is not None else p.name
        h.update(name.encode() + b"\0" + file_sha256(p).encode() + b"\0")
    return h.hexdigest()
