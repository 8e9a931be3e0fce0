"""MLflow adapter: the only module of ``get3d`` that imports mlflow.

- :func:`connect` resolves the store (``tracking.uri``, or ``MLFLOW_TRACKING_URI``), checks it answers and
  returns a client; an unreachable server or unusable store raises :class:`TrackingError` naming the URI.
- :class:`TrainTracker`: one MLflow run per training run directory (its id in ``<run_dir>/mlflow_run.json``);
  a resumed training continues that run.  Params, resolved config, provenance, per-tick metrics, image grids,
  loss curves.
- :func:`log_evaluation`, :func:`log_export`: the evaluation's metrics and the exported meshes/previews go to
  the run that trained the generator (found through the snapshot's provenance or the run directory).
- :class:`GeneratorModel` (pyfunc), :func:`log_generator_model`, :func:`create_version`: the registry side;
  the promotion gate itself (which version is champion) is :mod:`get3d.register`'s, through the small
  registry helpers here.
- :func:`download_generator`: ``models:/<name>@<alias>`` (or ``/<version>``) -> a local ``generator.pt``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from get3d import offline

offline.apply()

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"           # in a training run directory: which MLflow run it logs to
MODEL_ARTIFACT = "generator.pt"        # the inference snapshot inside the registered pyfunc model
TAG_PREFIX = "get3d."


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable, refused, inconsistent); the message names the URI."""


# ------------------------------------------------------------------------------------------------ connection

