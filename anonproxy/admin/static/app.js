// The dashboard page: reads /api/state, follows /api/events, and sends the actions.
// Everything it loads comes from this dashboard's own address. Every API call carries two
// proofs: the session cookie (HttpOnly: this script never sees it) and the session's page key
// in X-Anonproxy-Session. The key arrives once, in the login's redirect (/#key=...); this
// script takes it out of the address bar before anything else and keeps it in localStorage,
// which only this origin (scheme, host and port) can read. Browsers send the cookie to every
// port of the host, so the cookie alone would be a pass for any page served there; the key
// is not. With no key, or when the API says 401 (the proxy restarted, or a new login), the
// page goes to the login form: it never shows data it could not prove itself for.
"use strict";

const KEY = "anonproxy-page-key";
const fresh = keyFromAddress();  // first thing: the key leaves the address bar

function keyFromAddress() {
  const match = /^#key=([A-Za-z0-9_-]{16,128})$/.exec(location.hash);
  if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  return match ? match[1] : null;
}

const COLORS = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#0b7285", "#c2255c"];
let series = [];

function $(id) { return document.getElementById(id); }

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function headedTable(cls, headings) {  // a table with these headings, and its body
  const table = document.createElement("table");
  table.className = cls;
  const head = table.createTHead().insertRow();
  for (const h of headings) head.append(Object.assign(document.createElement("th"), { textContent: h }));
  return [table, table.createTBody()];
}

function bytes(n) {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i += 1; }
  return (i ? n.toFixed(1) : n) + " " + units[i];
}

function ago(epoch) {
  if (!epoch) return "never";
  const s = Math.max(0, Date.now() / 1000 - epoch);
  return s < 60 ? Math.round(s) + " s ago" : Math.round(s / 60) + " min ago";
}

function clock(epoch) { return new Date(epoch * 1000).toLocaleTimeString(); }

function showStatus(status) {
  $("profile").textContent = status.profile;
  $("listen").textContent = status.listen;
  const s = Math.round(status.uptime_s);
  $("uptime").textContent = Math.floor(s / 3600) + "h " + Math.floor(s / 60) % 60 + "m " + s % 60 + "s";
  $("connections-now").textContent = status.connections_now;
  $("connections-total").textContent = status.connections_total;
  $("identities").textContent = status.identities;
  $("reloads").textContent = status.reloads;
  $("workers").textContent = status.workers;
  $("workers-fact").hidden = status.workers === 1;
  const select = $("profile-select");
  if (status.profiles) {  // in /api/state; the per-second ticks leave the list out
    const names = status.profiles.join(",");
    if (select.dataset.names !== names) {
      select.dataset.names = names;
      select.replaceChildren(...status.profiles.map(name => new Option(name, name)));
    }
  }
  select.value = status.profile;
  window.lastStatus = status;
}

function healthText(h) {
  if (!h) return ["", ""];
  const probe = h.last_probe ? ", probed " + ago(h.last_probe) : "";
  const latency = h.latency_ms !== null && h.latency_ms !== undefined ? ", " + h.latency_ms + " ms" : "";
  return h.up ? ["up" + latency + probe, "up"] : ["DOWN: " + (h.last_error || "") + probe, "down"];
}

function showExits(exits, traffic) {
  const body = $("exits").tBodies[0];
  body.replaceChildren();
  for (const e of exits) {
    const row = body.insertRow();
    row.dataset.exit = e.name;
    cell(row, e.name + (e.default ? " (default)" : ""));
    // every kind describes itself in the same keys (exits/base.py, STATUS_KEYS): no kind here
    cell(row, e.kind);
    cell(row, e.through);
    const [text, cls] = e.verified && e.verified.refused ? ["refused", "down"]
      : e.state !== null && e.state !== undefined
      ? [e.state, e.up ? "up" : "down"] : healthText(e.health);
    cell(row, text, cls);
    const v = e.verified;  // the echo check (exits/verification.py), when one ran
    const measured = v ? (v.country || "unknown") + " (" + (v.address || "nothing measured")
      + ", checked " + new Date(v.checked * 1000).toLocaleTimeString() + ")" : null;
    const country = e.country || e.verified_country || v
      ? (e.country || "–") + " / " + (measured || e.verified_country || "unknown") : "";
    const mismatch = e.country_matches === false || (v && v.verdict === "MISMATCH");
    cell(row, country + (v && v.refused ? " REFUSED" : ""), mismatch ? "mismatch" : "");
    const t = traffic[e.name];
    cell(row, t ? t.connections + " conns, ↑" + bytes(t.up) + " ↓" + bytes(t.down) : "");
  }
}

function showRules(rules) {
  const body = $("rules").tBodies[0];
  body.replaceChildren();
  for (const r of rules) {
    const row = body.insertRow();
    row.dataset.rule = r.number;
    cell(row, r.number || "default");
    cell(row, r.text);
    cell(row, r.exit);
    cell(row, r.hits, "num hits");
  }
}

