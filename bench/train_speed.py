"""Training speed of the real loop: s/kimg, img/s and peak memory, next to the public GET3D numbers.

Runs :func:`get3d.train.loop.train` itself (all phases incl. lazy R1, EMA, data loading) on a synthetic
dataset in the render stage's HDF5 layout, one tick per step; the first ``--warmup`` steps are dropped and
GPU peak memory is reset after them ("steady" peak; the first-iteration peak is reported separately).

    python bench/train_speed.py --profile paper                 # GPU: batch 4, 1024², tet 90, unified G
    python bench/train_speed.py --device cpu --small            # CPU smoke (tiny config)
    python bench/train_speed.py --profile paper --generator separate --precision bf16 --json out.json

Public reference (the original code on one H100, car recipe: batch 4, 1024², tet 90, fp16 D):
unified G 121.6 s/kimg, ~10.9 GiB steady peak; separate G 139.6 s/kimg, ~16.7 GiB.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PUBLIC = {  # (s/kimg, steady peak GiB) of the public code on an H100, batch 4, 1024², tet 90
    "unified": (121.6, 10.9),
    "separate": (139.6, 16.7),
}

SMALL_MODEL = {
    "z_dim": 16, "w_dim": 16, "mapping_layers": 2, "img_resolution": 32, "triplane_resolution": 16,
    "triplane_channels": [16, 16, 8], "plane_channels": 4, "decoder_hidden": 8, "texture_features": 4,
    "tet_res": 8, "d_channels": [8, 16, 16, 16], "d_mapping_layers": 1, "num_fp16_res": 0,
    "channels_last": False, "raster_backend": "torch", "cmap_dim": 16,
}


def synthetic_dataset(path: Path, res: int, n: int = 16) -> Path:
    from get3d import cameras
    from get3d.dataset.format import DatasetInfo, ObjectViews, write_dataset

    rng = np.random.default_rng(0)
    az, po = cameras.CameraPrior().sample_numpy(n, rng)
    yy, xx = np.mgrid[0:res, 0:res] + 0.5
    inside = ((xx - res / 2) ** 2 + (yy - res / 2) ** 2 < (0.3 * res) ** 2)
    imgs = np.zeros((n, res, res, 4), np.uint8)
    for i in range(n):
        imgs[i][inside, :3] = rng.integers(0, 255, 3, dtype=np.uint8)
        imgs[i][inside, 3] = 255
    c2w = cameras.camera_to_world(az, po).astype(np.float32)
    objects = [ObjectViews(id=f"obj{i}", synset="", split="train", rgba=imgs[i:i + 1], azimuth=az[i:i + 1],
                           polar=po[i:i + 1], c2w=c2w[i:i + 1]) for i in range(n)]
    write_dataset(path, objects, DatasetInfo(resolution=res, views_per_object=1, fovy_deg=cameras.FOVY_DEG,
                                             radius=cameras.RADIUS, source="synthetic"))
    return path


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", choices=("paper", "small"), default=None)
    ap.add_argument("--small", action="store_true", help="same as --profile small")
    ap.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    ap.add_argument("--generator", choices=("unified", "separate"), default="unified")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    ap.add_argument("--batch", type=int, default=None, help="global batch (paper: 4, small: 4)")
    ap.add_argument("--batch-per-gpu", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="timed steps (paper: 17 = one R1 cycle + 1)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed first steps (paper: 3, small: 1)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="model.KEY=VALUE")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--ref-r1", action="store_true",
                    help="experiment: R1 with the reference kernels (PyTorch's generic double backward, ~44 s)")
    ap.add_argument("--tf32-matmul", action="store_true", help="experiment: allow TF32 matmuls (FC/MLP layers)")
    ap.add_argument("--fused-adam", action="store_true", help="experiment: Adam(fused=True)")
    ap.add_argument("--bias-act", choices=("fused", "ref"), default=None,
                    help="experiment: bias_act kernel (fused Triton on CUDA vs the PyTorch reference)")
    ap.add_argument("--perf", action="append", default=[], metavar="KEY=VALUE",
                    help="a perf choice of params.yaml (repeatable), e.g. triplane_sampler=grid_sample")
    ap.add_argument("--graphs", choices=("all", "synthesis", "d"), default=None,
                    help="experiment: CUDA graphs for the D passes, the tri-plane synthesis, the mapping networks and "
                         "the DMTet grid fields (all), D and synthesis only (synthesis) or D only; none: --set "
                         "train.cuda_graphs=false")
    ap.add_argument("--count-syncs", action="store_true",
                    help="count host syncs (torch.cuda.set_sync_debug_mode) in the last *untimed* warm-up step "
                         "and print the top call sites")
    ap.add_argument("--reserved-peak", action="store_true",
                    help="also report the steady peak of memory the allocator holds from the device (reserved), after "
                         "releasing the warm-up's cache (cuDNN's algorithm search): unlike the allocated peak it "
                         "includes what replayed CUDA graphs use inside their private pools, which the allocator "
                         "does not see as allocations (the first timed step then re-grows the cache)")
    ap.add_argument("--phase-peaks", action="store_true",
                    help="GPU memory peak of each training phase (Gmain, Dmain, Dreg) over the timed steps")
    ap.add_argument("--cprofile", type=Path, default=None, metavar="FILE",
                    help="cProfile the timed steps (host-side Python cost); top functions written to FILE")
    ap.add_argument("--steps-per-tick", type=int, default=1, metavar="K",
                    help="end a tick (stats line, the loop's wait for every outstanding result) every K steps "
                         "instead of every step, as real training does every 4 kimg; --warmup and --steps must be "
                         "multiples of K, and the median is then per tick")
    ap.add_argument("--alloc-conf", default=None, metavar="CONF",
                    help="experiment: CUDA caching-allocator settings (as PYTORCH_CUDA_ALLOC_CONF, e.g. "
                         "expandable_segments:True), set before the first CUDA allocation")
    ap.add_argument("--torch-profile", type=Path, default=None, metavar="DIR",
                    help="profile 2 timed steps (no R1) with torch.profiler; tables, GPU idle fraction and the "
                         "gzipped Chrome trace go to DIR")
    args = ap.parse_args(argv)
    if args.steps_per_tick < 1:
        ap.error(f"--steps-per-tick must be >= 1, got {args.steps_per_tick}")
    if args.steps_per_tick > 1 and (args.count_syncs or args.torch_profile or args.cprofile):
        ap.error("--count-syncs, --torch-profile and --cprofile measure single steps: use them with --steps-per-tick 1")
    return args


def _timed_count(ticks: list[dict], timed: list[dict], warmup: int, key: str) -> int | None:
    """How much the cumulative counter ``key`` of the stats grew over the timed steps (None: not recorded)."""
    if key not in timed[-1]:
        return None
    return timed[-1][key] - (ticks[warmup - 1][key] if warmup else 0)


def build_configs(args, profile: str):
    """(device, cfg_model, cfg_train, batch, warmup) of the profile plus --set overrides."""
    from get3d.nn import ModelConfig
    from get3d.schema import parse_section
    from get3d.train.config import TrainConfig
    from get3d.train.launch import parse_overrides

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = dict(SMALL_MODEL) if profile == "small" else {}
    model["generator"] = args.generator
    overrides = parse_overrides(args.overrides)
    model.update(overrides["model"])
    cfg_model = parse_section(ModelConfig, model, "model")
    batch = args.batch or 4
    steps = args.steps or (17 if profile == "paper" else 4)
    warmup = args.warmup if args.warmup is not None else (3 if profile == "paper" else 1)
    k = args.steps_per_tick
    if warmup % k or steps % k:
        raise SystemExit(f"--steps-per-tick {k}: warm-up ({warmup}) and timed steps ({steps}) must be multiples of it")
    total = warmup + steps
    cfg_train = parse_section(TrainConfig, {
        "total_kimg": total * batch / 1000, "batch_size": batch, "batch_per_gpu": args.batch_per_gpu or batch,
        "kimg_per_tick": k * batch / 1000, "snapshot_kimg": 0, "image_snapshot_ticks": 0, "num_workers": 2,
        "device": device, "precision": args.precision, "resume": "none", "seed": 0, "r1_gamma": 40.0,
        **overrides.get("train", {}),
    }, "train")

    return device, cfg_model, cfg_train, batch, warmup


def apply_experiments(args, cfg_train) -> list[str]:
    """Switch on the --experiment flags (process-wide); returns their labels."""
    experiments = []
    if args.alloc_conf:
        torch.cuda.memory._set_allocator_settings(args.alloc_conf)
        experiments.append(f"alloc={args.alloc_conf}")
    if args.ref_r1:
        from get3d.nn import layers as L
        L.DOUBLE_BACKWARD_KERNELS.update(conv2d=L.conv2d_ref, upfirdn2d=L.upfirdn2d_ref)
        experiments.append("ref-r1")
    if args.bias_act is not None:
        from get3d.nn import layers as L
        L.register_kernel("bias_act", L.bias_act_ref if args.bias_act == "ref" else None)
        experiments.append(f"bias_act={args.bias_act}")
    if args.perf:
        from get3d import perf
        perf.apply(perf.parse_overrides(args.perf))
        experiments += args.perf
    if args.graphs in ("d", "synthesis"):
        from get3d.train import graphs
        graphs.GraphedMapping.__init__ = lambda self, G: None  # bench-only: leave these G parts eager
        graphs.GraphedGridFields.__init__ = lambda self, G: None
        if args.graphs == "d":
            graphs.GraphedSynthesis.__init__ = lambda self, synthesis: None
    if args.graphs is not None:
        experiments.append(f"graphs={args.graphs}")
    for k in ("tf32", "fused_adam"):
        if hasattr(cfg_train, k):
            experiments.append(f"{k}={getattr(cfg_train, k)}")
    if args.tf32_matmul:
        torch.backends.cuda.matmul.allow_tf32 = True
        experiments.append("tf32-matmul")
    if args.fused_adam:
        import functools
        torch.optim.Adam = functools.partial(torch.optim.Adam, fused=True)
        experiments.append("fused-adam")

    return experiments


def make_probe(args, device: str, warmup: int, experiments: list[str]):
    """on_progress hook recording ticks; optionally counts host syncs and profiles steps.

    Returns ``(on_progress, ticks, first_peak, sync)``."""
    ticks: list[dict] = []
    first_peak = {}
    prof = {}
    sync = {}

    def on_progress(rec):
        ticks.append(rec)
        if args.count_syncs and device == "cuda" and len(ticks) == warmup - 1:   # count in the last warm-up step
            import warnings
            sync["cm"] = warnings.catch_warnings(record=True)
            sync["rec"] = sync["cm"].__enter__()
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
        if "cm" in sync and len(ticks) == warmup:
            torch.cuda.set_sync_debug_mode(0)
            recs = sync["rec"]
            sync.pop("cm").__exit__(None, None, None)
            import collections
            # (not the notice that switching the debug mode on prints: "... does not yet detect all synchronizing
            # operations", which says what this count misses, e.g. a C++ extension's own stream synchronize)
            sites = collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in recs
                                        if "synchroniz" in str(w.message)
                                        and not str(w.message).startswith("Synchronization debug mode"))
            sync["n"] = sum(sites.values())
            print(f"host syncs in one step (step {len(ticks) - 1}): {sync['n']}; top sites: "
                  + ", ".join(f"{k}×{v}" for k, v in sites.most_common(20)), flush=True)
        if args.cprofile is not None and len(ticks) == warmup:
            import cProfile
            prof["cp"] = cProfile.Profile()
            prof["cp"].enable()
        if len(ticks) == warmup and device == "cuda":
            first_peak["gib"] = torch.cuda.max_memory_allocated() / 2**30
            if args.reserved_peak:
                torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        if args.torch_profile is not None and len(ticks) == warmup + 1:   # steps warmup+1, +2 (no R1)
            from torch.profiler import ProfilerActivity, profile
            acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "cuda" else [])
            prof["p"] = profile(activities=acts)
            prof["p"].__enter__()
        if "p" in prof and len(ticks) == warmup + 3:
            if device == "cuda":
                torch.cuda.synchronize()
            p = prof.pop("p")
            p.__exit__(None, None, None)
            d = args.torch_profile
            d.mkdir(parents=True, exist_ok=True)
            ka = p.key_averages()
            sort = "cuda_time_total" if device == "cuda" else "cpu_time_total"
            text = (f"# 2 training steps ({', '.join(experiments) or 'default'})\n"
                    + ka.table(sort_by=sort, row_limit=40, max_name_column_width=80) + "\n\n# by self CPU time\n"
                    + ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=80))
            if device == "cuda":
                all_evs = p.events()
                evs = [e for e in all_evs if e.device_type.name == "CUDA" and not getattr(e, "is_user_annotation", False)]
                n_k = len(evs)
                short = sum(1 for e in evs if e.device_time < 5)
                busy = sum(e.device_time for e in evs) / 1e3
                syncs = sum(e.count for e in ka if "Synchronize" in e.key or e.key == "aten::item"
                            or e.key == "aten::_local_scalar_dense")
                idle = gpu_idle(all_evs)
                sync["idle"] = idle
                print(f"profile: {n_k} CUDA kernels/2 steps ({short} < 5 µs), GPU busy {busy:.0f} ms, "
                      f"item/sync-like calls {syncs}", flush=True)
                print(f"GPU idle: {idle['idle_fraction']:.1%} of {idle['window_ms']:.0f} ms "
                      f"(kernels cover {idle['busy_ms']:.0f} ms); per phase, GPU ms: "
                      + ", ".join(f"{k} {v:.1f}" for k, v in phase_gpu_ms(ka).items()), flush=True)
                text += f"\n\n# GPU idle\n{json.dumps(idle)}\n"
                p.export_chrome_trace(str(d / "trace.json.gz"))   # gzipped by torch; ui.perfetto.dev reads it
            (d / "train_profile.txt").write_text(text)
            print(ka.table(sort_by=sort, row_limit=25, max_name_column_width=70), flush=True)

    on_progress.prof = prof
    return on_progress, ticks, first_peak, sync


def gpu_idle(events) -> dict:
    """Fraction of the profiled steps' time in which no kernel or copy ran on the GPU: the union of the device
    intervals (overlapping streams are not counted twice) over the window from the first to the last kernel,
    leaving out the bench's per-step tick bookkeeping (``bench/end_tick``: stats files, which real training does
    once per 4 kimg, not per step).  The GPU-side copies of the ``record_function`` ranges (phases, stages) are
    not work: they span whole phases and would hide every gap."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in events
                   if e.device_type.name == "CUDA" and not getattr(e, "is_user_annotation", False))
    if not spans:
        return {"window_ms": 0.0, "busy_ms": 0.0, "idle_fraction": 0.0}
    lo, hi = spans[0][0], spans[-1][1]
    skip = [(e.time_range.start, e.time_range.end) for e in events if e.name == "bench/end_tick"]
    merged: list[list[float]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])

    def overlap(a0, a1, ranges):
        return sum(max(0.0, min(a1, b1) - max(a0, b0)) for b0, b1 in ranges)

    window = (hi - lo) - overlap(lo, hi, skip)
    busy = sum(e - s for s, e in merged) - sum(overlap(s, e, skip) for s, e in merged)
    return {"window_ms": window / 1e3, "busy_ms": busy / 1e3, "idle_fraction": 1.0 - busy / max(window, 1e-9)}


