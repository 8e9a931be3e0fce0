"""Benchmark variants as ``perf`` choices: ``"label=key=value+key=value"`` (keys of params.yaml's ``perf``)."""
from __future__ import annotations

import contextlib

from get3d import perf


def parse_variant(spec: str) -> tuple[str, perf.PerfConfig]:
    """``"grid=triplane_sampler=grid_sample"`` -> ("grid", the active choices with that change); validated."""
    label, _, changes = spec.partition("=")
    return label, perf.parse_overrides([c for c in changes.split("+") if c], base=perf.active())


@contextlib.contextmanager
def variant(cfg: perf.PerfConfig):
    """Run a block under ``cfg``; the previous choices come back after."""
    with perf.applied(cfg):
        yield cfg
