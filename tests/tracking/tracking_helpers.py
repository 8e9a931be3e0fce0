"""Helpers of the tracking tests: a tracking config on a throw-away store, the train test helpers."""
from __future__ import annotations

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
for sub in ("train", "evaluate"):
    if str(TESTS / sub) not in sys.path:
        sys.path.insert(0, str(TESTS / sub))


def tracking_config(root: Path, uri: str | None = None, **kw):
    from get3d.schema import parse_section
    from get3d.tracking_config import TrackingConfig

    values = {"uri": uri or f"sqlite:///{root / 'mlflow.db'}", "artifact_location": str(root / "artifacts"),
              "experiment": "test", "model_name": "gen-test", **kw}
    return parse_section(TrackingConfig, values, "tracking")
