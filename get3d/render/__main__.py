"""``python -m get3d.render MANIFEST OUT.h5 WORK_DIR [key=value ...]`` — run the render stage by hand.

Values are parsed as YAML scalars (``resolution=128 device=cpu film_transparent=true``) and validated by
RenderConfig; it calls the same stage function as `get3d render` (get3d/cli.py).
"""
from __future__ import annotations

import argparse
import json
import sys

import yaml

from get3d.schema import ConfigError, parse_section

from .config import RenderConfig


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m get3d.render", description=__doc__.splitlines()[0])
    ap.add_argument("manifest")
    ap.add_argument("out_h5")
    ap.add_argument("work_dir")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    values = {}
    for item in a.overrides:
        key, sep, val = item.partition("=")
        if not sep:
            ap.error(f"{item!r}: expected key=value")
        values[key] = yaml.safe_load(val)
    try:
        cfg = parse_section(RenderConfig, values, "render")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from .stage import RenderError, render_dataset

    try:
        summary = render_dataset(a.manifest, a.out_h5, cfg, a.work_dir, progress=not a.no_progress)
    except RenderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.items() if k != "failures"}, indent=1))
    for f in summary["failures"]:
        print(f"failed: {f['id']}: {f['reason']} ({f['detail']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
