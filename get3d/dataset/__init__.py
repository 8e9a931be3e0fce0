"""The rendered-views dataset: its HDF5 format (``format``), the training dataset, the GET3D-layout exporter."""
from .dataset import RenderedViews, make_loader, worker_init_fn
from .format import DatasetFormatError, dataset_hash

__all__ = ["DatasetFormatError", "RenderedViews", "dataset_hash", "make_loader", "worker_init_fn"]
