"""The offline gallery opens in headless Chromium with the network blocked, and every viewer draws its mesh."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

WINDOW = (1400, 1000)


def _chromium(page, profile, *args):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs the Debian package)")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", "--disable-sync", f"--user-data-dir={profile}", "--allow-file-access-from-files",
           # no network: every host resolves to nothing and any proxied request goes nowhere
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
           "--virtual-time-budget=20000", f"--window-size={WINDOW[0]},{WINDOW[1]}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def test_gallery_draws_every_mesh_offline(export_run, tmp_path):
    out = export_run["out"]
    page = out / "gallery.html"
    text = page.read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", text), "the page must not load anything from the internet"
    glbs = [m for m in export_run["result"]["samples"]["meshes"] if not m["empty"]]
    assert text.count("<model-viewer ") == len(glbs) and "seed 0" in html.unescape(text)

    dom = _chromium(page, tmp_path / "p1", "--dump-dom")
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body, dom.stderr[-2000:]
    attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', body.group(0)))
    assert "error" not in attrs, attrs
    assert int(attrs.get("loaded", 0)) == len(glbs), f"viewers that loaded their GLB: {attrs}"
    rects = json.loads(html.unescape(attrs["rects"]))

    shot = tmp_path / "gallery.png"
    res = _chromium(page, tmp_path / "p2", f"--screenshot={shot}")
    assert shot.is_file(), res.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    for (x, y, w, h), m in zip(rects, glbs):
        assert x + w <= img.shape[1] and y + h <= img.shape[0], "viewer outside the screenshot"
        crop = img[int(y) + 8:int(y + h) - 8, int(x) + 8:int(x + w) - 8]   # inside the viewer, off its border
        drawn = (np.abs(crop - 255).max(-1) > 12).mean()                    # viewer background is white
        print(f"{m['name']}: {100 * drawn:.1f}% of the viewer drawn")
        assert drawn > 0.01, f"{m['name']}: viewer shows (almost) only background"
