"""dvc.yaml's deps cover the code each stage imports (static import closure from the CLI's stage functions)."""
from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("dvc_deps", REPO / "scripts" / "dvc_deps.py")
dvc_deps = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("dvc_deps", dvc_deps)  # dataclasses look their module up
_spec.loader.exec_module(dvc_deps)


def _stages(path=REPO / "dvc.yaml") -> dict:
    return yaml.safe_load(Path(path).read_text())["stages"]


def _code_deps(stage: dict) -> list[str]:
    return [d for d in stage["deps"] if isinstance(d, str) and d.startswith("get3d")]


def test_every_stage_dep_list_covers_its_import_closure():
    reports = dvc_deps.check(REPO / "dvc.yaml")
    assert {r.stage for r in reports} == set(_stages())
    problems = {r.stage: (r.missing, r.unused) for r in reports if r.missing or r.unused}
    assert not problems, f"dvc.yaml deps out of date (run `python scripts/dvc_deps.py`): {problems}"


def test_closures_contain_what_the_stages_really_run():
    files = {name: {str(f.relative_to(REPO)) for f in dvc_deps.stage_files(" ".join(st["cmd"].split()))}
             for name, st in _stages().items()}
    assert "get3d/render/stage.py" in files["render"] and "get3d/dataset/format.py" in files["render"]
    assert "get3d/train/loop.py" in files["train"] and "get3d/nn/generator.py" in files["train"]
    assert {"get3d/raster/render.py", "get3d/assets/stage.py"} <= files["reference"]
    assert {"get3d/train/models.py", "get3d/cameras.py", "get3d/io.py"} <= files["evaluate"]
    assert not any(f.startswith(("get3d/nn/", "get3d/train/")) for f in files["reference"])


def test_removing_any_code_dep_is_caught():
    """Every listed code dep is needed: without it some imported file is uncovered."""
    for name, st in _stages().items():
        files = dvc_deps.stage_files(" ".join(st["cmd"].split()))
        deps = [d for d in st["deps"] if isinstance(d, str)]
        for dep in _code_deps(st):
            rest = [d for d in deps if d != dep]
            assert any(not dvc_deps.covered(f, rest, REPO) for f in files), f"{name}: {dep} is never needed"


def test_modified_dvc_yaml_fails_the_check(tmp_path):
    data = yaml.safe_load((REPO / "dvc.yaml").read_text())
    data["stages"]["reference"]["deps"].remove("get3d/raster")
    data["stages"]["evaluate"]["deps"].remove("get3d/train")
    data["stages"]["assets"]["deps"].append("get3d/render")
    path = tmp_path / "dvc.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    reports = {r.stage: r for r in dvc_deps.check(path)}
    assert "get3d/raster/render.py" in reports["reference"].missing
    assert all(f.startswith("get3d/raster/") for f in reports["reference"].missing)
    assert "get3d/train/models.py" in reports["evaluate"].missing
    assert reports["assets"].unused == ["get3d/render"] and not reports["assets"].missing
    assert not reports["train"].missing and not reports["render"].missing
    assert dvc_deps.main([str(path)]) == 1


def test_closure_follows_lazy_and_relative_imports(tmp_path):
    """A toy package: the CLI function imports lazily; a lazy import inside a function body is followed too."""
    pkg = tmp_path / "get3d"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "cli.py": """
            def command(name, help):
                return lambda f: (lambda g: g)
            @command("x", "help")(None)
            def run_x(args):
                from get3d.sub.stage import go
                return go()
            @command("y", "help")(None)
            def run_y(args):
                import get3d.other
            """,
        "sub/__init__.py": "",
        "sub/stage.py": """
            def go():
                from .helper import h
                return h()
            """,
        "sub/helper.py": """
            import importlib
            def h():
                return importlib.import_module("get3d.dyn")
            """,
        "dyn.py": "import os\n",
        "other.py": "",
        "unused.py": "",
    }
    for rel, text in files.items():
        (pkg / rel).write_text(textwrap.dedent(text))
    got = {str(f.relative_to(tmp_path)) for f in dvc_deps.stage_files("get3d x --flag", tmp_path)}
    assert got == {"get3d/__init__.py", "get3d/sub/__init__.py", "get3d/sub/stage.py", "get3d/sub/helper.py",
                   "get3d/dyn.py"}
    with pytest.raises(KeyError, match="'z'"):
        dvc_deps.stage_files("get3d z", tmp_path)
    with pytest.raises(ValueError, match="not a `get3d <stage>` call"):
        dvc_deps.stage_files("python train.py", tmp_path)

