"""The ``register`` stage: the evaluated generator becomes a registered MLflow model version behind a gate.

Order (nothing is half-registered: every check runs before the registry is touched, and the version is created
in one call with its card; a failure after that deletes the version again):

1. inputs: the generator snapshot (magic, length, SHA-256), ``metrics.json`` + ``evaluate.json`` of *this*
   snapshot (same SHA-256), the gate metric present and finite.  Any problem -> :class:`RegisterError` naming
   the file / key, nothing registered.
2. the store answers (:func:`get3d.tracking.connect`, naming the URI).
3. the export's meshes/previews/turntables go to the training run; the pyfunc model (generator, export config,
   the ``get3d`` package as code, pinned requirements, card files) is logged to that run.
4. a model version is created with its card (description + tags) and gets the alias ``challenger``.
5. the promotion gate (:func:`promotion_gate`) moves ``champion`` only when the gate metric beats the
   champion's by more than ``gate_min_margin`` on the same reference statistics (``get3d.reference_key``);
   the decision and its numbers are recorded as tags of the version.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import tempfile
from pathlib import Path

from get3d.io import atomic_write_json

log = logging.getLogger(__name__)

REGISTER_FILE = "register.json"
CHAMPION, CHALLENGER = "champion", "challenger"
T = "get3d."  # tag prefix
#: metrics.json keys shown on the card and set as version tags (when present)
CARD_METRICS = ("fid", "kid", "fid_3d", "kid_3d", "cov_cd", "mmd_cd", "cov_lfd", "mmd_lfd", "empty_mesh_fraction")


class RegisterError(RuntimeError):
    """Registration refused (bad or missing input); nothing was registered."""


# ------------------------------------------------------------------------------------------------ the gate (pure)

def decide(value: float, key: str, champion: dict | None, direction: str, margin: float) -> dict:
    """Gate decision for a candidate ``value`` measured on reference ``key`` against ``champion``
    (``{"version", "value", "key"}`` or None).  Returns ``{"decision", "promote", "reason", ...numbers}``."""
    out = {"candidate_value": value, "reference_key": key, "direction": direction, "margin": margin,
           "champion_version": None, "champion_value": None}
    if champion is None:
        return out | {"decision": "promoted", "promote": True, "reason": "no champion yet"}
    out.update(champion_version=champion["version"], champion_value=champion["value"])
    if champion.get("key") != key:
        return out | {"decision": "not_compared", "promote": False,
                      "reason": f"different reference statistics: champion v{champion['version']} was measured on "
                                f"{champion.get('key')}, this version on {key}; champion kept"}
    cv = champion.get("value")
    if cv is None or not math.isfinite(cv):
        return out | {"decision": "promoted", "promote": True,
                      "reason": f"champion v{champion['version']} has no finite value"}
    gain = (cv - value) if direction == "minimize" else (value - cv)
    out["improvement"] = gain
    if gain > margin:
        return out | {"decision": "promoted", "promote": True,
                      "reason": f"{value:.6g} beats champion v{champion['version']} ({cv:.6g}) by {gain:.6g} > "
                                f"margin {margin:g}"}
    return out | {"decision": "rejected", "promote": False,
                  "reason": f"{value:.6g} does not beat champion v{champion['version']} ({cv:.6g}) by more than "
                            f"margin {margin:g} (improvement {gain:.6g})"}


def better(a: float, b: float, direction: str) -> bool:
    return a < b if direction == "minimize" else a > b


# ------------------------------------------------------------------------------------------------ the gate (registry)

@contextlib.contextmanager
def gate_lock(uri: str, name: str):
    """Exclusive lock around read-compare-set of one model's champion (processes of this machine)."""
    h = hashlib.sha256(f"{uri}\0{name}".encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"get3d-gate-{h}.lock"
    with open(path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _gate_record(mv, metric: str) -> dict | None:
    tags = mv.tags or {}
    try:
        value = float(tags[f"{T}gate.value"]) if f"{T}gate.value" in tags else float(tags[f"{T}metric.{metric}"])
    except (KeyError, ValueError):
        value = None
    return {"version": str(mv.version), "value": value, "key": tags.get(f"{T}reference_key"),
            "decision": tags.get(f"{T}gate.decision")}


def promotion_gate(client, cfg, version: str, value: float, key: str) -> dict:
    """Compare ``version`` with the champion and move the alias when it wins; record the decision as tags.

    Under :func:`gate_lock` the champion is re-read, compared and set; after setting, the champion is checked
    again against every promoted version on the same reference (:func:`reconcile`), so two registrations that
    race (also from different machines, which the lock does not cover) end with the better one as champion."""
    from get3d import tracking

    name = cfg.model_name
    with gate_lock(client.tracking_uri, name):
        current = tracking.version_by_alias(client, name, CHAMPION)
        champ = _gate_record(current, cfg.gate_metric) if current is not None else None
        if champ is not None and champ["version"] == str(version):
            champ = None
        d = decide(value, key, champ, cfg.gate_direction, cfg.gate_min_margin)
        tracking.set_version_tags(client, name, version, {
            f"{T}gate.decision": d["decision"], f"{T}gate.reason": d["reason"][:4900],
            f"{T}reference_key": key, f"{T}gate.metric": cfg.gate_metric, f"{T}gate.direction": cfg.gate_direction,
            f"{T}gate.margin": str(cfg.gate_min_margin), f"{T}gate.value": repr(float(value)),
            f"{T}gate.champion_version": str(d["champion_version"]),
            f"{T}gate.champion_value": repr(d["champion_value"]),
        })
        if d["promote"]:
            tracking.set_alias(client, name, CHAMPION, version)
        d["final_champion"] = reconcile(client, cfg)
    if d["promote"] and d["final_champion"] != str(version):
        d["decision"] = "superseded"
        d["reason"] += f"; a better version (v{d['final_champion']}) was promoted concurrently"
        tracking.set_version_tags(client, name, version, {f"{T}gate.decision": "superseded",
                                                          f"{T}gate.reason": d["reason"][:4900]})
    return d


def reconcile(client, cfg, passes: int = 3) -> str | None:
    """Champion = the best *promoted* version measured on the champion's reference; repairs a race's outcome.

    Repeated until a pass changes nothing (a gate on another machine may move the alias in between)."""
    champion = None
    for _ in range(passes):
        champion, moved = _reconcile_once(client, cfg)
        if not moved:
            break
    return champion


def _reconcile_once(client, cfg) -> tuple[str | None, bool]:
    from get3d import tracking

    name = cfg.model_name
    current = tracking.version_by_alias(client, name, CHAMPION)
    if current is None:
        return None, False
    champ = _gate_record(current, cfg.gate_metric)
    best = champ
    for mv in tracking.all_versions(client, name):
        rec = _gate_record(mv, cfg.gate_metric)
        if rec is None or rec["decision"] != "promoted" or rec["key"] != champ["key"] or rec["value"] is None:
            continue
        if best["value"] is None or better(rec["value"], best["value"], cfg.gate_direction):
            best = rec
    if best["version"] != champ["version"]:
        log.warning("register: champion v%s is worse than promoted v%s on the same reference; moving the alias",
                    champ["version"], best["version"])
        tracking.set_alias(client, name, CHAMPION, best["version"])
        tracking.set_version_tags(client, name, champ["version"], {f"{T}gate.superseded_by": best["version"]})
        return best["version"], True
    return best["version"], False


# ------------------------------------------------------------------------------------------------ inputs

def read_evaluation(metrics_dir: Path, snapshot_sha: str | None, metric: str) -> tuple[dict, dict]:
    """``(metrics.json, evaluate.json)`` of an evaluation of the snapshot with ``snapshot_sha``, whose
    ``metric`` is a finite number; else :class:`RegisterError` naming the file and the reason."""
    metrics_dir = Path(metrics_dir)
    loaded = []
    for name in ("metrics.json", "evaluate.json"):
        p = metrics_dir / name
        if not p.is_file():
            raise RegisterError(f"{p}: evaluation output missing (the evaluation failed or did not run); "
                                "nothing registered")
        try:
            loaded.append(json.loads(p.read_text()))
        except ValueError as exc:
            raise RegisterError(f"{p}: not valid JSON ({exc}); nothing registered") from None
    metrics, report = loaded
    v = metrics.get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise RegisterError(f"{metrics_dir / 'metrics.json'}: gate metric {metric!r} is {v!r} (missing or not a "
                            f"finite number; present: {sorted(k for k in metrics if not k.endswith('_time_s'))}); "
                            "nothing registered")
    if snapshot_sha and report.get("snapshot_sha256") and report["snapshot_sha256"] != snapshot_sha:
        raise RegisterError(f"{metrics_dir / 'evaluate.json'}: evaluates snapshot {report.get('snapshot')} "
                            f"(sha256 {report['snapshot_sha256'][:12]}), not this generator "
                            f"(sha256 {snapshot_sha[:12]}); rerun the evaluate stage. Nothing registered")
    if not report.get("comparison_key"):
        from get3d.evaluate.stage import comparison_key

        report["comparison_key"] = comparison_key(report)
    return metrics, report


def read_generator(model: Path) -> tuple[dict, dict]:
    """``(header, payload)`` of a verified inference snapshot, or :class:`RegisterError` naming the file."""
    from get3d.train.checkpoint import CheckpointError, load_inference, read_header

    model = Path(model)
    if not model.is_file():
        raise RegisterError(f"{model}: generator snapshot not found (run the train stage); nothing registered")
    try:
        return read_header(model), load_inference(model)
    except (CheckpointError, OSError, ValueError) as exc:
        raise RegisterError(f"{model}: unusable generator snapshot ({exc}); nothing registered") from None


# ------------------------------------------------------------------------------------------------ the card

def model_card(payload: dict, metrics: dict, report: dict, cfg, previews: list[str]) -> tuple[str, dict]:
    """Markdown description + version tags of one model version (data, recipe, metrics, limits, previews)."""
    prov = payload.get("provenance") or {}
    mc, tc = payload.get("model_config") or {}, payload.get("train_config") or {}
    ds = prov.get("dataset") or {}
    git = prov.get("git") or {}
    ecfg = report.get("config") or {}
    kimg = payload.get("kimg")
    shown = [(k, metrics[k]) for k in CARD_METRICS if isinstance(metrics.get(k), (int, float))]
    lines = [
        "# GET3D generator",
        "",
        ("Generates textured triangle meshes (GLB) from seeds: `mlflow.pyfunc.load_model(\"models:/"
        f"{cfg.model_name}@champion\").predict([{{\"seed\": 0}}])` or `get3d sample --model "
        f"models:/{cfg.model_name}@champion`."),
        "",
        "## Data",
        f"- dataset: `{ds.get('path')}` (sha256 `{str(ds.get('sha256'))[:16]}`)",
        (f"- evaluation reference: test split of `{report.get('dataset')}`, reference key "
        f"`{report.get('comparison_key')}`"),
        "",
        "## Recipe",
        f"- trained {kimg if kimg is not None else '?'} kimg; code `{git.get('sha')}`"
        + (" (uncommitted changes)" if git.get("dirty") else ""),
        (f"- generator `{mc.get('generator')}`, iso-surface `{mc.get('iso_surface')}`, tet grid {mc.get('tet_res')}, "
        f"{mc.get('img_resolution')}² renders, z {mc.get('z_dim')}"),
        (f"- batch {tc.get('batch_size')}, lr G/D {tc.get('lr_g')}/{tc.get('lr_d')}, R1 gamma {tc.get('r1_gamma')}, "
        f"precision {tc.get('precision')}, seed {tc.get('seed')}"),
        "",
        "## Metrics",
        "| metric | value |",
        "|---|---|",
        *[f"| {k} | {v:.6g} |" for k, v in shown],
        "",
        (f"Protocol: {ecfg.get('num_fake_images')} generated images, {metrics.get('num_reference_images')} reference "
        f"views, {metrics.get('num_fake_meshes')} generated meshes, psi {ecfg.get('truncation_psi')}. "
        f"Gate: `{cfg.gate_metric}` ({cfg.gate_direction}, margin {cfg.gate_min_margin})."),
        "",
        "## Limits",
        _protocol_limit(ecfg.get("num_fake_images") or 0),
        f"- Empty generated meshes: {metrics.get('num_empty_meshes')} of {metrics.get('num_fake_meshes')}.",
        "- CPU inference uses the pure-PyTorch rasterizer (slow at high resolution); a CUDA GPU uses nvdiffrast.",
        "- Single category: the generator only produces shapes of the training category.",
        "",
        "## Sample previews",
        *([f"- `{p}`" for p in previews] or ["- none exported"]),
    ]
    tags = {f"{T}metric.{k}": repr(float(v)) for k, v in shown}
    tags.update({
        f"{T}reference_key": str(report.get("comparison_key")),
        f"{T}dataset_sha256": str(ds.get("sha256")),
        f"{T}git_sha": str(git.get("sha")),
        f"{T}kimg": str(kimg),
        f"{T}num_fake_images": str(ecfg.get("num_fake_images")),
        f"{T}snapshot_sha256": str(report.get("snapshot_sha256")),
    })
    return "\n".join(lines) + "\n", tags


def _protocol_limit(n: int) -> str:
    if n < 50_000:
        return (f"- FID/KID from {n} generated images, far fewer than the published fid50k protocol: biased "
                "upwards, comparable only with evaluations on the same reference key, not with published numbers.")
    return "- Metrics follow the published protocol; they compare only with evaluations on the same reference key."


def _card_files(export_dir: Path | None, metrics_dir: Path, tmp: Path) -> tuple[dict, list[str]]:
    """Files packaged with the model (pyfunc artifacts, copied under unique names into ``tmp``): the card
    (written later), sample previews of the export, the evaluation's outputs."""
    import shutil

    files = {"model_card": tmp / "model_card.md"}
    for name in ("metrics.json", "evaluate.json", "preview.png"):
        if (metrics_dir / name).is_file():
            dst = tmp / f"evaluation_{name}"
            shutil.copyfile(metrics_dir / name, dst)
            files[dst.stem] = dst
    previews = []
    if export_dir is not None and export_dir.is_dir():
        for i, p in enumerate(sorted(export_dir.rglob("*.png"))[:8]):
            dst = tmp / f"sample_preview_{i}.png"
            shutil.copyfile(p, dst)
            files[dst.stem] = dst
            previews.append(f"artifacts/{dst.name} ({p.relative_to(export_dir).as_posix()})")
    if "evaluation_preview" in files:
        previews.append("artifacts/evaluation_preview.png (generator renders of the evaluation)")
    return files, previews


# ------------------------------------------------------------------------------------------------ the stage

def run_register(model: Path, metrics_dir: Path, out_dir: Path, tracking_cfg, export_dir: Path | None = None,
                 export_cfg=None) -> dict:
    """Register ``model`` (evaluated in ``metrics_dir``, exported in ``export_dir``) and run the gate.

    Returns (and writes to ``<out_dir>/register.json``) ``{"model_name", "version", "run_id", "decision",
    "champion_version", "metrics", "reason", "reference_key", "model_uri"}``."""
    from get3d import tracking
    from get3d.schema import to_dict

    out_dir = Path(out_dir)
    cfg = tracking_cfg
    if not cfg.enabled:
        res = {"model_name": cfg.model_name, "version": None, "run_id": None, "decision": "skipped",
               "champion_version": None, "metrics": {}, "reason": "tracking.enabled is false"}
        atomic_write_json(out_dir / REGISTER_FILE, res)
        return res

    header, payload = read_generator(Path(model))
    metrics, report = read_evaluation(Path(metrics_dir), header.get("sha256"), cfg.gate_metric)
    if export_dir is not None and not Path(export_dir).is_dir():
        raise RegisterError(f"{export_dir}: export folder not found (run the export stage); nothing registered")
    if export_cfg is None:
        export_cfg = _default_export_config()
    client = tracking.connect(cfg)

    run_id = tracking.find_run(client, cfg, Path(model), "register")
    have = client.get_run(run_id).data.metrics
    if f"eval/{cfg.gate_metric}" not in have:
        tracking.log_evaluation(cfg, run_id, Path(metrics_dir), metrics, report["comparison_key"])
    if export_dir is not None:
        tracking.log_export(run_id, Path(export_dir), cfg)

    value = float(metrics[cfg.gate_metric])
    with tempfile.TemporaryDirectory() as d:
        files, previews = _card_files(Path(export_dir) if export_dir else None, Path(metrics_dir), Path(d))
        card, tags = model_card(payload, metrics, report, cfg, previews)
        (Path(d) / "model_card.md").write_text(card)
        info = tracking.log_generator_model(client, run_id, Path(model), to_dict(export_cfg), files)
    missing = tracking.model_files_missing(client, info.model_uri)
    if missing:
        raise RegisterError(f"logged model {info.model_uri} in {client.tracking_uri} lacks {missing}; "
                            "nothing registered")
    client.log_text(run_id, card, "model_card.md")

    mv = tracking.create_version(client, cfg.model_name, info, run_id, card, tags)
    version = str(mv.version)
    try:
        tracking.set_alias(client, cfg.model_name, CHALLENGER, version)
        d = promotion_gate(client, cfg, version, value, report["comparison_key"])
    except BaseException:
        log.error("register: rolling back %s version %s", cfg.model_name, version)
        tracking.delete_version(client, cfg.model_name, version)
        raise
    res = {"model_name": cfg.model_name, "version": version, "run_id": run_id, "decision": d["decision"],
           "reason": d["reason"], "champion_version": d["final_champion"],
           "metrics": {k: metrics[k] for k in CARD_METRICS if k in metrics},
           "gate": {k: d.get(k) for k in ("candidate_value", "champion_value", "improvement", "margin",
                                          "direction")} | {"metric": cfg.gate_metric},
           "reference_key": report["comparison_key"], "model_uri": f"models:/{cfg.model_name}/{version}",
           "tracking_uri": client.tracking_uri}
    atomic_write_json(out_dir / REGISTER_FILE, res)
    return res


def _default_export_config():
    from get3d.export.config import ExportConfig

    return ExportConfig()
