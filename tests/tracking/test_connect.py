"""Connecting to a store: a long-lived process follows its configuration, not the first store it touched."""
from __future__ import annotations

import os

from tracking_helpers import tracking_config


def test_each_connect_uses_its_own_store(tmp_path, monkeypatch):
    from get3d import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = tracking_config(tmp_path / "a")
    second = tracking_config(tmp_path / "b")
    assert tracking.connect(first).tracking_uri.endswith("a/mlflow.db")
    assert "MLFLOW_TRACKING_URI" not in os.environ  # mlflow exports it; the adapter must not leave it behind
    assert tracking.resolve_uri(second).endswith("b/mlflow.db")
    assert tracking.connect(second).tracking_uri.endswith("b/mlflow.db")


def test_the_users_variable_still_wins(tmp_path, monkeypatch):
    from get3d import tracking

    chosen = f"sqlite:///{tmp_path / 'env' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", chosen)
    tracking.connect(tracking_config(tmp_path / "cfg"))
    assert os.environ["MLFLOW_TRACKING_URI"] == chosen
    assert tracking.resolve_uri(tracking_config(tmp_path / "other")) == chosen
