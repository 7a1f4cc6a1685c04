"""docs/dashboard.png from a real run; see scripts/dashboard-screenshot."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ui"))

import browser  # noqa: E402  (tests/ui/browser.py: the browser test's own launcher)
from raftdir.testing import wait_until  # noqa: E402


def raftdir(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "raftdir", *args], capture_output=True,
                         text=True, timeout=120, env=dict(os.environ, **env))
    if out.returncode != 0:
        raise SystemExit(f"raftdir {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout


def stop_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 10
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main() -> None:
    if browser.MISSING:
        raise SystemExit(browser.MISSING)
    target = Path(sys.argv[1] if len(sys.argv) > 1 else ROOT / "docs" / "dashboard.png")
    work = Path(tempfile.mkdtemp(prefix="raftdir-screenshot-"))
    text = raftdir("demo", "--keep", "--data-dir", str(work / "demo"), env={})
    pids = [int(p) for p in re.search(r"stop it with: kill ([0-9 ]+)", text).group(1).split()]
    try:
        url = re.search(r"dashboard: (\S+)", text).group(1)
        env = {"RAFTDIR_SERVER": re.search(r"RAFTDIR_SERVER=(\S+)", text).group(1),
               "RAFTDIR_ADMIN_TOKEN": re.search(r"RAFTDIR_ADMIN_TOKEN=(\S+)", text).group(1)}
        driver, service = browser.start(work / "profile", work / "chromedriver.log")
        try:
            driver.get(url)
            driver.find_element("id", "token").send_keys(
                raftdir("token", "create", "--viewer", "--valid-for", "10m", env=env).strip(),
                "\n")
            rows = "return document.querySelectorAll('#workers tbody tr').length"
            wait_until(lambda: driver.execute_script(rows) == 6, 20, "six workers")
            raftdir("scale", "web", "18", env=env)
            stop_pids(pids[-1:])   # the last worker agent: the page shows it go down
            down = "return document.querySelectorAll('#workers tr.down').length"
            wait_until(lambda: driver.execute_script(down) == 1, 40, "a worker down")
            bars = ("return Array.from(document.querySelectorAll('[data-service=web] li.bar'))"
                    ".reduce((n, b) => n + Number(b.dataset.replicas), 0)")
            wait_until(lambda: driver.execute_script(bars) == 18, 20, "web placed anew")
            for _ in range(2):   # the viewport is the window less its frame: fit twice
                height = driver.execute_script("return document.documentElement.scrollHeight")
                driver.set_window_size(1280, height + 160)
            time.sleep(0.3)   # one more frame drawn at the new size (a picture, not a test)
            driver.save_screenshot(str(target))
        finally:
            browser.stop(driver, service)
    finally:
        stop_pids(pids)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
