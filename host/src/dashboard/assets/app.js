// Yonexus dashboard: plain JS, no framework, no network beyond this host's own /api.
// Reads /api/* once, then follows /api/stream (server-sent events). Actions (revoke, reload,
// reveal a pairing code) send the admin token kept in this tab's sessionStorage. While the
// host cannot read its trust store, the follower and pairing lists keep their last contents
// and a notice says they may be stale.
"use strict";

const TOKEN_KEY = "yonexus.adminToken";
const CHART_POINTS = 120;
const CONFIRM_MS = 4000;

const state = {
  actions: false,          // the host has an admin token configured
  skew: 0,                 // server clock minus local clock, in seconds
  followers: [],
  pairings: [],            // each with .deadline (local ms) derived from expiresIn
  plugins: [],
  events: [],
  rates: [],
  revealed: new Map(),     // identifier -> {code, hideAt}
  store: { available: true }, // the last /api/stream `store` event (or a 503 at load)
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

// ---- time ------------------------------------------------------------------------------

const serverNow = () => Date.now() / 1000 + state.skew;

function ago(unix) {
  if (unix === null || unix === undefined) return "—";
  const s = Math.max(0, Math.round(serverNow() - unix));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function localTime(unix) {
  return new Date(unix * 1000).toLocaleString();
}

function clockTime(unix) {
  return new Date(unix * 1000).toLocaleTimeString();
}

function timeCell(unix, field) {
  const data = { field };
  if (unix) data.at = unix;
  const td = el("td", { class: "time", dataset: data }, ago(unix));
  if (unix) td.title = localTime(unix);
  return td;
}

function countdown(deadline) {
  const s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
  return s >= 60 ? `${Math.floor(s / 60)} min ${s % 60} s` : `${s} s`;
}

// ---- notices and the token -----------------------------------------------------------------

let noticeTimer = null;
function notice(text, kind) {
  const n = $("notice");
  n.textContent = text;
  n.className = kind || "info";
  n.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { n.hidden = true; }, kind === "error" ? 12000 : 5000);
}

const token = () => sessionStorage.getItem(TOKEN_KEY) || "";
const unlocked = () => state.actions && token() !== "";

function renderAuth() {
  $("readonly").hidden = state.actions;
  $("token-form").hidden = !state.actions || unlocked();
  $("unlocked").hidden = !unlocked();
  document.body.classList.toggle("unlocked", unlocked());
  renderFollowers();
  renderPairings();
}

async function action(path, what) {
  let response;
  try {
    response = await fetch(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": `Bearer ${token()}` },
      body: "{}",
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    notice(`${what}: the host did not answer (${e.message})`, "error");
    return null;
  }
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const why = (body && body.error) || `HTTP ${response.status}`;
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      renderAuth();
    }
    notice(`${what}: ${why}`, "error");
    return null;
  }
  return body;
}

// ---- followers -----------------------------------------------------------------------------

// The revoke button asks for a second click; which one is armed survives re-renders.
let armedRevoke = { id: null, until: 0 };

function revokeButton(id) {
  const armed = armedRevoke.id === id && armedRevoke.until > Date.now();
  const b = el("button", { type: "button", class: "action danger revoke" + (armed ? " armed" : ""), dataset: { identifier: id } },
    armed ? "Confirm revoke" : "Revoke");
  b.addEventListener("click", async () => {
    if (!(armedRevoke.id === id && armedRevoke.until > Date.now())) {
      armedRevoke = { id, until: Date.now() + CONFIRM_MS };
      b.textContent = "Confirm revoke";
      b.classList.add("armed");
      setTimeout(() => { if (armedRevoke.id === id && armedRevoke.until <= Date.now()) renderFollowers(); }, CONFIRM_MS + 50);
      return;
    }
    armedRevoke = { id: null, until: 0 };
    b.disabled = true;
    b.textContent = "Revoking…";
    const r = await action(`/api/followers/${encodeURIComponent(id)}/revoke`, `revoke ${id}`);
    if (r) notice(r.revoked ? `Revoked ${id}: its trust is gone and it was disconnected.` : `${id} had no trust record.`);
    renderFollowers();
  });
  return b;
}