function showBlocklists(state) {
  $("blocklists-section").hidden = state.lists.length === 0;
  const lists = $("blocklists").tBodies[0];
  lists.replaceChildren();
  for (const l of state.lists) {
    const row = lists.insertRow();
    row.dataset.list = l.name;
    cell(row, l.name);
    cell(row, l.format);
    cell(row, l.rules, "num");
    cell(row, l.blocks, "num blocks");
  }
  const matches = $("matches").tBodies[0];
  matches.replaceChildren();
  for (const m of state.latest.slice(0, 20)) {
    const row = matches.insertRow();
    cell(row, clock(m.time));
    cell(row, m.site);
    cell(row, m.list);
    cell(row, m.rule, "rule");
  }
}

function showInspect(state) {
  $("inspect-section").hidden = state.hosts.length === 0;
  $("inspect-hosts").textContent = state.hosts.join(", ");
  $("inspect-skip").textContent = state.skip.join(", ") || "none";
  $("inspect-ca").textContent = state.ca || "";
  const opened = $("inspect-opened").tBodies[0];
  opened.replaceChildren();
  for (const o of state.opened.slice(0, 50)) {
    const row = opened.insertRow();
    cell(row, o.site);
    cell(row, o.requests, "num");
  }
}

function showCache(state) {
  $("cache-section").hidden = !state.enabled;
  if (!state.enabled) return;
  const ratio = state.hit_ratio === null ? "-" : `${Math.round(state.hit_ratio * 100)}%`;
  $("cache-figures").textContent = `${state.entries} entries, ${state.bytes} of ` +
    `${state.max_bytes} bytes; hit ratio ${ratio} (${state.hits} hits, ${state.misses} misses, ` +
    `${state.revalidations} revalidated)`;
}

// Each [[reverse]] entry: its listen address and marks, then a table of its backends.
function showReverse(entries) {
  $("reverse-section").hidden = entries.length === 0;
  const box = $("reverse");
  box.replaceChildren();
  for (const r of entries) {
    const part = document.createElement("div");
    part.className = "reverse";
    part.dataset.listen = r.listen;
    const marks = [r.tls && "TLS", r.auth && "auth", r.cache && "cache", r.onion && "onion",
                   r.forwarded && "forwarded"].filter(Boolean);
    const title = document.createElement("p");
    title.textContent = r.listen + (marks.length ? " (" + marks.join(", ") + ")" : "") + ", " +
      r.strategy + (r.hosts ? ", hosts " + r.hosts.join(", ") : "") + ", " + r.connections +
      " open" + (r.onion ? "; onion " + r.onion : "");
    const [table, body] = headedTable("backends",
      ["backend", "health", "in flight", "requests", "failures", "bytes up / down"]);
    for (const b of r.backends) {
      const row = body.insertRow();
      row.dataset.backend = b.backend;
      cell(row, b.backend);
      cell(row, b.up ? "up" + (b.latency_ms === null ? "" : ", " + b.latency_ms + " ms")
        : "down since " + clock(b.since) + (b.last_error ? " (" + b.last_error + ")" : ""),
           b.up ? "up" : "down");
      cell(row, b.in_flight, "num"); cell(row, b.requests, "num"); cell(row, b.failures, "num");
      cell(row, bytes(b.up_bytes) + " / " + bytes(b.down_bytes), "num");
    }
    part.append(title, table);
    box.append(part);
  }
}

function showConnections(entries) {
  const body = $("recent").tBodies[0];
  body.replaceChildren();
  for (const c of entries.slice(0, 200)) {
    const row = body.insertRow();
    cell(row, clock(c.time));
    cell(row, c.proto);
    cell(row, c.site);
    cell(row, c.exit);
    cell(row, c.status);
    cell(row, bytes(c.up) + " / " + bytes(c.down), "num");
    cell(row, c.ms, "num");
    cell(row, c.error || "", c.error ? "down" : "");
  }
}

function showTor(tors) {
  $("tor-section").hidden = tors.length === 0;
  const box = $("tor");
  box.replaceChildren();
  for (const t of tors) {
    const part = document.createElement("div");
    part.className = "tor";
    const title = document.createElement("p");
    title.textContent = t.label + ": " + t.state + (t.error ? " (" + t.error + ")" : "") +
      (t.shared_with ? ", shared with " + t.shared_with : "") +
      (t.state !== "ready" && t.last_said ? ", tor last said: " + t.last_said : "") +
      (t.socks ? ", SOCKS " + t.socks : "") +
      (t.exit_countries.length ? ", exits seen in " + t.exit_countries.join(", ") : "");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.title = "bootstrap " + t.progress + "% " + t.summary;
    const fill = document.createElement("i");
    fill.style.width = t.progress + "%";
    bar.append(fill);
    title.append(" ", bar, " " + t.progress + "%");
    const [table, body] = headedTable("circuits",
      ["circuit", "hops", "exit relay", "exit address", "exit country", "isolated"]);
    for (const c of t.circuits) {
      const row = body.insertRow();
      row.dataset.circuit = c.id;
      cell(row, c.id); cell(row, c.hops); cell(row, c.exit); cell(row, c.exit_address);
      cell(row, (c.exit_country || "?").toUpperCase());
      cell(row, c.isolation ? "yes" : "no");
    }
    part.append(title, table);
    box.append(part);
  }
}

