"""Squared Chamfer distance, batched over all (generated, reference) pairs.

CD(X, Y) = mean_x min_y |x-y|^2 + mean_y min_x |x-y|^2   (the GET3D / PointFlow convention, no square root).
"""
from __future__ import annotations

import warnings

import torch


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[..., N, M]`` squared distances, computed as |a|^2 + |b|^2 - 2ab in float32 and clamped at 0."""
    aa = (a * a).sum(-1, keepdim=True)
    bb = (b * b).sum(-1).unsqueeze(-2)
    d = torch.baddbmm(aa + bb, a, b.transpose(-1, -2), alpha=-2.0) if a.dim() == 3 else aa + bb - 2 * a @ b.transpose(-1, -2)
    return d.clamp_min_(0)


def chamfer_pair(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """CD between two point sets ``[N,3]`` and ``[M,3]`` (or batched ``[B,N,3]``/``[B,M,3]``)."""
    squeeze = x.dim() == 2
    if squeeze:
        x, y = x[None], y[None]
    d = _sq_dists(x.float(), y.float())
    cd = d.min(2).values.mean(1) + d.min(1).values.mean(1)
    return cd[0] if squeeze else cd


_BACKENDS = ("auto", "torch", "triton")


def _triton_available() -> bool:
    try:
        from get3d.metrics import chamfer_triton  # noqa: F401
    except Exception:  # ImportError, or a Triton that fails to initialise
        return False
    return True


def _chamfer_matrix_triton(gen: torch.Tensor, ref: torch.Tensor, device: torch.device,
                           gen_chunk: int = 2048) -> torch.Tensor:
    """Fused-kernel path: the side with <= MAX_POINTS points stays in registers (CD is symmetric)."""
    from get3d.metrics.chamfer_triton import MAX_POINTS, chamfer_block, soa

    swap = ref.shape[1] > MAX_POINTS
    G, R = gen.shape[0], ref.shape[0]
    gen_chunk = max(1, min(gen_chunk, (2**31 - 1) // max(R, 1)))  # grid = chunk x R programs
    out = torch.empty(G, R, dtype=torch.float32, device=device)
    ref_s = soa(ref.to(device))
    for i in range(0, G, gen_chunk):
        g_s = soa(gen[i:i + gen_chunk].to(device))
        if swap:
            chamfer_block(ref_s, g_s, out=out[i:i + g_s.shape[0]].t())
        else:
            chamfer_block(g_s, ref_s, out=out[i:i + g_s.shape[0]])
    return out.cpu()


def chamfer_matrix(gen: torch.Tensor, ref: torch.Tensor, device: str | torch.device | None = None,
                   pair_chunk: int | None = None, backend: str = "auto") -> torch.Tensor:
    """``[G, R]`` CD matrix between point-cloud sets ``gen [G,N,3]`` and ``ref [R,M,3]`` (float32, on CPU).

    Computed on ``device`` (default: CUDA if available).  ``backend``:

    - ``"triton"``: fused Triton kernel (CUDA only; never stores a distance block; ~exact fp32 differences);
    - ``"torch"``: the reference path, distance blocks in chunks of ``pair_chunk`` pairs.  A CUDA
      out-of-memory error halves the chunk; if even one pair fails the computation falls back to CPU;
    - ``"auto"``: triton on CUDA when Triton imports and one side has <= 4,096 points, else torch.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"chamfer_matrix: backend must be one of {_BACKENDS}, got {backend!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if gen.dim() != 3 or ref.dim() != 3 or gen.shape[-1] != 3 or ref.shape[-1] != 3:
        raise ValueError(f"chamfer_matrix: expected gen [G,N,3] and ref [R,M,3], got {tuple(gen.shape)} and "
                         f"{tuple(ref.shape)}")
    G, R = gen.shape[0], ref.shape[0]
    if backend != "torch" and G > 0 and R > 0:
        fits = min(gen.shape[1], ref.shape[1]) <= 4096 and gen.shape[1] > 0 and ref.shape[1] > 0
        ok = device.type == "cuda" and fits and _triton_available()
        if ok:
            return _chamfer_matrix_triton(gen, ref, device)
        if backend == "triton":
            raise RuntimeError(f"chamfer_matrix: backend='triton' needs a CUDA device, an importable Triton and "
                               f"one side with <= 4096 points (device={device}, points={gen.shape[1]}/"
                               f"{ref.shape[1]})")
    out = torch.empty(G, R, dtype=torch.float32)
    if G == 0 or R == 0:
        return out
    n, m = gen.shape[1], ref.shape[1]
    if pair_chunk is None:
        budget = (2 << 30) if device.type == "cuda" else (256 << 20)  # bytes for the distance blocks
        pair_chunk = max(1, budget // (4 * n * m))
    ref_d = ref.to(device, torch.float32)
    i = 0
    while i < G:
        rb = min(R, pair_chunk)                      # references per block
        gb = max(1, min(G - i, pair_chunk // rb))    # generated shapes per block
        try:
            g = gen[i:i + gb].to(device, torch.float32)
            for j in range(0, R, rb):
                r = ref_d[j:j + rb]
                a = g[:, None].expand(-1, r.shape[0], -1, -1).reshape(-1, n, 3)
                b = r[None].expand(g.shape[0], -1, -1, -1).reshape(-1, m, 3)
                out[i:i + gb, j:j + r.shape[0]] = chamfer_pair(a, b).view(g.shape[0], r.shape[0]).cpu()
            i += gb
        except torch.OutOfMemoryError:
            if device.type != "cuda":
                raise
            torch.cuda.empty_cache()
            if pair_chunk > 1:
                pair_chunk //= 2
                continue
            warnings.warn("chamfer_matrix: CUDA out of memory for a single pair; falling back to CPU", RuntimeWarning)
            out[i:] = chamfer_matrix(gen[i:], ref, device="cpu")
            break
    return out
