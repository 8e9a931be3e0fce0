"""GET3D training objective.

Phases per step (StyleGAN2-ADA style, as in the public GET3D code):

- ``Gmain``: non-saturating logistic loss ``softplus(-D(G(z)))`` on *both* discriminators (RGB and mask)
  plus ``sdf_reg_weight * sdf_reg_loss`` from the generator (and, with FlexiCubes, ``flexicubes_dev_weight *
  L_dev``).
- ``Greg``: none (no path-length regulariser in GET3D); the G optimiser is still lr/beta-scaled as if one
  ran every ``g_reg_interval`` steps, matching the public recipe.
- ``Dmain``: ``softplus(D(G(z)))`` + ``softplus(-D(x))`` on both discriminators.
- ``Dreg`` (every ``r1_interval`` steps): lazy R1 ``gamma/2 * ||∇_x D(x)||²`` on both discriminators, scaled
  by the interval.

Every per-sample loss is *summed* and divided by the global batch (``norm``), so gradient accumulation over
chunks and summing gradients over ranks give the same update as one big batch.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from get3d import perf
from get3d.nn.layers import double_backward_kernels
from get3d.train.config import TrainConfig

#: ``perf.merged_d_pass``: Dmain as *one* discriminator pass over fakes and reals together (twice the batch)
#: instead of two: the same function (the chunks are interleaved so that every minibatch-std group holds fakes
#: only or reals only, see :func:`interleave_chunks`), half the passes, and the D's small low-resolution kernels
#: run at twice the batch (paper recipe, H100: 59.5 → 54.8 s/kimg, docs/performance.md); chunks it cannot merge
#: exactly fall back to two passes.


def merge_groups(discriminators, n: int) -> int | None:
    """Minibatch-std group count ``g`` under which one pass over two chunks of ``n`` (interleaved by
    :func:`interleave_chunks`) gives every sample the statistics of its own chunk's pass; ``None`` if none does
    (a group larger than the chunk, a chunk not divisible by it, or whole-batch groups)."""
    groups = set()
    for D in discriminators:
        mbstd = getattr(getattr(D, "epilogue", None), "mbstd", None)
        if mbstd is None:
            continue
        size = mbstd.group_size
        if not size or size > n or n % size:
            return None
        groups.add(size)
    if len(groups) > 1:
        return None
    return groups.pop() if groups else 1


def interleave_chunks(a: torch.Tensor, b: torch.Tensor, g: int) -> torch.Tensor:
    """``[2n, ...]`` from two ``[n, ...]`` chunks, ordered so that minibatch-std (which groups sample ``k`` with
    those at the same ``k mod 2n/g``) forms exactly the groups it forms within ``a`` and within ``b``."""
    return torch.cat([a.reshape(g, -1, *a.shape[1:]), b.reshape(g, -1, *b.shape[1:])], dim=1).reshape(
        -1, *a.shape[1:])


def split_chunks(x: torch.Tensor, g: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse of :func:`interleave_chunks`."""
    x = x.reshape(g, 2, -1, *x.shape[1:])
    return x[:, 0].reshape(-1, *x.shape[3:]), x[:, 1].reshape(-1, *x.shape[3:])


@dataclass
class FakeInputs:
    """Random inputs of one chunk of fakes (drawn by the loop from the step's seeded generator)."""

    z_tex: torch.Tensor
    z_geo: torch.Tensor
    camera: torch.Tensor        # [B, 2] (azimuth, polar), radians
    c2w: torch.Tensor           # [B, 4, 4]
    mix_seed: int               # seed of the style-mixing draw for this chunk


@dataclass
class RealInputs:
    image: torch.Tensor         # [B, 3, H, W] in [-1, 1]
    mask: torch.Tensor          # [B, 1, H, W] in [0, 1]
    camera: torch.Tensor        # [B, 2]


