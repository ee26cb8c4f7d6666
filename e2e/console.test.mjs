// Browser test of the web console: Playwright (playwright-core) drives
// Debian's Chromium against a running devstack. It signs in through the
// development provider, pairs the simulated box by running the exact
// `edge-agent pair` command the page shows, watches the box turn online
// without a reload, opens its UI through the proxy, renames it, deletes it
// and signs out; then checks that API errors are shown and that a lost
// session offers sign-in again.
// Fails on any console error or any request that leaves the stack.
//
// Environment: CONSOLE_URL (devstack's console), EDGE_AGENT_BIN (the
// edge-agent binary), PAIR_CWD (directory to run the pair command in, the
// devstack's working directory), ARTIFACTS_DIR (screenshots), CHROMIUM
// (default /usr/bin/chromium).
import { chromium } from "playwright-core";
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import assert from "node:assert/strict";

const consoleUrl = process.env.CONSOLE_URL;
const agentBin = process.env.EDGE_AGENT_BIN;
const pairCwd = process.env.PAIR_CWD;
const artifacts = process.env.ARTIFACTS_DIR;
assert.ok(consoleUrl && agentBin && pairCwd && artifacts, "CONSOLE_URL, EDGE_AGENT_BIN, PAIR_CWD and ARTIFACTS_DIR are required");
const origin = new URL(consoleUrl).origin;
const STEP = 20_000;

function step(name) {
  console.log(`· ${name}`);
}

/** The page shows no leaked placeholders (null, undefined, NaN, objects). */
async function assertClean(page) {
  const text = await page.locator("main").innerText();
  assert.doesNotMatch(text, /\bnull\b|\bundefined\b|\bNaN\b|\[object Object\]/, `odd text on ${page.url()}:\n${text}`);
  assert.deepEqual(await lowContrast(page), [], `text below 4.5:1 contrast on ${page.url()}`);
}

/** WCAG AA: every visible text has a contrast ratio of at least 4.5:1
 * against the background it is drawn on. Returns the offenders. */
async function lowContrast(page) {
  return page.evaluate(() => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (let e = el; e; e = e.parentElement) {
        const c = rgb(getComputedStyle(e).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    for (const el of document.querySelectorAll("body *")) {
      const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
      if (!own || !el.checkVisibility()) continue;
      const style = getComputedStyle(el);
      const fg = rgb(style.color).slice(0, 3);
      const [a, b] = [lum(fg), lum(background(el))].sort((x, y) => y - x);
      const ratio = (a + 0.05) / (b + 0.05);
      if (ratio < 4.5 && parseFloat(style.opacity) > 0) bad.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
    }
    return bad;
  });
}

async function signInAs(page, user) {
  await page.getByRole("link", { name: "Sign in with Member Center" }).click();
  await page.getByRole("button", { name: new RegExp(user, "i") }).click();
  await page.locator("#user-name").waitFor();
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
  // launch() gives every run a new, empty profile directory of its own.
});

