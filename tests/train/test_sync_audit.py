"""Which operations of a generator step would make the host wait for a CUDA device.

On the CPU nothing synchronises, so the test records the ATen operations that synchronise on CUDA (``nonzero``,
``unique``, ``item``, ``bincount``, ``repeat_interleave`` without a size, ...) with the get3d line that issued
them.  With ``perf.padded_surface`` the surface extraction and the renderer's bookkeeping issue none; what is left
comes from places that work on host tensors by design or do not run on CUDA (listed below).  The CUDA test
``tests/geometry/test_gpu_padded.py`` checks the same under ``torch.cuda.set_sync_debug_mode("error")``."""
from __future__ import annotations

import collections
import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from train_helpers import tiny_configs

from get3d import cameras, perf
from get3d.nn.config import build_generator

#: ATen operations that read a device value on the host (or size their output from device data)
SYNCING = {"aten.nonzero.default", "aten._unique2.default", "aten.unique_dim.default", "aten.unique_consecutive.default",
           "aten._local_scalar_dense.default", "aten.is_nonzero.default", "aten.masked_select.default",
           "aten.bincount.default", "aten.repeat_interleave.Tensor", "aten.equal.default"}
#: (file, function or "*"): host tensors by design (CPU RNG draws, nvdiffrast-style CPU ranges) or code that runs
#: only on the CPU (the PyTorch rasterizer; sdf_reg_loss's CPU branch; on CUDA it takes _sdf_reg_masked)
HOST_BY_DESIGN = (("nn/mapping.py", "draw_mix"), ("raster/base.py", "*"), ("raster/torch_backend.py", "*"),
                  ("geometry/dmtet.py", "sdf_reg_loss"))


class SyncAudit(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.sites: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func) in SYNCING:
            frames = [f for f in traceback.extract_stack() if "/get3d/" in f.filename]
            where = frames[-1] if frames else None
            path = where.filename.split("/get3d/", 1)[1] if where else "outside get3d"
            if not any(path == f and fn in ("*", where.name) for f, fn in HOST_BY_DESIGN):
                self.sites[f"{path}:{where.lineno if where else 0} {func}"] += 1
        return func(*args, **(kwargs or {}))


def _generator_step_sites(padded: bool) -> collections.Counter:
    cm, _ = tiny_configs()
    torch.manual_seed(0)
    G = build_generator(cm).train()
    z = torch.randn(2, cm.z_dim)
    c2w = torch.from_numpy(cameras.camera_to_world([0.3, 1.9], [1.2, 1.0])).float()
    with perf.using(padded_surface=padded):
        G(z, z, c2w)                                               # warm-up: grids, tables, edge maps
        audit = SyncAudit()
        with audit:
            out = G(z, z, c2w, style_mixing=0.9, generator=torch.Generator().manual_seed(0))
            (out["img"].sum() + out["sdf_reg_loss"] + out["empty_shape_loss"]).backward()
    assert out["mask"].sum() > 0
    return audit.sites


def test_padded_generator_step_has_no_device_reads():
    assert _generator_step_sites(padded=True) == {}


def test_the_exact_extraction_selects_without_device_reads():
    sites = _generator_step_sites(padded=False)
    # marching tets reads its counts back with one copy (not an op listed here) and selects with nonzero_static;
    # the renderer reads one number (the largest covered-pixel count) and packs the pixels without a nonzero
    assert not any(s.startswith("geometry/") for s in sites), sites
    assert [(s.split(":")[0], s.split()[-1], n) for s, n in sites.items()] == [
        ("raster/render.py", "aten._local_scalar_dense.default", 1)], sites
