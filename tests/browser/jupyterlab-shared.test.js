// ferrolab's JupyterLab extension in real JupyterLab (from .venv, with the
// ferrolab-jupyterlab wheel installed) in front of a real collaboration server: the
// "Shared notebooks" panel lists the server's notebooks and opens one live, with
// the person's token held by the Jupyter server and never in the page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import {
  cellSource,
  codeCell,
  createNotebook,
  createToken,
  jsClient,
  spliceSource,
  startServer,
  tempDir,
  waitFor,
  within,
} from "../collab/helpers.js";
import { startLab } from "./lab.js";
import { launch, screenshot } from "./browser.js";


let collab;
let lab;
let browser;
let token;
let entry;

before(async () => {
  const data = tempDir();
  token = createToken(data, "editor", "ada");
  collab = await startServer(data);
  entry = await createNotebook(collab, token, [
    { id: "intro", cell_type: "markdown", metadata: {}, source: "# Sales review" },
    codeCell("sum", "let total = 40 + 2;\ntotal"),
  ]);
  const rename = await fetch(`${collab.base}/api/notebooks/${entry.id}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ title: "Sales review" }),
  });
  assert.equal(rename.status, 200);
  lab = await startLab({
    dir: tempDir(),
    env: { FERROLAB_COLLAB_URL: collab.base, FERROLAB_TOKEN: token },
  });
  browser = await launch();
});

after(async () => {
  await browser?.close();
  await lab?.stop();
  await collab?.stop();
});

test("the Shared notebooks panel lists the server's notebooks and opens one live, for an editor writable", async () => {
  const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const requested = [];
  page.on("request", (r) => requested.push(r.url()));
  try {
    await page.goto(`${lab.base}/lab?reset&token=${lab.token}`);
    // The panel's tab in the left sidebar.
    const tab = page.locator('.lm-TabBar-tab[data-id="ferrolab-shared-notebooks"]');
    await tab.waitFor({ timeout: 60000 });
    await tab.click();
    const item = page.locator('#ferrolab-shared-notebooks .jp-DirListing-item', { hasText: "Sales review.ipynb" });
    await item.waitFor({ timeout: 30000 });
    await item.dblclick();
    await page.waitForSelector(".jp-NotebookPanel .jp-MarkdownOutput h1", { timeout: 30000 });
    assert.equal((await page.locator(".jp-NotebookPanel .jp-MarkdownOutput h1").first().innerText()).trim(), "Sales review");
    const code = await page.locator(".jp-NotebookPanel .jp-CodeCell .cm-content").first().innerText();
    assert.equal(code, "let total = 40 + 2;\ntotal");
    // Live: the shared kernel's item in the toolbar, no kernel of this Jupyter
    // server started or asked for, and an editor's notebook not read-only.
    await page.waitForSelector(".jp-NotebookPanel .ferrolab-kernel-status", { timeout: 10000 });
    assert.equal(await page.locator(".jp-Dialog").count(), 0, "no kernel picker");
    assert.equal(await page.locator('.jp-NotebookPanel [data-jp-item-name="read-only-indicator"]').count(), 0);
    const sessions = await (await fetch(`${lab.base}/api/sessions?token=${lab.token}`)).json();
    assert.deepEqual(sessions, [], "no Jupyter session (and no kernel) for a live notebook");
    // The person's token never reaches the page: not in a URL, not in the DOM.
    assert.ok(!requested.some((url) => url.includes(token)), "no request carries the collaboration token");
    assert.ok(!(await page.content()).includes(token), "the page does not hold the collaboration token");
    assert.deepEqual(errors, [], `no page errors: ${errors.join("\n")}`);
  } catch (e) {
    await screenshot(page, "jupyterlab-shared-notebooks");
    throw e;
  } finally {
    await context.close();
  }
});

/** The status a websocket upgrade of `url` is answered with (101 when accepted). */
function upgradeStatus(url) {
  return new Promise((resolve, reject) => {
    const request = http.request(url, {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
      },
    });
    request.on("upgrade", (response, socket) => {
      socket.destroy();
      resolve(response.statusCode);
    });
    request.on("response", (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on("error", reject);
    request.end();
  });
}

test("the sync socket relays a stock automerge-repo client both ways, for a signed-in Jupyter user only", async () => {
  // The Jupyter server's own token signs the client in to JupyterLab; the
  // collaboration token stays in the Jupyter server.
  const viaLab = { ws: `ws://127.0.0.1:${lab.port}/ferrolab/sync` };
  const repo = jsClient(viaLab, lab.token);
  try {
    const handle = await within(repo.find(entry.notebook), 30000, "the notebook through the proxy");
    assert.equal(cellSource(handle, "sum"), "let total = 40 + 2;\ntotal");
    spliceSource(handle, "sum", 0, "// via JupyterLab\n");
    await waitFor(async () => {
      const reply = await fetch(`${collab.base}/api/notebooks/${entry.id}/ipynb`, {
        headers: { authorization: `Bearer ${token}` },
      });
      const nb = await reply.json();
      // nbformat writes a source as a list of lines.
      const source = [nb.cells.find((c) => c.id === "sum")?.source ?? ""].flat().join("");
      return source === "// via JupyterLab\nlet total = 40 + 2;\ntotal";
    }, "the edit made through the proxy on the server");
  } finally {
    await repo.shutdown();
  }
  assert.equal(await upgradeStatus(`${lab.base}/ferrolab/sync`), 403, "no Jupyter sign-in, no socket");
  assert.equal(await upgradeStatus(`${lab.base}/ferrolab/sync?token=wrong`), 403);
});
