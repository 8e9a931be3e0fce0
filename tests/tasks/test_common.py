"""Which failures a stage task retries, and the workspace checks every task makes."""
import pytest

from get3d.dvcstage import DvcCommandError, DvcStageError
from get3d.schema import ConfigError
from tasks.common import is_transient, workspace


@pytest.mark.parametrize("exc, transient", [
    (OSError(5, "Input/output error"), True),
    (TimeoutError("shard timed out"), True),
    (ConnectionRefusedError("tracking server"), True),
    (DvcCommandError("Unable to acquire lock"), True),
    (type("TrackingError", (RuntimeError,), {})("unreachable"), True),
    (FileNotFoundError("data/dataset/dataset.h5"), False),
    (PermissionError("read-only"), False),
    (ConfigError("params.yaml: train.lr_g must be > 0"), False),
    (DvcStageError("no stage named 'x'"), False),
    (ValueError("bad value"), False),
    (RuntimeError("evaluation diverged"), False),
])
def test_only_transient_failures_are_retried(exc, transient):
    assert is_transient(exc) is transient


def test_workspace_must_be_a_project_checkout(tmp_path):
    with pytest.raises(FileNotFoundError, match="no dvc.yaml"):
        workspace(tmp_path)
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    assert workspace(tmp_path) == tmp_path.resolve()
