"""Thin Prefect tasks, one per pipeline stage.

Each task calls the same ``get3d`` library function as the ``get3d`` CLI (and so the DVC stage), with the
paths ``dvc.yaml`` uses, through :func:`get3d.dvcstage.run_stage`: DVC decides whether the stage's locked
results are current (then they are reused, nothing recomputes) and records new results in ``dvc.lock``.
That lock is the task cache, keyed by the content of each stage's deps and params.  Prefect's own result
cache is switched off for these tasks (``cache_policy=NO_CACHE``): their results are files in the workspace,
and a cached Prefect result could outlive the files it describes, or miss a change DVC sees (an edited dep).
"""
