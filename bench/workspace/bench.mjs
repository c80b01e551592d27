// The browser workspace against JupyterLab + jupyter-collaboration, same
// browser (Debian's Chromium, headless), same machine, same run:
//   open:      a fresh browser context opens a link to a 300-cell notebook with
//              outputs; time until every cell and its outputs are on the page
//              (JupyterLab with windowingMode "none", so it renders them all too;
//              its default, windowed, is reported as "first screen");
//   keystroke: two pages on one notebook; one types into the first cell, the
//              other sees each character; latency from keydown on one page to
//              the DOM change on the other (p50, p99).
//
// node bench.mjs --bin FERROLAB --web DIST --jupyter LAB_VENV/bin/jupyter [--quick] [--out FILE]
import { chromium } from "playwright-core";
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, arg, i, all) => {
    if (arg.startsWith("--")) acc.push([arg.slice(2), all[i + 1]?.startsWith("--") || all[i + 1] === undefined ? "1" : all[i + 1]]);
    return acc;
  }, []),
);
const BIN = args.bin;
const WEB = args.web;
const JUPYTER = args.jupyter;
const CHROMIUM = args.chromium || "/usr/bin/chromium";
const QUICK = args.quick === "1";
const OPENS = QUICK ? 2 : 5;
const KEYS = QUICK ? 40 : 200;
const CELLS = Number(args.cells || 300);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const median = (xs) => quantile(xs, 0.5);
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function waitHttp(url, proc, what) {
  for (let i = 0; i < 600; i++) {
    if (proc.exitCode !== null) throw new Error(`${what} exited during start`);
    try {
      const res = await fetch(url);
      if (res.status < 500) return;
    } catch {
      /* not yet */
    }
    await sleep(100);
  }
  throw new Error(`${what} did not start`);
}

/** The notebook both open: 300 cells, code with stream and HTML outputs, some markdown. */
function benchNotebook() {
  const cells = [];
  for (let i = 0; i < CELLS; i++) {
    const id = `c${String(i).padStart(3, "0")}`;
    if (i % 5 === 4) {
      cells.push({ id, cell_type: "markdown", metadata: {}, source: `## Section ${i}\n\nSome *notes* about step ${i}.` });
      continue;
    }
    const rows = Array.from({ length: 5 }, (_, r) => `<tr><td>${r}</td><td>${(i * r) % 97}</td></tr>`).join("");
    cells.push({
      id,
      cell_type: "code",
      metadata: {},
      source: `let v${i} = (0..${i + 10}).map(|x| x * 2).sum::<i64>();\nprintln!("step {}: {}", ${i}, v${i});\nv${i}`,
      execution_count: i + 1,
      outputs: [
        { output_type: "stream", name: "stdout", text: `step ${i}: ${(i + 10) * (i + 9)}\n` },
        {
          output_type: "execute_result", execution_count: i + 1, metadata: {},
          data: { "text/plain": `${(i + 10) * (i + 9)}`, "text/html": `<table><tr><th>k</th><th>v</th></tr>${rows}</table>` },
        },
      ],
    });
  }
  // The keystroke cell has no "~" in it.
  cells[0].source = "let typed = 0;";
  // No kernelspec: neither app should start a kernel while it is being timed.
  return { nbformat: 4, nbformat_minor: 5, metadata: {}, cells };
}

// ------------------------------------------------------------------ servers

async function startFerrolab(notebook) {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "flb-bench-"));
  const token = execFileSync(BIN, ["collab", "token", "create", "--data", data, "--name", "bench", "--role", "editor"]).toString().trim();
  const token2 = execFileSync(BIN, ["collab", "token", "create", "--data", data, "--name", "bench2", "--role", "editor"]).toString().trim();
  const port = await freePort();
  const proc = spawn(BIN, ["collab", "serve", "--data", data, "--bind", `127.0.0.1:${port}`, "--web", WEB], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/api/workspace`, proc, "the ferrolab server");
  const res = await fetch(`${base}/api/notebooks?title=bench`, {
    method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(notebook),
  });
  const entry = await res.json();
  return {
    name: "ferrolab",
    url: (t = token) => `${base}/notebooks/${entry.id}?token=${t}`,
    tokens: [token, token2],
    cell: ".cell",
    allCells: "main.notebook > .cell",
    outputTable: ".cell .outputs table",
    editor: '.cell[data-id="c000"] .cm-content',
    stop: () => proc.kill("SIGTERM"),
  };
}

async function startJupyterLab(notebook, windowing) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "lab-bench-"));
  const settings = path.join(root, ".settings");
  fs.mkdirSync(path.join(settings, "@jupyterlab", "notebook-extension"), { recursive: true });
  // Render every cell (as the ferrolab workspace does) or JupyterLab's default windowing.
  fs.writeFileSync(path.join(settings, "@jupyterlab", "notebook-extension", "tracker.jupyterlab-settings"),
    JSON.stringify({ windowingMode: windowing }));
  fs.mkdirSync(path.join(settings, "@jupyterlab", "apputils-extension"), { recursive: true });
  fs.writeFileSync(path.join(settings, "@jupyterlab", "apputils-extension", "notification.jupyterlab-settings"),
    JSON.stringify({ fetchNews: "false", checkForUpdates: false }));
  fs.writeFileSync(path.join(root, "bench.ipynb"), JSON.stringify(notebook));
  const port = await freePort();
  const token = "benchtoken";
  const proc = spawn(JUPYTER, [
    "lab", "--no-browser", "--ip=127.0.0.1", `--port=${port}`, `--ServerApp.token=${token}`,
    `--ServerApp.root_dir=${root}`, `--LabApp.user_settings_dir=${settings}`, "--allow-root",
    "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True",
  ], { stdio: "ignore", env: { ...process.env, JUPYTER_CONFIG_DIR: path.join(root, ".config") } });
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/api/status?token=${token}`, proc, "JupyterLab");
  return {
    name: `JupyterLab+RTC (${windowing})`,
    url: () => `${base}/lab/tree/bench.ipynb?token=${token}&reset`,
    tokens: [token, token],
    allCells: ".jp-NotebookPanel .jp-Notebook .jp-Cell",
    outputTable: ".jp-NotebookPanel .jp-OutputArea-output table",
    firstCell: ".jp-NotebookPanel .jp-Cell .cm-content",
    editor: ".jp-NotebookPanel .jp-Cell:first-child .cm-content",
    stop: () => proc.kill("SIGTERM"),
  };
}

