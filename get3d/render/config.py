"""Knobs of the dataset render stage (BlenderProc / Cycles)."""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec

#: 2 * atan(16 / 35) in degrees (35 mm lens on a 32 mm sensor), as in get3d.cameras.FOVY_DEG.
_FOVY_DEG = 49.13434264120263


@dataclass(frozen=True)
class RenderConfig:
    resolution: int = spec(256, min=16, max=4096, help="square image side in pixels")
    views_per_object: int = spec(24, min=1, max=1024, help="camera views rendered per object")
    elevation_min_deg: float = spec(0.0, min=-89.0, max=89.0, help="lowest camera elevation (degrees)")
    elevation_max_deg: float = spec(30.0, min=-89.0, max=89.0, help="highest camera elevation (degrees)")
    radius: float = spec(1.2, min=0.05, max=100.0, help="camera distance from the origin")
    fovy_deg: float = spec(_FOVY_DEG, min=1.0, max=170.0, help="vertical field of view (degrees)")
    samples: int = spec(32, min=1, max=4096, help="Cycles samples per pixel")
    denoiser: str = spec("none", choices=("none", "openimagedenoise"), help="Cycles denoiser")
    light_type: str = spec("area", choices=("area", "point", "sun"), help="the one light's type")
    light_energy: float = spec(10.0, min=0.0, max=1e6, help="light power (W; sun: strength)")
    light_placement: str = spec("camera", choices=("camera", "top"),
                                help="camera: the light follows each view (headlight); top: fixed above")
    ambient: float = spec(0.15, min=0.0, max=100.0, help="white world light strength (not visible: film is "
                          "transparent)")
    film_transparent: bool = spec(True, help="transparent background (alpha channel = coverage)")
    view_transform: str = spec("Standard", choices=("Standard", "Filmic", "AgX", "Raw"),
                               help="colour management view transform")
    device: str = spec("auto", choices=("auto", "cpu", "gpu"),
                       help="auto: GPU (OptiX/CUDA/HIP) when Cycles finds one, else CPU")
    workers: int = spec(0, min=0, max=256, help="parallel Blender processes; 0 = derived from the cores")
    objects_per_shard: int = spec(16, min=1, max=100000, help="objects per Blender process / job file")
    max_failure_fraction: float = spec(0.05, min=0.0, max=1.0,
                                       help="abort (no dataset written) when more objects than this fail")
    untextured: str = spec("allow", choices=("allow", "refuse"),
                           help="meshes without an image texture: allow = render their vertex / material colours, "
                           "or a neutral grey material when they have none; refuse = fail them as 'untextured'")
    neutral_albedo: float = spec(0.6, min=0.0, max=1.0, help="grey base colour of the neutral material")
    max_faces: int = spec(500000, min=1, help="meshes with more faces fail as 'too_many_faces'")
    max_extent: float = spec(1.0, min=0.01, help="normalised vertices farther than this from the origin "
                             "fail as 'out_of_bounds' (the camera is at `radius`)")
    seed: int = spec(0, min=0, max=2**63 - 1, help="base seed; each object's cameras use (seed, object id)")
    shard_timeout_s: float = spec(3600.0, min=1.0, help="a Blender process running longer is killed")

    def validate(self, prefix: str = "render") -> None:
        if self.elevation_min_deg > self.elevation_max_deg:
            raise ConfigError(f"{prefix}.elevation_min_deg: {self.elevation_min_deg!r} is above "
                              f"elevation_max_deg {self.elevation_max_deg!r}")
        if self.max_extent >= self.radius:
            raise ConfigError(f"{prefix}.max_extent: {self.max_extent!r} must be below radius {self.radius!r} "
                              "(objects must stay in front of the camera)")
        if not self.film_transparent:
            raise ConfigError(f"{prefix}.film_transparent: False is not supported; masks come from alpha")
