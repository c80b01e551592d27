// Folder sync: a notebook file changed on disk while someone types into the same
// notebook is merged as edits; nothing typed is lost, and the file catches up.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import * as A from "@automerge/automerge";
import {
  api, cellSource, codeCell, createToken, jsClient, notebookWith, sleep, startServer, tempDir, waitFor,
} from "./helpers.js";

const readFile = (file) => JSON.parse(fs.readFileSync(file, "utf8"));
const sources = (nb) => Object.fromEntries(nb.cells.map((c) => [c.id, [].concat(c.source).join("")]));

test("disk edits merge with live typing, both ways", async () => {
  const data = tempDir();
  const folder = tempDir();
  const file = path.join(folder, "demo.ipynb");
  fs.writeFileSync(file, JSON.stringify(notebookWith([codeCell("a", "let a = 1;"), codeCell("b", "let b = 2;")])));
  const token = createToken(data, "editor");
  let server = await startServer(data, { args: ["--watch", folder] });
  let client;
  try {
    const entry = await waitFor(async () => {
      const listed = await api(server, token, "GET", "/api/notebooks");
      return listed.json?.notebooks?.find((n) => n.path === "demo.ipynb");
    }, "the file to be imported");
    assert.equal(entry.title, "demo");
    client = jsClient(server, token);
    const handle = await client.find(entry.notebook);
    assert.equal(cellSource(handle, "a"), "let a = 1;");

    // Type into cell a while the file is rewritten on disk underneath.
    const typed = Array.from({ length: 20 }, (_, i) => `<${i}>`);
    const typing = (async () => {
      for (const marker of typed) {
        handle.change((doc) => A.splice(doc, ["cells", "a", "source"], doc.cells.a.source.length, 0, marker));
        await sleep(30);
      }
    })();
    await sleep(200);
    const onDisk = readFile(file);
    const a = onDisk.cells.find((c) => c.id === "a");
    a.source = "// header\n" + [].concat(a.source).join("");
    onDisk.cells.find((c) => c.id === "b").source = "let b = 3;";
    onDisk.cells.push({ id: "n", cell_type: "markdown", metadata: {}, source: "# added on disk" });
    fs.writeFileSync(file, JSON.stringify(onDisk, null, 1));
    await typing;

    const merged = (s) =>
      s.a?.startsWith("// header\nlet a = 1;") && typed.every((m) => s.a.includes(m)) &&
      s.b === "let b = 3;" && s.n === "# added on disk";
    await waitFor(() => {
      const doc = handle.doc();
      return merged(Object.fromEntries(Object.keys(doc.cells).map((id) => [id, cellSource(handle, id)])));
    }, "the disk edits to reach the client");
    for (const marker of typed) {
      assert.equal(cellSource(handle, "a").split(marker).length - 1, 1, `${marker} kept once`);
    }
    await waitFor(() => {
      try {
        return merged(sources(readFile(file)));
      } catch {
        return false;
      }
    }, "the file to show everyone's edits");
    assert.deepEqual(readFile(file).cells.map((c) => c.id), ["a", "b", "n"], "the file's order is kept");

    // Edited on disk while the server is down: merged at the next start, once.
    await client.shutdown();
    client = undefined;
    await server.stop();
    const offline = readFile(file);
    offline.cells.find((c) => c.id === "b").source = ["let b = 4;"];
    offline.cells = offline.cells.filter((c) => c.id !== "n");
    fs.writeFileSync(file, JSON.stringify(offline, null, 1));
    server = await startServer(data, { args: ["--watch", folder] });
    client = jsClient(server, token);
    const again = await client.find(entry.notebook);
    await waitFor(() => cellSource(again, "b") === "let b = 4;", "the offline edit to be merged");
    assert.equal(again.doc().cells.n, undefined, "the cell deleted on disk is gone");
    const aText = cellSource(again, "a");
    assert.equal(aText.split("// header").length - 1, 1, "nothing applied twice");
    assert.ok(typed.every((m) => aText.split(m).length - 1 === 1), "typed text still there once");
    const listed = await api(server, token, "GET", "/api/notebooks");
    assert.equal(listed.json.notebooks.length, 1, "no second import of the same file");
  } finally {
    if (client) await client.shutdown();
    await server.stop();
  }
});
