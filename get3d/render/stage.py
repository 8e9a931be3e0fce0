"""Dataset render stage: assets manifest -> multi-view RGBA renders (BlenderProc / Cycles) -> one HDF5 file.

Main-process side (may import torch via get3d.cameras).  Blender runs in separate processes of the render
venv (``GET3D_RENDER_PYTHON``, default ``<repo>/.venv-render/bin/python``) executing ``blender_worker.py``
on a job file; see docs/rendering.md for conventions, HDF5 layout, resume and failure policy.

Flow of :func:`render_dataset`:
1. read the manifest; per object compute seeded cameras (seed = f(cfg.seed, object id)) and a *key*
   (hash of mesh content, normalisation, cameras and render settings);
2. skip objects whose ``<work>/objects/<stem>.npz`` (or ``.failed.json``) carries the same key (resume);
3. validate the rest (named failures: missing_file, corrupt_file, empty_mesh, missing_material,
   missing_texture, corrupt_texture, too_many_faces, out_of_bounds, invalid_transform, unsupported_format);
4. render the valid ones in shards (:func:`render_shard`, one Blender process per shard, run in parallel);
5. apply the failure-fraction gate, then write the HDF5, the JSON manifest and a contact sheet atomically.
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from get3d import cameras
from get3d.dataset import format as dataset_format
from get3d.io import atomic_write_image, atomic_write_json, file_sha256
from get3d.schema import to_dict

from .config import RenderConfig

#: Bump when the worker's output for the same inputs changes (invalidates resumable results).
RENDER_CODE_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_SCRIPT = Path(__file__).with_name("blender_worker.py")
EVENT_PREFIX = "@@GET3D "
MESH_EXTS = (".obj", ".ply", ".glb", ".gltf")


class RenderError(RuntimeError):
    """The render stage cannot produce a dataset (bad manifest, missing environment, failure gate)."""


class RenderEnvironmentError(RenderError):
    """The render venv's python is missing or broken."""


class FailureGateError(RenderError):
    """More objects failed than ``render.max_failure_fraction`` allows."""


# --------------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class ObjectSpec:
    id: str
    synset: str
    mesh: Path
    mesh_rel: str
    scale: float
    translation: tuple
    split: str
    sha256: str


@dataclass
class Manifest:
    path: Path
    source: str
    category: str
    synset: str
    items: list
    upstream_failures: list = field(default_factory=list)


def load_manifest(path) -> Manifest:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RenderError(f"{path}: assets manifest not found") from None
    except json.JSONDecodeError as exc:
        raise RenderError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or data.get("version") != 1:
        raise RenderError(f"{path}: key 'version' must be 1, got {data.get('version') if isinstance(data, dict) else data!r}")
    items = data.get("items")
    if not isinstance(items, list):
        raise RenderError(f"{path}: key 'items' must be a list")
    seen, out = set(), []
    for i, it in enumerate(items):
        where = f"{path}: items[{i}]"
        if not isinstance(it, dict):
            raise RenderError(f"{where}: expected an object, got {it!r}")
        for k in ("id", "mesh"):
            if not isinstance(it.get(k), str) or not it[k]:
                raise RenderError(f"{where}.{k}: required string, got {it.get(k)!r}")
        if it["id"] in seen:
            raise RenderError(f"{where}.id: duplicate id {it['id']!r}")
        seen.add(it["id"])
        split = it.get("split", "train")
        if split not in ("train", "val", "test"):
            raise RenderError(f"{where}.split: {split!r} is not one of train|val|test")
        mesh = Path(it["mesh"])
        mesh_abs = mesh if mesh.is_absolute() else (path.parent / mesh)
        try:
            scale = float(it.get("scale", 1.0))
            translation = tuple(float(x) for x in it.get("translation", (0.0, 0.0, 0.0)))
        except (TypeError, ValueError):
            raise RenderError(f"{where}: scale / translation must be numbers") from None
        if len(translation) != 3:
            raise RenderError(f"{where}.translation: expected 3 numbers, got {it.get('translation')!r}")
        out.append(ObjectSpec(id=it["id"], synset=str(it.get("synset", data.get("synset", ""))), mesh=mesh_abs,
                              mesh_rel=it["mesh"], scale=scale, translation=translation, split=split,
                              sha256=str(it.get("sha256") or "")))
    return Manifest(path=path, source=str(data.get("source", "")), category=str(data.get("category", "")),
                    synset=str(data.get("synset", "")), items=out,
                    upstream_failures=list(data.get("failures") or []))


