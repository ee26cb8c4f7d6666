// Edge console: one page over the api-server's JSON API, same origin only.
// Views are picked by the URL fragment (#/devices, #/devices/<id>, #/pair,
// #/sessions, #/service-accounts, #/audit). Every element is built with textContent (never
// innerHTML), every state-changing call sends X-CSRF: 1, every API error is
// shown with the server's message, and a 401 turns the page into a sign-in
// prompt. Polling timers belong to the current view and stop when it changes.
"use strict";

const REFRESH_MS = 3000;
const main = document.getElementById("main");
const noticeBox = document.getElementById("notice");
const problemBox = document.getElementById("problem");
let me = null;
let viewTimers = [];
let viewToken = 0;
let carriedNotice = "";
let firstRoute = true;

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

class SignedOut extends Error {}

/** Call the API; returns parsed JSON (or null for 204). */
async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const init = { method, headers, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") headers["X-CSRF"] = "1";
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch {
    throw new ApiError(0, "network", "The server could not be reached. Check your connection and try again.");
  }
  if (res.status === 401) {
    showSignedOut("Your session has ended. Sign in to continue.");
    throw new SignedOut();
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(res.status, err.code || "http_" + res.status, err.message || "The server answered " + res.status + ".");
  }
  return data;
}

/** Build an element: h("a", {href: "#"}, "text", child, ...). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function notice(text) {
  noticeBox.textContent = text || "";
}

function problem(err) {
  if (err instanceof SignedOut) return;
  problemBox.textContent = err ? (err.message || String(err)) + (err.code ? " (" + err.code + ")" : "") : "";
}

/** Run an action, showing its error; returns false if it failed. */
async function attempt(fn) {
  problem(null);
  try {
    await fn();
    return true;
  } catch (err) {
    problem(err);
    return false;
  }
}

/** Navigate to another view, showing `message` there. */
function go(hash, message) {
  carriedNotice = message || "";
  location.hash = hash;
}

function every(ms, fn) {
  viewTimers.push(setInterval(fn, ms));
}

function stopTimers() {
  viewTimers.forEach(clearInterval);
  viewTimers = [];
}

function show(...nodes) {
  main.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined && n !== false));
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "—";
}

function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return new Date(ms).toLocaleDateString();
}

function statusBadge(d) {
  return h("span", { class: "status " + d.status, "data-status": d.status }, d.status);
}

function lastSeen(d) {
  if (d.status === "online") return h("span", { title: when(d.last_heard_from) }, "now (connected " + ago(d.connected_since) + ")");
  return h("span", { title: when(d.last_seen_at) }, ago(d.last_seen_at));
}

/** Open the box's own UI on its own origin, in a new tab: ask the API for a
 * single-use ticket and post it there in a form (never in a URL). The new
 * tab has no reference back to this window (noopener, and the console's
 * Cross-Origin-Opener-Policy). */
async function openDeviceUi(d) {
  const t = await api("POST", "/api/devices/" + encodeURIComponent(d.id) + "/ui-ticket");
  const form = h("form", { method: "POST", action: t.action, target: "_blank", rel: "noopener", hidden: true },
    h("input", { type: "hidden", name: "ticket", value: t.ticket }));
  document.body.append(form);
  form.submit();
  form.remove();
}

/** The box's own UI button (online only). */
function openUiLink(d) {
  if (d.status !== "online") return h("span", { class: "muted" }, "UI available when online");
  return h("button", { type: "button", class: "secondary open-ui", onclick: () => attempt(() => openDeviceUi(d)) }, "Open device UI");
}

function tableHead(...titles) {
  return h("thead", {}, h("tr", {}, titles.map((t) => h("th", { scope: "col" }, t))));
}