// ------------------------------------------------------------------ measures

async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  if (process.env.PROBE) {
    await page.addInitScript(() => {
      window.wsSent = [];
      window.wsGot = [];
      const send = WebSocket.prototype.send;
      WebSocket.prototype.send = function (data) {
        window.wsSent.push(performance.timeOrigin + performance.now());
        return send.call(this, data);
      };
      const add = WebSocket.prototype.addEventListener;
      WebSocket.prototype.addEventListener = function (type, fn, opts) {
        if (type === "message") {
          const wrapped = (e) => { window.wsGot.push(performance.timeOrigin + performance.now()); return fn.call(this, e); };
          return add.call(this, type, wrapped, opts);
        }
        return add.call(this, type, fn, opts);
      };
      const desc = Object.getOwnPropertyDescriptor(WebSocket.prototype, "onmessage");
      Object.defineProperty(WebSocket.prototype, "onmessage", {
        set(fn) { desc.set.call(this, (e) => { window.wsGot.push(performance.timeOrigin + performance.now()); return fn.call(this, e); }); },
        get() { return desc.get.call(this); },
      });
    });
  }
  return { context, page };
}

/** ms from navigation to `selector` present (fresh context: nothing cached). */
async function openTime(browser, app, selector, check) {
  const { context, page } = await newPage(browser);
  try {
    const started = performance.now();
    await page.goto(app.url(), { waitUntil: "commit" });
    await page.waitForSelector(selector, { state: "attached", timeout: 180000 });
    if (check) await page.waitForFunction(check, null, { timeout: 180000, polling: 20 });
    return performance.now() - started;
  } finally {
    await context.close();
  }
}

/** Keydown on one page to the DOM change on the other, per character. */
async function keystrokes(browser, app) {
  const a = await newPage(browser);
  const b = await newPage(browser);
  try {
    await a.page.goto(app.url(app.tokens[0]));
    await b.page.goto(app.url(app.tokens[1]));
    await a.page.waitForSelector(app.editor, { timeout: 180000 });
    await b.page.waitForSelector(app.editor, { timeout: 180000 });
    await sleep(3000); // let both settle (JupyterLab's collaborative session handshake)
    // JupyterLab asks for a kernel when a notebook names none; dismiss it.
    for (const p of [a.page, b.page]) {
      if (await p.$(".jp-Dialog")) await p.keyboard.press("Escape");
    }
    await b.page.evaluate((selector) => {
      const el = document.querySelector(selector);
      window.seen = [];
      const count = () => (el.textContent.match(/~/g) || []).length;
      new MutationObserver(() => {
        const n = count();
        while (window.seen.length < n) window.seen.push(performance.timeOrigin + performance.now());
      }).observe(el, { subtree: true, childList: true, characterData: true });
    }, app.editor);
    await a.page.click(app.editor);
    await a.page.keyboard.press("Control+End");
    await a.page.evaluate(() => {
      window.sent = [];
      document.addEventListener("keydown", (e) => {
        if (e.key === "~") window.sent.push(performance.timeOrigin + performance.now());
      }, true);
    });
    for (let i = 0; i < KEYS; i++) {
      await a.page.keyboard.type("~");
      await sleep(60);
    }
    const deadline = Date.now() + 30000;
    let seen = [];
    while (Date.now() < deadline) {
      seen = await b.page.evaluate(() => window.seen);
      if (seen.length >= KEYS) break;
      await sleep(100);
    }
    const sent = await a.page.evaluate(() => window.sent);
    if (process.env.PROBE) {
      const wsSent = await a.page.evaluate(() => window.wsSent);
      const wsGot = await b.page.evaluate(() => window.wsGot);
      const after = (list, t) => list.find((x) => x >= t);
      const rows = sent.slice(0, seen.length).map((t, i) => {
        const s1 = after(wsSent, t);
        const g = s1 === undefined ? undefined : after(wsGot, s1);
        return [s1 - t, g - s1, seen[i] - g].map((x) => Math.round(x));
      });
      const med = (k) => quantile(rows.map((r) => r[k]).filter((x) => !Number.isNaN(x)), 0.5);
      console.log("keydown->send", med(0), "send->recv", med(1), "recv->dom", med(2));
    }
    const latencies = sent.slice(0, seen.length).map((t, i) => seen[i] - t);
    return { latencies, arrived: seen.length, sent: sent.length };
  } finally {
    await a.context.close();
    await b.context.close();
  }
}

