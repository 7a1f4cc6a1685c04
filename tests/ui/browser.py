"""Headless Chromium for the dashboard: Debian's ``chromium`` driven by Selenium through
Debian's ``chromium-driver`` (the same version, both from apt). Used by the browser test
and by ``scripts/dashboard_screenshot`` (the README's picture).

``start(profile_dir, driver_log)`` launches a fresh browser (its own user-data-dir, no
background networking, sync, component updates or first-run screens) that keeps its
console log; ``stop(driver, service)`` ends it and its driver by PID. ``MISSING`` says why
neither can run here (None when both can).
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
except ImportError as exc:  # pragma: no cover - the test extra brings it
    webdriver = None
    _selenium_missing: str | None = f"selenium is not installed (pip install -e '.[test]'): {exc}"
else:
    _selenium_missing = None

if CHROMIUM is None or CHROMEDRIVER is None:
    MISSING: str | None = (
        "Debian's chromium and chromium-driver are needed (found chromium: "
        f"{CHROMIUM}, chromedriver: {CHROMEDRIVER}); .ci/run installs them with apt-get")
else:
    MISSING = _selenium_missing

ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-dev-shm-usage", "--window-size=1280,1500")


def start(profile_dir: Path, driver_log: Path) -> tuple[Any, Any]:
    """A new headless browser and its driver service."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ARGS + (f"--user-data-dir={profile_dir}",):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=CHROMEDRIVER, log_output=str(driver_log))
    return webdriver.Chrome(service=service, options=options), service


def stop(driver: Any, service: Any) -> None:
    """Quit the browser; kill its driver by PID if it is still there."""
    try:
        driver.quit()
    finally:
        proc = getattr(service, "process", None)
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
