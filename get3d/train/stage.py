"""The ``train`` stage as DVC and Prefect run it: resume when compatible, publish the final generator.

The run directory is a persistent DVC output, so a killed ``dvc repro`` resumes where it stopped.  A run
directory trained under *different* settings (anything but the schedule/infrastructure keys below) is not
resumed: it is moved aside as ``<run_dir>.stale`` (its previous version is in the DVC cache anyway) and the
run starts fresh.  The newest inference snapshot is copied atomically to ``model_out`` for later stages.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from get3d.io import atomic_write_bytes
from get3d.schema import to_dict

log = logging.getLogger(__name__)

#: Keys that may change between a run and its resumption (how long / how it runs, not what it learns).
RESUMABLE_KEYS = {"total_kimg", "snapshot_kimg", "image_snapshot_ticks", "kimg_per_tick", "resume", "num_workers",
                  "device", "keep_snapshots", "dist_timeout_s", "max_nonfinite_steps", "tf32", "fused_adam",
                  "num_processes"}


def _learning_config(model_cfg, train_cfg) -> dict:
    train = {k: v for k, v in to_dict(train_cfg).items() if k not in RESUMABLE_KEYS}
    return {"model": to_dict(model_cfg), "train": train}


def incompatible_keys(run_dir: Path, model_cfg, train_cfg) -> list[str]:
    """Dotted keys whose value differs from the run directory's ``config.json`` (empty: resumable)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        return []
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return ["config.json (unreadable)"]
    new = _learning_config(model_cfg, train_cfg)
    diff = []
    for section, values in new.items():
        for key, value in values.items():
            old_value = old.get(section, {}).get(key)
            if json.loads(json.dumps(old_value)) != json.loads(json.dumps(value)):
                diff.append(f"{section}.{key}")
    return diff


def dataset_changed(run_dir: Path, dataset: Path) -> bool:
    """True when the run directory was trained on other data than ``dataset`` (by content hash)."""
    from get3d.dataset.format import dataset_hash

    path = Path(run_dir) / "run.json"
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text()).get("dataset", {})
    except (OSError, json.JSONDecodeError):
        return True
    return old.get("sha256") != dataset_hash(Path(dataset)).get("sha256")


def _tracked_hooks(hooks, tracker):
    """The caller's hooks plus the tracker's (progress + snapshot callbacks both run; abort stays the caller's)."""
    from get3d.train.loop import Hooks

    hooks = hooks or Hooks()
    if tracker is None:
        return hooks

    def both(a, b):
        if a is None:
            return b

        def call(*args):
            a(*args)
            b(*args)
        return call

    return Hooks(on_progress=both(hooks.on_progress, tracker.on_progress), should_abort=hooks.should_abort,
                 on_snapshot=both(hooks.on_snapshot, tracker.on_snapshot))


def retire_stale_run(run_dir: Path, dataset: Path, model_cfg, train_cfg) -> None:
    """Move a run directory trained under other settings or data aside (``<run_dir>.stale``)."""
    changed = incompatible_keys(run_dir, model_cfg, train_cfg)
    if not changed and dataset_changed(run_dir, dataset):
        changed = ["dataset content"]
    if changed:
        stale = run_dir.with_name(run_dir.name + ".stale")
        log.warning("train: %s was trained with different settings (%s); starting fresh, old run moved to %s",
                    run_dir, ", ".join(changed[:6]), stale)
        shutil.rmtree(stale, ignore_errors=True)
        run_dir.rename(stale)


def run_train_stage(model_cfg, train_cfg, dataset: Path, run_dir: Path, model_out: Path, hooks=None,
                    perf_cfg=None, tracking=None) -> dict:
    """The train stage, whoever calls it (CLI/DVC, Prefect, each rank of a multi-process run).

    Moves a stale run directory aside, trains or resumes, and publishes the newest inference snapshot as
    ``model_out`` (rank 0).  ``train.num_processes`` > 1 (and not already a rank): launches that many processes
    (:func:`get3d.train.launch.launch`), each of which calls this function.  ``perf_cfg``: section ``perf``
    (None: the choices in force), applied while training and recorded in config.json.  ``tracking`` (a
    :class:`get3d.tracking_config.TrackingConfig`, enabled): the launching process logs the run to MLflow; a
    resumed run directory continues its MLflow run (``<run_dir>/mlflow_run.json``).
    """
    from get3d import perf
    from get3d.train import distributed as dist_util
    from get3d.train.checkpoint import list_snapshots
    from get3d.train.loop import train

    run_dir, model_out, dataset = Path(run_dir), Path(model_out), Path(dataset)
    world = dist_util.world_from_env()
    if world.is_main:  # the other ranks join after rank 0 has set the directory up (process-group rendezvous)
        retire_stale_run(run_dir, dataset, model_cfg, train_cfg)
    tracker = None
    if tracking is not None and tracking.enabled and not world.distributed:
        from get3d.tracking import TrainTracker

        run_dir.mkdir(parents=True, exist_ok=True)
        tracker = TrainTracker(tracking, run_dir, _full_config(model_cfg, train_cfg), dataset)
    try:
        if train_cfg.num_processes > 1 and not world.distributed:
            from get3d.train.launch import launch

            result = launch(model_cfg, train_cfg, dataset, run_dir, model_out, _tracked_hooks(hooks, tracker),
                            perf_cfg)
        else:
            log.info("train stage: rank %d of %d, run dir %s", world.rank, world.world_size, run_dir)
            with perf.applied(perf_cfg):
                result = train(model_cfg, train_cfg, dataset, run_dir, _tracked_hooks(hooks, tracker))
            if not world.is_main:
                return result
            snaps = list_snapshots(run_dir / "checkpoints", "network")
            if not snaps:
                raise RuntimeError(f"train: no inference snapshot was written in {run_dir / 'checkpoints'}")
            atomic_write_bytes(model_out, snaps[0][1].read_bytes())  # list_snapshots: newest first
            result["model"] = str(model_out)
    except BaseException as exc:
        if tracker is not None:
            tracker.fail(exc)
        raise
    if tracker is not None:
        tracker.finish(result)
        result["mlflow_run_id"] = tracker.run_id
    return result


def _full_config(model_cfg, train_cfg) -> dict:
    return {"model": to_dict(model_cfg), "train": to_dict(train_cfg)}
