"""Where a profiled training step's GPU time and GPU idle time go, from the Chrome trace that
``bench/train_speed.py --torch-profile DIR`` writes (``DIR/trace.json.gz``).

Prints, per training phase (the loop's ``phase/...`` ranges; "outside" is EMA, data and bookkeeping):
the GPU time of its kernels by kind, the idle time on the GPU within it, and the longest idle gaps with the host
call that was running when the GPU went idle (a sync, a launch-bound stretch, the data loader...).  Then all idle
time by what the GPU was waiting for: the ``stage/...`` range (generator mapping, synthesis, geometry, render;
discriminators; backward; optimizer) and the host op that launched the kernel ending each gap.

    python bench/trace_summary.py bench-out/prof/trace.json.gz --top 15
"""
from __future__ import annotations

import argparse
import bisect
import gzip
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

GPU_CATS = {"kernel", "gpu_memcpy", "gpu_memset"}

KINDS = [  # (label, regex on the kernel name), first match wins
    ("Triton (get3d's fused kernels)", r"^_\w+_kernel$|^triton_"),
    ("conv (cuDNN / cutlass)", r"conv|implicit_gemm|xmma_fprop|xmma_dgrad|xmma_wgrad|sm90_.*conv|cudnn|wgrad|dgrad"),
    ("GEMM", r"gemm|sm90_xmma|cutlass|ampere_|cublas"),
    ("nvdiffrast", r"Rasterize|Antialias|Interpolate|triangleSetup|binRaster|coarseRaster|fineRaster|Rast"),
    ("scan / sort / nonzero / unique", r"scan|Scan|sort|Sort|radix|nonzero|unique|select_if|cub::"),
    ("reduction", r"reduce|Reduce|norm|sum"),
    ("index / gather / scatter", r"index|gather|scatter|Index"),
    ("copy / layout", r"copy|Copy|transpose|Transform|nchw|nhwc|memcpy|Memcpy|memset|Memset|cat|Cat"),
    ("elementwise", r"elementwise|vectorized|unrolled|Elementwise"),
]


def kind_of(name: str) -> str:
    for label, rx in KINDS:
        if re.search(rx, name):
            return label
    return "other"


def load(path: Path) -> list[dict]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        data = json.load(f)
    return [e for e in data.get("traceEvents", data) if e.get("ph") == "X"]


def phase_ranges(events: list[dict]) -> list[tuple[float, float, str]]:
    """GPU-side spans of the ``phase/...`` ranges (the profiler mirrors them onto the GPU timeline)."""
    spans = [(e["ts"], e["ts"] + e["dur"], e["name"].split("/", 1)[1]) for e in events
             if e.get("cat") == "gpu_user_annotation" and e["name"].startswith("phase/")]
    return sorted(spans)


def phase_of(t: float, spans) -> str:
    for s, e, name in spans:
        if s <= t < e:
            return name
    return "outside"


def host_calls_at(times: list[float], host: list[dict]) -> dict[float, str]:
    """The innermost host event (op or CUDA runtime call) running at each of ``times``: one sweep over the events
    sorted by start, keeping those still open (events nest, so the latest-started open one is the innermost)."""
    events = sorted(host, key=lambda e: e["ts"])
    out, open_, k = {}, [], 0
    for t in sorted(times):
        while k < len(events) and events[k]["ts"] <= t:
            open_.append(events[k])
            k += 1
        open_ = [e for e in open_ if e["ts"] + e["dur"] > t]
        out[t] = open_[-1]["name"] if open_ else "-"
    return out


def launch_sites(gpu: list[dict], events: list[dict]) -> dict[int, tuple[str, str]]:
    """For each GPU event (by its index in ``gpu``): the ``stage/...`` range open on the host when it was launched
    and the innermost host op on the launching thread (e.g. ``aten::mul`` or an autograd backward node), found
    through the launch's ``correlation`` id.  Stage ranges are matched on any thread: the backward runs on
    autograd's device thread while the thread that called ``backward()`` sits inside its stage range."""
    launch = {e["args"]["correlation"]: e for e in events
              if e.get("cat") == "cuda_runtime" and "correlation" in e.get("args", {})}
    stages = sorted(((e["ts"], e["ts"] + e["dur"], e["name"]) for e in events
                     if e.get("cat") == "user_annotation" and e["name"].startswith("stage/")), key=lambda t: t[0])
    ops_by_tid: dict = defaultdict(list)
    for e in events:
        if e.get("cat") == "cpu_op":
            ops_by_tid[e.get("tid")].append((e["ts"], e["ts"] + e["dur"], e["name"]))

    def innermost(spans, starts, t):
        """Spans nest, so the innermost one open at ``t`` is the latest-started one that is still open."""
        j = bisect.bisect_right(starts, t) - 1
        for k in range(j, max(j - 5000, -1), -1):
            if spans[k][1] > t:
                return spans[k][2]
        return "-"

    for v in ops_by_tid.values():
        v.sort()
    op_starts = {tid: [sp[0] for sp in v] for tid, v in ops_by_tid.items()}
    stage_starts = [sp[0] for sp in stages]
    out = {}
    for i, k in enumerate(gpu):
        r = launch.get(k.get("args", {}).get("correlation"))
        if r is None:
            continue
        tid = r.get("tid")
        out[i] = (innermost(stages, stage_starts, r["ts"]),
                  innermost(ops_by_tid.get(tid, []), op_starts.get(tid, []), r["ts"]))
    return out