def object_seed(seed: int, object_id: str) -> list[int]:
    """Seed material for an object's camera RNG: independent of order, process and Python hash salt."""
    digest = hashlib.sha256(object_id.encode("utf-8")).digest()
    return [int(seed), int.from_bytes(digest[:8], "little")]


def object_cameras(cfg: RenderConfig, object_id: str) -> dict:
    """Seeded cameras of one object: azimuth, polar [V] (radians), c2w [V,4,4], K [3,3] (float64)."""
    prior = cameras.CameraPrior(cfg.elevation_min_deg, cfg.elevation_max_deg, cfg.radius, cfg.fovy_deg)
    rng = np.random.default_rng(object_seed(cfg.seed, object_id))
    az, polar = prior.sample_numpy(cfg.views_per_object, rng)
    c2w = cameras.camera_to_world(az, polar, cfg.radius)
    return {"azimuth": az, "polar": polar, "c2w": np.asarray(c2w, dtype=np.float64),
            "K": cameras.intrinsics(cfg.resolution, cfg.fovy_deg)}


def file_stem(object_id: str) -> str:
    """A file-system-safe, collision-free name for an object id."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", object_id)[:80]
    if safe == object_id and not safe.startswith("."):
        return safe
    return f"{safe}-{hashlib.sha256(object_id.encode()).hexdigest()[:10]}"


_CONTENT_FIELDS = ("resolution", "views_per_object", "elevation_min_deg", "elevation_max_deg", "radius",
                   "fovy_deg", "samples", "denoiser", "light_type", "light_energy", "light_placement", "ambient",
                   "film_transparent", "view_transform", "device", "max_faces", "max_extent", "seed")


def mesh_fingerprint(item: ObjectSpec) -> str:
    if item.sha256:
        return item.sha256
    try:
        return file_sha256(item.mesh)
    except OSError:
        return "unreadable"


def object_key(item: ObjectSpec, cams: dict, cfg: RenderConfig) -> str:
    """Identity of one object's render: same key => the stored result can be reused."""
    h = hashlib.sha256()
    settings = {k: getattr(cfg, k) for k in _CONTENT_FIELDS}
    h.update(json.dumps({"code": RENDER_CODE_VERSION, "id": item.id, "mesh": mesh_fingerprint(item),
                         "scale": item.scale, "translation": list(item.translation), "settings": settings},
                        sort_keys=True).encode())
    h.update(np.ascontiguousarray(cams["c2w"]).tobytes())
    return h.hexdigest()


def _mtl_textures(mtl: Path) -> list[str]:
    maps = []
    for line in mtl.read_text(errors="replace").splitlines():
        parts = line.strip().split()
        if parts and parts[0].lower() in ("map_kd",) and len(parts) > 1:
            maps.append(parts[-1])
    return maps


def _check_obj_materials(obj: Path) -> tuple[str, str] | None:
    mtllibs = []
    with open(obj, "r", errors="replace") as f:
        for line in f:
            if line.startswith("mtllib"):
                mtllibs += line.split()[1:]
    if not mtllibs:
        return ("missing_material", f"{obj.name}: no 'mtllib' line (textured meshes are required)")
    for name in mtllibs:
        mtl = obj.parent / name
        if not mtl.is_file():
            return ("missing_material", f"{obj.name}: material library {name!r} not found")
        for tex in _mtl_textures(mtl):
            tpath = mtl.parent / tex.replace("\\", "/")
            if not tpath.is_file():
                return ("missing_texture", f"{mtl.name}: texture {tex!r} not found")
            try:
                from PIL import Image

                with Image.open(tpath) as im:
                    im.verify()
            except Exception as exc:  # noqa: BLE001
                return ("corrupt_texture", f"{tex}: {type(exc).__name__}: {exc}")
    return None