function renderFollowers() {
  const body = $("followers").tBodies[0];
  const withHost = state.followers.some((f) => f.node);
  document.querySelectorAll("#followers .col-host").forEach((c) => { c.hidden = !withHost; });
  document.querySelectorAll("#followers .col-actions").forEach((c) => { c.hidden = !unlocked(); });
  const rows = state.followers.map((f) => {
    const live = f.liveness;
    return el("tr", { dataset: { identifier: f.identifier } },
      el("td", { class: "ident" }, f.identifier,
        f.allowed ? null : el("span", { class: "tag warn", title: "not on the allowlist" }, "not allowed")),
      el("td", { dataset: { field: "pairing" } }, el("span", { class: `pill ${f.pairingStatus}` }, f.pairingStatus)),
      el("td", { dataset: { field: "liveness" } }, el("span", { class: `live ${live}` }, live)),
      timeCell(f.lastHeartbeatAt, "heartbeat"),
      f.connectedSince ? timeCell(f.connectedSince, "connected") : el("td", { class: "muted", dataset: { field: "connected" } }, "—"),
      el("td", { class: "mono", dataset: { field: "remote" } }, f.remote || "—"),
      withHost ? el("td", { class: "mono", dataset: { field: "node" } }, f.node || "—") : null,
      unlocked() ? el("td", { class: "col-actions" },
        f.pairingStatus === "paired" || f.remote ? revokeButton(f.identifier) : null) : null,
    );
  });
  body.replaceChildren(...rows);
  $("followers-empty").hidden = rows.length > 0;
  const online = state.followers.filter((f) => f.liveness !== "offline").length;
  $("sum-online").textContent = String(online);
  $("sum-known").textContent = `of ${state.followers.length} known`;
}

// ---- pairings ------------------------------------------------------------------------------

function revealButton(id) {
  const b = el("button", { type: "button", class: "action reveal", dataset: { identifier: id } }, "Reveal code");
  b.addEventListener("click", async () => {
    b.disabled = true;
    const r = await action(`/api/pairings/${encodeURIComponent(id)}/reveal`, `reveal the code of ${id}`);
    b.disabled = false;
    if (r && r.code) {
      state.revealed.set(id, { code: r.code, hideAt: Date.now() + 60000 });
      renderPairings();
    }
  });
  return b;
}

function codeCell(id) {
  const shown = state.revealed.get(id);
  if (shown && shown.hideAt > Date.now()) {
    const hide = el("button", { type: "button", class: "quiet" }, "Hide");
    hide.addEventListener("click", () => { state.revealed.delete(id); renderPairings(); });
    return el("td", { dataset: { field: "code" } }, el("code", { class: "code" }, shown.code), " ", hide);
  }
  state.revealed.delete(id);
  return el("td", { dataset: { field: "code" } },
    el("span", { class: "muted" }, "hidden"), " ", unlocked() ? revealButton(id) : null);
}

function renderPairings() {
  const rows = state.pairings.map((p) =>
    el("tr", { dataset: { identifier: p.identifier } },
      el("td", { class: "ident" }, p.identifier),
      el("td", { class: "countdown", dataset: { deadline: p.deadline }, title: localTime(p.expiresAt) }, countdown(p.deadline)),
      el("td", {}, p.notifyStatus || "—"),
      el("td", { class: "num" }, String(p.wrongAttempts)),
      codeCell(p.identifier)));
  $("pairings").tBodies[0].replaceChildren(...rows);
  $("pairings").hidden = rows.length === 0;
  $("pairings-empty").hidden = rows.length > 0;
  $("sum-pending").textContent = String(rows.length);
}

function setPairings(list) {
  const received = Date.now();
  state.pairings = list.map((p) => Object.assign({}, p, { deadline: received + p.expiresIn * 1000 }));
  renderPairings();
}

// ---- trust store outage ----------------------------------------------------------------------

// `s`: {available: true} or {available: false, error, since, listsAt} (Unix seconds).
function setStore(s) {
  state.store = s;
  const n = $("store-notice");
  const down = !s.available;
  n.hidden = !down;
  $("followers-section").classList.toggle("stale", down);
  $("pairings-section").classList.toggle("stale", down);
  if (!down) return;
  const lists = s.listsAt
    ? `The follower and pairing lists below are from ${clockTime(s.listsAt)} and may be stale.`
    : "The follower and pairing lists cannot be shown until it answers.";
  const since = s.since ? ` since ${clockTime(s.since)}` : "";
  n.textContent = `Trust store unavailable${since}: ${lists} (${s.error || "no answer"})`;
}

// ---- plugins -------------------------------------------------------------------------------

