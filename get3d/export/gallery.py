"""``gallery.html``: one static page per export folder showing every GLB in an interactive 3D viewer
(``@google/model-viewer``, vendored from npm and copied next to the page), with its turntable and seeds.

Nothing is loaded from the internet: the viewer script, the GLBs and the turntables are files beside the page
(the viewer's ``neutral`` environment is generated in the browser).  Opened from disk it works in browsers that
allow ``file://`` fetches (Chromium needs ``--allow-file-access-from-files``); served by any static file server
(``python -m http.server``) it works everywhere.
"""
from __future__ import annotations

import html
import os
import shutil
from pathlib import Path

from get3d.io import atomic_write_text

GALLERY_FILE = "gallery.html"
VIEWER_JS = "model-viewer-umd.min.js"
VIEWER_NPM_PATH = Path("node_modules") / "@google" / "model-viewer" / "dist" / VIEWER_JS
VIEWER_BACKGROUND = "#ffffff"
VIEWER_SIZE = 320


class GalleryError(RuntimeError):
    """The gallery cannot be written (e.g. the vendored viewer script is missing)."""


def viewer_script() -> Path:
    """The vendored model-viewer bundle: ``$GET3D_MODEL_VIEWER_JS``, else ``node_modules`` of the project (or of
    the current folder), as installed by ``npm ci`` (scripts/setup.sh)."""
    env = os.environ.get("GET3D_MODEL_VIEWER_JS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / VIEWER_NPM_PATH, Path.cwd() / VIEWER_NPM_PATH]
    for c in candidates:
        if c.is_file():
            return c
    raise GalleryError(f"model-viewer script not found (looked in {', '.join(str(c) for c in candidates)}); run "
                       "`npm ci` in the project (scripts/setup.sh does) or set GET3D_MODEL_VIEWER_JS")


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<script src="{js}"></script>
<style>
  body {{ margin: 0; padding: 16px; font-family: sans-serif; background: #2b2b2b; color: #eee; }}
  h1 {{ font-size: 18px; margin: 0 0 12px 0; }}
  .cards {{ display: flex; flex-wrap: wrap; gap: 16px; }}
  .card {{ background: #3a3a3a; padding: 8px; border-radius: 6px; width: {size}px; }}
  model-viewer {{ width: {size}px; height: {size}px; background-color: {bg}; --poster-color: {bg}; }}
  .turntable {{ width: {size}px; height: auto; display: block; margin-top: 6px; }}
  .meta {{ font-size: 13px; margin-top: 4px; }}
  .meta a {{ color: #9cf; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="meta">{summary}</p>
<div class="cards">
{cards}
</div>
<script>
  // Marks the page ready (and records each viewer's box) once every model has loaded: for headless checks.
  const viewers = Array.from(document.querySelectorAll("model-viewer"));
  let loaded = 0;
  const done = () => {{
    document.body.dataset.rects = JSON.stringify(viewers.map(v => {{
      const r = v.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; }}));
    document.body.dataset.loaded = String(loaded);
  }};
  viewers.forEach(v => v.addEventListener("load", () => {{ loaded += 1; done(); }}));
  viewers.forEach(v => v.addEventListener("error", e => {{ document.body.dataset.error = String(e.detail && e.detail.type); }}));
  done();
</script>
</body>
</html>
"""

_CARD = """<div class="card" id="{name}">
  <model-viewer src="{glb}" alt="{name}" camera-controls touch-action="pan-y" environment-image="neutral"
    shadow-intensity="0" interaction-prompt="none" camera-orbit="{orbit}" field-of-view="{fov}deg"></model-viewer>
  {turntable}
  <div class="meta">{label} &middot; {faces} faces &middot; {links}</div>
</div>"""


def write_gallery(out_dir: Path, samples: list[dict], turntables: dict, title: str, summary: str = "",
                  camera_orbit: str = "45deg 70deg auto", fov_deg: float = 49.13) -> Path:
    """Copy the viewer script next to the page and write ``gallery.html`` listing the non-empty samples."""
    out_dir = Path(out_dir)
    js = viewer_script()
    dst = out_dir / VIEWER_JS
    if not dst.is_file() or dst.stat().st_size != js.stat().st_size:
        tmp = out_dir / f".{VIEWER_JS}.tmp"
        shutil.copyfile(js, tmp)
        os.replace(tmp, dst)
    cards = []
    for m in samples:
        if m.get("empty") or not m.get("glb"):
            continue
        name = m["name"]
        label = (f"seed {m['geo_seed']}" if m["geo_seed"] == m["tex_seed"]
                 else f"geometry seed {m['geo_seed']}, texture seed {m['tex_seed']}")
        tt = turntables.get(name, {})
        anim = tt.get("gif") or tt.get("png")
        turn = (f'<img class="turntable" src="{html.escape(_rel(anim, out_dir))}" alt="turntable of {name}">'
                if anim else "")
        links = [f'<a href="{html.escape(_rel(m[k], out_dir))}">{k.upper()}</a>' for k in ("glb", "obj", "mp4")
                 if m.get(k)]
        if tt.get("mp4"):
            links.append(f'<a href="{html.escape(_rel(tt["mp4"], out_dir))}">MP4</a>')
        cards.append(_CARD.format(name=html.escape(name), glb=html.escape(_rel(m["glb"], out_dir)), label=label,
                                  faces=m.get("num_faces", 0), links=" ".join(links), turntable=turn,
                                  orbit=camera_orbit, fov=f"{fov_deg:.2f}"))
    page = _PAGE.format(title=html.escape(title), js=VIEWER_JS, size=VIEWER_SIZE, bg=VIEWER_BACKGROUND,
                        summary=html.escape(summary), cards="\n".join(cards))
    path = out_dir / GALLERY_FILE
    atomic_write_text(path, page, fsync=False)
    return path


def _rel(path: str | os.PathLike, base: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix()
