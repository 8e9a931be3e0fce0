"""Build the original LightField descriptor program and compare its 8-bit codes with get3d.metrics.lfd.

Usage (Debian; needs network for pip/apt the first time):
    sudo apt-get update && sudo apt-get install -y freeglut3-dev libglu1-mesa-dev libosmesa6-dev xvfb
    .venv/bin/python scripts/lfd_reference/compare.py [--work DIR] [--n 20] [--device cpu] [--json out.json]

Steps: download ``light-field-distance==0.0.9`` (sdist, ``pip download --no-deps``) into ``DIR`` (default
``$TMPDIR/get3d_lfd_reference``, outside the repository), copy its ``lfd`` folder, ``make && make release`` in
``3DAlignment`` and ``LightField``, write ``--n`` varied meshes as OBJ, run ``3DAlignment`` on each under
``xvfb-run`` (one at a time: it writes ``all_q*`` files into its own folder), read ``<mesh>_q8_v1.8.{art,fd,
cir,ecc}`` and compare with our descriptors: percentage of codes equal and within +-1, per descriptor.
Also checks that our derived 60-rotation alignment table equals the program's ``align10.txt``.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def build(work: Path) -> Path:
    exe = work / "lfd" / "Executable"
    if (exe / "3DAlignment").is_file() and (exe / "Distance").is_file():
        return exe
    work.mkdir(parents=True, exist_ok=True)
    tars = list(work.glob("light-field-distance-0.0.9.tar.gz"))
    if not tars:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        "light-field-distance==0.0.9", "-d", str(work)], check=True)
        tars = list(work.glob("light-field-distance-0.0.9.tar.gz"))
    subprocess.run(["tar", "xzf", str(tars[0]), "-C", str(work)], check=True)
    src = work / "light-field-distance-0.0.9" / "lfd"
    if (work / "lfd").exists():
        shutil.rmtree(work / "lfd")
    shutil.copytree(src, work / "lfd")
    for sub in ("3DAlignment", "LightField"):
        d = work / "lfd" / sub
        subprocess.run("make -j2 && make release", shell=True, cwd=d, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return exe


def test_meshes(n: int, seed: int = 0):
    """Varied closed meshes: spheres, tori, boxes, cylinders, cones, capsules, random blobs, L-shapes, two-part."""
    import trimesh
    from trimesh import creation

    rng = np.random.default_rng(seed)
    out = []

    def blob(sub):
        s = creation.icosphere(sub)
        v = s.vertices
        k = rng.standard_normal((3, 3))
        r = 1 + 0.25 * np.sin(v @ k[0] * 2).reshape(-1, 1) + 0.15 * np.cos(v @ k[1] * 3).reshape(-1, 1)
        return trimesh.Trimesh(v * r, s.faces)

    def lshape():
        a = creation.box((1.0, 0.3, 0.3))
        b = creation.box((0.3, 1.0, 0.3))
        b.apply_translation((-0.35, 0.35, 0))
        return trimesh.util.concatenate([a, b])

    def two_part():
        a = creation.icosphere(1, radius=0.3)
        b = creation.box((0.4, 0.4, 0.4))
        b.apply_translation((0.8, 0.1, 0.2))
        return trimesh.util.concatenate([a, b])

    makers = [
        lambda: creation.icosphere(2),
        lambda: creation.torus(1.0, 0.3, major_sections=24, minor_sections=12),
        lambda: creation.box(rng.uniform(0.3, 1.0, 3)),
        lambda: creation.cylinder(0.3, 1.2, sections=24),
        lambda: creation.cone(0.5, 1.0, sections=24),
        lambda: creation.capsule(1.0, 0.3),
        lambda: blob(2),
        lshape,
        two_part,
        lambda: creation.annulus(0.3, 0.6, 0.2, sections=24),
    ]
    for i in range(n):
        m = makers[i % len(makers)]()
        rot = trimesh.transformations.random_rotation_matrix(rng.random(3))
        m.apply_transform(rot)
        m.apply_scale(rng.uniform(0.5, 2.0))
        out.append((f"m{i:02d}", m))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "get3d_lfd_reference"))
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch
    from get3d.metrics import lfd as L

    work = Path(args.work).resolve()
    exe = build(work)
    ref_align = np.frombuffer((exe / "align10.txt").read_bytes(), np.uint8).reshape(60, 20)[:, :10]
    align_ok = {tuple(r) for r in ref_align.tolist()} == {tuple(r) for r in L.alignment_table().tolist()}
    cams_ok = all(np.allclose([[float(x) for x in ln.split()[1:]] for ln in (exe / f"12_{k}.obj").read_text().splitlines()
                               if ln.startswith("v ")], L.CAMERAS[k]) for k in range(10))
    meshdir = work / "meshes"
    meshdir.mkdir(exist_ok=True)
    stats = {k: [] for k in ("art", "fd", "cir", "ecc")}
    per_mesh = []
    t_ref = t_ours = 0.0
    for name, m in test_meshes(args.n):
        obj = meshdir / f"{name}.obj"
        m.export(obj)
        t0 = time.perf_counter()
        subprocess.run(["xvfb-run", "-a", "./3DAlignment", str(obj.with_suffix(""))], cwd=exe, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_ref += time.perf_counter() - t0
        t0 = time.perf_counter()
        d = L.mesh_descriptors([(m.vertices, m.faces)], device=args.device)
        t_ours += time.perf_counter() - t0
        row = {"mesh": name, "faces": int(len(m.faces))}
        for k in stats:
            ref = np.fromfile(str(obj.with_suffix("")) + f"_q8_v1.8.{k}", np.uint8).astype(int)
            ours = getattr(d, k)[0].reshape(-1).cpu().numpy().astype(int)
            diff = np.abs(ref - ours)
            stats[k].append(diff)
            row[k] = round(100 * float((diff <= 1).mean()), 2)
        per_mesh.append(row)
        print(json.dumps(row), flush=True)
    summary = {k: {"within_1_pct": round(100 * float((np.concatenate(v) <= 1).mean()), 3),
                   "equal_pct": round(100 * float((np.concatenate(v) == 0).mean()), 3),
                   "max_abs_diff": int(np.concatenate(v).max())} for k, v in stats.items()}
    allc = np.concatenate([np.concatenate(v) for v in stats.values()])
    summary["all"] = {"within_1_pct": round(100 * float((allc <= 1).mean()), 3),
                      "equal_pct": round(100 * float((allc == 0).mean()), 3), "codes": int(allc.size)}
    result = {"meshes": args.n, "alignment_table_matches": align_ok, "cameras_match": cams_ok,
              "reference_s_per_mesh": t_ref / max(args.n, 1), "ours_s_per_mesh": t_ours / max(args.n, 1),
              "device": args.device, "torch": torch.__version__, "summary": summary, "per_mesh": per_mesh}
    print(json.dumps({k: v for k, v in result.items() if k != "per_mesh"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
