"""A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifact folder) for the integration tests,
plain-HTTP REST helpers and headless Chromium."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
                  "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync", "--hide-scrollbars", "--window-size=1400,900"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(root: Path, timeout_s: float = 120.0):
    """Start ``mlflow server`` and yield its URL; the process group is stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).parent / "mlflow"
    cmd = [str(exe), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "artifacts")]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true",
               DO_NOT_TRACK="true")
    env.pop("MLFLOW_TRACKING_URI", None)
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited ({proc.returncode}):\n{log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as r:
                    if r.read().startswith(b"OK"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def rest(url: str, endpoint: str, **query) -> dict:
    q = urllib.parse.urlencode(query)
    with urllib.request.urlopen(f"{url}/api/2.0/mlflow/{endpoint}?{q}", timeout=30) as r:
        return json.loads(r.read())


def get_bytes(url: str, endpoint: str, **query) -> bytes:
    q = urllib.parse.urlencode(query)
    with urllib.request.urlopen(f"{url}/{endpoint}?{q}", timeout=30) as r:
        return r.read()


def list_artifacts(url: str, run_id: str, path: str = "") -> list[str]:
    """Every artifact file under ``path`` of a run (recursive), through the REST API."""
    out = []
    for f in rest(url, "artifacts/list", run_id=run_id, path=path).get("files", []):
        if f.get("is_dir"):
            out += list_artifacts(url, run_id, f["path"])
        else:
            out.append(f["path"])
    return out


def chromium(page: str, profile: Path, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """The DOM of ``page`` after ``budget_ms`` of virtual time (and a PNG screenshot of it when asked)."""
    base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
    env = dict(os.environ, NO_PROXY="127.0.0.1,localhost")
    dom = subprocess.run(base + ["--dump-dom", page], capture_output=True, text=True, timeout=180, env=env,
                         check=True).stdout
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(base + [f"--screenshot={screenshot}", page], capture_output=True, timeout=180, env=env,
                       check=True)
    return dom
