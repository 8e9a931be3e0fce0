"""Typed schema of ``params.yaml``: one section per stage, each a dataclass owned by its subsystem.

``load_params`` validates the whole file before any work: an unknown key, a wrong type or an out-of-range
value raises :class:`~get3d.schema.ConfigError` naming the file, the dotted key, the value and what is
allowed.  A stage reads only its section (and DVC lists only those keys in the stage's ``params``).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from get3d.schema import ConfigError, parse_section, to_dict

#: section name -> "module:Class" of its dataclass (imported lazily: each stage loads only what it needs).
SECTIONS: dict[str, str] = {
    "assets": "get3d.assets.config:AssetsConfig",
    "render": "get3d.render.config:RenderConfig",
    "model": "get3d.nn.config:ModelConfig",
    "train": "get3d.train.config:TrainConfig",
    "evaluate": "get3d.evaluate.config:EvaluateConfig",
    "export": "get3d.export.config:ExportConfig",
    "tracking": "get3d.tracking_config:TrackingConfig",
    "perf": "get3d.perf:PerfConfig",
}
TOP_LEVEL_KEYS = {"profile"}


def section_class(name: str) -> type:
    module, cls = SECTIONS[name].split(":")
    return getattr(importlib.import_module(module), cls)


@dataclass(frozen=True)
class Params:
    """The validated params file: ``sections[name]`` is that section's dataclass."""

    path: Path
    profile: str
    sections: dict[str, Any]

    def __getattr__(self, name: str) -> Any:
        sections = object.__getattribute__(self, "sections")
        if name in sections:
            return sections[name]
        raise AttributeError(name)

    def to_dict(self) -> dict:
        return {"profile": self.profile, **{k: to_dict(v) for k, v in self.sections.items()}}


def read_yaml(path: Path | str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_params(data: dict, path: Path | str = "params.yaml", only: list[str] | None = None) -> Params:
    """Validate ``data``; ``only`` restricts parsing to some sections (unknown top-level keys still fail)."""
    path = Path(path)
    allowed = set(SECTIONS) | TOP_LEVEL_KEYS
    for key in data:
        if key not in allowed:
            raise ConfigError(f"{path}: {key}: unknown section; allowed are {sorted(allowed)}")
    profile = data.get("profile", "smoke")
    if not isinstance(profile, str):
        raise ConfigError(f"{path}: profile: expected a string, got {profile!r}")
    sections = {}
    for name in only or list(SECTIONS):
        try:
            sections[name] = parse_section(section_class(name), data.get(name, {}), name)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Params(path, profile, sections)


def load_params(path: Path | str = "params.yaml", only: list[str] | None = None) -> Params:
    return parse_params(read_yaml(path), path, only)
