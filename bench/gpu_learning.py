"""Train within a wall-clock budget through the train stage, resuming the run directory; collect what comes back.

One call of this script is one slice of a long GPU training run (a lent GPU machine runs one command for at most
ten minutes): it resumes ``--run-dir`` when it holds a compatible state, trains until ``--minutes`` have passed
(the train stage's ``should_abort`` hook: a training state and a network snapshot are written at the stop), and
copies the new network snapshots, ``stats.jsonl`` and the newest preview grid to ``--collect``.

    python bench/gpu_learning.py --params profiles/gpu_small.yaml --data data/dataset/dataset.h5 \\
        --run-dir /tmp/get3d-run --minutes 8 --collect "$OUT"

The run directory must outlive the call (on a lent machine: outside the synced checkout, e.g. under /tmp).

The snapshots are then evaluated with ``bench/learning_curve.py`` (FID/KID/COV/MMD against kimg).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from get3d.config import load_params
from get3d.train.checkpoint import list_snapshots
from get3d.train.loop import Hooks
from get3d.train.stage import run_train_stage


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--model-out", type=Path, default=None, help="default: <run-dir>/../generator.pt")
    ap.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this slice")
    ap.add_argument("--collect", type=Path, required=True, help="folder receiving the new snapshots and logs")
    ap.add_argument("--max-files", type=int, default=6, help="network snapshots collected (newest first)")
    args = ap.parse_args(argv)

    params = load_params(args.params, only=["model", "train"])
    ckpts = args.run_dir / "checkpoints"
    before = {p.name for _, p in list_snapshots(ckpts, "network")}
    deadline = time.monotonic() + args.minutes * 60.0
    t0 = time.time()

    def on_progress(rec: dict) -> None:
        print(json.dumps({k: rec[k] for k in sorted(rec) if not isinstance(rec[k], (dict, list))}), flush=True)

    hooks = Hooks(on_progress=on_progress, should_abort=lambda: time.monotonic() > deadline)
    model_out = args.model_out or args.run_dir.parent / "generator.pt"
    res = run_train_stage(params.model, params.train, args.data, args.run_dir, model_out, hooks)
    wall = time.time() - t0

    args.collect.mkdir(parents=True, exist_ok=True)
    new = [p for _, p in list_snapshots(ckpts, "network") if p.name not in before][: args.max_files]
    for p in new:
        shutil.copy2(p, args.collect / p.name)
    for name in ("stats.jsonl", "run.json", "config.json"):
        if (args.run_dir / name).is_file():
            shutil.copy2(args.run_dir / name, args.collect / name)
    grids = sorted((args.run_dir / "images").glob("*.png")) if (args.run_dir / "images").is_dir() else []
    if grids:
        shutil.copy2(grids[-1], args.collect / ("preview-" + grids[-1].name))
    print(f"slice: {res['status']} at {res['kimg']:.1f} kimg after {wall:.0f} s; collected "
          f"{', '.join(p.name for p in new) or 'no new snapshot'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
