"""Seeded procedural chair-like category written in exact ShapeNetCore v1 layout.

Each model is a union of textured parts chosen so the category has the topology GET3D is meant for:
open frames (backs made of rails and slats), through-holes (ring backs, sled bases), handles (arched
arm rests) and thin parts (legs, spindles).  Output per model::

    <out>/<synset>/<model_id>/model.obj      (+y up, UVs, one material)
    <out>/<synset>/<model_id>/model.mtl      (map_Kd images/texture0.png)
    <out>/<synset>/<model_id>/images/texture0.png

Everything is derived from ``(seed, index)`` with numpy's PCG64 and written with fixed number formats, so
the same seed gives byte-identical files.
"""
from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from get3d import meshio
from get3d.io import atomic_write_bytes


@dataclass
class PartMesh:
    """Triangle soup with per-corner UVs, accumulated part by part."""

    verts: list = field(default_factory=list)
    uvs: list = field(default_factory=list)
    faces: list = field(default_factory=list)  # (v0, v1, v2, t0, t1, t2)

    def add(self, v: np.ndarray, uv: np.ndarray, f: np.ndarray, ft: np.ndarray) -> None:
        vo, to = sum(len(x) for x in self.verts), sum(len(x) for x in self.uvs)
        self.verts.append(v)
        self.uvs.append(uv)
        self.faces.append(np.concatenate([f + vo, ft + to], axis=1))

    def arrays(self):
        return np.concatenate(self.verts), np.concatenate(self.uvs), np.concatenate(self.faces)


def _box(mesh: PartMesh, center, size) -> None:
    """Axis-aligned box, 4 UV corners per face (texture tiles over each face)."""
    c, h = np.asarray(center, float), np.asarray(size, float) / 2.0
    corners = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], float) * h + c
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)
    for q in quads:
        v = corners[list(q)]
        mesh.add(v, uv * np.array([max(size) * 2, max(size) * 2]), np.array([[0, 1, 2], [0, 2, 3]]),
                 np.array([[0, 1, 2], [0, 2, 3]]))


