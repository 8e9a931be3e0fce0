"""A small triangle-mesh container and topology / measure helpers."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Mesh:
    """``verts [V,3]`` float, ``faces [F,3]`` long (counter-clockwise seen from outside)."""

    verts: torch.Tensor
    faces: torch.Tensor

    def __iter__(self):  # allows ``v, f = mesh`` and passing meshes to render_meshes
        return iter((self.verts, self.faces))

    @property
    def num_faces(self) -> int:
        return int(self.faces.shape[0])


def mesh_area(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Total surface area (differentiable)."""
    if faces.numel() == 0:
        return verts.sum() * 0.0
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return 0.5 * torch.linalg.norm(torch.cross(b - a, c - a, dim=-1), dim=-1).sum()


def signed_volume(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Enclosed volume; positive when faces are wound counter-clockwise seen from outside."""
    if faces.numel() == 0:
        return verts.sum() * 0.0
    a, b, c = verts[faces[:, 0]], verts[faces[:, 1]], verts[faces[:, 2]]
    return (a * torch.cross(b, c, dim=-1)).sum() / 6.0


def unique_edges(faces: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Undirected edges ``[E,2]`` (sorted endpoints) and how many faces use each."""
    e = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    e = torch.sort(e, dim=1).values
    return torch.unique(e, dim=0, return_counts=True)


def euler_characteristic(verts: torch.Tensor, faces: torch.Tensor) -> int:
    """``V - E + F`` counting only vertices used by a face."""
    if faces.numel() == 0:
        return 0
    nv = int(torch.unique(faces).numel())
    ne = int(unique_edges(faces)[0].shape[0])
    return nv - ne + int(faces.shape[0])


def is_watertight(faces: torch.Tensor) -> bool:
    """Every edge shared by exactly two faces, and each directed edge used once (consistent winding)."""
    if faces.numel() == 0:
        return False
    _, counts = unique_edges(faces)
    if not bool((counts == 2).all()):
        return False
    directed = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], 0)
    return torch.unique(directed, dim=0).shape[0] == directed.shape[0]