function drawChart() {
  const canvas = $("chart");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  const names = [...new Set(series.flatMap(p => Object.keys(p.exits)))].sort();
  const rate = p => name => (p.exits[name] ? p.exits[name].up + p.exits[name].down : 0);
  const max = Math.max(1, ...series.flatMap(p => names.map(rate(p))));
  const step = w / Math.max(1, 119);
  const legend = $("legend");
  legend.replaceChildren();
  names.forEach((name, i) => {
    ctx.strokeStyle = COLORS[i % COLORS.length];
    ctx.lineWidth = 2;
    ctx.beginPath();
    series.forEach((p, j) => {
      const x = w - (series.length - 1 - j) * step;
      const y = h - 4 - (rate(p)(name) / max) * (h - 12);
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const key = document.createElement("span");
    key.style.color = COLORS[i % COLORS.length];
    key.textContent = "■ " + name;
    legend.append(key);
  });
  ctx.fillStyle = "#687385";
  ctx.fillText(bytes(max) + "/s", 4, 12);
}

function loggedOut() {
  localStorage.removeItem(KEY);
  location.replace("/login");
}

// fetch with the page key; a 401 (unless the key is only being tried) ends in the login form.
async function api(path, options = {}, key = localStorage.getItem(KEY), trying = false) {
  if (!key) { loggedOut(); return null; }
  const headers = { ...(options.headers || {}), "X-Anonproxy-Session": key };
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401 && !trying) { loggedOut(); return null; }
  return response;
}

async function refresh(key, trying) {
  const response = await api("/api/state", { headers: { Accept: "application/json" } },
                             key, trying);
  if (!response || !response.ok) return response ? response.status : 401;
  const state = await response.json();
  showStatus(state.status);
  showExits(state.exits, state.status.traffic);
  showRules(state.rules);
  showBlocklists(state.blocklists);
  showInspect(state.inspect);
  showCache(state.cache);
  showReverse(state.reverse);
  showConnections(state.connections);
  showTor(state.tor);
  series = state.series.slice(-120);
  drawChart();
  return 200;
}

async function act(method, path, body) {
  const message = $("message");
  message.className = "";
  message.textContent = "…";
  try {
    const response = await api(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
    if (!response) return;
    const answer = await response.json();
    message.textContent = answer.ok ? answer.message : answer.error;
    if (!answer.ok) message.className = "error";
  } catch (error) {
    message.textContent = String(error);
    message.className = "error";
  }
  await refresh();
}

function tick(data) {
  $("live").classList.add("on");
  showStatus(data.status);
  if (data.sample) {
    series.push(data.sample);
    series = series.slice(-120);
    drawChart();
  }
}

// Server-sent events read from a fetch (EventSource cannot send the page key): each event is
// `event:` and `data:` lines ended by a blank line.
async function readEvents(body, handlers) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer = (buffer + value).replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      let name = "message";
      const data = [];
      for (const line of buffer.slice(0, end).split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      buffer = buffer.slice(end + 2);
      if (handlers[name] && data.length) handlers[name](JSON.parse(data.join("\n")));
    }
  }
}

async function follow() {
  for (;;) {
    try {
      const response = await api("/api/events", { headers: { Accept: "text/event-stream" } });
      if (!response) return;
      if (response.ok) await readEvents(response.body, { tick });
    } catch (error) {
      // the proxy went away or restarted: try again below
    }
    $("live").classList.remove("on");
    await new Promise(resolve => setTimeout(resolve, 3000));
  }
}

// A key in the address bar replaces the stored one only once the API accepts it, so a link
// with a wrong key cannot log this page out.
async function start() {
  if (fresh && await refresh(fresh, true) === 200) localStorage.setItem(KEY, fresh);
  else if (await refresh() === 401) return;
  follow();
  setInterval(refresh, 3000);
}

$("btn-reload").addEventListener("click", () => act("POST", "/api/reload"));
$("btn-switch").addEventListener("click",
  () => act("POST", "/api/profile", { profile: $("profile-select").value }));
$("btn-newnym").addEventListener("click",
  () => act("POST", "/api/newnym", { site: $("newnym-site").value.trim() || null }));
$("btn-clear").addEventListener("click", () => act("DELETE", "/api/connections"));

start();
