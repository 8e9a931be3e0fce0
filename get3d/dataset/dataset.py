"""Training dataset over the rendered-views HDF5 file (layout: get3d.dataset.format).

Each item is one rendered view::

    image   float32 [3, H, W] in [-1, 1]: RGB x (alpha > 0) on black (area-downsampled when resized)
    mask    float32 [1, H, W] in [0, 1]:  alpha > 0 (area-downsampled -> coverage, or binarised)
    camera  float32 [2]:  (azimuth, polar) radians, get3d.cameras conventions
    c2w     float32 [4, 4] camera-to-world, +y-up world, OpenGL camera
    object_index int64: index into ``dataset.object_ids``

The HDF5 file is opened lazily in each process (h5py handles cannot be pickled) and the handle is dropped
when the dataset is pickled for DataLoader workers.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .format import SPLITS, open_dataset, read_index


class RenderedViews(torch.utils.data.Dataset):
    def __init__(self, path, resolution: int | None = None, split: str | Iterable[str] | None = "train",
                 mask_mode: str = "soft"):
        self.path = Path(path)
        if mask_mode not in ("soft", "binary"):
            raise ValueError(f"mask_mode: {mask_mode!r} is not one of soft|binary")
        splits = SPLITS if split is None else ((split,) if isinstance(split, str) else tuple(split))
        for s in splits:
            if s not in SPLITS:
                raise ValueError(f"split: {s!r} is not one of {list(SPLITS)}")
        index = read_index(self.path)
        # small per-image metadata stays in memory; items then read one image chunk each
        self.stored_resolution = index.resolution
        self.object_ids = index.object_ids
        self.object_split = index.object_split
        self.azimuth, self.polar, self.c2w = index.azimuth, index.polar, index.c2w
        self.views_per_object = index.views_per_object
        self.indices = index.rows_of_splits(splits)
        self.object_index = index.object_index
        self.resolution = int(resolution or self.stored_resolution)
        if self.resolution < 1:
            raise ValueError(f"resolution: {resolution!r} must be positive")
        self.mask_mode = mask_mode
        self.splits = splits
        self._h5 = None
        self._pid = None

    # -- lazy per-process handle -------------------------------------------------------------------
    def _file(self):
        if self._h5 is None or self._pid != os.getpid():
            self._h5 = open_dataset(self.path, require=())
            self._pid = os.getpid()
        return self._h5

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_h5"] = None
        state["_pid"] = None
        return state

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None

    # -- items -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        j = int(self.indices[i])
        f = self._file()
        rgba = torch.from_numpy(np.ascontiguousarray(f["images"][j]))  # [H, W, 4] uint8
        mask = (rgba[..., 3:4] > 0).permute(2, 0, 1).float()  # [1, H, W]
        rgb = rgba[..., :3].permute(2, 0, 1).float().div_(255.0) * mask  # on black
        if self.resolution != self.stored_resolution:
            x = torch.cat([rgb, mask], 0)[None]
            if self.resolution < self.stored_resolution:
                x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
            else:
                x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False)
            rgb, mask = x[0, :3], x[0, 3:].clamp_(0.0, 1.0)
        if self.mask_mode == "binary":
            mask = (mask > 0.5).float()
        camera = torch.tensor([self.azimuth[j], self.polar[j]], dtype=torch.float32)
        return {"image": rgb.mul_(2.0).sub_(1.0), "mask": mask, "camera": camera,
                "c2w": torch.from_numpy(self.c2w[j].copy()),
                "object_index": int(self.object_index[j])}


def worker_init_fn(worker_id: int) -> None:
    """One intra-op thread per DataLoader worker (no oversubscription); the handle opens lazily."""
    torch.set_num_threads(1)


def make_loader(dataset: RenderedViews, batch_size: int, shuffle: bool = True, num_workers: int = 2,
                seed: int = 0, drop_last: bool = True, **kw) -> torch.utils.data.DataLoader:
    g = torch.Generator()
    g.manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=drop_last,
        worker_init_fn=worker_init_fn if num_workers > 0 else None, generator=g,
        persistent_workers=num_workers > 0, **kw)
