"""Headless Chromium driven over the DevTools protocol: open a page, wait until its text shows what a test
expects (single-page apps fill in after load), read that text and screenshot the same rendering."""
from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

from prefect_server import free_port

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
         "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
         "--hide-scrollbars", "--window-size=1440,1000"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class HeadlessPage:
    def __init__(self, profile_dir: Path):
        from websockets.sync.client import connect

        self.port = free_port()
        self.proc = subprocess.Popen([chromium(), *FLAGS, f"--user-data-dir={profile_dir}",
                                      f"--remote-debugging-port={self.port}", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError("chromium did not open its DevTools endpoint")
            time.sleep(0.3)
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.ids = itertools.count(1)

    def call(self, method: str, **params) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=120))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def text(self) -> str:
        res = self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''",
                        returnByValue=True)
        return res.get("result", {}).get("value", "")

    def open(self, url: str, until, timeout_s: float = 90) -> str:
        """Navigate and wait until ``until(text)`` holds; returns the page text (raises on timeout)."""
        self.call("Page.enable")
        self.call("Page.navigate", url=url)
        deadline, text = time.monotonic() + timeout_s, ""
        while time.monotonic() < deadline:
            text = self.text()
            if until(text):
                time.sleep(1.0)  # let the last fetched rows paint
                return self.text()
            time.sleep(0.5)
        raise TimeoutError(f"{url}: the page never showed what was expected; it shows:\n{text[:3000]}")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
