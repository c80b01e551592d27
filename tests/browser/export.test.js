// Reports in a real browser: every notebook exports to HTML that shows every
// cell and chart, loads nothing, and runs none of an XSS corpus.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, api, createNotebook, createToken, startServer, tempDir } from "../collab/helpers.js";
import { WEB_DIR, launch, screenshot } from "./browser.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, "../..");
const EXECUTED = path.join(ROOT, "tests/artifacts/executed");

function exportHtml(notebookPath, out, ...args) {
  execFileSync(BIN, ["export", notebookPath, "--to", "html", "-o", out, ...args], { stdio: "pipe" });
  return out;
}

/**
 * Opens a report from disk with a detector: anything the notebook manages to run
 * calls `__pwned` or opens a dialog; every request other than the file is recorded.
 */
async function openReport(browser, file) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const executed = [];
  const requests = [];
  const violations = [];
  const errors = [];
  await page.exposeFunction("__pwned", (what) => executed.push(String(what)));
  // What the Content-Security-Policy blocked (the chart script must need nothing it forbids).
  await page.exposeFunction("__violation", (what) => violations.push(String(what)));
  await page.addInitScript(() => {
    document.addEventListener("securitypolicyviolation", (e) => window.__violation(`${e.violatedDirective} ${e.blockedURI} ${e.lineNumber}:${e.columnNumber}`));
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("dialog", async (dialog) => {
    executed.push(`dialog: ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on("request", (request) => {
    if (request.url() !== `file://${file}`) requests.push(request.url());
  });
  await page.goto(`file://${file}`);
  await page.waitForLoadState("load");
  return { page, context, executed, requests, violations, errors };
}

/** A copy of a report (`NAME-no-csp.html` beside it) without its Content-Security-Policy. */
function copyWithoutCsp(file) {
  const html = fs.readFileSync(file, "utf8");
  const stripped = html.replace(/<meta http-equiv="Content-Security-Policy"[^>]*>/, "");
  assert.notEqual(stripped, html, "the report has a policy to remove");
  const copy = file.replace(/\.html$/, "-no-csp.html");
  fs.writeFileSync(copy, stripped);
  return copy;
}

const notebookText = (cell) => [].concat(cell.source ?? "").join("");
const tagged = (cell, tag) => (cell.metadata?.tags ?? []).includes(tag);

test("every notebook exports to a report that shows every cell and chart and loads nothing", async () => {
  const out = tempDir();
  const browser = await launch();
  try {
    for (const name of fs.readdirSync(path.join(ROOT, "notebooks")).filter((n) => n.endsWith(".ipynb")).sort()) {
      // The executed copy (outputs, charts) when the notebook tests have run.
      const source = fs.existsSync(path.join(EXECUTED, name)) ? path.join(EXECUTED, name) : path.join(ROOT, "notebooks", name);
      const nb = JSON.parse(fs.readFileSync(source, "utf8"));
      const file = exportHtml(source, path.join(out, name.replace(".ipynb", ".html")), "--toc");
      const { page, context, executed, requests } = await openReport(browser, file);
      try {
        for (const cell of nb.cells) {
          if (tagged(cell, "remove-cell")) continue;
          const section = page.locator(`section[data-cell="${cell.id}"]`);
          if (cell.cell_type === "code") {
            if (tagged(cell, "remove-input")) continue;
            const shown = await section.locator(".input pre code").textContent();
            assert.equal(shown, notebookText(cell), `${name} cell ${cell.id} shows its code`);
          } else if (cell.cell_type === "markdown" && notebookText(cell).trim()) {
            assert.ok((await section.count()) === 1, `${name} markdown cell ${cell.id} is there`);
          }
        }
        const charts = nb.cells
          .filter((c) => !tagged(c, "remove-cell") && !tagged(c, "remove-output"))
          .flatMap((c) => c.outputs ?? [])
          .filter((o) => o.data?.["image/svg+xml"]).length;
        assert.equal(await page.locator(".output > svg").count(), charts, `${name}: every chart is drawn`);
        assert.deepEqual(requests, [], `${name} loads nothing`);
        assert.deepEqual(executed, []);
        await screenshot(page, `report-${name.replace(".ipynb", "")}`);
      } finally {
        await context.close();
      }
    }
  } finally {
    await browser.close();
  }
});

const isChart = (mime) => /^application\/vnd\.vega(lite)?\.v\d+\+json$/.test(mime);

test("interactive reports draw every chart with the inlined library, load nothing and keep the static picture without scripts", async () => {
  const out = tempDir();
  const browser = await launch();
  try {
    let total = 0;
    for (const name of fs.readdirSync(path.join(ROOT, "notebooks")).filter((n) => n.endsWith(".ipynb")).sort()) {
      const source = fs.existsSync(path.join(EXECUTED, name)) ? path.join(EXECUTED, name) : path.join(ROOT, "notebooks", name);
      const nb = JSON.parse(fs.readFileSync(source, "utf8"));
      const charts = nb.cells
        .filter((c) => !tagged(c, "remove-cell") && !tagged(c, "remove-output"))
        .flatMap((c) => c.outputs ?? [])
        .filter((o) => Object.keys(o.data ?? {}).some(isChart)).length;
      if (charts === 0) continue;
      total += charts;
      const file = exportHtml(source, path.join(out, name.replace(".ipynb", ".interactive.html")), "--interactive", "--chart-script", WEB_DIR);
      const { page, context, executed, requests, violations, errors } = await openReport(browser, file);
      try {
        await page.waitForFunction(() => document.documentElement.dataset.charts !== undefined, null, { timeout: 30_000 });
        assert.equal(await page.evaluate(() => document.documentElement.dataset.charts), `${charts} drawn, 0 static`, name);
        assert.equal(await page.locator(".chart[data-drawn=interactive] .interactive svg.marks").count(), charts, `${name}: vega drew every chart`);
        assert.equal(await page.locator(".chart > .picture:visible").count(), 0, `${name}: the static pictures give way`);
        // Hover the marks (tooltips, if any, are vega-tooltip's escaped text).
        for (const mark of (await page.locator(".interactive svg.marks path").all()).slice(0, 20)) await mark.hover({ force: true, timeout: 2000 }).catch(() => {});
        assert.deepEqual(requests, [], `${name} loads nothing`);
        assert.deepEqual(violations, [], `${name}: the chart script needs nothing the policy forbids`);
        assert.deepEqual(errors, []);
        assert.deepEqual(executed, []);
        await screenshot(page, `report-interactive-${name.replace(".ipynb", "")}`);
      } finally {
        await context.close();
      }
      // A reader without scripts sees the static SVG.
      const noScript = await browser.newContext({ javaScriptEnabled: false });
      try {
        const page = await noScript.newPage();
        await page.goto(`file://${file}`);
        assert.equal(await page.locator(".chart > .picture:visible").count(), charts, `${name}: static charts without scripts`);
      } finally {
        await noScript.close();
      }
    }
    assert.ok(total > 0, "the example notebooks have charts to draw");
  } finally {
    await browser.close();
  }
});

test("hostile chart specs in an interactive report run nothing and load nothing", async () => {
  const dir = tempDir();
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="20" height="20"><rect width="4" height="4"/></svg>`;
  const values = [{ a: "<img src=x onerror=__pwned('tooltip')>", b: 1, u: "http://127.0.0.1:9/img.png" }, { a: "x", b: 2, u: "javascript:__pwned('img')" }];
  const specs = [
    // Network loads: data by URL, images by URL.
    { data: { url: "http://127.0.0.1:9/leak.csv" }, mark: "bar", encoding: { x: { field: "a" } } },
    { data: { values }, mark: "image", encoding: { x: { field: "b" }, url: { field: "u" } } },
    // HTML in titles and tooltips, javascript: links.
    {
      title: "<img src=x onerror=__pwned('title')>",
      data: { values },
      mark: { type: "point", size: 400, tooltip: { content: "data" } },
      encoding: { x: { field: "b", type: "quantitative" }, href: { value: "javascript:__pwned('href')" } },
    },
    // Expressions that reach for the page.
    { data: { values }, transform: [{ calculate: "constructor.constructor('__pwned(\\'calc\\')')()", as: "z" }], mark: "bar", encoding: { x: { field: "z" } } },
    { data: { values }, transform: [{ filter: "window.__pwned('filter')" }], mark: "bar", encoding: { x: { field: "a" } } },
    // The spec asking vega-embed for its menu, eval, and another loader.
    {
      usermeta: { embedOptions: { actions: true, ast: false, loader: { baseURL: "http://127.0.0.1:9/" }, sourceFooter: "<script>__pwned('footer')</script>" } },
      data: { values }, mark: "bar", encoding: { x: { field: "a" }, y: { field: "b", type: "quantitative" } },
    },
    // Data from a data: URL is decoded locally, not fetched.
    { data: { url: "data:text/csv;base64," + Buffer.from("a,b\nx,1\ny,2\n").toString("base64"), format: { type: "csv" } }, mark: "bar", encoding: { x: { field: "a" }, y: { field: "b", type: "quantitative" } } },
  ];
  const nb = {
    nbformat: 4, nbformat_minor: 5, metadata: {},
    cells: [{
      id: "c", cell_type: "code", metadata: {}, source: "%chart", execution_count: 1,
      outputs: specs.map((spec) => ({ output_type: "display_data", metadata: {}, data: { "application/vnd.vegalite.v5+json": spec, "image/svg+xml": svg } })),
    }],
  };
  const source = path.join(dir, "charts.ipynb");
  fs.writeFileSync(source, JSON.stringify(nb));
  const file = exportHtml(source, path.join(dir, "charts.html"), "--interactive", "--chart-script", WEB_DIR);
  // The chart script's own guards, without the policy behind them.
  const withoutCsp = copyWithoutCsp(file);
  const browser = await launch();
  try {
    for (const report of [file, withoutCsp]) {
    const { page, context, executed, requests, violations } = await openReport(browser, report);
    try {
      await page.waitForFunction(() => document.documentElement.dataset.charts !== undefined, null, { timeout: 30_000 });
      for (const el of await page.locator(".interactive svg.marks path, .interactive svg.marks image").all()) {
        await el.hover({ force: true, timeout: 2000 }).catch(() => {});
        await el.click({ force: true, timeout: 2000 }).catch(() => {});
      }
      await page.waitForTimeout(1000);
      assert.deepEqual(executed, [], "nothing from the specs ran");
      assert.deepEqual(requests, [], "nothing was fetched");
      assert.equal(await page.locator(".vega-actions").count(), 0, "the spec cannot turn the actions menu on");
      const states = await page.locator(".chart").evaluateAll((els) => els.map((el) => el.dataset.drawn));
      assert.equal(states[0], "static", "data by URL cannot load: the static picture stays");
      assert.ok(await page.locator(".chart").nth(0).locator(".picture svg rect").isVisible());
      assert.equal(states[6], "interactive", "data from a data: URL draws");
      assert.equal(await page.locator(".chart").nth(6).locator("svg.marks path").count() > 0, true);
      // Whatever the interpreter refused, the policy never had to step in for a script.
      assert.deepEqual(violations.filter((v) => v.startsWith("script-src")), []);
      if (report === file) await screenshot(page, "report-interactive-xss");
    } finally {
      await context.close();
    }
    }
  } finally {
    await browser.close();
  }
});

const XSS = [
  `<script>__pwned("script")</script>`,
  `<img src=x onerror="__pwned('onerror')">`,
  `<svg onload="__pwned('svg onload')"><script>__pwned('svg script')</script></svg>`,
  `<a href="javascript:__pwned('js url')" id="jslink">click</a>`,
  `<iframe srcdoc="<script>parent.__pwned('srcdoc')</script>"></iframe>`,
  `<object data="data:text/html,<script>__pwned('object')</script>"></object>`,
  `<meta http-equiv="refresh" content="0;url=javascript:__pwned('refresh')">`,
  `<base href="http://127.0.0.1:9/">`,
  `<link rel="stylesheet" href="http://127.0.0.1:9/x.css">`,
  `<style>@import url("http://127.0.0.1:9/y.css"); body { background: url("http://127.0.0.1:9/bg.png") }</style>`,
  `<div style="background:url(http://127.0.0.1:9/z.png);position:fixed;inset:0">overlay</div>`,
  `<form action="javascript:__pwned('form')"><button id="formbtn">go</button></form>`,
  `<details open ontoggle="__pwned('ontoggle')">x</details>`,
  `<math><mtext><table><mglyph><style><img src=x onerror="__pwned('mxss')">`,
  `<svg><animate onbegin="__pwned('animate')" attributeName="x" dur="1s"/></svg>`,
  `<img src="http://127.0.0.1:9/remote.png">`,
];

test("an XSS corpus runs nothing and loads nothing in the report", async () => {
  const dir = tempDir();
  const pngBase64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
  const nb = {
    nbformat: 4, nbformat_minor: 5,
    metadata: {
      title: `Report</title><script>__pwned("title")</script>`,
      authors: [{ name: `<img src=x onerror="__pwned('author')">` }],
      date: `"><script>__pwned("date")</script>`,
    },
    cells: [
      {
        id: "md", cell_type: "markdown", metadata: {},
        source: XSS.join("\n\n") + `\n\n[link](javascript:__pwned('md link'))\n\n![remote](http://127.0.0.1:9/md.png)\n\n![att](attachment:evil"><script>__pwned('attname')</script>.png)`,
        attachments: {
          [`evil"><script>__pwned('attname')</script>.png`]: { "image/png": pngBase64 },
          "svg.svg": { "image/svg+xml": `<svg xmlns="http://www.w3.org/2000/svg"><script>__pwned('att svg')</script></svg>` },
        },
      },
      {
        id: `c"><script>__pwned('cell id')</script>`, cell_type: "code", metadata: { tags: ["hide-input"] },
        source: `</code></pre><script>__pwned("source")</script>`, execution_count: 1,
        outputs: [
          ...XSS.map((html) => ({ output_type: "display_data", metadata: {}, data: { "text/html": html } })),
          { output_type: "display_data", metadata: {}, data: { [`text/html"><script>__pwned('mime')</script>`]: "x" } },
          { output_type: "display_data", metadata: {}, data: { "image/svg+xml": `<svg xmlns="http://www.w3.org/2000/svg" onload="__pwned('svg output')"><use href="http://127.0.0.1:9/s.svg#a"/><image href="http://127.0.0.1:9/i.png"/><foreignObject><div onmouseover="__pwned('fo')">x</div></foreignObject><rect width="4" height="4"/></svg>` } },
          { output_type: "display_data", metadata: {}, data: { "image/png": `"><script>__pwned('png')</script>` } },
          { output_type: "display_data", metadata: {}, data: { "text/markdown": `<script>__pwned('md output')</script> **bold**` } },
          { output_type: "stream", name: "stdout", text: `<script>__pwned("stream")</script>\u001b[31m<img src=x onerror=__pwned('ansi')>\u001b[0m` },
          { output_type: "error", ename: "<script>", evalue: "x", traceback: [`<img src=x onerror="__pwned('traceback')">`] },
          { output_type: "execute_result", execution_count: 1, metadata: {}, data: { "text/plain": `<script>__pwned("plain")</script>` } },
        ],
      },
    ],
  };
  const source = path.join(dir, "evil.ipynb");
  fs.writeFileSync(source, JSON.stringify(nb));
  const browser = await launch();
  try {
    const withCsp = exportHtml(source, path.join(dir, "evil.html"), "--toc");
    // Each layer on its own: the same report without its Content-Security-Policy
    // shows what the sanitiser alone lets through (nothing).
    const withoutCsp = copyWithoutCsp(withCsp);
    for (const file of [withCsp, withoutCsp]) {
    const { page, context, executed, requests } = await openReport(browser, file);
    try {
      // Give anything that would run a chance to: clicks, hovers, animations, toggles.
      for (const selector of ["#jslink", "a", "button", "details summary", "svg rect"]) {
        for (const el of await page.locator(selector).all()) await el.click({ timeout: 2000, force: true }).catch(() => {});
      }
      await page.mouse.move(10, 10);
      await page.mouse.move(500, 500);
      await page.waitForTimeout(1500);
      assert.deepEqual(executed, [], "nothing from the notebook ran");
      assert.deepEqual(requests, [], "nothing was fetched");
      // The text is there, shown as text.
      assert.match(await page.title(), /^Report<\/title><script>/);
      assert.ok((await page.textContent(`section.code pre code`)).includes("<script>__pwned(\"source\")</script>"));
      assert.ok((await page.textContent(".output.stream")).includes("<script>"));
      assert.equal(await page.locator(".output > svg rect").count(), 1, "the drawing part of the SVG stays");
      if (file === withCsp) await screenshot(page, "report-xss");
    } finally {
      await context.close();
    }
    }
  } finally {
    await browser.close();
  }
});

