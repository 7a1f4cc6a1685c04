"""The dashboard in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``, driven by Selenium) against a real three-peer cluster with three
worker agent processes (``raftdir worker``).

Steps, each with a screenshot in the directory this test prints: the page loads without
console errors and shows three peers, the leader and the workers; kill -9 of the leader
(the server the page was loaded from) and the page, moved to another server, shows the new
leader within 3 s; a scale shows the new placement; a stopped worker turns down within a
second of the directory marking it. Then: no token in the URL, the page source or any
server log; the rendered palette's contrast; keyboard use of the sign-in form.

Skips, saying why, only when the browser, its driver or Selenium is missing (``.ci/run``
installs the first two, the test extra the third).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

import browser as browser_tools
from raftdir.auth import admin_token
from raftdir.config import dump_yaml
from raftdir.model import WorkerTierMode, WorkerTierRole
from raftdir.testing import LocalCluster, stop_process, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WORKERS = 3

if browser_tools.MISSING:
    pytestmark.append(pytest.mark.skip(reason=f"the browser test cannot run: "
                                              f"{browser_tools.MISSING}"))
else:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys


def raftdir(*args: str, env: dict[str, str]) -> str:
    out = subprocess.run([sys.executable, "-m", "raftdir", *args], capture_output=True,
                         text=True, timeout=60, env=dict(os.environ, **env))
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, request) -> Path:
    # not under pytest's basetemp, which the next runs on this machine remove
    given = os.environ.get("RAFTDIR_UI_ARTIFACTS")
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="raftdir-ui-screenshots-"))
    path.mkdir(parents=True, exist_ok=True)
    say(request, f"dashboard screenshots: {path}")
    return path


def say(request, line: str) -> None:
    """A line in pytest's output, captured or not (the artifacts, the measured times)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # short leases, so that a stopped worker goes down within seconds
    with LocalCluster(tmp_path_factory.mktemp("ui-cluster")).prepare(
            heartbeat={"heartbeat_min_ttl": 2, "heartbeat_grace": 2}) as c:
        c.start()
        c.wait_settled(30)
        yield c


@pytest.fixture(scope="module")
def env(cluster) -> dict[str, str]:
    return {"RAFTDIR_SERVER": ",".join(cluster.endpoints),
            "RAFTDIR_ADMIN_TOKEN": admin_token(cluster.secret)}


@pytest.fixture(scope="module")
def agents(cluster, env, tmp_path_factory):
    token = raftdir("token", "create", "--valid-for", "600", "--max-uses", str(WORKERS),
                    env=env).strip()
    base = tmp_path_factory.mktemp("ui-workers")
    procs = []
    try:
        for i in range(1, WORKERS + 1):
            data_dir = base / f"w{i}"
            data_dir.mkdir()
            (data_dir / "join.token").write_text(token + "\n")
            mode = WorkerTierMode(role=WorkerTierRole.WORKER, servers=tuple(cluster.endpoints),
                                  token_file=str(data_dir / "join.token"),
                                  labels={"rack": f"r{i}", "zone": "a" if i < 3 else "b"})
            (data_dir / "cluster_mode.yaml").write_text(dump_yaml(mode))
            with open(data_dir / "worker.log", "ab") as log:
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "raftdir", "worker", "--data-dir", str(data_dir)],
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True))
        ids = wait_until(lambda: (lambda ws: sorted(ws) if len(ws) == WORKERS else None)(
            directory_workers(env)), 60, f"{WORKERS} workers to register")
        racks = {n["profile"]["labels"]["rack"]: i for i, n in directory_workers(env).items()}
        yield {"procs": procs, "ids": ids, "by_rack": racks}
    finally:
        for proc in procs:
            stop_process(proc)


def directory_workers(env: dict[str, str]) -> dict[int, dict]:
    nodes = json.loads(raftdir("workers", "--json", env=env))
    return {n["node_id"]: n for n in nodes}


def leader_says(cluster: LocalCluster, node_id: int) -> str | None:
    """The node's state in the leader's directory, straight from its API (quick enough to
    poll every 20 ms, which the CLI is not)."""
    leader = cluster.leader_id()
    if leader is None:
        return None
    try:
        with urllib.request.urlopen(cluster.peers[leader].url + "/api/v1/cluster/workers",
                                    timeout=1) as resp:
            nodes = json.loads(resp.read())
    except (OSError, ValueError):
        return None
    return next((n["state"] for n in nodes if n["node_id"] == node_id), None)


