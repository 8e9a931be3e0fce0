"""Deferred step checks (``train.step_check: deferred``): each optimizer step is gated on the device, and the host
reads the phases' results later, so no phase ends in a host sync.

With ``per_phase`` the host reads every phase's loss sums (and with ``perf.padded_surface`` the surface sizes)
before deciding to step: the GPU drains at the end of each phase and waits for the host to launch the next one.
Here the decision is a 0-d device tensor that fused Adam takes as its skip flag (``found_inf``, the mechanism of
mixed-precision loss scaling: parameters, moments and step count stay untouched when it is set).  The phase's
values go into one small device tensor per step, copied to pinned host memory behind a CUDA event;
:meth:`DeferredChecks.results` hands them over once their event has passed (usually at the next step, since the
exact surface extraction syncs anyway), waiting only when more than ``max_pending`` steps are outstanding or when
asked to drain (tick ends, snapshots, the end of training).

Gradients are sanitized as with ``per_phase`` (NaN → 0, ±Inf → ±``grad_clamp``), on the device.  What differs: a
padded surface that overflowed its capacity skips the phase (``per_phase`` re-runs it), and the non-finite streak
guard acts up to ``max_pending`` steps after the streak reached its limit.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

import torch

from get3d.train.losses import SURFACE_KEYS


@dataclass
class PhaseResult:
    phase: str
    losses: dict[str, float]             # the phase's loss sums (global, summed over chunks and ranks)
    surface: dict[str, float] = field(default_factory=dict)   # padded extraction: overflow and largest needs

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in self.losses.values())

    @property
    def overflowed(self) -> bool:
        return bool(self.surface.get("surface/overflow", 0))

    @property
    def stepped(self) -> bool:
        """What the device decided: the optimizer stepped iff every loss was finite and the surface fit."""
        return self.finite and not self.overflowed


@dataclass
class StepResult:
    step: int                           # the step's index
    nimg: int                           # images shown after it
    phases: list[PhaseResult]

    @property
    def finite(self) -> bool:
        return all(p.finite for p in self.phases)


@dataclass
class _Pending:
    step: int
    nimg: int
    layout: list[tuple[str, list[str]]]     # (phase, keys) in packing order
    host: torch.Tensor
    event: torch.cuda.Event | None


class DeferredChecks:
    """Device-side gates for the optimizer steps and a queue of their results on the way to the host."""

    def __init__(self, max_pending: int = 2):
        if max_pending < 0:
            raise ValueError(f"DeferredChecks: max_pending must be >= 0, got {max_pending}")
        self.max_pending = max_pending
        self._phases: list[tuple[str, list[str], torch.Tensor]] = []
        self._pending: deque[_Pending] = deque()

    def gate(self, opt: torch.optim.Optimizer, phase: str, keys: list[str], vec: torch.Tensor) -> torch.Tensor:
        """Set ``opt``'s skip flag for its next step from the phase's values (no host read) and queue them.

        ``vec`` holds the phase's loss sums and, under :data:`~get3d.train.losses.SURFACE_KEYS`, the padded
        extraction's overflow count and needs.  ``opt`` must be a fused Adam (the only PyTorch optimizer that
        takes a skip flag).  Returns the 0-d bool "step taken"."""
        if not getattr(opt, "_step_supports_amp_scaling", False):
            raise TypeError(f"DeferredChecks.gate: {type(opt).__name__} cannot skip a step on the device; "
                            "train.step_check deferred needs Adam(fused=True)")
        ok = torch.isfinite(vec).all()
        if "surface/overflow" in keys:
            ok = ok & (vec[keys.index("surface/overflow")] == 0)
        opt.found_inf = (~ok).to(torch.float32)
        self._phases.append((phase, list(keys), vec))
        return ok

    def end_step(self, step: int, nimg: int) -> None:
        """Send this step's phase values to the host (one copy, not waited for)."""
        if not self._phases:
            return
        packed = torch.cat([p[2].to(torch.float64) for p in self._phases])
        layout = [(name, keys) for name, keys, _ in self._phases]
        self._phases = []
        if packed.device.type == "cuda":
            host = torch.empty(packed.shape, dtype=packed.dtype, pin_memory=True)
            host.copy_(packed, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host, event = packed, None
        self._pending.append(_Pending(step, nimg, layout, host, event))

    def results(self, drain: bool = False) -> list[StepResult]:
        """The finished steps' results, oldest first: those whose copy has arrived, after waiting for the oldest
        ones until at most ``max_pending`` are outstanding (all of them with ``drain``)."""
        out = []
        while self._pending:
            p = self._pending[0]
            must = drain or len(self._pending) > self.max_pending
            if p.event is not None and not p.event.query():
                if not must:
                    break
                p.event.synchronize()
            self._pending.popleft()
            out.append(_unpack(p))
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)


def _unpack(p: _Pending) -> StepResult:
    vals = p.host.tolist()
    phases, i = [], 0
    for name, keys in p.layout:
        row = vals[i:i + len(keys)]
        i += len(keys)
        losses = {k: v for k, v in zip(keys, row) if k not in SURFACE_KEYS}
        surface = {k: v for k, v in zip(keys, row) if k in SURFACE_KEYS}
        phases.append(PhaseResult(name, losses, surface))
    return StepResult(p.step, p.nimg, phases)
