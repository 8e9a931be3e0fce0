"""Where a generator phase's memory goes: the bytes autograd saves for the backward, by the module that saved them.

One ``Gmain`` chunk of the training loss (generator, rendering, both discriminators on the fakes) runs under
``torch.autograd.graph.saved_tensors_hooks``; every saved tensor is counted once (by storage) against the innermost
named module running when it was saved (``--depth`` levels deep: ``G.backbone.synthesis``, ``D_rgb.blocks``, …; ``(other)``
for the functional code between modules: rendering, marching tets).  The sum is the activation memory the phase
holds at the start of its backward, the bulk of the generator phase's peak.  Device-independent bytes (the dtypes
are the configuration's), so the CPU gives the same accounting as a GPU, except the fp16 D blocks (float32 on the
CPU; the D's share is then an upper bound).

    python bench/saved_activations.py --generator separate --res 128       # CPU: minutes at tet 90
    python bench/saved_activations.py --generator separate --res 128 --perf recompute_geometry_mlp=true
    python bench/saved_activations.py --generator unified --device cuda     # the paper recipe
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from get3d import perf
from get3d.nn import ModelConfig
from get3d.schema import parse_section
from get3d.train.config import TrainConfig
from get3d.train.losses import FakeInputs, GET3DLoss
from get3d.train.models import build_networks


class SavedBytes:
    """Counts saved tensors by module while active."""

    def __init__(self, roots: dict[str, torch.nn.Module], depth: int = 2):
        self.stack: list[str] = []
        self.bytes: dict[str, int] = defaultdict(int)
        self.seen: set[int] = set()
        self.handles = []
        for root, module in roots.items():
            for name, m in module.named_modules():
                full = ".".join([root] + ([name] if name else []))
                label = ".".join(full.split(".")[:depth])
                self.handles.append(m.register_forward_pre_hook(self._enter(label)))
                self.handles.append(m.register_forward_hook(self._leave))

    def _enter(self, label: str):
        def hook(_module, _args) -> None:
            self.stack.append(label)
        return hook

    def _leave(self, _module, _args, _out) -> None:
        self.stack.pop()

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        try:
            key = t.untyped_storage().data_ptr()
        except RuntimeError:
            return t
        if key not in self.seen:
            self.seen.add(key)
            self.bytes[self.stack[-1] if self.stack else "(other)"] += t.untyped_storage().nbytes()
        return t

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--generator", choices=("unified", "separate"), default="separate")
    ap.add_argument("--res", type=int, default=1024, help="image resolution (the paper's 1024)")
    ap.add_argument("--tet-res", type=int, default=90)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--depth", type=int, default=3, help="module name levels to group by")
    ap.add_argument("--perf", action="append", default=[], metavar="KEY=VALUE", help="perf choices (params.yaml)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    perf.apply(perf.parse_overrides(args.perf))
    model = {"generator": args.generator, "img_resolution": args.res, "tet_res": args.tet_res}
    if device.type == "cpu":
        model.update(raster_backend="torch", num_fp16_res=0, channels_last=False)
    cm = parse_section(ModelConfig, model, "model")
    torch.manual_seed(0)
    nets = build_networks(cm, device, "torch" if device.type == "cpu" else "nvdiffrast")
    loss = GET3DLoss(nets, parse_section(TrainConfig, {"device": args.device}, "train"), device)
    g = torch.Generator().manual_seed(1)
    cam, c2w = nets.sample_cameras(args.batch, g)
    fake = FakeInputs(torch.randn(args.batch, nets.z_dim, generator=g).to(device),
                      torch.randn(args.batch, nets.z_dim, generator=g).to(device), cam.to(device), c2w.to(device), 7)
    nets.D_rgb.requires_grad_(False)
    nets.D_mask.requires_grad_(False)
    counter = SavedBytes({"G": nets.G, "D_rgb": nets.D_rgb, "D_mask": nets.D_mask}, depth=args.depth)
    with torch.autograd.graph.saved_tensors_hooks(counter.pack, lambda t: t):
        loss.accumulate("Gmain", None, fake, norm=float(args.batch))
    counter.close()
    total = sum(counter.bytes.values())
    print(f"saved for the backward of one Gmain chunk: {args.generator} G, batch {args.batch}, {args.res}², "
          f"tet {args.tet_res}, {device.type}{''.join(' --perf ' + p for p in args.perf)}: {total / 2**30:.2f} GiB")
    print(f"{'module':<28} {'GiB':>7} {'share':>6}")
    for name, b in sorted(counter.bytes.items(), key=lambda kv: -kv[1]):
        print(f"{name:<28} {b / 2**30:7.3f} {b / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
