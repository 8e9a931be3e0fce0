"""GET3D generators.

Two field backbones share one interface (``synthesize`` once per batch, then ``query_geometry`` at the tet
vertices and ``query_texture`` at surface points):

- :class:`UnifiedGenerator` — one tri-plane StyleGAN2 backbone with geometry + texture heads
  (the public "improved generator"),
- :class:`SeparateGenerator` — two 3-D conv nets (SDF, deformation) + a texture tri-plane net
  (the paper's main model).

:class:`GET3DGenerator` adds the two mapping networks, iso-surface extraction (DMTet or FlexiCubes, through
:mod:`get3d.nn.surface`) and differentiable rendering (``get3d.raster.render.render_meshes``).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn
from torch.profiler import record_function

from get3d import cameras, perf
from get3d.geometry.dmtet import counts_per_sample
from get3d.nn.decoders import ModulatedMLP, TextureDecoder
from get3d.nn.layers import Conv3dLayer, ModulatedConv3d, positional_encoding
from get3d.nn.mapping import MappingNetwork, style_mix
from get3d.nn.triplane import TriplaneSynthesis, sample_triplane

FLEXI_WEIGHTS = 21  # FlexiCubes per-cube weights: 12 β (edges) + 8 α (corners) + 1 γ


# ----------------------------------------------------------------------------------------------------------
# Backbones

class UnifiedGenerator(nn.Module):
    """Shared tri-plane backbone: trunk + geometry heads styled by ``ws_geo``, texture heads by ``ws_tex``."""

    def __init__(self, w_dim: int = 512, triplane_resolution: int = 256, channels: list[int] | None = None,
                 channel_base: int = 32768, channel_max: int = 512, plane_channels: int = 32,
                 decoder_hidden: int = 32, texture_features: int = 16, scale: float = 1.0,
                 conv_clamp: float | None = 256, use_noise: bool = True, channels_last: bool = False,
                 flexicubes: bool = False, device=None):
        super().__init__()
        self.w_dim, self.scale = w_dim, scale
        self.synthesis = TriplaneSynthesis(w_dim, w_dim, triplane_resolution, channels, channel_base, channel_max,
                                           plane_channels, geometry=True, conv_clamp=conv_clamp,
                                           use_noise=use_noise, channels_last=channels_last, device=device)
        c = plane_channels
        self.sdf = ModulatedMLP(c, decoder_hidden, 1, w_dim, device=device)
        self.deformation = ModulatedMLP(c, decoder_hidden, 3, w_dim, device=device)
        self.texture = TextureDecoder(c, decoder_hidden, texture_features, w_dim, device=device)
        self.geometry_feature_dim = c
        self.cube_weights = (ModulatedMLP(8 * c, decoder_hidden, FLEXI_WEIGHTS, w_dim, device=device)
                             if flexicubes else None)
        self.num_ws = self.synthesis.num_ws + 1  # + one w for the point decoders

    #: the state entries query_geometry and query_texture read
    geometry_keys = ("geo_planes", "w_geo")
    texture_keys = ("tex_planes", "w_tex")

    def synthesize(self, ws_geo: torch.Tensor, ws_tex: torch.Tensor, noise_mode: str = "random") -> dict:
        geo, tex = self.synthesis(ws_geo, ws_tex, noise_mode=noise_mode)
        return {"geo_planes": geo, "tex_planes": tex, "w_geo": ws_geo[:, -1], "w_tex": ws_tex[:, -1]}

    def query_geometry(self, state: dict, points: torch.Tensor, return_features: bool = False):
        """``points`` [B, V, 3] → raw SDF [B, V], raw deformation [B, V, 3] (and features [B, V, C])."""
        f = sample_triplane(state["geo_planes"], points, self.scale)
        sdf = self.sdf(f, state["w_geo"]).squeeze(-1)
        dfm = self.deformation(f, state["w_geo"])
        return (sdf, dfm, f) if return_features else (sdf, dfm)

    def query_texture(self, state: dict, points: torch.Tensor) -> torch.Tensor:
        """``points`` [B, N, 3] → colour in [0, 1], [B, N, 3]."""
        return self.texture(sample_triplane(state["tex_planes"], points, self.scale), state["w_tex"])


class _Residual3dBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, w_dim: int, device=None):
        super().__init__()
        self.conv0 = ModulatedConv3d(in_ch, out_ch, w_dim, device=device)
        self.conv1 = ModulatedConv3d(out_ch, out_ch, w_dim, device=device)
        self.skip = Conv3dLayer(in_ch, out_ch, 1, device=device)

    def forward(self, x, w0, w1):
        x = F.interpolate(x, scale_factor=2, mode="trilinear", align_corners=False)
        y = self.conv1(self.conv0(x, w0), w1)
        return (y + self.skip(x)) * math.sqrt(0.5)


class GeometryVolumeNet(nn.Module):
    """Learned const C₀×4³ → modulated 3³ conv → residual upsampling blocks → feature volume; features are
    sampled trilinearly at query points, concatenated with [sin πp, cos πp] and decoded by a modulated MLP."""

    def __init__(self, w_dim: int, out_features: int, channels=(256, 256, 128, 64), mlp_width: int = 256,
                 mlp_hidden: int = 3, scale: float = 1.0, device=None):
        super().__init__()
        channels = list(channels)
        if len(channels) < 1:
            raise ValueError("geometry volume net needs at least one channel width")
        self.scale = scale
        self.const = nn.Parameter(torch.randn([channels[0], 4, 4, 4], device=device))
        self.conv_in = ModulatedConv3d(channels[0], channels[0], w_dim, device=device)
        self.blocks = nn.ModuleList(_Residual3dBlock(channels[i], channels[i + 1], w_dim, device=device)
                                    for i in range(len(channels) - 1))
        self.feature_dim = channels[-1] + 6
        self.mlp = ModulatedMLP(self.feature_dim, mlp_width, out_features, w_dim, num_hidden=mlp_hidden, device=device)
        self.num_ws = 1 + 2 * len(self.blocks) + 1
        self.volume_resolution = 4 * 2 ** len(self.blocks)

    def volume(self, ws: torch.Tensor) -> torch.Tensor:
        x = self.const.unsqueeze(0).repeat(ws.shape[0], 1, 1, 1, 1)
        x = self.conv_in(x, ws[:, 0])
        for i, blk in enumerate(self.blocks):
            x = blk(x, ws[:, 1 + 2 * i], ws[:, 2 + 2 * i])
        return x

    def features(self, vol: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
        p = (points.detach() / (0.5 * self.scale)).to(vol.dtype)  # [B, V, 3] in [-1, 1]
        f = F.grid_sample(vol, p[:, :, None, None, :], mode="bilinear", padding_mode="border",
                          align_corners=False)  # [B, C, V, 1, 1]; grid (x, y, z) → (W, H, D)
        f = f[:, :, :, 0, 0].transpose(1, 2)
        return torch.cat([f, positional_encoding(p)], dim=-1)

    def decode(self, feats: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if perf.active().recompute_geometry_mlp and torch.is_grad_enabled():
            # evaluated at every tet-grid vertex: its activations are most of a separate generator's memory
            return torch.utils.checkpoint.checkpoint(self.mlp, feats, w, use_reentrant=False)
        return self.mlp(feats, w)


class SeparateGenerator(nn.Module):
    """Separate geometry (two 3-D conv nets) and texture (tri-plane net on concat(w_tex, sg(w_geo)))."""

    def __init__(self, w_dim: int = 512, triplane_resolution: int = 256, channels: list[int] | None = None,
                 channel_base: int = 32768, channel_max: int = 512, plane_channels: int = 32,
                 decoder_hidden: int = 32, texture_features: int = 16, scale: float = 1.0,
                 geo_channels=(256, 256, 128, 64), geo_mlp_width: int = 256, sdf_hidden: int = 3,
                 deformation_hidden: int = 2, conv_clamp: float | None = 256, use_noise: bool = True,
                 channels_last: bool = False, flexicubes: bool = False, device=None):
        super().__init__()
        self.w_dim, self.scale = w_dim, scale
        wt = 2 * w_dim
        self.synthesis = TriplaneSynthesis(wt, wt, triplane_resolution, channels, channel_base, channel_max,
                                           plane_channels, geometry=False, conv_clamp=conv_clamp,
                                           use_noise=use_noise, channels_last=channels_last, device=device)
        self.sdf_net = GeometryVolumeNet(w_dim, 1, geo_channels, geo_mlp_width, sdf_hidden, scale, device=device)
        self.deformation_net = GeometryVolumeNet(w_dim, 3, geo_channels, geo_mlp_width, deformation_hidden, scale,
                                                 device=device)
        self.texture = TextureDecoder(plane_channels, decoder_hidden, texture_features, wt, device=device)
        self.geometry_feature_dim = self.sdf_net.feature_dim
        self.cube_weights = (ModulatedMLP(8 * self.geometry_feature_dim, geo_mlp_width, FLEXI_WEIGHTS, w_dim,
                                          device=device) if flexicubes else None)
        self.num_ws = max(self.synthesis.num_ws + 1, self.sdf_net.num_ws)

    geometry_keys = ("sdf_volume", "deformation_volume", "w_geo")
    texture_keys = ("tex_planes", "w_tex")

    def synthesize(self, ws_geo: torch.Tensor, ws_tex: torch.Tensor, noise_mode: str = "random") -> dict:
        ws_cat = torch.cat([ws_tex, ws_geo.detach()], dim=-1)
        _, tex = self.synthesis(ws_cat, ws_cat, noise_mode=noise_mode)
        return {"sdf_volume": self.sdf_net.volume(ws_geo), "deformation_volume": self.deformation_net.volume(ws_geo),
                "tex_planes": tex, "w_geo": ws_geo[:, -1], "w_tex": ws_cat[:, -1]}

    def query_geometry(self, state: dict, points: torch.Tensor, return_features: bool = False):
        fs = self.sdf_net.features(state["sdf_volume"], points)
        fd = self.deformation_net.features(state["deformation_volume"], points)
        sdf = self.sdf_net.decode(fs, state["w_geo"]).squeeze(-1)
        dfm = self.deformation_net.decode(fd, state["w_geo"])
        return (sdf, dfm, fs) if return_features else (sdf, dfm)

    def query_texture(self, state: dict, points: torch.Tensor) -> torch.Tensor:
        return self.texture(sample_triplane(state["tex_planes"], points, self.scale), state["w_tex"])


# ----------------------------------------------------------------------------------------------------------
# Cameras

def angles_from_c2w(c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(azimuth, polar) of camera centres, inverse of :func:`get3d.cameras.camera_position`."""
    p = c2w[:, :3, 3]
    r = p.norm(dim=-1).clamp_min(1e-12)
    polar = torch.acos((p[:, 1] / r).clamp(-1, 1))
    azimuth = torch.remainder(torch.atan2(p[:, 2], -p[:, 0]), 2 * math.pi)
    return azimuth, polar


