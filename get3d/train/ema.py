"""Exponential moving average of the generator (G_ema).

Half-life ``ema_kimg`` thousand images *at batch 32*: with another batch the half-life in images is scaled
by ``batch/32`` (StyleGAN2-ADA's ``ema_kimg = batch * 10 / 32``), so the number of *steps* per half-life
stays the same. Ramp-up: early in training the half-life is at most ``ema_rampup * cur_nimg``.
Buffers (``w_avg`` of both mapping networks, noise constants) are copied, not averaged.
"""
from __future__ import annotations

import copy
import weakref

import torch


def ema_beta(cur_nimg: int, batch_size: int, ema_kimg: float, ema_rampup: float) -> float:
    ema_nimg = ema_kimg * 1000.0 * batch_size / 32.0
    if ema_rampup and ema_rampup > 0:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    if ema_nimg <= 0:
        return 0.0
    return 0.5 ** (batch_size / ema_nimg)


def make_ema(G: torch.nn.Module) -> torch.nn.Module:
    G_ema = copy.deepcopy(G).eval()
    G_ema.requires_grad_(False)
    return G_ema


#: G_ema → (G, its parameter and buffer pairs): walking two module trees by name costs the host a few ms per
#: step (hundreds of modules), while the GPU waits at the end of the step
_PAIRS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _pairs(G_ema: torch.nn.Module, G: torch.nn.Module):
    hit = _PAIRS.get(G_ema)
    if hit is None or hit[0]() is not G:
        src = dict(G.named_parameters())
        named = list(G_ema.named_parameters())
        src_b = dict(G.named_buffers())
        buffers = [(b, src_b[n]) for n, b in G_ema.named_buffers() if n in src_b]
        hit = _PAIRS[G_ema] = (weakref.ref(G), [p for _, p in named], [src[n] for n, _ in named],
                               [b for b, _ in buffers], [s for _, s in buffers])
    return hit[1:]


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """``p_ema ← p_ema + (1 − β)·(p − p_ema)`` for every parameter, buffers copied; one multi-tensor kernel each
    (the parameter and buffer pairs are matched by name once per pair of modules)."""
    dst, src, dst_b, src_b = _pairs(G_ema, G)
    torch._foreach_lerp_(dst, src, 1.0 - beta)
    if dst_b:
        torch._foreach_copy_(dst_b, src_b)
