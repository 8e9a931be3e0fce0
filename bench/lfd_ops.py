"""Launch/sync proxy for the LFD descriptor extraction: torch ops and host syncs per mesh, old vs new path.

On CPU every aten op that computes is what would be one GPU kernel launch; the sync-like ops are those that
need a value on the host (``aten::_local_scalar_dense`` = ``.item()/bool()/int()``, ``aten::nonzero`` and
boolean indexing, ``unique``, ``equal``, copies to the CPU).  On CUDA the real kernel launches and the
``cudaStreamSynchronize`` calls are counted as well.

    python bench/lfd_ops.py                          # CPU, descriptors from pre-rendered silhouettes
    python bench/lfd_ops.py --render                 # CPU, rendering included (slow: torch rasterizer)
    python bench/lfd_ops.py --device cuda --render --n-single 64 --n-multi 32 --batch 32

The old path is ``get3d/metrics/lfd.py`` at git revision ``--old`` (default 2e6bf94, the last revision before
the batched path; ``--old-file PATH`` loads a saved copy instead, for machines without git:
``git show 2e6bf94:get3d/metrics/lfd.py > .lfdbase/lfd_old.py``), loaded as a second module next to the current
one.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

VIEW_OPS = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::as_strided", "aten::slice", "aten::select",
    "aten::unsqueeze", "aten::squeeze", "aten::expand", "aten::t", "aten::permute", "aten::transpose",
    "aten::detach", "aten::alias", "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::resolve_conj",
    "aten::resolve_neg", "aten::unbind", "aten::split", "aten::chunk", "aten::lift_fresh", "aten::result_type",
    "aten::is_nonzero", "aten::flatten", "aten::view_as", "aten::numpy_T", "aten::_unsafe_view", "aten::contiguous",
    "aten::to", "aten::set_", "aten::narrow", "aten::expand_as", "aten::split_with_sizes", "aten::unflatten",
    "aten::diagonal", "aten::squeeze_", "aten::unsqueeze_", "aten::resize_", "aten::_nested_tensor_from_mask_left_aligned",
}
SYNC_OPS = {"aten::_local_scalar_dense", "aten::nonzero", "aten::_unique2", "aten::unique_consecutive",
            "aten::unique_dim", "aten::equal", "aten::masked_select"}


def load_old(rev: str | None, path: str | None):
    """The LFD module of an earlier revision, importable next to the current one (relative imports work)."""
    if path is None:
        src = subprocess.run(["git", "show", f"{rev}:get3d/metrics/lfd.py"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        tmp = Path(tempfile.mkdtemp()) / "lfd_old.py"
        tmp.write_text(src)
        path = str(tmp)
    import get3d.metrics  # noqa: F401 - parent package for the relative import of _lfd_tables
    spec = importlib.util.spec_from_file_location("get3d.metrics._lfd_old", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def _sync(dev):
    if torch.device(dev).type == "cuda":
        torch.cuda.synchronize()


def count_ops(fn, dev):
    """(result, computing aten ops, sync-like ops, CUDA kernels, cudaStreamSynchronize calls, top ops)."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.device(dev).type == "cuda" else [])
    _sync(dev)
    with profile(activities=acts) as prof:
        out = fn()
        _sync(dev)
    ops, syncs, kernels, stream_syncs = Counter(), 0, 0, 0
    for e in prof.events():
        name = e.name
        if getattr(e, "device_type", None) is not None and e.device_type.name == "CUDA":
            kernels += 1
            continue
        if name in ("cudaStreamSynchronize", "cudaDeviceSynchronize"):
            stream_syncs += 1
        if not name.startswith("aten::"):
            continue
        if name in SYNC_OPS:
            syncs += 1
        leaf = not any(c.name.startswith("aten::") for c in e.cpu_children)
        if leaf and name not in VIEW_OPS:
            ops[name] += 1
    return out, sum(ops.values()), syncs, kernels, stream_syncs, ops, prof


def timed(fn, dev):
    _sync(dev)
    t0 = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t0