def phase_gpu_ms(key_averages) -> dict:
    """GPU time of the kernels launched inside each training phase's ``phase/...`` range, per step."""
    return {e.key.split("/", 1)[1]: e.device_time_total / 2e3 for e in key_averages if e.key.startswith("phase/")}


def record_phase_peaks(timed) -> dict:
    """Wrap the loop's phases: the GPU memory peak of each phase over the steps for which ``timed()`` holds.
    (It resets the allocator's peak counter per phase; the steady peak is then the largest of these.)"""
    from get3d.train import loop
    run_phase = loop._run_phase
    peaks: dict[str, float] = {}

    def measured(r, st, phase, *a, **kw):
        torch.cuda.reset_peak_memory_stats()
        ok = run_phase(r, st, phase, *a, **kw)
        if timed():
            peaks[phase] = max(peaks.get(phase, 0.0), torch.cuda.max_memory_allocated() / 2**30)
        return ok

    loop._run_phase = measured
    return peaks


def label_tick_bookkeeping() -> None:
    """Wrap the loop's end-of-tick work in a profiler range (the bench makes every step a tick)."""
    from get3d.train import loop
    end_tick = loop._end_tick

    def labelled(*a, **kw):
        with torch.profiler.record_function("bench/end_tick"):
            return end_tick(*a, **kw)

    loop._end_tick = labelled


