"""Generated samples for the metrics, drawn from an inference snapshot (G_ema + model config).

Randomness (all seeded by ``evaluate.seed``, independent of the batch size):

- sample ``i`` of stream ``s`` uses ``torch.Generator().manual_seed(derive(seed, s, i))`` on the CPU for
  ``z_tex``, ``z_geo`` (standard normal, ``[z_dim]`` each, in that order) and then its camera
  ``(azimuth, polar)`` from the camera prior the dataset was rendered with
  (:func:`get3d.train.models.camera_prior`: the HDF5's elevation range, radius, field of view);
- the synthesis noise (``noise_mode='random'``) comes from the global torch RNG, seeded per batch with
  ``derive(seed, s, first index)`` inside ``torch.random.fork_rng`` (the caller's RNG state is untouched).

Streams: ``IMAGES`` (FID/KID images; FID-Ori and FID-3D use the *same* z and cameras) and ``MESHES``
(CD/COV/MMD/LFD meshes).

Image providers (uint8 ``[B, 3, H, W]`` RGB on black, like the reference views, on the generator's device):

- :func:`images_ori` (FID-Ori): the generator's own forward pass ``G(z_tex, z_geo, camera, psi)`` renders the
  textured mesh with its rasterizer (``img[:, :3]``, RGB x mask on black).
- :func:`images_3d` (FID-3D): ``G.extract_meshes`` gives explicit meshes + ``texture_fn``; they are rendered
  by :func:`get3d.raster.render.render_meshes` (the standard rasterizer path, nvdiffrast on CUDA or the PyTorch
  rasterizer) from the same prior cameras, colours from ``texture_fn`` at the covered pixels, antialiased.
  For GET3D this equals FID-Ori up to noise: the check that the exported geometry is what was scored.

Empty generated meshes render as black images (render_meshes handles 0 faces).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from get3d import cameras

STREAM_IMAGES = 1
STREAM_MESHES = 2


def derive(*parts: int) -> int:
    h = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "little") & ((1 << 63) - 1)


# ------------------------------------------------------------------------------------------------ snapshot

@dataclasses.dataclass
class LoadedGenerator:
    G: torch.nn.Module
    model_config: object
    payload: dict
    device: torch.device

    @property
    def z_dim(self) -> int:
        return int(self.G.z_dim)

    @property
    def kimg(self) -> float | None:
        k = self.payload.get("kimg")
        return float(k) if k is not None else None


def resolve_snapshot(path: str | Path) -> Path:
    """An inference snapshot file from a file path, a run directory or its ``checkpoints/`` folder.

    For a folder: the ``network`` entry of ``checkpoints/latest.json`` (written by get3d.train), else the
    newest ``network-*.pt``.  Raises FileNotFoundError naming the folder when there is none."""
    from get3d.train.checkpoint import list_snapshots

    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise FileNotFoundError(f"snapshot {p} does not exist")
    for d in (p / "checkpoints", p):
        latest = d / "latest.json"
        if latest.is_file():
            try:
                import json

                name = json.loads(latest.read_text()).get("network", {}).get("path")
            except (OSError, ValueError, AttributeError):
                name = None
            if name and (d / name).is_file():
                return d / name
        snaps = list_snapshots(d, "network")
        if snaps:
            return snaps[0][1]
    raise FileNotFoundError(f"{p}: no inference snapshot (network-*.pt) in it or in its checkpoints/ folder")


def load_generator(snapshot_path: str | Path, device: str | torch.device = "cpu",
                   backend: str = "auto") -> LoadedGenerator:
    """Inference snapshot (get3d.train.checkpoint ``network-*.pt``: ``{"G_ema", "model_config", ...}``) → G_ema
    in eval mode on ``device``, rasterizing with ``backend`` ('auto' | 'torch' | 'nvdiffrast')."""
    from get3d.nn.config import ModelConfig, build_generator
    from get3d.schema import ConfigError, parse_section
    from get3d.train.checkpoint import CheckpointError, load_inference

    path = resolve_snapshot(snapshot_path)
    payload = load_inference(path)  # verifies magic, length, SHA-256; raises CheckpointError naming the file
    for k in ("G_ema", "model_config"):
        if k not in payload:
            raise CheckpointError(f"inference snapshot {path} has no {k!r} (keys: {sorted(payload)})")
    mc = dict(payload["model_config"])
    mc["raster_backend"] = backend
    try:
        cfg = parse_section(ModelConfig, mc, f"{path}:model_config")
    except ConfigError as exc:
        raise CheckpointError(f"inference snapshot {path}: bad model_config ({exc})") from None
    device = torch.device(device)
    G = build_generator(cfg, device=device)
    missing, unexpected = G.load_state_dict(payload["G_ema"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"inference snapshot {path}: G_ema does not match its model_config "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    G = G.to(device).eval().requires_grad_(False)
    return LoadedGenerator(G, cfg, payload, device)


# ------------------------------------------------------------------------------------------------ latents

def latents(z_dim: int, seed: int, stream: int, start: int, count: int,
            prior: cameras.CameraPrior) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(z_tex [n, z], z_geo [n, z], azimuth [n], polar [n])`` of samples ``start .. start+count-1``."""
    zt, zg, az, po = [], [], [], []
    for i in range(start, start + count):
        g = torch.Generator().manual_seed(derive(seed, stream, i))
        zt.append(torch.randn(z_dim, generator=g))
        zg.append(torch.randn(z_dim, generator=g))
        a, p = prior.sample(1, generator=g)
        az.append(a)
        po.append(p)
    return torch.stack(zt), torch.stack(zg), torch.cat(az), torch.cat(po)


