"""CUDA-graph replay of the discriminator pair's forward + backward in the main training phases.

Why: on an H100 the paper-recipe step is CPU-bound — the GPU works ~215 ms of a ~400 ms step while the host
issues ~6,800 kernel launches, and the two discriminators at 1024² are half of them.  A captured graph
replays a whole D forward (or backward) as one launch.

Two captures of the same modules (parameters are shared, updated in place by the optimizer):

- ``"G"`` (Gmain): the images need gradients, the D parameters do not (they are frozen in that phase);
- ``"D"`` (Dmain): the D parameters need gradients, the images do not.

Rules the caller must keep (they follow from replaying into static buffers):
- run each call's backward before the next call of the same capture (Dmain: fake pass → backward, then
  real pass → backward);
- the same chunk shape every call; the requires-grad pattern of the capture;
- R1 (double backward) is not graphable: the Dreg phase uses the modules eagerly.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


def ensure_grads(params) -> None:
    """Give every trainable parameter a ``.grad`` buffer of its own before a graphed backward.

    A graphed backward returns its gradients in static buffers.  When ``p.grad`` is None, autograd *adopts*
    the incoming tensor as ``p.grad`` (no copy), so ``p.grad`` would alias the static buffer: the next replay
    overwrites it, and accumulating into it adds the buffer to itself — two graphed D passes per step (Dmain)
    would leave twice the second pass's gradient.  With a buffer of its own, autograd adds in place.
    """
    for p in params:
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def _capture_or_explain(what: str, module: nn.Module, sample: tuple):
    """``make_graphed_callables`` with an error that says which capture failed and how to train without."""
    try:
        return torch.cuda.make_graphed_callables(module, sample, num_warmup_iters=3)
    except Exception as e:  # any capture failure gets the same actionable message
        raise RuntimeError(
            f"CUDA graph capture of {what} failed ({type(e).__name__}: {e}). Something in that forward/backward "
            "is not capturable (a host sync, a CPU->GPU copy, data-dependent shapes), or an autograd graph of an "
            "earlier eager pass is still alive. Set train.cuda_graphs: false to train without graphs.") from e


class DiscriminatorPair(nn.Module):
    """``(rgb, mask, camera) → (rgb logits, mask logits)`` in float32, optionally under bf16 autocast."""

    def __init__(self, D_rgb: nn.Module, D_mask: nn.Module, bf16: bool = False):
        super().__init__()
        self.D_rgb, self.D_mask, self.bf16 = D_rgb, D_mask, bf16

    def forward(self, rgb: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor):
        ctx = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False) if self.bf16
               else contextlib.nullcontext())
        with ctx:
            lr = self.D_rgb(rgb, camera)
            lm = self.D_mask(mask, camera)
        return lr.float().reshape(-1), lm.float().reshape(-1)


class GraphedDiscriminators:
    """Lazily captured graphs of :class:`DiscriminatorPair`, one per phase (``"G"`` / ``"D"``)."""

    def __init__(self, D_rgb: nn.Module, D_mask: nn.Module, bf16: bool = False):
        self.D_rgb, self.D_mask, self.bf16 = D_rgb, D_mask, bf16
        self._graphed: dict[str, nn.Module] = {}
        self._shapes: dict[str, tuple] = {}

    def _capture(self, phase: str, rgb: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor) -> nn.Module:
        inputs_need_grad = phase == "G"
        params = list(self.D_rgb.parameters()) + list(self.D_mask.parameters())
        saved = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(not inputs_need_grad)
        try:
            sample = (torch.randn_like(rgb).requires_grad_(inputs_need_grad),
                      torch.rand_like(mask).requires_grad_(inputs_need_grad),
                      camera.detach().clone())
            pair = DiscriminatorPair(self.D_rgb, self.D_mask, self.bf16)
            graphed = _capture_or_explain("the discriminator passes", pair, sample)
        finally:
            for p, s in zip(params, saved):
                p.requires_grad_(s)
        return graphed

    def __call__(self, phase: str, rgb: torch.Tensor, mask: torch.Tensor, camera: torch.Tensor):
        if phase not in ("G", "D"):
            raise ValueError(f"graphed discriminators: phase must be 'G' or 'D', got {phase!r}")
        shapes = (tuple(rgb.shape), tuple(mask.shape), tuple(camera.shape))
        if torch.is_grad_enabled():
            ensure_grads(self.D_rgb.parameters())
            ensure_grads(self.D_mask.parameters())
        if phase not in self._graphed:
            self._graphed[phase] = self._capture(phase, rgb, mask, camera)
            self._shapes[phase] = shapes
        elif shapes != self._shapes[phase]:
            raise ValueError(f"graphed discriminators were captured for shapes {self._shapes[phase]}, "
                             f"got {shapes}; every chunk must have train.batch_per_gpu samples")
        return self._graphed[phase](rgb, mask, camera)


class _SynthesisCall(nn.Module):
    """Tensor-only view of ``TriplaneSynthesis.forward`` (training mode, random noise) for capture."""

    def __init__(self, synthesis: nn.Module, forward):
        super().__init__()
        self.synthesis, self._forward = synthesis, forward

    def forward(self, ws_trunk: torch.Tensor, ws_tex: torch.Tensor):
        geo, tex = self._forward(ws_trunk, ws_tex, noise_mode="random")
        return (tex,) if geo is None else (geo, tex)


class GraphedSynthesis:
    """Replays the tri-plane synthesis network (mapping output → planes) of the *training* G as a captured
    graph: ~900 small kernels forward, twice per step, plus their backward.

    Installed on the module instance (``synthesis.forward``); calls it cannot serve — eval mode, other noise
    modes, another batch shape, or inputs that do not need gradients before the first capture — run the
    original forward.  Outputs live in static buffers: the next replay overwrites them, which the training
    step allows (each phase uses its planes, and Gmain runs its backward, before the next phase starts).
    """

    def __init__(self, synthesis: nn.Module):
        self.module = synthesis
        self._orig = synthesis.forward
        self._graphed = None
        self._shapes = None
        synthesis.forward = self.forward

    def uninstall(self) -> None:
        self.module.forward = self._orig

    def forward(self, ws_trunk, ws_tex, noise_mode: str = "random", fused_modconv=None):
        usable = (self.module.training and noise_mode == "random" and fused_modconv is None and ws_trunk.is_cuda)
        shapes = (tuple(ws_trunk.shape), tuple(ws_tex.shape))
        if usable and self._graphed is None and torch.is_grad_enabled() and ws_trunk.requires_grad \
                and ws_tex.requires_grad and all(p.requires_grad for p in self.module.parameters()):
            sample = (torch.randn_like(ws_trunk).requires_grad_(True), torch.randn_like(ws_tex).requires_grad_(True))
            self._graphed = _capture_or_explain("the tri-plane synthesis", _SynthesisCall(self.module, self._orig),
                                                sample)
            self._shapes = shapes
        if not usable or self._graphed is None or shapes != self._shapes:
            return self._orig(ws_trunk, ws_tex, noise_mode=noise_mode, fused_modconv=fused_modconv)
        if torch.is_grad_enabled():
            ensure_grads(self.module.parameters())
        out = self._graphed(ws_trunk, ws_tex)
        return (None, out[0]) if len(out) == 1 else (out[0], out[1])
