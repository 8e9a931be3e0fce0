"""``module.path.ATTR=VALUE`` switches for benchmark variants (module-level kernel/format policies)."""
from __future__ import annotations

import importlib


def set_switch(spec: str):
    """Set ``module.path.ATTR`` to ``VALUE`` (converted to the current value's type; booleans from
    true/false/1/0). Returns ``(module, attr, previous value)`` so a caller can restore it."""
    if "=" not in spec or "." not in spec.split("=", 1)[0]:
        raise ValueError(f"switch {spec!r} must look like module.path.ATTR=VALUE")
    target, value = spec.split("=", 1)
    mod_name, attr = target.rsplit(".", 1)
    mod = importlib.import_module(mod_name)
    if not hasattr(mod, attr):
        raise ValueError(f"switch {spec!r}: {mod_name} has no attribute {attr!r}")
    old = getattr(mod, attr)
    setattr(mod, attr, value.lower() in ("1", "true") if isinstance(old, bool) else type(old)(value))
    return mod, attr, old


def apply_switches(spec: str | None) -> list:
    """Apply ``+``-joined switches; returns undo callables, to be called in reverse order."""
    undo = []
    for item in (spec.split("+") if spec else []):
        mod, attr, old = set_switch(item)
        undo.append(lambda mod=mod, attr=attr, old=old: setattr(mod, attr, old))
    return undo