def resolve_uri(cfg) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``cfg.uri``; a relative ``sqlite:///`` path becomes absolute."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or cfg.uri
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        path = Path(uri[len("sqlite:///"):]).resolve()
        uri = f"sqlite:///{path}"
    return uri


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _local_db_path(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _set_global_uris(uri: str) -> None:
    """Point mlflow's fluent API at ``uri`` without leaving it in ``MLFLOW_TRACKING_URI``: mlflow exports the
    URI it is given to the environment, which :func:`resolve_uri` would then prefer over every later
    configuration of a long-lived process (a Prefect worker, a test session)."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(cfg) -> MlflowClient:
    """A client on the configured store, after checking that it answers (raises :class:`TrackingError`)."""
    uri = resolve_uri(cfg)
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(cfg.http_retries)
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, math.ceil(cfg.http_timeout_s)))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no tqdm bars in stage logs
    if is_remote(uri):
        health = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(health, timeout=cfg.http_timeout_s) as resp:
                body = resp.read(64).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"tracking server {uri} is unreachable ({health}: {exc}); start it, or set "
                                "tracking.uri / MLFLOW_TRACKING_URI, or tracking.enabled: false") from None
        if "OK" not in body:
            raise TrackingError(f"tracking server {uri}: {health} answered {body!r}, not an MLflow server")
    else:
        db = _local_db_path(uri)
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
    _set_global_uris(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 (any failure here means the store is unusable)
        raise TrackingError(f"tracking store {uri} cannot be used: {exc}") from None
    return client


def experiment_id(client: MlflowClient, cfg) -> str:
    """The configured experiment, created on first use (local stores: artifacts under ``artifact_location``)."""
    exp = client.get_experiment_by_name(cfg.experiment)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not is_remote(client.tracking_uri):
        location = Path(cfg.artifact_location).resolve().as_uri()
    try:
        # the UI shows a "model training" experiment (runs, charts, artifacts), not the GenAI views
        return client.create_experiment(cfg.experiment, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except MlflowException:  # created meanwhile by another process
        exp = client.get_experiment_by_name(cfg.experiment)
        if exp is None:
            raise
        return exp.experiment_id


def run_exists(client: MlflowClient, run_id: str) -> bool:
    try:
        client.get_run(run_id)
        return True
    except MlflowException:
        return False


# ------------------------------------------------------------------------------------------------ small helpers

def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def numeric_metrics(d: dict, prefix: str = "") -> dict[str, float]:
    """Finite numbers of a flat dict (bools and NaN/inf dropped), keys prefixed."""
    out = {}
    for k, v in d.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[f"{prefix}{k}"] = float(v)
    return out


def _log_metrics(client: MlflowClient, run_id: str, values: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric
    from mlflow.utils.time import get_current_time_millis

    now = get_current_time_millis()
    items = [Metric(k, v, now, int(step)) for k, v in values.items()]
    for i in range(0, len(items), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(run_id, metrics=items[i:i + 900], synchronous=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_ref_of_snapshot(snapshot: Path) -> dict | None:
    """``{"run_id", "tracking_uri", ...}`` recorded in an inference snapshot's provenance (None if absent)."""
    from get3d.train.checkpoint import load_inference

    payload = load_inference(snapshot)
    ref = (payload.get("provenance") or {}).get("tracking")
    return ref if isinstance(ref, dict) and ref.get("run_id") else None


def find_run(client: MlflowClient, cfg, ref: str | os.PathLike | None, stage: str) -> str:
    """The MLflow run of a run directory, run id or inference snapshot; a new run when it has none.

    A run recorded in another store (or deleted) is not an error: the stage logs to a new run tagged with the
    missing id, and says so."""
    run_id = None
    if ref is not None:
        p = Path(ref)
        if p.is_dir():
            rec = _read_json(p / RUN_FILE)
            run_id = rec.get("run_id") if rec else None
        elif p.is_file():
            rec = run_ref_of_snapshot(p)
            run_id = rec.get("run_id") if rec else None
        elif isinstance(ref, str) and len(ref) >= 16 and "/" not in ref:
            run_id = ref
    if run_id and run_exists(client, run_id):
        return run_id
    tags = {TAG_PREFIX + "stage": stage}
    if run_id:
        log.warning("MLflow run %s (from %s) is not in %s; logging %s to a new run", run_id, ref,
                    client.tracking_uri, stage)
        tags[TAG_PREFIX + "missing_train_run"] = run_id
    run = client.create_run(experiment_id(client, cfg), tags=tags, run_name=f"{stage}")
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


# ------------------------------------------------------------------------------------------------ training

class TrainTracker:
    """Logs one training run directory to one MLflow run (rank 0 / the launching process only).

    The run id is kept in ``<run_dir>/mlflow_run.json``; a resumed training reopens that run.  Per-tick metrics
    come from the loop's ``on_progress`` hook; :meth:`finish` also syncs ``stats.jsonl`` (for ticks no hook
    saw, e.g. from worker processes) and logs the plots, image grids and provenance."""

    def __init__(self, cfg, run_dir: Path, config: dict, dataset: Path):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.client = connect(cfg)
        self.uri = self.client.tracking_uri
        self.logged_images: set[str] = set()
        rec = _read_json(self.run_dir / RUN_FILE)
        self.resumed = bool(rec and rec.get("run_id") and run_exists(self.client, rec["run_id"]))
        if self.resumed:
            self.run_id = rec["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            self.logged_upto = self._last_logged_step()
            self.logged_images = {a.path.rsplit("/", 1)[-1] for a in self.client.list_artifacts(self.run_id, "images")}
            log.info("tracking: resuming MLflow run %s in %s", self.run_id, self.uri)
        else:
            exp = experiment_id(self.client, cfg)
            run = self.client.create_run(exp, run_name=self.run_dir.name, tags={TAG_PREFIX + "stage": "train"})
            self.run_id = run.info.run_id
            self.logged_upto = -1
            from get3d.io import atomic_write_json

            atomic_write_json(self.run_dir / RUN_FILE, {"run_id": self.run_id, "experiment_id": exp,
                                                         "tracking_uri": self.uri})
            log.info("tracking: MLflow run %s in %s", self.run_id, self.uri)
        self._log_params(config)
        self.client.set_tag(self.run_id, TAG_PREFIX + "dataset", str(dataset))

    def _last_logged_step(self) -> int:
        hist = self.client.get_metric_history(self.run_id, "timing/sec_per_tick")
        return max((m.step for m in hist), default=-1)

    def _log_params(self, config: dict) -> None:
        """Params once; on a resume, keys whose value changed (schedule keys) are recorded as tags."""
        from mlflow.entities import Param

        have = self.client.get_run(self.run_id).data.params
        new, changed = [], {}
        for k, v in flatten(config).items():
            s = json.dumps(v) if isinstance(v, (list, tuple, dict)) else str(v)
            if k not in have:
                new.append(Param(k, s[:6000]))
            elif have[k] != s[:6000]:
                changed[f"{TAG_PREFIX}resumed_with.{k}"] = s[:5000]
        for i in range(0, len(new), 90):
            self.client.log_batch(self.run_id, params=new[i:i + 90], synchronous=True)
        for k, v in changed.items():
            self.client.set_tag(self.run_id, k, v)

    # ---- loop hooks
    def on_progress(self, rec: dict) -> None:
        step = int(rec.get("nimg", 0))
        if step <= self.logged_upto:
            return
        _log_metrics(self.client, self.run_id, numeric_metrics(
            {k: v for k, v in rec.items() if k not in ("tick", "step", "nimg")}), step)
        self.logged_upto = step

    def on_snapshot(self, path: Path, kind: str) -> None:
        if kind == "network":
            self._log_new_images()

    def _log_new_images(self) -> None:
        images = self.run_dir / "images"
        for f in sorted(images.glob("*.png")) if images.is_dir() else []:
            if f.name not in self.logged_images:
                self.client.log_artifact(self.run_id, str(f), "images")
                self.logged_images.add(f.name)

    # ---- end of the stage
    def finish(self, result: dict) -> None:
        from get3d.train.rundir import RunDir

        for r in RunDir(self.run_dir, writer=False).read_stats():
            self.on_progress(r)
        self._log_new_images()
        self._log_provenance()
        plots = self.run_dir / "plots"
        if plots.is_dir() and any(plots.glob("*.csv")):
            self.client.log_artifacts(self.run_id, str(plots), "plots")
            png = _loss_curves_png(plots)
            if png is not None:
                with tempfile.TemporaryDirectory() as d:
                    (Path(d) / "loss_curves.png").write_bytes(png)
                    self.client.log_artifact(self.run_id, str(Path(d) / "loss_curves.png"), "plots")
        self.client.set_tag(self.run_id, TAG_PREFIX + "status", result.get("status", "?"))
        self.client.set_tag(self.run_id, TAG_PREFIX + "kimg", f"{result.get('kimg', 0):.3f}")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, exc: BaseException) -> None:
        try:
            self._log_provenance()
            self.client.set_tag(self.run_id, TAG_PREFIX + "error", f"{type(exc).__name__}: {exc}"[:5000])
            self.client.set_terminated(self.run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        except Exception as log_exc:  # noqa: BLE001 (never hide the training error behind a logging one)
            log.warning("tracking: could not mark run %s failed: %s", self.run_id, log_exc)

    def _log_provenance(self) -> None:
        prov = _read_json(self.run_dir / "run.json") or {}
        git = prov.get("git") or {}
        versions = prov.get("versions") or {}
        tags = {
            "mlflow.source.git.commit": git.get("sha") or "unknown",
            TAG_PREFIX + "git_dirty": str(git.get("dirty")),
            TAG_PREFIX + "dataset_sha256": (prov.get("dataset") or {}).get("sha256") or "unknown",
            TAG_PREFIX + "device": versions.get("gpu") or "cpu",
            TAG_PREFIX + "host": prov.get("host") or "unknown",
            TAG_PREFIX + "world_size": str(prov.get("world_size")),
            TAG_PREFIX + "resumed": str(self.resumed),
        }
        tags.update({f"{TAG_PREFIX}version.{k}": str(v) for k, v in versions.items()})
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, v)
        for name in ("config.json", "run.json", "run-history.jsonl"):
            if (self.run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(self.run_dir / name), "provenance")


def _loss_curves_png(plots: Path) -> bytes | None:
    """The ``loss_*.csv`` curves in one PNG (matplotlib, Agg); None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    files = sorted(plots.glob("loss_*.csv"))
    if not files:
        return None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for f in files:
        rows = [line.split(",") for line in f.read_text().splitlines()[1:] if line.strip()]
        if rows:
            ax.plot([float(r[0]) for r in rows], [float(r[1]) for r in rows], label=f.stem)
    ax.set_xlabel("kimg")
    ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ evaluate / export

def log_evaluation(cfg, ref, out_dir: Path, metrics: dict, comparison_key: str | None = None) -> str | None:
    """Log an evaluation (``metrics`` as ``eval/<key>``, step = the snapshot's kimg x 1000; its output files as
    artifacts under ``evaluate/``) to the training run of ``ref`` (snapshot, run dir or run id)."""
    if not cfg.enabled:
        return None
    client = connect(cfg)
    run_id = find_run(client, cfg, ref, "evaluate")
    step = round(float(metrics.get("kimg") or 0.0) * 1000)
    _log_metrics(client, run_id, numeric_metrics(metrics, "eval/"), step)
    out_dir = Path(out_dir)
    for name in ("metrics.json", "evaluate.json", "per_shape.json", "preview.png"):
        if (out_dir / name).is_file():
            client.log_artifact(run_id, str(out_dir / name), "evaluate")
    if comparison_key:
        client.set_tag(run_id, TAG_PREFIX + "reference_key", comparison_key)
    return run_id


#: Export outputs logged to the run (relative globs under the export folder).
EXPORT_PATTERNS = ("**/*.glb", "**/*.png", "**/*.gif", "**/*.mp4", "**/*.webp", "*.json")


def log_export(run_dir_or_run_id, export_dir: Path, cfg=None) -> str | None:
    """Log the exported sample meshes (GLB), previews, turntables and ``export.json`` under ``export/`` of the run
    of a training run directory, run id or generator snapshot (``cfg``: default ``./params.yaml``'s)."""
    if cfg is None:
        cfg = _tracking_params()
    if not cfg.enabled:
        return None
    export_dir = Path(export_dir)
    if not export_dir.is_dir():
        raise FileNotFoundError(f"{export_dir}: export folder not found (run the export stage)")
    client = connect(cfg)
    run_id = find_run(client, cfg, run_dir_or_run_id, "export")
    files = sorted({f for pat in EXPORT_PATTERNS for f in export_dir.glob(pat) if f.is_file()})
    for f in files:
        sub = f.parent.relative_to(export_dir).as_posix()
        client.log_artifact(run_id, str(f), "export" if sub == "." else f"export/{sub}")
    log.info("tracking: %d export files logged to run %s", len(files), run_id)
    return run_id


# ------------------------------------------------------------------------------------------------ registry

class GeneratorModel(mlflow.pyfunc.PythonModel):
    """Generates textured meshes: ``predict`` takes seeds and returns GLB bytes per mesh.

    Input: a DataFrame (or a list of dicts / a dict of lists / a list of ints) with ``seed`` and optionally
    ``geo_seed``, ``tex_seed`` (separate geometry / texture latents) and ``psi`` (truncation; per row, or the
    ``psi`` param, else the packaged export config's).  Output: a DataFrame with ``seed``, ``geo_seed``,
    ``tex_seed``, ``psi``, ``glb`` (bytes of a binary glTF with its baked texture; None for a sample without
    surface) and ``num_faces``.  Runs the same code as ``get3d sample`` (:func:`get3d.export.sample.sample_meshes`)."""

    def load_context(self, context) -> None:
        from get3d.export.config import ExportConfig
        from get3d.schema import parse_section

        self.generator_path = Path(context.artifacts["generator"])
        values = json.loads(Path(context.artifacts["export_config"]).read_text())
        self.export_cfg = parse_section(ExportConfig, values, "export")
        self._model = None

    def _loaded(self):
        if self._model is None:
            from get3d.export.sample import load_model

            self._model = load_model(self.generator_path, self.export_cfg.resolve_device(), self.export_cfg.backend)
        return self._model

    def predict(self, context, model_input, params=None):
        import pandas as pd

        from get3d.export.sample import sample_meshes

        rows = _input_rows(model_input, params, self.export_cfg.truncation_psi)
        out = []
        for psi, paired, seeds in _batches(rows):
            with tempfile.TemporaryDirectory() as d:
                kw = {"seeds": seeds} if paired else {"geo_seeds": [seeds[0][0]], "tex_seeds": [seeds[0][1]]}
                res = sample_meshes(self._loaded(), Path(d), self.export_cfg, psi=psi, **kw)
                for m in res["meshes"]:
                    glb = Path(m["glb"]).read_bytes() if m.get("glb") else None
                    out.append({"seed": m["geo_seed"] if m["geo_seed"] == m["tex_seed"] else None,
                                "geo_seed": m["geo_seed"], "tex_seed": m["tex_seed"], "psi": psi, "glb": glb,
                                "num_faces": int(m.get("num_faces", 0))})
        return pd.DataFrame(out, columns=["seed", "geo_seed", "tex_seed", "psi", "glb", "num_faces"])


def _batches(rows: list[dict]):
    """``(psi, paired, seeds)`` calls of sample_meshes, in input order: rows whose geometry and texture seeds
    agree are batched (``seeds``); a row with separate seeds is one call (``[(geo, tex)]``)."""
    out: list = []
    for r in rows:
        paired = r["geo_seed"] == r["tex_seed"]
        if paired and out and out[-1][0] == r["psi"] and out[-1][1]:
            out[-1][2].append(r["geo_seed"])
        elif paired:
            out.append((r["psi"], True, [r["geo_seed"]]))
        else:
            out.append((r["psi"], False, [(r["geo_seed"], r["tex_seed"])]))
    return out


def _input_rows(model_input, params: dict | None, default_psi: float = 1.0) -> list[dict]:
    """Normalise the pyfunc input to ``[{"seed", "geo_seed", "tex_seed", "psi"}]`` (ints, float)."""
    import pandas as pd

    params = params or {}
    if isinstance(model_input, pd.DataFrame):
        records = model_input.to_dict("records")
    elif isinstance(model_input, dict):
        records = pd.DataFrame(model_input).to_dict("records")
    elif isinstance(model_input, (list, tuple)):
        records = [r if isinstance(r, dict) else {"seed": r} for r in model_input]
    else:
        raise TypeError(f"model input: expected a DataFrame, dict or list of seeds, got "
                        f"{type(model_input).__name__}")
    if not records:
        raise ValueError("model input: no rows (give at least one seed)")
    rows = []
    for i, r in enumerate(records):
        if "seed" not in r and not ("geo_seed" in r and "tex_seed" in r):
            raise ValueError(f"model input row {i}: needs 'seed' (or both 'geo_seed' and 'tex_seed'): {r}")
        seed = _int_or_none(r.get("seed"))
        geo, tex = _int_or_none(r.get("geo_seed")), _int_or_none(r.get("tex_seed"))
        seed = seed if seed is not None else geo
        psi = r.get("psi", params.get("psi", default_psi))
        psi = default_psi if psi is None or (isinstance(psi, float) and math.isnan(psi)) else float(psi)
        if not 0.0 <= psi <= 2.0:
            raise ValueError(f"model input row {i}: psi={psi} outside [0, 2]")
        rows.append({"seed": seed, "geo_seed": geo if geo is not None else seed,
                     "tex_seed": tex if tex is not None else seed, "psi": psi})
    return rows


def _int_or_none(v) -> int | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and not v.is_integer():
        raise ValueError(f"model input: seed {v!r} is not an integer")
    return int(v)


#: what the packaged get3d code imports to generate and write meshes (pinned to the versions installed here)
MODEL_PACKAGES = ("torch", "numpy", "scipy", "trimesh", "xatlas", "pillow", "pyyaml", "h5py", "pandas", "mlflow")


def pinned_requirements(packages=MODEL_PACKAGES) -> list[str]:
    """``name==version`` of the packages the model's code imports, as installed here."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for p in packages:
        try:
            out.append(f"{p}=={version(p)}")
        except PackageNotFoundError:
            continue
    return out


def log_generator_model(client: MlflowClient, run_id: str, generator: Path, export_cfg: dict,
                        card_files: dict[str, Path]):
    """Log the pyfunc model (generator snapshot, export config, the get3d package, pinned requirements and the
    model card's files) to ``run_id``; returns MLflow's ``ModelInfo``."""
    import get3d

    with tempfile.TemporaryDirectory() as d:
        cfg_path = Path(d) / "export_config.json"
        cfg_path.write_text(json.dumps(export_cfg, indent=1, sort_keys=True))
        artifacts = {"generator": str(generator), "export_config": str(cfg_path)}
        artifacts.update({k: str(v) for k, v in card_files.items()})
        active = mlflow.active_run()
        if active is not None and active.info.run_id != run_id:
            raise TrackingError(f"another MLflow run ({active.info.run_id}) is active in this process")
        with mlflow.start_run(run_id=run_id, nested=False), warnings.catch_warnings():
            # predict takes several input shapes on purpose (no type hints, no signature): not a problem
            warnings.filterwarnings("ignore", message=".*type hints to the `predict` method.*")
            info = mlflow.pyfunc.log_model(
                name="generator", python_model=GeneratorModel(), artifacts=artifacts,
                code_paths=[str(Path(get3d.__file__).parent)], pip_requirements=pinned_requirements(),
                tags={TAG_PREFIX + "kind": "generator"})
    return info


#: files a logged generator model must hold before a version may point at it
MODEL_FILES = ("MLmodel", "python_model.pkl", "requirements.txt", f"artifacts/{MODEL_ARTIFACT}",
               "artifacts/model_card.md", "code/get3d/export/sample.py")


def model_files_missing(client: MlflowClient, model_uri: str) -> list[str]:
    """Names of :data:`MODEL_FILES` missing from a logged model, as read back from the store."""
    with tempfile.TemporaryDirectory() as d:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=d,
                                                         tracking_uri=client.tracking_uri))
        return [n for n in MODEL_FILES if not (local / n).is_file()]


def create_version(client: MlflowClient, name: str, model_info, run_id: str, description: str,
                   tags: dict[str, str]):
    """One registered model version carrying its card (description + tags) from the start."""
    try:
        client.create_registered_model(name, description="GET3D generator: textured meshes from seeds "
                                                          "(pyfunc, GLB bytes out). See each version's card.")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    return client.create_model_version(name, source=model_info.model_uri, run_id=run_id, tags=tags,
                                       description=description, model_id=getattr(model_info, "model_id", None))


def delete_version(client: MlflowClient, name: str, version: str) -> None:
    try:
        client.delete_model_version(name, version)
    except MlflowException as exc:
        log.warning("could not roll back %s version %s: %s", name, version, exc)


def version_by_alias(client: MlflowClient, name: str, alias: str):
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(client: MlflowClient, name: str, alias: str, version: str) -> None:
    client.set_registered_model_alias(name, alias, str(version))


def set_version_tags(client: MlflowClient, name: str, version: str, tags: dict[str, str]) -> None:
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v))


def all_versions(client: MlflowClient, name: str) -> list:
    return list(client.search_model_versions(f"name='{name}'"))


def _tracking_params():
    """The ``tracking`` section of ``./params.yaml`` when there is one (as every CLI command reads), else the
    defaults; ``MLFLOW_TRACKING_URI`` overrides either."""
    from get3d.tracking_config import TrackingConfig

    if Path("params.yaml").is_file():
        from get3d.config import load_params

        return load_params("params.yaml", only=["tracking"]).tracking
    return TrackingConfig()


def download_generator(uri: str, dst: str | os.PathLike | None = None, cfg=None) -> Path:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> local path of its ``generator.pt``
    (``cfg``: a tracking config; default: ``./params.yaml``'s, see :func:`_tracking_params`)."""
    if not uri.startswith("models:/"):
        raise ValueError(f"{uri}: expected models:/<name>@<alias> or models:/<name>/<version>")
    if cfg is None:
        cfg = _tracking_params()
    client = connect(cfg)
    dst = Path(dst) if dst is not None else Path(tempfile.mkdtemp(prefix="get3d-model-"))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst),
                                                         tracking_uri=client.tracking_uri))
    except MlflowException as exc:
        raise FileNotFoundError(f"{uri}: not found in the registry at {client.tracking_uri} ({exc})") from None
    found = sorted(local.rglob(MODEL_ARTIFACT))
    if not found:
        raise FileNotFoundError(f"{uri}: the model has no {MODEL_ARTIFACT} artifact (downloaded to {local})")
    return found[0]