/** Ask for confirmation in the page's modal dialog. */
function confirmAction(title, text, okLabel) {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  document.getElementById("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

// ---- signed-out view ---------------------------------------------------

function signInHref() {
  const back = location.pathname + location.hash;
  return "/api/auth/login?return_to=" + encodeURIComponent(back);
}

function showSignedOut(message, endSessionUrl) {
  stopTimers();
  viewToken++;
  me = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  const dialog = document.getElementById("confirm");
  if (dialog.open) dialog.close();
  show(
    h("h1", {}, "Sign in"),
    h("div", { class: "card" },
      h("p", {}, message || "Sign in with your Member Center account to see and reach your edge boxes."),
      h("p", {}, h("a", { class: "button", href: signInHref(), id: "sign-in" }, "Sign in with Member Center")),
      endSessionUrl ? h("p", { class: "hint" }, "You are signed out of this console. ",
        h("a", { href: endSessionUrl }, "Also sign out of Member Center")) : null),
  );
}

// ---- devices -----------------------------------------------------------

const PAGE = 50;
/** The list's controls survive a refresh and a return from a device page. */
const listState = { q: "", status: "", health: "", sort: "name", offset: 0 };

function healthBadge(hv) {
  const state = (hv && hv.state) || "unknown";
  return h("span", { class: "health " + state, "data-health": state, title: hv && hv.reasons && hv.reasons.length ? hv.reasons.join("; ") : null }, state);
}

/** A figure with its unit, or a dash. */
function fig(v, unit, scale, digits) {
  if (v === null || v === undefined) return "—";
  return (v * (scale || 1)).toFixed(digits === undefined ? 0 : digits) + unit;
}

function select(id, label, value, options, onchange) {
  const el = h("select", { id, onchange: (e) => onchange(e.target.value) },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)));
  return h("span", { class: "control" }, h("label", { for: id }, label), el);
}

async function viewDevices(token) {
  const updated = h("p", { class: "hint", "aria-live": "off" });
  const body = h("tbody");
  const table = h("table", { id: "devices" },
    h("caption", { class: "muted" }, "Your devices; status and figures refresh every few seconds"),
    tableHead("Name", "Status", "Health", "FPS", "Accel °C", "CPU", "Disk", "Last seen", "Labels", ""),
    body);
  const empty = h("div", { class: "card", hidden: true },
    h("p", { id: "empty-text" }, "No devices yet."),
    h("p", {}, h("a", { href: "#/pair" }, "Pair your first device")));
  const search = h("input", { type: "search", id: "device-search", value: listState.q, placeholder: "name, serial or label", maxlength: 100 });
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { listState.q = search.value.trim(); listState.offset = 0; refresh().catch(problem); }, 250);
  });
  const set = (key) => (v) => { listState[key] = v; listState.offset = 0; refresh().catch(problem); };
  const controls = h("form", { class: "controls", role: "search", onsubmit: (e) => e.preventDefault() },
    h("span", { class: "control" }, h("label", { for: "device-search" }, "Search"), search),
    select("filter-status", "Status", listState.status, [["", "any"], ["online", "online"], ["offline", "offline"]], set("status")),
    select("filter-health", "Health", listState.health, [["", "any"], ["ok", "ok"], ["degraded", "degraded"], ["critical", "critical"], ["unknown", "unknown"]], set("health")),
    select("sort", "Sort", listState.sort, [["name", "name A–Z"], ["-name", "name Z–A"], ["-created", "newest"], ["created", "oldest"]], set("sort")));
  const prev = h("button", { type: "button", class: "secondary", id: "page-prev", onclick: () => { listState.offset = Math.max(0, listState.offset - PAGE); refresh().catch(problem); } }, "← Previous");
  const next = h("button", { type: "button", class: "secondary", id: "page-next", onclick: () => { listState.offset += PAGE; refresh().catch(problem); } }, "Next →");
  const pageInfo = h("span", { class: "hint", id: "page-info" });
  show(h("h1", {}, "My devices"), controls, empty, table, h("div", { class: "actions" }, prev, pageInfo, next), updated);

  async function refresh() {
    const p = new URLSearchParams({ limit: String(PAGE), offset: String(listState.offset), sort: listState.sort });
    if (listState.q) p.set("q", listState.q);
    if (listState.status) p.set("status", listState.status);
    if (listState.health) p.set("health", listState.health);
    const devices = await api("GET", "/api/devices?" + p);
    if (token !== viewToken) return;
    const filtered = listState.q || listState.status || listState.health || listState.offset > 0;
    empty.hidden = devices.length > 0;
    document.getElementById("empty-text").textContent = filtered ? "No devices match." : "No devices yet.";
    table.hidden = devices.length === 0;
    prev.disabled = listState.offset === 0;
    next.disabled = devices.length < PAGE;
    pageInfo.textContent = devices.length ? (listState.offset + 1) + "–" + (listState.offset + devices.length) : "";
    body.replaceChildren(...devices.map((d) => {
      const t = d.telemetry || {};
      return h("tr", { "data-device": d.id },
        h("td", {}, h("a", { href: "#/devices/" + d.id, class: "device-name" }, d.name)),
        h("td", {}, statusBadge(d)),
        h("td", {}, healthBadge(d.health)),
        h("td", { class: "num" }, fig(t.fps, "", 1, 1)),
        h("td", { class: "num" }, fig(t.accel_temperature, "", 1, 0)),
        h("td", { class: "num" }, fig(t.cpu_busy, " %", 100)),
        h("td", { class: "num" }, fig(t.disk_used, " %", 100)),
        h("td", {}, lastSeen(d)),
        h("td", {}, d.labels.map((l) => h("span", { class: "label" }, l))),
        h("td", {}, openUiLink(d)));
    }));
    updated.textContent = "Updated " + new Date().toLocaleTimeString();
  }
  await refresh();
  every(REFRESH_MS, () => refresh().catch(problem));
}

