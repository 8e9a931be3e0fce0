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

from get3d import perf


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


class _ThreadLocalCapture(torch.cuda.graph):
    """``torch.cuda.graph`` in ``thread_local`` capture mode: a CUDA call that is unsafe during capture fails the
    capture only when this thread makes it.  In the default ``global`` mode the data loader's pin-memory thread,
    pinning a batch while a graph is captured at the first step, made the capture fail now and then."""

    def __init__(self, cuda_graph, pool=None, stream=None, capture_error_mode: str = "thread_local"):
        super().__init__(cuda_graph, pool=pool, stream=stream, capture_error_mode=capture_error_mode)


def _capture_or_explain(what: str, module: nn.Module, sample: tuple):
    """``make_graphed_callables`` (capturing in ``thread_local`` mode) with an error that says which capture
    failed and how to train without."""
    default_graph = torch.cuda.graph
    torch.cuda.graph = _ThreadLocalCapture      # make_graphed_callables opens its captures through this name
    try:
        return torch.cuda.make_graphed_callables(module, sample, num_warmup_iters=3)
    except Exception as e:  # any capture failure gets the same actionable message
        raise RuntimeError(
            f"CUDA graph capture of {what} failed ({type(e).__name__}: {e}). Something in that forward/backward "
            "is not capturable (a host sync, a CPU->GPU copy, data-dependent shapes), or an autograd graph of an "
            "earlier eager pass is still alive. Set train.cuda_graphs: false to train without graphs.") from e
    finally:
        torch.cuda.graph = default_graph


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


class MixedMapping(nn.Module):
    """Both mapping networks with style mixing as shape-static tensor work, for capture: ``ws = where(mix, map(z2),
    map(z))`` per network, where ``mix [2, num_ws]`` (texture, geometry rows) selects the layers that take the
    second code.  A batch that does not mix has ``mix`` all false (``z2`` is then unused and may be zeros), so the
    same graph serves every draw.  Only ``map(z)`` moves ``w_avg`` (when ``update``), as in the eager path.
    ``paired`` (``perf.paired_mapping``): ``z`` and ``z2`` go through each network as one batch."""

    def __init__(self, G: nn.Module, update: bool, paired: bool = False):
        super().__init__()
        self.mapping_tex, self.mapping_geo, self.update, self.paired = G.mapping_tex, G.mapping_geo, update, paired

    def forward(self, z_tex: torch.Tensor, z_geo: torch.Tensor, z2: torch.Tensor, mix: torch.Tensor):
        out = []
        for i, (net, z) in enumerate(((self.mapping_tex, z_tex), (self.mapping_geo, z_geo))):
            if self.paired:
                ws, ws2 = net.map_pair(z, z2[i], update_w_avg=self.update)
            else:
                ws = net(z, update_w_avg=self.update)
                ws2 = net(z2[i], update_w_avg=False)
            out.append(torch.where(mix[i][None, :, None], ws2, ws))
        return out[0], out[1]


def mix_inputs(G: nn.Module, batch: int, style_mixing: bool | float, generator: torch.Generator | None):
    """:class:`MixedMapping`'s ``(z2 [2, B, z_dim], mix [2, num_ws])`` on the CPU, drawn like the eager path
    (texture, then geometry, from ``generator``); ``style_mixing`` as in ``GET3DGenerator.mapping``."""
    from get3d.nn.mapping import draw_mix
    p = 0.0 if not style_mixing else (G.style_mixing_prob if style_mixing is True else float(style_mixing))
    z2 = torch.zeros(2, batch, G.z_dim)
    mix = torch.zeros(2, G.num_ws, dtype=torch.bool)
    for i in range(2):
        cutoff, z = draw_mix(G.num_ws, G.z_dim, batch, p, generator)
        if z is not None:
            z2[i], mix[i, cutoff:] = z, True
    return z2, mix