def validate_object(item: ObjectSpec, cfg: RenderConfig) -> tuple[str, str] | None:
    """``None`` if the object can be rendered, else ``(reason, detail)``."""
    p = item.mesh
    rel = item.mesh_rel
    if not p.is_file():
        return ("missing_file", f"{rel}: no such file")
    if p.suffix.lower() not in MESH_EXTS:
        return ("unsupported_format", f"{rel}: extension {p.suffix!r} (use {', '.join(MESH_EXTS)})")
    if not (math.isfinite(item.scale) and item.scale > 0 and all(math.isfinite(t) for t in item.translation)):
        return ("invalid_transform", f"scale {item.scale!r}, translation {list(item.translation)!r}")
    if p.suffix.lower() == ".obj":
        with open(p, "rb") as f:
            head = f.read(1 << 16)
        if b"\0" in head:
            return ("corrupt_file", f"{rel}: binary data in a text OBJ file")
        bad = _check_obj_materials(p)
        if bad:
            return bad
    import trimesh

    try:
        mesh = trimesh.load(str(p), force="mesh", process=False, skip_materials=True)
        verts = np.asarray(mesh.vertices, dtype=np.float64)
        faces = np.asarray(mesh.faces)
    except Exception as exc:  # noqa: BLE001
        return ("corrupt_file", f"{rel}: {type(exc).__name__}: {exc}".strip())
    if len(faces) == 0 or len(verts) == 0:
        return ("empty_mesh", f"{rel}: no faces")
    if len(faces) > cfg.max_faces:
        return ("too_many_faces", f"{rel}: {len(faces)} faces > render.max_faces {cfg.max_faces}")
    if not np.isfinite(verts).all():
        return ("corrupt_file", f"{rel}: non-finite vertex coordinates")
    if faces.min() < 0 or faces.max() >= len(verts):
        return ("corrupt_file", f"{rel}: face indices out of range")
    world = verts * item.scale + np.asarray(item.translation)
    reach = float(np.linalg.norm(world, axis=1).max())
    if reach > cfg.max_extent:
        detail = (f"{rel}: normalised vertices reach {reach:.3f} from the origin > "
                  f"render.max_extent {cfg.max_extent} (normalise it in the assets stage)")
        return ("out_of_bounds", detail)
    return None


# --------------------------------------------------------------------------------------------- shards
def render_python() -> Path:
    """The render venv's interpreter (``GET3D_RENDER_PYTHON`` or ``<repo>/.venv-render/bin/python``)."""
    env = os.environ.get("GET3D_RENDER_PYTHON")
    p = Path(env) if env else REPO_ROOT / ".venv-render" / "bin" / "python"
    if not p.exists():
        where = "GET3D_RENDER_PYTHON" if env else "the default location"
        raise RenderEnvironmentError(
            f"render python not found at {p} ({where}); create the render venv "
            f"(bpy==4.2.0 + blenderproc==2.8.0, see envs/render-requirements.txt) or set GET3D_RENDER_PYTHON")
    return p


def _settings(cfg: RenderConfig, threads: int) -> dict:
    s = {k: getattr(cfg, k) for k in _CONTENT_FIELDS}
    s.update(threads=threads, K=cameras.intrinsics(cfg.resolution, cfg.fovy_deg).tolist(),
             clip_start=cameras.NEAR, clip_end=cameras.FAR)
    return s


def make_job(objects: list[dict], cfg: RenderConfig, out_dir, threads: int = 0) -> dict:
    """A worker job; ``objects`` entries: id, stem, mesh (abs path), scale, translation, c2w [V,4,4], key."""
    return {"version": 1, "out_dir": str(out_dir), "settings": _settings(cfg, threads),
            "shard_timeout_s": cfg.shard_timeout_s,
            "objects": [{**o, "c2w": np.asarray(o["c2w"]).tolist(), "translation": list(o["translation"])}
                        for o in objects]}