@dataclass
class Camera:
    mvp: torch.Tensor  # [B, 4, 4] world → clip
    azimuth: torch.Tensor | None  # [B]
    polar: torch.Tensor | None  # [B]

    @property
    def condition(self) -> torch.Tensor | None:
        if self.azimuth is None:
            return None
        return cameras.camera_condition(self.azimuth, self.polar)


def resolve_camera(camera: Any, batch: int, device, radius: float = cameras.RADIUS,
                   fovy_deg: float = cameras.FOVY_DEG) -> Camera:
    """``(azimuth, polar)`` tensors, a ``c2w`` tensor [B, 4, 4], or a dict with ``mvp`` (and optionally
    ``azimuth``/``polar``) → :class:`Camera`."""
    if isinstance(camera, Camera):
        return camera
    if isinstance(camera, dict):
        if "mvp" in camera:
            return Camera(camera["mvp"].to(device).float(), camera.get("azimuth"), camera.get("polar"))
        if "c2w" in camera:
            camera = camera["c2w"]
        elif "azimuth" in camera:
            camera = (camera["azimuth"], camera["polar"])
        else:
            raise ValueError(f"camera dict needs 'mvp', 'c2w' or 'azimuth'+'polar'; got keys {sorted(camera)}")
    if isinstance(camera, (tuple, list)):
        if len(camera) != 2:
            raise ValueError(f"camera tuple must be (azimuth, polar), got {len(camera)} items")
        az, po = (torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for v in camera)
        if az.numel() != batch or po.numel() != batch:
            raise ValueError(f"camera angles must have {batch} entries, got {az.numel()} / {po.numel()}")
        c2w = cameras.camera_to_world(az, po, radius)
        return Camera(cameras.mvp_from_c2w(c2w, fovy_deg), az, po)
    if isinstance(camera, torch.Tensor):
        if camera.shape != (batch, 4, 4):
            raise ValueError(f"camera c2w must be [{batch}, 4, 4], got {tuple(camera.shape)}")
        c2w = camera.to(device).float()
        az, po = angles_from_c2w(c2w)
        return Camera(cameras.mvp_from_c2w(c2w, fovy_deg), az, po)
    raise TypeError(f"unsupported camera type {type(camera).__name__}: pass (azimuth, polar), c2w [B,4,4] "
                    "or a dict with 'mvp'")


