"""Scheduled retraining: serve the pipeline flow as a deployment with a cron schedule.

    source scripts/env.sh
    prefect server start --host 127.0.0.1 --analytics-off &      # a real API for schedules
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.deploy --cron "0 3 * * 0"                    # serves until stopped; runs on schedule
    prefect deployment run 'get3d-pipeline/retrain' --watch        # or trigger a run now

GPU workers: run this on the GPU machine (``CUDA_VISIBLE_DEVICES`` picks the card); rendering shards can be
spread over a process work pool of CPU machines sharing the project folder.
"""
from __future__ import annotations

import argparse

from flows.pipeline import pipeline

DEFAULT_CRON = "0 3 * * 0"  # Sundays 03:00


def retrain_deployment(cron: str = DEFAULT_CRON, params_path: str = "params.yaml", root: str = "."):
    """The deployment object (no server contact until it is served)."""
    return pipeline.to_deployment(name="retrain", cron=cron, parameters={"params_path": params_path, "root": root},
                                  tags=["get3d", "retrain"], description="Scheduled GET3D retraining (DVC-equivalent)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Serve the GET3D pipeline with a cron schedule.")
    ap.add_argument("--cron", default=DEFAULT_CRON)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    args = ap.parse_args(argv)
    from prefect import serve

    serve(retrain_deployment(args.cron, args.params, args.root))


if __name__ == "__main__":
    main()
