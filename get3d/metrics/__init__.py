"""Evaluation metrics (FID/KID, CD/COV/MMD, LFD) as a registry of small functions.

Public API: :func:`compute_metrics`, :func:`register_metric`, :class:`MetricContext` (registry),
:mod:`.fid`, :mod:`.inception`, :mod:`.pointcloud`, :mod:`.chamfer`, :mod:`.coverage`, :mod:`.lfd`.
"""
from .registry import MetricContext, available_metrics, compute_metrics, get_metric, register_metric

__all__ = ["MetricContext", "available_metrics", "compute_metrics", "get_metric", "register_metric"]
