"""Plot learning curves (``bench/smoke_learning.py --json`` files) side by side: FID, and COV/MMD-CD, against kimg.

    python bench/plot_learning.py --curve "one call=curve.json" --curve "two calls, resumed=curve2.json" \\
        --mark 40.7 --title "profiles/gpu_small.yaml on one H100" --out docs/img/results/fid_kimg.png

``--mark KIMG`` draws a dotted line where a run was stopped and resumed.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--curve", action="append", required=True, metavar="LABEL=FILE")
    ap.add_argument("--mark", action="append", type=float, default=[], metavar="KIMG")
    ap.add_argument("--title", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = []
    for item in args.curve:
        label, sep, path = item.partition("=")
        if not sep:
            ap.error(f"--curve {item!r}: expected LABEL=FILE")
        rows = json.loads(Path(path).read_text())
        if not rows or not all("kimg" in r and "fid" in r for r in rows):
            ap.error(f"--curve {path}: expected a list of rows with 'kimg' and 'fid' (bench/smoke_learning.py --json)")
        curves.append((label, rows))
    fig, (ax_f, ax_s) = plt.subplots(1, 2, figsize=(9, 3.2))
    for i, (label, rows) in enumerate(curves):
        k = [r["kimg"] for r in rows]
        style = {"marker": "os^v"[i % 4], "linestyle": "-" if i == 0 else "--"}
        ax_f.plot(k, [r["fid"] for r in rows], label=label, **style)
        ax_s.plot(k, [r["cov_cd"] for r in rows], color="C0", label=f"COV-CD (%), {label}", **style)
        ax_s.plot(k, [r["mmd_cd"] for r in rows], color="C1", label=f"MMD-CD (×10⁻³), {label}", **style)
    for ax in (ax_f, ax_s):
        for m in args.mark:
            ax.axvline(m, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("kimg")
        ax.grid(alpha=0.3)
    ax_f.set_ylabel("FID")
    ax_f.set_ylim(bottom=0)
    ax_f.legend(fontsize=8)
    ax_s.legend(fontsize=7)
    if args.title:
        fig.suptitle(args.title, fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
