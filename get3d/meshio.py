"""Mesh file I/O: the one place that writes and reads OBJ (+ MTL + PNG) and GLB files.

Conventions: +y up, right-handed, units as the model was trained (the world frame of :mod:`get3d.cameras`,
which is also glTF's and ShapeNet OBJ's frame, so no axis change is applied).  Texture coordinates are stored
per vertex in the OBJ convention (``v = 0`` is the bottom row of the image); the GLB writer flips ``v`` for
glTF, whose ``v = 0`` is the top row.  Writers are deterministic (same arrays -> same bytes) and atomic:
a textured mesh's files are staged and renamed into place together (:class:`StagedFiles`), so an error
leaves none of them behind.
"""
from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np

from get3d.io import file_mode


class MeshIOError(RuntimeError):
    """A mesh file cannot be read or written; the message names the file and the reason."""


# ------------------------------------------------------------------------------------------------ staging

class StagedFiles:
    """Write several files, then rename them into place together (``with`` block); on an exception none of
    them (and no temp file) is left behind.  Files already renamed by an earlier, completed block stay."""

    def __init__(self, fsync: bool = False):
        self.fsync = fsync
        self._pending: list[tuple[Path, Path]] = []

    def write(self, path: str | os.PathLike, data: bytes) -> Path:
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
        except OSError as exc:
            raise MeshIOError(f"{path}: cannot write ({exc.strerror or exc})") from None
        self._pending.append((Path(tmp), path))
        os.chmod(tmp, file_mode())  # mkstemp creates 0600; exported files are for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())
        return path

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            for tmp, final in self._pending:
                os.replace(tmp, final)
        else:
            for tmp, _ in self._pending:
                tmp.unlink(missing_ok=True)
        self._pending = []


# ------------------------------------------------------------------------------------------------ OBJ

def obj_text(verts: np.ndarray, faces: np.ndarray, uvs: np.ndarray | None = None,
             uv_faces: np.ndarray | None = None, *, mtllib: str | None = None, material: str | None = None,
             comments: Sequence[str] = (), material_after_vertices: bool = False) -> str:
    """Wavefront OBJ text (6 decimals, 1-based indices).

    ``uvs`` [T, 2] with ``uv_faces`` [F, 3] (default: ``faces``, i.e. per-vertex UVs) adds ``vt`` lines and
    ``f a/ta ...`` faces.  ``usemtl`` follows ``mtllib`` unless ``material_after_vertices``."""
    v = np.asarray(verts, np.float64).reshape(-1, 3)
    f = np.asarray(faces, np.int64).reshape(-1, 3)
    lines = [f"# {c}" for c in comments]
    if mtllib:
        lines.append(f"mtllib {mtllib}")
    if material and not material_after_vertices:
        lines.append(f"usemtl {material}")
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    if uvs is not None:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in np.asarray(uvs, np.float64).reshape(-1, 2)]
    if material and material_after_vertices:
        lines.append(f"usemtl {material}")
    if uvs is None:
        lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in f]
    else:
        t = f if uv_faces is None else np.asarray(uv_faces, np.int64).reshape(-1, 3)
        lines += [f"f {a + 1}/{ta + 1} {b + 1}/{tb + 1} {c + 1}/{tc + 1}"
                  for (a, b, c), (ta, tb, tc) in zip(f, t)]
    return "\n".join(lines) + "\n"


def write_obj(path: str | os.PathLike, verts: np.ndarray, faces: np.ndarray, fsync: bool = False, **kw) -> Path:
    """Untextured (or, with ``uvs=``, UV-mapped) OBJ written atomically; ``kw`` as :func:`obj_text`."""
    from get3d.io import atomic_write_text

    atomic_write_text(path, obj_text(verts, faces, **kw), fsync=fsync)
    return Path(path)


