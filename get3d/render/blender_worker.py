"""Blender render worker: ``<render-venv>/bin/python blender_worker.py JOB.json``.

Render-venv side: imports only the stdlib, numpy, bpy and blenderproc (never the get3d package).

The job file (written by :mod:`get3d.render.stage`) lists objects with their mesh file, normalisation
(``world = v * scale + translation``, +y-up world) and per-view camera-to-world matrices in the **+y-up
dataset frame** (OpenGL camera).  This worker converts both into Blender's +z-up frame, renders every object
of the job in this one process (``bproc.init()`` runs once; the scene is cleaned between objects) and writes,
per object, atomically:

- ``<out_dir>/<stem>.npz`` with ``rgba`` uint8 ``[V, H, W, 4]`` and ``key`` (the job's object key), or
- ``<out_dir>/<stem>.failed.json`` with ``{"id", "reason", "detail"}`` when that object fails.

It prints one ``@@GET3D {json}`` line per event (begin / done / failed) on stdout for progress reporting,
and exits 0 when the job ran (even with per-object failures), 2 on a job-level error.
"""
from __future__ import annotations

import json
import os
import sys
import time
import traceback

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bproc_bootstrap

EVENT_PREFIX = "@@GET3D "
JOB_VERSION = 1

#: Dataset world (+y up) -> Blender world (+z up):  (x, y, z) -> (x, -z, y).  This is also what Blender's
#: OBJ / PLY importers (forward -Z, up Y) and its glTF importer do to file coordinates.
Y_UP_TO_Z_UP = np.array([[1.0, 0.0, 0.0, 0.0],
                         [0.0, 0.0, -1.0, 0.0],
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.0, 0.0, 1.0]])


