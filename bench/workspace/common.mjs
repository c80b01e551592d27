// What the browser benchmarks share: the 300-cell notebook both sides open, a
// JupyterLab + jupyter-collaboration server, the time to open a notebook and
// the keystroke latency between two pages, measured in the DOM.
import { chromium } from "playwright-core";
import { execFileSync, spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

/** `--name value` and `--flag` arguments. */
export const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, arg, i, all) => {
    if (arg.startsWith("--")) acc.push([arg.slice(2), all[i + 1]?.startsWith("--") || all[i + 1] === undefined ? "1" : all[i + 1]]);
    return acc;
  }, []),
);
const QUICK = args.quick === "1";
export const OPENS = QUICK ? 2 : 5;
export const KEYS = QUICK ? 40 : 200;
export const CELLS = Number(args.cells || 300);

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export const median = (xs) => quantile(xs, 0.5);
export function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo] + (s[hi] - s[lo]) * (pos - lo);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

export async function waitHttp(url, proc, what) {
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
export function benchNotebook() {
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

/**
 * JupyterLab from `jupyter` with `windowing` as its notebook windowing mode,
 * opening `notebook` written into its root as bench.ipynb, or (`open`) a path
 * it already has, such as a ferrolab drive's notebook; `env` is added to its
 * environment.
 */
export async function startJupyterLab(jupyter, notebook, windowing, { env = {}, open = null, name = null } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "lab-bench-"));
  const settings = path.join(root, ".settings");
  fs.mkdirSync(path.join(settings, "@jupyterlab", "notebook-extension"), { recursive: true });
  // Render every cell (as the ferrolab workspace does) or JupyterLab's default windowing.
  fs.writeFileSync(path.join(settings, "@jupyterlab", "notebook-extension", "tracker.jupyterlab-settings"),
    JSON.stringify({ windowingMode: windowing }));
  fs.mkdirSync(path.join(settings, "@jupyterlab", "apputils-extension"), { recursive: true });
  fs.writeFileSync(path.join(settings, "@jupyterlab", "apputils-extension", "notification.jupyterlab-settings"),
    JSON.stringify({ fetchNews: "false", checkForUpdates: false }));
  if (!open) fs.writeFileSync(path.join(root, "bench.ipynb"), JSON.stringify(notebook));
  const port = await freePort();
  const token = "benchtoken";
  const proc = spawn(jupyter, [
    "lab", "--no-browser", "--ip=127.0.0.1", `--port=${port}`, `--ServerApp.token=${token}`,
    `--ServerApp.root_dir=${root}`, `--LabApp.user_settings_dir=${settings}`, "--allow-root",
    "--LabApp.news_url=", "--ServerApp.disable_check_xsrf=True",
    // In its own folder: jupyter-collaboration keeps its document store in the
    // working directory.
  ], { cwd: root, stdio: "ignore", env: { ...process.env, JUPYTER_CONFIG_DIR: path.join(root, ".config"), ...env } });
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/api/status?token=${token}`, proc, "JupyterLab");
  return {
    name: name ?? `JupyterLab+RTC (${windowing})`,
    url: () => `${base}/lab/tree/${encodeURIComponent(open ?? "bench.ipynb")}?token=${token}&reset`,
    tokens: [token, token],
    allCells: ".jp-NotebookPanel .jp-Notebook .jp-Cell",
    outputTable: ".jp-NotebookPanel .jp-OutputArea-output table",
    firstCell: ".jp-NotebookPanel .jp-Cell .cm-content",
    editor: ".jp-NotebookPanel .jp-Cell:first-child .cm-content",
    stop: () => {
      proc.kill("SIGTERM");
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** ferrolab's collaboration server (`web`: the workspace to serve, if any) with
 * two editors' tokens and `notebook` imported. */
export async function startCollab(bin, web, notebook) {
  const data = fs.mkdtempSync(path.join(os.tmpdir(), "flb-bench-"));
  const token = execFileSync(bin, ["collab", "token", "create", "--data", data, "--name", "bench", "--role", "editor"]).toString().trim();
  const token2 = execFileSync(bin, ["collab", "token", "create", "--data", data, "--name", "bench2", "--role", "editor"]).toString().trim();
  const port = await freePort();
  const proc = spawn(bin, ["collab", "serve", "--data", data, "--bind", `127.0.0.1:${port}`, ...(web ? ["--web", web] : [])], { stdio: "ignore" });
  const base = `http://127.0.0.1:${port}`;
  await waitHttp(`${base}/api/workspace`, proc, "the ferrolab server");
  const res = await fetch(`${base}/api/notebooks?title=bench`, {
    method: "POST", headers: { authorization: `Bearer ${token}` }, body: JSON.stringify(notebook),
  });
  const entry = await res.json();
  return {
    base,
    entry,
    tokens: [token, token2],
    stop: () => {
      proc.kill("SIGTERM");
      setTimeout(() => fs.rmSync(data, { recursive: true, force: true }), 500);
    },
  };
}

// ------------------------------------------------------------------ measures

export async function newPage(browser) {
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
export async function openTime(browser, app, selector, check) {
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
export async function keystrokes(browser, app) {
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
    // PROFILE=FILE: a CPU profile of the receiving page while the keys arrive
    // (Chrome's .cpuprofile format; bench/workspace/profile-summary.mjs reads it).
    let profiler;
    if (process.env.PROFILE) {
      profiler = await b.context.newCDPSession(b.page);
      await profiler.send("Profiler.enable");
      await profiler.send("Profiler.setSamplingInterval", { interval: 100 });
      await profiler.send("Profiler.start");
    }
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
    if (profiler) {
      const { profile } = await profiler.send("Profiler.stop");
      fs.writeFileSync(process.env.PROFILE, JSON.stringify(profile));
    }
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

export const CODE_CELLS = CELLS - Math.floor(CELLS / 5);
/** Every cell and every code cell's HTML output on the page. */
export const everything = (app) =>
  `document.querySelectorAll(${JSON.stringify(app.allCells)}).length >= ${CELLS} && ` +
  `document.querySelectorAll(${JSON.stringify(app.outputTable)}).length >= ${CODE_CELLS}`;


/** `opens` opens, then (unless `keys` is false) keystrokes, for one app. */
export async function measure(browser, app, { opens = OPENS, keys = true } = {}) {
  const open = [];
  for (let i = 0; i < opens; i++) {
    open.push(await openTime(browser, app, app.allCells, everything(app)));
  }
  return { open, keys: keys ? await keystrokes(browser, app) : null };
}

/** Debian's Chromium, headless, with its background connections off. */
export function launch(executablePath) {
  return chromium.launch({
    executablePath,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}
