"""Training knobs (section ``train`` of params.yaml).

Defaults follow the published GET3D recipe (car): global batch 32 (4 per GPU), Adam(0, 0.99, 1e-8), base
lr 0.002 adjusted for lazy regularisation, lazy R1 every 16 steps, EMA half-life 10 kimg at batch 32.
The CPU smoke profile overrides sizes, not the algorithm.
"""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec


@dataclass(frozen=True)
class TrainConfig:
    total_kimg: float = spec(4000.0, min=0.0, help="training length in thousands of real images shown")
    batch_size: int = spec(32, min=1, help="global batch (all ranks together)")
    batch_per_gpu: int = spec(4, min=1, help="samples per forward pass on one rank; the rest is accumulated")
    lr_g: float = spec(0.002, min=0.0, max=1.0, help="base generator learning rate (before lazy-reg scaling)")
    lr_d: float = spec(0.002, min=0.0, max=1.0, help="base discriminator learning rate (before lazy-reg scaling)")
    betas: tuple[float, float] = spec((0.0, 0.99), min=0.0, max=1.0, help="Adam betas (before lazy-reg scaling)")
    eps: float = spec(1e-8, min=0.0, max=1.0, help="Adam epsilon")
    r1_gamma: float = spec(40.0, min=0.0, help="R1 weight (car 40, motorbike 80, chair 400 unified / 3200 separate)")
    r1_interval: int = spec(16, min=1, max=10000, help="lazy R1: run the D regularisation phase every N steps")
    g_reg_interval: int = spec(
        4, min=0, max=10000,
        help="G has no regulariser; the public code still scales G's Adam as if one ran every 4 steps "
             "(lr 0.002 -> 0.0016). 0 = no scaling")
    sdf_reg_weight: float = spec(0.01, min=0.0, help="weight of the SDF sign-flip regulariser in the G loss")
    flexicubes_dev_weight: float = spec(
        0.5, min=0.0, help="model.iso_surface flexicubes: weight of FlexiCubes' L_dev regulariser (deviation of a "
                           "cube's crossing points from its dual vertex) in the G loss (FlexiCubes / GET3D: 0.5)")
    style_mixing_prob: float = spec(0.9, min=0.0, max=1.0, help="probability of style mixing per batch, per code")
    ema_kimg: float = spec(10.0, min=0.0, help="G_ema half-life in kimg at batch 32 (scaled with the batch)")
    ema_rampup: float = spec(0.05, min=0.0, max=1.0, help="EMA ramp-up ratio (0 = off)")
    precision: str = spec("fp32", choices=("fp32", "bf16"),
                          help="bf16: discriminator forward of the main phases under bf16 autocast; "
                               "generator, R1 and optimiser stay fp32")
    tf32: bool = spec(
        True,
        help="CUDA only: allow TF32 in fp32 matmuls (point-decoder bmm, FC layers) and cuDNN convs. PyTorch's own "
             "default is convs on / matmuls off; the public StyleGAN2-ADA/GET3D scripts set both off unless "
             "--allow-tf32. ~1e-3 relative operand rounding; CPU unaffected")
    fused_adam: bool = spec(True, help="CUDA: Adam(fused=True) (one kernel for all params, no per-param host "
                                       "work); same update up to rounding. step_check deferred fuses Adam on "
                                       "every device (its skip flag needs it); per_phase on the CPU keeps the "
                                       "default Adam")
    cuda_graphs: bool = spec(True, help="CUDA only: replay the discriminators' forward+backward of the main phases "
                                        "and the generator's shape-static parts (mapping networks, tri-plane "
                                        "synthesis, DMTet grid fields) as captured CUDA graphs (the step is "
                                        "launch-bound); R1 and the data-dependent stages stay eager")
    step_check: str = spec(
        "deferred", choices=("deferred", "per_phase"),
        help="how each optimizer step is gated on finite losses (and, with perf.padded_surface, on surfaces that "
             "fit); NaN/Inf gradients are zeroed/clamped either way. deferred: the device gates the step (fused "
             "Adam's skip flag; a phase with a non-finite loss or an overflowed surface is skipped) and the host "
             "reads the results up to two steps later (get3d.train.step_check); per_phase: the host reads the "
             "phase's loss sums first (one host sync per phase; an overflowed surface is re-run)")
    snapshot_kimg: float = spec(200.0, min=0.0, help="write a training-state + inference snapshot every N kimg "
                                                     "(0 = only at the end)")
    image_snapshot_ticks: int = spec(50, min=0, help="write a preview grid every N ticks (0 = never)")
    kimg_per_tick: float = spec(4.0, min=0.0, help="progress line / stats record every N kimg (0 = every step)")
    seed: int = spec(0, min=0, max=2**31 - 1, help="seed of every random stream")
    deterministic: bool = spec(False, help="deterministic kernels; with it, kill + resume is bit-identical on CPU")
    resume: str = spec("auto", help="auto (newest complete state in the run dir) | none | <path to a state file>")
    max_nonfinite_steps: int = spec(10, min=1, help="stop after this many consecutive non-finite losses")
    grad_clamp: float = spec(1e5, min=0.0, help="non-finite gradients become 0 / +-grad_clamp (public code: 1e5)")
    num_workers: int = spec(2, min=0, max=64, help="data-loader worker processes per rank")
    device: str = spec("auto", choices=("auto", "cpu", "cuda"), help="auto: cuda when available")
    backend: str = spec("auto", choices=("auto", "torch", "nvdiffrast"), help="rasterizer backend for the model")
    keep_snapshots: int = spec(3, min=0, help="training-state snapshots to keep (0 = all); inference ones are kept")
    dist_timeout_s: float = spec(300.0, min=1.0, help="collective timeout: a dead rank stops the others after this")
    num_processes: int = spec(
        1, min=1, max=1024,
        help="data-parallel processes on this machine: > 1 and the train stage launches them itself "
             "(torch.distributed.run; one per GPU with NCCL, gloo on the CPU); rank 0 writes and publishes")

    def validate(self, prefix: str = "train") -> None:
        if self.batch_size % self.batch_per_gpu != 0:
            raise ConfigError(f"{prefix}.batch_size: {self.batch_size} is not a multiple of "
                              f"{prefix}.batch_per_gpu={self.batch_per_gpu}")
        chunks = self.batch_size // self.batch_per_gpu
        if self.num_processes > chunks:
            raise ConfigError(f"{prefix}.num_processes: {self.num_processes} processes but only {chunks} chunk(s) of "
                              f"{prefix}.batch_per_gpu={self.batch_per_gpu} per batch of {self.batch_size}")
        if self.resume not in ("auto", "none") and not self.resume.strip():
            raise ConfigError(f"{prefix}.resume: empty path; use 'auto', 'none' or a state file path")

    @property
    def d_mb_ratio(self) -> float:
        return self.r1_interval / (self.r1_interval + 1) if self.r1_interval > 0 else 1.0

    @property
    def g_mb_ratio(self) -> float:
        return self.g_reg_interval / (self.g_reg_interval + 1) if self.g_reg_interval > 0 else 1.0

    def adam_kwargs(self, which: str, device_type: str = "cpu") -> dict:
        """Adam settings after the lazy-regularisation adjustment (lr * r, beta ** r); ``fused`` on CUDA when
        ``fused_adam``, and on any device with ``step_check: deferred`` (only fused Adam skips a step on the
        device); otherwise the CPU optimiser is left as PyTorch's default."""
        r = self.g_mb_ratio if which == "G" else self.d_mb_ratio
        lr = self.lr_g if which == "G" else self.lr_d
        kw = {"lr": lr * r, "betas": (self.betas[0] ** r, self.betas[1] ** r), "eps": self.eps}
        if (device_type == "cuda" and self.fused_adam) or self.step_check == "deferred":
            kw["fused"] = True
        return kw
