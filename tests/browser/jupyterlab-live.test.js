// Live sessions between JupyterLab and the workspace: real JupyterLab (from .venv,
// with the ferrolab-jupyterlab wheel) and the real browser workspace against one
// collaboration server, driven by Playwright with Debian's chromium.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  api,
  codeCell,
  jsClient,
  spliceSource,
  createNotebook,
  createToken,
  sleep,
  startServer,
  tempDir,
  waitFor,
} from "../collab/helpers.js";
import { startLab } from "./lab.js";
import { WEB_DIR, editorText, launch, screenshot, shownCells, signedIn, typeMarkers } from "./browser.js";

let collab;
let lab;
let browser;
let editor;
let other;
let data;

before(async () => {
  data = tempDir();
  editor = createToken(data, "editor", "ada");
  other = createToken(data, "editor", "bea");
  collab = await startServer(data, { args: ["--web", WEB_DIR] });
  lab = await startLab({
    dir: tempDir(),
    env: { FERROLAB_COLLAB_URL: collab.base, FERROLAB_TOKEN: editor },
    expose: true,
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
  page.on("pageerror", (e) => page.errors.push(String(e.stack ?? e)));
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

/** What JupyterLab shows: each cell's type and text (a rendered Markdown cell's
 * rendered text), in order. */
function labCells(page) {
  return page.evaluate(() =>
    Array.from(document.querySelectorAll(".jp-NotebookPanel .jp-Notebook .jp-Cell"), (cell) => {
      const type = cell.classList.contains("jp-MarkdownCell") ? "markdown" : cell.classList.contains("jp-RawCell") ? "raw" : "code";
      const rendered = type === "markdown" && cell.classList.contains("jp-mod-rendered");
      return {
        type,
        source: rendered
          ? (cell.querySelector(".jp-MarkdownOutput")?.textContent ?? "").trim()
          : Array.from(cell.querySelectorAll(".cm-content .cm-line"), (line) => {
            // Without collaborators' name labels, which are widgets inside the line.
            const copy = line.cloneNode(true);
            for (const label of copy.querySelectorAll(".ferrolab-remote-caret")) label.remove();
            return copy.textContent;
          }).join("\n"),
      };
    }),
  );
}

/** What a workspace page shows: each cell's type and text, in order. */
async function webCells(page) {
  const ids = await shownCells(page);
  return Promise.all(ids.map(async (id) => {
    const type = await page.evaluate((cellId) => {
      const el = document.querySelector(`.cell[data-id="${cellId}"]`);
      return el.classList.contains("markdown") ? "markdown" : el.classList.contains("raw") ? "raw" : "code";
    }, id);
    return { type, source: await editorText(page, id) };
  }));
}

/** Selects the JupyterLab cell showing `text` (command mode). */
async function labSelect(page, text) {
  await page.locator(".jp-NotebookPanel .jp-Cell", { hasText: text }).first().locator(".jp-InputPrompt").click();
}

/** Opens notebook `cells` under `title` in two JupyterLab pages (ada) and a
 * workspace page (bea). */
async function threePages(title, cells) {
  const entry = await createNotebook(collab, editor, cells);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title });
  const pages = [];
  pages.push(await openInLab(lab, title));
  pages.push(await openInLab(lab, title));
  const web = await signedIn(browser, collab, other, `/notebooks/${entry.id}`);
  pages.push(web);
  await web.waitForSelector(".cell .cm-content");
  return { entry, pages };
}

/** Types `count` markers at the end of line `line` (1-based) of JupyterLab cell `index`. */
async function typeInLab(page, index, line, prefix, count) {
  await page.locator(".jp-NotebookPanel .jp-Cell").nth(index).locator(".cm-content").click();
  await page.keyboard.press("Control+Home");
  for (let i = 1; i < line; i++) await page.keyboard.press("ArrowDown");
  await page.keyboard.press("End");
  return typeMarkers(page, prefix, count);
}

/** Types `count` markers at the end of a workspace cell. */
async function typeInWorkspace(page, cellId, prefix, count) {
  await page.locator(`.cell[data-id="${cellId}"] .cm-content`).click();
  await page.keyboard.press("Control+End");
  return typeMarkers(page, prefix, count);
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
    const web = await signedIn(browser, collab, other, `/notebooks/${entry.id}`);
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
    // Everyone's cursor shows on the others' pages: bea's (the workspace) and the
    // other JupyterLab page's in JupyterLab, the JupyterLab users' in the workspace.
    const labels = (page, selector) => page.evaluate((sel) => Array.from(document.querySelectorAll(sel), (e) => e.textContent).sort(), selector);
    await waitFor(async () => JSON.stringify(await labels(one, ".jp-NotebookPanel .jp-CodeCell .ferrolab-remote-name")) === JSON.stringify(["ada", "bea"]),
      "JupyterLab to show the workspace user's and the other JupyterLab page's cursors");
    await waitFor(async () => JSON.stringify(await labels(web, '.cell[data-id="a"] .remote-name')) === JSON.stringify(["ada", "ada"]),
      "the workspace to show both JupyterLab pages' cursors");
    // Where: each person's caret at the end of the line they typed on.
    const carets = (page) => page.evaluate(() => Object.fromEntries(
      Array.from(document.querySelectorAll(".jp-NotebookPanel .ferrolab-remote-caret"), (caret) => {
        const line = caret.closest(".cm-line").cloneNode(true);
        const name = caret.textContent;
        for (const other of line.querySelectorAll(".ferrolab-remote-caret")) {
          if (other.textContent === name) other.replaceWith("|");
          else other.remove();
        }
        return [name, line.textContent];
      })));
    const lines = want.split("\n");
    await waitFor(async () => JSON.stringify(await carets(one)) === JSON.stringify({ ada: `${lines[1]}|`, bea: `${lines[2]}|` }),
      "JupyterLab to draw each collaborator's cursor where it is");
    await waitFor(async () => JSON.stringify(await labels(one, ".ferrolab-person")) === JSON.stringify(["ada (you)", "bea"]),
      "JupyterLab's toolbar to list who is on the notebook");
    await waitFor(async () => (await labels(web, ".people .person")).join(",") === "ada,bea (you)",
      "the workspace to list the JupyterLab user");
    await screenshot(one, "jupyterlab-live");
    for (const page of pages) assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    for (const [i, page] of pages.entries()) await screenshot(page, `jupyterlab-live-typing-${i}`);
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
});

test("cells added, moved, deleted and retyped at once from JupyterLab and the workspace: none lost or doubled, one order everywhere", async () => {
  const { entry, pages } = await threePages("Structure together", [
    codeCell("a", "let a = 1;"),
    codeCell("b", "let b = 2;"),
    codeCell("c", "let c = 3;"),
    codeCell("d", "let d = 4;"),
    codeCell("e", "let e = 5;"),
  ]);
  const [one, two, web] = pages;
  try {
    await Promise.all([
      (async () => {
        // JupyterLab: a cell added below a, c moved up, d made Markdown.
        await labSelect(one, "let a = 1;");
        await one.keyboard.press("b");
        await one.keyboard.press("Enter");
        await one.keyboard.type("// from lab");
        await one.keyboard.press("Escape");
        await labSelect(one, "let c = 3;");
        await one.keyboard.press("Control+Shift+ArrowUp");
        // A collaborator's move can re-create the cell widgets under the pointer, and
        // JupyterLab then drops the keyboard focus (as it does with its own RTC), so
        // the key press is repeated until JupyterLab shows the change it asked for.
        await waitFor(async () => {
          await labSelect(one, "let d = 4;");
          await one.keyboard.press("m");
          return one.locator(".jp-NotebookPanel .jp-MarkdownCell", { hasText: "let d = 4;" }).count();
        }, "JupyterLab to make d a Markdown cell");
      })(),
      (async () => {
        // The workspace: b deleted, a cell added below e, a moved down.
        await web.click('.cell[data-id="b"] .prompt');
        await web.keyboard.press("d");
        await web.keyboard.press("d");
        await web.click('.cell[data-id="e"] .prompt');
        await web.keyboard.press("b");
        await web.keyboard.type("// from web");
        await web.keyboard.press("Escape");
        await web.click('.cell[data-id="a"] .prompt');
        await web.click('.toolbar [data-action="down"]');
      })(),
    ]);
    let seen;
    await waitFor(async () => {
      const server = (await serverCells(entry.id)).map(({ type, source }) => ({ type, source }));
      seen = [server, await labCells(one), await labCells(two), await webCells(web)];
      const texts = server.map((c) => c.source);
      const settled =
        texts.includes("// from lab") && texts.includes("// from web") && !texts.includes("let b = 2;") &&
        server.find((c) => c.source === "let d = 4;")?.type === "markdown";
      return settled && seen.every((cells) => JSON.stringify(cells) === JSON.stringify(server));
    }, "every page and the server to show the same cells").catch((error) => {
      throw new Error(`${error.message}: ${JSON.stringify(seen)}`);
    });
    const texts = seen[0].map((c) => c.source).sort();
    assert.deepEqual(texts, ["// from lab", "// from web", "let a = 1;", "let c = 3;", "let d = 4;", "let e = 5;"],
      "each cell once: none lost, none doubled");
    for (const page of pages) assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    for (const [i, page] of pages.entries()) await screenshot(page, `jupyterlab-live-structure-${i}`);
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
});

/** A property of a part of the JupyterLab cell whose editor shows `text`
 * (`""` when there is none): its outputs' text, its prompt's text or title. */
function labCellPart(page, text, part, property = "textContent") {
  return page.evaluate(([wanted, selector, key]) => {
    const cell = Array.from(document.querySelectorAll(".jp-NotebookPanel .jp-Cell"))
      .find((c) => c.querySelector(".cm-content")?.textContent.includes(wanted));
    return (cell?.querySelector(selector)?.[key] ?? "").trim();
  }, [text, part, property]);
}

/** The text of a JupyterLab cell's outputs, for the cell showing `text`. */
const labOutput = (page, text) => labCellPart(page, text, ".jp-OutputArea");

/** The execution count JupyterLab shows for the cell showing `text`. */
const labPrompt = (page, text) => labCellPart(page, text, ".jp-InputPrompt");

test("a cell run from JupyterLab streams into the workspace and the other JupyterLab page, and the other way round, on one shared kernel", async () => {
  const { entry, pages } = await threePages("Running together", [
    codeCell("warm", 'let greeting = "hi";'),
    codeCell("tick", 'for i in 0..3 {\n    println!("tick {i}");\n    std::thread::sleep(std::time::Duration::from_millis(1500));\n}\ngreeting'),
    codeCell("back", 'format!("{greeting} back")'),
  ]);
  const [one, two, web] = pages;
  try {
    // JupyterLab runs the first two cells (Shift-Enter twice, as a user would).
    await labSelect(one, "let greeting");
    await one.keyboard.press("Shift+Enter");
    await one.keyboard.press("Shift+Enter");
    await one.waitForSelector('.ferrolab-kernel-status[data-status="busy"], .ferrolab-kernel-status[data-status="starting"]');
    const webOutput = () => web.evaluate(() => document.querySelector('.cell[data-id="tick"] .outputs')?.textContent ?? "");
    let partial = false;
    await waitFor(async () => {
      const [inWeb, inTwo] = [await webOutput(), await labOutput(two, "tick {i}")];
      if (inWeb.includes("tick 0") && !inWeb.includes("tick 2")) partial = true;
      return inWeb.includes("tick 2") && inWeb.includes('"hi"') && inTwo.includes("tick 2") && inTwo.includes('"hi"');
    }, "the workspace and the other JupyterLab page to see the cell's output", 240000);
    assert.ok(partial, "the output streamed into the workspace while the cell ran");
    await waitFor(async () => (await labPrompt(two, "tick {i}")) === "[2]:", "the other JupyterLab page's execution count");
    assert.equal(await web.textContent('.cell[data-id="tick"] .prompt'), "[2]:");

    // The workspace runs the third cell on the same kernel: JupyterLab sees it.
    await web.click('.cell[data-id="back"] .prompt');
    await web.click('.toolbar [data-action="run"]');
    await waitFor(async () => (await labOutput(one, "back")).includes('"hi back"') && (await labOutput(two, "back")).includes('"hi back"'),
      "both JupyterLab pages to see the workspace's run", 120000);
    await waitFor(async () => (await labPrompt(one, "back")) === "[3]:", "the run's execution count in JupyterLab");
    await one.waitForSelector('.ferrolab-kernel-status[data-status="idle"]');
    // Each cell records who ran it, shown on its prompt everywhere.
    const labRunner = (page, text) => labCellPart(page, text, ".jp-InputPrompt", "title");
    await waitFor(async () => (await labRunner(two, "tick {i}")) === "Run by ada" && (await labRunner(two, "back")) === "Run by bea",
      "JupyterLab to show who ran each cell");
    assert.equal(await web.getAttribute('.cell[data-id="tick"] .prompt', "title"), "Run by ada");
    assert.equal(await web.getAttribute('.cell[data-id="back"] .prompt', "title"), "Run by bea");
    // Outputs are the kernel's: none of them is written back from a JupyterLab page.
    const server = await api(collab, editor, "GET", `/api/notebooks/${entry.id}/ipynb`);
    const tick = server.json.cells.find((c) => c.id === "tick");
    assert.equal(tick.execution_count, 2);
    assert.equal(tick.outputs.filter((o) => o.output_type === "stream").map((o) => [].concat(o.text).join("")).join(""), "tick 0\ntick 1\ntick 2\n");
    // Typed and run at once from JupyterLab: the kernel runs the text as typed (the
    // run waits until the server has the edit).
    await two.locator(".jp-NotebookPanel .jp-Cell", { hasText: "back" }).first().locator(".cm-content").click();
    await two.keyboard.press("Control+End");
    await two.keyboard.type(".to_uppercase()");
    await two.keyboard.press("Control+Enter");
    await waitFor(async () => (await web.evaluate(() => document.querySelector('.cell[data-id="back"] .outputs')?.textContent ?? "")).includes('"HI BACK"'),
      "the edit made just before the run to be what ran", 120000);

    // JupyterLab's 0, 0 restarts the shared kernel (after asking): everyone sees it.
    await labSelect(one, "back");
    await one.keyboard.press("0");
    await one.keyboard.press("0");
    await one.locator('.jp-Dialog button:has-text("Restart")').click();
    await web.waitForSelector('.kernel-status[data-status="stopped"]');
    await two.waitForSelector('.ferrolab-kernel-status[data-status="stopped"]');
    await screenshot(one, "jupyterlab-live-run");
    for (const page of pages) assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    for (const [i, page] of pages.entries()) await screenshot(page, `jupyterlab-live-run-${i}`);
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
});

test("a viewer's JupyterLab opens the notebook read-only and can change nothing, the server refusing what gets through", async () => {
  const viewer = createToken(data, "viewer", "vic");
  const viewerLab = await startLab({
    dir: tempDir(),
    env: { FERROLAB_COLLAB_URL: collab.base, FERROLAB_TOKEN: viewer },
  });
  const entry = await createNotebook(collab, editor, [
    { id: "notes", cell_type: "markdown", metadata: {}, source: "Only editors write here" },
    codeCell("a", "let secret = 1;"),
  ]);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "Look only" });
  const before = await serverCells(entry.id);
  let page;
  try {
    page = await openInLab(viewerLab, "Look only");
    await page.waitForSelector('.jp-NotebookPanel [data-jp-item-name="read-only-indicator"]', { timeout: 10000 });
    await page.waitForSelector(".jp-NotebookPanel.ferrolab-viewer");
    // Typing, adding, deleting and retyping cells, and running one.
    await page.locator(".jp-NotebookPanel .jp-CodeCell .cm-content").click();
    await page.keyboard.type("HACK");
    await page.keyboard.press("Escape");
    await labSelect(page, "let secret");
    await page.keyboard.press("b");
    await page.keyboard.press("m");
    await labSelect(page, "let secret");
    await page.keyboard.press("d");
    await page.keyboard.press("d");
    await sleep(500);
    await waitFor(async () => JSON.stringify(await labCells(page)) === JSON.stringify([
      { type: "markdown", source: "Only editors write here" },
      { type: "code", source: "let secret = 1;" },
    ]), "the viewer's page to show the notebook as it is");
    await labSelect(page, "let secret");
    await page.keyboard.press("Shift+Enter");
    await page.waitForSelector('.jp-Dialog :text("Read only")');
    await page.keyboard.press("Escape");
    assert.ok(await page.locator(".ferrolab-interrupt").isDisabled());
    assert.ok(await page.locator(".ferrolab-restart").isDisabled());

    // What a viewer's page would send if it were changed: a stock automerge-repo
    // client through the viewer's Jupyter server. The server drops it.
    const repo = jsClient({ ws: `ws://127.0.0.1:${viewerLab.port}/ferrolab/sync` }, viewerLab.token);
    try {
      const handle = await repo.find(entry.notebook);
      spliceSource(handle, "a", 0, "// forged\n");
      await sleep(1500);
    } finally {
      await repo.shutdown();
    }
    assert.deepEqual(await serverCells(entry.id), before, "the server's notebook is unchanged");
    const ipynb = await api(collab, editor, "GET", `/api/notebooks/${entry.id}/ipynb`);
    assert.deepEqual(ipynb.json.cells.find((c) => c.id === "a").outputs, [], "nothing ran");
    assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    if (page) await screenshot(page, "jupyterlab-live-viewer");
    throw e;
  } finally {
    await page?.context().close();
    await viewerLab.stop();
  }
});

test("cell and notebook metadata go both ways between JupyterLab and the server, outputs never from JupyterLab", async () => {
  const entry = await createNotebook(collab, editor, [codeCell("a", "let a = 1;"), codeCell("b", "let b = 2;")]);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "Metadata" });
  const page = await openInLab(lab, "Metadata");
  const repo = jsClient(collab, other);
  try {
    // The models behind the page (window.jupyterapp: the test's JupyterLab exposes it).
    const model = (what) => page.evaluate((expr) => {
      const notebook = window.jupyterapp.shell.currentWidget.content.model;
      const byId = (id) => Array.from(notebook.cells).find((c) => c.id === id);
      return new Function("notebook", "byId", `return ${expr}`)(notebook, byId);
    }, what);
    // From another client (a stock automerge-repo one): a cell's tags, the notebook's authors.
    const handle = await repo.find(entry.notebook);
    handle.change((doc) => {
      doc.cells.a.metadata.tags = ["keep"];
      doc.metadata.authors = [{ name: "bea" }];
    });
    await waitFor(async () => JSON.stringify(await model('byId("a").getMetadata("tags")')) === '["keep"]',
      "JupyterLab's model to hold the cell's new tags");
    await waitFor(async () => JSON.stringify(await model('notebook.getMetadata("authors")')) === '[{"name":"bea"}]',
      "JupyterLab's model to hold the notebook's new metadata").catch(async (error) => {
      throw new Error(`${error.message}: ${JSON.stringify(await model("[notebook.getMetadata(), notebook.sharedModel.getMetadata()]"))} ${JSON.stringify(handle.doc().metadata)}`);
    });
    // From JupyterLab: a cell's metadata changed and a key deleted, the notebook's too.
    await model('(byId("b").setMetadata("review", { by: "ada", ok: true }), byId("a").deleteMetadata("tags"), notebook.setMetadata("project", "sales"), true)');
    // Outputs set in JupyterLab stay there: the kernel's are the server's.
    await model('(byId("b").sharedModel.setOutputs([{ output_type: "stream", name: "stdout", text: "forged\\n" }]), true)');
    let cells;
    await waitFor(async () => {
      const ipynb = await api(collab, editor, "GET", `/api/notebooks/${entry.id}/ipynb`);
      cells = ipynb.json;
      const [a, b] = ipynb.json.cells;
      return JSON.stringify(b.metadata.review) === '{"by":"ada","ok":true}' && a.metadata.tags === undefined &&
        ipynb.json.metadata.project === "sales";
    }, "the server to hold JupyterLab's metadata changes").catch((error) => {
      throw new Error(`${error.message}: ${JSON.stringify(cells)}`);
    });
    assert.deepEqual(cells.metadata.authors, [{ name: "bea" }], "the other client's notebook metadata kept");
    assert.deepEqual(cells.cells[1].outputs, [], "no output written from JupyterLab");
    assert.deepEqual(page.errors, [], `no page errors: ${page.errors.join("\n")}`);
  } catch (e) {
    await screenshot(page, "jupyterlab-live-metadata");
    throw e;
  } finally {
    await repo.shutdown();
    await page.context().close();
  }
});

