// Load the live view in a real headless Chromium, let it poll for a while, then save a
// screenshot and what the page shows (for tests that compare it with /status and /proc).
//
//   node --experimental-websocket nginx/html/wizgy/tests/browser.mjs URL \
//       [--wait SECONDS] [--screenshot FILE.png] [--size 1400,900]
//
// Prints one JSON object: {numbers: {label: text}, totals: {label: text}, rows: [[cells]],
// events: [text], charts: {id: legend text}, host, model, runtime, lesson, error}. Talks the DevTools protocol over a WebSocket (no
// puppeteer: nothing to install but Debian's `chromium`). Node 20 needs the flag above.

import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const waitSeconds = Number(option("--wait", "5"));
const screenshot = option("--screenshot", null);
const [width, height] = option("--size", "1400,900").split(",").map(Number);
const url = args[0];
if (!url) {
  console.error("usage: browser.mjs URL [--wait SECONDS] [--screenshot FILE] [--size W,H]");
  process.exit(2);
}

const profile = mkdtempSync(join(tmpdir(), "wizgy-chromium-"));
const chromium = spawn(process.env.CHROMIUM || "chromium", [
  "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
  `--user-data-dir=${profile}`, "--remote-debugging-port=0", `--window-size=${width},${height}`,
  "about:blank",
], { stdio: "ignore", detached: true }); // its own process group: we end all of it

async function devtoolsPort() {
  for (let i = 0; i < 100; i++) {
    try {
      return readFileSync(join(profile, "DevToolsActivePort"), "utf8").split("\n")[0];
    } catch {
      await sleep(100);
    }
  }
  throw new Error("chromium did not start");
}

function connect(wsUrl) {
  const ws = new WebSocket(wsUrl);
  const pending = new Map();
  let next = 0;
  ws.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    if (data.id && pending.has(data.id)) {
      pending.get(data.id)(data);
      pending.delete(data.id);
    }
  });
  const send = (method, params = {}) => new Promise((resolve, reject) => {
    const id = ++next;
    pending.set(id, (data) => (data.error ? reject(new Error(data.error.message)) : resolve(data.result)));
    ws.send(JSON.stringify({ id, method, params }));
  });
  return new Promise((resolve) => ws.addEventListener("open", () => resolve({ ws, send })));
}

// What the page shows, read from its DOM.
const READ_PAGE = `JSON.stringify({
  model: document.getElementById("model").textContent,
  runtime: document.getElementById("runtime").textContent,
  lesson: document.getElementById("lesson").textContent,
  host: document.getElementById("host").textContent,
  error: document.getElementById("error").hidden ? null : document.getElementById("error").textContent,
  numbers: Object.fromEntries([...document.querySelectorAll(".number")].map(
    (n) => [n.querySelector("span").textContent, n.querySelector("b").textContent])),
  totals: Object.fromEntries([...document.querySelectorAll("#totals b")].map(
    (b) => [b.dataset.key, b.textContent])),
  totalsLabel: document.querySelector("#totals .label")?.textContent ?? null,
  charts: Object.fromEntries([...document.querySelectorAll(".chart")].map(
    (c) => [c.querySelector("figcaption").textContent, c.querySelector(".legend").textContent])),
  rows: [...document.querySelectorAll("#processes tr")].map(
    (tr) => [...tr.children].map((td) => td.textContent)),
  events: [...document.querySelectorAll("#events li")].map((li) => li.textContent),
})`;

let code = 0;
try {
  const port = await devtoolsPort();
  const targets = await (await fetch(`http://127.0.0.1:${port}/json`)).json();
  const page = targets.find((t) => t.type === "page");
  const { ws, send } = await connect(page.webSocketDebuggerUrl);
  await send("Page.enable");
  await send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
  await send("Page.navigate", { url });
  await sleep(waitSeconds * 1000);
  const { result } = await send("Runtime.evaluate", { expression: READ_PAGE, returnByValue: true });
  if (screenshot) {
    const { data } = await send("Page.captureScreenshot", { format: "png" });
    writeFileSync(screenshot, Buffer.from(data, "base64"));
  }
  console.log(result.value);
  ws.close();
} catch (error) {
  console.error(`browser.mjs: ${error.message}`);
  code = 1;
} finally {
  const exited = new Promise((resolve) => (chromium.exitCode !== null ? resolve() : chromium.on("exit", resolve)));
  try {
    process.kill(-chromium.pid, "SIGTERM"); // the browser and its helpers, nothing else
  } catch {}
  await Promise.race([exited, sleep(3000)]);
  try {
    process.kill(-chromium.pid, "SIGKILL");
  } catch {}
  await sleep(200); // helpers may still be closing files in the profile
  try {
    rmSync(profile, { recursive: true, force: true, maxRetries: 5, retryDelay: 200 });
  } catch (error) {
    console.error(`browser.mjs: could not remove ${profile}: ${error.message}`);
  }
}
process.exit(code);