class GET3DLoss:
    """Accumulates gradients of one phase for one chunk (caller zeroes grads / steps optimisers)."""

    def __init__(self, nets, cfg: TrainConfig, device: torch.device, graphs=None):
        self.nets = nets            # get3d.train.models.Networks
        self.cfg = cfg
        self.device = device
        self.graphs = graphs        # get3d.train.graphs.GraphedDiscriminators (CUDA) or None

    # ---------------------------------------------------------------- helpers
    def _d_autocast(self, enabled: bool):
        if self.cfg.precision == "bf16" and enabled:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_G(self, fake: FakeInputs, update_w_avg: bool) -> dict:
        return self.nets.generate(fake.z_tex, fake.z_geo, fake.camera, fake.c2w,
                                  style_mixing_prob=self.cfg.style_mixing_prob, mix_seed=fake.mix_seed,
                                  update_w_avg=update_w_avg)

    def run_D(self, rgb: torch.Tensor | None, mask: torch.Tensor | None, camera: torch.Tensor,
              autocast: bool = True, graph_phase: str | None = None):
        """Both discriminators' logits [B] (float32); a ``None`` input skips its discriminator (its logits are
        ``None``).  ``graph_phase`` ("G" / "D") replays the captured graph of that phase when graphs are on; its
        outputs live in static buffers, so backward before the next call."""
        with record_function("stage/D"):
            return self._run_D(rgb, mask, camera, autocast, graph_phase)

    def _run_D(self, rgb, mask, camera, autocast: bool, graph_phase: str | None):
        if graph_phase is not None and self.graphs is not None:
            return self.graphs(graph_phase, rgb, mask, camera)
        with self._d_autocast(autocast):
            lr = None if rgb is None else self.nets.D_rgb(rgb, camera).float().reshape(-1)
            lm = None if mask is None else self.nets.D_mask(mask, camera).float().reshape(-1)
        return lr, lm

    # ---------------------------------------------------------------- phases
    def accumulate(self, phase: str, real: RealInputs | None, fake: FakeInputs | None, norm: float,
                   gain: float = 1.0) -> dict[str, torch.Tensor]:
        """Backward of ``phase`` for one chunk. Returns detached per-term *sums over the chunk* (for stats)."""
        if phase == "Gmain":
            out = self.run_G(fake, update_w_avg=True)
            img = out["img"]
            lr, lm = self.run_D(img[:, :3], img[:, 3:4], fake.camera, graph_phase="G")
            loss_rgb = F.softplus(-lr)
            loss_mask = F.softplus(-lm)
            sdf = out.get("sdf_reg_loss")
            sdf = torch.zeros([], device=img.device) if sdf is None else sdf.float()
            if sdf.ndim > 0:     # per-sample values → sum; a scalar is a batch mean → times the chunk size
                sdf_sum = sdf.sum()
            else:
                sdf_sum = sdf * img.shape[0]
            # Empty-shape guard term (mean |s| of all-inside / all-outside samples), weight 1 as in the public code.
            empty = out.get("empty_shape_loss")
            empty_sum = torch.zeros([], device=img.device) if empty is None else (
                empty.float().sum() if empty.ndim > 0 else empty.float() * img.shape[0])
            total = loss_rgb.sum() + loss_mask.sum() + self.cfg.sdf_reg_weight * sdf_sum + empty_sum
            stats = {}
            dev = out.get("flexicubes_dev_loss")  # FlexiCubes' L_dev: a batch mean → times the chunk size
            if dev is not None:
                dev_sum = dev.float() * img.shape[0]
                total = total + self.cfg.flexicubes_dev_weight * dev_sum
                stats["G/flexicubes_dev"] = dev_sum.detach()
            total = total / norm
            _backward(total * gain)
            return {"G/adv_rgb": loss_rgb.detach().sum(), "G/adv_mask": loss_mask.detach().sum(),
                    "G/sdf_reg": sdf_sum.detach(), "G/empty_shape": empty_sum.detach(), **stats,
                    "G/total": total.detach() * norm, **surface_terms(out)}
        if phase == "Dmain":
            with torch.no_grad():
                out = self.run_G(fake, update_w_avg=False)
            img = out["img"].detach()
            g = merge_groups((self.nets.D_rgb, self.nets.D_mask), img.shape[0]) if perf.active().merged_d_pass else None
            if g is not None:
                lr, lm = self.run_D(interleave_chunks(img[:, :3], real.image, g),
                                    interleave_chunks(img[:, 3:4], real.mask, g),
                                    interleave_chunks(fake.camera, real.camera, g), graph_phase="D")
                (lr_f, lr_r), (lm_f, lm_r) = split_chunks(lr, g), split_chunks(lm, g)
                fake_total, fake_stats = self._d_terms("fake", lr_f, lm_f, norm)
                real_total, real_stats = self._d_terms("real", lr_r, lm_r, norm)
                _backward((fake_total + real_total) * gain)
            else:
                # fakes and reals each get their own backward (gradients accumulate): a graphed D pass must be
                # differentiated, and its outputs read, before the next replay overwrites its buffers
                lr_f, lm_f = self.run_D(img[:, :3], img[:, 3:4], fake.camera, graph_phase="D")
                fake_total, fake_stats = self._d_terms("fake", lr_f, lm_f, norm)
                _backward(fake_total * gain)
                lr_r, lm_r = self.run_D(real.image, real.mask, real.camera, graph_phase="D")
                real_total, real_stats = self._d_terms("real", lr_r, lm_r, norm)
                _backward(real_total * gain)
            return {**fake_stats, **real_stats, "D/total": (fake_total + real_total).detach() * norm,
                    **surface_terms(out)}
        if phase == "Dreg":
            return self._r1(real, norm, gain)
        raise ValueError(f"unknown phase {phase!r}; expected Gmain, Dmain or Dreg")

    def _r1(self, real: RealInputs, norm: float, gain: float) -> dict[str, torch.Tensor]:
        """Lazy R1 ``gamma/2 * ||∇_x D(x)||²``, one discriminator at a time: the two are independent networks, so
        each one's double backward runs (and frees its activations) before the other's starts, and the step's
        memory peak holds one discriminator's R1 graph instead of both (the gradients are the same)."""
        stats, total = {}, 0.0
        for i, (name, x) in enumerate((("rgb", real.image), ("mask", real.mask))):
            x = x.detach().requires_grad_(True)
            only = (x, None) if i == 0 else (None, x)           # run_D's (rgb, mask): this discriminator only
            # Same functions, but FIR filtering and convolutions whose double backward is cheap: PyTorch's
            # generic one ran the depthwise FIR as one convolution per channel (~44 s per R1 step at 1024²).
            with double_backward_kernels():
                # R1 needs a double backward: keep it in fp32 (bf16 gradient penalties are not safe).
                logits = self.run_D(*only, real.camera, autocast=False)[i]
                (grad,) = torch.autograd.grad(logits.sum(), [x], create_graph=True)
                pen = grad.square().sum(dim=[1, 2, 3])
                # "+ 0 * logits" keeps every D parameter in the graph (as StyleGAN2 does).
                part = (pen.sum() * (self.cfg.r1_gamma / 2) + 0.0 * logits.sum()) / norm
                _backward(part * gain)
            stats[f"D/r1_{name}"] = pen.detach().sum()
            total = total + part.detach()
        return {**stats, "D/reg_total": total * norm}

    @staticmethod
    def _d_terms(kind: str, lr: torch.Tensor, lm: torch.Tensor, norm: float):
        """Dmain's loss total (divided by ``norm``) and stats of the ``"fake"`` or ``"real"`` logits."""
        rgb, mask = (F.softplus(lr), F.softplus(lm)) if kind == "fake" else (F.softplus(-lr), F.softplus(-lm))
        total = (rgb.sum() + mask.sum()) / norm
        return total, {f"D/{kind}_rgb": rgb.detach().sum(), f"D/{kind}_mask": mask.detach().sum(),
                       f"scores/{kind}_rgb": lr.detach().sum()}