@pytest.fixture(scope="module")
def browser(tmp_path_factory, artifacts):
    driver, service = browser_tools.start(tmp_path_factory.mktemp("chromium-profile"),
                                          artifacts / "chromedriver.log")
    try:
        yield driver
    finally:
        browser_tools.stop(driver, service)


# ---------------------------------------------------------------------------- page reads

def page(driver, script: str):
    return driver.execute_script(script)


PAGE_STATE = """
const rows = (id) => Array.from(document.querySelectorAll(`#${id} tbody tr`));
return {
  leader: document.getElementById('leader').dataset.leader || null,
  connection: document.getElementById('connection').textContent,
  peers: rows('peers').map(r => ({id: r.dataset.nodeId, role: r.dataset.role})),
  workers: rows('workers').map(r => ({id: Number(r.dataset.nodeId), state: r.dataset.state,
      bg: getComputedStyle(r.cells[1]).backgroundColor})),
  services: Object.fromEntries(Array.from(document.querySelectorAll('#services section'))
      .map(s => [s.dataset.service, Object.fromEntries(Array.from(s.querySelectorAll('li.bar'))
          .map(b => [b.dataset.nodeId, Number(b.dataset.replicas)]))])),
  timeline: Array.from(document.querySelectorAll('#timeline li')).map(li => li.textContent),
};
"""


def state(driver) -> dict:
    return page(driver, PAGE_STATE)


def severe(entries: list[dict]) -> list[dict]:
    return [e for e in entries if e.get("level") == "SEVERE"]


def wait_page(driver, cond, timeout: float, what: str) -> dict:
    """Poll the page state until ``cond(state)`` holds; return that state."""
    return wait_until(lambda: (lambda s: s if cond(s) else None)(state(driver)), timeout,
                      what, interval=0.05)


# ---------------------------------------------------------------------------- the test