def write_cprofile(prof: dict, path: Path) -> None:
    """Top host-side functions of the timed steps (the final snapshot write is included; it is one call)."""
    import io
    import pstats
    cp = prof.pop("cp", None)
    if cp is None:
        return
    cp.disable()
    buf = io.StringIO()
    st = pstats.Stats(cp, stream=buf)
    st.sort_stats("tottime").print_stats(45)
    st.sort_stats("cumulative").print_stats(60)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(buf.getvalue())


def summarize(args, profile, device, cfg_model, batch, warmup, experiments, ticks, first_peak, sync,
              wall) -> dict:
    k = args.steps_per_tick
    timed = ticks[warmup:]
    spk = [r["timing/sec_per_kimg"] for r in timed]
    sec_per_kimg = sum(r["timing/sec_per_tick"] for r in timed) / (len(timed) * k * batch) * 1000
    res = {
        "profile": profile, "device": device, "gpu": torch.cuda.get_device_name(0) if device == "cuda" else None,
        "generator": args.generator, "precision": args.precision, "batch": batch,
        "img_resolution": cfg_model.img_resolution, "tet_res": cfg_model.tet_res, "timed_steps": len(timed) * k,
        "warmup_steps": warmup * k, "steps_per_tick": k, "sec_per_kimg": sec_per_kimg,
        "sec_per_kimg_median_step": statistics.median(spk),   # per tick when steps_per_tick > 1
        "img_per_sec": 1000.0 / sec_per_kimg, "sec_per_step": sec_per_kimg * batch / 1000,
        "peak_mem_gib_steady": timed[-1].get("mem/gpu_peak_gib") if device == "cuda" else None,
        "peak_mem_gib_first_steps": first_peak.get("gib"),
        "peak_reserved_gib_steady": (timed[-1].get("mem/gpu_reserved_gib")
                                     if device == "cuda" and args.reserved_peak else None),
        "host_rss_peak_gib": timed[-1]["mem/host_rss_peak_gib"], "wall_sec": wall,
        "torch": torch.__version__, "experiments": experiments, "host_syncs_one_step": sync.get("n"),
        "gpu_idle": sync.get("idle"),
        # padded_surface: phases re-run after a capacity overflow during the timed steps (None: exact path)
        "surface_reruns": _timed_count(ticks, timed, warmup, "surface/reruns"),
        # the same with train.step_check deferred, where an overflowed phase is skipped instead of re-run
        "surface_skips": _timed_count(ticks, timed, warmup, "surface/skipped_phases"),
        # every step's loss means (warm-up included): runs with the same seed and the same function agree, so
        # train_speed_ab.py can show that a faster step still computes the same losses
        "losses": [{k: v for k, v in r.items() if k.startswith("loss/")} for r in ticks],
    }
    return res