class GraphedMapping:
    """Replays both mapping networks of the *training* G, style mixing included, as captured graphs (~120 tiny
    kernels forward per call, all launch-bound): one capture that moves ``w_avg`` (Gmain) and one that does not
    (Dmain, replayed forward-only under ``no_grad``).

    Installed on the instance (``G.mapping``).  The style-mixing draws stay on the host with the same CPU stream as
    the eager path (:func:`get3d.nn.mapping.draw_mix`); they reach the graph as one pinned copy of ``z2`` and the
    layer mask.  Calls it cannot serve (eval mode, truncation, another batch shape, a CPU device) run the original
    method.  Outputs live in static buffers, overwritten by the next replay of the same capture.
    """

    def __init__(self, G: nn.Module):
        self.G = G
        self._orig = G.mapping
        self._graphed: dict[bool, nn.Module] = {}
        self._shape = None
        G.mapping = self.mapping

    def uninstall(self) -> None:
        self.G.mapping = self._orig

    def _inputs(self, z_tex: torch.Tensor, style_mixing, generator) -> tuple[torch.Tensor, torch.Tensor]:
        from get3d.train.h2d import h2d
        z2, mix = mix_inputs(self.G, z_tex.shape[0], style_mixing, generator)
        z2, mix = h2d([z2, mix.float()], z_tex.device)
        return z2, mix > 0.5

    def _capture(self, update: bool, sample: tuple) -> nn.Module:
        nets = (self.G.mapping_tex, self.G.mapping_geo)
        saved = [n.w_avg.clone() for n in nets]    # the warm-up passes must not move the running means
        with torch.enable_grad():
            mixed = MixedMapping(self.G, update, paired=perf.active().paired_mapping)
            graphed = _capture_or_explain("the mapping networks", mixed, sample)
        for n, w in zip(nets, saved):
            n.w_avg.copy_(w)
        return graphed

    def mapping(self, z_tex: torch.Tensor, z_geo: torch.Tensor, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, style_mixing: bool | float = False,
                generator: torch.Generator | None = None, update_w_avg: bool | None = None):
        G = self.G
        update = G.mapping_tex.training if update_w_avg is None else bool(update_w_avg)
        shape = tuple(z_tex.shape)
        usable = (G.training and truncation_psi == 1 and z_tex.is_cuda and tuple(z_geo.shape) == shape
                  and (self._shape is None or self._shape == shape))
        if not usable:
            return self._orig(z_tex, z_geo, truncation_psi, truncation_cutoff, style_mixing, generator, update_w_avg)
        z2, mix = self._inputs(z_tex, style_mixing, generator)
        if update not in self._graphed:
            sample = (torch.randn_like(z_tex), torch.randn_like(z_geo), torch.randn_like(z2), mix.clone())
            self._graphed[update] = self._capture(update, sample)
            self._shape = shape
        if torch.is_grad_enabled():
            ensure_grads(p for n in (G.mapping_tex, G.mapping_geo) for p in n.parameters())
        return self._graphed[update](z_tex, z_geo, z2, mix)


class _ParamsCall(nn.Module):
    """A tensor-only callable with the parameters it reads registered, so that a captured backward returns
    their gradients (and only theirs)."""

    def __init__(self, forward, params):
        super().__init__()
        self._forward = forward
        self.params = nn.ParameterList(params)

    def forward(self, *inputs):
        return self._forward(*inputs)


def _used_parameters(fn, module: nn.Module, sample: tuple) -> list:
    """The trainable parameters of ``module`` that ``fn(*sample)``'s outputs depend on (one eager pass)."""
    params = [p for p in module.parameters() if p.requires_grad]
    with torch.enable_grad():
        out = [o for o in fn(*sample) if o.requires_grad]
        grads = torch.autograd.grad(sum(o.float().sum() for o in out), params, allow_unused=True)
    return [p for p, g in zip(params, grads) if g is not None]


