"""Render-stage throughput vs a bare BlenderProc script rendering the same views.

    .venv/bin/python bench/render_speed.py [--objects 3] [--views 8] [--samples 16] [--res 128,256,512]

For each resolution: the pipeline (get3d.render.stage.render_dataset: validation, job files, one Blender
worker process, per-object npz, HDF5 + manifest + contact sheet) and a bare one-process BlenderProc script
(bproc.init, BlenderProc's own OBJ loader, the same cameras / light / samples, bproc.renderer.render) are
timed end to end, each including its Blender start-up.  Both use one Blender process with all cores.
Prints views/s, the overhead ratio (pipeline / bare - 1; target <= 10%) and the largest pixel difference.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from get3d.render.config import RenderConfig
from get3d.render.stage import _cpu_count, load_manifest, object_cameras, render_dataset, render_python
from get3d.render.testing import make_fixture_set

BARE = r'''
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
import bproc_bootstrap
bproc = bproc_bootstrap.load()
import bpy
job = json.load(open(sys.argv[1]))
bproc.init()
if job["device"] == "cpu":
    bproc.renderer.set_render_devices(use_only_cpu=True)
    bproc.renderer.set_cpu_threads(job["threads"])
else:
    bproc.renderer.set_render_devices(desired_gpu_device_type=["OPTIX", "CUDA", "HIP"])
bproc.renderer.set_max_amount_of_samples(job["samples"])
bproc.renderer.set_denoiser(None)
bproc.renderer.set_output_format(enable_transparency=True, view_transform="Standard")
bproc.camera.set_intrinsics_from_blender_params(lens=job["fovy_rad"], image_width=job["res"],
                                                image_height=job["res"], clip_start=0.1, clip_end=1000.0,
                                                lens_unit="FOV")
out = {}
for obj in job["objects"]:
    bproc.clean_up()
    bproc.renderer.set_world_background([1, 1, 1], strength=job["ambient"])
    for o in bproc.loader.load_obj(obj["mesh"]):
        o.set_scale([obj["scale"]] * 3)
    light = bproc.types.Light()
    light.set_type("AREA")
    light.set_energy(job["energy"])
    light.blender_obj.data.size = 1.0
    for i, c2w in enumerate(obj["c2w_zup"]):
        c2w = np.array(c2w)
        bproc.camera.add_camera_pose(c2w, frame=i)
        light.set_location(c2w[:3, 3], frame=i)
        light.set_rotation_mat(c2w[:3, :3], frame=i)
    out[obj["id"]] = np.stack(bproc.renderer.render()["colors"])
np.savez(sys.argv[3], **out)
'''

Y_UP_TO_Z_UP = np.array([[1, 0, 0, 0], [0, 0, -1, 0], [0, 1, 0, 0], [0, 0, 0, 1]], float)


def _cpu(children_only: bool = False) -> float:
    """CPU seconds (user + sys) of finished children, plus this process's own unless children_only."""
    ch = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = 0.0 if children_only else time.process_time()
    return ch.ru_utime + ch.ru_stime + own


def run(args) -> list[dict]:
    rows = []
    py = render_python()
    threads = _cpu_count()
    with tempfile.TemporaryDirectory(prefix="render-bench-") as tmp:
        tmp = Path(tmp)
        manifest = make_fixture_set(tmp / "assets", n=args.objects)
        items = load_manifest(manifest).items
        for res in args.res:
            cfg = RenderConfig(resolution=res, views_per_object=args.views, samples=args.samples, workers=1,
                               objects_per_shard=max(1, args.objects), seed=0, device=args.device)
            job = {"res": res, "samples": args.samples, "threads": threads, "ambient": cfg.ambient,
                   "energy": cfg.light_energy, "fovy_rad": float(np.radians(cfg.fovy_deg)), "device": args.device,
                   "objects": [{"id": it.id, "mesh": str(it.mesh), "scale": it.scale,
                                "c2w_zup": (Y_UP_TO_Z_UP @ object_cameras(cfg, it.id)["c2w"]).tolist()}
                               for it in items]}
            (tmp / "bare.json").write_text(json.dumps(job))
            (tmp / "bare.py").write_text(BARE)
            t_pipe, t_bare, c_pipe, c_bare = [], [], [], []
            for rep in range(args.repeat):  # interleaved; the minimum is reported (noisy shared machines)
                c0, t0 = _cpu(), time.perf_counter()
                s = render_dataset(manifest, tmp / f"out{res}" / "d.h5", cfg, tmp / f"work{res}-{rep}",
                                   progress=False)
                t_pipe.append(time.perf_counter() - t0)
                c_pipe.append(_cpu() - c0)
                c0, t0 = _cpu(children_only=True), time.perf_counter()
                subprocess.run([str(py), str(tmp / "bare.py"), str(tmp / "bare.json"),
                                str(REPO / "get3d" / "render"), str(tmp / f"bare{res}.npz")],
                               check=True, capture_output=True, text=True, cwd=tmp)
                t_bare.append(time.perf_counter() - t0)
                c_bare.append(_cpu(children_only=True) - c0)

            from get3d.dataset.format import open_dataset

            with open_dataset(s["h5"]) as f, np.load(tmp / f"bare{res}.npz") as z:
                pipe = f["images"][:].astype(np.int16)
                bare = np.concatenate([z[it.id] for it in items]).astype(np.int16)
                diff = int(np.abs(pipe - bare).max())
                mean_diff = float(np.abs(pipe - bare).mean())
            n = args.objects * args.views
            tp, tb = min(t_pipe), min(t_bare)
            rows.append({"res": res, "views": n, "pipeline_s": tp, "bare_s": tb,
                         "pipeline_vps": n / tp, "bare_vps": n / tb, "overhead": tp / tb - 1,
                         "pipeline_cpu_s": min(c_pipe), "bare_cpu_s": min(c_bare),
                         "overhead_cpu": min(c_pipe) / min(c_bare) - 1,
                         "max_px_diff": diff, "mean_px_diff": mean_diff})
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--res", type=lambda s: [int(x) for x in s.split(",")], default=[128, 256, 512])
    ap.add_argument("--repeat", type=int, default=2, help="interleaved repetitions; the minimum is reported")
    ap.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    args = ap.parse_args(argv)
    rows = run(args)
    print(f"\nCycles {args.device.upper()}, {_cpu_count()} cores, {args.objects} objects x {args.views} views, {args.samples} samples, "
          f"1 Blender process each (start-up included), min of {args.repeat}\n")
    print("| res | views | pipeline wall s | bare wall s | pipeline views/s | bare views/s | overhead (wall) "
          "| pipeline CPU s | bare CPU s | overhead (CPU) | max / mean px diff |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['res']}² | {r['views']} | {r['pipeline_s']:.2f} | {r['bare_s']:.2f} | {r['pipeline_vps']:.2f} | "
              f"{r['bare_vps']:.2f} | {100 * r['overhead']:+.1f}% | {r['pipeline_cpu_s']:.1f} | {r['bare_cpu_s']:.1f} "
              f"| {100 * r['overhead_cpu']:+.1f}% | {r['max_px_diff']} / {r['mean_px_diff']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
