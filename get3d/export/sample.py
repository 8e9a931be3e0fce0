"""``get3d sample``: a trained generator + seeds → textured meshes (UV atlas, baked texture, OBJ/GLB files).

Latent codes: seed ``s`` draws ``z_tex`` then ``z_geo`` (``z_dim`` normals each) from ``torch.Generator``
seeded with ``s`` (as get3d.evaluate draws its codes), so a mesh's geometry code is that of its geometry seed and
its texture code that of its texture seed.  ``seeds`` alone pairs geometry and texture of the same seed; with
``geo_seeds`` and/or ``tex_seeds`` (each defaulting to ``seeds``) every geometry x texture combination is made.

Per batch (``export.batch_size`` shapes, on the GPU when there is one): generation (mapping, tri-planes,
iso-surface) → optional clean-up (weld, drop small components) → UV atlases (xatlas, a process pool over the
CPU cores) → texture baking (rasterized in UV space on the project's raster backend, seams dilated) → files,
written atomically per sample (all its files or none).  Same model + seeds + config → byte-identical files.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from get3d import meshio

from .atlas import atlas_pool, clean_mesh, uv_atlases
from .bake import bake_textures
from .config import ExportConfig
from .seeds import parse_seeds

log = logging.getLogger(__name__)
SAMPLES_FILE = "samples.json"
MODEL_SCHEME = "models:/"


class ExportError(RuntimeError):
    """Export cannot run (bad model, seeds or folder); the message names it and the reason."""


@dataclasses.dataclass(frozen=True)
class Code:
    geo_seed: int
    tex_seed: int

    @property
    def name(self) -> str:
        if self.geo_seed == self.tex_seed:
            return f"seed{self.geo_seed:04d}"
        return f"geo{self.geo_seed:04d}_tex{self.tex_seed:04d}"


# ------------------------------------------------------------------------------------------------ inputs

def resolve_generator(source: str | os.PathLike) -> Path:
    """A ``generator.pt`` (or training run folder) path, or a registry URI ``models:/<name>@<alias>`` (downloaded
    through :func:`get3d.tracking.download_generator`) → the path of an inference snapshot."""
    from get3d.evaluate.generate import resolve_snapshot

    s = str(source)
    if s.startswith(MODEL_SCHEME):
        try:
            from get3d.tracking import download_generator
        except ImportError as exc:
            raise ExportError(f"{s}: registry URIs need get3d.tracking (MLflow), which is not available ({exc})") \
                from None
        return Path(download_generator(s))
    try:
        return resolve_snapshot(s)
    except FileNotFoundError as exc:
        raise ExportError(f"generator {s}: {exc}") from None


def load_model(source, device: str = "cpu", backend: str = "auto"):
    """:class:`get3d.evaluate.generate.LoadedGenerator` from a path / URI (an already loaded one passes through)."""
    from get3d.evaluate.generate import LoadedGenerator, load_generator
    from get3d.train.checkpoint import CheckpointError

    if isinstance(source, LoadedGenerator):
        return source
    path = resolve_generator(source)
    try:
        return load_generator(path, device, backend)
    except (CheckpointError, OSError, RuntimeError, KeyError, ValueError) as exc:
        raise ExportError(f"generator {path}: not a usable inference snapshot ({exc})") from None


def make_codes(cfg: ExportConfig, seeds=None, geo_seeds=None, tex_seeds=None) -> list[Code]:
    """The (geometry, texture) seed pairs to export; arguments override the config's lists."""
    base = parse_seeds(seeds if seeds is not None else cfg.seeds)
    geo = geo_seeds if geo_seeds is not None else (cfg.geo_seeds or None)
    tex = tex_seeds if tex_seeds is not None else (cfg.tex_seeds or None)
    if geo is None and tex is None:
        return [Code(s, s) for s in base]
    gl = parse_seeds(geo) if geo is not None else base
    tl = parse_seeds(tex) if tex is not None else base
    return [Code(g, t) for g in gl for t in tl]


