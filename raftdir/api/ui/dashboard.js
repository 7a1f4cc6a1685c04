// raftdir dashboard: reads the server-sent frames of /ui/events and draws them.
// The token lives in this tab's sessionStorage and travels in an Authorization header
// (fetch, since EventSource cannot send one), never in a URL. When the server the page
// came from dies, the page moves to another server of the cluster's list.
"use strict";

(() => {
  const KEY = "raftdir.dashboard.token";
  const STALE_MS = 3000;          // no frame for this long: the server is gone, move on
  const $ = (id) => document.getElementById(id);

  let servers = [location.origin];
  let current = location.origin;
  let running = false;
  let frameAt = 0;                // performance.now() of the last frame
  let lastLeaderText = "";
  const timeline = [];            // events merged across servers, newest last

  // -- small DOM helpers (text only: data never becomes markup) -------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "role") {
        node.setAttribute(k, String(v));
      } else node[k] = v;
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }
  const dash = "\u2013";
  const show = (v) => (v === null || v === undefined || v === "" ? dash : String(v));
  function ago(secs) {
    if (secs === null || secs === undefined) return dash;
    if (secs < 0.05) return "now";
    if (secs < 120) return `${secs.toFixed(1)} s ago`;
    if (secs < 7200) return `${Math.round(secs / 60)} min ago`;
    return `${(secs / 3600).toFixed(1)} h ago`;
  }
  function clock(ms) {
    const d = new Date(ms);
    return d.toLocaleTimeString([], {hour12: false});
  }
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // -- sign in ----------------------------------------------------------------------------
  function token() { return sessionStorage.getItem(KEY); }

  function showLogin(message) {
    $("main").hidden = true;
    $("signout").hidden = true;
    $("login").hidden = false;
    $("login-error").textContent = message || "";
    $("connection").textContent = "Not connected";
    $("token").focus();
  }

  function showMain() {
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("token").value.trim();
    $("token").value = "";
    if (!value) return;
    sessionStorage.setItem(KEY, value);
    start();
  });

  $("signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    running = false;
    showLogin("Signed out.");
  });

  // -- the stream -------------------------------------------------------------------------
  function order() {
    // the server in use first, then the others in the cluster's order
    const rest = servers.filter((s) => s !== current);
    return [current, ...rest];
  }

  async function start() {
    if (running) return;
    running = true;
    showMain();
    let failures = 0;
    while (running && token()) {
      const candidates = order();
      const server = candidates[failures % candidates.length];
      $("connection").textContent = failures ? `Reconnecting to ${server}\u2026`
                                             : `Connecting to ${server}\u2026`;
      let outcome;
      try {
        outcome = await stream(server, token());
      } catch (err) {
        outcome = "failed";
      }
      if (outcome === "unauthorized") {
        sessionStorage.removeItem(KEY);
        running = false;
        showLogin("That token was not accepted. Check it and try again.");
        return;
      }
      if (outcome === "ended") {
        failures = 0;           // the server closed a finished stream: same server again
      } else {
        failures += 1;
        await sleep(failures < servers.length ? 50 : 500);
      }
    }
    running = false;
  }

  async function stream(server, tok) {
    const ctrl = new AbortController();
    let timer = setTimeout(() => ctrl.abort(), STALE_MS);
    try {
      const resp = await fetch(server + "/ui/events", {
        headers: {Authorization: "Bearer " + tok, Accept: "text/event-stream"},
        cache: "no-store", signal: ctrl.signal, referrerPolicy: "no-referrer",
      });
      if (resp.status === 401) return "unauthorized";
      if (!resp.ok || !resp.body) return "failed";
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) return "ended";
        clearTimeout(timer);
        timer = setTimeout(() => ctrl.abort(), STALE_MS);
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          onBlock(block, server);
        }
        if (!running) { ctrl.abort(); return "ended"; }
      }
    } finally {
      clearTimeout(timer);
    }
  }

  function onBlock(block, server) {
    let event = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) event = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    }
    if (event !== "frame" || !data.length) return;
    const frame = JSON.parse(data.join("\n"));
    current = server;
    if (Array.isArray(frame.servers) && frame.servers.length) {
      servers = frame.servers.slice();
      if (!servers.includes(current)) servers.unshift(current);
    }
    render(frame, server);
  }

  // -- drawing ----------------------------------------------------------------------------
  function render(frame, server) {
    frameAt = performance.now();
    const stamp = clock(frame.at_ms);
    $("connection").textContent = `Live from peer ${frame.node_id} (${server}) \u00b7 ${stamp}`;
    const lead = frame.leader;
    const text = lead ? `Leader: peer ${lead.node_id} (term ${lead.term})` : "Leader: none answers";
    if (text !== lastLeaderText) {   // aria-live: announce changes only
      $("leader").textContent = text;
      $("leader").dataset.leader = lead ? String(lead.node_id) : "";
      lastLeaderText = text;
    }
    const problems = $("problems");
    problems.hidden = !(frame.problems && frame.problems.length);
    problems.textContent = (frame.problems || []).join("; ");
    renderPeers(frame.peers || []);
    renderWorkers(frame);
    renderServices(frame);
    renderTimeline(frame.timeline || []);
  }

  function renderPeers(rows) {
    const body = $("peers").tBodies[0];
    body.replaceChildren(...rows.map((r) => {
      const role = r.role === "leader" ? el("span", {class: "badge leader"}, "leader")
        : r.role === "unreachable" ? el("span", {class: "badge down"}, "unreachable")
        : r.role;
      const contact = r.asked ? ago(r.last_contact_secs) : dash;
      return el("tr", {"data-node-id": show(r.id), "data-role": r.role,
                       class: r.role === "unreachable" ? "unreachable" : ""},
        el("th", {scope: "row"}, show(r.id)), el("td", {}, show(r.api_addr || r.raft_addr)),
        el("td", {class: "role"}, role), el("td", {}, show(r.term)),
        el("td", {}, show(r.commit)), el("td", {}, show(r.applied)),
        el("td", {}, show(r.lag)), el("td", {}, contact));
    }));
  }

  function labelsText(labels) {
    const keys = Object.keys(labels || {}).sort();
    return keys.length ? keys.map((k) => `${k}=${labels[k]}`).join(", ") : dash;
  }

  function ttlCell(w) {
    const full = (w.ttl_secs || 0) + (w.grace_secs || 0);
    if (w.state === "down") return el("td", {}, "expired");
    if (w.ttl_left_secs === null || w.ttl_left_secs === undefined || !full) {
      return el("td", {}, el("span", {class: "muted"}, "unknown here"));
    }
    const fill = el("div", {class: "fill"});
    const secs = el("span", {class: "secs"});
    const bar = el("div", {class: "track", role: "progressbar", "aria-valuemin": 0,
                           "aria-valuemax": full, "aria-label": `TTL left of ${w.node_id}`},
                   fill);
    const cell = el("td", {}, el("div", {class: "ttl"}, bar, secs));
    cell.dataset.left = String(w.ttl_left_secs);
    cell.dataset.full = String(full);
    cell.classList.add("countdown");
    drawCountdown(cell, 0);
    return cell;
  }

  function drawCountdown(cell, elapsedSecs) {
    const full = Number(cell.dataset.full);
    const left = Math.max(0, Number(cell.dataset.left) - elapsedSecs);
    const bar = cell.querySelector(".track");
    const fill = cell.querySelector(".fill");
    fill.style.width = `${Math.min(100, (100 * left) / full).toFixed(1)}%`;
    fill.classList.toggle("low", left < full / 4);
    bar.setAttribute("aria-valuenow", left.toFixed(1));
    bar.setAttribute("aria-valuetext", `${left.toFixed(1)} seconds left`);
    cell.querySelector(".secs").textContent = `${left.toFixed(1)} s`;
  }

  function renderWorkers(frame) {
    const workers = frame.workers || [];
    const body = $("workers").tBodies[0];
    body.replaceChildren(...workers.map((w) => {
      const state = w.draining && w.state !== "draining" ? `${w.state}, draining` : w.state;
      const stateCell = w.state === "down" ? el("span", {class: "badge down"}, "down") : state;
      const cls = w.state === "down" ? "down" : (w.draining ? "draining" : "");
      return el("tr", {"data-node-id": w.node_id, "data-state": w.state, class: cls},
        el("th", {scope: "row"}, String(w.node_id)), el("td", {class: "state"}, stateCell),
        ttlCell(w), el("td", {}, ago(w.last_report_secs_ago)), el("td", {}, show(w.os)),
        el("td", {}, show(w.arch)), el("td", {}, labelsText(w.labels)));
    }));
    const counts = Object.entries(frame.workers_by_state || {})
      .map(([s, n]) => `${n} ${s}`).join(", ");
    let summary = `${frame.workers_total || 0} workers` + (counts ? ` (${counts})` : "");
    if (frame.workers_truncated) summary += `; the ${workers.length} listed: down first, then by id`;
    if (!frame.ttl_known) summary += "; TTLs left are known to the leader only, which this server cannot ask now";
    $("workers-summary").textContent = summary;
  }

  function renderServices(frame) {
    $("revision").textContent = `Assignment revision ${show(frame.revision)}`;
    const recent = (frame.timeline || []).filter((e) => e.service);
    const box = $("services");
    const services = frame.services || [];
    if (!services.length) {
      box.replaceChildren(el("p", {class: "muted"}, "No service is placed yet."));
      return;
    }
    box.replaceChildren(...services.map((s) => {
      const max = Math.max(1, ...s.assigned.map((a) => a.replicas));
      const bars = el("ul", {class: "bars", "aria-label": `Replicas of ${s.service} per node`},
        ...s.assigned.map((a) => {
          const running = (s.running_by_node || {})[String(a.node_id)];
          const fill = el("div", {class: "fill"});
          fill.style.width = `${((100 * a.replicas) / max).toFixed(1)}%`;
          return el("li", {"data-node-id": a.node_id, "data-replicas": a.replicas, class: "bar"},
            el("span", {class: "node"}, `node ${a.node_id}`),
            el("div", {class: "track", "aria-hidden": "true"}, fill),
            el("span", {class: "count"},
               `${a.replicas} assigned` + (running === undefined ? "" : `, ${running} running`)));
        }));
      const mine = recent.filter((e) => e.service === s.service).slice(-5).reverse();
      const stale = s.stale ? " (last known: the leader cannot be asked now)" : "";
      return el("section", {class: "service", "data-service": s.service,
                            "aria-label": `Service ${s.service}`},
        el("h3", {}, s.service),
        el("p", {class: "summary"},
           `${s.replicas} replicas assigned, ${s.running} running` +
           (s.healthy ? ", healthy" : ", not healthy") +
           (s.unknown && s.unknown.length ? `, ${s.unknown.length} nodes not reported` : "") + stale),
        bars,
        mine.length ? el("ol", {class: "recent", "aria-label": `Recent assignment events of ${s.service}`},
                         ...mine.map((e) => el("li", {}, `${clock(e.at_ms)} ${e.text}`))) : null);
    }));
  }

  function renderTimeline(events) {
    // merge: the same event seen by two servers (after a failover) is listed once
    for (const e of events) {
      const same = timeline.find((t) => t.kind === e.kind && t.text === e.text &&
                                        Math.abs(t.at_ms - e.at_ms) < 15000);
      if (!same) timeline.push(e);
    }
    timeline.sort((a, b) => a.at_ms - b.at_ms);
    while (timeline.length > 100) timeline.shift();
    const list = $("timeline");
    const shown = timeline.filter((e) => e.kind !== "placement").slice(-40).reverse();
    list.replaceChildren(...shown.map((e) => el("li", {"data-kind": e.kind},
      el("time", {dateTime: new Date(e.at_ms).toISOString()}, clock(e.at_ms)),
      el("span", {class: "kind"}, e.kind), e.text)));
    if (!shown.length) list.replaceChildren(el("li", {class: "muted"}, "Nothing yet."));
  }

  // the TTL bars count down between frames
  setInterval(() => {
    if (!frameAt) return;
    const elapsed = (performance.now() - frameAt) / 1000;
    for (const cell of document.querySelectorAll("td.countdown")) drawCountdown(cell, elapsed);
  }, 100);

  if (token()) start(); else showLogin("");
})();
