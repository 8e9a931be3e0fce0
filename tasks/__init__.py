"""Thin Prefect tasks, one per pipeline stage.

Each task calls the same ``get3d`` library function as the ``get3d`` CLI (and so the DVC stage), with the
paths ``dvc.yaml`` uses, through :func:`get3d.dvcstage.run_stage`: DVC decides whether the stage's locked
results are current (then they are reused, nothing recomputes) and records new results in ``dvc.lock``.
That lock is the task cache (keyed by the content of deps and params); a Prefect result cache is used only
where a task's inputs alone determine a result that lives outside the workspace.
"""
