"""Export throughput (shapes/s) of ``get3d sample`` with the time of each part, as a table.

    python bench/export_speed.py                 # CPU: the smoke model (params.yaml), 256² textures
    python bench/export_speed.py --paper         # + on CUDA: the paper model (tet grid 90), 1024² textures
    python bench/export_speed.py --model data/train/checkpoints/network-....pt   # + a trained generator's meshes

Each setting runs the real export path (get3d.export.sample.sample_meshes: generation → clean-up → xatlas in a
process pool → UV-space baking on the raster backend → GLB + OBJ/MTL/PNG files) on a freshly initialised
generator, or with ``--model`` on a trained one, after one warm-up batch.  Throughput depends on the meshes: an
untrained generator's surfaces are noisy (thousands of UV charts per mesh), a trained one's smooth.  Prints one row per setting: device, model, texture size, batch, shapes,
shapes/s and the seconds spent in generation / uv_atlas / bake / write.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d.config import load_params
from get3d.export.config import ExportConfig
from get3d.export.sample import sample_meshes


def snapshot(path: Path, model_cfg) -> Path:
    from get3d.nn.config import build_generator
    from get3d.schema import to_dict
    from get3d.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    G = build_generator(model_cfg)
    return save_checkpoint(path, "network", 0, {"G_ema": G.state_dict(), "model_config": to_dict(model_cfg),
                                                "provenance": {"bench": True}, "cur_nimg": 0, "kimg": 0.0,
                                                "train_config": {}})


def run(label: str, model_cfg, device: str, texture: int, batch: int, shapes: int, workers: int,
        model: Path | None = None) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        snap = model if model is not None else snapshot(Path(tmp) / "generator.pt", model_cfg)
        cfg = ExportConfig(seeds=f"0-{batch - 1}", texture_size=texture, batch_size=batch, device=device,
                           atlas_workers=workers, gallery=True)
        sample_meshes(snap, Path(tmp) / "warmup", cfg)                    # JIT builds, caches, pool start-up
        cfg = ExportConfig(seeds=f"1000-{1000 + shapes - 1}", texture_size=texture, batch_size=batch,
                           device=device, atlas_workers=workers, gallery=True)
        t = time.perf_counter()
        res = sample_meshes(snap, Path(tmp) / "out", cfg)
        total = time.perf_counter() - t
        faces = [m["num_faces"] for m in res["meshes"] if not m["empty"]]
    return {"setting": label, "device": device, "tet": model_cfg.tet_res, "texture": texture, "batch": batch,
            "shapes": shapes, "shapes_per_s": shapes / total, "total_s": total,
            "faces": int(sum(faces) / max(1, len(faces))), **res["timing"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--paper", action="store_true", help="also the paper setting (needs CUDA)")
    ap.add_argument("--shapes", type=int, default=8, help="shapes per CPU setting")
    ap.add_argument("--gpu-shapes", type=int, default=64, help="shapes per GPU setting")
    ap.add_argument("--workers", type=int, default=0, help="xatlas processes (0 = one per core)")
    ap.add_argument("--model", type=Path, default=None,
                    help="also a trained generator snapshot (network-*.pt): its meshes, not an untrained one's")
    ap.add_argument("--model-texture", type=int, default=1024, help="texture size for --model")
    args = ap.parse_args()
    root = Path(__file__).resolve().parents[1]
    smoke = load_params(root / "params.yaml", only=["model"]).model
    paper = load_params(root / "profiles" / "paper.yaml", only=["model"]).model
    rows = [run("smoke, CPU", smoke, "cpu", 256, 4, args.shapes, args.workers)]
    if args.model is not None:
        from get3d.nn.config import ModelConfig
        from get3d.schema import parse_section
        from get3d.train.checkpoint import load_checkpoint
        trained = parse_section(ModelConfig, load_checkpoint(args.model, "network")[1]["model_config"], "model")
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        rows.append(run(f"trained {args.model.name}", trained, dev, args.model_texture, 4, args.shapes,
                        args.workers, model=args.model))
    if torch.cuda.is_available():
        rows.append(run("smoke, GPU", smoke, "cuda", 256, 16, args.gpu_shapes, args.workers))
        if args.paper:
            for batch in (8, 16):
                rows.append(run("paper (tet 90, 1024²)", paper, "cuda", 1024, batch, args.gpu_shapes, args.workers))
    elif args.paper:
        print("no CUDA device: the paper setting is measured on the GPU machine only", file=sys.stderr)
    cores = len(os.sched_getaffinity(0))
    card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    print(f"\nexport throughput ({cores} CPU cores, GPU: {card}, torch {torch.__version__})")
    head = ("setting", "device", "tet", "texture", "batch", "shapes", "faces", "shapes/s", "generation",
            "uv_atlas", "bake", "write")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['setting']} | {r['device']} | {r['tet']} | {r['texture']}² | {r['batch']} | {r['shapes']} | "
              f"{r['faces']} | {r['shapes_per_s']:.2f} | {r['generation']:.2f} s | {r['uv_atlas']:.2f} s | "
              f"{r['bake']:.2f} s | {r['write']:.2f} s |", flush=True)


if __name__ == "__main__":
    main()
