"""Training data: the rendered-views HDF5 dataset and exporters."""
from .dataset import RenderedViews, dataset_hash, make_loader, worker_init_fn

__all__ = ["RenderedViews", "dataset_hash", "make_loader", "worker_init_fn"]
