"""``get3d <stage>``: one command per pipeline stage; every DVC stage and Prefect task calls these."""
from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from get3d.schema import ConfigError

log = logging.getLogger("get3d")
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, help: str):
    """Register ``get3d <name>``: the decorated function adds arguments; it returns the runner."""
    def wrap(add_args):
        def deco(run):
            COMMANDS[name] = (help, add_args, run)
            return run
        return deco
    return wrap


def _print_result(stage: str, metrics: dict, warnings: list[str]) -> None:
    """One line of metrics, then the first warnings."""
    print(f"{stage}: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                 for k, v in sorted(metrics.items())))
    for w in warnings[:10]:
        print(f"  warning: {w}")


def _params_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default: params.yaml)")


# ------------------------------------------------------------------------------------------------ stages

def _assets_args(p):
    _params_arg(p)
    p.add_argument("--out", type=Path, default=Path("data/assets"), help="output folder (manifest.json, splits/)")


@command("assets", "list/generate, validate and normalise the asset source; write the manifest")(_assets_args)
def run_assets(args) -> int:
    from get3d.assets.stage import build_assets
    from get3d.config import load_params

    params = load_params(args.params, only=["assets", "render"])
    manifest = build_assets(params.assets, args.out, untextured=params.render.untextured)
    c = manifest["counts"]
    print(f"assets: {c['ok']} ok ({c['train']} train / {c['val']} val / {c['test']} test), {c['failed']} skipped "
          f"-> {args.out / 'manifest.json'}")
    plan = ", ".join(f"{n} {p.replace('_', ' ')}" for p, n in c["render_as"].items())
    print(f"render will draw: {plan} (render.untextured: {params.render.untextured})")
    for item in manifest["items"]:
        if item["render_as"] == "refused":
            print(f"  refused by render: {item['id']}: no image texture ({item['appearance'].replace('_', ' ')})")
    for f in manifest["failures"]:
        print(f"  skipped {f['id']}: {f['reason']}")
    return 0


def _render_args(p):
    _params_arg(p)
    p.add_argument("--manifest", type=Path, default=Path("data/assets/manifest.json"), help="asset manifest")
    p.add_argument("--out", type=Path, default=Path("data/dataset/dataset.h5"),
                   help="HDF5 dataset; dataset.json (manifest) and dataset.contact.png are written beside it")
    p.add_argument("--work-dir", type=Path, default=Path("data/render_work"),
                   help="per-object results; a rerun renders only what is missing here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


@command("render", "render every asset with BlenderProc from the GET3D camera prior into an HDF5 dataset")(_render_args)
def run_render(args) -> int:
    from get3d.config import load_params
    from get3d.render.stage import render_dataset

    params = load_params(args.params, only=["render"])
    summary = render_dataset(args.manifest.resolve(), args.out.resolve(), params.render, args.work_dir.resolve(),
                             progress=not args.no_progress)
    c = summary["counts"]
    print(f"render: {c['rendered']} objects ({c['images']} views), {c['failed']} failed -> {summary['h5']}")
    for f in summary["failures"][:20]:
        print(f"  failed {f['id']}: {f['reason']} ({f.get('detail', '')})")
    return 0


def _train_args(p):
    _params_arg(p)
    p.add_argument("--data", type=Path, default=Path("data/dataset/dataset.h5"), help="HDF5 dataset (render stage)")
    p.add_argument("--run-dir", type=Path, default=Path("data/train"), help="run directory (resumed when compatible)")
    p.add_argument("--model-out", type=Path, default=Path("data/model/generator.pt"),
                   help="where the final inference snapshot (G_ema + config + provenance) is published")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch default)")


