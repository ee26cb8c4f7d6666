// Edge console: one page over the api-server's JSON API, same origin only.
// Views are picked by the URL fragment (#/devices, #/devices/<id>, #/pair,
// #/sessions, #/audit). Every element is built with textContent (never
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

async function viewDevices(token) {
  const updated = h("p", { class: "hint", "aria-live": "off" });
  const body = h("tbody");
  const table = h("table", { id: "devices" },
    h("caption", { class: "muted" }, "Your devices; status refreshes every few seconds"),
    tableHead("Name", "Status", "Last seen", "Labels", ""),
    body);
  const empty = h("div", { class: "card", hidden: true },
    h("p", {}, "No devices yet."),
    h("p", {}, h("a", { href: "#/pair" }, "Pair your first device")));
  show(h("h1", {}, "My devices"), empty, table, updated);

  async function refresh() {
    const devices = await api("GET", "/api/devices?limit=200");
    if (token !== viewToken) return;
    empty.hidden = devices.length > 0;
    table.hidden = devices.length === 0;
    body.replaceChildren(...devices.map((d) =>
      h("tr", { "data-device": d.id },
        h("td", {}, h("a", { href: "#/devices/" + d.id, class: "device-name" }, d.name)),
        h("td", {}, statusBadge(d)),
        h("td", {}, lastSeen(d)),
        h("td", {}, d.labels.map((l) => h("span", { class: "label" }, l))),
        h("td", {}, openUiLink(d)))));
    updated.textContent = "Updated " + new Date().toLocaleTimeString();
  }
  await refresh();
  every(REFRESH_MS, () => refresh().catch(problem));
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
      h("dt", {}, "Paired"), h("dd", {}, when(d.created_at)),
      h("dt", {}, "Device id"), h("dd", {}, h("code", {}, d.id)));
  }
  renderFacts(d);

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
    h("div", { class: "card" }, renameForm, labelsForm));
  every(REFRESH_MS, () => api("GET", "/api/devices/" + encodeURIComponent(id)).then((d) => {
    if (token === viewToken) renderFacts(d);
  }).catch(problem));
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
      tableHead("Signed in", "Last active", "Expires", ""), body));
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