def seed_latent(seed: int, z_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_tex, z_geo)`` of a seed, each ``[z_dim]``."""
    g = torch.Generator().manual_seed(int(seed))
    z_tex = torch.randn(z_dim, generator=g)
    z_geo = torch.randn(z_dim, generator=g)
    return z_tex, z_geo


def code_latents(codes: list[Code], z_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_tex [n, z], z_geo [n, z])`` of the codes."""
    zt = torch.stack([seed_latent(c.tex_seed, z_dim)[0] for c in codes])
    zg = torch.stack([seed_latent(c.geo_seed, z_dim)[1] for c in codes])
    return zt, zg


def check_writable(out_dir: Path) -> Path:
    """Create ``out_dir`` and prove it takes a file; else :class:`ExportError` naming it."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=str(out_dir))
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ExportError(f"output folder {out_dir} is not writable ({exc.strerror or exc})") from None
    return out_dir


# ------------------------------------------------------------------------------------------------ generation

@torch.no_grad()
def generate(gen, z_tex: torch.Tensor, z_geo: torch.Tensor, psi: float, noise_mode: str):
    """Meshes (numpy, world frame) and the batch's texture field ``texture_fn(points, sample_index)``."""
    dev = gen.device
    meshes, texture_fn = gen.G.extract_meshes(z_tex.to(dev), z_geo.to(dev), truncation_psi=psi,
                                              noise_mode=noise_mode)
    out = [(v.float().cpu().numpy().reshape(-1, 3), f.long().cpu().numpy().reshape(-1, 3)) for v, f in meshes]
    return out, texture_fn


def raster_backend(gen, name: str):
    from get3d.raster import get_backend

    return get_backend(name, gen.device)


@dataclasses.dataclass
class Timer:
    parts: dict = dataclasses.field(default_factory=lambda: {"generation": 0.0, "uv_atlas": 0.0, "bake": 0.0,
                                                             "write": 0.0})

    def add(self, part: str, t0: float, device: torch.device | None = None) -> float:
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        self.parts[part] += t - t0
        return t


def write_sample(job: tuple) -> None:
    """Write one sample's files (all or none); runs in a pool worker or inline.  ``job`` = ``(out_dir, name,
    formats, verts, faces, uvs, texture)``."""
    out_dir, name, formats, verts, faces, uvs, texture = job
    mesh = meshio.TexturedMesh(verts, faces, uvs, texture)
    png = meshio.png_bytes(texture)  # encoded once for both formats
    with meshio.StagedFiles() as staged:
        if "glb" in formats:
            meshio.write_glb(staged, out_dir / f"{name}.glb", mesh, name, png=png)
        if "obj" in formats:
            meshio.write_textured_obj(staged, out_dir / f"{name}.obj", mesh,
                                      comments=[f"GET3D sample {name} (+y up)"], png=png)


def export_batch(gen, codes: list[Code], cfg: ExportConfig, psi: float, backend, out_dir: Path, pool,
                 timer: Timer, pending: list | None = None) -> list[dict]:
    """Generate, atlas, bake and write one batch of codes; returns one record per code.

    With a ``pool``, the files are written by its workers: their futures are appended to ``pending`` (the caller
    waits for them; a batch's writes then overlap the next batch's generation), else they are written here."""
    t = time.perf_counter()
    zt, zg = code_latents(codes, gen.z_dim)
    raw, texture_fn = generate(gen, zt, zg, psi, cfg.noise_mode)
    t = timer.add("generation", t, gen.device)
    cleaned = [clean_mesh(v, f, cfg.weld_tolerance, cfg.min_component_fraction) for v, f in raw]
    live = [i for i, (_, f) in enumerate(cleaned) if len(f) > 0]
    atlases = dict(zip(live, uv_atlases([cleaned[i] for i in live], cfg.texture_size, cfg.atlas_padding,
                                        cfg.atlas_workers, pool=pool)))
    t = timer.add("uv_atlas", t)
    textures = {}
    if live:
        dev = gen.device
        meshes = [(torch.from_numpy(atlases[i].verts), torch.from_numpy(atlases[i].faces),
                   torch.from_numpy(atlases[i].uvs)) for i in live]
        baked = bake_textures(backend, [(v.to(dev), f.to(dev), uv.to(dev)) for v, f, uv in meshes], texture_fn,
                              cfg.texture_size, cfg.seam_dilation, sample_index=live)
        tex = baked["texture"].cpu().numpy()
        textures = {i: tex[k] for k, i in enumerate(live)}
    t = timer.add("bake", t, gen.device)
    records = []
    for i, code in enumerate(codes):
        rec = {"name": code.name, "seed": code.geo_seed if code.geo_seed == code.tex_seed else None,
               "geo_seed": code.geo_seed, "tex_seed": code.tex_seed, "empty": i not in atlases,
               "num_vertices": 0, "num_faces": 0}
        if i in atlases:
            a = atlases[i]
            job = (out_dir, code.name, tuple(cfg.formats), a.verts, a.faces, a.uvs, textures[i])
            if pool is not None and pending is not None:
                pending.append(pool.submit(write_sample, job))
            else:
                write_sample(job)
            if "glb" in cfg.formats:
                rec["glb"] = str(out_dir / f"{code.name}.glb")
            if "obj" in cfg.formats:
                rec.update({k: str(out_dir / f"{code.name}.{k}") for k in ("obj", "mtl", "png")})
            rec.update(num_vertices=len(a.verts), num_faces=len(a.faces))
        records.append(rec)
    timer.add("write", t)
    return records


