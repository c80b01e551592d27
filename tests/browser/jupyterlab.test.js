// The example notebooks in real JupyterLab (from .venv), as a user sees them: each
// executed notebook (tests/artifacts/executed, written by the notebook tests) is
// opened with the ferrolab kernel, and the rendered page is checked — tables drawn
// as tables, charts drawn, no JSON tree where a result belongs, no math typeset out
// of a magic's summary, and the notebook not marked modified by opening it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { BIN, tempDir } from "../collab/helpers.js";
import { JUPYTER, labSetting, startLab } from "./lab.js";
import { launch, screenshot } from "./browser.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, "../..");
const EXECUTED = path.join(ROOT, "tests/artifacts/executed");

// What each notebook must show: at least this many HTML tables and charts.
const SHOWN = {
  "01-rust-basics.ipynb": { tables: 1, charts: 0 },
  "02-data-exploration.ipynb": { tables: 8, charts: 6 },
  "03-finetune.ipynb": { tables: 1, charts: 1 },
  "04-serve-and-monitor.ipynb": { tables: 1, charts: 1 },
  "05-prompt-tests.ipynb": { tables: 2, charts: 0 },
  "06-tracking-and-governance.ipynb": { tables: 3, charts: 1 },
};

let lab;
let browser;
let folder;

before(async () => {
  for (const name of Object.keys(SHOWN)) {
    if (!fs.existsSync(path.join(EXECUTED, name))) {
      throw new Error(`${EXECUTED}/${name} is missing: the notebook tests (tests/python/test_notebooks.py) write it; run make test`);
    }
  }
  const dir = tempDir();
  folder = path.join(dir, "notebooks");
  fs.mkdirSync(folder);
  for (const name of Object.keys(SHOWN)) fs.copyFileSync(path.join(EXECUTED, name), path.join(folder, name));
  // The kernelspec in a prefix of its own, first on JUPYTER_PATH (as the Python tests do).
  execFileSync(BIN, ["kernel", "install", "--prefix", path.join(dir, "prefix")], { stdio: "pipe" });
  const env = {
    JUPYTER_PATH: path.join(dir, "prefix/share/jupyter"),
    JUPYTER_DATA_DIR: path.join(dir, "data"),
    // The notebooks' kernels must not report to a server of the person running the tests.
    FERROLAB_TRACKING_URI: "",
    FERROLAB_HOME: process.env.FERROLAB_HOME || path.join(dir, "home"),
  };
  // Every cell drawn (JupyterLab otherwise draws only the cells in view).
  labSetting(dir, "notebook-extension/tracker", { windowingMode: "none" });
  // Trusted, as outputs a person just produced in JupyterLab are: untrusted HTML is
  // sanitized (inline SVG charts removed), which is not what a user sees.
  execFileSync(JUPYTER, ["trust", ...Object.keys(SHOWN).map((name) => path.join(folder, name))], {
    env: { ...process.env, ...env },
    stdio: "pipe",
  });
  lab = await startLab({ dir, root: folder, env });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await lab?.stop();
});

/** Opens `name` in JupyterLab and waits until its outputs are drawn and its kernel is idle. */
async function open(name) {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // `reset`: a fresh layout, not the tabs an earlier page left open.
  await page.goto(`${lab.base}/lab/tree/${name}?reset&token=${lab.token}`);
  await page.waitForSelector(`.lm-TabBar-tab.jp-mod-current[data-type="document-title"] >> text=${name}`, { timeout: 60000 }).catch(() => {});
  await page.waitForSelector(".jp-NotebookPanel .jp-OutputArea-output", { timeout: 60000 });
  // The kernel started for the notebook has answered kernel_info (its language_info
  // is what JupyterLab would write into the notebook).
  await page.waitForSelector(".jp-NotebookPanel .jp-Notebook-ExecutionIndicator[data-status='idle']", { timeout: 60000 });
  page.errors = errors;
  return page;
}

for (const [name, expected] of Object.entries(SHOWN)) {
  test(`${name} renders in JupyterLab as a user should see it`, async () => {
    const page = await open(name);
    try {
      // Outputs are drawn after the notebook opens: wait until the tables and charts
      // are there (or fail below with what was drawn).
      await page
        .waitForFunction(
          ({ tables, charts }) => {
            const panel = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
            const count = (selector) => panel.querySelectorAll(`.jp-OutputArea-output ${selector}`).length;
            const drawn = count("svg") + count("img") + count("canvas");
            return count("table") >= tables && drawn >= charts;
          },
          expected,
          { timeout: 60000 },
        )
        .catch(() => {});
      const shown = await page.evaluate(() => {
        const outputs = document.querySelector(".jp-NotebookPanel:not(.lm-mod-hidden)");
        const inOutputs = (selector) => outputs.querySelectorAll(`.jp-OutputArea-output ${selector}`).length;
        return {
          jsonTrees: inOutputs(".jp-RenderedJSON"),
          tables: inOutputs("table"),
          // Inline SVG in HTML, image/svg+xml (drawn as an <img>), Vega-Lite (SVG or canvas).
          charts: inOutputs("svg") + inOutputs("img") + inOutputs("canvas"),
          vegaCharts: inOutputs(".vega-embed"),
          math: inOutputs("mjx-container") + inOutputs(".MathJax"),
          latexCells: Array.from(outputs.querySelectorAll(".jp-Cell"))
            .filter((cell) => cell.querySelector(".jp-InputArea")?.textContent.includes("%%latex")).length,
          dirty: document.querySelectorAll(".lm-TabBar-tab.jp-mod-dirty, .jp-NotebookPanel.jp-mod-dirty").length,
        };
      });
      await screenshot(page, `jupyterlab-${name.replace(".ipynb", "")}`);
      const seen = JSON.stringify(shown);
      assert.equal(shown.jsonTrees, 0, `a JSON tree is shown where a result belongs: ${seen}`);
      assert.ok(shown.tables >= expected.tables, `expected at least ${expected.tables} tables: ${seen}`);
      assert.ok(shown.charts >= expected.charts, `expected at least ${expected.charts} charts: ${seen}`);
      // Math appears only where a notebook asks for it with %%latex.
      if (shown.latexCells === 0) assert.equal(shown.math, 0, `math typeset where no cell asked for it: ${seen}`);
      // Opening must not mark the notebook modified. JupyterLab's own Vega renderer
      // stores a PNG of each Vega-Lite chart it draws into the notebook (it writes
      // image/png into the output), which does; notebooks with charts are left out
      // of this check (docs/kernel.md).
      if (shown.vegaCharts === 0) {
        assert.equal(shown.dirty, 0, `opening the notebook marked it modified: ${seen}`);
      }
      assert.deepEqual(page.errors, []);
    } finally {
      await page.context().close();
      // One kernel at a time: stop the one this notebook started.
      const sessions = await (await fetch(`${lab.base}/api/sessions?token=${lab.token}`)).json();
      for (const session of sessions) {
        await fetch(`${lab.base}/api/sessions/${session.id}?token=${lab.token}`, { method: "DELETE" });
      }
    }
  });
}
