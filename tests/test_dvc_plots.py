"""`dvc plots show` draws the project's plots offline: the page of the committed template (.dvc/config
plots.html_template, vega inlined by scripts/plots_template.py) opened in headless Chromium with the network
blocked shows every chart with its lines; DVC's default page (CDN scripts) stays blank under the same flags."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from offline_browser import offline_chromium
from PIL import Image

from get3d.evaluate import history
from get3d.train.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
DVC = Path(sys.executable).with_name("dvc")
WINDOW = (900, 2400)


def _chromium(page: Path, profile: Path, *args):
    return offline_chromium(page, profile, *args, window=WINDOW, budget_ms=15000)


def _chart_blocks(png: Path) -> list[int]:
    """Coloured (line / legend) pixel counts of each vertically separated chart in a screenshot."""
    img = np.asarray(Image.open(png).convert("RGB")).astype(int)
    # DVC draws the workspace's lines (and legend symbol) in #945dd6; red above green excludes the blues of
    # the smooth slider, a form control below each chart
    coloured = ((img.max(-1) - img.min(-1)) > 60) & (img[..., 0] > img[..., 1] + 20)
    rows = coloured.sum(1)
    blocks, start, gap = [], None, 0
    for y, n in enumerate(rows):
        if n:
            start = y if start is None else start
            gap = 0
        elif start is not None:
            gap += 1
            if gap > 40:
                blocks.append(int(rows[start:y].sum()))
                start, gap = None, 0
    if start is not None:
        blocks.append(int(rows[start:].sum()))
    return blocks


@pytest.fixture(scope="module")
def plots_repo(tmp_path_factory):
    """A DVC project with this repository's dvc.yaml and .dvc/config, plot files written by the real writers."""
    if not (ROOT / "node_modules" / "vega" / "build" / "vega.min.js").is_file():
        pytest.skip("vega is not installed (scripts/setup.sh runs npm ci)")
    repo = tmp_path_factory.mktemp("plots") / "repo"
    repo.mkdir()
    subprocess.run([str(DVC), "init", "--no-scm", "-q"], cwd=repo, check=True)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    shutil.copy(ROOT / ".dvc" / "config", repo / ".dvc" / "config")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "plots_template.py"), "--root", str(ROOT),
                    "--out", str(repo / ".dvc" / "plots.html")], check=True, capture_output=True)
    run = RunDir(repo / "data" / "train")
    records = [{"kimg": k, "nimg": int(k * 1000), "loss/G": 2.0 - k, "loss/D": 1.0 + 0.5 * k,
                "loss/r1": 0.1 * k, "loss/sdf_reg": 0.05, "timing/sec_per_kimg": 30.0 + k}
               for k in np.linspace(0.0, 1.0, 11).tolist()]
    run.plots.mkdir(parents=True, exist_ok=True)
    run.write_plots(records)
    for kimg, fid in ((0.2, 310.0), (0.6, 290.0), (1.0, 270.0)):
        history.update_history(repo / "data" / "metrics" / history.HISTORY_FILE, kimg, {"fid": fid},
                               "key", "sha")
    return repo


def _show(repo: Path, out: str, *extra) -> Path:
    res = subprocess.run([str(DVC), "plots", "show", "-o", out, *extra], cwd=repo, capture_output=True,
                         text=True, check=False)
    assert res.returncode == 0, res.stderr
    return repo / out / "index.html"


def test_plots_page_draws_every_chart_offline(plots_repo, tmp_path):
    page = _show(plots_repo, "dvc_plots")
    text = page.read_text()
    assert not re.search(r"<script[^>]+src=", text), "the page must not load scripts from anywhere"
    titles = re.findall(r"^  - (.+):$", (ROOT / "dvc.yaml").read_text().split("\nplots:")[1], re.MULTILINE)
    assert len(titles) == 4 and all(t in text for t in titles)

    dom = _chromium(page, tmp_path / "dom", "--dump-dom").stdout
    assert dom.count('class="vega-embed') == 4, dom[-2000:]
    assert dom.count("<canvas") == 4, "vega-embed drew no canvas: the inlined scripts did not run"
    shot = tmp_path / "plots.png"
    _chromium(page, tmp_path / "shot", f"--screenshot={shot}")
    blocks = _chart_blocks(shot)
    assert len(blocks) == 4, f"charts with coloured marks (top to bottom): {blocks}"
    assert min(blocks) > 200, f"each chart draws its lines: coloured pixels per chart {blocks}"


def test_default_cdn_page_is_blank_offline(plots_repo, tmp_path):
    """The failure this template fixes (and proof the browser above had no network)."""
    default = tmp_path / "default.html"
    default.write_text("<html><head>{scripts}</head><body>{plot_divs}</body></html>")
    page = _show(plots_repo, "dvc_plots_cdn", "--html-template", str(default))
    assert "cdn.jsdelivr.net" in page.read_text()
    dom = _chromium(page, tmp_path / "dom", "--dump-dom").stdout
    assert "<body" in dom and "<canvas" not in dom