def _wait(futures: list, timer: Timer) -> None:
    t = time.perf_counter()
    try:
        for f in futures:
            f.result()
    finally:
        futures.clear()
        timer.add("write", t)


def sample_meshes(model, out_dir: str | os.PathLike, cfg: ExportConfig, *, seeds=None, geo_seeds=None,
                  tex_seeds=None, psi: float | None = None) -> dict:
    """Export textured meshes of a generator (see the module docstring).

    ``model``: a path to ``generator.pt`` / a run folder, a ``models:/`` URI, or a loaded generator.
    Returns ``{"meshes": [{"name", "seed", "geo_seed", "tex_seed", "glb", "obj", "mtl", "png", "num_faces",
    "empty"}, ...], "timing": {part: seconds}, "shapes_per_s", "model", "psi", "config", "device"}`` and
    writes it as ``samples.json`` in ``out_dir``."""
    from get3d.io import atomic_write_json
    from get3d.schema import to_dict

    psi = float(cfg.truncation_psi if psi is None else psi)
    try:
        codes = make_codes(cfg, seeds, geo_seeds, tex_seeds)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    out_dir = check_writable(Path(out_dir))
    gen = load_model(model, cfg.resolve_device(), cfg.backend)
    backend = raster_backend(gen, cfg.backend)
    timer = Timer()
    t0 = time.perf_counter()
    records: list[dict] = []
    pool = atlas_pool(cfg.atlas_workers) if len(codes) > 1 else None
    previous: list = []
    try:
        for s in range(0, len(codes), cfg.batch_size):
            current: list = []
            records += export_batch(gen, codes[s:s + cfg.batch_size], cfg, psi, backend, out_dir, pool, timer,
                                    current)
            _wait(previous, timer)  # at most two batches of files in flight
            previous = current
        _wait(previous, timer)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    total = time.perf_counter() - t0
    empty = [r["name"] for r in records if r["empty"]]
    if empty:
        warnings.warn(f"{len(empty)} of {len(records)} samples have no surface after clean-up (no files "
                      f"written): {empty[:10]}", RuntimeWarning, stacklevel=2)
    result = {"meshes": records, "timing": timer.parts, "total_s": total,
              "shapes_per_s": len(records) / total if total > 0 else None, "psi": psi,
              "model": _model_info(gen, model), "config": to_dict(cfg), "device": str(gen.device)}
    atomic_write_json(out_dir / SAMPLES_FILE, {k: v for k, v in result.items() if k not in ("timing", "total_s",
                                                                                            "shapes_per_s")})
    return result


def _model_info(gen, source) -> dict:
    from get3d.evaluate.generate import LoadedGenerator

    return {"source": None if isinstance(source, LoadedGenerator) else str(source), "kimg": gen.kimg,
            "z_dim": gen.z_dim}


def load_samples(out_dir: str | os.PathLike) -> dict:
    import json

    path = Path(out_dir) / SAMPLES_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ExportError(f"{path}: cannot read the sample list ({exc})") from None
