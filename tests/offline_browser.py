"""Headless Chromium (the Debian package) with the network blocked: pages must draw from local files alone."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def offline_chromium(page: Path, profile: Path, *args: str, window: tuple[int, int], budget_ms: int = 20000,
                     allow_file_access: bool = False) -> subprocess.CompletedProcess:
    """Run Chromium on ``page`` (``--dump-dom`` / ``--screenshot=...`` in ``args``); skips without Chromium.
    Every host resolves to nothing and any proxied request goes nowhere; WebGL runs in software."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (scripts/setup.sh installs the Debian package)")
    cmd = [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--use-angle=swiftshader",
           "--enable-unsafe-swiftshader", "--disable-background-networking", "--disable-component-update",
           "--no-first-run", "--disable-sync", f"--user-data-dir={profile}",
           *(["--allow-file-access-from-files"] if allow_file_access else []),
           "--host-resolver-rules=MAP * ~NOTFOUND", "--proxy-server=127.0.0.1:9",
           f"--virtual-time-budget={budget_ms}", f"--window-size={window[0]},{window[1]}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)
