import os
import shutil
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Without a GPU the Triton kernels' tests run on the CPU through Triton's interpreter (tests/nn/triton_device.py);
    # it must be switched on before Triton is first imported.  The library only takes its Triton paths for CUDA
    # tensors, so nothing else changes.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton_compile_check

import get3d  # noqa: F401  (applies the offline defaults before any tool is imported)

REPO = Path(__file__).resolve().parents[1]


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_configure(config):
    # the interpreted kernels are also compiled for sm_90 at the end of the session (tests/triton_compile_check.py)
    if triton_compile_check.install():
        config.pluginmanager.register(triton_compile_check.CompileCheck(), "triton-compile-check")


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords and not has_cuda():
            item.add_marker(skip_gpu)


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def render_python() -> str:
    """The render environment's interpreter; tests that need it skip with the reason when it is missing."""
    path = os.environ.get("GET3D_RENDER_PYTHON", str(REPO / ".venv-render" / "bin" / "python"))
    if not Path(path).exists() and shutil.which(path) is None:
        pytest.skip(f"render environment missing ({path}); run scripts/setup.sh")
    return path


@pytest.fixture
def set_perf():
    """``set_perf(upsample="reference", ...)``: other ``perf`` choices for this test (validated), restored after."""
    from get3d import perf

    previous = perf.active()
    yield lambda **changes: perf.apply(perf.with_changes(**changes))
    perf.apply(previous)
