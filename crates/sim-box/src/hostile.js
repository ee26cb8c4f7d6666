// A compromised box's page: run from its device origin, it tries to act as
// its owner. Parameters come in the fragment (never sent to a server):
// #console=<console origin>&other=<other device origin>&otherId=<id>.
// Each attempt is recorded from this page's point of view:
//   blocked: true  - the page saw it fail;
//   blocked: false - the page saw it succeed (a security failure);
//   blocked: null  - the page cannot tell (an opaque request): the test
//                    checks the server's side instead.
"use strict";
const params = new URLSearchParams(location.hash.slice(1));
const consoleOrigin = params.get("console");
const other = params.get("other");
const otherId = params.get("otherId");
const results = [];
const record = (name, blocked, detail) => results.push({ name, blocked, detail: String(detail) });

async function attempt(name, fn) {
  console.log("attempt: " + name);
  try {
    const seen = await fn();
    record(name, false, seen);
  } catch (err) {
    record(name, true, err && err.message ? err.message : err);
  }
}

/** Resolve with the body if a credentialed read succeeds. */
async function read(url, init) {
  const res = await fetch(url, { credentials: "include", ...init });
  if (!res.ok) throw new Error("status " + res.status);
  return (await res.text()).slice(0, 80);
}

function formPost(action, fields) {
  return new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "sink" + Math.random().toString(36).slice(2);
    frame.style.display = "none";
    frame.onload = () => resolve();
    document.body.append(frame);
    const form = document.createElement("form");
    form.method = "POST";
    form.action = action;
    form.target = frame.name;
    for (const [k, v] of Object.entries(fields)) {
      const input = document.createElement("input");
      input.name = k;
      input.value = v;
      form.append(input);
    }
    document.body.append(form);
    form.submit();
    setTimeout(resolve, 1500);
  });
}

async function run() {
  await attempt("read the owner's device list", () => read(consoleOrigin + "/api/devices"));
  await attempt("read the owner's audit log", () => read(consoleOrigin + "/api/audit"));
  await attempt("rotate the other device's credential", () =>
    read(consoleOrigin + "/api/devices/" + otherId + "/credential", { method: "POST", headers: { "X-CSRF": "1" } }));
  await attempt("create a pairing code", () =>
    read(consoleOrigin + "/api/pairing/codes", { method: "POST", headers: { "X-CSRF": "1" } }));
  // Opaque attempts: the page cannot see the answer; the server must refuse.
  await fetch(consoleOrigin + "/api/devices/" + otherId + "/credential", { method: "POST", mode: "no-cors", credentials: "include" }).catch(() => {});
  await fetch(consoleOrigin + "/api/pairing/codes", { method: "POST", mode: "no-cors", credentials: "include" }).catch(() => {});
  await formPost(consoleOrigin + "/api/devices/" + otherId + "/credential", { x: "1" });
  await formPost(consoleOrigin + "/api/pairing/codes", { x: "1" });
  record("blind posts to the console (checked by the server)", null, "sent");

  await attempt("read the other device's origin", () => read(other + "/api/info"));
  await attempt("read the other device's page in a frame", () => new Promise((resolve, reject) => {
    const frame = document.createElement("iframe");
    frame.src = other + "/";
    frame.onload = () => {
      try {
        const text = frame.contentDocument.body.innerText;
        resolve(text.slice(0, 80));
      } catch (err) {
        reject(err);
      }
    };
    document.body.append(frame);
    setTimeout(() => reject(new Error("frame never loaded")), 5000);
  }));

  // Cookies: planted from script, and by this box's server.
  document.cookie = "__Host-edge_session=evil; Path=/; Secure";
  document.cookie = "edge_session=evil; Path=/; Domain=localhost";
  await fetch("/hostile/plant-cookies", { credentials: "include" });
  // A `__Host-` cookie set from script stays on this device's own host,
  // where it reaches nobody else (the test checks the console's jar); one
  // that could reach the console (Domain=localhost) or one of ours set by
  // this box's server must not exist at all.
  const jar = document.cookie;
  record("plant a session cookie for the console's host or our device cookie",
    !/(^|; )edge_session=evil|edge_device=evil/.test(jar), jar);
  record("the box's own cookie is kept (control)", /box_pref=kept/.test(jar), jar);
  await attempt("wipe site data with Clear-Site-Data, then the device still answers", async () => {
    const res = await fetch("/api/info", { credentials: "include" });
    if (res.ok) throw new Error("device cookie survived Clear-Site-Data");
    return "device access lost: " + res.status;
  });

  await attempt("register a service worker at /", async () => {
    if (!navigator.serviceWorker) throw new Error("no service worker API");
    const reg = await navigator.serviceWorker.register("/sw.js", { scope: "/" });
    return "registered " + reg.scope;
  });
  record("reach window.opener", window.opener === null, String(window.opener));

  document.getElementById("results").textContent = JSON.stringify(results, null, 1);
  document.body.dataset.done = "1";
}

if (consoleOrigin && other && otherId) run();
