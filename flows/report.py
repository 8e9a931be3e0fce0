"""The retraining report (markdown): what changed, the challenger's metrics against the champion, the
gate's decision and links to the MLflow run and model version."""
from __future__ import annotations

import math

LOWER_IS_BETTER = ("fid", "kid", "mmd", "lfd", "cd")


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def mlflow_links(tracking_uri: str | None, register: dict) -> dict:
    """UI links for the run and the model version (only for an http(s) tracking server)."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return {}
    base = tracking_uri.rstrip("/")
    links = {}
    if register.get("run_id") and register.get("experiment_id"):
        links["run"] = f"{base}/#/experiments/{register['experiment_id']}/runs/{register['run_id']}"
    if register.get("model_name") and register.get("version"):
        links["model_version"] = f"{base}/#/models/{register['model_name']}/versions/{register['version']}"
    return links


def metrics_table(challenger: dict, champion: dict | None, challenger_label: str = "challenger",
                  champion_label: str = "champion") -> list[str]:
    keys = sorted(k for k, v in challenger.items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool) and not k.endswith("_time_s"))
    rows = [f"| metric | {challenger_label} | {champion_label} | better |", "|---|---:|---:|---|"]
    for k in keys:
        c, ch = challenger.get(k), (champion or {}).get(k)
        lower = any(k.startswith(p) for p in LOWER_IS_BETTER)
        better = "–" if ch is None or c is None else ("lower" if lower else "higher")
        rows.append(f"| `{k}` | {_fmt(c)} | {_fmt(ch)} | {better} |")
    return rows


def retraining_markdown(*, changes: dict, dataset: dict, train: dict, metrics: dict, register: dict,
                        tracking_uri: str | None = None) -> str:
    """The whole report as markdown."""
    retrained = bool(train.get("ran"))
    lines = ["# GET3D retraining", ""]
    lines.append(f"- asset changes: {len(changes.get('added', []))} added, {len(changes.get('changed', []))} "
                 f"changed, {len(changes.get('removed', []))} removed (of {changes.get('total', '?')} items)")
    lines.append(f"- render: {dataset.get('rendered', 0)} object(s) rendered, {dataset.get('reused', 0)} reused; "
                 f"dataset `{str(dataset.get('dataset_hash', ''))[:12]}`")
    lines.append(f"- train: {train.get('status') if retrained else 'up to date (inputs unchanged, reused)'}")
    lines += ["", "## Metrics", ""]
    lines += metrics_table(metrics, register.get("champion_metrics"),
                           f"challenger (v{register.get('version')})",
                           f"champion (v{register['compared_with']})" if register.get("compared_with")
                           else "champion (none yet)")
    lines += ["", "## Decision", ""]
    if register.get("ran", True):
        lines.append(f"**{register.get('decision', 'unknown')}**"
                     + (f" — {register['reason']}" if register.get("reason") else ""))
    else:
        lines.append(f"**no new challenger** — inputs unchanged, nothing registered (version "
                     f"{register.get('version')} was {register.get('decision')}: {register.get('reason')})")
    lines.append("")
    lines.append(f"- model `{register.get('model_name')}` version {register.get('version')} "
                 f"(MLflow run `{register.get('run_id')}`)")
    champion = register.get("current_champion", register.get("champion_version"))
    lines.append(f"- champion after this run: version {champion}")
    links = mlflow_links(tracking_uri, register)
    if links:
        lines.append("")
        lines += [f"- [{name.replace('_', ' ')} in MLflow]({url})" for name, url in links.items()]
    return "\n".join(lines) + "\n"
