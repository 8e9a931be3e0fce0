"""Camera model and the GET3D camera prior, shared by the Blender renderer and the differentiable renderer.

Conventions (one place, used everywhere):
- World frame: right-handed, **+y up** (OpenGL / GET3D / ShapeNet OBJ files).  Blender is +z up; the render
  script converts, and everything stored in datasets is in this frame.
- Camera frame: OpenGL, camera looks down **-z**, +x right, +y up.  ``c2w`` is the 4x4 camera-to-world matrix.
- Position on the sphere: azimuth ``a`` (radians, [0, 2pi)) and polar angle ``p = pi/2 - elevation``::

      x = -r sin(p) cos(a),   y = r cos(p),   z = r sin(p) sin(a)

  which is the public GET3D parameterisation (``pi - theta`` in its sampler), so exported
  ``rotation.npy`` / ``elevation.npy`` files mean the same thing there.
- Intrinsics ``K`` are in pixels with the image origin at the top-left corner, u right, v down; pixel centres
  at integer + 0.5.  Clip space is OpenGL's (y up); the rasterizers write row 0 = clip y = -1 (bottom row),
  like nvdiffrast, and :func:`flip_rows` turns such images into top-down images.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

FOVY_DEG = math.degrees(2.0 * math.atan(16.0 / 35.0))  # 49.13 deg: 35 mm lens, 32 mm sensor
RADIUS = 1.2
NEAR = 0.1
FAR = 1000.0

#: Elevation ranges (degrees) of the published camera prior per category.
ELEVATION_RANGE_DEG = {
    "car": (0.0, 30.0), "chair": (0.0, 30.0), "motorbike": (0.0, 30.0), "house": (0.0, 30.0),
    "animal": (0.0, 45.0), "people": (0.0, 20.0),
}


@dataclass(frozen=True)
class CameraPrior:
    """Uniform azimuth, uniform elevation, fixed radius and field of view, looking at the origin."""

    elevation_min_deg: float = 0.0
    elevation_max_deg: float = 30.0
    radius: float = RADIUS
    fovy_deg: float = FOVY_DEG

    def sample(self, n: int, generator: torch.Generator | None = None, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(azimuth, polar)`` in radians, each of shape ``[n]``."""
        u = torch.rand(2, n, generator=generator, dtype=torch.float64).to(device=device, dtype=torch.float32)
        azimuth = u[0] * (2.0 * math.pi)
        elev = math.radians(self.elevation_min_deg) + u[1] * math.radians(self.elevation_max_deg - self.elevation_min_deg)
        return azimuth, (math.pi / 2.0) - elev

    def sample_numpy(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Same prior, drawn from a numpy generator (used by the renderer: per-object seeds)."""
        azimuth = rng.uniform(0.0, 2.0 * math.pi, size=n)
        elev = np.radians(rng.uniform(self.elevation_min_deg, self.elevation_max_deg, size=n))
        return azimuth, (math.pi / 2.0) - elev


def camera_position(azimuth, polar, radius: float = RADIUS):
    """Camera centre(s) in world coordinates; works on numpy arrays and torch tensors."""
    lib = torch if isinstance(azimuth, torch.Tensor) else np
    sp = lib.sin(polar)
    return lib.stack([-radius * sp * lib.cos(azimuth), radius * lib.cos(polar), radius * sp * lib.sin(azimuth)], -1)


def look_at(eye, target=None, up=(0.0, 1.0, 0.0)):
    """Camera-to-world matrices ``[..., 4, 4]`` for cameras at ``eye`` looking at ``target`` (default origin)."""
    is_torch = isinstance(eye, torch.Tensor)
    lib = torch if is_torch else np
    eye = eye if is_torch else np.asarray(eye, dtype=np.float64)
    tgt = lib.zeros_like(eye) if target is None else (target if is_torch else np.asarray(target, dtype=np.float64))
    upv = (torch.tensor(up, dtype=eye.dtype, device=eye.device) if is_torch else np.asarray(up, dtype=np.float64))
    upv = upv.expand_as(eye) if is_torch else np.broadcast_to(upv, eye.shape)

    def _norm(v):
        n = lib.linalg.norm(v, axis=-1, keepdims=True) if not is_torch else torch.linalg.norm(v, dim=-1, keepdim=True)
        return v / n

    fwd = _norm(tgt - eye)
    right = lib.cross(fwd, upv, axis=-1) if not is_torch else torch.cross(fwd, upv, dim=-1)
    # Straight above/below the target the up vector is degenerate: fall back to +x as "right".
    degenerate = (lib.linalg.norm(right, axis=-1) if not is_torch else torch.linalg.norm(right, dim=-1)) < 1e-8
    if bool(degenerate.any()):
        fallback = lib.zeros_like(right)
        fallback[..., 0] = 1.0
        right = lib.where(degenerate[..., None], fallback, right)
    right = _norm(right)
    true_up = lib.cross(right, fwd, axis=-1) if not is_torch else torch.cross(right, fwd, dim=-1)
    shape = eye.shape[:-1] + (4, 4)
    m = lib.zeros(shape, dtype=eye.dtype) if not is_torch else torch.zeros(shape, dtype=eye.dtype, device=eye.device)
    m[..., :3, 0] = right
    m[..., :3, 1] = true_up
    m[..., :3, 2] = -fwd
    m[..., :3, 3] = eye
    m[..., 3, 3] = 1.0
    return m


def camera_to_world(azimuth, polar, radius: float = RADIUS):
    """``c2w`` for prior angles (numpy or torch)."""
    return look_at(camera_position(azimuth, polar, radius))


def intrinsics(resolution: int, fovy_deg: float = FOVY_DEG) -> np.ndarray:
    """Pinhole ``K`` (pixels, top-left origin, v down) for a square image."""
    f = 0.5 * resolution / math.tan(math.radians(fovy_deg) / 2.0)
    c = 0.5 * resolution
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


def perspective(fovy_deg: float = FOVY_DEG, aspect: float = 1.0, near: float = NEAR, far: float = FAR) -> np.ndarray:
    """OpenGL projection matrix."""
    t = 1.0 / math.tan(math.radians(fovy_deg) / 2.0)
    return np.array([
        [t / aspect, 0.0, 0.0, 0.0],
        [0.0, t, 0.0, 0.0],
        [0.0, 0.0, -(far + near) / (far - near), -(2.0 * far * near) / (far - near)],
        [0.0, 0.0, -1.0, 0.0],
    ])


def mvp_from_c2w(c2w: torch.Tensor, fovy_deg: float = FOVY_DEG) -> torch.Tensor:
    """World→clip matrices ``[B, 4, 4]`` for the differentiable renderer."""
    proj = _projection(float(fovy_deg), c2w.dtype, c2w.device)
    # inv_ex: no singularity check, which would read a flag back from the GPU (a host sync per call)
    return proj @ torch.linalg.inv_ex(c2w)[0]


_PROJ_CACHE: dict = {}


def _projection(fovy_deg: float, dtype, device) -> torch.Tensor:
    key = (fovy_deg, dtype, str(device))
    if key not in _PROJ_CACHE:
        _PROJ_CACHE[key] = torch.as_tensor(perspective(fovy_deg), dtype=dtype, device=device)
    return _PROJ_CACHE[key]


def project_points(points: np.ndarray, c2w: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixel coordinates ``[N, 2]`` (u right, v down) of world points seen by an OpenGL camera."""
    w2c = np.linalg.inv(c2w)
    pc = points @ w2c[:3, :3].T + w2c[:3, 3]
    depth = -pc[:, 2]
    u = K[0, 0] * pc[:, 0] / depth + K[0, 2]
    v = -K[1, 1] * pc[:, 1] / depth + K[1, 2]
    return np.stack([u, v], -1)


def camera_condition(azimuth: torch.Tensor, polar: torch.Tensor) -> torch.Tensor:
    """The ``[B, 2]`` (azimuth, polar) pair given to the discriminators."""
    return torch.stack([azimuth, polar], -1)


def flip_rows(img: torch.Tensor) -> torch.Tensor:
    """Rasterizer images (row 0 = bottom) → top-down images, for ``[B, H, W, C]`` tensors."""
    return torch.flip(img, dims=[1])
