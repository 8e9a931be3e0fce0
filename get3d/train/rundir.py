"""Run directory: provenance, resolved config, stats stream and DVC plot files, all written atomically.

Layout::

    <run_dir>/
      run.json            provenance: git SHA (+dirty), dataset path/hash, seed, library versions, host, start,
                          MLflow run (``tracking``, from mlflow_run.json)
      mlflow_run.json     the MLflow run this directory logs to (get3d.tracking; absent with tracking off)
      config.json         resolved model + train config (what ran)
      stats.jsonl         one JSON record per tick (kimg, losses, timing, memory)
      plots/<metric>.csv  ``kimg,<metric>`` per metric, for ``dvc plots``
      checkpoints/        state-*.pt (full training state) and network-*.pt (inference)
      images/             preview grids
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from get3d.dataset.format import dataset_hash
from get3d.io import atomic_write_json, atomic_write_text
from get3d.io import json_default as _json_default


def git_sha(start: str | os.PathLike | None = None) -> dict:
    """``{"sha": ..., "dirty": bool}`` of the repository holding this package (or ``start``); sha None if no git."""
    cwd = Path(start) if start else Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, timeout=10, check=False).stdout
        return {"sha": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def library_versions() -> dict:
    import numpy
    import torch
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
           "cuda": torch.version.cuda, "cudnn": None, "gpu": None}
    with contextlib.suppress(RuntimeError):  # a broken CUDA runtime: the versions stay None
        if torch.backends.cudnn.is_available():
            out["cudnn"] = torch.backends.cudnn.version()
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
    for mod in ("h5py", "nvdiffrast"):
        m = sys.modules.get(mod)
        if m is not None:
            out[mod] = getattr(m, "__version__", "?")
    return out


def _read_tracking_ref(run_dir: Path) -> dict | None:
    try:
        ref = json.loads((Path(run_dir) / "mlflow_run.json").read_text())
    except (OSError, ValueError):
        return None
    return ref if isinstance(ref, dict) else None


def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else (1e308 if v > 0 else -1e308)
    return v


class RunDir:
    """Owns one run directory. Only rank 0 should construct it with ``writer=True``."""

    def __init__(self, path: str | os.PathLike, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        if writer:
            for sub in ("checkpoints", "plots", "images"):
                (self.path / sub).mkdir(parents=True, exist_ok=True)

    # ---- layout
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def stats_path(self) -> Path:
        return self.path / "stats.jsonl"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    @property
    def images(self) -> Path:
        return self.path / "images"

    # ---- provenance
    def write_provenance(self, *, config: dict, dataset_path, seed: int, world_size: int,
                         resumed_from: str | None = None, dataset_digest: dict | None = None) -> dict:
        prov = {
            "git": git_sha(),
            "dataset": dataset_digest if dataset_digest is not None else dataset_hash(dataset_path),
            "seed": seed,
            "versions": library_versions(),
            "host": platform.node(),
            "world_size": world_size,
            "argv": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "resumed_from": resumed_from,
            # the MLflow run this directory logs to (get3d.tracking writes it): lets evaluate/register find it
            "tracking": _read_tracking_ref(self.path),
        }
        if self.writer:
            atomic_write_json(self.path / "config.json", config)
            # Keep the provenance of every (re)start: run.json is the newest, history in run-history.jsonl.
            atomic_write_json(self.path / "run.json", prov)
            self.append_jsonl(self.path / "run-history.jsonl", prov)
        return prov

    # ---- stats
    def append_jsonl(self, path: Path, record: dict) -> None:
        line = json.dumps({k: _finite(v) for k, v in record.items()}, sort_keys=True, default=_json_default)
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read_stats(self) -> list[dict]:
        if not self.stats_path.exists():
            return []
        out = []
        for line in self.stats_path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line after kill -9: drop it
                continue
        return out

    def truncate_stats(self, max_nimg: int) -> None:
        """After a resume, drop records newer than the resumed state so curves stay single-valued."""
        if not self.writer or not self.stats_path.exists():
            return
        keep = [r for r in self.read_stats() if r.get("nimg", 0) <= max_nimg]
        atomic_write_text(self.stats_path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in keep))
        self.write_plots(keep)

    def log_stats(self, record: dict) -> None:
        if not self.writer:
            return
        self.append_jsonl(self.stats_path, record)

    def write_plots(self, records: Iterable[dict] | None = None, metrics: Iterable[str] | None = None) -> None:
        """Rewrite ``plots/<metric>.csv`` (``kimg,<metric>``) from the stats stream."""
        if not self.writer:
            return
        records = list(self.read_stats() if records is None else records)
        names = sorted({k for r in records for k, v in r.items()
                        if k.startswith(("loss/", "timing/", "mem/"))
                        and isinstance(v, (int, float))}) if metrics is None else list(metrics)
        for name in names:
            buf = io.StringIO()
            col = name.replace("/", "_")
            buf.write(f"kimg,{col}\n")
            for r in records:
                v = r.get(name)
                if isinstance(v, (int, float)) and v is not None:
                    buf.write(f"{r['kimg']:.6f},{v:.8g}\n")
            atomic_write_text(self.plots / f"{col}.csv", buf.getvalue(), fsync=False)