def _backward(loss: torch.Tensor) -> None:
    """``loss.backward()`` inside a ``stage/backward`` profiler range (labels traces; ~free otherwise)."""
    with record_function("stage/backward"):
        loss.backward()


SURFACE_KEYS = ("surface/overflow", "surface/need_verts", "surface/need_faces", "surface/need_pixels")


def surface_terms(out: dict) -> dict[str, torch.Tensor]:
    """The fixed-capacity extraction's overflow count and largest sizes (device scalars), when it ran: the phase
    reads them with its loss sums and re-runs after an overflow (:func:`get3d.train.loop._run_phase`)."""
    if "surface_overflow" not in out:
        return {}
    need = out["surface_need"].detach()                   # [verts, faces, shaded pixels]
    return dict(zip(SURFACE_KEYS, (out["surface_overflow"].detach(), *need.unbind())))


def _grads(params) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


@torch.no_grad()
def sanitize_grads_on_device(params, clamp: float) -> None:
    """:func:`sanitize_grads`'s result (NaN → 0, ±Inf → ±clamp, then clamped to [-clamp, clamp]) without reading
    anything on the host: the gradients of one device and dtype go through one flat buffer (a concatenation, two
    elementwise passes, one multi-tensor copy back), whatever they hold."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for g in _grads(params):
        groups.setdefault((g.device, g.dtype), []).append(g)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.nan_to_num_(flat, nan=0.0, posinf=clamp, neginf=-clamp)
        if clamp > 0:
            flat.clamp_(-clamp, clamp)
        torch._foreach_copy_(grads, [f.view_as(g) for f, g in zip(flat.split([g.numel() for g in grads]), grads)])


@torch.no_grad()
def grads_finite_flag(params) -> torch.Tensor | None:
    """A 0-d bool tensor on the gradients' device: every gradient is finite (a fused per-tensor norm is
    non-finite iff its tensor holds a non-finite value or is astronomically large). No host sync: the caller
    reads it together with its other values. None when there are no gradients or they span devices."""
    grads = _grads(params)
    if not grads or len({g.device for g in grads}) != 1:
        return None
    return torch.isfinite(torch.stack(torch._foreach_norm(grads))).all()


@torch.no_grad()
def sanitize_grads(params, clamp: float, all_finite: bool | None = None) -> int:
    """nan → 0, ±inf → ±clamp, then clamp to [-clamp, clamp] in place. Returns how many grads had non-finites.

    Fast path (no non-finite values, the usual case): fused foreach clamps instead of a sync and three kernels
    per parameter. ``all_finite`` is :func:`grads_finite_flag` already read by the caller (None: read it here,
    one host sync).
    """
    grads = _grads(params)
    if not grads:
        return 0
    if all_finite is None:
        flag = grads_finite_flag(params)
        all_finite = flag is not None and bool(flag)
    if all_finite:
        if clamp > 0:
            torch._foreach_clamp_min_(grads, -clamp)
            torch._foreach_clamp_max_(grads, clamp)
        return 0
    bad = 0
    for g in grads:
        if not bool(torch.isfinite(g).all()):
            bad += 1
        torch.nan_to_num(g, nan=0.0, posinf=clamp, neginf=-clamp, out=g)
        if clamp > 0:
            g.clamp_(-clamp, clamp)
    return bad
