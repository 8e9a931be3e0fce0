"""Small textured fixture meshes (ShapeNet-v1-like OBJ + MTL + texture) and manifests, for tests and benches."""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from get3d import meshio


def _texture(path: Path, seed: int, size: int = 64) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 255, size=(4, 3))
    yy, xx = np.mgrid[0:size, 0:size]
    idx = ((xx // (size // 4)) % 2) * 2 + ((yy // (size // 4)) % 2)
    Image.fromarray(colors[idx].astype(np.uint8)).save(path)


def box_geometry(size=(1.0, 1.0, 1.0)):
    """24 vertices (4 per face) with per-face UVs, and 12 triangles (counter-clockwise outside)."""
    sx, sy, sz = (s / 2.0 for s in size)
    verts, uvs, faces = [], [], []
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = np.zeros(3)
            n[axis] = sign
            u = np.zeros(3)
            u[(axis + 1) % 3] = 1.0
            v = np.cross(n, u)
            base = len(verts)
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                verts.append(n + cu * u + cv * v)
                uvs.append(((cu + 1) / 2, (cv + 1) / 2))
            faces += [(base, base + 1, base + 2), (base, base + 2, base + 3)]
    verts = np.array(verts) * np.array([sx, sy, sz])
    return verts, np.array(uvs), np.array(faces)


def torus_geometry(r_major=0.5, r_minor=0.2, n=24, m=12):
    i, j = np.meshgrid(np.arange(n + 1), np.arange(m + 1), indexing="ij")
    a, b = 2 * math.pi * i / n, 2 * math.pi * j / m
    x = (r_major + r_minor * np.cos(b)) * np.cos(a)
    z = (r_major + r_minor * np.cos(b)) * np.sin(a)
    y = r_minor * np.sin(b)
    verts = np.stack([x, y, z], -1).reshape(-1, 3)
    uvs = np.stack([i / n, j / m], -1).reshape(-1, 2)
    faces = []
    for ii in range(n):
        for jj in range(m):
            p0, p1 = ii * (m + 1) + jj, (ii + 1) * (m + 1) + jj
            faces += [(p0, p0 + 1, p1 + 1), (p0, p1 + 1, p1)]
    return verts, uvs, np.array(faces)


def write_textured_obj(folder: Path, verts, uvs, faces, seed: int = 0, texture: bool = True) -> Path:
    """ShapeNet-v1-like ``model.obj`` + ``model.mtl`` + ``images/texture0.png``; returns the OBJ path."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if texture:
        _texture(folder / "images" / "texture0.png", seed)
    (folder / "model.mtl").write_text(meshio.mtl_text("mat0", "images/texture0.png", compact=True))
    obj = folder / "model.obj"
    obj.write_text(meshio.obj_text(verts, faces, uvs, mtllib="model.mtl", material="mat0",
                                   material_after_vertices=True))
    return obj


def sha256_files(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(Path(p).read_bytes())
    return h.hexdigest()


def make_fixture_set(root: Path, n: int = 3, synset: str = "03001627", extra_items: list | None = None,
                     split_cycle=("train", "train", "val", "test"), scale: float = 0.6,
                     offsets: dict | None = None) -> Path:
    """``n`` textured meshes (boxes and tori of varied shapes) and a manifest; returns the manifest path.

    ``offsets`` maps an item index to a translation (to test off-centre placement).
    """
    root = Path(root)
    items = []
    for k in range(n):
        if k % 2 == 0:
            geo = box_geometry((0.5 + 0.1 * (k % 3), 0.4 + 0.15 * (k % 2), 0.3 + 0.05 * k))
        else:
            geo = torus_geometry(0.4 + 0.03 * k, 0.12)
        model_id = f"obj{k:03d}"
        obj = write_textured_obj(root / synset / model_id, *geo, seed=k)
        items.append({"id": model_id, "synset": synset, "mesh": str(obj.relative_to(root)),
                      "scale": scale, "translation": list((offsets or {}).get(k, (0.0, 0.0, 0.0))), "split": split_cycle[k % len(split_cycle)],
                      "sha256": sha256_files(obj, obj.with_name("model.mtl"))})
    items += [dict(it) for it in (extra_items or [])]
    manifest = {"version": 1, "source": "procedural", "category": "chair", "synset": synset,
                "items": items, "failures": []}
    path = root / "manifest.json"
    path.write_text(json.dumps(manifest, indent=1))
    return path


#: Small, fast render settings used by tests: 64², 4 views, 4 samples; elevations span 0-60 degrees.
SMALL_RENDER = {"resolution": 64, "views_per_object": 4, "samples": 4, "elevation_min_deg": 0.0,
                "elevation_max_deg": 60.0, "seed": 7}
#: One object off-centre: catches mirrored / swapped axes in the projection test.
TEST_OFFSETS = {3: (0.12, 0.05, -0.08)}


def small_cfg(**kw):
    from .config import RenderConfig

    return RenderConfig(**{**SMALL_RENDER, **kw})


def make_test_assets(root: Path, n: int = 4, **kw) -> Path:
    return make_fixture_set(root, n=n, offsets=TEST_OFFSETS, **kw)


def render_python_or_none() -> Path | None:
    """The render interpreter if present (GET3D_RENDER_PYTHON or <repo>/.venv-render/bin/python)."""
    import os
    import shutil

    repo = Path(__file__).resolve().parents[2]
    p = Path(os.environ.get("GET3D_RENDER_PYTHON", str(repo / ".venv-render" / "bin" / "python")))
    return p if (p.exists() or shutil.which(str(p))) else None


def synthetic_dataset(root: Path, n_objects: int = 4, views: int = 3, resolution: int = 32, seed: int = 0) -> Path:
    """A render-stage HDF5 (same writer, same layout) filled with synthetic discs instead of Blender renders.

    For testing readers without the render environment.  Returns the HDF5 path.
    """
    from .stage import Manifest, ObjectSpec, assemble, object_cameras

    root = Path(root)
    (root / "objects").mkdir(parents=True, exist_ok=True)
    cfg = small_cfg(resolution=resolution, views_per_object=views, seed=seed)
    rng = np.random.default_rng(seed)
    records, done = [], {}
    yy, xx = np.mgrid[0:resolution, 0:resolution] + 0.5
    for k in range(n_objects):
        oid = f"syn{k:03d}"
        item = ObjectSpec(id=oid, synset="03001627", mesh=root / "none.obj", mesh_rel="none.obj", scale=1.0,
                          translation=(0.0, 0.0, 0.0), split=("train", "train", "val", "test")[k % 4], sha256="")
        rgba = rng.integers(0, 256, size=(views, resolution, resolution, 4), dtype=np.uint8)
        for v in range(views):
            cx, cy, r = rng.uniform(0.3, 0.7) * resolution, rng.uniform(0.3, 0.7) * resolution, resolution / 4
            inside = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            rgba[v, ..., 3] = np.where(inside, 255, 0)
        npz = root / "objects" / f"{oid}.npz"
        np.savez(npz, rgba=rgba, key=np.array("synthetic"))
        done[oid] = npz
        records.append({"item": item, "cams": object_cameras(cfg, oid), "key": "synthetic", "stem": oid})
    man = Manifest(path=root / "manifest.json", source="synthetic", category="chair", synset="03001627",
                   items=[r["item"] for r in records])
    out = root / "synthetic.h5"
    assemble(out, man, records, done, {}, records, cfg)
    return out
