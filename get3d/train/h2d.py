"""CPU → CUDA copies that do not make the host wait for the GPU."""
from __future__ import annotations

import torch


def h2d(tensors: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """CPU tensors → ``device``.  On CUDA, tensors of one dtype travel as one pinned buffer in one asynchronous copy
    (a copy from pageable memory waits for the GPU; a pinned buffer per tensor costs a host allocation and a copy
    launch each) and come back as views of it."""
    device = torch.device(device)
    if device.type != "cuda":
        return [t.to(device) for t in tensors]
    if len({t.dtype for t in tensors}) != 1:
        return [t.contiguous().pin_memory().to(device, non_blocking=True) for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors]).pin_memory().to(device, non_blocking=True)
    return [part.view(t.shape) for part, t in zip(flat.split([t.numel() for t in tensors]), tensors)]