// ---- device telemetry charts ------------------------------------------------

const RANGES = [["1h", "Last hour", 3600e3], ["24h", "Last day", 86400e3], ["7d", "Last week", 7 * 86400e3]];
const CHARTS = [
  { metric: "inference_fps", title: "Inference FPS per model", unit: "FPS", by: "model" },
  { metric: "inference_latency_seconds", title: "Inference latency per model", unit: "ms", scale: 1000, by: "model" },
  { metric: "accel_utilization_ratio", title: "Accelerator utilisation", unit: "%", scale: 100, by: "accel" },
  { metric: "accel_temperature_celsius", title: "Accelerator temperature", unit: "°C", by: "accel" },
  { metric: "cpu_busy_ratio", title: "CPU busy", unit: "%", scale: 100 },
  { metric: "memory_used_ratio", title: "Memory used", unit: "%", scale: 100 },
  { metric: "disk_used_ratio", title: "Disk used", unit: "%", scale: 100, by: "mountpoint" },
];
// Line colours with at least 4.5:1 contrast on white.
const COLOURS = ["#1f4e8c", "#a1261b", "#1d6b32", "#6b3fa0", "#8a4b00"];

/** One chart: a figure holding a uPlot canvas, or a note when there is no data. */
function chart(def) {
  const caption = h("figcaption", {}, def.title);
  const plot = h("div", { class: "plot" });
  const latest = h("p", { class: "hint latest" });
  const el = h("figure", { class: "chart", "data-metric": def.metric }, caption, plot, latest);
  let u = null;
  function render(series) {
    const lines = series.series.filter((s) => s.values.some((v) => v !== null));
    el.dataset.points = String(lines.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0));
    if (lines.length === 0) {
      if (u) { u.destroy(); u = null; }
      plot.replaceChildren(h("p", { class: "muted" }, "No data for this range."));
      latest.textContent = "";
      return;
    }
    const scale = def.scale || 1;
    const data = [series.timestamps.map((t) => t / 1000),
      ...lines.map((s) => s.values.map((v) => (v === null ? null : v * scale)))];
    const names = lines.map((s) => (def.by && s.labels[def.by]) || def.title);
    latest.textContent = lines.map((s, i) => {
      const last = [...s.values].reverse().find((v) => v !== null);
      return names[i] + ": " + (last * scale).toFixed(1) + " " + def.unit;
    }).join(" · ");
    if (u && u.series.length === data.length) { u.setData(data); return; }
    if (u) u.destroy();
    plot.replaceChildren();
    const width = Math.max(280, Math.min(plot.clientWidth || 600, 900));
    u = new uPlot({
      width, height: 180,
      scales: { x: { time: true } },
      axes: [{ stroke: "#4a4a4a" }, { stroke: "#4a4a4a", label: def.unit, size: 60 }],
      series: [{}, ...names.map((n, i) => ({ label: n, stroke: COLOURS[i % COLOURS.length], width: 2, spanGaps: false }))],
    }, data, plot);
  }
  return { el, def, render };
}