function renderPlugins() {
  const rows = state.plugins.map((p) =>
    el("tr", { dataset: { plugin: p.name } },
      el("td", { class: "ident" }, p.name, p.library !== p.name ? el("span", { class: "sub" }, ` (${p.library})`) : null),
      el("td", { class: "mono" }, p.version),
      el("td", { class: "mono" }, p.abi),
      el("td", {}, ...p.rules.map((r) => el("span", { class: "tag" }, r))),
      el("td", { class: "num" }, String(p.generation)),
      el("td", { class: "num" }, String(p.queueDepth)),
      el("td", { class: "num", dataset: { field: "rate" } }, p.callsPerSec.toFixed(p.callsPerSec < 10 ? 1 : 0)),
      el("td", { class: "num" }, String(p.calls)),
      el("td", { class: "num" + (p.panics ? " warn" : "") }, String(p.panics)),
      el("td", {}, el("span", { class: `pill breaker-${p.breaker}`, title: p.breaker === "open" ? "disabled after repeated panics until it is reloaded" : "serving" },
        p.breaker === "open" ? "open (disabled)" : "closed"))));
  $("plugins").tBodies[0].replaceChildren(...rows);
  $("plugins-empty").hidden = rows.length > 0;
  $("sum-plugins").textContent = String(rows.length);
  const open = state.plugins.filter((p) => p.breaker === "open").length;
  $("sum-breakers").textContent = open ? `${open} disabled` : "all serving";
}

// ---- events --------------------------------------------------------------------------------

function eventItem(e) {
  const who = e.identifier ? el("span", { class: "ident" }, e.identifier) : el("span", { class: "muted" }, "host");
  return el("li", { class: `ev ${e.kind}` },
    el("time", { datetime: new Date(e.at * 1000).toISOString(), title: localTime(e.at) }, clockTime(e.at)),
    el("span", { class: `kind ${e.kind}` }, e.kind),
    who,
    e.detail ? el("span", { class: "detail" }, e.detail) : null,
    e.node ? el("span", { class: "sub", title: "on another host of the cluster" }, `on ${e.node}`) : null);
}

function renderEvents() {
  const list = $("events");
  list.replaceChildren(...state.events.slice(-100).reverse().map(eventItem));
  $("events-empty").hidden = state.events.length > 0;
}

// ---- chart ---------------------------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// The top of the y axis: four gridline steps of 1, 2, 2.5 or 5 times a power of ten.
function niceMax(v) {
  const raw = Math.max(v, 1) / 4;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return 4 * m * p;
  return 40 * p;
}

