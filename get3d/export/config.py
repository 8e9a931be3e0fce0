"""Export knobs (section ``export`` of params.yaml): what ``get3d sample`` and the ``export`` stage produce."""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec

FORMATS = ("glb", "obj")
VIDEO_FORMATS = ("gif", "mp4")


@dataclass(frozen=True)
class ExportConfig:
    seeds: str = spec("0-15", help="samples to export: seeds as ranges, e.g. '0-63,70' (geometry = texture seed)")
    geo_seeds: str = spec("", help="geometry seeds; with tex_seeds (or alone, paired with seeds) every "
                                   "geometry x texture combination is exported ('' = not used)")
    tex_seeds: str = spec("", help="texture seeds (see geo_seeds)")
    truncation_psi: float = spec(0.7, min=0.0, max=2.0, help="truncation of the latent codes (1 = none)")
    noise_mode: str = spec("const", choices=("const", "random"), help="synthesis noise (const: reproducible)")
    batch_size: int = spec(4, min=1, max=1024, help="shapes generated (and baked) per batch")
    formats: list[str] = spec(default_factory=lambda: ["glb", "obj"],  # noqa: RUF009 - the project's field spec
                              help="mesh files per sample: glb and/or obj")
    texture_size: int = spec(1024, min=16, max=8192, help="square texture atlas size in texels")
    atlas_padding: int = spec(2, min=0, max=64, help="texels between UV charts (xatlas)")
    atlas_workers: int = spec(0, min=0, max=256, help="processes computing UV atlases (0 = one per CPU core)")
    seam_dilation: int = spec(4, min=0, max=256,
                              help="texels the baked charts are grown by (seams); the rest of the atlas is then "
                                   "filled by push-pull")
    min_component_fraction: float = spec(0.0, min=0.0, max=1.0,
                                         help="drop connected components whose area is below this fraction of "
                                              "the mesh's (0 = keep all)")
    weld_tolerance: float = spec(0.0, min=0.0, max=1.0, help="merge vertices closer than this (0 = off)")
    preview_resolution: int = spec(256, min=16, max=4096, help="size of preview images and turntable frames")
    preview_elevation_deg: float = spec(20.0, min=-89.0, max=89.0, help="camera elevation of previews")
    turntable_frames: int = spec(36, min=0, max=3600, help="frames per turntable (0 = no turntables)")
    turntable_fps: int = spec(12, min=1, max=120, help="turntable frame rate")
    video_formats: list[str] = spec(default_factory=lambda: ["gif", "mp4"],  # noqa: RUF009
                                    help="turntable / interpolation video formats: gif and/or mp4")
    grid_size: int = spec(4, min=0, max=32, help="geometry x texture preview grid: rows and columns (0 = none)")
    interpolation_steps: int = spec(8, min=0, max=1024,
                                    help="frames of the interpolation between the first two seeds (0 = none)")
    perturbation_count: int = spec(4, min=0, max=256,
                                   help="local variants of the first seed (small noise on its latents; 0 = none)")
    perturbation_sigma: float = spec(0.1, min=0.0, max=10.0, help="std of the latent noise of the variants")
    gallery: bool = spec(True, help="write gallery.html (interactive offline 3D viewer of every GLB)")
    fid_samples: int = spec(0, min=0, max=1_000_000,
                            help="samples for the export FID (exported files vs generator renders; 0 = off)")
    fid_resolution: int | None = spec(None, min=8, max=4096, help="image size for the export FID (None = dataset's)")
    seed: int = spec(0, min=0, max=2**31 - 1, help="seed of the perturbation noise and the FID samples")
    device: str = spec("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")
    backend: str = spec("auto", choices=("auto", "torch", "nvdiffrast"), help="rasterizer for baking and renders")

    def validate(self, prefix: str = "export") -> None:
        from .seeds import SeedError, parse_seeds

        for key in ("seeds", "geo_seeds", "tex_seeds"):
            value = getattr(self, key)
            if key == "seeds" or value:
                try:
                    parse_seeds(value)
                except SeedError as exc:
                    raise ConfigError(f"{prefix}.{key}: {exc}") from None
        for key, allowed in (("formats", FORMATS), ("video_formats", VIDEO_FORMATS)):
            values = getattr(self, key)
            for i, v in enumerate(values):
                if v not in allowed:
                    raise ConfigError(f"{prefix}.{key}[{i}]: {v!r} is not one of {list(allowed)}")
            if len(set(values)) != len(values):
                raise ConfigError(f"{prefix}.{key}: {values!r} lists a value twice")
        if not self.formats:
            raise ConfigError(f"{prefix}.formats: empty; choose from {list(FORMATS)}")
        if self.gallery and "glb" not in self.formats:
            raise ConfigError(f"{prefix}.gallery: the gallery shows GLB files; add 'glb' to {prefix}.formats")

    def __post_init__(self):
        self.validate()

    def resolve_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("export.device: 'cuda' requested but CUDA is not available")
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device