def top_kernels(gpu: list[dict], sites: dict[int, tuple[str, str]], spans, top: int) -> list[str]:
    """The kernels with the most GPU time, by name (first 70 characters) and the phase and host stage that ran them:
    what a kernel-level optimisation should go after first."""
    table: dict[tuple[str, str, str], list[float]] = defaultdict(lambda: [0, 0.0])
    for i, e in enumerate(gpu):
        key = (e["name"][:70], phase_of(e["ts"], spans), sites.get(i, ("-", "-"))[0])
        table[key][0] += 1
        table[key][1] += e["dur"]
    lines = [f"kernels with the most GPU time (top {top}):"]
    for (name, ph, stage), (n, d) in sorted(table.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {d / 1e3:7.2f} ms  ×{n:<5d} {ph:<8} {stage:<17} {name}")
    return lines


def summarize(events: list[dict], top: int, kernels: int = 0) -> str:
    gpu = sorted((e for e in events if e.get("cat") in GPU_CATS), key=lambda e: e["ts"])
    host = [e for e in events if e.get("cat") in ("cpu_op", "cuda_runtime", "user_annotation", "python_function")
            and not e["name"].startswith("ProfilerStep")]
    spans = phase_ranges(events)
    skip = [(e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "bench/end_tick"]
    by_phase: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for e in gpu:
        by_phase[phase_of(e["ts"], spans)][kind_of(e["name"])] += e["dur"]
    gaps = []
    waited_for: list[int] = []  # index in gpu of the event that ended each gap
    end = gpu[0]["ts"] + gpu[0]["dur"] if gpu else 0.0
    for i, e in enumerate(gpu[1:], 1):
        if e["ts"] > end and not any(s <= end < t for s, t in skip):
            gaps.append((e["ts"] - end, end, phase_of(end, spans)))
            waited_for.append(i)
        end = max(end, e["ts"] + e["dur"])
    idle_by_phase: dict[str, float] = defaultdict(float)
    for d, _, ph in gaps:
        idle_by_phase[ph] += d
    lines = []
    phases = sorted(by_phase, key=lambda p: -sum(by_phase[p].values()))
    kinds = sorted({k for p in phases for k in by_phase[p]}, key=lambda k: -sum(by_phase[p][k] for p in phases))
    head = ["GPU ms (2 steps)"] + phases + ["total"]
    rows = [head]
    for k in kinds:
        vals = [by_phase[p][k] / 1e3 for p in phases]
        rows.append([k] + [f"{v:.1f}" for v in vals] + [f"{sum(vals):.1f}"])
    busy = [sum(by_phase[p].values()) / 1e3 for p in phases]
    rows.append(["kernels, all"] + [f"{v:.1f}" for v in busy] + [f"{sum(busy):.1f}"])
    idle = [idle_by_phase[p] / 1e3 for p in phases]
    rows.append(["GPU idle in gaps"] + [f"{v:.1f}" for v in idle] + [f"{sum(idle):.1f}"])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.append("")
    longest = sorted(gaps, reverse=True)[:top]
    real_gaps = [g for g in gaps if g[0] >= 20]  # µs: launch-latency-sized gaps left out
    calls = host_calls_at([t for _, t, _ in longest + real_gaps], host)
    lines.append(f"longest idle gaps (of {len(gaps)}; {sum(d for d, _, _ in gaps) / 1e3:.1f} ms in all):")
    for d, t, ph in longest:
        lines.append(f"  {d / 1e3:7.2f} ms  {ph:<8} host: {calls[t][:90]}")
    by_call: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for d, t, _ in real_gaps:
        c = by_call[calls[t][:70]]
        c[0] += 1
        c[1] += d
    lines.append("idle gaps ≥ 20 µs by the host call running when the GPU went idle:")
    for name, (n, d) in sorted(by_call.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {d / 1e3:7.2f} ms  ×{n:<4d} {name}")
    sites = launch_sites(gpu, events)
    by_stage: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    by_op: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for (d, _, ph), i in zip(gaps, waited_for):
        stage, op = sites.get(i, ("-", "-"))
        for table, key in ((by_stage, f"{ph:<8} {stage}"), (by_op, f"{stage:<18} {op[:60]}")):
            table[key][0] += 1
            table[key][1] += d
    lines.append("all idle by the host stage (stage/... ranges) that launched the work the GPU waited for:")
    for name, (n, d) in sorted(by_stage.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {d / 1e3:7.2f} ms  ×{n:<5d} {name}")
    lines.append("... and by the host op that launched it:")
    for name, (n, d) in sorted(by_op.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {d / 1e3:7.2f} ms  ×{n:<5d} {name}")
    if kernels:
        lines += top_kernels(gpu, sites, spans, kernels)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trace", type=Path, help="trace.json.gz written by bench/train_speed.py --torch-profile")
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--kernels", type=int, default=0, metavar="N", help="also list the N kernels with the most GPU time")
    args = ap.parse_args(argv)
    if not args.trace.exists():
        ap.error(f"{args.trace}: no such file")
    print(summarize(load(args.trace), args.top, args.kernels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
