// Two stock JS clients and one Rust client type into the same cell at random
// places at the same time; everyone converges, and the server's stored copy is
// the same after a restart.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import * as A from "@automerge/automerge";
import {
  SPLICE_PEER, api, cellSource, codeCell, createNotebook, createToken, jsClient, sleep, startServer,
  tempDir, waitFor,
} from "./helpers.js";

const EDITS = 40;
// One character per edit so concurrent inserts cannot split a marker. JS client
// A types CJK (one UTF-16 unit), client B emoji (two units, surrogate pairs),
// the Rust client Hangul.
const MARKERS = { a: 0x4e00, b: 0x1f600, rust: 0xac00 };
const markers = (first) => Array.from({ length: EDITS }, (_, i) => String.fromCodePoint(first + i));

function rustPeer(server, token, docId, cellId) {
  const proc = spawn(SPLICE_PEER, [`${server.ws}?token=${token}`, docId, cellId, String(EDITS), String(MARKERS.rust), "7"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = [];
  let buffer = "";
  proc.stdout.on("data", (chunk) => {
    buffer += chunk;
    let at;
    while ((at = buffer.indexOf("\n")) >= 0) {
      lines.push(buffer.slice(0, at));
      buffer = buffer.slice(at + 1);
    }
  });
  return {
    proc,
    lines,
    async text() {
      const before = lines.length;
      proc.stdin.write("text\n");
      await waitFor(() => lines.length > before, "the Rust peer's answer");
      return JSON.parse(lines[lines.length - 1]);
    },
  };
}

async function typeRandomly(handle, cellId, chars, seed) {
  let state = seed;
  const random = () => ((state = (state * 1103515245 + 12345) % 2147483648) / 2147483648);
  for (const ch of chars) {
    handle.change((doc) => {
      const length = doc.cells[cellId].source.length; // UTF-16 units, as the client counts
      A.splice(doc, ["cells", cellId, "source"], Math.floor(random() * (length + 1)), 0, ch);
    });
    await sleep(Math.floor(random() * 15));
  }
}

test("two JS clients and a Rust client converge on one cell", async () => {
  const data = tempDir();
  let server = await startServer(data);
  const token = createToken(data, "editor");
  const entry = await createNotebook(server, token, [codeCell("shared")]);
  const docId = entry.id;

  const a = jsClient(server, token);
  const b = jsClient(server, token);
  const [ha, hb] = await Promise.all([a.find(entry.notebook), b.find(entry.notebook)]);
  assert.equal(cellSource(ha, "shared"), "");

  const rust = rustPeer(server, token, docId, "shared");
  await Promise.all([
    typeRandomly(ha, "shared", markers(MARKERS.a), 11),
    typeRandomly(hb, "shared", markers(MARKERS.b), 23),
    waitFor(() => rust.lines.includes("done"), "the Rust peer's edits", 60000),
  ]);

  const everyone = [...markers(MARKERS.a), ...markers(MARKERS.b), ...markers(MARKERS.rust)];
  const complete = (text) => typeof text === "string" && everyone.every((ch) => text.includes(ch));
  await waitFor(async () => {
    const [ta, tb, tr] = [cellSource(ha, "shared"), cellSource(hb, "shared"), await rust.text()];
    return complete(ta) && ta === tb && tb === tr;
  }, "all three peers to converge", 30000);
  const final = cellSource(ha, "shared");
  for (const ch of everyone) {
    assert.equal(final.split(ch).length - 1, 1, `marker ${ch} appears exactly once`);
  }
  assert.equal([...final].length, everyone.length, "nothing but the typed characters");
  assert.deepEqual(Object.keys(ha.doc().cells), ["shared"], "still exactly one cell");

  // Acknowledged by the server before we stop it.
  await waitFor(async () => {
    const exported = await api(server, token, "GET", `/api/notebooks/${docId}/ipynb`);
    return exported.status === 200 && exported.json.cells[0].source.join("") === final;
  }, "the server to hold the final text");

  rust.proc.stdin.write("quit\n");
  await a.shutdown();
  await b.shutdown();
  await server.stop();

  server = await startServer(data);
  try {
    const exported = await api(server, token, "GET", `/api/notebooks/${docId}/ipynb`);
    assert.equal(exported.status, 200);
    assert.equal(exported.json.cells[0].source.join(""), final, "the stored document equals what everyone saw");
    const c = jsClient(server, token);
    const hc = await c.find(entry.notebook);
    assert.equal(cellSource(hc, "shared"), final, "a new client loads the same text");
    await c.shutdown();
  } finally {
    await server.stop();
  }
});
