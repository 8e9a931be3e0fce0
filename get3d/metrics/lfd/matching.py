"""Matching: view and light-field distances over the 60 dodecahedron rotations, and LFD between meshes."""
from __future__ import annotations

import torch

from .core import DESC_DIM, N_LF, N_VIEW, LFDDescriptor, alignment_table
from .descriptors import mesh_descriptors

# ------------------------------------------------------------------------------------------ matching

def lfd_matrix(a: LFDDescriptor | torch.Tensor, b: LFDDescriptor | torch.Tensor, device=None,
               pair_block: int = 1024) -> torch.Tensor:
    """[A, B] LFD between two descriptor sets (float32 on CPU; integer-valued)."""
    va = a.vector() if isinstance(a, LFDDescriptor) else a
    vb = b.vector() if isinstance(b, LFDDescriptor) else b
    if device is None:
        device = "cuda" if torch.cuda.is_available() else va.device
    A, B = va.shape[0], vb.shape[0]
    out = torch.empty(A, B, dtype=torch.float32)
    if A == 0 or B == 0:
        return out
    align = alignment_table().to(device)                       # [60, 10]
    gidx = (torch.arange(N_VIEW, device=device)[None] * N_VIEW + align)  # index into (src view m, dest view)
    va = va.to(device).reshape(A, N_LF * N_VIEW, DESC_DIM)
    vb = vb.to(device).reshape(B, N_LF * N_VIEW, DESC_DIM)
    bb = max(1, min(B, pair_block))
    ab = max(1, pair_block // bb)
    for i in range(0, A, ab):
        x = va[i:i + ab]
        for j in range(0, B, bb):
            y = vb[j:j + bb]
            d = torch.cdist(x.reshape(1, -1, DESC_DIM), y.reshape(1, -1, DESC_DIM), p=1)[0]
            # [a, s, m, b, t, n]: src light field s view m vs dest light field t view n
            d = d.view(x.shape[0], N_LF, N_VIEW, y.shape[0], N_LF, N_VIEW).permute(0, 3, 1, 4, 2, 5)
            d = d.reshape(x.shape[0], y.shape[0], N_LF, N_LF, N_VIEW * N_VIEW)
            err = d[..., gidx].sum(-1)                            # [a, b, s, t, 60]
            out[i:i + x.shape[0], j:j + y.shape[0]] = err.flatten(2).min(-1).values.float().cpu()
    return out


def lfd(mesh_a, mesh_b, device="cpu") -> float:
    """LFD between two meshes ``(vertices, faces)``."""
    d = mesh_descriptors([mesh_a, mesh_b], device)
    return float(lfd_matrix(LFDDescriptor(d.art[:1], d.fd[:1], d.cir[:1], d.ecc[:1]),
                            LFDDescriptor(d.art[1:], d.fd[1:], d.cir[1:], d.ecc[1:]), device=device)[0, 0])