def print_table(res: dict, args, profile, device, cfg_model, batch, warmup, experiments) -> None:
    pub = PUBLIC[args.generator]
    rows = [("this code", f"{res['sec_per_kimg']:.1f}", f"{res['img_per_sec']:.2f}",
             f"{res['peak_mem_gib_steady']:.2f}" if res["peak_mem_gib_steady"] is not None
             else f"rss {res['host_rss_peak_gib']:.2f}",
             f"{profile}, {device}{' ' + res['gpu'] if res['gpu'] else ''}, batch {batch}, "
             f"{cfg_model.img_resolution}², tet {cfg_model.tet_res}, {args.generator} G, {args.precision}"
             + (f", {'+'.join(experiments)}" if experiments else "")),
            ("public GET3D", f"{pub[0]:.1f}", f"{1000 / pub[0]:.2f}", f"{pub[1]:.1f}",
             f"H100, batch 4, 1024², tet 90, {args.generator} G, fp16 D (measured on an H100)")]
    head = ("", "s/kimg", "img/s", "peak GiB", "setting")
    widths = [max(len(r[i]) for r in rows + [head]) for i in range(5)]
    for r in [head] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if profile != "paper":
        print("(the small profile is not comparable with the public number; it checks that the bench runs)")
    if res["surface_reruns"] is not None:
        print(f"padded surface: {res['surface_reruns']} phase(s) re-run after a capacity overflow in the timed steps")
    if res["surface_skips"] is not None:
        print(f"padded surface: {res['surface_skips']} phase(s) skipped after a capacity overflow in the timed steps")
    if res["peak_reserved_gib_steady"] is not None:
        print(f"steady peak held from the device (reserved, CUDA graph pools included): "
              f"{res['peak_reserved_gib_steady']:.2f} GiB")
    if res["peak_mem_gib_first_steps"] is not None:
        print(f"first {warmup * args.steps_per_tick} step(s) peak: {res['peak_mem_gib_first_steps']:.2f} GiB")