def camera_dict(azimuth: torch.Tensor, polar: torch.Tensor, prior: cameras.CameraPrior, device) -> dict:
    """The explicit camera handed to the generator / renderer: ``mvp`` from the prior's radius and fovy."""
    c2w = cameras.camera_to_world(azimuth.double(), polar.double(), prior.radius)
    mvp = cameras.mvp_from_c2w(c2w, prior.fovy_deg).float().to(device)
    return {"mvp": mvp, "azimuth": azimuth.to(device), "polar": polar.to(device)}


def empty_safe(texture_fn: Callable, channels: int = 3) -> Callable:
    """``texture_fn`` that answers a query of zero points with ``[0, channels]`` (render_meshes probes it that
    way when nothing is covered; get3d.nn.generator.flat_query cannot)."""
    def fn(points: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
        if points.shape[0] == 0:
            return points.new_zeros(0, channels)
        return texture_fn(points, sample_index)
    return fn


def to_uint8(rgb01: torch.Tensor) -> torch.Tensor:
    """``[B, 3, H, W]`` float in [0, 1] → uint8 (round half up, clamped), on the same device.

    Generated batches stay on the GPU: the Inception features are computed there, and copying 100 MB of 1024²
    images per batch of 32 to pageable host memory cost 75 ms of a 230 ms batch (H100)."""
    return (rgb01.detach().float() * 255.0 + 0.5).clamp_(0, 255).to(torch.uint8)


# ------------------------------------------------------------------------------------------------ providers

@dataclasses.dataclass
class Sampler:
    """Everything the providers need; one per evaluation."""

    gen: LoadedGenerator
    prior: cameras.CameraPrior
    seed: int = 0
    truncation_psi: float = 1.0
    noise_mode: str = "random"
    batch_size: int = 16
    resolution: int | None = None  # None: the generator's img_resolution
    on_batch: Callable[[str, int, torch.Tensor], None] | None = None  # (source, start, uint8 batch) for previews

    @property
    def res(self) -> int:
        return int(self.resolution or self.gen.G.img_resolution)

    def _noise_ctx(self, stream: int, start: int):
        """Seeded synthesis noise without disturbing the caller's global RNG state."""
        return torch.random.fork_rng(devices=[self.gen.device] if self.gen.device.type == "cuda" else [])

    def _ranges(self, n: int):
        for s in range(0, n, self.batch_size):
            yield s, min(self.batch_size, n - s)

    @torch.no_grad()
    def images_ori(self, n: int) -> Iterator[torch.Tensor]:
        """FID-Ori images (see module docstring)."""
        G, dev = self.gen.G, self.gen.device
        for s, b in self._ranges(n):
            zt, zg, az, po = latents(self.gen.z_dim, self.seed, STREAM_IMAGES, s, b, self.prior)
            cam = camera_dict(az, po, self.prior, dev)
            with self._noise_ctx(STREAM_IMAGES, s):
                torch.manual_seed(derive(self.seed, STREAM_IMAGES, s, 7))
                try:
                    out = G(zt.to(dev), zg.to(dev), cam, truncation_psi=self.truncation_psi,
                            noise_mode=self.noise_mode, resolution=self.res)
                    rgb01 = (out["img"][:, :3] + 1) / 2
                except RuntimeError as exc:
                    if "0 elements" not in str(exc):
                        raise
                    # get3d.nn.generator.flat_query fails when no pixel of the whole batch is covered (every mesh
                    # empty or off-screen).  Same computation as GET3DGenerator.synthesize, with an empty-safe
                    # texture query.
                    torch.manual_seed(derive(self.seed, STREAM_IMAGES, s, 7))
                    rgb01 = self._render_synthesized(zt.to(dev), zg.to(dev), cam)
            img = to_uint8(rgb01)
            if self.on_batch:
                self.on_batch("ori", s, img)
            yield img

    def _render_synthesized(self, zt: torch.Tensor, zg: torch.Tensor, cam: dict) -> torch.Tensor:
        from get3d.nn.generator import flat_query
        from get3d.raster.render import render_meshes

        G, dev, b = self.gen.G, self.gen.device, zt.shape[0]
        ws_tex, ws_geo = G.mapping(zt, zg, self.truncation_psi, update_w_avg=False)
        out = G.synthesize(ws_tex, ws_geo, None, noise_mode=self.noise_mode, render=False)
        state = out["state"]

        def texture_fn(points, sample_index):
            return flat_query(lambda p: G.backbone.query_texture(state, p), points, sample_index, b)

        r = render_meshes(G.backend(dev), out["meshes"], cam["mvp"], self.res, empty_safe(texture_fn))
        return r["rgb"][:, :3]

    @torch.no_grad()
    def images_3d(self, n: int, backend=None) -> Iterator[torch.Tensor]:
        """FID-3D images: extracted meshes + texture_fn through raster.render.render_meshes."""
        from get3d.raster import get_backend
        from get3d.raster.render import render_meshes

        G, dev = self.gen.G, self.gen.device
        if backend is None:
            name = G.raster_backend if isinstance(G.raster_backend, str) else "auto"
            backend = get_backend(name, dev)
        for s, b in self._ranges(n):
            zt, zg, az, po = latents(self.gen.z_dim, self.seed, STREAM_IMAGES, s, b, self.prior)
            with self._noise_ctx(STREAM_IMAGES, s):
                torch.manual_seed(derive(self.seed, STREAM_IMAGES, s, 7))
                meshes, texture_fn = G.extract_meshes(zt.to(dev), zg.to(dev), truncation_psi=self.truncation_psi,
                                                      noise_mode=self.noise_mode)
            cam = camera_dict(az, po, self.prior, dev)
            r = render_meshes(backend, [(v.float(), f.long()) for v, f in meshes], cam["mvp"], self.res,
                              texture_fn=empty_safe(texture_fn))
            img = to_uint8(r["rgb"][:, :3])
            if self.on_batch:
                self.on_batch("3d", s, img)
            yield img

    @torch.no_grad()
    def meshes(self, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """``n`` generated meshes ``(vertices float32 [V,3], faces int64 [F,3])`` (stream MESHES), world frame."""
        G, dev = self.gen.G, self.gen.device
        out = []
        for s, b in self._ranges(n):
            zt, zg, _, _ = latents(self.gen.z_dim, self.seed, STREAM_MESHES, s, b, self.prior)
            with self._noise_ctx(STREAM_MESHES, s):
                torch.manual_seed(derive(self.seed, STREAM_MESHES, s, 7))
                ms, _ = G.extract_meshes(zt.to(dev), zg.to(dev), truncation_psi=self.truncation_psi,
                                         noise_mode=self.noise_mode)
            for v, f in ms:
                out.append((v.detach().float().cpu().numpy().reshape(-1, 3),
                            f.detach().long().cpu().numpy().reshape(-1, 3)))
        return out

    def provider(self, source: str, n: int) -> Callable[[], Iterator[torch.Tensor]]:
        if source == "ori":
            return lambda: self.images_ori(n)
        if source == "3d":
            return lambda: self.images_3d(n)
        raise ValueError(f"image source {source!r} is not one of ori|3d")
