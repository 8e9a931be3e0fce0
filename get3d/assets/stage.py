"""The ``assets`` stage: materialise/list a source, validate every item, write the manifest."""
from __future__ import annotations

import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from get3d.appearance import PLANS, render_plan
from get3d.assets import procedural
from get3d.assets.config import AssetsConfig
from get3d.assets.sources import LISTERS, AssetError, assign_splits, inspect_item, normalization
from get3d.io import atomic_write_bytes, atomic_write_json
from get3d.schema import to_dict

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1


class StageFailed(RuntimeError):
    """Too many items failed; the report names each one."""


def _mesh_ref(path: Path, out_dir: Path) -> str:
    try:
        return str(path.resolve().relative_to(out_dir.resolve()))
    except ValueError:
        return str(path.resolve())


def _prune_stale_models(out_dir: Path, synset: str, keep: set[str]) -> None:
    base = out_dir / synset
    if base.is_dir():
        for d in base.iterdir():
            if d.is_dir() and d.name not in keep:
                shutil.rmtree(d)


def _list_items(cfg: AssetsConfig, out_dir: Path):
    if cfg.source == "procedural":
        ids = {procedural.model_id(cfg.seed, i) for i in range(cfg.count)}
        _prune_stale_models(out_dir, cfg.synset, ids)
        procedural.write_category(out_dir, cfg.synset, cfg.count, cfg.seed, cfg.texture_size)
        return LISTERS["procedural"](out_dir, cfg.synset)
    items = LISTERS[cfg.source](Path(cfg.root), cfg.synset)
    return items[: cfg.limit] if cfg.limit else items


def build_assets(cfg: AssetsConfig, out_dir: Path | str, untextured: str = "allow") -> dict:
    """Run the stage; returns the manifest. Raises :class:`StageFailed` above the failure fraction.

    ``untextured`` is ``render.untextured``: each item records its ``appearance`` and what the render stage
    will do with it (``render_as``, :func:`get3d.appearance.render_plan`: textured, vertex_colors,
    material_colors, neutral_material or refused), so a refusal is known before any rendering.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    items = _list_items(cfg, out_dir)
    if not items:
        raise StageFailed(f"assets: source {cfg.source!r} at {cfg.root or out_dir} lists no items")
    good, failures = [], []
    for item in items:
        try:
            stats = inspect_item(item, cfg.max_faces)
            scale, translation = normalization(stats, cfg.target_size, cfg.recenter, cfg.max_offcenter)
        except AssetError as exc:
            failures.append({"id": item.id, "path": str(item.path), "reason": str(exc)})
            log.warning("assets: skipping %s (%s): %s", item.id, item.path, exc)
            continue
        good.append({"id": item.id, "synset": item.synset, "mesh": _mesh_ref(item.path, out_dir),
                     "scale": scale, "translation": translation, "sha256": stats.sha256,
                     "num_faces": stats.num_faces, "num_vertices": stats.num_vertices,
                     "appearance": stats.appearance, "render_as": render_plan(stats.appearance, untextured)})
    splits = assign_splits([g["id"] for g in good], cfg.split, cfg.seed)
    for g in good:
        g["split"] = splits[g["id"]]
    manifest = {"version": MANIFEST_VERSION, "source": cfg.source, "category": cfg.category, "synset": cfg.synset,
                "config": to_dict(cfg), "render_untextured": untextured, "counts": _counts(good, failures),
                "items": good, "failures": failures}
    atomic_write_json(out_dir / "failures.json", failures)
    fraction = len(failures) / len(items)
    if fraction > cfg.max_failure_fraction:
        reasons = "; ".join(f"{f['id']}: {f['reason']}" for f in failures[:5])
        raise StageFailed(f"assets: {len(failures)}/{len(items)} items failed ({fraction:.0%} > "
                          f"max_failure_fraction {cfg.max_failure_fraction:.0%}); see {out_dir / 'failures.json'}. "
                          f"First: {reasons}")
    for split in ("train", "val", "test"):
        ids = sorted(g["id"] for g in good if g["split"] == split)
        atomic_write_bytes(out_dir / "splits" / f"{split}.txt", ("".join(i + "\n" for i in ids)).encode())
    atomic_write_json(out_dir / "manifest.json", manifest)
    return manifest


def _counts(good: list, failures: list) -> dict:
    c = {"ok": len(good), "failed": len(failures)}
    for s in ("train", "val", "test"):
        c[s] = sum(1 for g in good if g.get("split") == s)
    c["render_as"] = {p: n for p in PLANS if (n := sum(1 for g in good if g["render_as"] == p))}
    return c


def load_manifest(path: Path | str) -> dict:
    """Read a manifest written by :func:`build_assets`, resolving mesh paths; clear errors for bad files."""
    import json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"asset manifest {path} not found; run the assets stage first (get3d assets)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"asset manifest {path} is not valid JSON: {exc}") from None
    if manifest.get("version") != MANIFEST_VERSION or "items" not in manifest:
        raise ValueError(f"asset manifest {path}: unsupported version {manifest.get('version')!r}")
    for item in manifest["items"]:
        item["mesh_path"] = str(Path(item["mesh"]) if os.path.isabs(item["mesh"]) else path.parent / item["mesh"])
    return manifest


__all__ = ["StageFailed", "asdict", "build_assets", "load_manifest"]
