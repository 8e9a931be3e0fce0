"""Smoke check of the GPU machine: torch/CUDA versions, nvdiffrast JIT build (CUDA context), one raster call."""
import importlib
import sys
import time

import torch

print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory / 2**30, "GiB")
for mod in ("numpy", "scipy", "h5py", "yaml", "trimesh", "PIL", "triton"):
    try:
        m = importlib.import_module(mod)
        print(mod, getattr(m, "__version__", "?"))
    except Exception as exc:  # noqa: BLE001
        print(mod, "MISSING", exc)
t0 = time.time()
sys.path.insert(0, ".")
from get3d.raster import get_backend

b = get_backend("nvdiffrast", "cuda")
pos = torch.tensor([[[-0.5, -0.5, 0.5, 1.0], [0.5, -0.5, 0.5, 1.0], [0.0, 0.5, 0.5, 1.0]]], device="cuda")
tri = torch.tensor([[0, 1, 2]], dtype=torch.int32, device="cuda")
rast = b.rasterize(pos, tri, (64, 64))
rast = rast[0] if isinstance(rast, tuple) else rast
print("nvdiffrast ok: covered px", int((rast[..., 3] > 0).sum()), f"build+first call {time.time() - t0:.1f}s")
