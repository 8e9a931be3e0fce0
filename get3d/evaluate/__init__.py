"""Evaluation stage: reference statistics of the test split and metrics of an inference snapshot.

- :func:`get3d.evaluate.reference.build_reference` (the ``reference`` stage; also :func:`reference_stats` for the
  image features alone and :func:`reference_shapes` for the test meshes);
- :func:`get3d.evaluate.stage.evaluate` (the ``evaluate`` stage);
- :class:`get3d.evaluate.config.EvaluateConfig` (section ``evaluate`` of params.yaml).
"""
from .config import EvaluateConfig, smoke_config

__all__ = ["EvaluateConfig", "smoke_config"]
