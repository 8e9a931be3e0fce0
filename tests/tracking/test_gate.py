"""The promotion gate: pure decisions, and on a real MLflow registry (SQLite store) incl. racing registrations."""
from __future__ import annotations

import threading

import pytest
from tracking_helpers import tracking_config

from get3d.register import CHAMPION, decide, promotion_gate, reconcile

pytest.importorskip("mlflow")


@pytest.mark.parametrize("value,champ,direction,margin,expected", [
    (30.0, None, "minimize", 0.0, "promoted"),
    (30.0, {"version": "1", "value": 40.0, "key": "k"}, "minimize", 0.0, "promoted"),
    (39.8, {"version": "1", "value": 40.0, "key": "k"}, "minimize", 0.5, "rejected"),   # inside the margin
    (41.0, {"version": "1", "value": 40.0, "key": "k"}, "minimize", 0.0, "rejected"),
    (40.0, {"version": "1", "value": 40.0, "key": "k"}, "minimize", 0.0, "rejected"),   # a tie is no improvement
    (60.0, {"version": "1", "value": 50.0, "key": "k"}, "maximize", 5.0, "promoted"),
    (10.0, {"version": "1", "value": 40.0, "key": "other"}, "minimize", 0.0, "not_compared"),
])
def test_decide(value, champ, direction, margin, expected):
    d = decide(value, "k", champ, direction, margin)
    assert d["decision"] == expected and d["promote"] == (expected == "promoted")
    if expected == "not_compared":
        assert "different reference statistics" in d["reason"] and "other" in d["reason"]


def _versions(client, name, n):
    """n real versions of one registered model (their source: an empty folder; the gate reads only tags)."""
    client.create_registered_model(name)
    return [str(client.create_model_version(name, source=f"file:///tmp/get3d-gate-src/{i}").version)
            for i in range(n)]


def _champion(client, name):
    return str(client.get_model_version_by_alias(name, CHAMPION).version)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    from get3d.tracking import connect

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = tracking_config(tmp_path)
    return cfg, connect(cfg)


def test_gate_worse_never_better_does_other_reference_not_compared(registry):
    cfg, client = registry
    v1, v2, v3, v4 = _versions(client, cfg.model_name, 4)
    assert promotion_gate(client, cfg, v1, 50.0, "ref-a")["decision"] == "promoted"
    d = promotion_gate(client, cfg, v2, 55.0, "ref-a")
    assert d["decision"] == "rejected" and _champion(client, cfg.model_name) == v1
    tags = client.get_model_version(cfg.model_name, v2).tags
    assert tags["get3d.gate.decision"] == "rejected" and float(tags["get3d.gate.champion_value"]) == 50.0
    assert float(tags["get3d.gate.value"]) == 55.0 and tags["get3d.gate.champion_version"] == v1
    d = promotion_gate(client, cfg, v3, 12.0, "ref-b")   # much better, but measured on other reference statistics
    assert d["decision"] == "not_compared" and _champion(client, cfg.model_name) == v1
    assert "different reference statistics" in client.get_model_version(cfg.model_name, v3).tags["get3d.gate.reason"]
    assert promotion_gate(client, cfg, v4, 42.0, "ref-a")["decision"] == "promoted"
    assert _champion(client, cfg.model_name) == v4


def test_reconcile_repairs_a_lost_race(registry):
    """What two unsynchronised gates can leave behind (both promoted, the worse one set last) is repaired by
    the re-check every gate runs after setting the alias."""
    cfg, client = registry
    name = cfg.model_name
    good, bad = _versions(client, name, 2)
    for v, value in ((good, 30.0), (bad, 45.0)):
        for k, t in {"get3d.gate.decision": "promoted", "get3d.gate.value": repr(value),
                     "get3d.reference_key": "ref"}.items():
            client.set_model_version_tag(name, v, k, t)
    client.set_registered_model_alias(name, CHAMPION, bad)
    assert reconcile(client, cfg) == good
    assert _champion(client, name) == good
    assert client.get_model_version(name, bad).tags["get3d.gate.superseded_by"] == good


def test_racing_registrations_end_with_the_best_champion(registry, monkeypatch):
    """Six gates at once; reading the champion is slowed down so that, without the lock and the re-check, the
    interleavings that leave a worse version as champion are the common case."""
    import time

    from get3d import tracking

    read = tracking.version_by_alias

    def slow_read(*args, **kw):
        mv = read(*args, **kw)
        time.sleep(0.2)
        return mv

    monkeypatch.setattr(tracking, "version_by_alias", slow_read)
    cfg, client = registry
    name = cfg.model_name
    values = [48.0, 31.0, 44.0, 37.0, 52.0, 33.0]
    versions = _versions(client, name, len(values) + 1)
    promotion_gate(client, cfg, versions[0], 50.0, "ref")
    start = threading.Barrier(len(values))
    errors = []

    def register(v, value):
        try:
            start.wait()
            promotion_gate(client, cfg, v, value, "ref")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(v, x)) for v, x in zip(versions[1:], values)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    best = versions[1 + values.index(min(values))]
    assert _champion(client, name) == best
    worse = [v for v, x in zip(versions[1:], values) if x > 50.0]
    for v in worse:
        assert client.get_model_version(name, v).tags["get3d.gate.decision"] == "rejected"
