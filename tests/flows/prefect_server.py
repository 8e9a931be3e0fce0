"""A real Prefect server + process workers for integration tests (127.0.0.1, free port, analytics off).

Everything started here runs in its own process group and is stopped by :meth:`PrefectServer.stop`.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)


class PrefectServer:
    def __init__(self, home: Path, env: dict | None = None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/api"
        self.env = dict(env or os.environ)
        self.env.update(PREFECT_HOME=str(self.home), PREFECT_API_URL=self.api, PREFECT_SERVER_ANALYTICS_ENABLED="false",
                        DO_NOT_TRACK="true", PREFECT_SERVER_API_HOST="127.0.0.1",
                        PREFECT_SERVER_API_PORT=str(self.port), PREFECT_UI_API_URL=self.api,
                        PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS="2",
                        PREFECT_WORKER_QUERY_SECONDS="2", PREFECT_WORKER_PREFETCH_SECONDS="2",
                        PREFECT_CLI_COLORS="false", PREFECT_CLI_WRAP_LINES="false")
        self.procs: list[subprocess.Popen] = []
        self.logs: list[Path] = []
        self.http = httpx.Client(base_url=self.api, timeout=30)

    def _spawn(self, args: list[str], log_name: str, cwd: Path | None = None, env: dict | None = None):
        log = self.home / log_name
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=cwd, env={**self.env, **(env or {})}, stdout=log.open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def start(self, timeout: float = 120) -> PrefectServer:
        proc = self._spawn([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                            str(self.port)], "server.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited ({proc.returncode}):\n{self.tail('server.log')}")
            try:
                if self.http.get("/health").status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"prefect server not healthy after {timeout} s:\n{self.tail('server.log')}")

    def tail(self, name: str, n: int = 4000) -> str:
        path = self.home / name
        return path.read_text(errors="replace")[-n:] if path.exists() else ""

    def cli(self, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 180) -> str:
        proc = subprocess.run([sys.executable, "-m", "prefect", "--no-prompt", *args], cwd=cwd,
                              env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=timeout,
                              check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc.stdout + proc.stderr

    def start_worker(self, pool: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
        return self._spawn([sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"],
                           f"worker-{pool}-{len(self.procs)}.log", cwd=cwd, env=env)

    # --------------------------------------------------------------------------------------- REST helpers
    def request(self, method: str, url: str, timeout_s: float = 60, **kw) -> httpx.Response:
        """A REST call, repeated while the server answers 5xx (SQLite busy on a loaded machine)."""
        deadline = time.monotonic() + timeout_s
        while True:
            r = self.http.request(method, url, **kw)
            if r.status_code < 500 or time.monotonic() > deadline:
                r.raise_for_status()
                return r
            time.sleep(1)

    def deployment(self, flow_name: str, name: str) -> dict:
        r = self.request("GET", f"/deployments/name/{flow_name}/{name}")
        return r.json()

    def trigger(self, deployment_id: str, parameters: dict | None = None) -> str:
        r = self.request("POST", f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters or {}})
        return r.json()["id"]

    def flow_run(self, run_id: str) -> dict:
        r = self.request("GET", f"/flow_runs/{run_id}")
        return r.json()

    def wait(self, run_id: str, timeout: float, on_poll=None) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.flow_run(run_id)
            if on_poll is not None:
                on_poll(run)
            if run["state_type"] in TERMINAL:
                return run
            time.sleep(1)
        raise TimeoutError(f"flow run {run_id} not finished after {timeout} s (state {run['state_name']});\n"
                           + "\n".join(self.tail(p.name, 3000) for p in self.logs if "worker" in p.name))

    def states(self, run_id: str) -> list[dict]:
        r = self.request("GET", "/flow_run_states/", params={"flow_run_id": run_id})
        return sorted(r.json(), key=lambda s: s["timestamp"])

    def logs_of(self, run_id: str) -> list[str]:
        """Log messages of a flow run and its sub-flow runs, oldest first."""
        ids = [run_id] + [sub["id"] for sub in self.subflow_runs(run_id)]
        out: list[str] = []
        while True:
            page = self.request("POST", "/logs/filter", json={"logs": {"flow_run_id": {"any_": ids}}, "limit": 200,
                                                              "offset": len(out), "sort": "TIMESTAMP_ASC"}).json()
            out += [x["message"] for x in page]
            if len(page) < 200:
                return out

    def task_runs(self, run_id: str) -> list[dict]:
        ids = [run_id] + [s["id"] for s in self.subflow_runs(run_id)]
        r = self.request("POST", "/task_runs/filter", json={"task_runs": {"flow_run_id": {"any_": ids}}, "limit": 200})
        return r.json()

    def subflow_runs(self, run_id: str) -> list[dict]:
        r = self.request("POST", "/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [run_id]}}})
        return r.json()

    def artifacts(self, run_id: str) -> list[dict]:
        r = self.request("POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        return r.json()

    def stop(self) -> None:
        for proc in reversed(self.procs):
            _stop(proc)
        self.procs.clear()
        self.http.close()
