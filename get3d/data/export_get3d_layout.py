"""Export the render stage's HDF5 to the public GET3D data layout, and read that layout back.

Layout (what the public GET3D loader expects)::

    <root>/img/<synset>/<id>/000.png, 001.png, ...   RGBA, straight alpha
    <root>/camera/<synset>/<id>/rotation.npy          [V] azimuth in degrees
    <root>/camera/<synset>/<id>/elevation.npy         [V] elevation in degrees (= 90 - polar)
    <root>/split/<split>.txt                          object ids, one per line (our addition)

The public loader turns these into ``(rotation / 180 * pi, (90 - elevation) / 180 * pi)``, which is exactly
``(azimuth, polar)`` of get3d.cameras, so the same images mean the same cameras in both code bases.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def _strs(a) -> list[str]:
    return [x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in a]


def export_get3d_layout(h5_path, out_root, splits=("train", "val", "test")) -> dict:
    """Write the layout under ``out_root``; returns counts.  Existing files are overwritten atomically."""
    import h5py
    from PIL import Image

    out_root = Path(out_root)
    n_obj = n_img = 0
    with h5py.File(h5_path, "r") as f:
        ids = _strs(f["object_ids"][:])
        split_of = _strs(f["object_split"][:])
        default_synset = str(f.attrs.get("synset", "") or "unknown")
        synsets = _strs(f["object_synset"][:]) if "object_synset" in f else [default_synset] * len(ids)
        obj_index = f["object_index"][:]
        view_index = f["view_index"][:]
        az, polar = f["azimuth"][:].astype(np.float64), f["polar"][:].astype(np.float64)
        images = f["images"]
        lists: dict[str, list[str]] = {s: [] for s in splits}
        for k, oid in enumerate(ids):
            if split_of[k] not in splits:
                continue
            syn = synsets[k] or default_synset
            rows = np.nonzero(obj_index == k)[0]
            rows = rows[np.argsort(view_index[rows])]
            img_dir = out_root / "img" / syn / oid
            cam_dir = out_root / "camera" / syn / oid
            img_dir.mkdir(parents=True, exist_ok=True)
            cam_dir.mkdir(parents=True, exist_ok=True)
            for v, j in enumerate(rows):
                tmp = img_dir / f".{v:03d}.png.tmp"
                Image.fromarray(images[j], "RGBA").save(tmp, format="PNG")
                os.replace(tmp, img_dir / f"{v:03d}.png")
            _save_npy(cam_dir / "rotation.npy", np.degrees(az[rows]))
            _save_npy(cam_dir / "elevation.npy", 90.0 - np.degrees(polar[rows]))
            lists[split_of[k]].append(oid)
            n_obj += 1
            n_img += len(rows)
    (out_root / "split").mkdir(parents=True, exist_ok=True)
    for s, names in lists.items():
        (out_root / "split" / f"{s}.txt").write_text("".join(n + "\n" for n in names))
    return {"objects": n_obj, "images": n_img, "root": str(out_root)}


def _save_npy(path: Path, arr: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.save(fh, arr)
    os.replace(tmp, path)


def load_get3d_layout(root, synset: str, object_id: str) -> dict:
    """Read one object back: ``rgba`` uint8 [V,H,W,4], ``azimuth`` and ``polar`` [V] radians (as GET3D does)."""
    from PIL import Image

    root = Path(root)
    img_dir = root / "img" / synset / object_id
    files = sorted(img_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"{img_dir}: no PNG views")
    rgba = np.stack([np.asarray(Image.open(p).convert("RGBA")) for p in files])
    rot = np.load(root / "camera" / synset / object_id / "rotation.npy")
    elev = np.load(root / "camera" / synset / object_id / "elevation.npy")
    return {"rgba": rgba, "azimuth": rot / 180.0 * np.pi, "polar": (90.0 - elev) / 180.0 * np.pi}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Export a rendered HDF5 dataset to the public GET3D layout")
    ap.add_argument("h5")
    ap.add_argument("out_root")
    ap.add_argument("--splits", default="train,val,test")
    a = ap.parse_args(argv)
    print(export_get3d_layout(a.h5, a.out_root, tuple(a.splits.split(","))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