def mtl_text(material: str, texture: str | None, *, compact: bool = False) -> str:
    """One diffuse material; ``texture`` (relative path) as ``map_Kd``.  ``compact`` writes integers."""
    if compact:
        body = f"newmtl {material}\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nd 1\nillum 1\n"
    else:
        body = (f"newmtl {material}\nKa 0.000000 0.000000 0.000000\nKd 1.000000 1.000000 1.000000\n"
                "Ks 0.000000 0.000000 0.000000\nd 1.000000\nillum 1\n")
    return body + (f"map_Kd {texture}\n" if texture else "")


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 ``[H, W, 3|4]`` → PNG bytes (deterministic: no timestamp or text chunks)."""
    from PIL import Image

    img = np.asarray(image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise MeshIOError(f"texture must be uint8 [H, W, 3|4], got {img.dtype} {img.shape}")
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


@dataclass
class TexturedMesh:
    """A mesh with per-vertex UVs (OBJ convention: ``v = 0`` at the image bottom) and an RGB texture."""

    verts: np.ndarray      # [V, 3] float32
    faces: np.ndarray      # [F, 3] int64
    uvs: np.ndarray        # [V, 2] float32 in [0, 1]
    texture: np.ndarray    # [H, W, 3] uint8, row 0 = top (v = 1)

    def check(self, name: str = "mesh") -> TexturedMesh:
        v, f, t = np.asarray(self.verts), np.asarray(self.faces), np.asarray(self.uvs)
        if v.ndim != 2 or v.shape[1] != 3 or not np.isfinite(v).all():
            raise MeshIOError(f"{name}: vertices must be finite [V, 3], got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and (f.min() < 0 or f.max() >= len(v))):
            raise MeshIOError(f"{name}: faces must be [F, 3] indices into {len(v)} vertices")
        if t.shape != (len(v), 2) or not np.isfinite(t).all():
            raise MeshIOError(f"{name}: uvs must be finite [V={len(v)}, 2], got {t.shape}")
        return self


def write_textured_obj(staged: StagedFiles, obj_path: str | os.PathLike, mesh: TexturedMesh,
                       material: str = "material_0", comments: Sequence[str] = (), png: bytes | None = None) -> dict:
    """``<stem>.obj`` + ``<stem>.mtl`` + ``<stem>.png`` next to each other (relative references); ``png``: the
    texture already encoded (:func:`png_bytes`)."""
    obj_path = Path(obj_path)
    mesh.check(str(obj_path))
    mtl = obj_path.with_suffix(".mtl")
    png_path = obj_path.with_suffix(".png")
    staged.write(png_path, png if png is not None else png_bytes(mesh.texture))
    staged.write(mtl, mtl_text(material, png_path.name).encode())
    staged.write(obj_path, obj_text(mesh.verts, mesh.faces, mesh.uvs, mtllib=mtl.name, material=material,
                                    comments=comments).encode())
    return {"obj": obj_path, "mtl": mtl, "png": png_path}


def read_obj(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Vertices [V, 3] and triangle faces [F, 3] of an OBJ (polygons fanned; texture/normal indices ignored)."""
    path = Path(path)
    verts, faces = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MeshIOError(f"{path}: cannot read OBJ ({exc})") from None
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            if parts[0] == "v":
                verts.append([float(x) for x in parts[1:4]])
            elif parts[0] == "f":
                idx = [int(p.split("/")[0]) for p in parts[1:]]
                idx = [i - 1 if i > 0 else len(verts) + i for i in idx]
                faces += [[idx[0], idx[k], idx[k + 1]] for k in range(1, len(idx) - 1)]
        except (ValueError, IndexError):
            raise MeshIOError(f"{path}:{n}: malformed line {line!r}") from None
    return np.asarray(verts, np.float32).reshape(-1, 3), np.asarray(faces, np.int64).reshape(-1, 3)


# ------------------------------------------------------------------------------------------------ GLB

_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963


def _pad4(b: bytes, fill: bytes) -> bytes:
    return b + fill * ((4 - len(b) % 4) % 4)


def vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (unit length; +y for isolated vertices)."""
    v = np.asarray(verts, np.float64)
    f = np.asarray(faces, np.int64)
    n = np.zeros_like(v)
    if len(f):
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        for k in range(3):
            np.add.at(n, f[:, k], fn)
    norm = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(norm > 1e-20, n / np.maximum(norm, 1e-20), np.array([0.0, 1.0, 0.0]))
    return n.astype(np.float32)


def glb_bytes(mesh: TexturedMesh, name: str = "mesh", generator: str = "get3d", png: bytes | None = None) -> bytes:
    """A single-file glTF 2.0 binary: one mesh, positions + normals + UVs, the texture embedded as PNG, one
    metallic-roughness material (metallic 0, roughness 1, base colour = texture), +y up, metres as trained."""
    mesh.check(name)
    pos = np.ascontiguousarray(mesh.verts, np.float32)
    nrm = vertex_normals(pos, mesh.faces)
    uv = np.ascontiguousarray(mesh.uvs, np.float32).copy()
    uv[:, 1] = 1.0 - uv[:, 1]  # glTF: v = 0 is the top of the image
    idx = np.ascontiguousarray(mesh.faces, np.uint32).reshape(-1)
    png = png if png is not None else png_bytes(mesh.texture)

    blobs, views, accessors = [], [], []
    offset = 0

    def add_view(data: bytes, target: int | None) -> int:
        nonlocal offset
        data = _pad4(data, b"\0")
        view = {"buffer": 0, "byteOffset": offset, "byteLength": len(data)}
        if target is not None:
            view["target"] = target
        views.append(view)
        blobs.append(data)
        offset += len(data)
        return len(views) - 1

    def add_accessor(arr: np.ndarray, ctype: int, kind: str, target: int, minmax: bool = False) -> int:
        acc = {"bufferView": add_view(arr.tobytes(), target), "componentType": ctype, "count": int(len(arr) if
               arr.ndim > 1 else arr.size), "type": kind}
        if minmax:
            acc["min"] = [float(x) for x in arr.min(0)] if len(arr) else [0.0, 0.0, 0.0]
            acc["max"] = [float(x) for x in arr.max(0)] if len(arr) else [0.0, 0.0, 0.0]
        accessors.append(acc)
        return len(accessors) - 1

    a_pos = add_accessor(pos, _FLOAT, "VEC3", _ARRAY_BUFFER, minmax=True)
    a_nrm = add_accessor(nrm, _FLOAT, "VEC3", _ARRAY_BUFFER)
    a_uv = add_accessor(uv, _FLOAT, "VEC2", _ARRAY_BUFFER)
    a_idx = add_accessor(idx, _UINT32, "SCALAR", _ELEMENT_ARRAY_BUFFER)
    v_img = add_view(png, None)
    gltf = {
        "asset": {"version": "2.0", "generator": generator},
        "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": name}],
        "meshes": [{"name": name, "primitives": [{
            "attributes": {"POSITION": a_pos, "NORMAL": a_nrm, "TEXCOORD_0": a_uv},
            "indices": a_idx, "material": 0, "mode": 4}]}],
        "materials": [{"name": f"{name}_material", "doubleSided": True, "pbrMetallicRoughness": {
            "baseColorTexture": {"index": 0, "texCoord": 0}, "metallicFactor": 0.0, "roughnessFactor": 1.0}}],
        "textures": [{"source": 0, "sampler": 0}],
        "samplers": [{"magFilter": 9729, "minFilter": 9987, "wrapS": 33071, "wrapT": 33071}],
        "images": [{"bufferView": v_img, "mimeType": "image/png"}],
        "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": offset}],
    }
    js = _pad4(json.dumps(gltf, separators=(",", ":"), sort_keys=True).encode(), b" ")
    binary = b"".join(blobs)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return (struct.pack("<III", _GLB_MAGIC, 2, total) + struct.pack("<II", len(js), _JSON_CHUNK) + js
            + struct.pack("<II", len(binary), _BIN_CHUNK) + binary)


def write_glb(staged: StagedFiles, path: str | os.PathLike, mesh: TexturedMesh, name: str = "mesh",
              png: bytes | None = None) -> Path:
    return staged.write(path, glb_bytes(mesh, name, png=png))


def read_glb_json(path: str | os.PathLike) -> dict:
    """The JSON chunk of a GLB file (checks the header); raises :class:`MeshIOError` naming the file."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 20:
        raise MeshIOError(f"{path}: too short for a GLB file ({len(data)} bytes)")
    magic, version, total = struct.unpack_from("<III", data, 0)
    if magic != _GLB_MAGIC or version != 2 or total != len(data):
        raise MeshIOError(f"{path}: not a glTF 2.0 binary (magic {magic:#x}, version {version}, length {total} "
                          f"vs {len(data)})")
    n, kind = struct.unpack_from("<II", data, 12)
    if kind != _JSON_CHUNK:
        raise MeshIOError(f"{path}: first chunk is not JSON")
    return json.loads(data[20:20 + n])


def load_textured(path: str | os.PathLike) -> TexturedMesh:
    """Read an exported OBJ (with its MTL + PNG) or GLB back through trimesh → :class:`TexturedMesh` (UVs in
    the OBJ convention).  Raises :class:`MeshIOError` when the file has no texture or UVs."""
    import trimesh

    path = Path(path)
    try:
        loaded = trimesh.load(str(path), process=False, maintain_order=True)
    except Exception as exc:  # noqa: BLE001 - trimesh raises many types
        raise MeshIOError(f"{path}: cannot load ({exc})") from None
    if isinstance(loaded, trimesh.Scene):
        geoms = list(loaded.dump()) if hasattr(loaded, "dump") else list(loaded.geometry.values())
        if len(geoms) != 1:
            raise MeshIOError(f"{path}: expected one mesh, found {len(geoms)}")
        loaded = geoms[0]
    vis = loaded.visual
    uv = getattr(vis, "uv", None)
    mat = getattr(vis, "material", None)
    img = getattr(mat, "baseColorTexture", None) or getattr(mat, "image", None)
    if uv is None or img is None:
        raise MeshIOError(f"{path}: no UVs or no texture image after loading")
    tex = np.asarray(img.convert("RGB"), np.uint8)
    return TexturedMesh(np.asarray(loaded.vertices, np.float32), np.asarray(loaded.faces, np.int64),
                        np.asarray(uv, np.float32), tex)


def sample_texture(texture: np.ndarray, uvs: np.ndarray) -> np.ndarray:
    """Bilinear lookup of ``texture`` [H, W, C] (row 0 = top) at OBJ-convention ``uvs`` [N, 2] → float [N, C]
    in texture units (texel centres at (i + 0.5) / size, clamped at the border)."""
    tex = np.asarray(texture, np.float64)
    h, w = tex.shape[:2]
    x = np.clip(np.asarray(uvs[:, 0], np.float64) * w - 0.5, 0, w - 1)
    y = np.clip((1.0 - np.asarray(uvs[:, 1], np.float64)) * h - 0.5, 0, h - 1)
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    return ((tex[y0, x0] * (1 - fx) + tex[y0, x1] * fx) * (1 - fy)
            + (tex[y1, x0] * (1 - fx) + tex[y1, x1] * fx) * fy)