async function viewDevice(token, id) {
  const d = await api("GET", "/api/devices/" + encodeURIComponent(id));
  if (token !== viewToken) return;
  const title = h("h1", {}, d.name);
  const facts = h("dl");
  const uiSlot = h("span");
  function renderFacts(d) {
    title.textContent = d.name;
    uiSlot.replaceChildren(openUiLink(d));
    facts.replaceChildren(
      h("dt", {}, "Status"), h("dd", {}, statusBadge(d)),
      h("dt", {}, "Last seen"), h("dd", {}, lastSeen(d)),
      h("dt", {}, "Model"), h("dd", {}, d.model || "—"),
      h("dt", {}, "Serial"), h("dd", {}, d.serial || "—"),
      h("dt", {}, "Agent version"), h("dd", {}, d.agent_version || "—"),
      h("dt", {}, "Labels"), h("dd", {}, d.labels.length ? d.labels.map((l) => h("span", { class: "label" }, l)) : "—"),
      h("dt", {}, "Paired"), h("dd", {}, when(d.created_at)),
      h("dt", {}, "Device id"), h("dd", {}, h("code", {}, d.id)));
    renderLive(d);
  }
  const health = h("div", { class: "card", id: "device-health" });
  const connection = h("dl", { id: "device-connection" });
  let telemetry = null;
  function figure(metric) {
    const s = telemetry && telemetry.figures && (telemetry.figures.series || []).find((x) => x.metric === metric);
    return s ? s.value : null;
  }
  function renderLive(d) {
    const hv = d.health;
    health.replaceChildren(h("h2", {}, "Health"), h("p", {}, healthBadge(hv), hv && hv.since ? h("span", { class: "hint" }, " since " + when(hv.since)) : null),
      hv && hv.reasons.length ? h("ul", { id: "health-reasons" }, hv.reasons.map((r) => h("li", {}, r))) : h("p", { class: "hint" }, hv ? "All rules hold." : "Not judged yet: no telemetry."));
    const rtt = figure("tunnel_rtt_seconds");
    const models = (telemetry && telemetry.figures && telemetry.figures.models) || [];
    connection.replaceChildren(
      h("dt", {}, "Status"), h("dd", {}, statusBadge(d)),
      h("dt", {}, "Online since"), h("dd", {}, d.status === "online" ? when(d.connected_since) : "—"),
      h("dt", {}, "Last seen"), h("dd", {}, lastSeen(d)),
      h("dt", {}, "Relay"), h("dd", {}, d.relay || "—"),
      h("dt", {}, "Reconnects"), h("dd", {}, figure("agent_reconnects") ?? "—"),
      h("dt", {}, "Round trip"), h("dd", {}, rtt === null ? "—" : (rtt * 1000).toFixed(1) + " ms"),
      h("dt", {}, "Telemetry"), h("dd", { id: "scrape-outcome" }, !telemetry ? "—"
        : telemetry.outcome === "ok" ? "scraped " + ago(telemetry.scraped_at)
        : telemetry.outcome === "none" ? "the box serves no metrics"
        : telemetry.outcome === "never" ? "not scraped yet"
        : "last scrape failed: " + (telemetry.error || "")),
      h("dt", {}, "Models"), h("dd", {}, models.length ? models.map((m) => m.model + " " + m.version + " (" + m.runtime + ")").join(", ") : "—"));
  }
  renderFacts(d);

  let range = RANGES[0];
  const charts = CHARTS.map(chart);
  const rangeButtons = RANGES.map((r) => h("button", { type: "button", class: "secondary range", "data-range": r[0], "aria-pressed": String(r === range), onclick: () => {
    range = r;
    rangeButtons.forEach((b) => b.setAttribute("aria-pressed", String(b.dataset.range === r[0])));
    refreshCharts().catch(problem);
  } }, r[1]));
  async function refreshCharts() {
    const to = Date.now();
    const from = to - range[2];
    const [t, ...series] = await Promise.all([
      api("GET", "/api/devices/" + encodeURIComponent(id) + "/telemetry"),
      ...charts.map((c) => api("GET", "/api/devices/" + encodeURIComponent(id) + "/telemetry/series?metric=" + c.def.metric + "&from=" + from + "&to=" + to)),
    ]);
    if (token !== viewToken) return;
    telemetry = t;
    charts.forEach((c, i) => c.render(series[i]));
  }
  const chartsCard = h("section", { class: "card", id: "charts", "aria-labelledby": "charts-title" },
    h("h2", { id: "charts-title" }, "Figures"),
    h("div", { class: "actions", role: "group", "aria-label": "Time range" }, rangeButtons),
    h("div", { class: "charts" }, charts.map((c) => c.el)));

  const nameInput = h("input", { type: "text", id: "device-name", name: "name", value: d.name, maxlength: 100, required: true });
  const renameForm = h("form", { id: "rename-form", onsubmit: async (e) => {
    e.preventDefault();
    await attempt(async () => {
      const after = await api("PATCH", "/api/devices/" + encodeURIComponent(id), { name: nameInput.value });
      renderFacts(after);
      notice("Renamed to “" + after.name + "”.");
    });
  } },
    h("label", { for: "device-name" }, "Name"),
    nameInput, " ", h("button", { type: "submit" }, "Rename"));

  const labelsInput = h("input", { type: "text", id: "device-labels", name: "labels", value: d.labels.join(", "), "aria-describedby": "labels-hint" });
  const labelsForm = h("form", { id: "labels-form", onsubmit: async (e) => {
    e.preventDefault();
    const labels = labelsInput.value.split(",").map((l) => l.trim()).filter((l) => l.length > 0);
    await attempt(async () => {
      const after = await api("PATCH", "/api/devices/" + encodeURIComponent(id), { labels });
      labelsInput.value = after.labels.join(", ");
      notice("Labels saved.");
    });
  } },
    h("label", { for: "device-labels" }, "Labels"),
    h("p", { class: "hint", id: "labels-hint" }, "Comma-separated, up to 20 labels of 1 to 40 characters."),
    labelsInput, " ", h("button", { type: "submit" }, "Save labels"));

  const rotated = h("div", { "aria-live": "polite" });
  const actions = h("div", { class: "actions" },
    uiSlot,
    h("button", { type: "button", class: "secondary", id: "disconnect", onclick: () => attempt(async () => {
      const r = await api("POST", "/api/devices/" + encodeURIComponent(id) + "/disconnect");
      notice(r.disconnected ? "Disconnected; the box will reconnect by itself." : "The device was not connected.");
    }) }, "Disconnect"),
    h("button", { type: "button", class: "secondary", id: "rotate", onclick: async () => {
      if (!(await confirmAction("Rotate credential?", "The box's current credential stops working at once and its tunnel closes. You install the new credential on the box (or pair it again).", "Rotate"))) return;
      await attempt(async () => {
        const r = await api("POST", "/api/devices/" + encodeURIComponent(id) + "/credential");
        rotated.replaceChildren(h("div", { class: "card" },
          h("h2", {}, "New credential (shown once)"),
          h("p", {}, "Write it to the agent's credential file on the box (mode 0600), then restart the agent:"),
          h("pre", { id: "new-credential" }, r.credential)));
        notice("Credential rotated.");
      });
    } }, "Rotate credential"),
    h("button", { type: "button", class: "danger", id: "delete", onclick: async () => {
      if (!(await confirmAction("Delete “" + title.textContent + "”?", "The device is removed from your account, its credential is revoked and its tunnel closes. To use the box again you pair it anew.", "Delete device"))) return;
      const ok = await attempt(() => api("DELETE", "/api/devices/" + encodeURIComponent(id)));
      if (ok) go("#/devices", "Deleted “" + title.textContent + "”.");
    } }, "Delete"));

  show(h("p", {}, h("a", { href: "#/devices" }, "← All devices")), title,
    h("div", { class: "card" }, facts, actions), rotated,
    health, h("div", { class: "card" }, h("h2", {}, "Connection"), connection), chartsCard,
    h("div", { class: "card" }, renameForm, labelsForm));
  await refreshCharts();
  renderLive(d);
  every(REFRESH_MS, () => api("GET", "/api/devices/" + encodeURIComponent(id)).then((d) => {
    if (token === viewToken) renderFacts(d);
  }).catch(problem));
  every(15000, () => refreshCharts().catch(problem));
}

