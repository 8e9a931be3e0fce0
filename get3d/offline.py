"""Nothing phones home: telemetry of the tools we drive is switched off before any of them is imported."""
import os

_DEFAULTS = {
    "DO_NOT_TRACK": "true",                  # Prefect client events; MLflow reads it too (must be "true")
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
}


def apply() -> None:
    for key, value in _DEFAULTS.items():
        os.environ.setdefault(key, value)
