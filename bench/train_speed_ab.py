"""Side-by-side training speed of several settings in one run (one fresh process per variant, same machine).

Each variant is ``label=flags`` where flags are bench/train_speed.py arguments; the first is the baseline and
every row reports its ratio to it.  Variants run in the order given, then once more in reverse order when
``--repeat`` is set (A/B/B/A), so drift of the card (clocks, temperature) shows as a spread, not a gain.

    python bench/train_speed_ab.py --profile paper \\
        "ref=--bias-act ref" "fused=" --json $OUT/ab.json

A label may name another checkout of the project as ``LABEL@DIR=FLAGS``: that variant runs *this* bench script
against ``DIR``'s library (e.g. the previous commit, ``git archive HEAD~1 get3d | tar -x -C DIR``), so a change
that has no switch is compared with the code before it on the same machine.

Every run uses the same seed, so the ``loss Δ`` column also shows whether a variant computes the same step as
the first row with its generator: the largest relative difference of the loss means at the first step (~1e-7
for an equal computation in another order) and over the whole run (where rounding differences grow).
"""
from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_variant(label: str, flags: str, common: list[str], log_dir: Path, library: Path | None = None) -> dict:
    out = log_dir / f"{label}.json"
    script = HERE / "train_speed.py"
    if library is not None:  # this bench script, importing the other checkout's get3d
        (library / "bench").mkdir(exist_ok=True)
        script = library / "bench" / "train_speed.py"
        script.write_text((HERE / "train_speed.py").read_text())
    cmd = [sys.executable, "-u", str(script), *common, *shlex.split(flags), "--json", str(out)]
    print(f"## {label}: {' '.join(cmd[2:])}", flush=True)
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    (log_dir / f"{label}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not out.exists():
        print(proc.stdout[-3000:] + proc.stderr[-3000:], flush=True)
        return {"label": label, "flags": flags, "error": f"exit {proc.returncode}"}
    res = json.loads(out.read_text())
    res.update(label=label, flags=flags)
    print(f"   {res['sec_per_kimg']:.1f} s/kimg, median step {res['sec_per_kimg_median_step']:.1f}, "
          f"steady peak {res['peak_mem_gib_steady']}"
          + (f", surface re-runs {res['surface_reruns']}" if res.get("surface_reruns") is not None else "")
          + (f", surface skips {res['surface_skips']}" if res.get("surface_skips") is not None else ""),
          flush=True)
    return res


def loss_difference(row: dict, ref: dict) -> tuple[float, float] | None:
    """Largest relative differences between two runs' per-step loss means (same seed): at the first step (the
    same weights: ~1e-7 for a reordered but equal computation, large for a different function) and over the run
    (rounding differences grow through the GAN updates, so this is the drift, not a test)."""
    a, b = row.get("losses"), ref.get("losses")
    if not a or not b or len(a) != len(b):
        return None

    def rel(x: dict, y: dict) -> float:
        return max((abs(x[k] - y[k]) / max(abs(y[k]), 1e-3) for k in x.keys() & y.keys()), default=0.0)

    return rel(a[0], b[0]), max(rel(x, y) for x, y in zip(a, b))


def loss_reference(row: dict, rows: list[dict]) -> dict | None:
    """The first earlier successful row with the same generator (losses of different networks do not compare)."""
    for r in rows:
        if r is row:
            return None
        if "error" not in r and r.get("generator") == row.get("generator"):
            return r
    return None


def table(rows: list[dict]) -> str:
    base = next((r for r in rows if "error" not in r), None)
    head = ("variant", "s/kimg", "median-step s/kimg", "img/s", "ratio", "steady GiB", "held GiB", "first GiB",
            "host syncs", "GPU idle", "loss Δ first/all (vs)", "flags")
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append((r["label"], r["error"], "", "", "", "", "", "", "", "", "", r["flags"]))
            continue
        ref = loss_reference(r, rows)
        diff = loss_difference(r, ref) if ref is not None else None
        loss_col = f"{diff[0]:.0e}/{diff[1]:.0e} ({ref['label']})" if diff is not None else "-"
        ratio = r["sec_per_kimg"] / base["sec_per_kimg"]
        fmt = (lambda v: f"{v:.2f}" if isinstance(v, (int, float)) else "-")
        lines.append((r["label"], f"{r['sec_per_kimg']:.1f}", f"{r['sec_per_kimg_median_step']:.1f}",
                      f"{r['img_per_sec']:.2f}", f"{ratio:.3f}", fmt(r["peak_mem_gib_steady"]),
                      fmt(r.get("peak_reserved_gib_steady")), fmt(r["peak_mem_gib_first_steps"]),
                      "-" if r.get("host_syncs_one_step") is None else str(r["host_syncs_one_step"]),
                      f"{r['gpu_idle']['idle_fraction']:.1%}" if r.get("gpu_idle") else "-", loss_col,
                      r["flags"] or "(defaults)"))
    widths = [max(len(str(x[i])) for x in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(x, widths)) for x in lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("variants", nargs="+", metavar="LABEL=FLAGS")
    ap.add_argument("--profile", default="paper")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", action="store_true", help="run the variants again in reverse order")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--logs", type=Path, default=None, help="keep each variant's log here")
    args = ap.parse_args(argv)
    common = ["--profile", args.profile, "--device", args.device]
    if args.steps:
        common += ["--steps", str(args.steps)]
    variants = []
    for v in args.variants:
        if "=" not in v:
            ap.error(f"variant {v!r} must be LABEL=FLAGS (FLAGS may be empty)")
        label, flags = v.split("=", 1)
        label, _, library = label.partition("@")
        if library and not (Path(library) / "get3d").is_dir():
            ap.error(f"variant {v!r}: {library} holds no get3d/ library")
        variants.append((label, flags, Path(library).resolve() if library else None))
    order = variants + (list(reversed(variants)) if args.repeat else [])
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = args.logs or Path(tmp)
        log_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, (label, flags, library) in enumerate(order):
            suffix = "" if i < len(variants) else " (2)"
            rows.append(run_variant(label + suffix, flags, common, log_dir, library))
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
