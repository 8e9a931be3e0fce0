"""LFD building blocks shared by both paths: sizes, the descriptor record, cameras, the ART lookup table and the
8-bit quantisation (the package docstring describes the method)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .._lfd_tables import ANTIPODE_MAP, CAMERAS

RES = 256
N_LF = 10
N_VIEW = 10
ART_ANG, ART_RAD, ART_COEF = 12, 3, 35
LUT_R = 50
LUT_N = 2 * LUT_R + 1
FD_N = 10
_PI = 3.141592653          # the constant the reference program uses
DESC_DIM = ART_COEF + FD_N + 2


@dataclass
class LFDDescriptor:
    """8-bit codes of one mesh: art [10,10,35], fd [10,10,10], cir [10,10], ecc [10,10] (light field, view, ...)."""

    art: torch.Tensor
    fd: torch.Tensor
    cir: torch.Tensor
    ecc: torch.Tensor

    def vector(self) -> torch.Tensor:
        """[10, 10, 47] float32 vectors whose L1 distance is the view distance (fd and circ pre-weighted by 2)."""
        return torch.cat([self.art.float(), 2 * self.fd.float(), 2 * self.cir.float()[..., None],
                          self.ecc.float()[..., None]], -1)


# ------------------------------------------------------------------------------------------ cameras

def camera_positions() -> torch.Tensor:
    """[10, 10, 3] float64 camera centres of the rendered views."""
    return torch.tensor(CAMERAS, dtype=torch.float64)[:, :N_VIEW]


def alignment_table() -> torch.Tensor:
    """[60, 10] long: for rotation j, view m of one light field is compared with view ``table[j, m]`` of the other.

    Derived here from the dodecahedron: a rotation of the dodecahedron maps vertex 0 to any of the 20 vertices
    and a fixed neighbour of vertex 0 to any of the 3 neighbours of that image: 60 rotations.  Each vertex
    permutation is folded onto the 10 rendered views with the antipode map.
    """
    v = np.array(CAMERAS[0], dtype=np.float64)
    d = np.linalg.norm(v[:, None] - v[None], axis=-1)
    edge = np.sort(d[0])[1]
    nbrs = [np.nonzero(np.abs(d[i] - edge) < 1e-3)[0] for i in range(20)]
    a, b = 0, int(nbrs[0][0])

    def frame(p, q):
        e1 = p / np.linalg.norm(p)
        e2 = q - (q @ e1) * e1
        e2 /= np.linalg.norm(e2)
        return np.stack([e1, e2, np.cross(e1, e2)], 1)

    f0 = frame(v[a], v[b])
    rows = []
    for ia in range(20):
        for ib in nbrs[ia]:
            rot = frame(v[ia], v[ib]) @ f0.T
            img = v @ rot.T
            perm = np.argmin(np.linalg.norm(img[:, None] - v[None], axis=-1), axis=1)
            if np.abs(img - v[perm]).max() > 1e-3 or len(set(perm.tolist())) != 20:
                raise RuntimeError("LFD camera set is not a dodecahedron")
            rows.append([ANTIPODE_MAP[p] for p in perm[:N_VIEW]])
    return torch.tensor(rows, dtype=torch.long)


# ------------------------------------------------------------------------------------------ descriptors

def _art_lut(device) -> torch.Tensor:
    """[(LUT_N+1)^2, 2*12*3] real/imag basis values on the LUT grid, zero-padded by one row/column."""
    i = torch.arange(LUT_N + 1, dtype=torch.float64, device=device)
    gx, gy = torch.meshgrid(i - LUT_R, i - LUT_R, indexing="ij")  # LUT index [x][y]
    rad = torch.sqrt(gx * gx + gy * gy)
    ang = torch.atan2(gy, gx)
    p = torch.arange(ART_ANG, dtype=torch.float64, device=device)[:, None, None, None]
    r = torch.arange(ART_RAD, dtype=torch.float64, device=device)[None, :, None, None]
    radial = torch.cos(rad * _PI * r / LUT_R)
    re = radial * torch.cos(ang * p)
    im = radial * torch.sin(ang * p)
    inside = (rad < LUT_R) & (gx <= LUT_R) & (gy <= LUT_R)
    re, im = re * inside, im * inside
    return torch.cat([re.reshape(ART_ANG * ART_RAD, -1), im.reshape(ART_ANG * ART_RAD, -1)], 0).T.contiguous()


def _centres(sil: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Middle of the pixel bounding box per silhouette; -1 when nothing (or only column 0) is drawn."""
    _N, H, W = sil.shape
    cols = sil.any(1)
    rows = sil.any(2)
    xs = torch.arange(W, device=sil.device)
    ys = torch.arange(H, device=sil.device)
    maxx = torch.where(cols, xs, -1).max(1).values
    minx = torch.where(cols, xs, W).min(1).values
    maxy = torch.where(rows, ys, -1).max(1).values
    miny = torch.where(rows, ys, H).min(1).values
    ok = maxx > 0
    cx = torch.where(ok, (maxx + minx).double() / 2, torch.full_like(maxx, -1, dtype=torch.float64))
    cy = torch.where(ok, (maxy + miny).double() / 2, torch.full_like(maxy, -1, dtype=torch.float64))
    return cx, cy


def _quant(x: torch.Tensor, scale: float = 256.0) -> torch.Tensor:
    return torch.clamp(torch.floor(x * scale), 0, 255).to(torch.uint8)



def _art_magnitudes(coef: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """ART sums ``[N, 72]`` (real, imaginary) over ``count`` pixels → the 35 normalised magnitudes in MPEG-7 order."""
    N = coef.shape[0]
    cnt = count.clamp_min(1)[:, None]
    re, im = coef[:, :36] / cnt, -coef[:, 36:] / cnt
    mag = torch.sqrt(re * re + im * im).view(N, ART_ANG, ART_RAD)
    mag = mag / mag[:, :1, :1].clamp_min(1e-300)
    mag = torch.where(count[:, None, None] > 0, mag, torch.zeros_like(mag))
    flat = mag.reshape(N, -1)
    order = [0 * ART_RAD + r for r in (1, 2)] + [p * ART_RAD + r for p in range(1, ART_ANG) for r in range(ART_RAD)]
    return flat[:, order]
_PI4 = 12.5663704


_OFF3 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
_OFF5 = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) < 4]