// ---- pairing -----------------------------------------------------------

async function viewPair(token) {
  const out = h("div", { "aria-live": "polite" });
  const pending = h("tbody");
  const pendingTable = h("table", { id: "pending-codes" },
    tableHead("Created", "Expires", ""), pending);
  let shown = null; // { id, expires_at }
  let countdownTimer = null;

  async function refreshPending() {
    const codes = await api("GET", "/api/pairing/codes");
    if (token !== viewToken) return;
    pendingTable.hidden = codes.length === 0;
    pending.replaceChildren(...codes.map((c) => h("tr", {},
      h("td", {}, when(c.created_at)),
      h("td", {}, when(c.expires_at)),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
        await api("DELETE", "/api/pairing/codes/" + encodeURIComponent(c.id));
        if (shown && shown.id === c.id) { shown = null; out.replaceChildren(h("p", {}, "Code cancelled.")); }
        await refreshPending();
      }) }, "Cancel code")))));
    if (shown && !codes.some((c) => c.id === shown.id) && Date.now() < shown.expires_at) {
      shown = null;
      out.replaceChildren(h("div", { class: "card", id: "paired" },
        h("p", {}, "The code was used: your device is paired."),
        h("p", {}, h("a", { href: "#/devices" }, "See it in your devices"))));
    }
  }

  const create = h("button", { type: "button", id: "create-code", onclick: () => attempt(async () => {
    const c = await api("POST", "/api/pairing/codes");
    shown = { id: c.id, expires_at: c.expires_at };
    const countdown = h("span", { id: "code-expiry" });
    const tick = () => {
      const left = Math.max(0, Math.round((c.expires_at - Date.now()) / 1000));
      countdown.textContent = left > 0
        ? "Expires in " + Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0")
        : "Expired; create a new code.";
    };
    tick();
    clearInterval(countdownTimer);
    countdownTimer = setInterval(tick, 1000);
    viewTimers.push(countdownTimer);
    const command = "edge-agent pair --server " + location.origin + " --code " + c.code;
    out.replaceChildren(h("div", { class: "card" },
      h("h2", {}, "Pairing code"),
      h("p", { class: "code", id: "pairing-code" }, c.code),
      h("p", {}, countdown),
      h("p", {}, "On the box, run:"),
      h("pre", { id: "pair-command" }, command),
      h("p", { class: "hint" }, "The code works once. The box keeps its credential in the agent's credential file and connects with ", h("code", {}, "edge-agent run"), ".")));
    await refreshPending();
  }) }, "Create pairing code");

  show(h("h1", {}, "Pair a device"),
    h("div", { class: "card" },
      h("p", {}, "A pairing code links a box to your account. Create one here, then type it into the box's agent within ten minutes."),
      create),
    out, h("h2", {}, "Unused codes"), pendingTable);
  await refreshPending();
  every(REFRESH_MS, () => refreshPending().catch(problem));
}