test("the server exports the live notebook as a report", async () => {
  const data = tempDir();
  const token = createToken(data, "viewer", "reader");
  const editor = createToken(data, "editor", "writer");
  const server = await startServer(data, { args: ["--web", WEB_DIR] });
  try {
    const entry = await createNotebook(server, editor, [
      { id: "m", cell_type: "markdown", metadata: {}, source: "# Findings" },
      { id: "c", cell_type: "code", metadata: {}, source: "let x = 1;", execution_count: 1, outputs: [{ output_type: "stream", name: "stdout", text: "done\n" }] },
    ]);
    const html = await api(server, token, "GET", `/api/notebooks/${entry.id}/export?format=html&toc=1&title=Weekly`);
    assert.equal(html.status, 200);
    assert.match(html.text, /<title>Weekly<\/title>/);
    assert.match(html.text, /href="#nb-h1"/);
    assert.match(html.text, /done/);
    const ipynb = await api(server, token, "GET", `/api/notebooks/${entry.id}/export?format=ipynb`);
    assert.equal(ipynb.json.nbformat_minor, 5);
    const md = await api(server, token, "GET", `/api/notebooks/${entry.id}/export?format=markdown&no_input=1`);
    assert.match(md.text, /# Findings/);
    assert.doesNotMatch(md.text, /let x = 1/);
    // Interactive charts take the chart script from the web build the server serves.
    const charted = await createNotebook(server, editor, [
      { id: "p", cell_type: "code", metadata: {}, source: "%chart", execution_count: 1, outputs: [{ output_type: "display_data", metadata: {}, data: { "application/vnd.vegalite.v5+json": { mark: "bar", data: { values: [{ a: 1 }] }, encoding: { x: { field: "a" } } }, "image/svg+xml": "<svg xmlns=\"http://www.w3.org/2000/svg\"></svg>" } }] },
    ]);
    const interactive = await api(server, token, "GET", `/api/notebooks/${charted.id}/export?format=html&interactive=1`);
    assert.equal(interactive.status, 200);
    assert.match(interactive.text, /script-src 'sha256-[A-Za-z0-9+/=]+'/);
    assert.equal(interactive.text.match(/<script>/g)?.length, 1);
    assert.match(interactive.text, /data-vega-lite="/);
    const notHtml = await api(server, token, "GET", `/api/notebooks/${charted.id}/export?format=markdown&interactive=1`);
    assert.equal(notHtml.status, 400);
    assert.match(notHtml.json.error.message, /HTML reports/);
    const bad = await api(server, token, "GET", `/api/notebooks/${entry.id}/export?format=pdf`);
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /html, markdown or ipynb/);
    assert.equal((await api(server, undefined, "GET", `/api/notebooks/${entry.id}/export`)).status, 401);
  } finally {
    await server.stop();
  }
});
