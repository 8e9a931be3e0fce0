"""Asset sources behind one interface: list items, validate each, compute its normalisation.

Every source yields :class:`AssetItem` s.  :func:`inspect_item` loads and checks one item and returns its
:class:`MeshStats` or raises :class:`AssetError` with a human-readable reason; the stage collects those
reasons instead of dying on the first bad file.
"""
from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from get3d.appearance import AppearanceError, mesh_appearance
from get3d.io import sha256_files

MESH_SUFFIXES = (".obj", ".glb", ".gltf", ".ply")


class AssetError(Exception):
    """One item cannot be used; the message is the reason shown in the failure report."""


@dataclass(frozen=True)
class AssetItem:
    id: str
    path: Path
    synset: str


@dataclass(frozen=True)
class MeshStats:
    num_vertices: int
    num_faces: int
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]
    files: tuple[Path, ...] = field(default=())
    sha256: str = ""
    appearance: str = "none"  # get3d.appearance.APPEARANCES

    @property
    def extent(self) -> float:
        return float(max(b - a for a, b in zip(self.bbox_min, self.bbox_max)))

    @property
    def center(self) -> np.ndarray:
        return (np.asarray(self.bbox_min) + np.asarray(self.bbox_max)) / 2.0


def _safe_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "item"


# ----------------------------------------------------------------------------------------------- listing

def list_shapenet_v1(root: Path, synset: str) -> list[AssetItem]:
    base = Path(root) / synset
    if not base.is_dir():
        raise FileNotFoundError(f"ShapeNetCore v1: no synset folder {base} (expected <root>/<synset>/<id>/model.obj)")
    return [AssetItem(d.name, d / "model.obj", synset) for d in sorted(base.iterdir()) if d.is_dir()]


def list_shapenet_v2(root: Path, synset: str) -> list[AssetItem]:
    base = Path(root) / synset
    if not base.is_dir():
        raise FileNotFoundError(
            f"ShapeNetCore v2: no synset folder {base} (expected <root>/<synset>/<id>/models/model_normalized.obj)")
    return [AssetItem(d.name, d / "models" / "model_normalized.obj", synset) for d in sorted(base.iterdir()) if d.is_dir()]


