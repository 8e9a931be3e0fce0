"""FID against kimg across evaluations: ``fid_kimg.csv`` in the evaluate stage's output folder (a ``dvc plots``
source; DVC keeps it between runs, ``persist: true``).

Training has no periodic FID (it would cost more than the training steps at this scale), so the curve is made
of evaluated snapshots: each evaluation adds the row ``kimg,<metrics>`` of its snapshot.  Rows stay comparable:
when the evaluation's ``comparison_key`` (reference statistics + protocol) differs from the stored one, the
history restarts; rows at or beyond the new snapshot's kimg are dropped (a retrained or shorter run replaces
them), so a resumed run extends the curve and a fresh one draws its own.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from get3d.io import atomic_write_text

HISTORY_FILE = "fid_kimg.csv"
COLUMNS = ("kimg", "fid", "fid_3d", "comparison_key", "snapshot_sha256")


def read_history(path: Path) -> list[dict]:
    """Rows of an existing history (empty when missing or written with other columns)."""
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            return []
        return list(reader)


def update_history(path: Path, kimg, metrics: dict, comparison_key: str, snapshot_sha256: str | None) -> list[dict]:
    """Add this evaluation's row; returns the rows written.  An evaluation without a finite FID (FID not among
    the metrics) or without a kimg adds no row, but the file is still written (header only when new): it is a
    declared output of the stage."""
    fid = metrics.get("fid")
    rows = read_history(path)
    if kimg is not None and isinstance(fid, (int, float)) and math.isfinite(fid):
        rows = [r for r in rows if r["comparison_key"] == comparison_key and float(r["kimg"]) < float(kimg)]
        fid_3d = metrics.get("fid_3d")
        rows.append({"kimg": f"{float(kimg):.6f}", "fid": repr(float(fid)),
                     "fid_3d": repr(float(fid_3d)) if isinstance(fid_3d, (int, float)) and math.isfinite(fid_3d)
                     else "",
                     "comparison_key": comparison_key, "snapshot_sha256": snapshot_sha256 or ""})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(Path(path), buf.getvalue())
    return rows
