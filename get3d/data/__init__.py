"""Training data: the rendered-views HDF5 dataset and exporters."""
from .dataset import RenderedViews, make_loader, worker_init_fn

__all__ = ["RenderedViews", "make_loader", "worker_init_fn"]