// ---- sessions and audit --------------------------------------------------

async function viewSessions(token) {
  const body = h("tbody");
  async function refresh() {
    const sessions = await api("GET", "/api/auth/sessions");
    if (token !== viewToken) return;
    body.replaceChildren(...sessions.map((s) => h("tr", {},
      h("td", {}, s.kind === "bearer" ? "Terminal" + (s.client ? " (" + s.client + ")" : "") : "Browser"),
      h("td", {}, when(s.created_at), s.current ? h("strong", {}, " (this browser)") : null),
      h("td", {}, ago(s.last_seen_at)),
      h("td", {}, when(s.expires_at)),
      h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
        await api("DELETE", "/api/auth/sessions/" + encodeURIComponent(s.id));
        if (s.current) showSignedOut("You ended this browser's session.");
        else { notice("Session ended."); await refresh(); }
      }) }, s.current ? "End (signs you out)" : "End session")))));
  }
  show(h("h1", {}, "My sessions"),
    h("table", { id: "sessions" },
      tableHead("Kind", "Signed in", "Last active", "Expires", ""), body));
  await refresh();
}

// ---- service accounts ----------------------------------------------------

const SCOPES = [
  ["devices:read", "Read devices and telemetry"],
  ["devices:manage", "Manage devices (rename, label, delete, rotate, pair)"],
  ["devices:remote", "Remote access (proxied API, edge forward)"],
];

