"""Timing helpers shared by the benchmark scripts: CUDA-event times on a GPU, wall-clock times on the CPU."""
from __future__ import annotations

import statistics
import time

import torch


def event_times(fn, reps: int, warmup: int = 2) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` between two CUDA events (after ``warmup`` calls)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        torch.cuda.synchronize()
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return ts


def wall_times(fn, reps: int, warmup: int = 1) -> list[float]:
    """Milliseconds of each of ``reps`` calls of ``fn`` by the wall clock (CPU work)."""
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return ts


def median_ms(fn, reps: int, device: torch.device | str = "cuda", warmup: int = 2) -> float:
    """Median milliseconds per call: CUDA events on a CUDA device, the wall clock otherwise."""
    times = event_times if torch.device(device).type == "cuda" else wall_times
    return statistics.median(times(fn, reps, warmup))