def _tube(mesh: PartMesh, path: np.ndarray, radius: float, sides: int = 8, closed: bool = False) -> None:
    """Tube of circular cross-section swept along a polyline (a ring when ``closed``)."""
    n = len(path)
    tangents = np.gradient(path, axis=0) if not closed else np.roll(path, -1, 0) - np.roll(path, 1, 0)
    tangents /= np.linalg.norm(tangents, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tangents[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    ang = np.linspace(0, 2 * math.pi, sides, endpoint=False)
    rings = []
    nrm = np.cross(tangents[0], ref)
    for i in range(n):  # parallel transport of the frame: no flips where the path bends
        nrm = nrm - np.dot(nrm, tangents[i]) * tangents[i]
        nrm /= np.linalg.norm(nrm)
        bin_ = np.cross(tangents[i], nrm)
        rings.append(path[i] + radius * (np.cos(ang)[:, None] * nrm + np.sin(ang)[:, None] * bin_))
    v = np.concatenate(rings)
    segs = n if closed else n - 1
    uv = np.array([[i / max(segs, 1) * 4.0, j / sides] for i in range(n) for j in range(sides)])
    faces = []
    for i in range(segs):
        i2 = (i + 1) % n
        for j in range(sides):
            j2 = (j + 1) % sides
            a, b, c, d = i * sides + j, i * sides + j2, i2 * sides + j2, i2 * sides + j
            faces += [[a, b, c], [a, c, d]]
    f = np.array(faces)
    mesh.add(v, uv, f, f)
    if not closed:  # caps
        for ring_start, flip in ((0, True), ((n - 1) * sides, False)):
            centre = path[0] if flip else path[-1]
            cv = np.concatenate([v[ring_start:ring_start + sides], centre[None]])
            cf = np.array([[j, (j + 1) % sides, sides] for j in range(sides)])
            if flip:
                cf = cf[:, ::-1]
            cuv = np.concatenate([np.stack([0.5 + 0.5 * np.cos(ang), 0.5 + 0.5 * np.sin(ang)], 1), [[0.5, 0.5]]])
            mesh.add(cv, cuv, cf, cf)


def _rod(mesh: PartMesh, a, b, radius: float, sides: int = 8) -> None:
    _tube(mesh, np.linspace(np.asarray(a, float), np.asarray(b, float), 2), radius, sides)


def _arc(center, radius: float, start: float, stop: float, plane: str, n: int = 16) -> np.ndarray:
    t = np.linspace(start, stop, n)
    c = np.asarray(center, float)
    if plane == "xy":
        return c + np.stack([radius * np.cos(t), radius * np.sin(t), np.zeros_like(t)], 1)
    if plane == "zy":
        return c + np.stack([np.zeros_like(t), radius * np.sin(t), radius * np.cos(t)], 1)
    raise ValueError(plane)


def _texture(rng: np.random.Generator, size: int) -> bytes:
    """Seeded wood/fabric-like texture: base colour, stripes and a checker weave."""
    base = rng.uniform(0.15, 0.9, size=3)
    accent = np.clip(base * rng.uniform(0.4, 0.8) + rng.uniform(-0.1, 0.1, 3), 0, 1)
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq, phase = rng.uniform(4, 16), rng.uniform(0, 2 * math.pi)
    stripes = 0.5 + 0.5 * np.sin(2 * math.pi * freq * (xx + 0.15 * np.sin(2 * math.pi * 3 * yy)) + phase)
    checker = ((np.floor(xx * 8) + np.floor(yy * 8)) % 2) * rng.uniform(0.0, 0.3)
    w = np.clip(stripes * 0.7 + checker, 0, 1)[..., None]
    img = (base * (1 - w) + accent * w) * 255.0
    buf = io.BytesIO()
    Image.fromarray(np.round(img).astype(np.uint8), "RGB").save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _legs(mesh, rng, seat_y, hw, hd, style):
    r = rng.uniform(0.015, 0.03)
    if style == "four":
        inset = rng.uniform(0.02, 0.06)
        for sx in (-1, 1):
            for sz in (-1, 1):
                _rod(mesh, (sx * (hw - inset), 0.0, sz * (hd - inset)), (sx * (hw - inset), seat_y, sz * (hd - inset)), r)
        if rng.random() < 0.5:  # stretchers between legs: a closed frame below the seat
            y = seat_y * rng.uniform(0.2, 0.4)
            pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
            for (ax, az), (bx, bz) in zip(pts, pts[1:] + pts[:1]):
                _rod(mesh, (ax * (hw - inset), y, az * (hd - inset)), (bx * (hw - inset), y, bz * (hd - inset)), r * 0.6)
    elif style == "pedestal":
        _rod(mesh, (0, 0.05, 0), (0, seat_y, 0), r * 1.8)
        for k in range(5):
            a = 2 * math.pi * k / 5 + rng.uniform(-0.1, 0.1)
            _rod(mesh, (0, 0.05, 0), (math.cos(a) * hw * 1.1, 0.02, math.sin(a) * hw * 1.1), r)
    else:  # sled: two closed loops, each a through-hole
        for sx in (-1, 1):
            x = sx * (hw - 0.03)
            loop = np.array([(x, 0.0, -hd), (x, 0.0, hd), (x, seat_y, hd), (x, seat_y, -hd)], float)
            path = np.concatenate([np.linspace(loop[i], loop[(i + 1) % 4], 6)[:-1] for i in range(4)])
            _tube(mesh, path, r, closed=True)


def _back(mesh, rng, seat_y, hw, hd, style):
    top = seat_y + rng.uniform(0.35, 0.6)
    z = -hd + 0.02
    t = rng.uniform(0.02, 0.04)
    if style == "panel":
        _box(mesh, (0, (seat_y + top) / 2, z), (2 * hw, top - seat_y, t))
    elif style == "slats":  # open frame: two posts, top rail, vertical slats
        for sx in (-1, 1):
            _box(mesh, (sx * (hw - t), (seat_y + top) / 2, z), (t * 1.5, top - seat_y, t * 1.5))
        _box(mesh, (0, top - t, z), (2 * hw, t * 2, t * 1.5))
        n = int(rng.integers(2, 6))
        for k in range(n):
            x = -hw + 2 * hw * (k + 1) / (n + 1)
            _box(mesh, (x, (seat_y + top) / 2, z), (t * 0.6, top - seat_y, t * 0.6))
    else:  # ring back: a torus standing on the seat, i.e. a through-hole
        rad = min(hw, (top - seat_y) / 2) * 0.9
        path = _arc((0, seat_y + rad + 0.02, z), rad, 0, 2 * math.pi, "xy", 24)[:-1]
        _tube(mesh, path, t, closed=True)
        _rod(mesh, (0, seat_y, z), (0, seat_y + 0.03, z), t)


def _arms(mesh, rng, seat_y, hw, hd, style):
    if style == "none":
        return
    h = rng.uniform(0.12, 0.22)
    r = rng.uniform(0.012, 0.025)
    for sx in (-1, 1):
        x = sx * (hw - r)
        if style == "handle":  # arched handle: half torus from the seat's front to its back
            path = _arc((x, seat_y, 0.0), hd * 0.8, 0.0, math.pi, "zy", 14)
            path[:, 1] = seat_y + (path[:, 1] - seat_y) * (h / (hd * 0.8))
            _tube(mesh, path, r)
        else:  # post and rail
            _rod(mesh, (x, seat_y, hd * 0.7), (x, seat_y + h, hd * 0.7), r)
            _rod(mesh, (x, seat_y + h, hd * 0.75), (x, seat_y + h, -hd * 0.9), r)


def build_model(seed: int, index: int) -> tuple[PartMesh, dict]:
    """The mesh and a description of the parts of model ``index`` of generator ``seed``."""
    rng = np.random.Generator(np.random.PCG64([seed, index]))
    hw, hd = rng.uniform(0.18, 0.3), rng.uniform(0.18, 0.3)
    seat_y, seat_t = rng.uniform(0.35, 0.5), rng.uniform(0.03, 0.07)
    style = {
        "legs": str(rng.choice(["four", "pedestal", "sled"])),
        "back": str(rng.choice(["panel", "slats", "ring"])),
        "arms": str(rng.choice(["none", "handle", "rail"])),
        "seat": str(rng.choice(["box", "disc"])),
    }
    mesh = PartMesh()
    if style["seat"] == "box":
        _box(mesh, (0, seat_y, 0), (2 * hw, seat_t, 2 * hd))
    else:
        _tube(mesh, np.array([(0, seat_y - seat_t / 2, 0), (0, seat_y + seat_t / 2, 0)]), min(hw, hd) * 1.1, sides=24)
    _legs(mesh, rng, seat_y - seat_t / 2, hw, hd, style["legs"])
    _back(mesh, rng, seat_y + seat_t / 2, hw, hd, style["back"])
    _arms(mesh, rng, seat_y + seat_t / 2, hw, hd, style["arms"])
    # Centre the bounding box on the origin, as ShapeNet's models roughly are.
    allv = np.concatenate(mesh.verts)
    centre = (allv.min(0) + allv.max(0)) / 2.0
    mesh.verts = [v - centre for v in mesh.verts]
    return mesh, style


def model_id(seed: int, index: int) -> str:
    """Stable 32-hex id, like ShapeNet's."""
    return hashlib.sha256(f"get3d-procedural:{seed}:{index}".encode()).hexdigest()[:32]


def obj_text(mesh: PartMesh, material: str = "material_0") -> str:
    v, vt, f = mesh.arrays()
    f = np.asarray(f, np.int64).reshape(-1, 6)
    return meshio.obj_text(v, f[:, :3], vt, f[:, 3:], mtllib="model.mtl", material=material,
                           comments=["procedural GET3D asset (+y up)"])


def mtl_text(material: str = "material_0") -> str:
    return meshio.mtl_text(material, "images/texture0.png")


def write_model(out_root: Path, synset: str, seed: int, index: int, texture_size: int) -> Path:
    """Write one model folder; returns the path of its ``model.obj``."""
    mesh, _ = build_model(seed, index)
    folder = Path(out_root) / synset / model_id(seed, index)
    tex_rng = np.random.Generator(np.random.PCG64([seed, index, 1]))
    atomic_write_bytes(folder / "images" / "texture0.png", _texture(tex_rng, texture_size))
    atomic_write_bytes(folder / "model.mtl", mtl_text().encode())
    atomic_write_bytes(folder / "model.obj", obj_text(mesh).encode())
    return folder / "model.obj"


def write_category(out_root: Path, synset: str, count: int, seed: int, texture_size: int) -> list[Path]:
    """Write ``count`` models; files of models no longer requested are left to the caller to clean."""
    return [write_model(out_root, synset, seed, i, texture_size) for i in range(count)]
