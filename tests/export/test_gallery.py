"""The offline gallery opens in headless Chromium with the network blocked, and every viewer draws its mesh."""
from __future__ import annotations

import html
import json
import re

import numpy as np
import pytest
from offline_browser import offline_chromium
from PIL import Image

WINDOW = (1400, 1000)


def _chromium(page, profile, *args, budget: int = 20000):
    return offline_chromium(page, profile, *args, window=WINDOW, budget_ms=budget, allow_file_access=True)


def test_gallery_draws_every_mesh_offline(export_run, tmp_path):
    if not export_run["cfg"].gallery:
        pytest.skip("the gallery's viewer script is not installed (scripts/setup.sh runs npm ci)")
    out = export_run["out"]
    page = out / "gallery.html"
    text = page.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the page must not load anything from the internet"
    glbs = [m for m in export_run["result"]["samples"]["meshes"] if not m["empty"]]
    assert text.count("<model-viewer ") == len(glbs) and "seed 0" in html.unescape(text)

    # Software WebGL on a loaded 2-core machine can be slow: a run that has not finished is retried with more
    # (virtual) time; what is checked does not change.
    for attempt, budget in enumerate((20000, 40000, 80000)):
        dom = _chromium(page, tmp_path / f"dom{attempt}", "--dump-dom", budget=budget)
        body = re.search(r"<body[^>]*>", dom.stdout)
        assert body, dom.stderr[-2000:]
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))
        assert "error" not in attrs, attrs
        if int(attrs.get("loaded", 0)) == len(glbs):
            break
    assert int(attrs.get("loaded", 0)) == len(glbs), f"viewers that loaded their GLB: {attrs}"
    rects = json.loads(html.unescape(attrs["rects"]))

    for attempt, budget in enumerate((20000, 40000, 80000)):
        shot = tmp_path / f"gallery{attempt}.png"
        res = _chromium(page, tmp_path / f"shot{attempt}", f"--screenshot={shot}", budget=budget)
        assert shot.is_file(), res.stderr[-2000:]
        img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
        drawn = {}
        for (x, y, w, h), m in zip(rects, glbs):
            assert x + w <= img.shape[1] and y + h <= img.shape[0], "viewer outside the screenshot"
            crop = img[int(y) + 8:int(y + h) - 8, int(x) + 8:int(x + w) - 8]   # inside the viewer, off its border
            drawn[m["name"]] = (np.abs(crop - 255).max(-1) > 12).mean()        # viewer background is white
        print(f"attempt {attempt}: " + ", ".join(f"{k} {100 * v:.1f}% drawn" for k, v in drawn.items()))
        if all(v > 0.01 for v in drawn.values()):
            break
    for name, v in drawn.items():
        assert v > 0.01, f"{name}: viewer shows (almost) only background"