function renderChart() {
  const chart = $("chart");
  const W = 720, H = 180, L = 44, R = 8, T = 10, B = 22;
  const pts = state.rates.slice(-CHART_POINTS);
  const max = niceMax(Math.max(1, ...pts.map((p) => Math.max(p.inPerSec, p.outPerSec))));
  const x = (i) => L + (W - L - R) * (i + (CHART_POINTS - pts.length)) / (CHART_POINTS - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const nodes = [];
  for (let k = 0; k <= 4; k++) {
    const v = (max * k) / 4;
    nodes.push(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
    nodes.push(svg("text", { x: L - 6, y: y(v) + 4, class: "axis", "text-anchor": "end" }, String(+v.toFixed(2))));
  }
  for (const [label, i] of [["−2 min", 0], ["−1 min", 60], ["now", CHART_POINTS - 1]]) {
    nodes.push(svg("text", { x: L + (W - L - R) * i / (CHART_POINTS - 1), y: H - 6, class: "axis", "text-anchor": i === 0 ? "start" : i === CHART_POINTS - 1 ? "end" : "middle" }, label));
  }
  for (const [key, cls] of [["inPerSec", "in"], ["outPerSec", "out"]]) {
    if (pts.length > 1) {
      const d = pts.map((p, i) => `${x(i).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      nodes.push(svg("polyline", { points: d, class: `series ${cls}` }));
    }
  }
  chart.replaceChildren(...nodes);
  const last = pts[pts.length - 1];
  $("sum-rate").textContent = last ? `${fmtRate(last.inPerSec)} · ${fmtRate(last.outPerSec)}` : "–";
}

const fmtRate = (v) => (v < 10 ? v.toFixed(1) : Math.round(v).toString());

function addRate(sample) {
  const last = state.rates[state.rates.length - 1];
  if (last && last.at === sample.at && last.received === sample.received) return;
  state.rates.push(sample);
  if (state.rates.length > CHART_POINTS) state.rates.splice(0, state.rates.length - CHART_POINTS);
  renderChart();
}

// ---- loading and live updates ------------------------------------------------------------------

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "omit" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

// A trust-store list: its rows, or null (and the outage notice) when the host answers 503.
async function getList(path) {
  const r = await fetch(path, { cache: "no-store", credentials: "omit" });
  if (r.status === 503) {
    let body = null;
    try { body = await r.json(); } catch (_) { body = null; }
    if (state.store.available) setStore({ available: false, error: (body && body.error) || "HTTP 503" });
    return null;
  }
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function setStatus(s) {
  state.skew = s.now - Date.now() / 1000;
  state.actions = !!s.actions;
  const ready = $("ready");
  ready.textContent = s.ready ? "ready" : "not ready";
  ready.className = `badge ${s.ready ? "ok" : "bad"}`;
  $("version").textContent = `yonexus ${s.version}`;
  renderAuth();
}

async function loadAll() {
  const [status, followers, pairings, plugins, events, rates] = await Promise.all([
    getJSON("/api/status"), getList("/api/followers"), getList("/api/pairings"),
    getJSON("/api/plugins"), getJSON("/api/events"), getJSON("/api/rates")]);
  setStatus(status);
  if (followers) state.followers = followers;
  renderFollowers();
  if (pairings) setPairings(pairings); else renderPairings();
  state.plugins = plugins;
  renderPlugins();
  state.events = events;
  renderEvents();
  state.rates = rates.slice(-CHART_POINTS);
  renderChart();
}

function connect() {
  const live = $("live");
  const es = new EventSource("/api/stream");
  const on = (name, f) => es.addEventListener(name, (m) => {
    let data;
    try { data = JSON.parse(m.data); } catch (_) { return; }
    f(data);
  });
  let lost = false;
  es.onopen = () => {
    live.textContent = "live";
    live.className = "badge ok";
    if (lost) {
      // Back after a break: the lists come with the stream, the history does not.
      lost = false;
      Promise.all([getJSON("/api/status"), getJSON("/api/events"), getJSON("/api/rates")])
        .then(([s, e, r]) => {
          setStatus(s);
          state.events = e;
          renderEvents();
          state.rates = r.slice(-CHART_POINTS);
          renderChart();
        })
        .catch(() => {});
    }
  };
  es.onerror = () => {
    lost = true;
    live.textContent = "reconnecting…";
    live.className = "badge bad";
  };
  on("store", (d) => setStore(d));
  on("followers", (d) => { state.followers = d; renderFollowers(); });
  on("pairings", (d) => setPairings(d));
  on("plugins", (d) => { state.plugins = d; renderPlugins(); });
  on("rate", (d) => {
    state.skew = d.at - Date.now() / 1000;
    addRate(d);
  });
  on("lifecycle", (d) => {
    state.events.push(d);
    if (state.events.length > 200) state.events.splice(0, state.events.length - 200);
    renderEvents();
  });
  on("resync", () => { getJSON("/api/events").then((e) => { state.events = e; renderEvents(); }).catch(() => {}); });
}

function tick() {
  document.querySelectorAll("td.time[data-at]").forEach((td) => { td.textContent = ago(Number(td.dataset.at)); });
  let expired = false;
  document.querySelectorAll("td.countdown").forEach((td) => {
    const deadline = Number(td.dataset.deadline);
    td.textContent = countdown(deadline);
    if (deadline <= Date.now()) expired = true;
  });
  for (const [id, r] of state.revealed) if (r.hideAt <= Date.now()) { state.revealed.delete(id); expired = true; }
  if (expired) renderPairings();
  $("clock").textContent = `host time ${new Date(serverNow() * 1000).toLocaleTimeString()}`;
}

function init() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    renderAuth();
    notice("Actions unlocked for this tab (the token is kept in sessionStorage until the tab closes).");
  });
  $("lock").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    renderAuth();
  });
  let reloadArmed = null;
  $("reload").addEventListener("click", async () => {
    const b = $("reload");
    if (!reloadArmed) {
      b.textContent = "Confirm reload";
      b.classList.add("armed");
      reloadArmed = setTimeout(() => { reloadArmed = null; b.textContent = "Reload configuration"; b.classList.remove("armed"); }, CONFIRM_MS);
      return;
    }
    clearTimeout(reloadArmed);
    reloadArmed = null;
    b.disabled = true;
    b.textContent = "Reloading…";
    const r = await action("/api/reload", "reload");
    if (r) {
      const p = r.previous;
      const earlier = p
        ? ` since the last reload (${p.trigger}, ${new Date(p.at * 1000).toLocaleTimeString()}), which applied: ${p.changes.join("; ") || "no change"}`
          + (p.needsRestart.length ? ` (needs a restart: ${p.needsRestart.join(", ")})` : "")
        : "";
      const what = r.changes.length ? r.changes.join("; ") : `nothing changed${earlier}`;
      const restart = r.needsRestart.length ? ` (needs a restart: ${r.needsRestart.join(", ")})` : "";
      notice(`Reloaded in ${r.tookMs} ms: ${what}${restart}`);
    }
    b.disabled = false;
    b.textContent = "Reload configuration";
    b.classList.remove("armed");
  });
  setInterval(tick, 1000);
  loadAll()
    .catch((e) => notice(`Could not load the dashboard data: ${e.message}`, "error"))
    .finally(() => {
      document.body.dataset.loaded = "true";
      connect();
    });
}

document.addEventListener("DOMContentLoaded", init);