def render_shard(job: dict, job_path, *, python=None, on_event: Callable[[dict], None] | None = None,
                 timeout: float | None = None, env: dict | None = None) -> dict:
    """Render one job in one Blender process (what a shard executor of :func:`render_dataset` runs).

    Writes ``job`` to ``job_path`` and runs the worker, killed after ``timeout`` seconds (default: the job's
    ``render.shard_timeout_s``).  Returns ``{"returncode", "done": [ids],
    "failed": [ids], "missing": [ids], "crashed_on": id | None, "timed_out", "pid", "seconds",
    "stderr_tail"}``; results are the files the worker wrote in ``job["out_dir"]``.
    """
    python = Path(python) if python else render_python()
    timeout = job.get("shard_timeout_s") if timeout is None else timeout
    job_path = Path(job_path)
    job_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_path, job, indent=None, sort_keys=False, newline=False, fsync=False)
    out_dir = Path(job["out_dir"])
    temp_dir = out_dir.parent / "tmp" / job_path.stem
    shutil.rmtree(temp_dir, ignore_errors=True)
    temp_dir.mkdir(parents=True)
    penv = dict(os.environ if env is None else env)
    penv["BLENDERPROC_TEMP_DIR"] = str(temp_dir)
    penv.pop("PYTHONPATH", None)
    penv.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    current = None
    stderr_lines: list[str] = []
    proc = subprocess.Popen([str(python), str(WORKER_SCRIPT), str(job_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=penv, cwd=str(out_dir.parent))

    def _drain_stderr():
        for line in proc.stderr:
            stderr_lines.append(line)
            del stderr_lines[:-200]

    th = threading.Thread(target=_drain_stderr, daemon=True)
    th.start()
    timed_out = threading.Event()

    def _kill_on_timeout():
        timed_out.set()
        proc.kill()

    timer = threading.Timer(timeout, _kill_on_timeout) if timeout else None
    if timer:
        timer.start()
    try:
        for line in proc.stdout:
            if not line.startswith(EVENT_PREFIX):
                continue
            try:
                ev = json.loads(line[len(EVENT_PREFIX):])
            except json.JSONDecodeError:
                continue
            if ev.get("event") == "begin":
                current = ev.get("id")
            elif ev.get("event") in ("done", "failed"):
                current = None
            if on_event:
                on_event(ev)
        rc = proc.wait()
    finally:
        if timer:
            timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        th.join(timeout=5)
        shutil.rmtree(temp_dir, ignore_errors=True)
    done, failed, missing = [], [], []
    for o in job["objects"]:
        if _result_key(out_dir / (o["stem"] + ".npz")) == o["key"]:
            done.append(o["id"])
        elif _failure_record(out_dir / (o["stem"] + ".failed.json"), o["key"]) is not None:
            failed.append(o["id"])
        else:
            missing.append(o["id"])
    return {"returncode": rc, "done": done, "failed": failed, "missing": missing,
            "crashed_on": current if rc != 0 else None, "timed_out": timed_out.is_set(),
            "pid": proc.pid, "seconds": time.perf_counter() - t0,
            "stderr_tail": "".join(stderr_lines[-30:])}


def _result_key(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            return str(z["key"])
    except Exception:  # noqa: BLE001 - a broken partial file is simply not a result
        return None


def _failure_record(path: Path, key: str) -> dict | None:
    if not path.is_file():
        return None
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rec if rec.get("key") == key else None


def _write_json_atomic(path: Path, obj) -> None:
    atomic_write_json(path, obj, indent=1, sort_keys=False, newline=False)


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        return os.cpu_count() or 1


def visible_gpus() -> list[str]:
    """GPU ids Blender workers may be pinned to: ``GET3D_RENDER_GPUS`` ("0,1"; "" = none), else
    ``CUDA_VISIBLE_DEVICES``, else the GPUs ``nvidia-smi -L`` lists, else none."""
    for var in ("GET3D_RENDER_GPUS", "CUDA_VISIBLE_DEVICES"):
        if var in os.environ:
            return [g.strip() for g in os.environ[var].split(",") if g.strip() and g.strip() != "-1"]
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def plan_workers(cfg: RenderConfig, n_objects: int, gpus: list[str] | None = None) -> tuple[int, int]:
    """(parallel Blender processes, Cycles CPU threads each), bounded by the cores.

    With GPUs (device auto/gpu and ``gpus`` non-empty) the default is one process per GPU.
    """
    cores = _cpu_count()
    if cfg.workers:
        workers = cfg.workers
    elif cfg.device != "cpu" and gpus:
        workers = len(gpus)
    elif cfg.device == "gpu":
        workers = 1
    else:
        workers = max(1, min(8, cores // 4))
    workers = max(1, min(workers, cores, max(1, n_objects)))
    return workers, max(1, cores // workers)


class _GpuPool:
    """Hands each running shard a GPU (round robin over ``gpus``, ``slots`` processes in all)."""

    def __init__(self, gpus: list[str], slots: int):
        import queue

        self.q = queue.Queue()
        for k in range(slots):
            self.q.put(gpus[k % len(gpus)] if gpus else None)

    def run(self, fn, *args, **kw):
        gpu = self.q.get()
        try:
            if gpu is not None:
                kw["env"] = {**os.environ, "CUDA_VISIBLE_DEVICES": gpu}
            return fn(*args, **kw)
        finally:
            self.q.put(gpu)


# --------------------------------------------------------------------------------------------- progress
class _Progress:
    def __init__(self, total: int, initial: int, enabled: bool):
        self.lock = threading.Lock()
        self.views = 0
        self.t0 = time.perf_counter()
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="obj", desc="render", dynamic_ncols=True)

    def event(self, ev: dict) -> None:
        if ev.get("event") not in ("done", "failed"):
            return
        with self.lock:
            self.views += int(ev.get("views", 0))
            if self.bar is not None:
                rate = self.views / max(1e-9, time.perf_counter() - self.t0)
                self.bar.set_postfix_str(f"{rate:.2f} views/s", refresh=False)
                self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()


# --------------------------------------------------------------------------------------------- stage
@dataclass
class RenderPlan:
    """What is left to do; built by :func:`plan_render`, consumed by shards and :func:`finish_render`.

    :func:`render_dataset` drives it (plan -> attempts of shard jobs -> :meth:`absorb` -> :func:`finish_render`);
    an orchestrator that runs the shards elsewhere passes ``run_shards`` to it instead of driving these steps.
    """

    manifest: Manifest
    cfg: RenderConfig
    work_dir: Path
    records: list
    done: dict
    failures: dict
    to_render: list
    skipped: int
    validated_bad: int
    workers: int
    threads: int
    gpus: list = field(default_factory=list)
    reports: list = field(default_factory=list)

    @property
    def obj_dir(self) -> Path:
        return self.work_dir / "objects"

    def shard_jobs(self, ids: list[str] | None = None, attempt: int = 0) -> list[tuple[dict, Path]]:
        """(job, job_path) pairs for the objects still to render (or only ``ids``)."""
        wanted = None if ids is None else set(ids)
        queue = [r for r in self.to_render if wanted is None or r["item"].id in wanted]
        if not queue:
            return []
        size = max(1, min(self.cfg.objects_per_shard, math.ceil(len(queue) / self.workers)))
        jobs = []
        for k, i in enumerate(range(0, len(queue), size)):
            objs = [{"id": r["item"].id, "stem": r["stem"], "mesh": str(r["item"].mesh.resolve()),
                     "scale": r["item"].scale, "translation": r["item"].translation,
                     "c2w": r["cams"]["c2w"], "key": r["key"]} for r in queue[i:i + size]]
            jobs.append((make_job(objs, self.cfg, self.obj_dir, self.threads),
                         self.work_dir / "jobs" / f"a{attempt}-s{k:05d}.json"))
        return jobs

    def absorb(self, report: dict) -> list[str]:
        """Take in one :func:`render_shard` report; returns the ids to retry (a crash's bystanders).

        Raises :class:`RenderError` when the worker failed before rendering anything (broken environment,
        GPU requested but absent...).
        """
        self.reports.append(report)
        if report["returncode"] != 0 and not report["done"] and not report["failed"] \
                and report["crashed_on"] is None:
            raise RenderError(f"Blender worker failed before rendering (exit {report['returncode']}):\n"
                              f"{report['stderr_tail']}")
        crashed = report["crashed_on"]
        by_id = {r["item"].id: r for r in self.to_render}
        if crashed is not None and crashed in by_id:
            r = by_id[crashed]
            rec = {"id": crashed, "key": r["key"], "reason": "renderer_crashed", "stage": "render",
                   "detail": f"Blender exited with code {report['returncode']} while rendering this object"
                             + (" (killed after render.shard_timeout_s)" if report.get("timed_out") else "")}
            _write_json_atomic(self.obj_dir / (r["stem"] + ".failed.json"), rec)
        return [i for i in report["missing"] if i != crashed]


def plan_render(manifest_path, cfg: RenderConfig, work_dir) -> RenderPlan:
    """Read the manifest, compute cameras and keys, find reusable results, validate the rest, gate early."""
    cfg.validate("render")
    man = load_manifest(manifest_path)
    if not man.items:
        raise RenderError(f"{man.path}: the manifest lists no items")
    work_dir = Path(work_dir)
    obj_dir = work_dir / "objects"
    obj_dir.mkdir(parents=True, exist_ok=True)

    records = []
    for item in man.items:
        cams = object_cameras(cfg, item.id)
        records.append({"item": item, "cams": cams, "key": object_key(item, cams, cfg), "stem": file_stem(item.id)})

    done, failures, pending = {}, {}, []
    for r in records:
        npz = obj_dir / (r["stem"] + ".npz")
        if _result_key(npz) == r["key"]:
            done[r["item"].id] = npz
            continue
        rec = _failure_record(obj_dir / (r["stem"] + ".failed.json"), r["key"])
        if rec is not None and rec.get("reason") != "renderer_crashed":
            failures[r["item"].id] = rec
            continue
        pending.append(r)
    skipped = len(done) + len(failures)

    # Validate what is left; validation failures are recorded like render failures (and resumable).
    to_render = []
    with cf.ThreadPoolExecutor(max_workers=max(1, min(8, _cpu_count()))) as pool:
        verdicts = list(pool.map(lambda r: validate_object(r["item"], cfg), pending))
    for r, bad in zip(pending, verdicts):
        if bad is None:
            to_render.append(r)
            continue
        rec = {"id": r["item"].id, "key": r["key"], "reason": bad[0], "detail": bad[1], "stage": "validate"}
        _write_json_atomic(obj_dir / (r["stem"] + ".failed.json"), rec)
        failures[r["item"].id] = rec
    _gate(len(failures), len(records), cfg, failures, early=True)
    gpus = visible_gpus() if (cfg.device != "cpu" and to_render) else []
    workers, threads = plan_workers(cfg, len(to_render), gpus)
    return RenderPlan(manifest=man, cfg=cfg, work_dir=work_dir, records=records, done=done, failures=failures,
                      to_render=to_render, skipped=skipped, validated_bad=len(pending) - len(to_render),
                      workers=workers, threads=threads, gpus=gpus)


def finish_render(plan: RenderPlan, out_h5) -> dict:
    """Collect per-object results, apply the failure gate, write HDF5 + JSON + contact sheet."""
    t0 = time.perf_counter()
    done, failures = dict(plan.done), dict(plan.failures)
    for r in plan.to_render:
        oid = r["item"].id
        npz = plan.obj_dir / (r["stem"] + ".npz")
        if _result_key(npz) == r["key"]:
            done[oid] = npz
        else:
            rec = _failure_record(plan.obj_dir / (r["stem"] + ".failed.json"), r["key"])
            rec = rec or {"id": oid, "reason": "render_failed", "detail": "no result written"}
            rec.setdefault("stage", "render")
            failures[oid] = rec
    _gate(len(failures), len(plan.records), plan.cfg, failures, early=False)
    ok = [r for r in plan.records if r["item"].id in done]
    summary = assemble(Path(out_h5), plan.manifest, ok, done, failures, plan.records, plan.cfg)
    summary.update(rendered=sum(1 for r in plan.to_render if r["item"].id in done),
                   skipped_existing=plan.skipped, workers=plan.workers, threads_per_worker=plan.threads,
                   shards=len(plan.reports), seconds_assemble=time.perf_counter() - t0)
    return summary


#: Runs the shard jobs of one attempt (anywhere, in any order, in parallel) and returns one
#: :func:`render_shard` report per job, in the jobs' order.
ShardExecutor = Callable[[list[tuple[dict, Path]]], list[dict]]

#: Attempts of the retry loop: a crashed Blender process fails its in-flight object, the rest are retried.
RENDER_ATTEMPTS = 3


def local_shard_executor(plan: RenderPlan, on_event: Callable[[dict], None] | None = None) -> ShardExecutor:
    """The default executor: ``plan.workers`` Blender processes on this machine, each pinned to one GPU when
    there are GPUs."""
    python = render_python() if plan.to_render else None

    def run(jobs: list[tuple[dict, Path]]) -> list[dict]:
        slots = min(plan.workers, len(jobs))
        gpu_pool = _GpuPool(plan.gpus, slots)
        with cf.ThreadPoolExecutor(max_workers=slots) as pool:
            futs = [pool.submit(gpu_pool.run, render_shard, job, path, python=python, on_event=on_event)
                    for job, path in jobs]
            return [f.result() for f in futs]
    return run


def render_dataset(manifest_path, out_h5, cfg: RenderConfig, work_dir, progress: bool = True,
                   run_shards: ShardExecutor | None = None) -> dict:
    """Render every manifest item and assemble ``out_h5`` (+ ``.json`` manifest, ``.contact.png``).

    The one render stage: the CLI/DVC and any orchestrator call it.  ``run_shards`` runs the shard jobs of one
    attempt (an orchestrator fans them out, e.g. one Prefect task per shard); default: the local pool.  The retry
    loop (:data:`RENDER_ATTEMPTS`), the "worker failed before rendering" check (:meth:`RenderPlan.absorb`), the
    shard timeout (in each job) and the failure gate apply whatever runs the shards.

    Resumable: results in ``work_dir`` whose key matches are reused.  Raises :class:`FailureGateError`
    (no dataset written, results kept) when the failed fraction exceeds ``cfg.max_failure_fraction``.
    """
    t_start = time.perf_counter()
    plan = plan_render(manifest_path, cfg, work_dir)
    bar = _Progress(len(plan.records), plan.skipped + plan.validated_bad, progress and bool(plan.to_render))
    run_shards = run_shards or local_shard_executor(plan, on_event=bar.event)
    try:
        retry = None
        for attempt in range(RENDER_ATTEMPTS):
            jobs = plan.shard_jobs(retry, attempt)
            if not jobs:
                break
            reports = run_shards(jobs)
            if len(reports) != len(jobs):
                raise RenderError(f"shard executor returned {len(reports)} reports for {len(jobs)} jobs")
            retry = []
            for rep in reports:
                retry += plan.absorb(rep)
                if rep["crashed_on"] is not None:
                    bar.event({"event": "failed"})
            if not retry:
                break
        if retry:
            raise RenderError(f"{len(retry)} objects still unrendered after {RENDER_ATTEMPTS} attempts, "
                              f"e.g. {retry[0]!r}")
    finally:
        bar.close()
    summary = finish_render(plan, out_h5)
    summary["seconds_total"] = time.perf_counter() - t_start
    return summary


def _gate(n_failed: int, n_total: int, cfg: RenderConfig, failures: dict, early: bool) -> None:
    frac = n_failed / max(1, n_total)
    if frac <= cfg.max_failure_fraction:
        return
    reasons: dict[str, int] = {}
    for rec in failures.values():
        reasons[rec["reason"]] = reasons.get(rec["reason"], 0) + 1
    examples = "; ".join(f"{oid}: {rec['reason']} ({rec.get('detail', '')})" for oid, rec in list(failures.items())[:5])
    when = "after validation (nothing rendered)" if early else "after rendering"
    raise FailureGateError(
        f"{n_failed} of {n_total} objects failed ({frac:.1%}) {when}, above render.max_failure_fraction "
        f"{cfg.max_failure_fraction:.1%}; by reason: {reasons}; e.g. {examples}. No dataset was written; fix the "
        f"assets or raise the limit (rendered objects are kept for resume).")


def assemble(out_h5: Path, man: Manifest, ok: list, done: dict, failures: dict, records: list,
             cfg: RenderConfig) -> dict:
    """Write the HDF5 dataset (get3d.dataset.format), its JSON manifest and the contact sheet."""
    objects = [dataset_format.ObjectViews(id=r["item"].id, synset=r["item"].synset, split=r["item"].split,
                                          rgba=done[r["item"].id], azimuth=r["cams"]["azimuth"],
                                          polar=r["cams"]["polar"], c2w=r["cams"]["c2w"]) for r in ok]
    info = dataset_format.DatasetInfo(resolution=cfg.resolution, views_per_object=cfg.views_per_object,
                                      fovy_deg=cfg.fovy_deg, radius=cfg.radius, source=man.source,
                                      category=man.category, synset=man.synset, config=to_dict(cfg))
    views = dataset_format.write_dataset(out_h5, objects, info)
    all_failures = _failure_list(failures, records, man)
    counts = _dataset_counts(records, len(ok), failures, views.objects, cfg.views_per_object)
    man_path = _write_dataset_manifest(out_h5, man, views, counts, all_failures, cfg)
    sheet_path = out_h5.with_suffix(".contact.png")
    if views.preview:
        contact_sheet(views.preview, sheet_path)
    return {"h5": str(out_h5), "manifest": str(man_path), "contact_sheet": str(sheet_path) if views.preview else None,
            "dataset_hash": views.dataset_hash, "counts": counts, "failures": all_failures}


def _failure_list(failures: dict, records: list, man: Manifest) -> list:
    """Stage failures in manifest order, then the upstream (assets-stage) failures."""
    all_failures = [{"id": oid, "reason": rec["reason"], "detail": rec.get("detail", ""),
                     "stage": rec.get("stage", "render")} for oid, rec in failures.items()]
    order = {r["item"].id: k for k, r in enumerate(records)}
    all_failures.sort(key=lambda x: order.get(x["id"], 0))
    all_failures += [{"id": str(f.get("id")), "reason": str(f.get("reason", "")), "detail": str(f.get("path", "")),
                      "stage": "assets"} for f in man.upstream_failures]
    return all_failures


def _dataset_counts(records: list, N: int, failures: dict, obj_entries: list, V: int) -> dict:
    counts = {"objects_in_manifest": len(records), "rendered": N, "failed": len(failures),
              "images": N * V, "views_per_object": V}
    for split in ("train", "val", "test"):
        counts[f"objects_{split}"] = sum(1 for e in obj_entries if e["split"] == split)
    return counts


def _write_dataset_manifest(out_h5: Path, man: Manifest, views: dataset_format.Written, counts: dict,
                            all_failures: list, cfg: RenderConfig) -> Path:
    """The JSON manifest beside the HDF5 file (``<out>.json``), written atomically; returns its path."""
    manifest = {"version": 1, "h5": out_h5.name, "dataset_hash": views.dataset_hash,
                "source": man.source, "category": man.category, "synset": man.synset, "counts": counts,
                "objects": views.objects, "failures": all_failures, "config": to_dict(cfg),
                "render_code_version": RENDER_CODE_VERSION}
    man_path = out_h5.with_suffix(".json")
    _write_json_atomic(man_path, manifest)
    return man_path


def contact_sheet(rows: list, path: Path, tile: int = 128) -> None:
    """Objects (rows) x views (columns), composited on grey; written atomically."""
    from PIL import Image

    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * tile, len(rows) * tile), (128, 128, 128))
    for i, views in enumerate(rows):
        for j, rgba in enumerate(views):
            im = Image.fromarray(rgba, "RGBA").resize((tile, tile), Image.Resampling.BOX)
            bg = Image.new("RGBA", im.size, (128, 128, 128, 255))
            sheet.paste(Image.alpha_composite(bg, im).convert("RGB"), (j * tile, i * tile))
    atomic_write_image(path, sheet)
