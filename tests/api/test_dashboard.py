"""The dashboard in process: its files (shipped as package data, served with a strict
Content-Security-Policy, no inline code), its semantics and palette, who may read it, the
event stream and its CORS preflight, the timeline diff and the peers table it draws. The
browser test (tests/ui) runs the page itself against a real cluster."""

from __future__ import annotations

import asyncio
import configparser
import contextlib
import fnmatch
import json
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import aiohttp
import pytest

from fakes import ADMIN, PROFILE, FakeControlPlane, serving, wait_until
from raftdir.api.dashboard import (
    _FEED, ASSETS, Feed, FeedSettings, _complete_peers, asset_bytes, may_read_dashboard,
    timeline_events,
)
from raftdir.auth import admin_token
from raftdir.errors import Unauthorized
from raftdir.model import InternalScaleRequest, WorkerRegisterRequest

ROOT = Path(__file__).resolve().parents[2]
UI = ROOT / "raftdir" / "api" / "ui"
SECRET = "s3" * 32


# ---------------------------------------------------------------------------- the files

def test_every_file_of_the_page_is_package_data_found_by_importlib_resources():
    on_disk = sorted(p.name for p in UI.iterdir() if p.is_file())
    assert on_disk == sorted(ASSETS)
    for name in ASSETS:
        assert asset_bytes(name) == (UI / name).read_bytes()
    # a wheel or sdist install carries exactly what setup.cfg's package_data names
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    globs = [g.strip() for g in cfg["options.package_data"]["raftdir.api"].split(",")]
    for name in on_disk:
        assert any(fnmatch.fnmatch(f"ui/{name}", g) for g in globs), name