/** A secret shown once, with how to use it. */
function secretCard(title, clientId, secret, extra) {
  return h("div", { class: "card", id: "sa-secret" },
    h("h2", {}, title),
    h("p", {}, "Client id: ", h("code", { id: "sa-client-id" }, clientId)),
    h("p", {}, "Client secret (shown once; store it now):"),
    h("pre", { id: "sa-client-secret" }, secret),
    extra ? h("p", { class: "hint" }, extra) : null,
    h("p", { class: "hint" }, "From a script: ", h("code", {}, "EDGE_CLIENT_ID=" + clientId + " EDGE_CLIENT_SECRET=… edge devices"),
      ", or get a token with the client_credentials grant at ", h("code", {}, location.origin + "/api/oauth/token"), "."));
}

async function viewServiceAccounts(token) {
  const out = h("div", { "aria-live": "polite" });
  const body = h("tbody");
  const name = h("input", { id: "sa-name", type: "text", maxlength: 100, required: true });
  const boxes = SCOPES.map(([value, label]) => {
    const box = h("input", { type: "checkbox", value, id: "sa-scope-" + value.replace(":", "-") });
    return [box, h("label", { class: "check" }, box, " " + label)];
  });
  const selector = h("input", { id: "sa-selector", type: "text", placeholder: "site=berlin, line=2" });
  const days = h("input", { id: "sa-days", type: "number", min: 1, max: 3650, placeholder: "never" });

  async function refresh() {
    const accounts = await api("GET", "/api/service-accounts");
    if (token !== viewToken) return;
    body.replaceChildren(...accounts.map((a) => h("tr", {},
      h("td", {}, a.name),
      h("td", {}, h("code", {}, a.id)),
      h("td", {}, a.scopes.join(", ")),
      h("td", {}, a.selector.length ? a.selector.join(", ") : "all devices"),
      h("td", {}, String(a.secrets.length) + (a.public_jwk ? " + key" : "")),
      h("td", {}, ago(a.last_used_at)),
      h("td", {}, a.expires_at ? when(a.expires_at) : "never"),
      h("td", {},
        h("button", { type: "button", class: "secondary", onclick: () => attempt(async () => {
          const r = await api("POST", "/api/service-accounts/" + encodeURIComponent(a.id) + "/secrets", {});
          out.replaceChildren(secretCard("New secret for " + a.name, a.id, r.client_secret,
            "The older secrets keep working until " + when(r.previous_expire_at) + "."));
          await refresh();
        }) }, "Rotate secret"), " ",
        h("button", { type: "button", class: "danger", onclick: () => attempt(async () => {
          if (!(await confirmAction("Delete " + a.name + "?", "Its tokens stop working at once and its open connections close.", "Delete"))) return;
          await api("DELETE", "/api/service-accounts/" + encodeURIComponent(a.id));
          notice("Service account deleted.");
          await refresh();
        }) }, "Delete")))));
  }

  const form = h("form", { class: "card", id: "sa-form", onsubmit: (ev) => {
    ev.preventDefault();
    attempt(async () => {
      const scopes = boxes.filter(([b]) => b.checked).map(([b]) => b.value);
      const req = {
        name: name.value,
        scopes,
        selector: selector.value.split(",").map((l) => l.trim()).filter((l) => l),
      };
      if (days.value) req.expires_at = Date.now() + Number(days.value) * 86400000;
      const made = await api("POST", "/api/service-accounts", req);
      out.replaceChildren(secretCard("Service account " + made.account.name, made.client_id, made.client_secret));
      form.reset();
      await refresh();
    });
  } },
    h("h2", {}, "New service account"),
    h("p", {}, h("label", { for: "sa-name" }, "Name"), " ", name),
    h("fieldset", {}, h("legend", {}, "Scopes"), boxes.map(([, l]) => h("div", {}, l))),
    h("p", {}, h("label", { for: "sa-selector" }, "Only devices with all these labels (optional)"), " ", selector),
    h("p", {}, h("label", { for: "sa-days" }, "Expires after (days, optional)"), " ", days),
    h("button", { type: "submit", id: "sa-create" }, "Create service account"));

  show(h("h1", {}, "Service accounts"),
    h("p", {}, "Service accounts let scripts and CI act on your devices without your browser session. Each gets short-lived tokens with the scopes you give it, and sees only the devices its labels select."),
    form, out,
    h("table", { id: "service-accounts" },
      tableHead("Name", "Client id", "Scopes", "Devices", "Secrets", "Last used", "Expires", ""), body));
  await refresh();
}

