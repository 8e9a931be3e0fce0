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
import io
from pathlib import Path

import numpy as np

from get3d.io import atomic_write_bytes, atomic_write_image, atomic_write_text

from .format import open_dataset, read_index


def export_get3d_layout(h5_path, out_root, splits=("train", "val", "test")) -> dict:
    """Write the layout under ``out_root``; returns counts.  Existing files are overwritten atomically."""
    from PIL import Image

    out_root = Path(out_root)
    n_obj = n_img = 0
    index = read_index(h5_path)
    default_synset = str(index.attrs.get("synset", "") or "unknown")
    lists: dict[str, list[str]] = {s: [] for s in splits}
    with open_dataset(h5_path) as f:
        images = f["images"]
        for k, oid in enumerate(index.object_ids):
            if index.object_split[k] not in splits:
                continue
            syn = index.object_synset[k] or default_synset
            rows = np.nonzero(index.object_index == k)[0]
            rows = rows[np.argsort(index.view_index[rows])]
            img_dir = out_root / "img" / syn / oid
            cam_dir = out_root / "camera" / syn / oid
            img_dir.mkdir(parents=True, exist_ok=True)
            cam_dir.mkdir(parents=True, exist_ok=True)
            for v, j in enumerate(rows):
                atomic_write_image(img_dir / f"{v:03d}.png", Image.fromarray(images[j], "RGBA"), fsync=False)
            _save_npy(cam_dir / "rotation.npy", np.degrees(index.azimuth[rows].astype(np.float64)))
            _save_npy(cam_dir / "elevation.npy", 90.0 - np.degrees(index.polar[rows].astype(np.float64)))
            lists[index.object_split[k]].append(oid)
            n_obj += 1
            n_img += len(rows)
    (out_root / "split").mkdir(parents=True, exist_ok=True)
    for s, names in lists.items():
        atomic_write_text(out_root / "split" / f"{s}.txt", "".join(n + "\n" for n in names), fsync=False)
    return {"objects": n_obj, "images": n_img, "root": str(out_root)}


def _save_npy(path: Path, arr: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(path, buf.getvalue(), fsync=False)


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
