"""What changed in the asset source since the last manifest: new, changed (content hash) and removed items.

The ``assets`` DVC stage tracks its code and params, not an external source folder (``assets.root``), so a
new file there is invisible to ``dvc status``.  A scheduled retraining scans the source into a scratch folder
(the same ``build_assets`` the stage runs) and compares item ids and content hashes (mesh + material +
textures) with ``data/assets/manifest.json``.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from get3d.assets.config import AssetsConfig
from get3d.assets.stage import build_assets


def manifest_hashes(manifest: dict) -> dict[str, str]:
    """``{item id: content sha256}`` of a manifest's valid items."""
    return {it["id"]: it.get("sha256", "") for it in manifest.get("items", [])}


def diff_manifests(old: dict | None, new: dict) -> dict:
    """Item ids added, changed (different content hash) and removed from ``old`` to ``new``."""
    before, after = manifest_hashes(old or {}), manifest_hashes(new)
    return {"added": sorted(set(after) - set(before)),
            "changed": sorted(i for i in set(after) & set(before) if after[i] != before[i]),
            "removed": sorted(set(before) - set(after)),
            "total": len(after)}


def scan_changes(cfg: AssetsConfig, manifest_path: str | Path, scratch_parent: str | Path) -> dict:
    """Scan the source as the stage would and diff it with ``manifest_path`` (all items are new if it is missing).

    The scan writes into a temporary folder under ``scratch_parent`` (removed afterwards); the workspace's
    ``data/assets`` is not touched.  Returns :func:`diff_manifests`' dict plus ``any`` (bool).
    """
    manifest_path = Path(manifest_path)
    old = None
    if manifest_path.is_file():
        try:
            old = json.loads(manifest_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{manifest_path}: not valid JSON ({exc}); rebuild it with `get3d assets`") from None
    Path(scratch_parent).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="scan-", dir=str(scratch_parent)))
    try:
        new = build_assets(cfg, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    diff = diff_manifests(old, new)
    diff["any"] = bool(diff["added"] or diff["changed"] or diff["removed"])
    return diff
