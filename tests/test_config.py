import subprocess
import sys

import pytest
import yaml

from get3d.config import SECTIONS, load_params, parse_params, read_yaml
from get3d.schema import ConfigError


def test_repo_params_validate(repo_root):
    params = load_params(repo_root / "params.yaml")
    assert params.profile == "smoke"
    assert set(params.sections) == set(SECTIONS)


def test_paper_profile_validates(repo_root):
    params = load_params(repo_root / "profiles" / "paper.yaml")
    assert params.profile == "paper"


@pytest.mark.parametrize("mutate, fragment", [
    (lambda d: d["assets"].__setitem__("colour", 1), "assets.colour: unknown key"),
    (lambda d: d["assets"].__setitem__("count", "many"), "assets.count: expected an integer, got str 'many'"),
    (lambda d: d["assets"].__setitem__("count", -4), "assets.count: -4 is below the minimum 1"),
    (lambda d: d.__setitem__("rendr", {}), "rendr: unknown section"),
    (lambda d: d["assets"].__setitem__("split", [0.5, 0.5, 0.5]), "assets.split: fractions"),
])
def test_bad_params_fail_naming_the_key(repo_root, tmp_path, mutate, fragment):
    data = read_yaml(repo_root / "params.yaml")
    mutate(data)
    with pytest.raises(ConfigError) as err:
        parse_params(data, tmp_path / "params.yaml")
    assert fragment in str(err.value)
    assert "params.yaml" in str(err.value)


def test_cli_fails_fast_before_any_work(repo_root, tmp_path):
    data = read_yaml(repo_root / "params.yaml")
    data["assets"]["count"] = -1
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(data))
    out = tmp_path / "assets"
    proc = subprocess.run([sys.executable, "-m", "get3d.cli", "assets", "--params", str(bad), "--out", str(out)],
                          capture_output=True, text=True, cwd=repo_root)
    assert proc.returncode == 2
    assert "assets.count: -1 is below the minimum 1" in proc.stderr
    assert not out.exists()


def test_every_stage_has_help(repo_root):
    from get3d.cli import COMMANDS

    for name in COMMANDS:
        proc = subprocess.run([sys.executable, "-m", "get3d.cli", name, "--help"], capture_output=True, text=True,
                              cwd=repo_root)
        assert proc.returncode == 0 and "usage: get3d" in proc.stdout, name