test("a notebook deleted while open in JupyterLab closes there, saying so", async () => {
  const owner = createToken(data, "owner", "olga");
  const entry = await createNotebook(collab, editor, [codeCell("a", "let kept = 1;")]);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "Soon gone" });
  const page = await openInLab(lab, "Soon gone");
  try {
    await page.waitForSelector(".jp-NotebookPanel .ferrolab-kernel-status");
    const deleted = await api(collab, owner, "DELETE", `/api/notebooks/${entry.id}`);
    assert.ok(deleted.status < 300, deleted.text);
    await page.waitForSelector('.jp-Dialog :text("Notebook deleted")', { timeout: 20000 });
    assert.match(await page.locator(".jp-Dialog").innerText(), /takes no more changes/);
    await waitFor(async () => (await page.locator(".jp-NotebookPanel").count()) === 0, "the notebook's tab to close");
  } catch (e) {
    await screenshot(page, "jupyterlab-live-deleted");
    throw e;
  } finally {
    await page.context().close();
  }
});

// Last: it restarts the collaboration server the other tests share.
test("a JupyterLab page that loses the server keeps editing, and its edits merge with the workspace's when the server is back", async () => {
  const entry = await createNotebook(collab, editor, [codeCell("a", "start"), codeCell("b", "")]);
  await api(collab, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "Offline edits" });
  const pages = [];
  try {
    const one = await openInLab(lab, "Offline edits");
    pages.push(one);
    const web = await signedIn(browser, collab, editor, `/notebooks/${entry.id}`);
    pages.push(web);
    await web.waitForSelector('.cell[data-id="a"] .cm-content');
    const [online] = await typeInLab(one, 0, 1, "on", 1).then((t) => [t.join("")]);
    await waitFor(async () => (await editorText(web, "a")) === `start${online}`, "the online edit to arrive");

    const port = collab.port;
    await collab.stop();
    // Offline: JupyterLab types into a and adds a cell; the workspace types into b.
    const [offLab, offWeb] = await Promise.all([typeInLab(one, 0, 1, "lab", 3), typeInWorkspace(web, "b", "web", 3)]);
    await labSelect(one, "start");
    await one.keyboard.press("b");
    await one.keyboard.press("Enter");
    await one.keyboard.type("// written offline");
    await one.keyboard.press("Escape");
    assert.equal((await labCells(one))[0].source, `start${online}${offLab.join("")}`, "typing works offline");
    collab = await startServer(data, { port, args: ["--web", WEB_DIR] });

    const want = [
      { type: "code", source: `start${online}${offLab.join("")}` },
      { type: "code", source: "// written offline" },
      { type: "code", source: offWeb.join("") },
    ];
    let seen;
    await waitFor(async () => {
      const server = (await serverCells(entry.id)).map(({ type, source }) => ({ type, source }));
      seen = [server, await labCells(one), await webCells(web)];
      return seen.every((cells) => JSON.stringify(cells) === JSON.stringify(want));
    }, "JupyterLab, the workspace and the server to hold every offline edit once", 60000).catch((error) => {
      throw new Error(`${error.message}: ${JSON.stringify(seen)}`);
    });
  } catch (e) {
    for (const [i, page] of pages.entries()) await screenshot(page, `jupyterlab-live-offline-${i}`);
    throw e;
  } finally {
    for (const page of pages) await page.context().close();
  }
});