@command("train", "train (or resume) GET3D on the rendered dataset; publish the final generator")(_train_args)
def run_train(args) -> int:
    import torch

    from get3d.config import load_params
    from get3d.train.stage import run_train_stage

    params = load_params(args.params, only=["model", "train", "perf", "tracking"])
    if args.threads:
        torch.set_num_threads(args.threads)
    res = run_train_stage(params.model, params.train, args.data, args.run_dir, args.model_out,
                          perf_cfg=params.perf, tracking=params.tracking)
    print(f"train: {res['status']} at {res['kimg']:.3f} kimg (step {res['step']}) -> {res['model']}"
          + (f" (MLflow run {res['mlflow_run_id']})" if res.get("mlflow_run_id") else ""))
    return 0


def _reference_args(p):
    _params_arg(p)
    p.add_argument("--dataset", type=Path, default=Path("data/dataset/dataset.h5"), help="HDF5 dataset")
    p.add_argument("--manifest", type=Path, default=Path("data/assets/manifest.json"), help="asset manifest")
    p.add_argument("--out", type=Path, default=Path("data/reference"), help="reference statistics folder")


@command("reference", "reference statistics of the test split: Inception features of its views, its shapes' "
                      "point clouds / LFD descriptors (cached by content)")(_reference_args)
def run_reference(args) -> int:
    from get3d.config import load_params
    from get3d.evaluate.reference import build_reference

    params = load_params(args.params, only=["evaluate", "perf"])
    info = build_reference(args.dataset, args.manifest, args.out, params.evaluate, params.perf)
    print(f"reference: {args.out} ({', '.join(sorted(k for k in info if not k.startswith('_')))})")
    return 0


def _evaluate_args(p):
    _params_arg(p)
    p.add_argument("--model", type=Path, default=Path("data/model/generator.pt"),
                   help="inference snapshot (or a training run directory)")
    p.add_argument("--dataset", type=Path, default=Path("data/dataset/dataset.h5"), help="HDF5 dataset")
    p.add_argument("--manifest", type=Path, default=Path("data/assets/manifest.json"), help="asset manifest")
    p.add_argument("--reference", type=Path, default=Path("data/reference"), help="reference statistics folder")
    p.add_argument("--out", type=Path, default=Path("data/metrics"),
                   help="metrics.json, per_shape.json, preview.png, detail/ meshes")


@command("evaluate", "FID/KID, CD/COV/MMD, LFD of a generator against the test split")(_evaluate_args)
def run_evaluate(args) -> int:
    from get3d.config import load_params
    from get3d.evaluate.stage import evaluate

    params = load_params(args.params, only=["evaluate", "perf", "tracking"])
    res = evaluate(args.model, args.dataset, args.manifest, args.reference, args.out, params.evaluate, params.perf,
                   tracking=params.tracking)
    shown = {k: v for k, v in res["metrics"].items() if not k.endswith("_time_s")}
    _print_result("evaluate", shown, res.get("warnings", []))
    return 0


def _sample_args(p):
    _params_arg(p)
    p.add_argument("--model", default="data/model/generator.pt",
                   help="generator.pt, a training run folder, or a registry URI models:/<name>@<alias>")
    p.add_argument("--out", type=Path, default=Path("samples"), help="output folder (created)")
    p.add_argument("--seeds", help="seeds, e.g. '0-63,70' (default: export.seeds)")
    p.add_argument("--geo-seeds", help="geometry seeds: every geometry x texture combination is exported")
    p.add_argument("--tex-seeds", help="texture seeds (see --geo-seeds)")
    p.add_argument("--psi", type=float, help="truncation psi (default: export.truncation_psi)")
    p.add_argument("--texture-size", type=int, help="texture atlas size (default: export.texture_size)")
    p.add_argument("--formats", help="comma-separated: glb,obj (default: export.formats)")
    p.add_argument("--batch-size", type=int, help="shapes per batch (default: export.batch_size)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: export.device")


def _export_overrides(cfg, args):
    import dataclasses

    kw = {k: v for k, v in {"texture_size": args.texture_size, "batch_size": args.batch_size,
                            "device": args.device}.items() if v is not None}
    if args.formats:
        kw["formats"] = [f.strip() for f in args.formats.split(",") if f.strip()]
        kw["gallery"] = cfg.gallery and "glb" in kw["formats"]
    try:
        return dataclasses.replace(cfg, **kw)
    except ConfigError as exc:
        raise ConfigError(f"command line: {exc}") from None


