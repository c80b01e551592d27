// JupyterLab in ferrolab's live sessions against JupyterLab + jupyter-collaboration
// 5: the same JupyterLab (4.6), the same browser (Debian's Chromium, headless),
// the same machine, the same run, windowing off on both so that every cell is
// rendered:
//   open:      a fresh browser context opens a link to a 300-cell notebook with
//              outputs; time until every cell and its outputs are on the page;
//   keystroke: two JupyterLab pages on one notebook; one types into the first
//              cell, the other sees each character; latency from keydown on one
//              page to the DOM change on the other (p50, p99). Through ferrolab a
//              keystroke goes page → Jupyter server (its proxy) → collaboration
//              server → Jupyter server → page.
// The floor under both opens is JupyterLab drawing the notebook: the same JupyterLab
// opening the file from its own disk, with no collaboration at all, is measured too.
//
// node lab.mjs --bin FERROLAB --lab LAB_VENV/bin/jupyter --rtc RTC_VENV/bin/jupyter
//              [--chromium PATH] [--quick] [--out FILE]
import fs from "node:fs";
import path from "node:path";
import {
  CELLS, KEYS, OPENS, args, benchNotebook, keystrokes, launch, measure, median, quantile, startCollab, startJupyterLab,
} from "./common.mjs";

const BIN = args.bin;
const LAB = args.lab;
const RTC = args.rtc;
const CHROMIUM = args.chromium || "/usr/bin/chromium";

/** JupyterLab with ferrolab's extension, opening the collaboration server's copy. */
async function startLabOnFerrolab(notebook) {
  const collab = await startCollab(BIN, null, notebook);
  const lab = await startJupyterLab(LAB, null, "none", {
    env: { FERROLAB_COLLAB_URL: collab.base, FERROLAB_TOKEN: collab.tokens[0] },
    open: `ferrolab:bench--${collab.entry.id}.ipynb`,
    name: "JupyterLab via ferrolab",
  });
  return {
    ...lab,
    stop: () => {
      lab.stop();
      collab.stop();
    },
  };
}

const browser = await launch(CHROMIUM);
const notebook = benchNotebook();
const results = {};
if (args["keys-only"]) {
  // A quick look at one path (PROBE=1 splits it into its parts).
  const app = args["keys-only"] === "rtc" ? await startJupyterLab(RTC, notebook, "none") : await startLabOnFerrolab(notebook);
  try {
    const k = await keystrokes(browser, app);
    console.log("keys p50", quantile(k.latencies, 0.5), "p99", quantile(k.latencies, 0.99), "arrived", k.arrived);
  } finally {
    app.stop();
    await browser.close();
  }
  process.exit(0);
}
try {
  for (const [key, start] of [
    ["ferrolab", () => startLabOnFerrolab(notebook)],
    ["rtc", () => startJupyterLab(RTC, notebook, "none")],
  ]) {
    const app = await start();
    try {
      // Each server's first-notebook costs once, outside the timings.
      await measure(browser, app, { opens: 1, keys: false });
      results[key] = await measure(browser, app);
    } finally {
      app.stop();
    }
  }
  const plain = await startJupyterLab(LAB, notebook, "none", { name: "JupyterLab alone" });
  try {
    await measure(browser, plain, { opens: 1, keys: false });
    results.plain = await measure(browser, plain, { keys: false });
  } finally {
    plain.stop();
  }
} finally {
  await browser.close();
}

const ms = (x) => `${x.toFixed(0)} ms`;
const openF = median(results.ferrolab.open);
const openR = median(results.rtc.open);
const openP = median(results.plain.open);
const kF = results.ferrolab.keys.latencies;
const kR = results.rtc.keys.latencies;
const summary = {
  date: new Date().toISOString(),
  cells: CELLS,
  opens: OPENS,
  keystrokes: KEYS,
  open_all_ms: {
    ferrolab: openF, jupyter_collaboration: openR, ratio: openF / openR,
    jupyterlab_alone: openP, floor_ratio: openP / openR,
  },
  keystroke_ms: {
    ferrolab: { p50: quantile(kF, 0.5), p99: quantile(kF, 0.99), arrived: results.ferrolab.keys.arrived },
    jupyter_collaboration: { p50: quantile(kR, 0.5), p99: quantile(kR, 0.99), arrived: results.rtc.keys.arrived },
    p50_ratio: quantile(kF, 0.5) / quantile(kR, 0.5),
    p99_ratio: quantile(kF, 0.99) / quantile(kR, 0.99),
  },
  raw: results,
};
console.log(`JupyterLab opens a ${CELLS}-cell notebook, everything rendered (median of ${OPENS}):`);
console.log(`  via ferrolab ${ms(openF)}   via jupyter-collaboration ${ms(openR)}   ratio ${(openF / openR).toFixed(2)}x (goal <= 0.5x)`);
console.log(`  JupyterLab alone, from its own disk: ${ms(openP)} = ${(openP / openR).toFixed(2)}x (the floor for any extension)`);
console.log(`keystroke from one JupyterLab page to another (${KEYS} keys):`);
console.log(`  via ferrolab               p50 ${ms(quantile(kF, 0.5))}  p99 ${ms(quantile(kF, 0.99))}  (${results.ferrolab.keys.arrived}/${KEYS} arrived)`);
console.log(`  via jupyter-collaboration  p50 ${ms(quantile(kR, 0.5))}  p99 ${ms(quantile(kR, 0.99))}  (${results.rtc.keys.arrived}/${KEYS} arrived)`);
console.log(`  p50 ratio ${summary.keystroke_ms.p50_ratio.toFixed(2)}x, p99 ratio ${summary.keystroke_ms.p99_ratio.toFixed(2)}x (goal <= 1x)`);
if (args.out) {
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  fs.writeFileSync(args.out, JSON.stringify(summary, null, 1));
}
