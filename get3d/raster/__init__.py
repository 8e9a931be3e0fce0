"""Differentiable rasterization backends (nvdiffrast on CUDA, pure PyTorch anywhere) and the mesh renderer.

>>> backend = get_backend("auto", device)          # nvdiffrast on CUDA when importable, else torch
>>> out = render_meshes(backend, [(verts, faces)], mvp, 256, texture_fn=fn)
"""
from __future__ import annotations

import torch

from .base import RasterBackend
from .render import ortho_projection, ortho_view_mvp, render_meshes
from .torch_backend import TorchRasterBackend

__all__ = [
    "RasterBackend",
    "TorchRasterBackend",
    "get_backend",
    "nvdiffrast_available",
    "ortho_projection",
    "ortho_view_mvp",
    "render_meshes",
]


def nvdiffrast_available() -> bool:
    """True when CUDA is present and ``nvdiffrast.torch`` imports (does not build the plugin)."""
    if not torch.cuda.is_available():
        return False
    try:
        import importlib.util
        return importlib.util.find_spec("nvdiffrast") is not None and \
            importlib.util.find_spec("nvdiffrast.torch") is not None
    except (ImportError, ValueError):
        return False


def get_backend(name: str = "auto", device: str | torch.device | None = None) -> RasterBackend:
    """``"auto"``: nvdiffrast on a CUDA device when importable, else the PyTorch rasterizer.
    ``"torch"``: always the PyTorch rasterizer.  ``"nvdiffrast"``: nvdiffrast or a clear RuntimeError."""
    if name not in ("auto", "torch", "nvdiffrast"):
        raise ValueError(f"raster backend must be 'auto', 'torch' or 'nvdiffrast', got {name!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if name == "torch":
        return TorchRasterBackend(device)
    if name == "auto" and (device.type != "cuda" or not nvdiffrast_available()):
        return TorchRasterBackend(device)
    if device.type != "cuda":
        raise RuntimeError(f"raster backend 'nvdiffrast' needs a CUDA device, got {device}")
    try:
        from .nvdiffrast_backend import NvdiffrastBackend
        return NvdiffrastBackend(device)
    except Exception as exc:
        if name == "auto":
            import warnings
            warnings.warn(f"nvdiffrast unusable ({exc}); falling back to the PyTorch rasterizer")
            return TorchRasterBackend(device)
        raise RuntimeError(
            "raster backend 'nvdiffrast' requested but nvdiffrast is not importable "
            f"({exc}); install it with `pip install diffrp-nvdiffrast==0.3.3.1` or use backend 'torch'") from exc