def emit(event: str, **fields) -> None:
    sys.stdout.write(EVENT_PREFIX + json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def atomic_write_bytes(path: str, write) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class ObjectFailure(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


def configure_renderer(bproc, bpy, s: dict) -> str:
    """Apply the job's renderer settings once; returns the Cycles device actually used."""
    device = s.get("device", "auto")
    if device == "cpu":
        bproc.renderer.set_render_devices(use_only_cpu=True)
    else:
        bproc.renderer.set_render_devices(desired_gpu_device_type=["OPTIX", "CUDA", "HIP"])
    used = bpy.context.scene.cycles.device
    if device == "gpu" and used != "GPU":
        raise RuntimeError("render.device is 'gpu' but Cycles found no OptiX/CUDA/HIP device")
    threads = int(s.get("threads", 0))
    if used == "CPU" and threads > 0:
        bproc.renderer.set_cpu_threads(threads)
    bproc.renderer.set_max_amount_of_samples(int(s["samples"]))
    bproc.renderer.set_denoiser(None if s["denoiser"] == "none" else "INTEL")
    bproc.renderer.set_output_format(file_format="PNG", color_depth=8,
                                     enable_transparency=bool(s["film_transparent"]),
                                     view_transform=s["view_transform"])
    scene = bpy.context.scene
    scene.cycles.seed = 0
    scene.cycles.use_animated_seed = False
    scene.view_settings.look = "None"
    scene.view_settings.exposure = 0.0
    scene.view_settings.gamma = 1.0
    res = int(s["resolution"])
    # Our K puts pixel centres at integer + 0.5; BlenderProc's K convention (OpenCV) at integers.
    K = np.asarray(s["K"], dtype=np.float64).copy()
    K[0, 2] -= 0.5
    K[1, 2] -= 0.5
    bproc.camera.set_intrinsics_from_K_matrix(K, res, res, clip_start=float(s["clip_start"]),
                                              clip_end=float(s["clip_end"]))
    return used


def import_mesh(bpy, path: str) -> list:
    """Import one mesh file in its native +y-up convention, converted to Blender's +z up."""
    if not os.path.isfile(path):
        raise ObjectFailure("missing_file", path)
    ext = os.path.splitext(path)[1].lower()
    before = set(bpy.data.objects)
    try:
        if ext == ".obj":
            bpy.ops.wm.obj_import(filepath=path, forward_axis="NEGATIVE_Z", up_axis="Y")
        elif ext == ".ply":
            bpy.ops.wm.ply_import(filepath=path, forward_axis="NEGATIVE_Z", up_axis="Y")
        elif ext in (".glb", ".gltf"):
            bpy.ops.import_scene.gltf(filepath=path)
        else:
            raise ObjectFailure("unsupported_format", f"{path}: extension {ext!r} (use .obj, .ply, .glb, .gltf)")
    except ObjectFailure:
        raise
    except Exception as exc:
        raise ObjectFailure("import_failed", f"{path}: {exc}") from exc
    new = [o for o in bpy.data.objects if o not in before]
    if not any(o.type == "MESH" and len(o.data.polygons) > 0 for o in new):
        raise ObjectFailure("empty_mesh", f"{path}: no faces after import")
    return new


def _material(bpy, name: str, albedo: float, color_attribute: str | None = None):
    """A Principled BSDF material: grey ``albedo``, or the mesh's colour attribute as base colour."""
    mat = bpy.data.materials.new(name)
    mat.use_nodes = True
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = (albedo, albedo, albedo, 1.0)
    bsdf.inputs["Roughness"].default_value = 0.5
    if color_attribute:
        node = mat.node_tree.nodes.new("ShaderNodeVertexColor")
        node.layer_name = color_attribute
        mat.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def _reads_vertex_colors(mat) -> bool:
    return bool(mat and mat.use_nodes and any(n.type in ("VERTEX_COLOR", "ATTRIBUTE") for n in mat.node_tree.nodes))


def apply_appearance(bpy, objs: list, render_as: str | None, albedo: float) -> None:
    """Colour the imported meshes as the render plan says (get3d.appearance.render_plan).

    ``vertex_colors``: a mesh with a colour attribute whose materials do not read it (OBJ / PLY import, or a
    glTF primitive without material) gets a material that does; ``neutral_material``: meshes without a
    material get the neutral grey one.  ``textured`` / ``material_colors`` / None: the file's materials as
    imported.
    """
    if render_as not in ("vertex_colors", "neutral_material"):
        return
    neutral = None
    for o in objs:
        if o.type != "MESH":
            continue
        mesh = o.data
        mats = [m for m in mesh.materials if m is not None]
        attrs = mesh.color_attributes
        if render_as == "vertex_colors" and len(attrs) and not any(_reads_vertex_colors(m) for m in mats):
            name = (attrs.active_color or attrs[0]).name
            mesh.materials.clear()
            mesh.materials.append(_material(bpy, f"get3d_vertex_colors_{o.name}", albedo, name))
        elif not mats:
            neutral = neutral or _material(bpy, "get3d_neutral", albedo)
            mesh.materials.clear()
            mesh.materials.append(neutral)


def place_objects(objs: list, scale: float, translation) -> None:
    """world = v * scale + translation in the +y-up frame, i.e. T(M t) S in Blender's frame."""
    from mathutils import Matrix

    t = Y_UP_TO_Z_UP[:3, :3] @ np.asarray(translation, dtype=np.float64)
    m = Matrix.Translation(t.tolist()) @ Matrix.Diagonal((scale, scale, scale, 1.0))
    new = set(objs)
    for o in objs:
        if o.parent is None or o.parent not in new:
            o.matrix_world = m @ o.matrix_world


def add_lights(bproc, s: dict, cam_poses: list) -> None:
    light = bproc.types.Light()
    light.set_type(s["light_type"].upper())
    light.set_energy(float(s["light_energy"]))
    if s["light_type"] == "area":
        light.blender_obj.data.size = 1.0
    if s["light_placement"] == "camera":
        for i, pose in enumerate(cam_poses):
            light.set_location(pose[:3, 3], frame=i)
            light.set_rotation_mat(pose[:3, :3], frame=i)
    else:  # top: straight above the object, pointing down (-z in Blender)
        light.set_location([0.0, 0.0, 2.0])
        light.set_rotation_euler([0.0, 0.0, 0.0])


def render_object(bproc, bpy, s: dict, obj: dict) -> np.ndarray:
    bproc.clean_up(clean_up_camera=False)  # removes objects, materials, images, lights; resets keyframes
    bproc.renderer.set_world_background([1.0, 1.0, 1.0], strength=float(s["ambient"]))
    objs = import_mesh(bpy, obj["mesh"])
    apply_appearance(bpy, objs, obj.get("render_as"), float(s.get("neutral_albedo", 0.6)))
    place_objects(objs, float(obj["scale"]), obj["translation"])
    poses = [Y_UP_TO_Z_UP @ np.asarray(c, dtype=np.float64) for c in obj["c2w"]]
    for i, pose in enumerate(poses):
        bproc.camera.add_camera_pose(pose, frame=i)
    add_lights(bproc, s, poses)
    try:
        data = bproc.renderer.render(verbose=False)
    except Exception as exc:
        raise ObjectFailure("render_failed", str(exc)) from exc
    rgba = np.stack([np.asarray(c, dtype=np.uint8) for c in data["colors"]])
    res = int(s["resolution"])
    if rgba.shape != (len(poses), res, res, 4):
        raise ObjectFailure("render_failed", f"unexpected output shape {rgba.shape}")
    if not (rgba[..., 3] > 0).any():
        raise ObjectFailure("empty_render", "the object covers no pixel in any view")
    return rgba


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: blender_worker.py JOB.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as f:
        job = json.load(f)
    if job.get("version") != JOB_VERSION:
        print(f"{argv[1]}: job version {job.get('version')!r} is not {JOB_VERSION}", file=sys.stderr)
        return 2
    out_dir = job["out_dir"]
    os.makedirs(out_dir, exist_ok=True)
    s = job["settings"]
    # Test hooks: a simulated crash (SIGKILL of this process after N objects) and a delay between objects.
    abort_after = int(os.environ.get("GET3D_RENDER_TEST_ABORT_AFTER", "0"))
    delay = float(os.environ.get("GET3D_RENDER_TEST_DELAY_S", "0"))
    crash_on = os.environ.get("GET3D_RENDER_TEST_CRASH_ON", "")  # SIGKILL while rendering this object id

    t0 = time.perf_counter()
    bproc = bproc_bootstrap.load()
    import bpy

    bproc.init()
    device = configure_renderer(bproc, bpy, s)
    emit("ready", device=device, seconds=time.perf_counter() - t0)

    for n, obj in enumerate(job["objects"]):
        stem = obj["stem"]
        emit("begin", id=obj["id"])
        if crash_on and obj["id"] == crash_on:
            os.kill(os.getpid(), 9)
        t = time.perf_counter()
        try:
            rgba = render_object(bproc, bpy, s, obj)
        except Exception as exc:  # noqa: BLE001 - one bad object must not end the shard
            reason = exc.reason if isinstance(exc, ObjectFailure) else "render_failed"
            detail = exc.detail if isinstance(exc, ObjectFailure) else "".join(
                traceback.format_exception_only(type(exc), exc)).strip()
            record = {"id": obj["id"], "key": obj["key"], "reason": reason, "detail": detail}
            atomic_write_bytes(os.path.join(out_dir, stem + ".failed.json"),
                               lambda f, rec=record: f.write(json.dumps(rec).encode()))
            emit("failed", id=obj["id"], reason=reason, detail=detail)
            continue
        atomic_write_bytes(os.path.join(out_dir, stem + ".npz"),
                           lambda f, a=rgba, k=obj["key"]: np.savez_compressed(f, rgba=a, key=np.array(k)))
        emit("done", id=obj["id"], views=int(rgba.shape[0]), seconds=time.perf_counter() - t)
        if abort_after and n + 1 >= abort_after:
            os.kill(os.getpid(), 9)
        if delay:
            time.sleep(delay)
    emit("exit", seconds=time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    code = main(sys.argv)
    # Every result is already written (fsync + rename): skip Blender's slow interpreter teardown
    # (~1 s; it is also where the exit-time segfault lives).  bproc_bootstrap's atexit fix covers
    # callers that do exit normally.
    bproc_bootstrap.hard_exit(code)