class Outline(HTMLParser):
    """What the page is made of: tags with their attributes, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def outline() -> list[tuple[str, dict[str, str | None]]]:
    parser = Outline()
    parser.feed(asset_bytes("index.html").decode())
    return parser.tags


def test_the_page_has_no_inline_code_and_keeps_the_token_out_of_urls():
    tags = outline()
    scripts = [a for t, a in tags if t == "script"]
    assert scripts and all(a.get("src", "").startswith("/ui/") for a in scripts)
    assert not any(k.startswith("on") or k == "style" for _, a in tags for k in a)
    form = next(a for t, a in tags if t == "form")
    assert form.get("method") == "post" and "action" not in form  # never a GET with ?token=
    box = next(a for t, a in tags if t == "input" and a.get("id") == "token")
    assert box["type"] == "password" and box.get("autocomplete") == "off"
    js = asset_bytes("dashboard.js").decode()
    assert "sessionStorage" in js and "localStorage" not in js
    assert "Authorization" in js and "new EventSource" not in js
    assert ".innerHTML" not in js  # data becomes text, never markup


def test_headings_tables_and_labels_for_screen_readers():
    tags = outline()
    assert [t for t, _ in tags].count("h1") == 1
    heads = [t for t, _ in tags if t in ("h1", "h2", "h3")]
    assert heads[0] == "h1" and heads.count("h2") >= 4
    tables = [i for i, (t, _) in enumerate(tags) if t == "table"]
    assert len(tables) == 2
    for i in tables:
        assert tags[i + 1][0] == "caption"
    ths = [a for t, a in tags if t == "th"]
    assert ths and all(a.get("scope") == "col" for a in ths)
    labels = {a.get("for") for t, a in tags if t == "label"}
    assert "token" in labels
    assert any(t == "main" for t, _ in tags)
    assert next(a for t, a in tags if t == "html").get("lang") == "en"
    assert any(a.get("href") == "#main" for t, a in tags if t == "a")  # skip link


def _hex(color: str) -> tuple[float, float, float]:
    color = color.lstrip("#")
    return tuple(int(color[i:i + 2], 16) / 255 for i in (0, 2, 4))  # type: ignore[return-value]


def luminance(color: str) -> float:
    def lin(v: float) -> float:
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4
    r, g, b = (lin(v) for v in _hex(color))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((luminance(a), luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


#: Every pair the stylesheet draws: (foreground, background, the WCAG 2 AA minimum).
PAIRS = [
    ("fg", "bg", 4.5), ("muted", "bg", 4.5), ("fg", "surface", 4.5), ("muted", "surface", 4.5),
    ("header-fg", "header-bg", 4.5), ("accent", "bg", 4.5), ("header-fg", "accent", 4.5),
    ("on-leader", "leader", 4.5), ("on-down", "down", 4.5), ("down-fg", "down-row", 4.5),
    ("on-down", "down", 4.5), ("warn-fg", "warn-bg", 4.5), ("down-fg", "bg", 4.5),
    ("bar", "track", 3.0), ("bar-low", "track", 3.0), ("focus", "bg", 3.0),
]


def test_the_palette_meets_wcag_contrast():
    css = asset_bytes("dashboard.css").decode()
    palette = dict(re.findall(r"--([a-z-]+):\s*(#[0-9a-fA-F]{6});", css))
    assert contrast("#000000", "#ffffff") == pytest.approx(21.0)   # the formula itself
    assert contrast("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    for fg, bg, need in PAIRS:
        ratio = contrast(palette[fg], palette[bg])
        assert ratio >= need, f"--{fg} on --{bg}: {ratio:.2f}:1 < {need}:1"
    used = set(re.findall(r"var\(--([a-z-]+)\)", css))
    assert used <= {n for p in PAIRS for n in p[:2]} | {"border"}, "a colour with no pair"


# ---------------------------------------------------------------------------- serving

async def test_the_page_is_served_with_a_strict_policy():
    cp = FakeControlPlane(servers=["http://10.0.0.2:3669", "http://10.0.0.3:3669"])
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        for path, name in (("/ui", "index.html"), ("/ui/", "index.html"),
                           *((f"/ui/{n}", n) for n in ASSETS)):
            async with s.get(api.url + path) as r:
                assert r.status == 200, path
                assert await r.read() == asset_bytes(name)
                assert r.headers["Content-Type"].startswith(ASSETS[name])
                csp = r.headers["Content-Security-Policy"]
                assert "script-src 'self';" in csp and "unsafe" not in csp
                assert "form-action 'none'" in csp and "frame-ancestors 'none'" in csp
                # the page may follow the cluster to its other servers, and nowhere else
                assert "connect-src 'self' http://10.0.0.2:3669 http://10.0.0.3:3669;" in csp
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                assert r.headers["Referrer-Policy"] == "no-referrer"


async def test_reading_needs_a_token_of_scope_read_or_higher():
    from real_pair import ADMIN as REAL_ADMIN, real_pair
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        leader = pair.leader
        made = {scope: (await leader.create_access_token(scope, 600, scope, "admin-token",
                                                        None))["token"]
                for scope in ("read", "operate", "admin")}
        revoked = (await leader.create_access_token("read", 600, "", "admin-token",
                                                    None))
        await leader.revoke_access_token(revoked["token_id"], None)
        short = (await leader.create_access_token("read", 1, "", "admin-token", None))
        leader.clock.advance(2)
        pair.follower.clock.advance(2)
        for cp in (leader, pair.follower):
            assert await may_read_dashboard(cp, REAL_ADMIN) == "admin"
            for scope, token in made.items():
                assert await may_read_dashboard(cp, token) == scope
            for bad in (None, "", "nope", revoked["token"], short["token"],
                        made["read"][:-1] + ("A" if made["read"][-1] != "A" else "B"),
                        admin_token("x" * 64)):
                with pytest.raises(Unauthorized):
                    await may_read_dashboard(cp, bad)
        # a control plane without access tokens (a static peer) takes the admin token only
        with pytest.raises(Unauthorized):
            await may_read_dashboard(FakeControlPlane(), made["admin"])
        assert await may_read_dashboard(FakeControlPlane(), ADMIN) == "admin"

        api = pair.leader_api
        for path in ("/ui/session", "/ui/events"):
            for headers in ({}, {"Authorization": "Bearer nope"},
                            {"Authorization": f"Bearer {revoked['token']}"},
                            {"Authorization": f"Bearer {short['token']}"}):
                async with s.get(api.url + path, headers=headers) as r:
                    assert r.status == 401, (path, headers)
                    # readable cross-origin, so a page can tell "wrong token" from "down"
                    assert r.headers["Access-Control-Allow-Origin"] == "*"
                    assert (await r.json())["code"] == "unauthorized"
            async with s.options(api.url + path, headers={
                    "Origin": "http://elsewhere:1", "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "authorization"}) as r:
                assert r.status == 204
                assert "Authorization" in r.headers["Access-Control-Allow-Headers"]
        for token, scope in ((REAL_ADMIN, "admin"), *((t, sc) for sc, t in made.items())):
            async with s.get(api.url + "/ui/session",
                             headers={"Authorization": f"Bearer {token}"}) as r:
                assert r.status == 200 and (await r.json())["scope"] == scope
        # the token in the URL is no credential
        async with s.get(api.url + f"/ui/events?token={REAL_ADMIN}") as r:
            assert r.status == 401


async def test_a_stream_ends_when_its_token_is_revoked():
    from real_pair import real_pair
    async with real_pair() as pair, aiohttp.ClientSession() as s:
        made = await pair.leader.create_access_token("read", 600, "wall", "admin-token",
                                                     None)
        for api in (pair.follower_api, pair.leader_api):
            async with s.get(api.url + "/ui/events",
                             headers={"Authorization": f"Bearer {made['token']}"}) as r:
                assert r.status == 200
                await read_frames(r, 1)
                if api is pair.leader_api:
                    await pair.leader.revoke_access_token(made["token_id"], None)
                    # the stream ends at its next frame (not after its 5 minutes)
                    await asyncio.wait_for(r.content.read(), 10)
        async with s.get(pair.follower_api.url + "/ui/session",
                         headers={"Authorization": f"Bearer {made['token']}"}) as r:
            assert r.status == 401 and "revoked" in (await r.json())["message"]


async def read_frames(resp: aiohttp.ClientResponse, count: int, timeout: float = 10.0
                      ) -> list[dict]:
    frames: list[dict] = []
    event = None

    async def go() -> None:
        nonlocal event
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "frame":
                frames.append(json.loads(line[6:]))
                if len(frames) >= count:
                    return
    await asyncio.wait_for(go(), timeout)
    return frames


async def test_the_stream_pushes_frames_of_the_directory():
    cp = FakeControlPlane(servers=[])
    req = WorkerRegisterRequest(token="join-ok", profile=PROFILE)
    node_id = (await cp.register(req, None)).node_id
    await cp.scale(InternalScaleRequest.legacy("web", 2), None)
    async with serving(cp) as api, aiohttp.ClientSession() as s:
        async with s.get(api.url + "/ui/events",
                         headers={"Authorization": f"Bearer {ADMIN}"}) as r:
            assert r.status == 200
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.headers["Cache-Control"] == "no-store"
            first, second = await read_frames(r, 2)
        # the viewer left: it is no viewer any more, and the feed can stop
        feed = api.app[_FEED]
        await wait_until(lambda: feed.viewers == 0, 5, "the viewer to be gone")
    assert second["at_ms"] > first["at_ms"]
    assert first["node_id"] == 1 and first["leader"]["node_id"] == 1
    worker = next(w for w in first["workers"] if w["node_id"] == node_id)
    assert worker["state"] == "ready" and worker["labels"] == {"zone": "a"}
    assert worker["os"] == "linux" and worker["arch"] == "x86_64"
    assert first["workers_by_state"] == {"ready": 1}
    assert [e["text"] for e in first["timeline"]] == ["peer 1 leads (term 3)"]
    assert ADMIN not in json.dumps(first)


async def test_the_feed_is_shared_and_stops_when_nobody_watches():
    cp = FakeControlPlane(servers=[])
    feed = Feed(cp, settings=FeedSettings(interval=0.01, idle_stop=0.05))
    seen = []
    async with contextlib.aclosing(feed.frames()) as frames:
        async for frame in frames:
            seen.append(frame)
            if len(seen) == 3:
                break
    assert feed.viewers == 0 and feed._task is not None
    deadline = time.monotonic() + 5
    while feed._task is not None:
        assert time.monotonic() < deadline, "the feed kept collecting with no viewer"
        await asyncio.sleep(0.01)
    assert feed.frame is None and len(feed.history) == 1   # the history is kept
    await feed.close()


# ---------------------------------------------------------------------------- the timeline

def frame(leader=(1, 1), workers=(), services=()):
    return {"leader": None if leader is None else {"node_id": leader[0], "term": leader[1]},
            "workers": [{"node_id": n, "state": s} for n, s in workers],
            "services": [{"service": name, "replicas": sum(shares.values()),
                          "assigned": [{"node_id": n, "replicas": r}
                                       for n, r in shares.items()]}
                         for name, shares in services]}


def texts(prev, cur):
    return [(e["kind"], e["text"]) for e in timeline_events(prev, cur, 5)]


def test_the_first_frame_tells_who_leads():
    assert texts(None, frame((2, 4))) == [("leader", "peer 2 leads (term 4)")]
    assert texts(None, frame(None)) == []
    assert timeline_events(None, frame(), 1234)[0]["at_ms"] == 1234


def test_leader_changes():
    assert texts(frame((1, 1)), frame((1, 1))) == []
    assert texts(frame((1, 1)), frame((2, 2))) == [
        ("leader", "peer 2 leads (term 2), after peer 1")]
    assert texts(frame((1, 1)), frame((1, 3))) == [("leader", "peer 1 leads (term 3)")]
    assert texts(frame((1, 1)), frame(None)) == [
        ("leader", "no leader answers (peer 1 led term 1)")]
    assert texts(frame(None), frame((3, 2))) == [("leader", "peer 3 leads (term 2)")]


def test_expiries_returns_and_registrations():
    before = frame(workers=[(10, "ready"), (11, "ready"), (12, "down")])
    after = frame(workers=[(10, "down"), (11, "ready"), (12, "ready"), (13, "ready")])
    assert texts(before, after) == [("down", "worker 10 down (lease expired)"),
                                    ("up", "worker 12 ready again"),
                                    ("registered", "worker 13 registered")]
    many = frame(workers=[(n, "down") for n in range(20)])
    few = frame(workers=[(n, "ready") for n in range(20)])
    (kind, text), = texts(few, many)
    assert kind == "down" and text.startswith("20 workers down (leases expired): 0, 1,")
    assert text.endswith("and 12 more")
    assert texts(few, frame(workers=[(n, "ready") for n in range(19)])) == [
        ("removed", "worker 19 removed")]
    # a truncated listing says nothing of who came or went
    cut = dict(few, workers_truncated=True)
    assert texts(cut, frame(workers=[(0, "ready")])) == []


def test_scales_and_placements():
    before = frame(services=[("web", {10: 2, 11: 2}), ("db", {10: 1})])
    after = frame(services=[("web", {10: 3, 11: 3}), ("api", {11: 1})])
    assert texts(before, after) == [
        ("scale", "scale web: 4 \u2192 6 replicas"),
        ("placement", "web on 10: 2 \u2192 3"), ("placement", "web on 11: 2 \u2192 3"),
        ("scale", "scale api: 0 \u2192 1 replicas"), ("placement", "api on 11: 0 \u2192 1"),
        ("scale", "db removed (had 1 replicas)")]
    moved = frame(services=[("web", {11: 4})])
    assert texts(frame(services=[("web", {10: 2, 11: 2})]), moved) == [
        ("placement", "web on 11: 2 \u2192 4"), ("placement", "web on 10: 2 \u2192 0")]
    assert all(e["service"] == "web" for e in timeline_events(
        frame(services=[("web", {10: 2, 11: 2})]), moved, 0))


def row(api, asked=True, raft=None, role="follower", id_=None, error=None):
    return {"id": id_, "api_addr": api, "raft_addr": raft, "role": role, "asked": asked,
            "error": error}


def test_a_silent_peer_is_one_row_with_its_id():
    nodes = [{"node_id": n, "kind": "server", "profile": {"api_addr": f"127.0.0.1:720{n}"}}
             for n in (1, 2, 3)]
    rows = [row("127.0.0.1:7201", raft="127.0.0.1:7101", role="leader", id_=1),
            row("127.0.0.1:7202", raft="127.0.0.1:7102", id_=2),
            row("127.0.0.1:7203", role="unreachable", error="connection refused"),
            row(None, asked=False, raft="127.0.0.1:7103", role="unreachable")]
    out = _complete_peers(rows, nodes, {})
    assert [(r["id"], r["api_addr"], r["raft_addr"], r["role"]) for r in out] == [
        (1, "127.0.0.1:7201", "127.0.0.1:7101", "leader"),
        (2, "127.0.0.1:7202", "127.0.0.1:7102", "follower"),
        (3, "127.0.0.1:7203", "127.0.0.1:7103", "unreachable")]
    # two silent: the Raft addresses they answered before, else listed apart
    memo = {"127.0.0.1:7203": "127.0.0.1:7103"}
    rows = [row("127.0.0.1:7201", raft="127.0.0.1:7101", role="leader", id_=1),
            row("127.0.0.1:7202", role="unreachable", error="refused"),
            row("127.0.0.1:7203", role="unreachable", error="refused"),
            row(None, asked=False, raft="127.0.0.1:7102", role="unreachable"),
            row(None, asked=False, raft="127.0.0.1:7103", role="unreachable")]
    out = _complete_peers(rows, nodes, memo)
    assert [(r["id"], r["raft_addr"]) for r in out] == [
        (1, "127.0.0.1:7101"), (2, None), (3, "127.0.0.1:7103"), (None, "127.0.0.1:7102")]

