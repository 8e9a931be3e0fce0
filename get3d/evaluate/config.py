"""Evaluation knobs (section ``evaluate`` of params.yaml).

Defaults are the published GET3D evaluation protocol: FID/KID on 50k generated
images (fresh z, one random prior camera each, psi = 1) against all rendered views of the test split; KID over
100 subsets of 1000; CD/COV/MMD and LFD on 5 x |test split| generated meshes with 2,048 surface points.
The CPU smoke profile only shrinks the counts.
"""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec

#: Image sources for FID/KID: ``ori`` = the generator's own renderings (FID-Ori, the paper's number);
#: ``3d`` = the extracted textured meshes rendered by get3d.raster.render_meshes (FID-3D).
IMAGE_SOURCES = ("ori", "3d")


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: list[str] = spec(default_factory=lambda: ["fid", "kid", "cd", "lfd"],
                              help="registry names (get3d.metrics.available_metrics()); COV/MMD come out of "
                                   "'cd' (cov_cd, mmd_cd) and 'lfd' (cov_lfd, mmd_lfd)")
    image_sources: list[str] = spec(default_factory=lambda: ["ori"],
                                    help="images FID/KID are computed on: 'ori' (generator renderings, keys fid/kid) "
                                         "and/or '3d' (extracted meshes through the standard rasterizer, keys "
                                         "fid_3d/kid_3d)")
    num_fake_images: int = spec(50_000, min=2, help="generated images for FID/KID (fid50k: 50000)")
    fake_mesh_factor: float = spec(5.0, min=0.01, max=1000.0,
                                   help="generated meshes for CD/COV/MMD/LFD = round(factor x test-split shapes)")
    num_points: int = spec(2048, min=16, max=1_000_000, help="area-uniform surface points per shape for CD")
    truncation_psi: float = spec(1.0, min=0.0, max=2.0, help="truncation of generated samples (1.0 for metrics)")
    noise_mode: str = spec("random", choices=("random", "const"),
                           help="synthesis noise (random = the protocol; seeded either way)")
    batch_size: int = spec(16, min=1, max=4096, help="generator / Inception batch size")
    kid_subsets: int = spec(100, min=1, max=100_000, help="KID subsets")
    kid_subset_size: int = spec(1000, min=2, max=1_000_000, help="KID subset size (clipped to the set sizes)")
    lfd_batch_meshes: int = spec(8, min=1, max=1024, help="meshes per LFD descriptor batch")
    seed: int = spec(0, min=0, max=2**31 - 1, help="seed of every evaluation random stream")
    device: str = spec("auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA when available")
    backend: str = spec("auto", choices=("auto", "torch", "nvdiffrast"),
                        help="rasterizer for generated images / FID-3D (auto: nvdiffrast on CUDA when importable)")
    fid_resolution: int | None = spec(None, min=8, max=4096,
                                      help="size of generated (and reference) images for FID/KID; None = the "
                                           "dataset's stored resolution")
    num_preview: int = spec(16, min=0, max=256, help="generated samples in the preview grid (0 = none)")
    num_detail_shapes: int = spec(4, min=0, max=10_000,
                                  help="reference shapes exported with their nearest generated shapes (CD and "
                                       "LFD) as OBJ files under <out>/detail/ (0 = none)")

    def validate(self, prefix: str = "evaluate") -> None:
        from get3d.metrics import available_metrics

        known = available_metrics()
        if not self.metrics:
            raise ConfigError(f"{prefix}.metrics: empty; choose from {known}")
        for i, m in enumerate(self.metrics):
            if m not in known:
                raise ConfigError(f"{prefix}.metrics[{i}]: {m!r} is not a registered metric; choose from {known}")
        if len(set(self.metrics)) != len(self.metrics):
            raise ConfigError(f"{prefix}.metrics: {self.metrics!r} lists a metric twice")
        if not self.image_sources:
            raise ConfigError(f"{prefix}.image_sources: empty; choose from {list(IMAGE_SOURCES)}")
        for i, s in enumerate(self.image_sources):
            if s not in IMAGE_SOURCES:
                raise ConfigError(f"{prefix}.image_sources[{i}]: {s!r} is not one of {list(IMAGE_SOURCES)}")

    def __post_init__(self):
        self.validate()

    @property
    def needs_images(self) -> bool:
        return bool({"fid", "kid"} & set(self.metrics))

    @property
    def needs_meshes(self) -> bool:
        return bool({"cd", "lfd"} & set(self.metrics)) or bool(set(self.metrics) - {"fid", "kid"})

    def resolve_device(self) -> str:
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("evaluate.device: 'cuda' requested but CUDA is not available")
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


#: A small configuration for CPU smoke runs and tests (same protocol, tiny counts).
def smoke_config(**kw) -> EvaluateConfig:
    base = {"num_fake_images": 8, "fake_mesh_factor": 2.0, "num_points": 256, "batch_size": 4,
            "kid_subsets": 10, "kid_subset_size": 8, "device": "cpu", "backend": "torch", "num_preview": 4,
            "num_detail_shapes": 1}
    base.update(kw)
    return EvaluateConfig(**base)
