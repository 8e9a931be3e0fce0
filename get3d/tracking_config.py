"""Experiment tracking and model registry knobs (section ``tracking`` of params.yaml).

The default store is a local SQLite database plus an artifact folder inside the project (``mlflow/``, ignored
by git), so ``dvc repro`` tracks with no server.  ``MLFLOW_TRACKING_URI`` in the environment overrides ``uri``
(e.g. ``http://127.0.0.1:5000`` for a shared ``mlflow server``).
"""
from __future__ import annotations

from dataclasses import dataclass

from get3d.schema import ConfigError, spec


@dataclass(frozen=True)
class TrackingConfig:
    enabled: bool = spec(True, help="log runs and register models with MLflow (false: every stage skips it)")
    uri: str = spec("sqlite:///mlflow/mlflow.db",
                    help="tracking + registry URI: sqlite:///<path> (relative to the working directory), "
                         "http(s)://host:port of an mlflow server; MLFLOW_TRACKING_URI overrides it")
    artifact_location: str = spec("mlflow/artifacts",
                                  help="artifact folder of a new experiment in a local store (a server "
                                       "decides its own: --artifacts-destination)")
    experiment: str = spec("get3d", help="experiment every stage logs to")
    model_name: str = spec("get3d-generator", help="registered model name")
    gate_metric: str = spec("fid", help="metrics.json key the promotion gate compares")
    gate_direction: str = spec("minimize", choices=("minimize", "maximize"),
                               help="minimize: lower is better (FID, KID, MMD); maximize: higher (COV)")
    gate_min_margin: float = spec(0.0, min=0.0,
                                  help="a challenger must beat the champion by more than this (metric units)")
    http_timeout_s: float = spec(10.0, min=0.1, max=600.0, help="per-request timeout against a tracking server")
    http_retries: int = spec(2, min=0, max=20, help="retries of a failed request against a tracking server")

    def validate(self, prefix: str = "tracking") -> None:
        for key in ("experiment", "model_name", "gate_metric", "uri"):
            if not str(getattr(self, key)).strip():
                raise ConfigError(f"{prefix}.{key}: must not be empty")
        if any(c in self.model_name for c in "/@:"):
            raise ConfigError(f"{prefix}.model_name: {self.model_name!r} may not contain '/', '@' or ':' "
                              "(it becomes part of models:/<name>@<alias>)")
