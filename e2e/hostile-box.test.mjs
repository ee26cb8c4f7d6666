// Browser test with a hostile box: Playwright drives Debian's Chromium
// against a stack whose user owns two boxes, a well-behaved one and one
// whose page attacks its owner (sim-box's hostile mode). The owner signs
// in, opens the good box's UI (so a cookie exists on its origin), then the
// hostile box's UI; the hostile page runs its attacks and reports each one
// from its own point of view. Every attempt must fail; the console session
// must be untouched. The Rust side (tests/hostile_box.rs) then checks the
// server's view: no audit change, the other box still connected.
//
// Environment: CONSOLE_URL, HOSTILE_ID, OTHER_ID, CHROMIUM.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const consoleUrl = process.env.CONSOLE_URL;
const hostileId = process.env.HOSTILE_ID;
const otherId = process.env.OTHER_ID;
assert.ok(consoleUrl && hostileId && otherId, "CONSOLE_URL, HOSTILE_ID and OTHER_ID are required");
const consoleOrigin = new URL(consoleUrl).origin;
const port = new URL(consoleUrl).port;
const deviceOrigin = (id) => `http://${id}.localhost:${port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const context = await browser.newContext();
  context.setDefaultTimeout(20_000);
  const page = await context.newPage();
  console.log("· sign in as alice");
  await page.goto(consoleUrl);
  await page.getByRole("link", { name: "Sign in with Member Center" }).click();
  await page.getByRole("button", { name: /alice/i }).click();
  await page.getByRole("heading", { name: "My devices" }).waitFor();
  const row = (id) => page.locator(`#devices tbody tr[data-device="${id}"]`);
  await row(otherId).locator('[data-status="online"]').waitFor();
  await row(hostileId).locator('[data-status="online"]').waitFor();

  const open = async (id) => {
    const [popup] = await Promise.all([context.waitForEvent("page"), row(id).getByRole("button", { name: "Open device UI" }).click()]);
    await popup.waitForLoadState();
    assert.equal(new URL(popup.url()).origin, deviceOrigin(id));
    return popup;
  };
  console.log("· open the good box's UI: a cookie now exists on its origin");
  const good = await open(otherId);
  await good.getByRole("heading", { name: "Simulated edge box" }).waitFor();
  await good.close();

  console.log("· open the hostile box's UI and let it attack");
  const hostile = await open(hostileId);
  await hostile.getByRole("heading", { name: "Hostile edge box" }).waitFor();
  const fragment = new URLSearchParams({ console: consoleOrigin, other: deviceOrigin(otherId), otherId }).toString();
  hostile.on("console", (msg) => console.log(`  hostile page: ${msg.text()}`));
  await hostile.goto(`${deviceOrigin(hostileId)}/?attack#${fragment}`);
  await hostile.locator("body[data-done='1']").waitFor({ timeout: 60_000 });
  const results = JSON.parse(await hostile.locator("#results").textContent());
  for (const r of results) console.log(`  ${r.blocked === true ? "blocked" : r.blocked === null ? "opaque " : "SUCCEEDED"}  ${r.name} (${r.detail.slice(0, 100)})`);
  const names = results.map((r) => r.name);
  assert.equal(names.length, 12, `every attack ran: ${names}`);
  const succeeded = results.filter((r) => r.blocked === false).map((r) => r.name);
  assert.deepEqual(succeeded, [], "attacks that succeeded from the hostile page");

  console.log("· the console session is untouched");
  const me = await page.evaluate(() => fetch("/api/auth/me").then(async (r) => ({ status: r.status, body: await r.json() })));
  assert.equal(me.status, 200);
  assert.match(me.body.name, /alice/i);
  const planted = (await context.cookies(consoleUrl)).filter((c) => c.value === "evil");
  assert.deepEqual(planted, [], "cookies planted on the console's origin");
  const consoleCookies = (await context.cookies(consoleUrl)).map((c) => c.name);
  assert.ok(consoleCookies.includes("edge_session"), `console cookies: ${consoleCookies}`);
  console.log("hostile box test passed");
} finally {
  await browser.close();
}
