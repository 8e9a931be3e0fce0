"""Knobs of the ``assets`` stage."""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec

SOURCES = ("procedural", "shapenet_v1", "shapenet_v2", "renderpeople", "folder")


@dataclass(frozen=True)
class AssetsConfig:
    source: str = spec("procedural", choices=SOURCES, help="where the meshes come from")
    root: str = spec("", help="input folder for every source but 'procedural' (ShapeNetCore root, people folder, ...)")
    category: str = spec("proc_chair", help="category name (used for the camera prior and reports)")
    synset: str = spec("99000001", help="ShapeNet synset id; procedural assets use an id outside ShapeNet's range")
    count: int = spec(24, min=1, max=1_000_000, help="procedural: number of models to write")
    limit: int = spec(0, min=0, help="use at most this many items of an external source (0 = all)")
    texture_size: int = spec(128, min=8, max=4096, help="procedural: texture image side in pixels")
    seed: int = spec(0, min=0, help="seed of the procedural generator and of the split")
    target_size: float = spec(0.7, min=1e-3, max=10.0, help="largest bounding-box side after normalisation")
    recenter: bool = spec(False, help="move the bounding-box centre to the origin (GET3D does not)")
    max_offcenter: float = spec(0.5, min=0.0, help="reject items whose normalised bbox centre is farther than this")
    max_faces: int = spec(2_000_000, min=1, help="reject meshes with more faces than this")
    split: tuple[float, float, float] = spec((0.7, 0.1, 0.2), min=0.0, max=1.0, help="train/val/test fractions")
    max_failure_fraction: float = spec(0.25, min=0.0, max=1.0, help="fail the stage above this fraction of bad items")

    def validate(self, prefix: str) -> None:
        if abs(sum(self.split) - 1.0) > 1e-6:
            raise ConfigError(f"{prefix}.split: fractions {list(self.split)} must sum to 1")
        if self.source != "procedural" and not self.root:
            raise ConfigError(f"{prefix}.root: required when source is {self.source!r} (path to the input folder)")
        if not (self.synset.isalnum()):
            raise ConfigError(f"{prefix}.synset: {self.synset!r} must be alphanumeric")