def test_dashboard_follows_the_cluster_in_a_real_browser(cluster, env, agents, browser,
                                                         artifacts, request):
    driver = browser
    viewer = raftdir("token", "create", "--viewer", "--valid-for", "1h", env=env).strip()
    assert viewer.startswith("rdt1.")
    secrets_ = [viewer, env["RAFTDIR_ADMIN_TOKEN"]]
    logs: list[dict] = []

    # -- 1. load from the leader, sign in with the keyboard --------------------------------
    leader = cluster.wait_settled(30)
    driver.get(cluster.peers[leader].url + "/ui")
    box = driver.find_element(By.ID, "token")
    assert box.is_displayed()
    assert driver.switch_to.active_element == box, "the token box has the focus"
    box.send_keys(viewer, Keys.ENTER)
    loaded = wait_page(driver, lambda s: len(s["peers"]) == 3 and s["leader"] == str(leader)
                       and sorted(w["id"] for w in s["workers"]) == agents["ids"]
                       and all(w["state"] == "ready" for w in s["workers"]),
                       20, "three peers, the leader and every worker on the page")
    assert [p["role"] for p in loaded["peers"]].count("leader") == 1
    assert {p["id"] for p in loaded["peers"]} == {"1", "2", "3"}
    driver.save_screenshot(str(artifacts / "1-loaded.png"))
    logs += driver.get_log("browser")
    assert severe(logs) == [], f"console errors on load: {severe(logs)}"
    assert all(s not in driver.current_url for s in secrets_)
    assert all(s not in driver.page_source for s in secrets_)

    # -- 2. kill -9 of the leader, the server the page came from ----------------------------
    killed_at = time.monotonic()
    cluster.kill(leader)
    moved = wait_page(driver, lambda s: s["leader"] not in (None, "", str(leader)), 10,
                      "a new leader on the page")
    shown_after = time.monotonic() - killed_at
    new_leader = cluster.wait_leader(10, exclude=leader)
    moved = wait_page(driver, lambda s: s["leader"] == str(new_leader), 3,
                      "the cluster's new leader on the page")
    say(request, f"kill -9 of the leader (peer {leader}) -> peer {new_leader} leads on the "
        f"page after {shown_after:.2f} s")
    assert shown_after < 3.0, f"the new leader showed {shown_after:.2f} s after the kill"
    assert f"peer {leader} " not in moved["connection"], moved["connection"]
    wait_page(driver, lambda s: any(p["role"] == "unreachable" for p in s["peers"])
              and any("leads" in t and f"peer {new_leader}" in t for t in s["timeline"]), 5,
              "the dead peer unreachable and the leader change in the timeline")
    driver.save_screenshot(str(artifacts / "2-new-leader.png"))

    # -- 3. a scale shows the new placement -------------------------------------------------
    split = json.loads(raftdir("scale", "web", "6", "--json", env=env))
    want = {str(n["node_id"]): len([i for a in n["request"].get("assignments", [])
                                    for i in a["indices"]]) or n["request"]["replicas"]
            for n in split["nodes"]}
    assert sum(want.values()) == 6
    wait_page(driver, lambda s: {k: v for k, v in s["services"].get("web", {}).items() if v}
              == {k: v for k, v in want.items() if v}, 10, f"web placed as {want} on the page")
    wait_page(driver, lambda s: any("scale web: 0 \u2192 6" in t for t in s["timeline"]), 5,
              "the scale in the timeline")
    driver.save_screenshot(str(artifacts / "3-scaled.png"))

    # -- 4. a stopped worker turns down ------------------------------------------------------
    victim_proc, victim = agents["procs"][0], agents["by_rack"]["r1"]
    stop_process(victim_proc, signal.SIGKILL)
    wait_until(lambda: leader_says(cluster, victim) == "down", 40,
               f"the directory to mark {victim} down", interval=0.02)
    marked_at = time.monotonic()
    down = wait_page(driver, lambda s: any(w["id"] == victim and w["state"] == "down"
                                           for w in s["workers"]), 5, "the worker down")
    shown_down = time.monotonic() - marked_at
    say(request, f"worker {victim} stopped -> down on the page {shown_down:.2f} s after the "
        "directory marked it")
    assert shown_down < 1.0, f"down on the page {shown_down:.2f} s after the directory"
    red = next(w for w in down["workers"] if w["id"] == victim)["bg"]
    others = {w["bg"] for w in down["workers"] if w["id"] != victim}
    assert red not in others, "the down row is drawn differently"
    driver.save_screenshot(str(artifacts / "4-worker-down.png"))

    # -- contrast of what is drawn ----------------------------------------------------------
    ratios = page(driver, CONTRAST)
    low = {k: v for k, v in ratios.items() if v < 4.5}
    say(request, "contrast of the rendered text: " + ", ".join(
        f"{k} {v:.1f}:1" for k, v in sorted(ratios.items())))
    assert len(ratios) == 10 and not low, f"text under 4.5:1 (or not drawn): {ratios}"

    # -- no console error from the page itself, no secret anywhere -------------------------
    logs += driver.get_log("browser")
    (artifacts / "console.json").write_text(json.dumps(logs, indent=1))
    js_errors = [e for e in severe(logs) if e.get("source") != "network"]
    assert js_errors == [], js_errors
    # the only network errors are the connections to the killed peer
    dead = cluster.peers[leader].api_addr
    assert all(dead in e["message"] for e in severe(logs)), severe(logs)
    assert all(s not in driver.page_source and s not in driver.current_url for s in secrets_)
    for peer in cluster.peers.values():
        text = (peer.data_dir / "server.log").read_text(errors="replace")
        assert all(s not in text for s in secrets_), f"a token in {peer.data_dir}/server.log"
    cluster.start(leader)


CONTRAST = """
function rgb(c) { const m = c.match(/[\\d.]+/g).map(Number); return m; }
function lum([r, g, b]) {
  const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
}
function bg(el) {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
  }
  return [255, 255, 255];
}
function ratio(el) {
  const a = lum(rgb(getComputedStyle(el).color)), b = lum(bg(el));
  return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
}
const picks = {
  body: document.querySelector('#workers-title'),
  header: document.querySelector('.top h1'),
  th: document.querySelector('#peers thead th'),
  caption: document.querySelector('#peers caption'),
  leader_badge: document.querySelector('.badge.leader'),
  down_badge: document.querySelector('tr.down .badge.down'),
  down_row: document.querySelector('tr.down td:nth-child(4)'),
  unreachable_row: document.querySelector('#peers tr.unreachable td'),
  muted: document.querySelector('#workers-summary'),
  timeline_time: document.querySelector('#timeline time'),
};
const out = {};
for (const [k, el] of Object.entries(picks)) if (el) out[k] = ratio(el);
return out;
"""
