"""Exponential moving average of the generator (G_ema).

Half-life ``ema_kimg`` thousand images *at batch 32*: with another batch the half-life in images is scaled
by ``batch/32`` (StyleGAN2-ADA's ``ema_kimg = batch * 10 / 32``), so the number of *steps* per half-life
stays the same. Ramp-up: early in training the half-life is at most ``ema_rampup * cur_nimg``.
Buffers (``w_avg`` of both mapping networks, noise constants) are copied, not averaged.
"""
from __future__ import annotations

import copy

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


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    src = dict(G.named_parameters())
    names = [name for name, _ in G_ema.named_parameters()]
    dst = [p for _, p in G_ema.named_parameters()]
    # p_ema ← p_ema + (1 − β)·(p − p_ema) for all parameters in one multi-tensor kernel (was ~600 launches)
    torch._foreach_lerp_(dst, [src[n].detach() for n in names], 1.0 - beta)
    src_b = dict(G.named_buffers())
    for name, b_ema in G_ema.named_buffers():
        if name in src_b:
            b_ema.copy_(src_b[name])
