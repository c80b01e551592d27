// Tokens: nothing without one, nothing with a revoked one, and a viewer's
// changes never reach the server or other peers.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as A from "@automerge/automerge";
import WebSocket from "ws";
import { encode } from "cbor-x";
import {
  api, cellSource, codeCell, createNotebook, createToken, jsClient, revokeToken, sleep, startServer,
  tempDir, waitFor, within,
} from "./helpers.js";

function upgradeStatus(url) {
  return new Promise((resolve) => {
    const socket = new WebSocket(url);
    socket.on("unexpected-response", (_req, res) => resolve(res.statusCode));
    socket.on("open", () => {
      socket.close();
      resolve(101);
    });
    socket.on("error", () => {});
  });
}

test("REST and sync need a valid token", async () => {
  const data = tempDir();
  const server = await startServer(data);
  try {
    assert.match(server.output(), /flb_[0-9a-f]+_[0-9a-f]+/, "the first start prints an owner token");
    const editor = createToken(data, "editor", "ed");
    assert.equal((await api(server, null, "GET", "/api/notebooks")).status, 401);
    const wrong = await api(server, editor + "0", "GET", "/api/notebooks");
    assert.equal(wrong.status, 401);
    assert.match(wrong.json.error.message, /unknown or revoked/);
    assert.equal((await api(server, editor, "GET", "/api/notebooks")).status, 200);
    const viaQuery = await fetch(`${server.base}/api/notebooks?token=${editor}`);
    assert.equal(viaQuery.status, 200, "browsers may pass ?token=");

    assert.equal(await upgradeStatus(server.ws), 401, "no token, no WebSocket");
    assert.equal(await upgradeStatus(`${server.ws}?token=${editor}`), 101);

    revokeToken(data, "ed");
    assert.equal((await api(server, editor, "GET", "/api/notebooks")).status, 401, "revoked at once");
    assert.equal(await upgradeStatus(`${server.ws}?token=${editor}`), 401);
  } finally {
    await server.stop();
  }
});

test("revoking a token closes its live connection", async () => {
  const data = tempDir();
  const server = await startServer(data);
  try {
    createToken(data, "owner", "keeper");
    const editor = createToken(data, "editor", "leaving");
    const socket = new WebSocket(`${server.ws}?token=${editor}`);
    const messages = [];
    const closed = new Promise((resolve) => socket.on("close", resolve));
    socket.on("message", (m) => messages.push(m));
    await new Promise((resolve) => socket.on("open", resolve));
    socket.send(encode({ type: "join", senderId: "leaving-peer", peerMetadata: {}, supportedProtocolVersions: ["1"] }));
    await waitFor(() => messages.length > 0, "the server's peer message");
    revokeToken(data, "leaving");
    await within(closed, 10000, "the server to close the revoked connection");
  } finally {
    await server.stop();
  }
});

test("roles: viewers read only, editors create, owners delete", async () => {
  const data = tempDir();
  const server = await startServer(data);
  const clients = [];
  try {
    const owner = createToken(data, "owner", "boss");
    const editor = createToken(data, "editor", "ed");
    const viewer = createToken(data, "viewer", "vi");
    const denied = await api(server, viewer, "POST", "/api/notebooks", { title: "nope" });
    assert.equal(denied.status, 403);
    assert.match(denied.json.error.message, /editor/);
    const entry = await createNotebook(server, editor, [codeCell("c1", "let x = 1;")]);
    const listed = await api(server, viewer, "GET", "/api/notebooks");
    assert.deepEqual(listed.json.notebooks.map((n) => n.id), [entry.id], "viewers can list");

    const v = jsClient(server, viewer);
    const e = jsClient(server, editor);
    clients.push(v, e);
    const [hv, he] = await Promise.all([v.find(entry.notebook), e.find(entry.notebook)]);
    assert.equal(cellSource(hv, "c1"), "let x = 1;", "the viewer reads");

    hv.change((doc) => A.splice(doc, ["cells", "c1", "source"], 0, 0, "VIEWER WAS HERE "));
    hv.change((doc) => {
      doc.cells.evil = { id: "evil", cell_type: "code", position: "0", source: "", metadata: {} };
    });
    he.change((doc) => A.splice(doc, ["cells", "c1", "source"], 0, 0, "// editor\n"));
    // The editor's change reaches the viewer, so sync is flowing both ways...
    await waitFor(() => cellSource(hv, "c1")?.includes("// editor"), "the editor's change at the viewer");
    await sleep(500);
    // ...but the viewer's changes reached neither the server nor the editor.
    assert.equal(cellSource(he, "c1"), "// editor\nlet x = 1;");
    assert.equal(he.doc().cells.evil, undefined);
    const exported = await api(server, owner, "GET", `/api/notebooks/${entry.id}/ipynb`);
    assert.deepEqual(exported.json.cells.map((c) => c.id), ["c1"]);
    assert.equal(exported.json.cells[0].source.join(""), "// editor\nlet x = 1;");

    // Edits over sync move the notebook's `updated` time in the index.
    await waitFor(async () => {
      const now = await api(server, viewer, "GET", `/api/notebooks/${entry.id}`);
      return now.json.updated > entry.created;
    }, "the index to show the notebook was updated", 10000);

    assert.equal((await api(server, editor, "DELETE", `/api/notebooks/${entry.id}`)).status, 403);
    assert.equal((await api(server, owner, "DELETE", `/api/notebooks/${entry.id}`)).status, 204);
    assert.equal((await api(server, owner, "GET", `/api/notebooks/${entry.id}`)).status, 404);
    assert.equal((await api(server, owner, "DELETE", `/api/notebooks/${entry.id}`)).status, 404);
  } finally {
    for (const c of clients) await c.shutdown();
    await server.stop();
  }
});
