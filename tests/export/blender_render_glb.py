"""Render GLB files in Blender (BlenderProc, Cycles) unlit: ``<render-venv>/bin/python blender_render_glb.py JOB``.

Render-venv side (stdlib, numpy, bpy, blenderproc only).  The job lists ``glb`` files, per-file camera-to-world
matrices in the +y-up world frame (OpenGL camera) and the intrinsics ``K``; every material's base-colour texture
is routed to an Emission shader (strength 1, Standard view transform, no dithering), so the rendered colour is
the texture's colour, as in the generator's own (unlit) renders.  Writes ``out`` (npz: ``rgba`` [N, H, W, 4]).
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "get3d", "render"))
import blender_worker as bw
import bproc_bootstrap


def emission_materials(objs) -> int:
    routed = 0
    for o in objs:
        if o.type != "MESH":
            continue
        for slot in o.material_slots:
            mat = slot.material
            nodes, links = mat.node_tree.nodes, mat.node_tree.links
            tex = next(n for n in nodes if n.type == "TEX_IMAGE")
            out = next(n for n in nodes if n.type == "OUTPUT_MATERIAL")
            em = nodes.new("ShaderNodeEmission")
            em.inputs["Strength"].default_value = 1.0
            links.new(tex.outputs["Color"], em.inputs["Color"])
            links.new(em.outputs["Emission"], out.inputs["Surface"])
            routed += 1
    return routed


def main(job_path: str) -> int:
    with open(job_path, encoding="utf-8") as f:
        job = json.load(f)
    bproc = bproc_bootstrap.load()
    import bpy

    bproc.init()
    s = {"device": "cpu", "threads": 0, "samples": job["samples"], "denoiser": "none", "film_transparent": True,
         "view_transform": "Standard", "resolution": job["resolution"], "K": job["K"], "clip_start": 0.05,
         "clip_end": 100.0}
    bw.configure_renderer(bproc, bpy, s)
    bpy.context.scene.render.dither_intensity = 0.0
    images = []
    for item in job["items"]:
        bproc.clean_up(clean_up_camera=False)
        bproc.renderer.set_world_background([0.0, 0.0, 0.0], strength=0.0)
        objs = bw.import_mesh(bpy, item["glb"])
        if emission_materials(objs) == 0:
            raise RuntimeError(f"{item['glb']}: no material with a texture")
        for i, c2w in enumerate(item["c2w"]):
            bproc.camera.add_camera_pose(bw.Y_UP_TO_Z_UP @ np.asarray(c2w, dtype=np.float64), frame=i)
        data = bproc.renderer.render(verbose=False)
        images += [np.asarray(c, dtype=np.uint8) for c in data["colors"]]
    tmp = job["out"] + ".tmp.npz"
    np.savez_compressed(tmp, rgba=np.stack(images))
    os.replace(tmp, job["out"])
    return 0


if __name__ == "__main__":
    bproc_bootstrap.hard_exit(main(sys.argv[1]))
