"""What colours a mesh file carries, and what the render stage does with it.

The assets stage reports it per item (manifest.json ``appearance`` / ``render_as``) and the render stage acts
on it, both through :func:`render_plan`, so the two stages cannot disagree.

Appearance of a file (the richest source it has, in this order):

- ``texture``: an image texture (OBJ: ``map_Kd`` in its MTL; glTF: a ``baseColorTexture``);
- ``vertex_colors``: per-vertex colours (OBJ ``v x y z r g b``, PLY ``red green blue``, glTF ``COLOR_0``);
- ``material_colors``: flat material colours only (OBJ ``Kd``; glTF ``baseColorFactor``);
- ``none``: geometry only.

What the render stage does (``render.untextured``): ``allow`` renders textures and material colours as the
file defines them, vertex colours through a material reading them, and geometry-only meshes with a neutral
grey material (``render.neutral_albedo``); ``refuse`` renders textured meshes only (GET3D's setting: it
learns texture from the images) and fails the others as ``untextured``.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

APPEARANCES = ("texture", "vertex_colors", "material_colors", "none")
#: appearance -> what the render stage does with it under ``render.untextured: allow``
_ALLOWED = {"texture": "textured", "vertex_colors": "vertex_colors", "material_colors": "material_colors",
            "none": "neutral_material"}
PLANS = ("textured", "vertex_colors", "material_colors", "neutral_material", "refused")
POLICIES = ("allow", "refuse")


class AppearanceError(ValueError):
    """The file cannot be read far enough to tell (corrupt header or JSON)."""


def render_plan(appearance: str, untextured: str) -> str:
    """What the render stage does with a mesh of this appearance under ``render.untextured``."""
    if appearance not in _ALLOWED:
        raise ValueError(f"unknown appearance {appearance!r} (one of {', '.join(APPEARANCES)})")
    if untextured not in POLICIES:
        raise ValueError(f"render.untextured: {untextured!r} is not one of {', '.join(POLICIES)}")
    if untextured == "refuse" and appearance != "texture":
        return "refused"
    return _ALLOWED[appearance]


def mesh_appearance(path: str | Path) -> str:
    """The appearance of one mesh file (see the module docstring); raises :class:`AppearanceError`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".obj":
        return _obj_appearance(path)
    if suffix == ".ply":
        return _ply_appearance(path)
    if suffix in (".glb", ".gltf"):
        return _gltf_appearance(_gltf_json(path))
    raise AppearanceError(f"{path.name}: no appearance reader for {suffix!r}")


def _obj_appearance(path: Path) -> str:
    mtllibs, vertex_colors = [], False
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if line.startswith("mtllib"):
                mtllibs += line.split()[1:]
            elif not vertex_colors and line.startswith("v "):
                vertex_colors = len(line.split()) >= 7  # v x y z r g b
    has_kd = False
    for name in mtllibs:
        mtl = path.parent / name
        if not mtl.is_file():
            continue  # a missing MTL is a broken reference, reported by the stages' own checks
        for line in mtl.read_text(errors="replace").splitlines():
            key = line.strip().split(maxsplit=1)[0].lower() if line.strip() else ""
            if key == "map_kd":
                return "texture"
            has_kd = has_kd or key == "kd"
    if vertex_colors:
        return "vertex_colors"
    return "material_colors" if has_kd else "none"


def _ply_appearance(path: Path) -> str:
    """Vertex colours are ``red green blue`` properties of ``element vertex`` (Blender's PLY importer reads
    those; PLY texture files are not imported, so a PLY is never 'texture')."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    end = head.find(b"end_header")
    if not head.startswith(b"ply") or end < 0:
        raise AppearanceError(f"{path.name}: not a PLY file (no 'ply' ... 'end_header' header)")
    element, props = None, set()
    for line in head[:end].decode("ascii", errors="replace").splitlines():
        parts = line.split()
        if parts[:1] == ["element"] and len(parts) > 1:
            element = parts[1]
        elif parts[:1] == ["property"] and element == "vertex" and len(parts) > 2:
            props.add(parts[-1].lower())
    return "vertex_colors" if {"red", "green", "blue"} <= props else "none"


def _gltf_json(path: Path) -> dict:
    data = path.read_bytes()
    try:
        if path.suffix.lower() == ".glb":
            if data[:4] != b"glTF" or len(data) < 20:
                raise AppearanceError(f"{path.name}: not a binary glTF file (bad magic)")
            length, kind = struct.unpack_from("<II", data, 12)
            if kind != 0x4E4F534A:  # 'JSON'
                raise AppearanceError(f"{path.name}: first GLB chunk is not JSON")
            return json.loads(data[20:20 + length].decode("utf-8"))
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, struct.error) as exc:
        raise AppearanceError(f"{path.name}: unreadable glTF JSON ({exc})") from None


def _gltf_appearance(doc: dict) -> str:
    materials = doc.get("materials") or []
    found = set()
    for mesh in doc.get("meshes") or []:
        for prim in mesh.get("primitives") or []:
            if "COLOR_0" in (prim.get("attributes") or {}):
                found.add("vertex_colors")
            index = prim.get("material")
            if isinstance(index, int) and 0 <= index < len(materials):
                pbr = materials[index].get("pbrMetallicRoughness") or {}
                found.add("texture" if "baseColorTexture" in pbr else "material_colors")
    return next((a for a in APPEARANCES if a in found), "none")
