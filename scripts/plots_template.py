"""Write DVC's offline plots page template (``.dvc/plots.html``, named by ``plots.html_template`` in .dvc/config).

DVC's default page loads vega, vega-lite and vega-embed from a CDN and stays blank without internet; this
template inlines the copies pinned in package-lock.json (node_modules/, installed by ``npm ci``) around DVC's
``{plot_divs}`` placeholder.  It has no ``{scripts}`` placeholder, so DVC adds no CDN tags.  Run by
scripts/setup.sh; stdlib only.  Usage: ``python scripts/plots_template.py [--root REPO] [--out FILE]``.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

#: (npm package, file inside it), in load order: vega-embed needs the globals vega and vegaLite.
SCRIPTS = (("vega", "build/vega.min.js"), ("vega-lite", "build/vega-lite.min.js"),
           ("vega-embed", "build/vega-embed.min.js"))
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC plots</title>
<style>body {{ font-family: sans-serif; }} table {{ border-spacing: 15px; }}</style>
{inline}
</head>
<body>
{plot_divs}
</body>
</html>
"""


def build(root: Path) -> str:
    parts = []
    for package, rel in SCRIPTS:
        path = root / "node_modules" / package / rel
        if not path.is_file():
            raise SystemExit(f"plots template: {path} not found; run `npm ci` in {root} (package-lock.json "
                             f"pins {package})")
        js = path.read_text(encoding="utf-8")
        for ph in PLACEHOLDERS:
            if ph in js:  # DVC substitutes these strings anywhere in the page
                raise SystemExit(f"plots template: {path} contains DVC's placeholder {ph}")
        js = js.replace("</script", "<\\/script")  # the same string in JS; keeps the <script> element intact
        parts.append(f"<script>/* {package}: {rel} */\n{js}\n</script>")
    return PAGE.replace("{{", "{").replace("}}", "}").replace("{inline}", "\n".join(parts))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root_default = Path(__file__).resolve().parents[1]
    ap.add_argument("--root", type=Path, default=root_default, help="repository root (holds node_modules/)")
    ap.add_argument("--out", type=Path, default=None, help="output file (default: <root>/.dvc/plots.html)")
    args = ap.parse_args(argv)
    out = args.out or args.root / ".dvc" / "plots.html"
    text = build(args.root)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    print(f"plots template: {out} ({len(text) // 1024} KiB, vega/vega-lite/vega-embed inlined)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
