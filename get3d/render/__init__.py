"""Dataset rendering (BlenderProc / Cycles in a separate venv) into one HDF5 file; see docs/rendering.md."""
from .config import RenderConfig

__all__ = ["RenderConfig", "render_dataset", "render_shard"]


def __getattr__(name):  # lazy: the stage imports torch through get3d.cameras
    if name in ("render_dataset", "render_shard"):
        from . import stage

        return getattr(stage, name)
    raise AttributeError(name)