# ----------------------------------------------------------------------------------------------------------
# Full generator

def flat_query(query: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor, sample_index: torch.Tensor,
               batch: int) -> torch.Tensor:
    """Evaluate a batched field ``query([B, Nmax, 3]) → [B, Nmax, C]`` at flat points with sample indices.

    Points are packed per sample (padded to the largest count), queried once, and unpacked.  Rasterised pixels
    arrive grouped by sample already; then the stable sort (and its gathers) is skipped.  Packing and unpacking
    go through one flat slot index (``index_copy`` / ``index_select``): a two-tensor index would run its backward
    as an accumulating ``index_put``, which sorts the indices (~0.4 ms per call for a 1024² batch on an H100).
    """
    n = points.shape[0]
    if n == 0:
        # Nothing covered: still run the query once (so its parameters take part in the graph) and return
        # an empty [0, C] result; reshape(0, -1) cannot infer C from an empty tensor.
        q = query(points.new_zeros(batch, 1, 3))
        return q[:, :0].reshape(0, q.shape[-1])
    idx = sample_index.long()
    counts = counts_per_sample(idx, batch)
    grouped = (idx[1:] >= idx[:-1]).all() if n > 1 else torch.ones((), dtype=torch.bool, device=idx.device)
    nmax, grouped = torch.stack([counts.max(), grouped.long()]).tolist()  # one host sync for both
    order = None if grouped else torch.argsort(idx, stable=True)
    sorted_idx = idx if order is None else idx[order]
    starts = torch.cumsum(counts, 0) - counts
    flat = torch.arange(n, device=points.device) + (sorted_idx * nmax - starts[sorted_idx])  # b·nmax + slot
    packed = points.new_zeros(batch * nmax, 3).index_copy(0, flat, points if order is None else points[order])
    out = query(packed.view(batch, nmax, 3))
    res = out.reshape(batch * nmax, -1).index_select(0, flat)
    if order is None:
        return res
    return res.new_empty(res.shape).index_copy(0, order, res)


