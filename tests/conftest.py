import os
import shutil
from pathlib import Path

import pytest

import get3d  # noqa: F401  (applies the offline defaults before any tool is imported)

REPO = Path(__file__).resolve().parents[1]


def has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception:
        return False


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
