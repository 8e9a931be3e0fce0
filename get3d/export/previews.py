"""Preview images and videos of an export folder.

- ``previews/samples.png``: every exported sample, re-rendered from its exported file (what users get);
- ``turntables/<name>.gif|.mp4`` (+ ``.png`` poster): a 360° orbit of each exported file;
- ``previews/geo_tex_grid.png``: rows share the geometry code, columns the texture code (the generator's own
  renders: disentanglement at a glance);
- ``previews/interpolation.png|.gif|.mp4``: linear interpolation in W between the first two samples' codes;
- ``previews/perturbation.png``: the first sample, then variants with small Gaussian noise on its latents
  (the paper's local "novel shapes").

Every camera is on the GET3D sphere (radius and field of view of the training prior) at
``export.preview_elevation_deg``; backgrounds are white.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from get3d import meshio

from .config import ExportConfig
from .render import on_background, orbit_mvp, render_field, render_textured, to_uint8
from .sample import Code, code_latents
from .video import grid, write_png, write_video

PREVIEW_AZIMUTH_DEG = 45.0


def _images(r: dict) -> list[np.ndarray]:
    rgb = on_background(r["rgb"][:, :3], r["mask"])
    return list(to_uint8(rgb).permute(0, 2, 3, 1).cpu().numpy())


class Previewer:
    """Renders previews of one generator at one preview setting."""

    def __init__(self, gen, cfg: ExportConfig, backend, prior):
        self.gen, self.cfg, self.backend, self.prior = gen, cfg, backend, prior

    def mvp(self, azimuths) -> torch.Tensor:
        return orbit_mvp(list(azimuths), self.cfg.preview_elevation_deg, self.prior.radius, self.prior.fovy_deg,
                         device=self.gen.device)

    # -- exported files ------------------------------------------------------------------------------
    def load(self, path) -> tuple:
        m = meshio.load_textured(path)
        return tuple(torch.from_numpy(np.array(x)) for x in (m.verts, m.faces, m.uvs, m.texture))

    def render_files(self, meshes: list[tuple], azimuths) -> list[np.ndarray]:
        res = self.cfg.preview_resolution
        out = []
        for s in range(0, len(meshes), 16):
            chunk, az = meshes[s:s + 16], list(azimuths)[s:s + 16]
            out += _images(render_textured(self.backend, chunk, self.mvp(az), res))
        return out

    # -- generator renders ---------------------------------------------------------------------------
    @torch.no_grad()
    def field_images(self, ws_tex: torch.Tensor, ws_geo: torch.Tensor) -> list[np.ndarray]:
        from get3d.nn.generator import flat_query

        G, out = self.gen.G, []
        for s in range(0, ws_tex.shape[0], self.cfg.batch_size):
            wt, wg = ws_tex[s:s + self.cfg.batch_size], ws_geo[s:s + self.cfg.batch_size]
            syn = G.synthesize(wt, wg, None, noise_mode=self.cfg.noise_mode, render=False)
            state, b = syn["state"], wt.shape[0]

            def texture_fn(points, sample_index, state=state, b=b):
                return flat_query(lambda p: G.backbone.query_texture(state, p), points, sample_index, b)

            r = render_field(self.backend, syn["meshes"], texture_fn, self.mvp([PREVIEW_AZIMUTH_DEG] * b),
                             self.cfg.preview_resolution)
            out += _images(r)
        return out

    @torch.no_grad()
    def ws(self, z_tex: torch.Tensor, z_geo: torch.Tensor, psi: float) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.gen.device
        return self.gen.G.mapping(z_tex.to(dev), z_geo.to(dev), psi, update_w_avg=False)


def write_previews(gen, samples: list[dict], cfg: ExportConfig, psi: float, out_dir: Path, backend, prior) -> dict:
    """All previews of the export folder ``out_dir`` for the exported ``samples`` (records of sample_meshes);
    returns ``{"samples_grid", "turntables": {name: {...}}, "geo_tex_grid", "interpolation", "perturbation"}``
    (paths)."""
    pv = Previewer(gen, cfg, backend, prior)
    prev_dir, turn_dir = out_dir / "previews", out_dir / "turntables"
    result: dict = {"turntables": {}}
    live = [m for m in samples if not m["empty"]]
    files = {m["name"]: pv.load(m.get("glb") or m["obj"]) for m in live}
    if live:
        imgs = pv.render_files([files[m["name"]] for m in live], [PREVIEW_AZIMUTH_DEG] * len(live))
        result["samples_grid"] = str(write_png(prev_dir / "samples.png",
                                               grid(imgs, math.ceil(math.sqrt(len(imgs))))))
    if cfg.turntable_frames > 0:
        az = [360.0 * k / cfg.turntable_frames for k in range(cfg.turntable_frames)]
        for m in live:
            frames = pv.render_files([files[m["name"]]] * len(az), az)
            entry = write_video(turn_dir / m["name"], frames, cfg.turntable_fps, cfg.video_formats)
            entry["png"] = str(write_png(turn_dir / f"{m['name']}.png", frames[0]))
            result["turntables"][m["name"]] = entry
    codes = [Code(m["geo_seed"], m["tex_seed"]) for m in samples]
    geo = list(dict.fromkeys(c.geo_seed for c in codes))
    tex = list(dict.fromkeys(c.tex_seed for c in codes))
    if cfg.grid_size > 0 and codes:
        n_g, n_t = min(cfg.grid_size, len(geo)), min(cfg.grid_size, len(tex))
        combos = [Code(g, t) for g in geo[:n_g] for t in tex[:n_t]]
        wt, wg = pv.ws(*code_latents(combos, gen.z_dim), psi)
        result["geo_tex_grid"] = str(write_png(prev_dir / "geo_tex_grid.png", grid(pv.field_images(wt, wg), n_t)))
    if cfg.interpolation_steps > 1 and len(codes) >= 2:
        wt, wg = pv.ws(*code_latents(codes[:2], gen.z_dim), psi)
        t = torch.linspace(0, 1, cfg.interpolation_steps, device=wt.device).view(-1, 1, 1)
        frames = pv.field_images(torch.lerp(wt[:1], wt[1:2], t), torch.lerp(wg[:1], wg[1:2], t))
        result["interpolation"] = {"png": str(write_png(prev_dir / "interpolation.png", grid(frames, len(frames)))),
                                   "from": codes[0].name, "to": codes[1].name,
                                   **write_video(prev_dir / "interpolation", frames, cfg.turntable_fps,
                                                 cfg.video_formats)}
    if cfg.perturbation_count > 0 and codes:
        zt, zg = code_latents(codes[:1], gen.z_dim)
        g = torch.Generator().manual_seed(cfg.seed)
        n = cfg.perturbation_count
        zt = torch.cat([zt, zt + cfg.perturbation_sigma * torch.randn(n, gen.z_dim, generator=g)])
        zg = torch.cat([zg, zg + cfg.perturbation_sigma * torch.randn(n, gen.z_dim, generator=g)])
        wt, wg = pv.ws(zt, zg, psi)
        imgs = pv.field_images(wt, wg)
        result["perturbation"] = {"png": str(write_png(prev_dir / "perturbation.png", grid(imgs, len(imgs)))),
                                  "of": codes[0].name, "sigma": cfg.perturbation_sigma}
    return result
