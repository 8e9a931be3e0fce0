"""The GET3D training loop.

``train(cfg_model, cfg_train, dataset_path, run_dir, hooks=None)`` runs (or resumes) one training run. It
imports neither Prefect nor MLflow: outside orchestration plugs in through :class:`Hooks`.

Per step (global batch ``B`` split into chunks of ``batch_per_gpu``, chunks spread over ranks):

1. ``Gmain``  — G update on both discriminators' non-saturating loss + SDF regulariser (style mixing on).
2. ``Greg``   — none.
3. ``Dmain``  — D_rgb and D_mask update on real/fake logistic loss.
4. ``Dreg``   — every ``r1_interval`` steps: lazy R1 on both discriminators (weight × interval).
5. G_ema update; counters; tick / snapshot / abort checks.

Determinism: every random draw of a step comes from generators seeded with ``(seed, step, phase, chunk)``
(the global torch RNG — used by the generator's per-layer noise — is reseeded per chunk too), and the data
order is a function of ``(seed, cur_nimg)``. So the trajectory does not depend on how the run was cut into
processes (kill + resume) or on how many ranks share the batch. With ``deterministic: true`` on CPU a resumed
run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from get3d import perf
from get3d.schema import to_dict
from get3d.train import checkpoint as ckpt
from get3d.train import distributed as dist_util
from get3d.train.config import TrainConfig
from get3d.train.ema import ema_beta, make_ema, update_ema
from get3d.train.h2d import h2d
from get3d.train.losses import (
    SURFACE_KEYS,
    FakeInputs,
    GET3DLoss,
    RealInputs,
    grads_finite_flag,
    sanitize_grads,
    sanitize_grads_on_device,
)
from get3d.train.rundir import RunDir
from get3d.train.sampler import ResumableBatchSampler
from get3d.train.step_check import DeferredChecks, PhaseResult, StepResult

log = logging.getLogger("get3d.train")

PHASE_IDS = {"Gmain": 1, "Dmain": 2, "Dreg": 3, "fakes": 4, "preview": 5}
MAX_SURFACE_RERUNS = 4     # padded surfaces: larger capacities tried before a phase gives up


class NonFiniteError(RuntimeError):
    """Too many consecutive non-finite losses; the run stopped and the last good snapshot is kept."""


class TrainAborted(RuntimeError):
    pass


@dataclass
class Hooks:
    """Callbacks for outside orchestration. All are optional and called on rank 0 only
    (``should_abort``'s answer is broadcast to every rank)."""

    on_progress: Callable[[dict], None] | None = None
    should_abort: Callable[[], bool] | None = None
    on_snapshot: Callable[[Path, str], None] | None = None


def derive_seed(*parts: int) -> int:
    """Mix integers into a 63-bit seed (splitmix64-style); stable across runs and platforms."""
    x = 0x9E3779B97F4A7C15
    for p in parts:
        x = (x ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x & 0x7FFFFFFFFFFFFFFF


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _set_deterministic(on: bool) -> None:
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=False)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def _peak_memory(device: torch.device) -> dict:
    out = {"mem/host_rss_peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        out["mem/gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["mem/gpu_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    return out


def _fmt_progress(rec: dict) -> str:
    parts = [f"tick {rec['tick']:<5d}", f"kimg {rec['kimg']:<9.3f}", f"step {rec['step']:<7d}",
             f"s/kimg {rec['timing/sec_per_kimg']:<8.2f}", f"img/s {rec['timing/img_per_sec']:<7.2f}"]
    for key, lab in (("loss/G", "G"), ("loss/D", "D"), ("loss/r1", "R1"), ("loss/sdf_reg", "sdf")):
        if key in rec and rec[key] is not None:
            parts.append(f"{lab} {rec[key]:<8.4f}")
    if "mem/gpu_peak_gib" in rec:
        parts.append(f"gpumem {rec['mem/gpu_peak_gib']:.2f}GiB")
    else:
        parts.append(f"rss {rec['mem/host_rss_peak_gib']:.2f}GiB")
    if rec.get("nonfinite/steps_skipped"):
        parts.append(f"nonfinite-skips {rec['nonfinite/steps_skipped']}")
    if rec.get("surface/reruns"):
        parts.append(f"surface-reruns {rec['surface/reruns']}")
    if rec.get("surface/skipped_phases"):
        parts.append(f"surface-skips {rec['surface/skipped_phases']}")
    return "  ".join(parts)


class _TickStats:
    """Sums of per-sample loss terms over a tick (kept in the training state so resume is exact)."""

    def __init__(self, sums: dict | None = None, counts: dict | None = None):
        self.sums = dict(sums or {})
        self.counts = dict(counts or {})

    def add(self, terms: dict[str, float], n: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
            self.counts[k] = self.counts.get(k, 0) + n

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / max(self.counts[k], 1) for k in self.sums}

    def state(self) -> dict:
        return {"sums": self.sums, "counts": self.counts}


def _flat_losses(means: dict[str, float]) -> dict[str, float]:
    out = {f"loss/{k}": v for k, v in means.items()}
    g = [means.get("G/adv_rgb"), means.get("G/adv_mask")]
    if all(v is not None for v in g):
        out["loss/G"] = g[0] + g[1]
    d = [means.get(k) for k in ("D/fake_rgb", "D/fake_mask", "D/real_rgb", "D/real_mask")]
    if all(v is not None for v in d):
        out["loss/D"] = sum(d)
    if "D/r1_rgb" in means:
        out["loss/r1"] = means["D/r1_rgb"] + means.get("D/r1_mask", 0.0)
    if "G/sdf_reg" in means:
        out["loss/sdf_reg"] = means["G/sdf_reg"]
    return out


def _resolve_backend(cfg: TrainConfig, cfg_model, device: torch.device) -> str:
    """train.backend when explicit, else the model's raster_backend, else by device."""
    want = cfg.backend if cfg.backend != "auto" else getattr(cfg_model, "raster_backend", "auto")
    if want == "nvdiffrast" and device.type != "cuda":
        raise ValueError("train.backend / model.raster_backend: 'nvdiffrast' needs a CUDA device; "
                         "use 'torch' or 'auto' on CPU")
    if want in ("torch", "nvdiffrast"):
        return want
    return "nvdiffrast" if device.type == "cuda" else "torch"


def train(cfg_model, cfg_train: TrainConfig, dataset_path, run_dir, hooks: Hooks | None = None) -> dict:
    """Train (or resume) one run. Returns ``{"status", "cur_nimg", "kimg", "step", "state", "network", "run_dir"}``.

    Raises :class:`NonFiniteError` after ``max_nonfinite_steps`` consecutive non-finite losses and
    :class:`~get3d.train.checkpoint.CheckpointError` when resume finds only corrupt training states.
    """
    prev = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        return _train(cfg_model, cfg_train, dataset_path, run_dir, hooks or Hooks())
    finally:  # leave the process as found (matters when train() runs inside a larger program or a test)
        torch.use_deterministic_algorithms(prev[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = prev[1], prev[2]
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = prev[3], prev[4]


def _set_tf32(cfg: TrainConfig, device: torch.device) -> None:
    """``train.tf32`` on CUDA: TF32 for fp32 matmuls and cuDNN convs (both on or both off). CPU: untouched."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = bool(cfg.tf32)
        torch.backends.cudnn.allow_tf32 = bool(cfg.tf32)


@dataclass
class _Run:
    """What a run works with: process/world, run directory, networks, optimizers, loss and (once opened) data."""

    cfg: TrainConfig
    cfg_model: object
    hooks: Hooks
    world: object
    device: torch.device
    run: RunDir
    dataset_path: Path
    backend: str
    nets: object
    G_ema: torch.nn.Module
    g_params: list
    d_params: list
    opt_G: torch.optim.Optimizer
    opt_D: torch.optim.Optimizer
    loss: GET3DLoss
    # set by _open_data
    num_chunks: int = 0
    my_chunks: range = range(0)
    sampler: ResumableBatchSampler | None = None
    data_iter: object = None
    checks: DeferredChecks | None = None   # train.step_check deferred

    @property
    def B(self) -> int:
        return self.cfg.batch_size

    @property
    def total_nimg(self) -> int:
        return round(self.cfg.total_kimg * 1000)

    @property
    def snap_nimg(self) -> int:
        return round(self.cfg.snapshot_kimg * 1000)

    @property
    def tick_nimg(self) -> int:
        return round(self.cfg.kimg_per_tick * 1000)


@dataclass
class _TrainState:
    """Mutable training state. The counters and tick stats are saved in (and restored from) training states;
    the rest is per-process bookkeeping."""

    cur_nimg: int = 0
    step: int = 0
    tick: int = 0
    tick_start_nimg: int = 0
    nonfinite_run: int = 0
    nonfinite_total: int = 0
    surface_reruns: int = 0
    surface_skips: int = 0
    tick_stats: _TickStats = field(default_factory=_TickStats)
    last_state_path: Path | None = None
    resumed_from: str | None = None
    t_start: float = 0.0
    t_tick: float = 0.0
    tick_nimg_done: int = 0
    preview_z: tuple | None = None
    snapshot_due: bool = False
    next_inputs: object = None          # the next step's inputs, drawn during this step (_train_step)

    def counters(self) -> dict:
        return {"cur_nimg": self.cur_nimg, "step": self.step, "tick": self.tick,
                "tick_start_nimg": self.tick_start_nimg,
                "nonfinite_run": self.nonfinite_run, "nonfinite_total": self.nonfinite_total,
                "surface_reruns": self.surface_reruns, "surface_skips": self.surface_skips}

    def load_counters(self, c: dict) -> None:
        self.cur_nimg, self.step, self.tick, self.tick_start_nimg = (c["cur_nimg"], c["step"], c["tick"],
                                                                     c["tick_start_nimg"])
        self.nonfinite_run, self.nonfinite_total = c.get("nonfinite_run", 0), c.get("nonfinite_total", 0)
        self.surface_reruns = c.get("surface_reruns", 0)
        self.surface_skips = c.get("surface_skips", 0)


def _train(cfg_model, cfg_train: TrainConfig, dataset_path, run_dir, hooks: Hooks) -> dict:
    r = _build(cfg_model, cfg_train, dataset_path, run_dir, hooks)
    st = _resume(r)
    _open_data(r, st)
    _write_provenance(r, st)
    status = "completed"
    st.t_tick = st.t_start = time.perf_counter()
    if r.world.is_main:
        log.info("training %s → %.3f kimg, batch %d (%d chunk(s) of %d on %d rank(s)), device %s, backend %s",
                 r.run.path, r.cfg.total_kimg, r.B, r.num_chunks, r.cfg.batch_per_gpu, r.world.world_size,
                 r.device, r.backend)
    try:
        while st.cur_nimg < r.total_nimg:
            _train_step(r, st)
            done = st.cur_nimg >= r.total_nimg
            if done or st.cur_nimg - st.tick_start_nimg >= r.tick_nimg:
                _end_tick(r, st, done)
            _maybe_snapshot(r, st, done)
            if _abort_requested(r, st):
                status = "aborted"
                break
        _take_results(r, st, drain=True)
        state_path, net_path = _write_snapshots(r, st)
    finally:
        r.data_iter = None  # shuts the loader workers down
    return _result(r, st, status, state_path, net_path)


def _build(cfg_model, cfg: TrainConfig, dataset_path, run_dir, hooks: Hooks) -> _Run:
    """Process setup (world, determinism, run dir), then networks, G_ema, optimizers and loss."""
    from get3d.train import models

    world, device = dist_util.init(cfg.device, cfg.dist_timeout_s)
    _set_deterministic(cfg.deterministic)
    _set_tf32(cfg, device)
    run = RunDir(run_dir, writer=world.is_main)
    dataset_path = Path(dataset_path)
    if not dataset_path.exists():
        raise FileNotFoundError(f"dataset {dataset_path} does not exist")

    # identical init on every rank: same seed; rank 0's weights broadcast anyway
    backend = _resolve_backend(cfg, cfg_model, device)
    _seed_everything(derive_seed(cfg.seed, 0xB1D))
    nets = models.build_networks(cfg_model, device=device, backend=backend,
                                 prior=models.camera_prior(cfg_model, dataset_path))
    for m in (nets.G, nets.D_rgb, nets.D_mask):
        dist_util.broadcast_module_params(m, world)
    G_ema = make_ema(nets.G)
    g_params = [p for p in nets.G.parameters() if p.requires_grad]
    d_params = [p for p in list(nets.D_rgb.parameters()) + list(nets.D_mask.parameters()) if p.requires_grad]
    opt_G = torch.optim.Adam(g_params, **cfg.adam_kwargs("G", device.type))
    opt_D = torch.optim.Adam(d_params, **cfg.adam_kwargs("D", device.type))
    graphs = None
    if device.type == "cuda" and cfg.cuda_graphs:
        from get3d.train import graphs as cuda_graphs
        graphs = cuda_graphs.GraphedDiscriminators(nets.D_rgb, nets.D_mask, bf16=cfg.precision == "bf16")
        # these install themselves on the training G (G_ema stays eager)
        cuda_graphs.GraphedMapping(nets.G)
        cuda_graphs.GraphedSynthesis(nets.G.backbone.synthesis)
        cuda_graphs.GraphedGridFields(nets.G)
        cuda_graphs.GraphedShading(nets.G)
    loss = GET3DLoss(nets, cfg, device, graphs)
    return _Run(cfg=cfg, cfg_model=cfg_model, hooks=hooks, world=world, device=device, run=run,
                dataset_path=dataset_path, backend=backend, nets=nets, G_ema=G_ema, g_params=g_params,
                d_params=d_params, opt_G=opt_G, opt_D=opt_D, loss=loss,
                checks=DeferredChecks() if cfg.step_check == "deferred" else None)


def _resume(r: _Run) -> _TrainState:
    """A fresh state, or the one ``train.resume`` points at (``auto``: the newest readable in the run dir)."""
    cfg = r.cfg
    st = _TrainState()
    found = None
    if cfg.resume == "auto":
        found = ckpt.find_resume_state(r.run.checkpoints)
    elif cfg.resume != "none":
        p = Path(cfg.resume)
        header, payload = ckpt.load_checkpoint(p, "state")
        found = (p, header, payload)
    if found is None:
        return st
    path, header, saved = found
    r.nets.G.load_state_dict(saved["G"])
    r.nets.D_rgb.load_state_dict(saved["D_rgb"])
    r.nets.D_mask.load_state_dict(saved["D_mask"])
    r.G_ema.load_state_dict(saved["G_ema"])
    r.opt_G.load_state_dict(saved["opt_G"])
    r.opt_D.load_state_dict(saved["opt_D"])
    st.load_counters(saved["counters"])
    st.tick_stats = _TickStats(**saved.get("tick_stats", {}))
    ckpt.restore_rng(saved["rng"])
    if saved.get("sampler", {}).get("seed", cfg.seed) != cfg.seed:
        log.warning("resuming with train.seed=%s but the snapshot was written with seed %s",
                    cfg.seed, saved["sampler"]["seed"])
    st.resumed_from = str(path)
    st.last_state_path = Path(path)
    if r.world.is_main:
        log.info("resumed from %s at kimg %.3f (step %d)", path, st.cur_nimg / 1000, st.step)
        r.run.truncate_stats(st.cur_nimg)
    return st


def _open_data(r: _Run, st: _TrainState) -> None:
    """This rank's chunks and a data iterator positioned at ``st.cur_nimg``."""
    from get3d.train import models

    cfg = r.cfg
    dataset = models.open_dataset(r.dataset_path, r.cfg_model)
    r.num_chunks = cfg.batch_size // cfg.batch_per_gpu
    r.my_chunks = dist_util.rank_chunks(r.num_chunks, r.world)
    r.sampler = ResumableBatchSampler(len(dataset), cfg.seed, cfg.batch_size, cfg.batch_per_gpu, r.my_chunks,
                                      start_nimg=st.cur_nimg)
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=r.sampler, num_workers=cfg.num_workers,
                                         pin_memory=r.device.type == "cuda",
                                         worker_init_fn=models.worker_init_fn if cfg.num_workers else None,
                                         persistent_workers=False,
                                         prefetch_factor=2 if cfg.num_workers else None)
    r.data_iter = iter(loader)


def _write_provenance(r: _Run, st: _TrainState) -> None:
    from get3d.dataset.format import dataset_hash

    config_record = {"model": to_dict(r.cfg_model), "train": to_dict(r.cfg), "perf": to_dict(perf.active()),
                     "backend": r.backend,
                     "world_size": r.world.world_size, "device": str(r.device)}
    r.run.write_provenance(config=config_record, dataset_path=r.dataset_path, seed=r.cfg.seed,
                           world_size=r.world.world_size, resumed_from=st.resumed_from,
                           dataset_digest=dataset_hash(r.dataset_path) if r.world.is_main else {})


def _train_step(r: _Run, st: _TrainState) -> None:
    """One step: Gmain, Dmain, lazy Dreg, G_ema update, counters and the non-finite guard.

    The next step's inputs (its reals from the loader, the fakes of both phases) are drawn and sent while the GPU
    works through this step's last phase: before its loss read, not after it, when the GPU would wait for them."""
    cfg, nets, B = r.cfg, r.nets, r.B
    _take_results(r, st)
    inputs, st.next_inputs = st.next_inputs, None
    if inputs is None or inputs.step != st.step:
        inputs = _step_inputs(r, st.step)
    r1 = cfg.r1_gamma > 0 and st.step % cfg.r1_interval == 0

    def prefetch() -> None:
        if st.cur_nimg + B < r.total_nimg:
            st.next_inputs = _step_inputs(r, st.step + 1)

    step_ok = True
    # Gmain
    nets.G.requires_grad_(True); nets.D_rgb.requires_grad_(False); nets.D_mask.requires_grad_(False)
    step_ok &= _run_phase(r, st, "Gmain", r.g_params, r.opt_G, None, inputs.fakes["Gmain"])
    # Dmain
    nets.G.requires_grad_(False); nets.D_rgb.requires_grad_(True); nets.D_mask.requires_grad_(True)
    step_ok &= _run_phase(r, st, "Dmain", r.d_params, r.opt_D, inputs.reals, inputs.fakes["Dmain"],
                          before_read=None if r1 else prefetch)
    # Dreg (lazy R1)
    if r1:
        step_ok &= _run_phase(r, st, "Dreg", r.d_params, r.opt_D, inputs.reals, None, gain=float(cfg.r1_interval),
                              before_read=prefetch)
    nets.G.requires_grad_(True)
    # EMA
    with torch.profiler.record_function("stage/ema"):
        update_ema(r.G_ema, nets.G, ema_beta(st.cur_nimg, B, cfg.ema_kimg, cfg.ema_rampup))
    st.cur_nimg += B
    st.step += 1
    st.tick_nimg_done += B
    if r.checks is not None:
        r.checks.end_step(st.step - 1, st.cur_nimg)
    else:
        _check_nonfinite(r, st, step_ok, st.step - 1, st.cur_nimg)


@dataclass
class _StepInputs:
    step: int
    reals: list[RealInputs]
    fakes: dict[str, list[FakeInputs]]


def _step_inputs(r: _Run, step: int) -> _StepInputs:
    return _StepInputs(step, _next_reals(r), {phase: _step_fakes(r, step, phase) for phase in ("Gmain", "Dmain")})


def _next_reals(r: _Run) -> list[RealInputs]:
    reals = []
    for _ in r.my_chunks:
        batch = next(r.data_iter)
        reals.append(RealInputs(batch["image"].to(r.device, non_blocking=True).float(),
                                batch["mask"].to(r.device, non_blocking=True).float(),
                                batch["camera"].to(r.device, non_blocking=True).float()))
    return reals


def _step_fakes(r: _Run, step: int, phase: str) -> list[FakeInputs]:
    """Random inputs of this rank's chunks, cut out of the *global* batch's draw (world-size invariant)."""
    cfg, nets, B, device = r.cfg, r.nets, r.B, r.device
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, step, PHASE_IDS[phase], PHASE_IDS["fakes"]))
    z_tex = torch.randn([B, nets.z_dim], generator=g)
    z_geo = torch.randn([B, nets.z_dim], generator=g)
    camera, c2w = nets.sample_cameras(B, g)
    out = []
    for c in r.my_chunks:
        s = slice(c * cfg.batch_per_gpu, (c + 1) * cfg.batch_per_gpu)
        out.append(FakeInputs(*h2d([z_tex[s], z_geo[s], camera[s], c2w[s]], device),
                              derive_seed(cfg.seed, step, PHASE_IDS[phase], c, 7)))
    return out


def _run_phase(r: _Run, st: _TrainState, phase: str, module_params, opt, reals, fakes, gain: float = 1.0,
               before_read=None) -> bool:
    """Accumulate ``phase`` over this rank's chunks, all-reduce, and step ``opt`` if every loss term is finite
    (their global sums then go into the tick stats). Returns whether it was finite.

    With ``perf.padded_surface`` a surface that did not fit its fixed capacity is reported with the loss sums
    (same host read); the phase is then undone (gradients, the running ``w_avg``) and re-run with a capacity
    that fits, so no triangle is ever dropped.  ``before_read`` runs once, after the phase's work is queued and
    before the host waits for its loss sums.  With ``train.step_check: deferred`` the device decides instead
    (:mod:`get3d.train.step_check`) and the host reads nothing here."""
    if r.checks is not None:
        return _run_phase_deferred(r, st, phase, module_params, opt, reals, fakes, gain, before_read)
    cap = r.nets.G.padded_capacity()
    for attempt in range(MAX_SURFACE_RERUNS + 1):
        w_avg = [b.clone() for b in _w_avg_buffers(r.nets.G)] if cap is not None and phase == "Gmain" else []
        keys, vals, grads_ok = _accumulate_phase(r, st, phase, module_params, opt, reals, fakes, gain, before_read)
        before_read = None
        surf = {k: v for k, v in zip(keys, vals) if k in SURFACE_KEYS}
        vals = [v for k, v in zip(keys, vals) if k not in surf]
        keys = [k for k in keys if k not in surf]
        if not surf.get("surface/overflow", 0):
            if cap is not None and surf and perf.active().fit_capacity:
                old = (cap.verts, cap.faces, cap.pixels)
                if cap.fit(*(int(surf[k]) for k in SURFACE_KEYS[1:])):
                    log.debug("%s step %d: padded capacity %d / %d / %d fitted to %d / %d / %d", phase, st.step,
                              *old, cap.verts, cap.faces, cap.pixels)
            break
        if attempt == MAX_SURFACE_RERUNS:
            raise RuntimeError(f"{phase} step {st.step}: the padded surface still overflowed after "
                               f"{MAX_SURFACE_RERUNS} larger capacities")
        old = (cap.verts, cap.faces, cap.pixels)
        need = [int(surf[k]) for k in SURFACE_KEYS[1:]]
        cap.grow(*need)
        st.surface_reruns += 1
        log.info("%s step %d: a sample needed %d vertices / %d faces / %d shaded pixels (capacity %d / %d / "
                 "%d); re-running the phase with capacity %d / %d / %d", phase, st.step, *need, *old,
                 cap.verts, cap.faces, cap.pixels)
        with torch.no_grad():
            for b, v in zip(_w_avg_buffers(r.nets.G), w_avg):
                b.copy_(v)
    finite = all(math.isfinite(v) for v in vals)
    if finite:
        sanitize_grads(module_params, r.cfg.grad_clamp, all_finite=grads_ok)
        with torch.profiler.record_function("stage/optimizer"):
            opt.step()
        st.tick_stats.add(dict(zip(keys, vals)), r.B)
    else:
        opt.zero_grad(set_to_none=False)
    return finite


def _run_phase_deferred(r: _Run, st: _TrainState, phase: str, module_params, opt, reals, fakes, gain: float,
                        before_read=None) -> bool:
    """:func:`_run_phase` without a host read: the step is skipped on the device when a loss is not finite or a
    padded surface overflowed; :func:`_take_results` books the outcome later."""
    keys, vec = _phase_sums(r, st, phase, module_params, opt, reals, fakes, gain)
    r.checks.gate(opt, phase, keys, vec)
    sanitize_grads_on_device(module_params, r.cfg.grad_clamp)
    with torch.profiler.record_function("stage/optimizer"):
        opt.step()
    if before_read is not None:
        before_read()
    return True


def _take_results(r: _Run, st: _TrainState, drain: bool = False) -> None:
    """Book the deferred checks' results that reached the host (all of them with ``drain``): loss sums of the
    phases that stepped into the tick stats, padded capacities grown after an overflow (that phase was skipped)
    or fitted to the needs, and the non-finite streak guard."""
    if r.checks is None:
        return
    cap = r.nets.G.padded_capacity()
    for res in r.checks.results(drain=drain):
        for p in res.phases:
            if p.stepped:
                st.tick_stats.add(p.losses, r.B)
            if cap is not None and p.surface:
                _book_surface(r, st, cap, res, p)
        _check_nonfinite(r, st, res.finite, res.step, res.nimg)


def _book_surface(r: _Run, st: _TrainState, cap, res: StepResult, p: PhaseResult) -> None:
    need = [int(p.surface[k]) for k in SURFACE_KEYS[1:]]
    old = (cap.verts, cap.faces, cap.pixels)
    if p.overflowed:
        cap.grow(*need)
        st.surface_skips += 1
        if r.world.is_main:
            log.info("%s step %d skipped: a sample needed %d vertices / %d faces / %d shaded pixels (capacity "
                     "%d / %d / %d); capacity now %d / %d / %d", p.phase, res.step, *need, *old, cap.verts,
                     cap.faces, cap.pixels)
    elif perf.active().fit_capacity and cap.fit(*need):
        log.debug("%s step %d: padded capacity %d / %d / %d fitted to %d / %d / %d", p.phase, res.step, *old,
                  cap.verts, cap.faces, cap.pixels)


def _phase_sums(r: _Run, st: _TrainState, phase: str, module_params, opt, reals, fakes, gain: float):
    """Zero the gradients, accumulate ``phase`` over this rank's chunks, all-reduce. Returns ``(keys, sums on the
    device)``; nothing is read by the host."""
    opt.zero_grad(set_to_none=False)
    sums: dict[str, torch.Tensor] = {}
    for i, c in enumerate(r.my_chunks):
        torch.manual_seed(derive_seed(r.cfg.seed, st.step, PHASE_IDS[phase], c))
        with torch.profiler.record_function(f"phase/{phase}"):  # labels profiler traces; ~free otherwise
            terms = r.loss.accumulate(phase, reals[i] if reals else None, fakes[i] if fakes else None,
                                      norm=float(r.B), gain=gain)
        for k, v in terms.items():
            sums[k] = sums.get(k, 0) + v.detach().double()
    keys = sorted(sums)
    vec = torch.stack([sums[k] for k in keys]).to(r.device)
    dist_util.allreduce_sum(vec, r.world)
    dist_util.allreduce_grads(module_params, r.world)
    return keys, vec


def _accumulate_phase(r: _Run, st: _TrainState, phase: str, module_params, opt, reals, fakes, gain: float,
                      before_read=None):
    """:func:`_phase_sums`, then one host read of the loss sums and the gradients' finiteness. Returns
    ``(keys, values, grads_finite or None)``."""
    keys, vec = _phase_sums(r, st, phase, module_params, opt, reals, fakes, gain)
    flag = grads_finite_flag(module_params)
    if flag is not None:  # one host sync for the loss sums and the gradients' finiteness
        vec = torch.cat([vec, flag.to(vec.dtype).reshape(1)])
    if before_read is not None:
        before_read()
    vals = vec.tolist()
    grads_ok = bool(vals.pop()) if flag is not None else None
    return keys, vals, grads_ok


def _w_avg_buffers(G) -> list[torch.Tensor]:
    """The mapping networks' running ``w_avg`` (Gmain moves it; an undone phase puts it back)."""
    return [b for n, b in G.named_buffers() if n.endswith("w_avg")]


def _check_nonfinite(r: _Run, st: _TrainState, step_ok: bool, step: int, nimg: int) -> None:
    """Count skipped (non-finite) steps; raise :class:`NonFiniteError` after too many in a row."""
    if step_ok:
        st.nonfinite_run = 0
        return
    st.nonfinite_run += 1
    st.nonfinite_total += 1
    if r.world.is_main:
        log.warning("non-finite loss at step %d (kimg %.3f): step skipped (%d consecutive of max %d)",
                    step, nimg / 1000, st.nonfinite_run, r.cfg.max_nonfinite_steps)
    if st.nonfinite_run >= r.cfg.max_nonfinite_steps:
        raise NonFiniteError(
            f"{st.nonfinite_run} consecutive steps with non-finite losses (up to kimg {nimg / 1000:.3f}); "
            f"training stopped. Last good training state: {st.last_state_path or 'none written yet'}. "
            f"Lower the learning rates or check the data.")


def _end_tick(r: _Run, st: _TrainState, done: bool) -> None:
    """Tick record (timing, losses, memory) → stats/plots/progress/hook, preview image; start the next tick."""
    cfg, world = r.cfg, r.world
    _take_results(r, st, drain=True)
    dt = time.perf_counter() - st.t_tick
    n = max(st.tick_nimg_done, 1)
    rec = {"tick": st.tick, "step": st.step, "nimg": st.cur_nimg, "kimg": st.cur_nimg / 1000.0,
           "timing/sec_per_tick": dt, "timing/sec_per_kimg": dt / n * 1000.0,
           "timing/img_per_sec": n / max(dt, 1e-9), "timing/total_sec": time.perf_counter() - st.t_start,
           "nonfinite/steps_skipped": st.nonfinite_total}
    if r.nets.G.padded_capacity() is not None:
        if r.checks is None:
            rec["surface/reruns"] = st.surface_reruns
        else:
            rec["surface/skipped_phases"] = st.surface_skips
    rec.update(_flat_losses(st.tick_stats.means()))
    rec.update(_peak_memory(r.device))
    # Keep buffers (w_avg) identical on every rank.
    dist_util.broadcast_module_buffers(r.nets.G, world)
    dist_util.broadcast_module_buffers(r.G_ema, world)
    if world.is_main:
        r.run.log_stats(rec)
        r.run.write_plots()
        print(_fmt_progress(rec), flush=True)
        if r.hooks.on_progress:
            r.hooks.on_progress(rec)
        if cfg.image_snapshot_ticks and (st.tick % cfg.image_snapshot_ticks == 0 or done):
            if st.preview_z is None:
                st.preview_z = _preview_inputs(r.nets, cfg.seed, r.device)
            _save_preview(r.nets, r.G_ema, st.preview_z, r.run.images / f"fakes-{st.cur_nimg:012d}.png")
    st.tick += 1
    st.tick_start_nimg = st.cur_nimg
    st.tick_stats = _TickStats()
    st.t_tick = time.perf_counter()
    st.tick_nimg_done = 0


def _maybe_snapshot(r: _Run, st: _TrainState, done: bool) -> None:
    """Mark a snapshot due when this step crossed a ``snapshot_kimg`` boundary; write it once healthy."""
    snap_nimg = r.snap_nimg
    if snap_nimg > 0 and not done and st.cur_nimg // snap_nimg > (st.cur_nimg - r.B) // snap_nimg:
        st.snapshot_due = True
    if st.snapshot_due and not done:
        _take_results(r, st, drain=True)   # the streak must be known before a state is written
    if st.snapshot_due and not done and st.nonfinite_run == 0:
        # Never snapshot in the middle of a non-finite streak: the newest state stays a healthy one.
        _write_snapshots(r, st)
        st.snapshot_due = False


def _abort_requested(r: _Run, st: _TrainState) -> bool:
    """Rank 0 asks ``hooks.should_abort``; the answer is broadcast to every rank."""
    world = r.world
    abort = bool(r.hooks.should_abort()) if (world.is_main and r.hooks.should_abort) else False
    if dist_util.broadcast_flag(abort, world, r.device):
        if world.is_main:
            log.warning("abort requested at kimg %.3f: writing a training state and stopping", st.cur_nimg / 1000)
        return True
    return False


def _state_payload(r: _Run, st: _TrainState) -> dict:
    return {
        "G": r.nets.G.state_dict(), "D_rgb": r.nets.D_rgb.state_dict(), "D_mask": r.nets.D_mask.state_dict(),
        "G_ema": r.G_ema.state_dict(), "opt_G": r.opt_G.state_dict(), "opt_D": r.opt_D.state_dict(),
        "counters": st.counters(),
        "tick_stats": st.tick_stats.state(),
        "rng": ckpt.capture_rng(),
        "sampler": r.sampler.state_dict() | {"position_nimg": st.cur_nimg},
        "w_avg": {k: v.detach().cpu() for k, v in r.G_ema.named_buffers() if k.endswith("w_avg")},
        "model_config": to_dict(r.cfg_model), "train_config": to_dict(r.cfg),
        "world_size": r.world.world_size,
    }


def _write_snapshots(r: _Run, st: _TrainState) -> tuple[Path | None, Path | None]:
    """Training state + network snapshot, latest pointers, pruning, ``on_snapshot`` hooks (writes on rank 0)."""
    # Refuse to write a state whose weights are not finite: the last good one stays the newest.
    bad = [n for n, p in list(r.nets.G.named_parameters()) + list(r.G_ema.named_parameters())
           if not bool(torch.isfinite(p).all())]
    if bad:
        raise NonFiniteError(f"refusing to snapshot non-finite weights ({bad[0]} …) at kimg "
                             f"{st.cur_nimg / 1000:.3f}; last good state: {st.last_state_path}")
    if not r.world.is_main:
        return None, None
    cur_nimg, checkpoints = st.cur_nimg, r.run.checkpoints
    sp = ckpt.save_checkpoint(checkpoints / ckpt.snapshot_name("state", cur_nimg), "state", cur_nimg,
                              _state_payload(r, st))
    net = {"G_ema": r.G_ema.state_dict(), "model_config": to_dict(r.cfg_model),
           "provenance": json.loads((r.run.path / "run.json").read_text()),
           "cur_nimg": cur_nimg, "kimg": cur_nimg / 1000.0, "train_config": to_dict(r.cfg)}
    np_ = ckpt.save_checkpoint(checkpoints / ckpt.snapshot_name("network", cur_nimg), "network", cur_nimg, net)
    ckpt.write_latest_pointer(checkpoints, "state", sp, cur_nimg)
    ckpt.write_latest_pointer(checkpoints, "network", np_, cur_nimg)
    ckpt.prune_snapshots(checkpoints, "state", r.cfg.keep_snapshots)
    st.last_state_path = sp
    for kind, path in (("state", sp), ("network", np_)):
        if r.hooks.on_snapshot:
            r.hooks.on_snapshot(path, kind)
    return sp, np_


def _result(r: _Run, st: _TrainState, status: str, state_path: Path | None, net_path: Path | None) -> dict:
    if r.world.is_main:
        log.info("%s at kimg %.3f; state %s, network %s", status, st.cur_nimg / 1000, state_path, net_path)
    return {"status": status, "cur_nimg": st.cur_nimg, "kimg": st.cur_nimg / 1000.0, "step": st.step,
            "state": str(state_path) if state_path else None, "network": str(net_path) if net_path else None,
            "run_dir": str(r.run.path)}


def _preview_inputs(nets, seed: int, device, n: int = 8):
    g = torch.Generator().manual_seed(derive_seed(seed, PHASE_IDS["preview"]))
    z_tex = torch.randn([n, nets.z_dim], generator=g)
    z_geo = torch.randn([n, nets.z_dim], generator=g)
    camera, c2w = nets.sample_cameras(n, g)
    return z_tex.to(device), z_geo.to(device), camera.to(device), c2w.to(device)


@torch.no_grad()
def _save_preview(nets, G_ema, inputs, path: Path) -> None:
    from PIL import Image

    from get3d.io import atomic_write_bytes
    z_tex, z_geo, camera, c2w = inputs
    cpu_state = torch.get_rng_state()
    out = nets.generate(z_tex, z_geo, camera, c2w, style_mixing_prob=0.0, mix_seed=0, update_w_avg=False,
                        G=G_ema, noise_mode="const")
    torch.set_rng_state(cpu_state)
    img = out["img"].float().cpu()
    rgb = ((img[:, :3].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    mask = (img[:, 3:4].clamp(0, 1) * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
    grid = torch.cat([torch.cat(list(rgb), dim=2), torch.cat(list(mask), dim=2)], dim=1)  # [3, 2H, nW]
    import io
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


# ---------------------------------------------------------------- command line

if __name__ == "__main__":  # the train stage's command line (get3d.train.launch), kept under this name
    from torch.distributed.elastic.multiprocessing.errors import record

    from get3d.train.launch import main
    sys.exit(record(main)())
