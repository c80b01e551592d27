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
import fs from "node:fs";
import path from "node:path";
import {
  CELLS, KEYS, OPENS, args, benchNotebook, keystrokes, launch, measure, median, openTime, quantile, startCollab,
  startJupyterLab,
} from "./common.mjs";

const BIN = args.bin;
const WEB = args.web;
const JUPYTER = args.jupyter;
const CHROMIUM = args.chromium || "/usr/bin/chromium";

// ------------------------------------------------------------------ servers

async function startFerrolab(notebook) {
  const collab = await startCollab(BIN, WEB, notebook);
  const [token] = collab.tokens;
  return {
    name: "ferrolab",
    url: (t = token) => `${collab.base}/notebooks/${collab.entry.id}?token=${t}`,
    tokens: collab.tokens,
    cell: ".cell",
    allCells: "main.notebook > .cell",
    outputTable: ".cell .outputs table",
    editor: '.cell[data-id="c000"] .cm-content',
    stop: collab.stop,
  };
}

const browser = await launch(CHROMIUM);
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
  const lab = await startJupyterLab(JUPYTER, notebook, "none");
  try {
    // Warm the server's first-notebook costs once, as ferrolab's import did.
    await measure(browser, lab, { opens: 1, keys: false });
    results.lab = await measure(browser, lab);
  } finally {
    lab.stop();
  }
  const windowed = await startJupyterLab(JUPYTER, notebook, "full");
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