class GraphedGridFields:
    """Replays the training G's DMTet grid fields (:meth:`GET3DGenerator.grid_fields`: the geometry query at every
    tet-grid vertex, the deformation, the empty-shape guard and the SDF regulariser) as a captured graph: fixed
    shapes over the grid, ~60 kernels forward, twice per step, plus their backward.  Marching tets, whose output
    size depends on the data, runs eagerly on the graph's outputs.

    Installed on the instance (``G.grid_fields``); calls it cannot serve (eval mode, another batch shape, the
    recomputing MLPs of ``perf.recompute_geometry_mlp``, inputs that do not need gradients before the first
    capture) run the original method.  Outputs live in static buffers, as for :class:`GraphedSynthesis`.
    """

    def __init__(self, G: nn.Module):
        self.G = G
        self._orig = G.grid_fields
        self._graphed = None
        self._shapes = None
        self._params: list = []
        G.grid_fields = self.grid_fields

    def uninstall(self) -> None:
        self.G.grid_fields = self._orig

    def grid_fields(self, *inputs: torch.Tensor):
        shapes = tuple(tuple(t.shape) for t in inputs)
        usable = self.G.training and inputs[0].is_cuda and not perf.active().recompute_geometry_mlp
        if usable and self._graphed is None and torch.is_grad_enabled() and all(t.requires_grad for t in inputs):
            sample = tuple(torch.randn_like(t).requires_grad_(True) for t in inputs)
            self._params = _used_parameters(self._orig, self.G, sample)
            self._graphed = _capture_or_explain("the DMTet grid fields", _ParamsCall(self._orig, self._params),
                                                sample)
            self._shapes = shapes
        if not usable or self._graphed is None or shapes != self._shapes:
            return self._orig(*inputs)
        if torch.is_grad_enabled():
            ensure_grads(self._params)
        return self._graphed(*inputs)


class GraphedShading:
    """Replays the training G's shading of a padded batch (:meth:`GET3DGenerator.shade`: interpolation, the
    covered pixels' texture query into fixed slots, antialiasing, the image layout) as a captured graph, with
    ``perf.padded_surface`` and ``perf.shade_graph``.  After nvdiffrast's ``rasterize``, which synchronizes its
    stream, the GPU is drained and these ~100 launches would each wait for the host.

    Captured from the first call's own inputs (the rasterizer output indexes triangles: random values would not
    do), once per input shapes and pixel capacity (the padded capacities change rarely; the two most recent
    captures are kept).  Calls it cannot serve (eval mode, a capture not yet made under autograd) run the
    original method.  Outputs live in static buffers, as for :class:`GraphedSynthesis`.
    """

    KEEP = 2

    def __init__(self, G: nn.Module):
        self.G = G
        self._orig = G.shade
        self._graphed: dict = {}
        self._params: list = []
        G.shade = self.shade

    def uninstall(self) -> None:
        self.G.shade = self._orig

    def shade(self, *inputs: torch.Tensor):
        usable = self.G.training and inputs[0].is_cuda and perf.active().shade_graph
        if not usable:
            return self._orig(*inputs)
        key = (tuple((tuple(t.shape), t.dtype) for t in inputs), self.G.padded_capacity().pixels)
        if key not in self._graphed and torch.is_grad_enabled() and any(t.requires_grad for t in inputs):
            sample = tuple(t.detach().clone().requires_grad_(t.requires_grad) for t in inputs)
            if not self._params:
                self._params = _used_parameters(self._orig, self.G, sample)
            if len(self._graphed) >= self.KEEP:
                self._graphed.pop(next(iter(self._graphed)))       # the oldest capture and its memory pool
            self._graphed[key] = _capture_or_explain("the padded shading", _ParamsCall(self._orig, self._params),
                                                     sample)
        graphed = self._graphed.get(key)                         # a no-grad call (Dmain) replays the forward
        if graphed is None:
            return self._orig(*inputs)
        if torch.is_grad_enabled():
            ensure_grads(self._params)
        return graphed(*inputs)
