"""nvdiffrast (CUDA context only) behind :class:`get3d.raster.base.RasterBackend`.

Install: ``pip install diffrp-nvdiffrast==0.3.3.1`` (nvdiffrast 0.3.3 with sources, imported as
``nvdiffrast.torch``; JIT-compiles its plugin on first use).  This module is imported lazily by
:func:`get3d.raster.get_backend`, so CPU machines never import nvdiffrast.

``RasterizeGLContext`` is deliberately not offered: it does not build on headless servers.
"""
from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Sequence

import torch

from .base import RasterBackend, check_inputs


def _plugin_name(dr_module) -> str:
    import nvdiffrast
    name = f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}"
    return re.sub(r"\W|^(?=\d)", "_", name)


def import_nvdiffrast():
    """Import ``nvdiffrast.torch`` and apply the ``sys.path`` fix for its JIT plugin.

    Newer torch no longer puts the cpp_extension build folder on ``sys.path``, so nvdiffrast's loader fails with
    ``ModuleNotFoundError: nvdiffrast_plugin_...`` right after a successful build.  Adding that folder to
    ``sys.path`` before the first context is created fixes it.
    """
    dr = importlib.import_module("nvdiffrast.torch")
    try:
        from torch.utils import cpp_extension
        build_dir = cpp_extension._get_build_directory(_plugin_name(dr), False)
        if build_dir not in sys.path:
            sys.path.insert(0, build_dir)
    except Exception as exc:  # noqa: BLE001 - only on exotic torch versions
        import warnings
        warnings.warn(f"nvdiffrast: could not add the plugin build folder to sys.path ({exc})")
    return dr


class NvdiffrastBackend(RasterBackend):
    """Thin wrapper over ``nvdiffrast.torch`` with a ``RasterizeCudaContext``."""

    name = "nvdiffrast"

    def __init__(self, device: str | torch.device = "cuda"):
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"nvdiffrast backend needs a CUDA device, got {self.device}")
        self.dr = import_nvdiffrast()
        self.ctx = self.dr.RasterizeCudaContext(device=self.device)
        self._topo_cache: tuple[int, tuple, object] | None = None

    def rasterize(self, pos: torch.Tensor, tri: torch.Tensor, resolution: Sequence[int],
                  ranges: torch.Tensor | None = None) -> torch.Tensor:
        b, h, w = check_inputs(pos, tri, resolution, ranges)
        if tri.shape[0] == 0:
            return torch.zeros(b, h, w, 4, dtype=torch.float32, device=pos.device) + 0.0 * pos.sum()
        rast, _ = self.dr.rasterize(self.ctx, pos.contiguous(), tri.to(torch.int32).contiguous(), (h, w),
                                    ranges=None if ranges is None else ranges.to(torch.int32).cpu().contiguous(),
                                    grad_db=False)
        return rast

    def interpolate(self, attr: torch.Tensor, rast: torch.Tensor, tri: torch.Tensor) -> torch.Tensor:
        if tri.shape[0] == 0:
            return torch.zeros(*rast.shape[:3], attr.shape[-1], dtype=attr.dtype, device=attr.device) + 0.0 * attr.sum()
        out, _ = self.dr.interpolate(attr.contiguous(), rast, tri.to(torch.int32).contiguous())
        return out

    def antialias(self, color: torch.Tensor, rast: torch.Tensor, pos: torch.Tensor,
                  tri: torch.Tensor) -> torch.Tensor:
        if tri.shape[0] == 0:
            return color + 0.0 * pos.sum()
        return self.dr.antialias(color.contiguous(), rast, pos.contiguous(), tri.to(torch.int32).contiguous())
