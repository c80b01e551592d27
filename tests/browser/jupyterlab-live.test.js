// Live sessions between JupyterLab and the workspace: real JupyterLab (from .venv,
// with the ferrolab-jupyterlab wheel) and the real browser workspace against one
// collaboration server, driven by Playwright with Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import {
  api,
  codeCell,
  createNotebook,
  createToken,
  sleep,
  startServer,
  tempDir,
  waitFor,
} from "../collab/helpers.js";
import { startLab } from "./lab.js";
import { WEB_DIR, editorText, launch, screenshot, shownCells, signedIn } from "./browser.js";

let collab;
let lab;
let browser;
let editor;
let data;

before(async () => {
  data = tempDir();
  editor = createToken(data, "editor", "ada");
  collab = await startServer(data, { args: ["--web", WEB_DIR] });
  const dir = tempDir();
  fs.mkdirSync(path.join(dir, "root"));
  lab = await startLab({
    dir,
    root: path.join(dir, "root"),
    env: { FERROLAB_COLLAB_URL: collab.base, FERROLAB_TOKEN: editor },
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await lab?.stop();
  await collab?.stop();
});

/** The notebook's cells as the server has them. */
async function serverCells(id) {
  const reply = await api(collab, editor, "GET", `/api/notebooks/${id}/ipynb`);
  assert.equal(reply.status, 200, reply.text);
  return reply.json.cells.map((c) => ({ id: c.id, type: c.cell_type, source: [].concat(c.source).join("") }));
}

let workspaces = 0;

/** A JupyterLab page (a workspace of its own) with notebook `title` open from the
 * Shared notebooks panel. */
async function openInLab(server, title) {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  const page = await context.newPage();
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") page.errors.push(m.text());
  });
  workspaces += 1;
  await page.goto(`${server.base}/lab/workspaces/live${workspaces}?reset&token=${server.token}`);
  const tab = page.locator('.lm-TabBar-tab[data-id="ferrolab-shared-notebooks"]');
  await tab.waitFor({ timeout: 60000 });
  await tab.click();
  const item = page.locator("#ferrolab-shared-notebooks .jp-DirListing-item", { hasText: `${title}.ipynb` });
  await item.waitFor({ timeout: 30000 });
  await item.dblclick();
  await page.waitForSelector(".jp-NotebookPanel .jp-Notebook .jp-Cell", { state: "attached", timeout: 30000 });
  return page;
}

/** What JupyterLab shows: each cell's type and editor text, in order. */
function labCells(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll(".jp-NotebookPanel .jp-Notebook .jp-Cell"), (cell) => ({
      type: cell.classList.contains("jp-MarkdownCell") ? "markdown" : cell.classList.contains("jp-RawCell") ? "raw" : "code",
      source: Array.from(cell.querySelectorAll(".cm-content .cm-line"), (line) => line.textContent).join("\n"),
    })),
  );
}

/** Types `count` markers at the end of line `line` (1-based) of JupyterLab cell `index`. */
async function typeInLab(page, index, line, prefix, count) {
  await page.locator(".jp-NotebookPanel .jp-Cell").nth(index).locator(".cm-content").click();
  await page.keyboard.press("Control+Home");
  for (let i = 1; i < line; i++) await page.keyboard.press("ArrowDown");
  await page.keyboard.press("End");
  const typed = [];
  for (let i = 0; i < count; i++) {
    const marker = `${prefix}${i};`;
    await page.keyboard.type(marker);
    typed.push(marker);
    await sleep(15 + ((i * 7) % 20));
  }
  return typed;
}

/** Types `count` markers at the end of a workspace cell. */
async function typeInWorkspace(page, cellId, prefix, count) {
  await page.locator(`.cell[data-id="${cellId}"] .cm-content`).click();
  await page.keyboard.press("Control+End");
  const typed = [];
  for (let i = 0; i < count; i++) {
    const marker = `${prefix}${i};`;
    await page.keyboard.type(marker);
    typed.push(marker);
    await sleep(15 + ((i * 7) % 20));
  }
  return typed;
}

test("two JupyterLab pages and a workspace page type into one cell at once: the same text everywhere, every character kept", async () => {
  const entry = await createNotebook(collab, editor, [
    { id: "intro", cell_type: "markdown", metadata: {}, source: "# Typing together" },
    codeCell("a", "let x = 1;\nlet y = 2;\nlet z = 3;"),
  ]);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "Typing together" });
  const pages = [];
  try {
    const one = await openInLab(lab, "Typing together");
    pages.push(one);
    const two = await openInLab(lab, "Typing together");
    pages.push(two);
    const web = await signedIn(browser, collab, editor, `/notebooks/${entry.id}`);
    pages.push(web);
    await web.waitForSelector('.cell[data-id="a"] .cm-content');
    const shown = await labCells(one);
    assert.deepEqual(shown.map((c) => c.type), ["markdown", "code"]);
    assert.equal(shown[1].source, "let x = 1;\nlet y = 2;\nlet z = 3;");

    const [typedOne, typedTwo, typedWeb] = await Promise.all([
      typeInLab(one, 1, 1, "P", 12),
      typeInLab(two, 1, 2, "Q", 12),
      typeInWorkspace(web, "a", "W", 12),
    ]);
    const want = `let x = 1;${typedOne.join("")}\nlet y = 2;${typedTwo.join("")}\nlet z = 3;${typedWeb.join("")}`;
    let seen;
    await waitFor(async () => {
      seen = [(await labCells(one))[1]?.source, (await labCells(two))[1]?.source, await editorText(web, "a")];
      return seen.every((s) => s === want);
    }, "all three pages to show everyone's typing once").catch((error) => {
      throw new Error(`${error.message}: want ${JSON.stringify(want)}, the pages show ${JSON.stringify(seen)}`);
    });
    await waitFor(async () => (await serverCells(entry.id)).find((c) => c.id === "a")?.source === want,
      "the server to hold the same text");
    await screenshot(one, "jupyterlab-live");
    for (const page of pages) assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    for (const [i, page] of pages.entries()) await screenshot(page, `jupyterlab-live-typing-${i}`);
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
});