function describe(e) {
  const d = e.detail || {};
  const parts = [];
  for (const [k, v] of Object.entries(d)) {
    if (v === null || v === undefined) continue;
    const value = k.endsWith("_at") && typeof v === "number" ? when(v)
      : Array.isArray(v) ? v.join(", ")
      : typeof v === "object" ? JSON.stringify(v) : v;
    parts.push(k.replace(/_/g, " ") + ": " + value);
  }
  return parts.join(" · ");
}

/** Device events link to the device; pairing-code events show the code's id. */
function auditTarget(e) {
  if (!e.target) return "—";
  const short = h("code", { title: e.target }, e.target.slice(0, 8));
  return e.action.startsWith("pairing_code_") ? short : h("a", { href: "#/devices/" + e.target }, short);
}

async function viewAudit(token, offset) {
  const limit = 50;
  const events = await api("GET", "/api/audit?limit=" + limit + "&offset=" + offset);
  if (token !== viewToken) return;
  const nav = h("div", { class: "actions" },
    offset > 0 ? h("a", { href: "#/audit/" + Math.max(0, offset - limit) }, "← Newer") : null,
    events.length === limit ? h("a", { href: "#/audit/" + (offset + limit) }, "Older →") : null);
  show(h("h1", {}, "My audit log"),
    h("table", { id: "audit" },
      tableHead("When", "Event", "Target", "Details"),
      h("tbody", {}, events.map((e) => h("tr", {},
        h("td", {}, when(e.created_at)),
        h("td", {}, e.action.replace(/_/g, " ")),
        h("td", {}, auditTarget(e)),
        h("td", {}, describe(e)))))),
    events.length === 0 ? h("p", {}, "No events yet.") : null, nav);
}

// ---- routing -------------------------------------------------------------

async function route() {
  stopTimers();
  const token = ++viewToken;
  problem(null);
  if (!me) return;
  const hash = location.hash || "#/devices";
  const [, page, arg] = hash.split("/");
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.getAttribute("href") === "#/" + page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (page === "devices" && arg) await viewDevice(token, decodeURIComponent(arg));
    else if (page === "pair") await viewPair(token);
    else if (page === "sessions") await viewSessions(token);
    else if (page === "service-accounts") await viewServiceAccounts(token);
    else if (page === "audit") await viewAudit(token, Number(arg) || 0);
    else await viewDevices(token);
  } catch (err) {
    if (err instanceof SignedOut) return;
    if (token === viewToken) {
      show(h("h1", {}, "Something went wrong"), h("p", {}, h("a", { href: "#/devices" }, "Back to devices")));
      problem(err);
    }
  }
  // After a view change, move focus to the new content (screen readers
  // announce it); on first load leave it at the top, before the skip link.
  if (token === viewToken && !firstRoute) main.focus({ preventScroll: true });
  firstRoute = false;
}

async function signOut() {
  await attempt(async () => {
    const r = await api("POST", "/api/auth/logout");
    notice("");
    showSignedOut("You are signed out.", r && r.end_session_url);
  });
}

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  window.addEventListener("hashchange", () => {
    notice(carriedNotice);
    carriedNotice = "";
    route();
  });
  try {
    const status = await api("GET", "/api/auth/status");
    if (!status.signed_in) return showSignedOut();
    me = status.user;
  } catch (err) {
    show(h("h1", {}, "Edge console"));
    return problem(err);
  }
  document.getElementById("user-name").textContent = me.name || me.email || "Signed in";
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  await route();
}

start();
