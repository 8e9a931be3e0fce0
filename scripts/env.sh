# Sourced by the Makefile: keep every tool offline and its state inside the project.
export DO_NOT_TRACK=true
export MLFLOW_DISABLE_TELEMETRY=true
export PREFECT_SERVER_ANALYTICS_ENABLED=false
export PREFECT_HOME="${PREFECT_HOME:-$PWD/.prefect}"
export DVC_NO_ANALYTICS=1
export PATH="$PWD/.venv/bin:$PATH"
export GET3D_WORKSPACE="${GET3D_WORKSPACE:-$PWD}"   # the checkout Prefect workers run flows in (prefect.yaml pull step)
