"""Prefect flows over the tasks in ``tasks/``; deployments, work pools and schedules live in ``prefect.yaml``.

- ``flows/render.py:render_flow``: assets -> render, one task per shard (``cpu`` pool).
- ``flows/train.py:train_flow``: train -> reference/evaluate -> export -> register (``gpu`` pool).
- ``flows/retrain.py:retraining_flow``: change detection, both of the above, the promotion gate and a
  markdown report (scheduled on the ``gpu`` pool).

Every flow runs in a project checkout (``root``) and holds its workspace lock while it changes ``data/``.
"""