def main(argv=None) -> int:
    from get3d.train.loop import Hooks, train

    args = parse_args(argv)
    # Line-buffered even into a pipe: a run cut off by `timeout` (a cold GPU machine compiles every Triton kernel
    # first) keeps the lines it printed instead of losing its whole block buffer.
    sys.stdout.reconfigure(line_buffering=True)
    profile = "small" if args.small else (args.profile or "paper")
    device, cfg_model, cfg_train, batch, warmup_steps = build_configs(args, profile)
    warmup = warmup_steps // args.steps_per_tick          # from here on counted in ticks
    experiments = apply_experiments(args, cfg_train)
    on_progress, ticks, first_peak, sync = make_probe(args, device, warmup, experiments)
    if args.torch_profile is not None:
        label_tick_bookkeeping()
    phase_peaks = record_phase_peaks(lambda: len(ticks) >= warmup) if args.phase_peaks and device == "cuda" else None
    with tempfile.TemporaryDirectory() as tmp:
        data = synthetic_dataset(Path(tmp) / "data.h5", cfg_model.img_resolution)
        t0 = time.perf_counter()
        train(cfg_model, cfg_train, data, Path(tmp) / "run", Hooks(on_progress=on_progress))
        wall = time.perf_counter() - t0
    if args.cprofile is not None:
        write_cprofile(on_progress.prof, args.cprofile)
    res = summarize(args, profile, device, cfg_model, batch, warmup, experiments, ticks, first_peak, sync, wall)
    if phase_peaks is not None:
        res["phase_peak_gib"] = phase_peaks
        res["peak_mem_gib_steady"] = max(phase_peaks.values(), default=None)
        print("steady peak per phase, GiB: " + ", ".join(f"{k} {v:.2f}" for k, v in phase_peaks.items()))
    print_table(res, args, profile, device, cfg_model, batch, warmup, experiments)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