class GET3DGenerator(nn.Module):
    """z_tex, z_geo, camera → textured meshes and their renderings (RGB + mask)."""

    def __init__(self, backbone: nn.Module, z_dim: int = 512, w_dim: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.998, img_resolution: int = 1024,
                 tet_res: int = 90, dmtet_scale: float = 1.0, deformation_multiplier: float = 1.0,
                 iso_surface: str = "dmtet", style_mixing_prob: float = 0.9, raster_backend: Any = None,
                 device=None):
        super().__init__()
        if iso_surface not in ("dmtet", "flexicubes"):
            raise ValueError(f"iso_surface must be 'dmtet' or 'flexicubes', got {iso_surface!r}")
        self.backbone = backbone
        self.z_dim, self.w_dim, self.img_resolution = z_dim, w_dim, img_resolution
        self.tet_res, self.dmtet_scale, self.deformation_multiplier = tet_res, dmtet_scale, deformation_multiplier
        self.iso_surface, self.style_mixing_prob = iso_surface, style_mixing_prob
        self.num_ws = backbone.num_ws
        kw = {"num_layers": mapping_layers, "lr_multiplier": mapping_lr_multiplier, "w_avg_beta": w_avg_beta,
              "device": device}
        self.mapping_tex = MappingNetwork(z_dim, w_dim, self.num_ws, **kw)
        self.mapping_geo = MappingNetwork(z_dim, w_dim, self.num_ws, **kw)
        # a backend name ('auto' | 'torch' | 'nvdiffrast') or a RasterBackend object; names are resolved (and
        # grids built) through get3d.nn.surface's module caches, so copies of G (EMA) share them
        self.raster_backend = raster_backend

    # -- components -----------------------------------------------------------------------------------
    def grid(self, device):
        from get3d.nn import surface
        return surface.make_grid(self.iso_surface, self.tet_res, self.dmtet_scale, device)

    def backend(self, device):
        if self.raster_backend is None or isinstance(self.raster_backend, str):
            from get3d.nn import surface
            return surface.make_raster_backend(self.raster_backend, device)
        return self.raster_backend

    def padded_capacity(self):
        """The fixed-capacity extraction's slots when ``perf.padded_surface`` is on (training, DMTet), else None.
        Held by this module (an EMA copy has its own) and grown by the training loop after an overflow."""
        from get3d import perf
        if not (self.training and self.iso_surface == "dmtet" and perf.active().padded_surface):
            return None
        cap = getattr(self, "_surface_capacity", None)
        if cap is None:
            from get3d.geometry.padded import SurfaceCapacity
            n, share = perf.active().surface_capacity, perf.active().pixel_capacity
            pixels = max(1, math.ceil(share * self.img_resolution ** 2)) if share < 1 else 0
            cap = self._surface_capacity = SurfaceCapacity(verts=n, faces=n, pixels=pixels)
        return cap

    # -- mapping --------------------------------------------------------------------------------------
    def mapping(self, z_tex: torch.Tensor, z_geo: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, style_mixing: bool | float = False,
                generator: torch.Generator | None = None, update_w_avg: bool | None = None):
        """→ (ws_tex, ws_geo), each [B, num_ws, w_dim].  ``style_mixing`` True uses ``style_mixing_prob``."""
        ws_tex = self.mapping_tex(z_tex, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                  update_w_avg=update_w_avg)
        ws_geo = self.mapping_geo(z_geo, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                                  update_w_avg=update_w_avg)
        if style_mixing:
            p = self.style_mixing_prob if style_mixing is True else float(style_mixing)
            ws_tex = style_mix(self.mapping_tex, ws_tex, p, generator, truncation_psi)
            ws_geo = style_mix(self.mapping_geo, ws_geo, p, generator, truncation_psi)
        return ws_tex, ws_geo

    # -- geometry -------------------------------------------------------------------------------------
    def grid_fields(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """DMTet: the backbone's geometry query at every grid vertex and the shape-static post-processing, from the
        state tensors named by ``backbone.geometry_keys``: ``(deformed verts [B,V,3], guarded sdf [B,V], sdf_reg,
        empty_loss [B])``.  Tensors in, tensors out, no host sync: the training loop may capture it
        (:class:`get3d.train.graphs.GraphedGridFields`)."""
        from get3d.nn import surface
        state = dict(zip(self.backbone.geometry_keys, inputs))
        grid = self.grid(inputs[0].device)
        sdf, dfm = self.backbone.query_geometry(state, grid.verts.unsqueeze(0).expand(inputs[0].shape[0], -1, -1))
        f = surface.dmtet_fields(grid, sdf, dfm, self.tet_res, self.deformation_multiplier)
        return f["verts"], f["sdf"], f["sdf_reg"], f["empty_loss"]

    def geometry(self, state: dict, batch: int, device) -> dict:
        """Evaluate SDF + deformation on the grid and extract one mesh per sample."""
        from get3d.nn import surface
        grid = self.grid(device)
        verts = grid.verts.unsqueeze(0).expand(batch, -1, -1)
        if self.iso_surface == "dmtet":
            fields = dict(zip(("verts", "sdf", "sdf_reg", "empty_loss"),
                              self.grid_fields(*(state[k] for k in self.backbone.geometry_keys))))
            res = surface.extract_surface(self.iso_surface, grid, fields["sdf"], None, self.tet_res,
                                          self.deformation_multiplier, capacity=self.padded_capacity(),
                                          fields=fields)
        else:
            out = self.backbone.query_geometry(state, verts, return_features=self.backbone.cube_weights is not None)
            weights = None if len(out) == 2 else self.backbone.cube_weights(surface.cube_features(out[2], grid),
                                                                           state["w_geo"])
            res = surface.extract_surface(self.iso_surface, grid, out[0], out[1], self.tet_res,
                                          self.deformation_multiplier, weights, training=self.training)
        res["deformation"] = res["verts"] - verts
        return res

    def shade(self, rast: torch.Tensor, pos_clip: torch.Tensor, tri: torch.Tensor, v_all: torch.Tensor,
              *texture_inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A rasterized padded batch → ``(mask, rgb, depth, hard_mask, pixel_overflow, pixel_need)``
        (:func:`get3d.raster.render.shade_padded` with the texture field of the state tensors named by
        ``backbone.texture_keys``).  Tensors in, tensors out, no host read: the training loop may capture it
        (:class:`get3d.train.graphs.GraphedShading`)."""
        from get3d.raster.render import shade_padded
        state = dict(zip(self.backbone.texture_keys, texture_inputs))
        return shade_padded(self.backend(rast.device), rast, pos_clip, tri, v_all,
                            lambda p: self.backbone.query_texture(state, p), self.padded_capacity().pixels)

    # -- forward --------------------------------------------------------------------------------------
    def synthesize(self, ws_tex: torch.Tensor, ws_geo: torch.Tensor, camera: Any, noise_mode: str = "random",
                   resolution: int | None = None, render: bool = True) -> dict:
        b, device = ws_tex.shape[0], ws_tex.device
        with record_function("stage/synthesis"):
            state = self.backbone.synthesize(ws_geo, ws_tex, noise_mode=noise_mode)
        with record_function("stage/geometry"):
            out = self.geometry(state, b, device)
        out.update(ws_tex=ws_tex, ws_geo=ws_geo, state=state)
        if not render:
            return out
        from get3d.nn import surface
        cam = resolve_camera(camera, b, device)
        res = resolution or self.img_resolution

        def texture_fn(points: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
            return flat_query(lambda p: self.backbone.query_texture(state, p), points, sample_index, b)

        texture_fn.batched = lambda p: self.backbone.query_texture(state, p)   # [B, N, 3] → [B, N, C]
        # a padded batch is shaded by self.shade (capturable), which reads the state tensors by name
        texture_fn.shade_padded = lambda _be, rast, pos_clip, tri, v_all, *_: self.shade(
            rast, pos_clip, tri, v_all, *(state[k] for k in self.backbone.texture_keys))
        with record_function("stage/render"):
            r = surface.render(self.backend(device), out["meshes"], cam.mvp, res, texture_fn)
        if "pixel_overflow" in r:         # padded extraction: the renderer's pixel slots can overflow too
            need = out["surface_need"]
            out["surface_overflow"] = out["surface_overflow"] + r["pixel_overflow"].sum()
            out["surface_need"] = torch.cat([need[:2], r["pixel_need"].reshape(1).to(need.dtype)])
        mask, rgb = r["mask"], r["rgb"]
        img = torch.cat([rgb * 2 - 1, mask], dim=1)  # black (−1) background where rgb is 0
        out.update(img=img, mask=mask, rgb=rgb, camera=cam, camera_condition=cam.condition)
        return out

    def forward(self, z_tex: torch.Tensor, z_geo: torch.Tensor, camera: Any, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, style_mixing: bool | float = False,
                noise_mode: str = "random", generator: torch.Generator | None = None,
                update_w_avg: bool | None = None, resolution: int | None = None) -> dict:
        """Generate and render.  Returns a dict with ``img`` [B, 4, H, W] (RGB in [−1, 1] on black, then the
        antialiased mask in [0, 1]), ``mask``, ``rgb`` (in [0, 1]), ``meshes`` (list of (verts, faces)),
        ``sdf`` [B, V], ``deformation``, ``sdf_reg_loss``, ``empty_shape_loss``, ``ws_tex``, ``ws_geo``,
        ``camera_condition`` [B, 2] (azimuth, polar; for the discriminators)."""
        if z_tex.shape != z_geo.shape:
            raise ValueError(f"z_tex {tuple(z_tex.shape)} and z_geo {tuple(z_geo.shape)} must match")
        with record_function("stage/mapping"):
            ws_tex, ws_geo = self.mapping(z_tex, z_geo, truncation_psi, truncation_cutoff, style_mixing, generator,
                                          update_w_avg)
        return self.synthesize(ws_tex, ws_geo, camera, noise_mode=noise_mode, resolution=resolution)

    @torch.no_grad()
    def extract_meshes(self, z_tex: torch.Tensor, z_geo: torch.Tensor, truncation_psi: float = 0.7,
                       noise_mode: str = "const"):
        """Meshes for export: list of ``(verts [V,3], faces [F,3])`` and ``texture_fn(points [N,3],
        sample_index [N]) → colour in [0, 1] [N, 3]`` (for UV baking)."""
        ws_tex, ws_geo = self.mapping(z_tex, z_geo, truncation_psi, update_w_avg=False)
        out = self.synthesize(ws_tex, ws_geo, None, noise_mode=noise_mode, render=False)
        state, b = out["state"], z_tex.shape[0]

        @torch.no_grad()
        def texture_fn(points: torch.Tensor, sample_index: torch.Tensor) -> torch.Tensor:
            return flat_query(lambda p: self.backbone.query_texture(state, p), points, sample_index, b)

        meshes = [(v.detach(), f.detach()) for v, f in out["meshes"]]
        return meshes, texture_fn
