// End-to-end check of the mamori web console in a real (headless) Chromium.
//
// Run by crates/mamori/tests/console_e2e.rs against a real manager, or by hand:
//   MAMORI_URL=https://127.0.0.1:PORT MAMORI_USER=admin MAMORI_PASSWORD=… MAMORI_TOTP_SECRET=BASE32 \
//   MAMORI_HOST=ward-pc-01 MAMORI_DETECTION_TITLE='…' MAMORI_ARTEFACTS=/tmp/shots node console.mjs
//
// Optional: MAMORI_CHROMIUM (default /usr/bin/chromium), MAMORI_E2E_TIMEOUT_MS (default 15000).
//
// Prints one JSON line per step ({"step": "...", "ok": true, "ms": N}); on the first failure prints
// {"step": "...", "ok": false, "error": "..."}, saves failure.png in MAMORI_ARTEFACTS and exits 1.
// Exit 2 means the environment was incomplete (nothing was run).

import crypto from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const REQUIRED = [
  "MAMORI_URL",
  "MAMORI_USER",
  "MAMORI_PASSWORD",
  "MAMORI_TOTP_SECRET",
  "MAMORI_HOST",
  "MAMORI_DETECTION_TITLE",
  "MAMORI_ARTEFACTS",
];
const missingEnv = REQUIRED.filter((name) => !process.env[name]);
if (missingEnv.length) {
  console.error(`console.mjs: missing environment variables: ${missingEnv.join(", ")}`);
  process.exit(2);
}

const env = Object.fromEntries(REQUIRED.map((name) => [name, process.env[name]]));
const BASE_URL = env.MAMORI_URL.replace(/\/+$/, "");
const ARTEFACTS = env.MAMORI_ARTEFACTS;
const TIMEOUT = Number(process.env.MAMORI_E2E_TIMEOUT_MS || 15000);
const CHROMIUM = process.env.MAMORI_CHROMIUM || "/usr/bin/chromium";
const CONSOLE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../crates/mamori-manager/console");
const JAPANESE = /[\u3040-\u30ff\u4e00-\u9fff]/;
const TOTP_STEP_S = 30;

fs.mkdirSync(ARTEFACTS, { recursive: true });

// ---- RFC 6238 TOTP (SHA-1, 6 digits, 30 s), as authenticator apps compute it.

function base32Decode(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0;
  let value = 0;
  const out = [];
  for (const c of text.replace(/[\s=]/g, "").toUpperCase()) {
    const index = alphabet.indexOf(c);
    if (index < 0) throw new Error(`MAMORI_TOTP_SECRET is not base32 (character ${JSON.stringify(c)})`);
    value = (value << 5) | index;
    bits += 5;
    if (bits >= 8) {
      out.push((value >>> (bits - 8)) & 0xff);
      bits -= 8;
    }
  }
  return Buffer.from(out);
}

