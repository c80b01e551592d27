// The browser workspace in a real Chromium: two people typing in one cell,
// concurrent structure edits, a viewer, a server restart with offline edits.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  api, codeCell, createNotebook, createToken, startServer, tempDir, waitFor,
} from "../collab/helpers.js";
import { WEB_DIR, editorText, launch, screenshot, shownCells, signedIn, typeMarkers } from "./browser.js";

const serverArgs = ["--web", WEB_DIR];

async function serverCells(server, token, id) {
  const res = await api(server, token, "GET", `/api/notebooks/${id}/ipynb`);
  return res.json.cells.map((c) => ({ id: c.id, type: c.cell_type, source: [].concat(c.source).join("") }));
}

/** Types `count` markers into a cell, at its end or (line = 1) at the end of its first line. */
async function typeInCell(page, cellId, prefix, count, line = null) {
  const content = page.locator(`.cell[data-id="${cellId}"] .cm-content`);
  await content.click();
  if (line === 1) {
    await page.keyboard.press("Control+Home");
    await page.keyboard.press("End");
  } else {
    await page.keyboard.press("Control+End");
  }
  return typeMarkers(page, prefix, count);
}

test("two editors type into one cell at once and end with the same text as the server", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const bob = createToken(data, "editor", "bob");
  const server = await startServer(data, { args: serverArgs });
  const browser = await launch();
  try {
    const entry = await createNotebook(server, alice, [
      codeCell("a", "let x = 1;\nlet y = 2;"),
      {
        id: "md", cell_type: "markdown", metadata: {},
        source: "# Shared notes\n\n<img src=x onerror=\"window.pwned=1\"> **bold**",
      },
      {
        ...codeCell("out", "println!(\"hi\");"),
        execution_count: 3,
        outputs: [
          { output_type: "stream", name: "stdout", text: "hi\n\u001b[31mred\u001b[0m\n" },
          { output_type: "display_data", metadata: {}, data: { "text/html": "<b>ok</b><script>window.pwned=2</script>", "text/plain": "ok" } },
        ],
      },
    ]);
    const pageA = await signedIn(browser, server, alice);
    await pageA.waitForSelector(`tr[data-id="${entry.id}"]`);
    await screenshot(pageA, "workspace");
    await pageA.click(`tr[data-id="${entry.id}"] a.title`);
    await pageA.waitForSelector('.cell[data-id="a"] .cm-content');
    const pageB = await signedIn(browser, server, bob, `/notebooks/${entry.id}`);
    await pageB.waitForSelector('.cell[data-id="a"] .cm-content');

    // Markdown renders, outputs render, and nothing in them runs.
    await pageA.waitForSelector('.cell[data-id="md"] .markdown-rendered h1');
    assert.equal(await pageA.textContent('.cell[data-id="md"] .markdown-rendered h1'), "Shared notes");
    await pageA.waitForSelector('.cell[data-id="out"] .outputs .ansi-red-fg');
    assert.equal(await pageA.textContent('.cell[data-id="out"] .output-data b'), "ok");
    assert.equal(await pageA.textContent('.cell[data-id="out"] .prompt'), "[3]:");
    assert.equal(await pageA.evaluate(() => window.pwned), undefined, "no script in a notebook runs");

    // Both type into cell a at the same time, one on each line (at one spot, a
    // CRDT interleaves two people's characters, as any shared editor does).
    const [typedA, typedB] = await Promise.all([
      typeInCell(pageA, "a", "A", 15, 1),
      typeInCell(pageB, "a", "B", 15),
    ]);
    const want = `let x = 1;${typedA.join("")}\nlet y = 2;${typedB.join("")}`;
    let seen;
    await waitFor(async () => {
      seen = await Promise.all([editorText(pageA, "a"), editorText(pageB, "a")]);
      return seen[0] === want && seen[1] === want;
    }, "both editors to show everyone's typing once").catch((error) => {
      throw new Error(`${error.message}: want ${JSON.stringify(want)}, the editors show ${JSON.stringify(seen)}`);
    });
    const final = await editorText(pageA, "a");
    await waitFor(async () => (await serverCells(server, alice, entry.id)).find((c) => c.id === "a").source === final,
      "the server to hold the same text");

    // Each sees the other's cursor.
    await pageA.waitForSelector('.cell[data-id="a"] .remote-name:text("bob")');
    await pageB.waitForSelector('.cell[data-id="a"] .remote-name:text("alice")');
    await pageA.waitForSelector('.people .person:text("bob")');
    await screenshot(pageA, "notebook");

    // Concurrent structure edits: A inserts below a, B inserts below a and moves
    // "out" up, A deletes md; nothing duplicated, nothing lost, one order for all.
    await pageA.click('.cell[data-id="a"] .prompt');
    await pageB.click('.cell[data-id="out"] .prompt');
    await Promise.all([
      (async () => {
        await pageA.keyboard.press("b");
        await pageA.keyboard.type("// from A");
        await pageA.keyboard.press("Escape");
        await pageA.click('.cell[data-id="md"] .prompt');
        await pageA.keyboard.press("d");
        await pageA.keyboard.press("d");
      })(),
      (async () => {
        await pageB.click('.toolbar [data-action="up"]');
        await pageB.click('.cell[data-id="a"] .prompt');
        await pageB.keyboard.press("b");
        await pageB.keyboard.type("// from B");
        await pageB.keyboard.press("Escape");
      })(),
    ]);
    // Settled: the server holds both new cells' whole text (the last keystrokes
    // may still be on their way when the structure already agrees), and both
    // pages show the server's cells, in its order, with its text.
    let expected;
    let shown;
    const view = async (page) => {
      const ids = await shownCells(page);
      return Promise.all(ids.map(async (cellId) => ({ id: cellId, source: await editorText(page, cellId) })));
    };
    await waitFor(async () => {
      const cells = await serverCells(server, alice, entry.id);
      shown = await Promise.all([view(pageA), view(pageB)]);
      expected = cells;
      const want = JSON.stringify(cells.map((c) => ({ id: c.id, source: c.source })));
      const typed = cells.filter((c) => c.source === "// from A" || c.source === "// from B").length;
      return cells.length === 4 && typed >= 2 && JSON.stringify(shown[0]) === want && JSON.stringify(shown[1]) === want;
    }, "the server to hold both new cells and both pages to show its cells, in its order, with its text").catch((error) => {
      throw new Error(`${error.message}: the server has ${JSON.stringify(expected)}, the pages show ${JSON.stringify(shown)}`);
    });
    const ids = expected.map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length, "no cell twice");
    assert.ok(!ids.includes("md"), "the deleted cell is gone");
    assert.ok(ids.includes("out") && ids.includes("a"));
    const sources = expected.map((c) => c.source);
    assert.equal(sources.filter((s) => s === "// from A").length, 1, JSON.stringify(expected));
    assert.equal(sources.filter((s) => s === "// from B").length, 1, JSON.stringify(expected));
    assert.deepEqual(pageA.errors, []);
    assert.deepEqual(pageB.errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("a viewer sees everything live and can change nothing", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data, { args: serverArgs });
  const browser = await launch();
  try {
    const entry = await createNotebook(server, editor, [codeCell("a", "let a = 1;"), codeCell("b", "let b = 2;")]);
    const pageE = await signedIn(browser, server, editor, `/notebooks/${entry.id}`);
    const pageV = await signedIn(browser, server, viewer, `/notebooks/${entry.id}`);
    await pageV.waitForSelector('.cell[data-id="a"] .cm-content');
    await pageV.waitForSelector(".read-only");
    assert.equal(await pageV.getAttribute('.cell[data-id="a"] .cm-content', "contenteditable"), "false");
    assert.ok(await pageV.isDisabled('.toolbar [data-action="add-code"]'));
    assert.ok(await pageV.isDisabled('.toolbar [data-action="delete"]'));

    // Typing and command-mode keys change nothing, and say why.
    await pageV.click('.cell[data-id="a"] .cm-content');
    await pageV.keyboard.type("HACK");
    await pageV.click('.cell[data-id="b"] .prompt');
    await pageV.keyboard.press("b");
    await pageV.keyboard.press("d");
    await pageV.keyboard.press("d");
    await pageV.waitForSelector("#status.error:text('viewer')");
    assert.equal(await editorText(pageV, "a"), "let a = 1;");
    assert.deepEqual(await shownCells(pageV), ["a", "b"]);

    // The editor's typing reaches the viewer; the server never took the viewer's.
    await typeInCell(pageE, "b", "E", 3);
    await waitFor(async () => (await editorText(pageV, "b")) === "let b = 2;E0;E1;E2;", "the viewer to see the edit");
    const cells = await serverCells(server, editor, entry.id);
    assert.deepEqual(cells.map((c) => c.source), ["let a = 1;", "let b = 2;E0;E1;E2;"]);

    // The workspace page offers a viewer no create, rename or delete.
    const list = await signedIn(browser, server, viewer, "/");
    await list.waitForSelector(`tr[data-id="${entry.id}"]`);
    assert.ok(await list.isHidden("button.new"));
    assert.equal(await list.locator("button.rename, button.delete").count(), 0);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("after a server restart both browsers reconnect and their offline edits merge", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const bob = createToken(data, "editor", "bob");
  let server = await startServer(data, { args: serverArgs });
  const port = server.port;
  const browser = await launch();
  try {
    const entry = await createNotebook(server, alice, [codeCell("a", "start"), codeCell("b", "")]);
    const pageA = await signedIn(browser, server, alice, `/notebooks/${entry.id}`);
    const pageB = await signedIn(browser, server, bob, `/notebooks/${entry.id}`);
    await pageA.waitForSelector('.cell[data-id="a"] .cm-content');
    await pageB.waitForSelector('.cell[data-id="a"] .cm-content');
    await typeInCell(pageA, "a", "online", 1);
    await waitFor(async () => (await editorText(pageB, "a")) === "startonline0;", "the first edit to arrive");

    await server.stop();
    // Offline: both keep editing, in the same cell and in another.
    const [offA] = await Promise.all([typeInCell(pageA, "a", "offA", 3), typeInCell(pageB, "b", "offB", 3)]);
    assert.ok((await editorText(pageA, "a")).endsWith(offA.join("")), "typing works offline");
    server = await startServer(data, { port, args: serverArgs });

    const wantA = `startonline0;${offA.join("")}`;
    const wantB = "offB0;offB1;offB2;";
    await waitFor(async () => {
      const [aa, ab, ba, bb] = await Promise.all([
        editorText(pageA, "a"), editorText(pageA, "b"), editorText(pageB, "a"), editorText(pageB, "b"),
      ]);
      return aa === wantA && ba === wantA && ab === wantB && bb === wantB;
    }, "both browsers to reconnect and merge", 30000);
    await waitFor(async () => {
      const cells = await serverCells(server, alice, entry.id);
      return cells[0].source === wantA && cells[1].source === wantB;
    }, "the server to hold both offline edits");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("one person runs a cell; the other watches its output stream in; a latecomer sees it too", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const bob = createToken(data, "editor", "bob");
  const carol = createToken(data, "viewer", "carol");
  const server = await startServer(data, { args: serverArgs });
  const browser = await launch();
  try {
    const entry = await createNotebook(server, alice, [
      codeCell("warm", "let greeting = \"hi\";"),
      codeCell("tick", 'for i in 0..3 {\n    println!("tick {i}");\n    std::thread::sleep(std::time::Duration::from_millis(1500));\n}\ngreeting'),
    ]);
    const pageA = await signedIn(browser, server, alice, `/notebooks/${entry.id}`);
    const pageB = await signedIn(browser, server, bob, `/notebooks/${entry.id}`);
    await pageA.waitForSelector('.cell[data-id="tick"] .cm-content');
    await pageB.waitForSelector('.cell[data-id="tick"] .cm-content');

    // Alice runs everything from her toolbar; Bob sees the kernel start.
    await pageA.click('.toolbar [data-action="run-all"]');
    await pageB.waitForSelector('.kernel-status[data-status="busy"], .kernel-status[data-status="starting"]');
    // Bob sees the stream arrive line by line, not all at the end.
    const outputOf = (page) => page.evaluate(() => document.querySelector('.cell[data-id="tick"] .outputs')?.textContent ?? "");
    let partial = false;
    await waitFor(async () => {
      const text = await outputOf(pageB);
      if (text.includes("tick 0") && !text.includes("tick 2")) partial = true;
      return text.includes("tick 2") && text.includes('"hi"');
    }, "bob to see the cell's output", 180000);
    assert.ok(partial, "the output streamed in while the cell ran");
    await pageB.waitForSelector('.kernel-status[data-status="idle"]');
    assert.equal(await pageB.textContent('.cell[data-id="tick"] .prompt'), "[2]:");
    // Alice's page follows the same document (it may be a sync message behind Bob's).
    const final = await outputOf(pageB);
    await waitFor(async () => (await outputOf(pageA)) === final, "alice to see the same output as bob");

    // Carol opens the notebook afterwards and sees the same outputs; she cannot run.
    const pageC = await signedIn(browser, server, carol, `/notebooks/${entry.id}`);
    await waitFor(async () => (await outputOf(pageC)) === final, "the latecomer to see the same output");
    assert.ok(await pageC.isDisabled('.toolbar [data-action="run"]'));
    await screenshot(pageB, "notebook-run");
    assert.deepEqual([...pageA.errors, ...pageB.errors, ...pageC.errors], []);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("outputs render safely: Vega-Lite charts, SVG, PNG, errors", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data, { args: serverArgs });
  const browser = await launch();
  try {
    const png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    const spec = {
      $schema: "https://vega.github.io/schema/vega-lite/v5.json",
      data: { values: [{ x: 1, y: 2 }, { x: 2, y: 5 }, { x: 3, y: 3 }] },
      mark: "line",
      encoding: { x: { field: "x", type: "quantitative" }, y: { field: "y", type: "quantitative" } },
      // A spec may not turn the embedder's options back on (the menu offers
      // "Open in Vega Editor", which posts the data to a web site).
      usermeta: { embedOptions: { actions: true } },
    };
    const display = (data) => ({ output_type: "display_data", metadata: {}, data });
    const entry = await createNotebook(server, editor, [
      { ...codeCell("chart", "%plot t --kind line"), outputs: [display({ "application/vnd.vegalite.v5+json": spec, "text/plain": "line chart" })] },
      {
        ...codeCell("svg", "svg"),
        outputs: [display({ "image/svg+xml": '<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><script>window.pwned=3</script><rect width="10" height="10" onclick="window.pwned=4"/></svg>' })],
      },
      { ...codeCell("png", "png"), outputs: [display({ "image/png": png, "text/plain": "image" })] },
      {
        ...codeCell("err", "panic"),
        outputs: [{ output_type: "error", ename: "Panic", evalue: "boom", traceback: ["\u001b[31mthread panicked\u001b[0m: boom"] }],
      },
    ]);
    const page = await signedIn(browser, server, editor, `/notebooks/${entry.id}`);
    await page.waitForSelector('.cell[data-id="chart"] .vega svg.marks', { timeout: 60000 });
    assert.equal(await page.locator('.cell[data-id="chart"] .vega-actions').count(), 0, "no actions menu");
    await page.waitForSelector('.cell[data-id="svg"] .output-data svg rect');
    assert.equal(await page.locator('.cell[data-id="svg"] script').count(), 0, "no script element in an SVG output");
    assert.equal(await page.getAttribute('.cell[data-id="svg"] rect', "onclick"), null, "no event handler attribute");
    assert.match(await page.getAttribute('.cell[data-id="png"] img', "src"), /^data:image\/png;base64,/);
    assert.equal(await page.textContent('.cell[data-id="err"] .output-error .ansi-red-fg'), "thread panicked");
    await page.click('.cell[data-id="svg"] rect');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
    await screenshot(page, "outputs");
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