const CODE_CELLS = CELLS - Math.floor(CELLS / 5);
/** Every cell and every code cell's HTML output on the page. */
const everything = (app) =>
  `document.querySelectorAll(${JSON.stringify(app.allCells)}).length >= ${CELLS} && ` +
  `document.querySelectorAll(${JSON.stringify(app.outputTable)}).length >= ${CODE_CELLS}`;

async function measure(browser, app) {
  const open = [];
  for (let i = 0; i < OPENS; i++) {
    open.push(await openTime(browser, app, app.allCells, everything(app)));
  }
  const keys = await keystrokes(browser, app);
  return { open, keys };
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const notebook = benchNotebook();
const results = {};
try {
  const flb = await startFerrolab(notebook);
  if (args["keys-only"]) {
    const k = await keystrokes(browser, flb);
    console.log("keys", quantile(k.latencies, 0.5), quantile(k.latencies, 0.99), k.arrived);
    flb.stop();
    await browser.close();
    process.exit(0);
  }
  try {
    results.ferrolab = await measure(browser, flb);
    results.ferrolabFirst = [];
    for (let i = 0; i < OPENS; i++) results.ferrolabFirst.push(await openTime(browser, flb, '.cell[data-id="c000"] .cm-content'));
  } finally {
    flb.stop();
  }
  const lab = await startJupyterLab(notebook, "none");
  try {
    // Warm the server's first-notebook costs once, as ferrolab's import did.
    await openTime(browser, lab, lab.allCells, everything(lab));
    results.lab = await measure(browser, lab);
  } finally {
    lab.stop();
  }
  const windowed = await startJupyterLab(notebook, "full");
  try {
    await openTime(browser, windowed, windowed.firstCell);
    results.labFirst = [];
    for (let i = 0; i < OPENS; i++) results.labFirst.push(await openTime(browser, windowed, windowed.firstCell));
  } finally {
    windowed.stop();
  }
} finally {
  await browser.close();
}

const ms = (x) => `${x.toFixed(0)} ms`;
const openF = median(results.ferrolab.open);
const openL = median(results.lab.open);
const firstF = median(results.ferrolabFirst);
const firstL = median(results.labFirst);
const kF = results.ferrolab.keys.latencies;
const kL = results.lab.keys.latencies;
const summary = {
  date: new Date().toISOString(),
  cells: CELLS,
  opens: OPENS,
  keystrokes: KEYS,
  open_all_ms: { ferrolab: openF, jupyterlab: openL, ratio: openF / openL },
  open_first_screen_ms: { ferrolab: firstF, jupyterlab_windowed: firstL, ratio: firstF / firstL },
  keystroke_ms: {
    ferrolab: { p50: quantile(kF, 0.5), p99: quantile(kF, 0.99), arrived: results.ferrolab.keys.arrived },
    jupyterlab: { p50: quantile(kL, 0.5), p99: quantile(kL, 0.99), arrived: results.lab.keys.arrived },
    p99_ratio: quantile(kF, 0.99) / quantile(kL, 0.99),
  },
  raw: results,
};
console.log(`open a ${CELLS}-cell notebook, everything rendered (median of ${OPENS}):`);
console.log(`  ferrolab ${ms(openF)}   JupyterLab+RTC ${ms(openL)}   ratio ${(openF / openL).toFixed(2)}x (goal <= 0.5x)`);
console.log(`open, first screen: ferrolab ${ms(firstF)}   JupyterLab+RTC (windowed) ${ms(firstL)}   ratio ${(firstF / firstL).toFixed(2)}x`);
console.log(`keystroke to the other browser (${KEYS} keys):`);
console.log(`  ferrolab        p50 ${ms(quantile(kF, 0.5))}  p99 ${ms(quantile(kF, 0.99))}  (${results.ferrolab.keys.arrived}/${KEYS} arrived)`);
console.log(`  JupyterLab+RTC  p50 ${ms(quantile(kL, 0.5))}  p99 ${ms(quantile(kL, 0.99))}  (${results.lab.keys.arrived}/${KEYS} arrived)`);
console.log(`  p99 ratio ${(quantile(kF, 0.99) / quantile(kL, 0.99)).toFixed(2)}x (goal <= 1x)`);
if (args.out) {
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(summary, null, 1));
}