const problems = [];
let watchConsole = true;
try {
  const context = await browser.newContext();
  context.setDefaultTimeout(STEP);
  // Every request must stay on loopback: the console and its API, the
  // development provider's sign-in page, and device origins
  // (`<device>.localhost`). Nothing from fonts, CDNs, etc.
  context.on("request", (req) => {
    const url = new URL(req.url());
    const loopback = ["localhost", "127.0.0.1"].includes(url.hostname) || url.hostname.endsWith(".localhost");
    if (!loopback && url.protocol !== "data:") {
      problems.push(`external request: ${req.url()}`);
    }
  });
  const watch = (page) => {
    page.on("console", (msg) => {
      if (watchConsole && msg.type() === "error") problems.push(`console error on ${page.url()}: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`page error on ${page.url()}: ${err.message}`));
  };
  context.on("page", watch);
  const page = await context.newPage();

  step("signed out: the console offers sign-in");
  await page.goto(consoleUrl);
  const signIn = page.getByRole("link", { name: "Sign in with Member Center" });
  await signIn.waitFor();

  step("sign in as alice through the development provider");
  await signInAs(page, "alice");
  assert.equal(new URL(page.url()).origin, origin);
  await page.getByRole("heading", { name: "My devices" }).waitFor();
  await page.getByText("No devices yet.").waitFor();
  assert.match(await page.locator("#user-name").textContent(), /alice/i);

  step("pair: the page shows a code, its countdown and the command");
  await page.getByRole("link", { name: "Pair a device" }).click();
  await page.getByRole("button", { name: "Create pairing code" }).click();
  const code = (await page.locator("#pairing-code").textContent()).trim();
  assert.match(code, /^[0-9A-HJKMNP-TV-Z]{5}-[0-9A-HJKMNP-TV-Z]{5}$/);
  assert.match(await page.locator("#code-expiry").textContent(), /^Expires in (10:00|9:[0-5]\d)$/);
  const command = (await page.locator("#pair-command").textContent()).trim();
  assert.equal(command, `edge-agent pair --server ${origin} --code ${code}`);

  step("a second tab on the device list, then run the page's command on the box");
  const list = await context.newPage();
  await list.goto(`${consoleUrl}#/devices`);
  await list.getByText("No devices yet.").waitFor();
  await list.evaluate(() => { window.noReloadMarker = true; });
  const [program, ...args] = command.split(" ");
  assert.equal(program, "edge-agent");
  const paired = spawnSync(agentBin, args, { cwd: pairCwd, encoding: "utf8", timeout: STEP });
  assert.equal(paired.status, 0, `edge-agent pair failed: ${paired.stderr}${paired.stdout}`);
  const pairedAt = Date.now();

  step("the box appears in the list and turns online without a reload");
  const listRow = list.locator("#devices tbody tr").first();
  await listRow.locator('[data-status="online"]').waitFor({ timeout: 30_000 });
  console.log(`online in the list ${Date.now() - pairedAt} ms after \`edge-agent pair\` returned`);
  assert.equal(await list.evaluate(() => window.noReloadMarker), true, "the page was reloaded");
  await list.close();

  step("the pairing page notices its code was used");
  await page.getByText("The code was used: your device is paired.").waitFor();
  await page.getByRole("link", { name: "See it in your devices" }).click();
  const row = page.locator("#devices tbody tr").first();
  await row.locator('[data-status="online"]').waitFor();
  const deviceId = await row.getAttribute("data-device");
  await assertClean(page);
  mkdirSync(artifacts, { recursive: true });
  const shot = join(artifacts, "console-devices.png");
  await page.screenshot({ path: shot, fullPage: true });
  console.log(`screenshot of the device list: ${shot}`);

  step("open the device UI on the device's own origin in a new tab");
  const [popup] = await Promise.all([context.waitForEvent("page"), row.getByRole("button", { name: "Open device UI" }).click()]);
  await popup.getByRole("heading", { name: "Simulated edge box" }).waitFor();
  const deviceOrigin = new URL(popup.url());
  assert.equal(deviceOrigin.host, `${deviceId}.localhost:${new URL(consoleUrl).port}`);
  assert.equal(deviceOrigin.pathname, "/");
  assert.doesNotMatch(popup.url(), /ticket/i, "the ticket must not be in a URL");
  await popup.locator("#info").filter({ hasText: "firmware" }).waitFor();
  assert.equal(await popup.evaluate(() => window.opener), null, "the device page can reach the console window");
  await popup.close();

  step("device detail: charts drawn from the box's scraped figures");
  // Poll the API the page uses until three steps of both models are in.
  const enough = (id) => fetch(`/api/devices/${id}/telemetry/series?metric=inference_fps`)
    .then((res) => res.json())
    .then((r) => r.series.length === 2 && r.series.every((s) => s.values.filter((v) => v !== null).length >= 3));
  const deadline = Date.now() + 30_000;
  while (!(await page.evaluate(enough, deviceId))) {
    assert.ok(Date.now() < deadline, "no scraped figures within 30 s");
    await page.waitForTimeout(500);
  }
  await row.getByRole("link").first().click();
  await page.locator("#rename-form").waitFor();
  for (const metric of ["inference_fps", "inference_latency_seconds", "accel_temperature_celsius", "accel_utilization_ratio", "cpu_busy_ratio", "memory_used_ratio", "disk_used_ratio"]) {
    const chart = page.locator(`figure[data-metric="${metric}"]`);
    await chart.locator("canvas").first().waitFor();
    const points = await chart.getAttribute("data-points");
    assert.ok(Number(points) >= 3, `${metric}: ${points} points`);
  }
  const fpsChart = page.locator('figure[data-metric="inference_fps"]');
  assert.match(await fpsChart.locator(".latest").textContent(), /yolov8n: \d+\.\d FPS · resnet50: \d+\.\d FPS|resnet50: \d+\.\d FPS · yolov8n: \d+\.\d FPS/);
  // The health pass judges the box by the default rules: all hold.
  await page.locator('#device-health [data-health="ok"]').waitFor({ timeout: 30_000 });
  assert.match(await page.locator("#scrape-outcome").textContent(), /scraped/);
  await assertClean(page);
  const detailShot = join(artifacts, "console-device-detail.png");
  await page.screenshot({ path: detailShot, fullPage: true });
  console.log(`screenshot of the device detail page: ${detailShot}`);
  await page.getByRole("button", { name: "Last day" }).click();
  await page.locator('button[data-range="24h"][aria-pressed="true"]').waitFor();
  await fpsChart.locator("canvas").first().waitFor();
  await assertClean(page);

  step("device detail: labelled inputs, rename");
  const unlabelled = await page.$$eval("main input", (inputs) =>
    inputs.filter((i) => !(i.labels && i.labels.length) && !i.getAttribute("aria-label")).map((i) => i.id || i.name));
  assert.deepEqual(unlabelled, [], "inputs without a label");
  await page.getByLabel("Name", { exact: true }).fill("Lab box 7");
  await page.getByRole("button", { name: "Rename" }).click();
  await page.getByRole("heading", { name: "Lab box 7" }).waitFor();
  await page.getByRole("status").filter({ hasText: "Renamed" }).waitFor();
  await assertClean(page);

  step("delete with confirmation");
  await page.getByRole("button", { name: "Delete", exact: true }).click();
  const dialog = page.getByRole("dialog");
  await dialog.waitFor();
  await dialog.getByRole("button", { name: "Delete device" }).click();
  await page.getByRole("heading", { name: "My devices" }).waitFor();
  await page.getByText("No devices yet.").waitFor();
  await page.getByRole("status").filter({ hasText: "Deleted “Lab box 7”" }).waitFor();

  step("keyboard: Tab reaches the skip link, then the navigation");
  await page.reload();
  await page.getByRole("heading", { name: "My devices" }).waitFor();
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent), "Skip to content");
  await page.keyboard.press("Tab");
  assert.equal(await page.evaluate(() => document.activeElement.textContent.trim()), "Devices");

  step("audit log lists what happened");
  await page.getByRole("link", { name: "Audit log" }).click();
  for (const action of ["login", "pairing code created", "device paired", "device renamed", "device deleted"]) {
    await page.locator("#audit td", { hasText: new RegExp(`^${action}$`) }).first().waitFor();
  }
  await assertClean(page);

  step("my sessions: end another browser's session");
  const other = await browser.newContext();
  const otherPage = await other.newPage();
  await otherPage.goto(consoleUrl);
  await signInAs(otherPage, "alice");
  await page.getByRole("link", { name: "Sessions" }).click();
  const sessionRows = page.locator("#sessions tbody tr");
  await sessionRows.nth(1).waitFor();
  assert.equal(await sessionRows.count(), 2);
  await assertClean(page);
  await page.getByRole("button", { name: "End session", exact: true }).click();
  await page.getByRole("status").filter({ hasText: "Session ended." }).waitFor();
  await sessionRows.nth(1).waitFor({ state: "detached" });
  const otherStatus = await otherPage.evaluate(() => fetch("/api/auth/status").then((r) => r.json()));
  assert.equal(otherStatus.signed_in, false, "the ended session still works");
  await other.close();

  step("service accounts: create one (its secret shown once), use it, rotate, delete");
  await page.getByRole("link", { name: "Service accounts" }).click();
  await page.getByRole("heading", { name: "Service accounts" }).waitFor();
  await page.getByLabel("Name", { exact: true }).fill("nightly CI");
  await page.getByLabel(/Read devices/).check();
  await page.getByLabel(/Remote access/).check();
  await page.getByLabel(/Only devices with all these labels/).fill("site=lab");
  await page.getByRole("button", { name: "Create service account" }).click();
  await page.locator("#sa-client-secret").waitFor();
  const firstSecret = await page.locator("#sa-client-secret").textContent();
  const clientId = await page.locator("#sa-client-id").textContent();
  assert.match(firstSecret, /^edge_sk_[0-9a-f]{64}$/);
  const saRow = page.locator("#service-accounts tbody tr", { hasText: "nightly CI" });
  await saRow.waitFor();
  assert.match(await saRow.textContent(), /devices:read, devices:remote.*site=lab/);
  const tokenStatus = await page.evaluate(async ([id, secret]) => {
    const r = await fetch("/api/oauth/token", {
      method: "POST",
      headers: { Authorization: "Basic " + btoa(id + ":" + secret), "Content-Type": "application/x-www-form-urlencoded" },
      body: "grant_type=client_credentials",
    });
    return r.status;
  }, [clientId, firstSecret]);
  assert.equal(tokenStatus, 200, "the shown secret gets a token");
  await assertClean(page);
  const saShot = join(artifacts, "console-service-accounts.png");
  await page.screenshot({ path: saShot, fullPage: true });
  console.log(`screenshot of the service accounts page: ${saShot}`);
  await saRow.getByRole("button", { name: "Rotate secret" }).click();
  await page.getByText(/The older secrets keep working until/).waitFor();
  assert.notEqual(await page.locator("#sa-client-secret").textContent(), firstSecret);
  await saRow.getByRole("button", { name: "Delete" }).click();
  await page.getByRole("dialog").getByRole("button", { name: "Delete" }).click();
  await page.getByRole("status").filter({ hasText: "Service account deleted." }).waitFor();
  await saRow.waitFor({ state: "detached" });
  await page.getByRole("link", { name: "Sessions" }).click();
  await page.getByRole("heading", { name: "My sessions" }).waitFor();

  step("sign out");
  await page.getByRole("button", { name: "Sign out" }).click();
  await page.getByText("You are signed out.").waitFor();
  const status = await page.evaluate(() => fetch("/api/auth/status").then((r) => r.json()));
  assert.equal(status.signed_in, false);

  // From here on a 401 is expected, and the browser logs it as an error.
  watchConsole = false;
  step("sign in again");
  await signInAs(page, "alice");
  // Sign-in returns to the view it was started from.
  await page.getByRole("heading", { name: "My sessions" }).waitFor();
  step("an API error is shown with the server's message");
  await page.evaluate((id) => { location.hash = `#/devices/${id}`; }, deviceId);
  await page.getByRole("alert").filter({ hasText: "(not_found)" }).waitFor();
  step("a session ended elsewhere turns the page into a sign-in prompt");
  await context.clearCookies();
  await page.evaluate(() => { location.hash = "#/sessions"; });
  await page.getByText("Your session has ended. Sign in to continue.").waitFor();
  await page.getByRole("link", { name: "Sign in with Member Center" }).waitFor();

  assert.deepEqual(problems, [], "console errors or external requests");
  console.log("console browser test passed");
} finally {
  await browser.close();
}