@command("sample", "textured meshes (GLB, OBJ+MTL+PNG) of a trained generator for given seeds")(_sample_args)
def run_sample(args) -> int:
    from get3d.config import load_params
    from get3d.export.sample import sample_meshes

    cfg = _export_overrides(load_params(args.params, only=["export"]).export, args)
    res = sample_meshes(args.model, args.out, cfg, seeds=args.seeds, geo_seeds=args.geo_seeds,
                        tex_seeds=args.tex_seeds, psi=args.psi)
    n, empty = len(res["meshes"]), sum(m["empty"] for m in res["meshes"])
    parts = ", ".join(f"{k} {v:.2f}s" for k, v in res["timing"].items())
    print(f"sample: {n} samples ({empty} empty) -> {args.out} ({res['shapes_per_s']:.2f} shapes/s; {parts})")
    return 0


def _export_args(p):
    _params_arg(p)
    p.add_argument("--model", default="data/model/generator.pt", help="generator.pt (or a models:/ URI)")
    p.add_argument("--dataset", type=Path, default=Path("data/dataset/dataset.h5"),
                   help="HDF5 dataset (test cameras and reference images of the export FID)")
    p.add_argument("--reference", type=Path, default=Path("data/reference"), help="reference statistics folder")
    p.add_argument("--out", type=Path, default=Path("data/export"), help="export folder")


@command("export", "sample meshes, previews, turntables, the offline gallery and the export FID")(_export_args)
def run_export_cmd(args) -> int:
    from get3d.config import load_params
    from get3d.export.stage import run_export

    cfg = load_params(args.params, only=["export"]).export
    res = run_export(args.model, args.out, cfg, dataset_h5=args.dataset, reference_dir=args.reference)
    _print_result("export", res["metrics"], res.get("warnings", []))
    return 0


def _register_args(p):
    _params_arg(p)
    p.add_argument("--model", type=Path, default=Path("data/model/generator.pt"), help="inference snapshot")
    p.add_argument("--metrics", type=Path, default=Path("data/metrics"),
                   help="the evaluate stage's folder (metrics.json, evaluate.json, preview.png)")
    p.add_argument("--export", type=Path, default=None,
                   help="the export stage's folder (sample GLBs, previews, turntables), logged with the model")
    p.add_argument("--out", type=Path, default=Path("data/register"), help="register.json (what was registered)")


@command("register", "register the evaluated generator in MLflow (pyfunc + model card), alias challenger; "
                     "the promotion gate moves champion")(_register_args)
def run_register_cmd(args) -> int:
    from get3d.config import load_params
    from get3d.register import run_register

    params = load_params(args.params, only=["tracking", "export"])
    res = run_register(args.model, args.metrics, args.out, params.tracking, export_dir=args.export,
                       export_cfg=params.export)
    if res["version"] is None:
        print(f"register: skipped ({res['reason']})")
        return 0
    print(f"register: {res['model_name']} v{res['version']} (run {res['run_id']}): {res['decision']} - "
          f"{res['reason']}; champion is v{res['champion_version']}")
    return 0


def _validate_args(p):
    _params_arg(p)


@command("validate", "check the whole params file against the schema and print the resolved values")(_validate_args)
def run_validate(args) -> int:
    import yaml

    from get3d.config import load_params

    params = load_params(args.params)
    print(yaml.safe_dump(params.to_dict(), sort_keys=False))
    return 0


# ------------------------------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="get3d", description="GET3D pipeline: one command per stage.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<stage>")
    for name, (help_, add_args, _) in COMMANDS.items():
        add_args(sub.add_parser(name, help=help_, description=help_))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command][2](args)
    except ConfigError as exc:
        print(f"get3d {args.command}: invalid params: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"get3d {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
