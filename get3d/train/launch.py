"""Multi-process training and the training command line, both through :func:`get3d.train.stage.run_train_stage`.

``train.num_processes: N`` (> 1): the train stage calls :func:`launch`, which starts ``torch.distributed.run``
with N processes on this machine (one per GPU with NCCL, gloo on the CPU); every rank runs :func:`rank_main`,
which calls the same stage function with the same configs (rank 0 writes the run directory and publishes the
generator).  The launcher forwards rank 0's per-tick stats to the caller's ``on_progress`` hook.

``python -m get3d.train.launch --data ... --run-dir ...`` (also ``python -m get3d.train.loop``, and under a
``torchrun`` of your own) is the stage with configs from a params file and ``--set`` overrides.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import get3d
from get3d.io import atomic_write_json
from get3d.schema import parse_section, to_dict

log = logging.getLogger(__name__)
SECTIONS = ("model", "train", "perf")


def _configs(data: dict) -> tuple:
    """(model, train, perf) configs from plain sections, validated like params.yaml."""
    from get3d.perf import PerfConfig
    from get3d.train.config import TrainConfig
    from get3d.train.models import model_config_class

    return (parse_section(model_config_class(), data.get("model") or {}, "model"),
            parse_section(TrainConfig, data.get("train") or {}, "train"),
            parse_section(PerfConfig, data.get("perf") or {}, "perf"))


def launch(model_cfg, train_cfg, dataset, run_dir, model_out, hooks=None, perf_cfg=None) -> dict:
    """Run the train stage in ``train_cfg.num_processes`` processes (torchrun); returns rank 0's result."""
    from get3d import perf

    run_dir, model_out = Path(run_dir), Path(model_out)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    spec_path = run_dir.parent / f".{run_dir.name}.launch-{os.getpid()}.json"
    result_path = spec_path.with_suffix(".result.json")
    result_path.unlink(missing_ok=True)
    atomic_write_json(spec_path, {
        "model": to_dict(model_cfg), "train": to_dict(train_cfg), "perf": to_dict(perf_cfg or perf.active()),
        "dataset": str(Path(dataset).resolve()), "run_dir": str(run_dir.resolve()),
        "model_out": str(model_out.resolve()), "result": str(result_path.resolve())})
    n = train_cfg.num_processes
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
           "--max_restarts=0", "-m", "get3d.train.launch", "--spec", str(spec_path)]
    env = dict(os.environ)
    root = str(Path(get3d.__file__).resolve().parents[1])  # the ranks import this very package
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log.info("train: %d processes (torch.distributed.run), run dir %s", n, run_dir)
    try:
        proc = subprocess.Popen(cmd, env=env)
        _follow(proc, run_dir / "stats.jsonl", hooks)
        if proc.returncode != 0:
            raise RuntimeError(f"train: the {n} training processes failed (torch.distributed.run exit "
                               f"{proc.returncode}); their errors are in the log above")
        return json.loads(result_path.read_text())
    finally:
        spec_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)


def _follow(proc: subprocess.Popen, stats: Path, hooks, poll_s: float = 1.0) -> None:
    """Wait for ``proc``; pass every new line of rank 0's stats stream to ``hooks.on_progress``."""
    on_progress = getattr(hooks, "on_progress", None)
    seen = len(stats.read_text().splitlines()) if stats.is_file() else 0
    while True:
        done = proc.poll() is not None
        if on_progress and stats.is_file():
            lines = stats.read_text().splitlines()
            for line in lines[seen:]:
                try:
                    on_progress(json.loads(line))
                except json.JSONDecodeError:  # a line being written: read it next time
                    break
                seen += 1
        if done:
            return
        time.sleep(poll_s)


def rank_main(spec_path: Path) -> int:
    """One rank of :func:`launch`: the train stage with the launcher's configs; rank 0 reports the result."""
    from get3d.train import distributed as dist_util
    from get3d.train.stage import run_train_stage

    spec = json.loads(Path(spec_path).read_text())
    model_cfg, train_cfg, perf_cfg = _configs(spec)
    try:
        res = run_train_stage(model_cfg, train_cfg, Path(spec["dataset"]), Path(spec["run_dir"]),
                              Path(spec["model_out"]), perf_cfg=perf_cfg)
    finally:
        dist_util.shutdown()
    if dist_util.world_from_env().is_main:
        atomic_write_json(spec["result"], res)
    return 0


# ------------------------------------------------------------------------------------------- command line

def parse_overrides(items: list[str]) -> dict[str, dict]:
    """``--set section.key=value`` (YAML values) per section."""
    import yaml

    out: dict[str, dict] = {s: {} for s in SECTIONS}
    for item in items:
        key, sep, val = item.partition("=")
        section, _, name = key.partition(".")
        if not sep or section not in out or not name:
            raise SystemExit(f"--set {item!r}: expected section.key=value with section one of {list(SECTIONS)}")
        out[section][name] = yaml.safe_load(val)
    return out


def load_configs(params: str | None, overrides: list[str]) -> tuple:
    """(model, train, perf) configs from a params file (its model/train/perf sections) plus ``--set``."""
    import yaml

    raw = (yaml.safe_load(Path(params).read_text()) or {}) if params else {}
    data = {s: dict(raw.get(s) or {}) for s in SECTIONS}
    for s, kv in parse_overrides(overrides).items():
        data[s].update(kv)
    return _configs(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m get3d.train.launch",
                                 description="Train (or resume) GET3D through the train stage.")
    ap.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)  # a rank of launch()
    ap.add_argument("--data", help="HDF5 dataset file")
    ap.add_argument("--run-dir", help="run directory (created; resumed from when it has states)")
    ap.add_argument("--model-out", default=None, help="published generator (default: <run-dir>/generator.pt)")
    ap.add_argument("--params", default=None, help="params.yaml to read the model/train/perf sections from")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one knob, e.g. --set train.total_kimg=0.1 (repeatable)")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.spec is not None:
        return rank_main(args.spec)
    if not args.data or not args.run_dir:
        ap.error("--data and --run-dir are required")
    import torch

    from get3d.train import distributed as dist_util
    from get3d.train.stage import run_train_stage

    if args.threads:
        torch.set_num_threads(args.threads)
    model_cfg, train_cfg, perf_cfg = load_configs(args.params, args.overrides)
    model_out = Path(args.model_out) if args.model_out else Path(args.run_dir) / "generator.pt"
    try:
        res = run_train_stage(model_cfg, train_cfg, Path(args.data), Path(args.run_dir), model_out,
                              perf_cfg=perf_cfg)
    finally:
        dist_util.shutdown()
    if dist_util.world_from_env().is_main:
        print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    from torch.distributed.elastic.multiprocessing.errors import record

    sys.exit(record(main)())