def list_renderpeople(root: Path, synset: str) -> list[AssetItem]:
    """One person per sub-folder holding an OBJ (or GLB) and its textures."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RenderPeople: folder {root} does not exist")
    items = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        meshes = sorted(p for p in d.rglob("*") if p.suffix.lower() in MESH_SUFFIXES)
        fbx = sorted(d.rglob("*.fbx")) + sorted(d.rglob("*.FBX"))
        path = meshes[0] if meshes else (fbx[0] if fbx else d / "<no mesh file>")
        items.append(AssetItem(_safe_id(d.name), path, synset))
    return items


def list_folder(root: Path, synset: str) -> list[AssetItem]:
    """Every OBJ/GLB/glTF/PLY file below ``root``; the id is its relative path without suffix."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"folder source: {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    return [AssetItem(_safe_id(str(p.relative_to(root).with_suffix(""))), p, synset) for p in files]


LISTERS = {"shapenet_v1": list_shapenet_v1, "shapenet_v2": list_shapenet_v2,
           "renderpeople": list_renderpeople, "folder": list_folder, "procedural": list_shapenet_v1}


# -------------------------------------------------------------------------------------------- validation

def _obj_dependencies(path: Path) -> list[Path]:
    """MTL files and texture maps an OBJ refers to; raises AssetError when one is missing."""
    deps: list[Path] = []
    text = path.read_text(errors="replace")
    for line in text.splitlines():
        if line.startswith("mtllib"):
            name = line.split(None, 1)[1].strip() if len(line.split(None, 1)) > 1 else ""
            mtl = path.parent / name
            if not name or not mtl.is_file():
                raise AssetError(f"missing material file {name or '<empty mtllib>'} (referenced by {path.name})")
            deps.append(mtl)
            for mline in mtl.read_text(errors="replace").splitlines():
                parts = mline.strip().split()
                if parts and parts[0].lower() in ("map_kd", "map_ka", "map_bump", "bump", "map_d") and len(parts) > 1:
                    tex = path.parent / parts[-1].replace("\\", "/")
                    if not tex.is_file():
                        raise AssetError(f"missing texture {parts[-1]} (referenced by {mtl.name})")
                    deps.append(tex)
    return deps


def _load_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = trimesh.load(path, force="mesh", process=False, skip_materials=True)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types for garbage input
        raise AssetError(f"not a readable mesh: {type(exc).__name__}: {exc}") from None
    verts = np.asarray(getattr(loaded, "vertices", np.zeros((0, 3))), dtype=np.float64)
    faces = np.asarray(getattr(loaded, "faces", np.zeros((0, 3))), dtype=np.int64)
    return verts, faces


def inspect_item(item: AssetItem, max_faces: int) -> MeshStats:
    """Load and check one item. Raises :class:`AssetError` naming what is wrong."""
    path = item.path
    if path.suffix.lower() == ".fbx":
        raise AssetError("FBX is not supported; convert to OBJ or GLB (e.g. with Blender) and point the source at it")
    if not path.is_file():
        raise AssetError(f"mesh file {path.name} not found")
    if path.stat().st_size == 0:
        raise AssetError("empty file (0 bytes)")
    if path.suffix.lower() == ".obj":
        head = path.read_bytes()[:65536]
        if b"\0" in head:
            raise AssetError("not a mesh: binary data in an OBJ file (corrupt or mis-named)")
    deps = _obj_dependencies(path) if path.suffix.lower() == ".obj" else []
    verts, faces = _load_arrays(path)
    if len(faces) == 0 or len(verts) == 0:
        raise AssetError("empty mesh: no faces")
    if len(faces) > max_faces:
        raise AssetError(f"too many faces: {len(faces):,} > max_faces {max_faces:,}")
    if not np.isfinite(verts).all():
        bad = int((~np.isfinite(verts)).any(axis=1).sum())
        raise AssetError(f"{bad} vertices have NaN/Inf coordinates")
    used = verts[np.unique(faces)]
    lo, hi = used.min(0), used.max(0)
    if float((hi - lo).max()) <= 0.0:
        raise AssetError("degenerate mesh: zero-size bounding box")
    try:
        appearance = mesh_appearance(path)
    except AppearanceError as exc:
        raise AssetError(str(exc)) from None
    files = (path, *deps)
    return MeshStats(len(verts), len(faces), tuple(map(float, lo)), tuple(map(float, hi)), files,
                     sha256_files(files, root=path.parent), appearance)


def normalization(stats: MeshStats, target_size: float, recenter: bool, max_offcenter: float) -> tuple[float, list[float]]:
    """``(scale, translation)`` so that ``v * scale + translation`` has largest side ``target_size``.

    GET3D does not re-centre (objects keep their pose relative to the origin); an object whose normalised
    centre lies farther than ``max_offcenter`` from the origin would leave the camera's view, so it is
    rejected unless ``recenter`` is set.
    """
    scale = target_size / stats.extent
    if recenter:
        return scale, [float(-c * scale) for c in stats.center]
    offset = float(np.linalg.norm(stats.center * scale))
    if offset > max_offcenter:
        raise AssetError(f"far off the origin: normalised bbox centre is {offset:.2f} from it "
                         f"(> max_offcenter {max_offcenter}); set assets.recenter: true to move it")
    return scale, [0.0, 0.0, 0.0]


def assign_splits(ids: list[str], fractions: tuple[float, float, float], seed: int) -> dict[str, str]:
    """Deterministic split by a seeded hash order; counts follow the fractions exactly (rounded)."""
    import hashlib

    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n = len(order)
    n_train = math.floor(fractions[0] * n + 0.5)
    n_val = math.floor(fractions[1] * n + 0.5)
    if n >= 3 and fractions[2] > 0 and n_train + n_val >= n:  # keep a non-empty test split when asked for one
        n_train = max(1, n - n_val - 1)
    out = {}
    for k, i in enumerate(order):
        out[i] = "train" if k < n_train else ("val" if k < n_train + n_val else "test")
    return out
