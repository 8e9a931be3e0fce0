"""The ``perf`` section: the only home of code-path switches, validated, applied and recorded by the stages."""
from __future__ import annotations

import ast
import dataclasses
import json
import sys
from pathlib import Path

import pytest
import yaml

from get3d import perf
from get3d.config import parse_params
from get3d.schema import ConfigError, to_dict

REPO = Path(__file__).resolve().parents[1]

#: The defaults: the measured-fastest choices (docs/performance.md).  A change of default is deliberate: it is made
#: here, in params.yaml and the profiles, and in the performance table, with the measurement behind it.
PREVIOUS_DEFAULTS = {"merged_d_pass": True, "upsample": "triton", "modulated_fc": "input",
                     "fold_downsample_conv": "never", "synthesis_epilogue": True, "point_mlp_fused": True,
                     "point_mlp_precision": "tf32x3", "fused_modconv": "never", "triplane_sampler": "triton",
                     "lfd_sweep": "triton", "lfd_algorithms": "auto", "marching_kernel": "torch", "paired_mapping": False, "shade_graph": False, "padded_surface": False,
                     "surface_capacity": 65536, "pixel_capacity": 0.5, "fit_capacity": True,
                     "modulation_kernels": "triton", "fir_filter": "triton",
                     "recompute_geometry_mlp": False, "fused_blur_epilogue": False}


def test_defaults_are_what_the_code_ran_before():
    assert to_dict(perf.PerfConfig()) == PREVIOUS_DEFAULTS
    for name in ("params.yaml", "profiles/paper.yaml"):
        assert parse_params(yaml.safe_load((REPO / name).read_text()), name).perf == perf.PerfConfig(), name


def test_bad_values_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"perf.upsample: 'fast' is not allowed; choose one of"):
        parse_params({"perf": {"upsample": "fast"}})
    with pytest.raises(ConfigError, match=r"perf.turbo: unknown key"):
        parse_params({"perf": {"turbo": True}})
    with pytest.raises(ConfigError, match=r"perf.merged_d_pass: expected true/false"):
        perf.parse_overrides(["merged_d_pass=maybe"])
    assert perf.parse_overrides(["lfd_sweep=torch", "merged_d_pass=false"]) == perf.PerfConfig(
        lfd_sweep="torch", merged_d_pass=False)


def test_using_and_applied_restore_the_previous_choices():
    before = perf.active()
    with perf.using(upsample="reference") as inside:
        assert perf.active() is inside and inside.upsample == "reference"
        with perf.applied(None):
            assert perf.active() is inside
    assert perf.active() is before
    with pytest.raises(RuntimeError), perf.applied(perf.PerfConfig(fused_modconv="always")):
        assert perf.active().fused_modconv == "always"
        raise RuntimeError
    assert perf.active() is before


# ------------------------------------------------------------------------------------ no switch outside perf

def _toggle_reads(tree: ast.Module) -> set[str]:
    """Names read as a toggle: in a condition (if / while / ternary / and-or / not) or compared with a literal."""
    out: set[str] = set()

    def names(node):
        return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and n.id.isupper()}

    for node in ast.walk(tree):
        if isinstance(node, (ast.If, ast.While, ast.IfExp, ast.Assert)):
            out |= {node.test.id} if isinstance(node.test, ast.Name) else set()
        elif isinstance(node, ast.BoolOp) or (isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not)):
            out |= {v.id for v in (node.values if isinstance(node, ast.BoolOp) else [node.operand])
                    if isinstance(v, ast.Name)}
        elif isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            if any(isinstance(s, ast.Constant) and (s.value is None or isinstance(s.value, (str, bool))) for s in sides):
                out |= set().union(*(names(s) for s in sides if isinstance(s, ast.Name)))
    return out


def module_switches(path: Path) -> list[str]:
    """UPPER_CASE module globals bound to a bool, string or None literal that the module reads as a toggle (not
    the module's own run-time state, i.e. names it rebinds through ``global``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    state = {n for g in ast.walk(tree) if isinstance(g, ast.Global) for n in g.names}
    flags = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        value = getattr(node, "value", None)
        if isinstance(value, ast.Constant) and (value.value is None or isinstance(value.value, (bool, str))):
            flags |= {t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()}
    return sorted((flags - state) & _toggle_reads(tree))


def test_no_module_level_switch_outside_perf():
    found = {str(p.relative_to(REPO)): module_switches(p) for p in sorted((REPO / "get3d").rglob("*.py"))
             if p != REPO / "get3d" / "perf.py"}
    found = {k: v for k, v in found.items() if v}
    assert not found, f"module-level switches outside get3d/perf.py (add a perf field instead): {found}"


def test_the_switch_scan_finds_switches(tmp_path):
    src = tmp_path / "m.py"
    src.write_text('FAST = True\nMODE = "a"\nNAME = "label"\nLIMIT = 3\n_LOADED = False\nSLOW = False\nAUTO = None\n'
                   'def f(x):\n    global _LOADED\n    _LOADED = True\n    if FAST:\n        x += 1\n'
                   '    y = 2 if MODE == "a" else 3 if AUTO is None else 4\n    z = x and not SLOW\n'
                   '    if not x.startswith(NAME) or _LOADED:\n        return z\n'
                   '    return f"{NAME}{LIMIT}" if x < LIMIT else y\n')
    assert module_switches(src) == ["AUTO", "FAST", "MODE", "SLOW"]


# ------------------------------------------------------------------------------------ applied and recorded

def test_train_stage_applies_and_records_perf(tmp_path):
    sys.path.insert(0, str(REPO / "tests" / "train"))
    from train_helpers import tiny_configs, write_tiny_dataset

    from get3d.train.stage import run_train_stage

    data = write_tiny_dataset(tmp_path / "tiny.h5")
    cm, ct = tiny_configs(total_kimg=0.004)
    chosen = perf.PerfConfig(merged_d_pass=False, upsample="reference", lfd_sweep="torch")
    seen = []
    from get3d.train.loop import Hooks
    before = perf.active()
    run_train_stage(cm, ct, data, tmp_path / "run", tmp_path / "g.pt",
                    Hooks(on_progress=lambda s: seen.append(perf.active())), perf_cfg=chosen)
    assert seen and all(p == chosen for p in seen)          # in force while training
    assert perf.active() is before                           # and restored after
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["perf"]
    assert recorded == dataclasses.asdict(chosen) and set(recorded) == set(PREVIOUS_DEFAULTS)