function totpCode(secret, step) {
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(step));
  const mac = crypto.createHmac("sha1", base32Decode(secret)).update(counter).digest();
  const offset = mac[mac.length - 1] & 0x0f;
  return String((mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

const currentStep = () => Math.floor(Date.now() / 1000 / TOTP_STEP_S);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * The step to use for the next code: not one already used (the server refuses a reused step), and not
 * one about to end (the code could arrive after it). Waits until that step is the current one.
 */
async function nextUsableStep(lastUsed) {
  for (;;) {
    const now = Date.now() / 1000;
    const step = Math.floor(now / TOTP_STEP_S);
    const left = (step + 1) * TOTP_STEP_S - now;
    if (step > lastUsed && left > 3) return step;
    await sleep(Math.ceil(left * 1000) + 200);
  }
}

// ---- steps

let page;
let browser;
const problems = []; // uncaught page errors and CSP violations

async function step(name, fn) {
  const started = Date.now();
  try {
    const detail = await fn();
    if (problems.length) throw new Error(`page errors: ${problems.join(" | ")}`);
    console.log(JSON.stringify({ step: name, ok: true, ms: Date.now() - started, ...(detail ? { detail } : {}) }));
  } catch (err) {
    const message = err && err.message ? err.message.split("\n")[0] : String(err);
    console.log(JSON.stringify({ step: name, ok: false, error: message }));
    console.error(`console.mjs: step "${name}" failed: ${err && err.stack ? err.stack : err}`);
    if (page) {
      await page.screenshot({ path: path.join(ARTEFACTS, "failure.png"), fullPage: false }).catch(() => {});
    }
    if (browser) await browser.close().catch(() => {});
    process.exit(1);
  }
}

const byTestId = (id) => `[data-testid="${id}"]`;

async function shot(name) {
  await page.screenshot({ path: path.join(ARTEFACTS, name) });
}

async function pageTitle() {
  return (await page.locator(byTestId("page-title")).first().textContent()).trim();
}

async function gotoNav(name) {
  await page.click(byTestId(`nav-${name}`));
  await page.waitForFunction((n) => location.hash.startsWith(`#/${n}`), name);
}

function fail(message) {
  throw new Error(message);
}

/** Runs a wait and, if it times out, fails with a message that says what was missing. */
async function expecting(what, wait) {
  try {
    return await wait();
  } catch (err) {
    const cause = err && err.message ? err.message.split("\n")[0] : String(err);
    throw new Error(`${what} (${cause})`);
  }
}

await step("static-checks", async () => {
  // Every t("key") in app.js must exist in both dictionaries, and the dictionaries must agree.
  const app = fs.readFileSync(path.join(CONSOLE_DIR, "app.js"), "utf8");
  const ja = JSON.parse(fs.readFileSync(path.join(CONSOLE_DIR, "i18n/ja.json"), "utf8"));
  const en = JSON.parse(fs.readFileSync(path.join(CONSOLE_DIR, "i18n/en.json"), "utf8"));
  const used = new Set([...app.matchAll(/\bt\("([^"]+)"/g)].map((m) => m[1]));
  const missingJa = [...used].filter((k) => !(k in ja));
  const missingEn = [...used].filter((k) => !(k in en));
  if (missingJa.length || missingEn.length) {
    fail(`i18n keys missing: ja ${JSON.stringify(missingJa)} en ${JSON.stringify(missingEn)}`);
  }
  const onlyJa = Object.keys(ja).filter((k) => !(k in en));
  const onlyEn = Object.keys(en).filter((k) => !(k in ja));
  if (onlyJa.length || onlyEn.length) fail(`ja.json and en.json differ: ${JSON.stringify({ onlyJa, onlyEn })}`);
  for (const forbidden of [/\.innerHTML\b/, /\.outerHTML\b/, /insertAdjacentHTML/, /\beval\s*\(/, /new Function\s*\(/, /document\.write/]) {
    if (forbidden.test(app)) fail(`app.js uses ${forbidden}`);
  }
  return `${used.size} keys used, ${Object.keys(ja).length} in each dictionary`;
});

browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
  ],
});
const context = await browser.newContext({
  ignoreHTTPSErrors: true,
  viewport: { width: 1366, height: 768 },
  locale: "ja-JP",
  timezoneId: "Asia/Tokyo",
});
context.setDefaultTimeout(TIMEOUT);
page = await context.newPage();
page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
page.on("console", (msg) => {
  if (msg.type() === "error" && /Content Security Policy|Refused to/i.test(msg.text())) problems.push(`CSP: ${msg.text()}`);
});

await step("open-login-in-japanese", async () => {
  await page.goto(`${BASE_URL}/`);
  await expecting("the login form did not appear", () => page.waitForSelector(byTestId("login-username")));
  const lang = await page.getAttribute("html", "lang");
  if (lang !== "ja") fail(`html lang is ${JSON.stringify(lang)}, expected "ja"`);
  const title = await pageTitle();
  const submit = (await page.textContent(byTestId("login-submit"))).trim();
  if (!JAPANESE.test(title) || !JAPANESE.test(submit)) fail(`login page is not in Japanese: ${JSON.stringify({ title, submit })}`);
  await shot("login.png");
  return title;
});

await step("login-password-and-totp", async () => {
  let secret = env.MAMORI_TOTP_SECRET;
  let lastStep = -1;
  for (let attempt = 1; attempt <= 3; attempt++) {
    if (await page.locator(byTestId("login-username")).isVisible()) {
      await page.fill(byTestId("login-username"), env.MAMORI_USER);
      await page.fill(byTestId("login-password"), env.MAMORI_PASSWORD);
      await page.click(byTestId("login-submit"));
      await expecting("no answer to the password", () => page.waitForSelector(`${byTestId("totp-code")}, ${byTestId("login-error")}:not([hidden])`));
      if (!(await page.locator(byTestId("totp-code")).isVisible())) {
        fail(`password step refused: ${(await page.textContent(byTestId("login-error"))).trim()}`);
      }
      const setup = page.locator(byTestId("totp-secret"));
      if (await setup.isVisible()) secret = await setup.getAttribute("data-secret");
    }
    const stepNo = await nextUsableStep(lastStep);
    lastStep = stepNo;
    await page.fill(byTestId("totp-code"), totpCode(secret, stepNo));
    await page.click(byTestId("totp-submit"));
    await expecting("no answer to the TOTP code", () => page.waitForSelector(`${byTestId("nav-overview")}, ${byTestId("login-error")}:not([hidden])`));
    if (await page.locator(byTestId("nav-overview")).isVisible()) return `attempt ${attempt}`;
    const code = await page.getAttribute(byTestId("login-error"), "data-code");
    const text = (await page.textContent(byTestId("login-error"))).trim();
    // A refused code is most likely a step the caller used just before: wait for the next one. If the
    // server dropped the challenge with it, the page is back at the password and the loop starts over.
    if (code !== "bad_code" && code !== "challenge_expired") fail(`second factor refused (${code}): ${text}`);
  }
  fail("the TOTP code was refused three times");
});

await step("overview", async () => {
  await expecting("the overview did not load", () => page.waitForSelector(byTestId("overview-agents-total")));
  const who = (await page.textContent(byTestId("user-name"))).trim();
  // The manager stores user names in lower case.
  if (who !== env.MAMORI_USER.toLowerCase()) fail(`header shows user ${JSON.stringify(who)}`);
  const role = await page.getAttribute(byTestId("user-role"), "data-role");
  await expecting("the live stream (/api/stream) did not connect", () => page.waitForSelector(`${byTestId("live-indicator")}[data-state="open"]`));
  await shot("overview.png");
  return `${who} (${role})`;
});

await step("detections", async () => {
  await gotoNav("detections");
  await page.waitForSelector(byTestId("detections-table"));
  const row = page.locator(byTestId("detection-row"), {
    has: page.locator(byTestId("detection-title"), { hasText: env.MAMORI_DETECTION_TITLE }),
  }).first();
  try {
    await row.waitFor({ timeout: 5000 });
  } catch (_) {
    // Not open any more (for example closed by the test setup): look at every status.
    await page.selectOption(byTestId("filter-status"), "all");
    await expecting(`no detection titled ${JSON.stringify(env.MAMORI_DETECTION_TITLE)} in the list (any status)`, () => row.waitFor());
  }
  await row.locator(byTestId("btn-expand")).click();
  // The formatted data is in the row right after the detection's row.
  await row.locator("xpath=following-sibling::tr[1]").locator(byTestId("detection-data")).waitFor();
  const severity = await row.getAttribute("data-severity");
  await shot("detections.png");
  return `severity ${severity}`;
});

await step("isolate-agent", async () => {
  await gotoNav("agents");
  await expecting(`no agent ${JSON.stringify(env.MAMORI_HOST)} in the agents list`, () => page.waitForSelector(byTestId(`agent-row-${env.MAMORI_HOST}`)));
  await page.click(byTestId(`agent-link-${env.MAMORI_HOST}`));
  await page.waitForSelector(byTestId("agent-detail"));
  await page.waitForSelector(byTestId("commands-table"));
  const before = new Set(await page.locator(byTestId("command-row")).evaluateAll((rows) => rows.map((r) => r.dataset.commandId)));
  const isolate = page.locator(byTestId("btn-isolate")).first();
  if (!(await isolate.isVisible())) fail(`no isolate button for ${env.MAMORI_HOST} (already isolated, or the role may not isolate)`);
  await isolate.click();
  await page.waitForSelector(byTestId("dialog-reason"));
  await page.fill(byTestId("dialog-reason"), "e2e: 不審な通信のため隔離 / isolating for the browser test");
  await page.click(byTestId("dialog-confirm"));
  await page.waitForSelector(byTestId("dialog"), { state: "detached" });
  const status = await expecting("no new isolate command with status pending or succeeded in the command list", () => page.waitForFunction((known) => {
    for (const row of document.querySelectorAll('[data-testid="command-row"][data-action="isolate"]')) {
      if (known.includes(row.dataset.commandId)) continue;
      const badge = row.querySelector('[data-testid="command-status"]');
      if (badge && (badge.dataset.status === "pending" || badge.dataset.status === "succeeded")) return badge.dataset.status;
    }
    return null;
  }, [...before]));
  await shot("agent-isolated.png");
  return `command ${await status.jsonValue()}`;
});

await step("audit-log", async () => {
  await gotoNav("audit");
  await expecting("the audit log shows no records", () => page.waitForSelector(byTestId("audit-row")));
  const records = await page.locator(byTestId("audit-row")).evaluateAll((rows) =>
    rows.map((r) => ({ action: r.dataset.action || "", actor: r.dataset.actor || "" })),
  );
  // The manager writes console users as "user:<name>".
  const user = env.MAMORI_USER.toLowerCase();
  const mine = records.filter((r) => r.actor.toLowerCase() === user || r.actor.toLowerCase() === `user:${user}`);
  const login = mine.find((r) => /login/i.test(r.action) && !/fail|bad|lock|refus|denied/i.test(r.action));
  const isolate = mine.find((r) => /isolat/i.test(r.action));
  if (!login) fail(`no login record by ${env.MAMORI_USER} in the audit log: ${JSON.stringify(records.slice(0, 15))}`);
  if (!isolate) fail(`no isolate record by ${env.MAMORI_USER} in the audit log: ${JSON.stringify(records.slice(0, 15))}`);
  await page.click(byTestId("audit-verify"));
  const result = page.locator(`${byTestId("audit-verify-result")}[data-ok="true"], ${byTestId("audit-verify-result")}[data-ok="false"], ${byTestId("audit-verify-result")}[data-ok="error"]`);
  await expecting("the audit verification gave no result", () => result.waitFor());
  const ok = await result.getAttribute("data-ok");
  const text = (await result.textContent()).trim();
  await shot("audit.png");
  if (ok !== "true") fail(`audit verification: ${text}`);
  return `${login.action}, ${isolate.action}`;
});

// Passkeys need a DNS name (the manager offers a loopback console's as https://localhost:PORT),
// so this step runs only when the page is at localhost. Chromium's virtual authenticator (CDP
// WebAuthn domain) stands in for a fingerprint reader: resident keys, user verification.
const PASSKEYS = new URL(BASE_URL).hostname === "localhost";
let authenticatorId = null;

await step("passkey-register", async () => {
  if (!PASSKEYS) return "skipped: the console is not at localhost";
  const cdp = await context.newCDPSession(page);
  await cdp.send("WebAuthn.enable", { enableUI: false });
  ({ authenticatorId } = await cdp.send("WebAuthn.addVirtualAuthenticator", {
    options: { protocol: "ctap2", transport: "internal", hasResidentKey: true, hasUserVerification: true, isUserVerified: true, automaticPresenceSimulation: true },
  }));
  await page.click(byTestId("btn-passkeys"));
  await expecting("the passkeys page did not open", () => page.waitForSelector(byTestId("passkey-add")));
  await page.click(byTestId("passkey-add"));
  await page.fill(byTestId("dialog-name"), "E2E 指紋リーダー");
  await page.click(byTestId("dialog-confirm"));
  await expecting("the registered passkey is not listed", () => page.waitForSelector(byTestId("passkey-row")));
  const names = await page.locator(byTestId("passkey-row")).allTextContents();
  const { credentials } = await cdp.send("WebAuthn.getCredentials", { authenticatorId });
  if (credentials.length !== 1) fail(`the authenticator holds ${credentials.length} credentials`);
  await shot("passkeys.png");
  return names.join(" | ");
});

await step("switch-to-english", async () => {
  // After login the page follows the user's saved language, which an earlier run may have set to English.
  if ((await page.getAttribute("html", "lang")) === "en") {
    await page.click(byTestId("lang-toggle"));
    await expecting("the page did not switch to Japanese", () => page.waitForFunction(() => document.documentElement.lang === "ja"));
  }
  if (!(await page.locator(byTestId("nav-audit")).getAttribute("class") || "").includes("active")) await gotoNav("audit");
  await page.waitForSelector(byTestId("audit-row"));
  const before = await pageTitle();
  if (!JAPANESE.test(before)) fail(`heading is not Japanese before switching: ${before}`);
  await page.click(byTestId("lang-toggle"));
  await expecting("the page did not switch to English", async () => {
    await page.waitForFunction(() => document.documentElement.lang === "en");
    await page.waitForFunction((old) => {
      const el = document.querySelector('[data-testid="page-title"]');
      return el && el.textContent.trim() !== old;
    }, before);
  });
  const after = await pageTitle();
  if (JAPANESE.test(after)) fail(`heading still Japanese after switching: ${after}`);
  await shot("english.png");
  return `${before} -> ${after}`;
});

await step("logout", async () => {
  await page.click(byTestId("logout"));
  await expecting("the login page did not come back after logout", () => page.waitForSelector(byTestId("login-username")));
  const status = await page.evaluate(async () => (await fetch("/api/me", { credentials: "same-origin" })).status);
  if (status !== 401) fail(`GET /api/me after logout answered ${status}, expected 401`);
  return "session closed";
});

await step("login-with-passkey", async () => {
  if (!PASSKEYS) return "skipped: the console is not at localhost";
  await page.fill(byTestId("login-username"), env.MAMORI_USER);
  await page.fill(byTestId("login-password"), env.MAMORI_PASSWORD);
  await page.click(byTestId("login-submit"));
  await expecting("no passkey was offered after the password", () => page.waitForSelector(byTestId("passkey-login")));
  await shot("login-passkey.png");
  await page.click(byTestId("passkey-login"));
  await expecting("the passkey login did not open the console", () => page.waitForSelector(`${byTestId("nav-overview")}, ${byTestId("login-error")}:not([hidden])`));
  if (!(await page.locator(byTestId("nav-overview")).isVisible())) {
    fail(`passkey refused: ${(await page.textContent(byTestId("login-error"))).trim()}`);
  }
  const audit = await page.evaluate(async () => (await (await fetch("/api/audit?limit=20", { credentials: "same-origin" })).json()).records);
  const success = audit.find((r) => r.action === "login.success");
  if (!success || success.detail.factor !== "passkey") fail(`the last login is not recorded as a passkey login: ${JSON.stringify(success)}`);
  await page.click(byTestId("logout"));
  await expecting("the login page did not come back after logout", () => page.waitForSelector(byTestId("login-username")));
  return `login.success factor=${success.detail.factor}`;
});

await browser.close();
