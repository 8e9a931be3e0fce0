"""The rendered-views HDF5 dataset: its layout, its content hash, and the one writer and reader of it.

Every module that writes or reads a dataset file goes through here (the render stage writes it; training,
the reference statistics and the GET3D-layout exporter read it).  Layout (N objects x V views, R pixels)::

    images        uint8  [N*V, R, R, 4]  RGBA, straight alpha, row 0 = top; chunk = one view, lzf
    masks         uint8  [N*V, R, R]     alpha > 0
    azimuth       float32 [N*V]          radians, get3d.cameras conventions
    polar         float32 [N*V]          radians from +y
    c2w           float32 [N*V, 4, 4]    camera-to-world, +y-up world, OpenGL camera
    K             float32 [N*V, 3, 3]    pixels, top-left origin
    object_index  int32  [N*V]           row -> object
    view_index    int32  [N*V]           row -> view of its object
    object_ids / object_synset / object_split   utf-8 [N]
    splits/<train|val|test>   int64      object indices of each split
    attrs: format_version, resolution, views_per_object, fovy_deg, radius, conventions, source, category,
           synset, config (JSON of the render settings), dataset_hash

``dataset_hash`` is the content identity (object ids, splits, image bytes, cameras): the same renders give
the same hash whatever the file's bytes; :class:`ContentHash` computes it, :func:`dataset_hash` reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
CONVENTIONS = ("world +y up (OpenGL/ShapeNet); c2w = camera-to-world, OpenGL camera (looks -z, +y up); "
               "K in pixels, top-left origin, v down, pixel centres at +0.5; azimuth/polar as get3d.cameras; "
               "images row 0 = top; RGBA straight alpha; mask = alpha > 0")
#: The datasets a reader needs; a file without them is not a dataset of this format.
REQUIRED = ("images", "azimuth", "polar", "c2w", "object_index", "object_ids", "object_split")
HASH_ATTR = "dataset_hash"


class DatasetFormatError(ValueError):
    """A file is missing, unreadable or not a rendered-views dataset; the message names the file and key."""


# ------------------------------------------------------------------------------------------- hashing

def array_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


class ContentHash:
    """The dataset's content hash, fed one object at a time in file order."""

    def __init__(self):
        self._h = hashlib.sha256()

    def add_object(self, object_id: str, split: str, images_sha256: str, c2w: np.ndarray) -> None:
        self._h.update(f"{object_id}\0{split}\0{images_sha256}\0".encode())
        self._h.update(np.asarray(c2w, np.float32).tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def dataset_hash(path) -> dict:
    """Content identity of a dataset file, for provenance and cache keys; no pixel is read."""
    with open_dataset(path, require=("images",)) as f:
        if HASH_ATTR not in f.attrs:
            raise DatasetFormatError(f"{path}: no {HASH_ATTR!r} attribute; not a rendered-views dataset")
        return {"path": str(path), "sha256": str(f.attrs[HASH_ATTR]), "kind": "render-stage content hash",
                "images": int(f["images"].shape[0]), "resolution": int(f["images"].shape[1])}


# ------------------------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class ObjectViews:
    """One object's V views: ``rgba`` uint8 [V,R,R,4] (or an ``.npz`` holding ``rgba``) and its cameras."""

    id: str
    synset: str
    split: str
    rgba: np.ndarray | Path
    azimuth: np.ndarray
    polar: np.ndarray
    c2w: np.ndarray

    def load_rgba(self) -> np.ndarray:
        if isinstance(self.rgba, np.ndarray):
            return self.rgba
        with np.load(self.rgba) as z:
            return z["rgba"]


@dataclass(frozen=True)
class DatasetInfo:
    """What the file says about its origin (the attrs besides the layout's own)."""

    resolution: int
    views_per_object: int
    fovy_deg: float
    radius: float
    source: str = ""
    category: str = ""
    synset: str = ""
    config: dict = field(default_factory=dict)


@dataclass
class Written:
    """What :func:`write_dataset` gathered: per-object entries, the content hash, the first views of 6 objects."""

    objects: list = field(default_factory=list)   # {"id", "split", "images_sha256"} per object
    preview: list = field(default_factory=list)   # rgba [<=6 views] of the first 6 objects
    dataset_hash: str = ""


def write_dataset(out_h5, objects: Sequence[ObjectViews], info: DatasetInfo) -> Written:
    """Write the dataset to a temp file beside ``out_h5`` and rename it into place (never half-written)."""
    import h5py

    out_h5 = Path(out_h5)
    out_h5.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_h5.with_name(f".{out_h5.name}.tmp-{os.getpid()}")
    try:
        with h5py.File(tmp, "w", track_order=True) as f:
            # The image datasets stay open until the file closes: closing them earlier moves where HDF5
            # places the later datasets, i.e. changes the file's bytes.
            img, msk = _create_image_datasets(f, len(objects), info)
            written, cams = _copy_views(img, msk, objects, info)
            _write_cameras(f, cams, len(objects), info)
            _write_object_tables(f, objects, info)
            _write_attrs(f, info, written.dataset_hash)
        os.replace(tmp, out_h5)
    finally:
        if tmp.exists():
            tmp.unlink()
    return written


def _create_image_datasets(f, N: int, info: DatasetInfo) -> tuple:
    V, R = info.views_per_object, info.resolution
    kw = {"compression": "lzf", "track_times": False}
    img = f.create_dataset("images", (N * V, R, R, 4), np.uint8, chunks=(1, R, R, 4), **kw)
    msk = f.create_dataset("masks", (N * V, R, R), np.uint8, chunks=(1, R, R), **kw)
    return img, msk


def _copy_views(img, msk, objects: Sequence[ObjectViews], info: DatasetInfo) -> tuple[Written, dict]:
    V, R = info.views_per_object, info.resolution
    N = len(objects)
    cams = {"azimuth": np.zeros(N * V, np.float32), "polar": np.zeros(N * V, np.float32),
            "c2w": np.zeros((N * V, 4, 4), np.float32)}
    written, content = Written(), ContentHash()
    for i, o in enumerate(objects):
        rgba = o.load_rgba()
        if rgba.shape != (V, R, R, 4):
            raise DatasetFormatError(f"{o.rgba if isinstance(o.rgba, Path) else o.id}: views of shape "
                                     f"{rgba.shape}, expected {(V, R, R, 4)}")
        rows = slice(i * V, (i + 1) * V)
        img[rows] = rgba
        msk[rows] = (rgba[..., 3] > 0).astype(np.uint8)
        cams["azimuth"][rows] = o.azimuth
        cams["polar"][rows] = o.polar
        cams["c2w"][rows] = o.c2w
        h = array_sha256(rgba)
        written.objects.append({"id": o.id, "split": o.split, "images_sha256": h})
        content.add_object(o.id, o.split, h, cams["c2w"][rows])
        if len(written.preview) < 6:
            written.preview.append(rgba[: min(V, 6)])
    written.dataset_hash = content.hexdigest()
    return written, cams


def _write_cameras(f, cams: dict, N: int, info: DatasetInfo) -> None:
    from get3d import cameras

    V, R = info.views_per_object, info.resolution
    for name in ("azimuth", "polar", "c2w"):
        f.create_dataset(name, data=cams[name], track_times=False)
    K = cameras.intrinsics(R, info.fovy_deg).astype(np.float32)
    f.create_dataset("K", data=np.broadcast_to(K, (N * V, 3, 3)), track_times=False)
    f.create_dataset("object_index", data=np.repeat(np.arange(N, dtype=np.int32), V), track_times=False)
    f.create_dataset("view_index", data=np.tile(np.arange(V, dtype=np.int32), N), track_times=False)


def _write_object_tables(f, objects: Sequence[ObjectViews], info: DatasetInfo) -> None:
    import h5py

    str_t = h5py.string_dtype("utf-8")
    for name, values in (("object_ids", [o.id for o in objects]),
                         ("object_synset", [o.synset or info.synset for o in objects]),
                         ("object_split", [o.split for o in objects])):
        f.create_dataset(name, data=np.array(values, dtype=object), dtype=str_t, track_times=False)
    g = f.create_group("splits", track_order=True)
    for split in SPLITS:
        objs = np.array([i for i, o in enumerate(objects) if o.split == split], dtype=np.int64)
        g.create_dataset(split, data=objs, track_times=False)


def _write_attrs(f, info: DatasetInfo, content_hash: str) -> None:
    f.attrs.update({
        "format_version": FORMAT_VERSION, "resolution": info.resolution, "views_per_object": info.views_per_object,
        "fovy_deg": info.fovy_deg, "radius": info.radius, "conventions": CONVENTIONS,
        "source": info.source, "category": info.category, "synset": info.synset,
        "config": json.dumps(info.config, sort_keys=True), HASH_ATTR: content_hash,
    })


# ------------------------------------------------------------------------------------------- reading

def open_dataset(path, require: Iterable[str] = REQUIRED):
    """Open ``path`` read-only; raises :class:`DatasetFormatError` naming the file (and the missing key)."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: rendered dataset not found (run the render stage)")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise DatasetFormatError(f"{path}: cannot read HDF5 ({exc})") from None
    for key in require:
        if key not in f:
            f.close()
            raise DatasetFormatError(f"{path}: missing dataset {key!r}; not a rendered-views dataset")
    return f


def strings(a) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in a]


@dataclass
class DatasetIndex:
    """Everything but the pixels: per-row cameras and object tables, per-object ids/splits/synsets, attrs."""

    path: Path
    resolution: int
    views_per_object: int
    object_ids: list
    object_split: list
    object_synset: list
    object_index: np.ndarray   # int64 [N*V]
    view_index: np.ndarray     # int64 [N*V]
    azimuth: np.ndarray        # float32 [N*V]
    polar: np.ndarray
    c2w: np.ndarray            # float32 [N*V,4,4]
    attrs: dict                # scalar attrs (numbers and strings)

    @property
    def content_hash(self) -> str | None:
        return self.attrs.get(HASH_ATTR)

    def rows_of_splits(self, splits: Iterable[str]) -> np.ndarray:
        """Row indices of the views whose object is in ``splits``, in file order."""
        keep = np.array([s in set(splits) for s in self.object_split], dtype=bool)
        return np.nonzero(keep[self.object_index])[0] if len(self.object_index) else np.zeros(0, np.int64)


def read_index(path) -> DatasetIndex:
    with open_dataset(path) as f:
        ids = strings(f["object_ids"][:])
        obj = f["object_index"][:].astype(np.int64)
        default_synset = str(f.attrs.get("synset", "") or "")
        return DatasetIndex(
            path=Path(path), resolution=int(f["images"].shape[1]),
            views_per_object=int(f.attrs.get("views_per_object", 0)), object_ids=ids,
            object_split=strings(f["object_split"][:]),
            object_synset=strings(f["object_synset"][:]) if "object_synset" in f else [default_synset] * len(ids),
            object_index=obj,
            view_index=f["view_index"][:].astype(np.int64) if "view_index" in f else _view_index(obj),
            azimuth=f["azimuth"][:].astype(np.float32), polar=f["polar"][:].astype(np.float32),
            c2w=f["c2w"][:].astype(np.float32),
            attrs={k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()
                   if isinstance(v, (int, float, str, np.generic))})


def _view_index(object_index: np.ndarray) -> np.ndarray:
    out = np.zeros_like(object_index)
    seen: dict[int, int] = {}
    for j, o in enumerate(object_index.tolist()):
        out[j] = seen.get(o, 0)
        seen[o] = out[j] + 1
    return out


def render_settings(path) -> dict:
    """The render settings the dataset was made with (attrs ``config`` + radius/fovy), or {} if unknown."""
    try:
        with open_dataset(path, require=()) as f:
            cfg = json.loads(f.attrs["config"]) if "config" in f.attrs else {}
            for k in ("radius", "fovy_deg"):
                if k in f.attrs:
                    cfg.setdefault(k, float(f.attrs[k]))
            return cfg
    except (OSError, ValueError):
        return {}