def same(a, b) -> bool:
    return all(torch.equal(getattr(a, k).cpu(), getattr(b, k).cpu()) for k in ("art", "fd", "cir", "ecc"))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n-single", type=int, default=4)
    ap.add_argument("--n-multi", type=int, default=4)
    ap.add_argument("--batch", type=int, default=None, help="meshes per call (default: all)")
    ap.add_argument("--render", action="store_true", help="time and count rendering too (mesh_descriptors)")
    ap.add_argument("--old", default="2e6bf94", help="git revision of the old path")
    ap.add_argument("--old-file", default=None, help="saved copy of the old lfd.py (instead of --old)")
    ap.add_argument("--top", type=int, default=0, help="print the N most frequent ops of each run")
    ap.add_argument("--paths", default="old,new,new-gpu-algos",
                    help="which paths to run (comma-separated; new-gpu-algos = the new path with its GPU variants "
                         "of the flood fill and thinning forced, what a GPU runs)")
    ap.add_argument("--table", type=int, default=0, help="print the profiler's N most expensive ops of each run")
    ap.add_argument("--perf", action="append", default=[], metavar="KEY=VALUE",
                    help="a perf choice of params.yaml, e.g. lfd_sweep=torch")
    args = ap.parse_args(argv)
    from get3d import perf
    perf.apply(perf.parse_overrides(args.perf))
    dev = torch.device(args.device)

    from gpu_metrics import _test_meshes

    from get3d.metrics import lfd as new
    old = load_old(args.old, args.old_file)
    torch.set_grad_enabled(False)
    rows = []
    for kind, n in (("single", args.n_single), ("multi", args.n_multi)):
        if n <= 0:
            continue
        meshes = _test_meshes(n, kind)
        batch = args.batch or n
        if not args.render:
            sil = new.render_meshes_silhouettes(meshes, dev) if hasattr(new, "render_meshes_silhouettes") else \
                torch.stack([new.render_silhouettes(v, f, dev) for v, f in meshes])
            sil = sil.to(dev)
        results = {}
        for name, mod in (("old", old), ("new", new), ("new-gpu-algos", new)):
            if name not in args.paths.split(","):
                continue
            perf.apply(perf.with_changes(lfd_algorithms="gpu" if name == "new-gpu-algos" else "auto"))
            if args.render:
                def fn(mod=mod, meshes=meshes, batch=batch):
                    return mod.mesh_descriptors(meshes, device=dev, batch=batch)
            else:
                def fn(mod=mod, sil=sil, batch=batch, n=n):
                    parts = [mod.descriptors_from_silhouettes(sil[i:i + batch]) for i in range(0, n, batch)]
                    return new.LFDDescriptor(*(torch.cat([getattr(p, k) for p in parts])
                                               for k in ("art", "fd", "cir", "ecc")))
            fn()  # warm-up
            d, t = timed(fn, dev)
            _, nops, nsync, nker, nss, top, prof = count_ops(fn, dev)
            if args.table:
                keys = ["self_cuda_time_total", "self_cpu_time_total"] if dev.type == "cuda" else ["self_cpu_time_total"]
                for key in keys:
                    print(f"-- {kind} {name} by {key}\n" + prof.key_averages().table(sort_by=key, row_limit=args.table,
                                                                                          max_name_column_width=40))
            results[name] = d
            rows.append((kind, name, n, batch, n / t, nops / n, nsync / n, nker / n, nss / n))
            perf.apply(perf.with_changes(lfd_algorithms="auto"))
            if args.top:
                print(f"-- {kind} {name}: top ops", top.most_common(args.top))
        for name, res in results.items():
            if name != "old" and "old" in results:
                rows.append((kind, "identical", name, same(results["old"], res)))
    what = "mesh_descriptors (rendering included)" if args.render else "descriptors_from_silhouettes"
    print(f"\n{what} on {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'cpu'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'meshes':8s} {'path':13s} {'n':>4s} {'batch':>5s} {'meshes/s':>9s} {'ops/mesh':>10s} "
          f"{'syncs/mesh':>10s} {'kernels/mesh':>12s} {'streamSync/mesh':>15s}")
    for r in rows:
        if r[1] == "identical":
            print(f"{r[0]:8s} old == {r[2]} codes: {r[3]}")
            continue
        print(f"{r[0]:8s} {r[1]:13s} {r[2]:4d} {r[3]:5d} {r[4]:9.2f} {r[5]:10.1f} {r[6]:10.2f} {r[7]:12.1f} "
              f"{r[8]:15.2f}")
    return rows


if __name__ == "__main__":
    main()
