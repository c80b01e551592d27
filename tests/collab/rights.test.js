// Per-document rights on /sync, attacked with hand-made sync messages on raw
// sockets: before, any editor could write any document the server holds — delete
// index entries (an owner-only action over REST), point an entry at other
// documents, add keys (`../tokens` as a notebook id), forge outputs in runtime
// documents and values in run documents. Now only notebook documents and run
// notes take changes from peers, viewers change nothing, and the server answers a
// refused change by closing the connection with the reason — the event each check
// waits on, so nothing here sleeps and hopes.
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import zlib from "node:zlib";
import * as A from "@automerge/automerge";
import WebSocket from "ws";
import { decode, encode } from "cbor-x";
import { acknowledged, api, cellSource, codeCell, createNotebook, createToken, jsClient, startServer, tempDir, waitFor, within } from "./helpers.js";

const plain = (doc) => JSON.parse(JSON.stringify(doc));
const idOf = (url) => url.replace(/^automerge:/, "");

/** A raw peer: joins, learns the server's peer id, and reports how it was closed. */
async function rawPeer(server, token) {
  const socket = new WebSocket(`${server.ws}?token=${token}`, { maxPayload: 1 << 30 });
  socket.on("error", () => {});
  const closed = new Promise((resolve) => socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
  const inbox = [];
  let wake = () => {};
  socket.on("message", (data) => {
    inbox.push(decode(data));
    wake();
  });
  await new Promise((resolve, reject) => {
    socket.on("open", resolve);
    socket.on("unexpected-response", (_q, r) => reject(new Error(`upgrade refused: ${r.statusCode}`)));
  });
  const me = `raw-${crypto.randomUUID()}`;
  socket.send(encode({ type: "join", senderId: me, peerMetadata: {}, supportedProtocolVersions: ["1"] }));
  const peer = await waitFor(() => inbox.find((m) => m.type === "peer"), "the server's peer message");
  return {
    me,
    server: peer.senderId,
    closed,
    inbox,
    next: (pred, what) => waitFor(() => inbox.find(pred), what),
    // Buffers encode as CBOR byte strings (a bare Uint8Array gets a typed-array tag).
    send: (message) => socket.send(encode({
      senderId: me, targetId: peer.senderId, ...message,
      ...(message.data ? { data: Buffer.from(message.data) } : {}),
    })),
    close: () => socket.terminate(),
  };
}

/** The sync message a peer holding `changed` (a descendant of `base`) would send. */
function syncWithChanges(base, changed) {
  let theirs = A.initSyncState();
  let ours = A.initSyncState();
  let server = A.clone(base);
  // A round trip in memory, so the next message from `changed` carries its changes.
  let [s1, m1] = A.generateSyncMessage(changed, ours);
  ours = s1;
  [server, theirs] = A.receiveSyncMessage(server, theirs, m1);
  let [t1, reply] = A.generateSyncMessage(server, theirs);
  theirs = t1;
  [changed, ours] = A.receiveSyncMessage(changed, ours, reply);
  const [, withChanges] = A.generateSyncMessage(changed, ours);
  assert.ok(A.decodeSyncMessage(withChanges).changes.length > 0, "the message carries changes");
  return withChanges;
}

async function attempt(server, token, url, base, change) {
  const peer = await rawPeer(server, token);
  const changed = A.change(A.clone(base), change);
  peer.send({ type: "sync", documentId: idOf(url), data: syncWithChanges(base, changed) });
  const { code, reason } = await within(peer.closed, 15000, "the server to refuse the change");
  peer.close();
  return { code, reason };
}

test("editors change notebooks only; index, runtime and run documents are the server's; viewers change nothing", async () => {
  const data = tempDir();
  const owner = createToken(data, "owner", "keeper");
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data);
  const reader = jsClient(server, owner);
  try {
    const entry = await createNotebook(server, editor, [codeCell("c1", "let x = 1;")]);
    const workspace = (await api(server, owner, "GET", "/api/workspace")).json;
    const indexUrl = workspace.index ?? workspace.index_url;
    assert.match(indexUrl, /^automerge:/, JSON.stringify(workspace));
    const run = (await api(server, editor, "POST", "/api/2.0/mlflow/runs/create", { experiment_id: "0", run_name: "r" })).json.run;
    const runUrl = await waitFor(async () => {
      const got = await api(server, editor, "POST", "/api/2.0/mlflow/runs/get", { run_id: run.info.run_id });
      return got.json.run.data.tags.find((t) => t.key === "ferrolab.doc")?.value;
    }, "the run's document");
    const [index, runtime, runDoc, notebook] = await Promise.all(
      [indexUrl, entry.runtime, runUrl, entry.notebook].map((u) => reader.find(u)));
    const base = (h) => A.clone(h.doc());

    const attacks = [
      ["delete an index entry", indexUrl, index, (d) => { delete d.notebooks[entry.id]; }],
      ["repoint an entry's runtime", indexUrl, index, (d) => { d.notebooks[entry.id].runtime = entry.notebook; }],
      ["add an index key that is a path", indexUrl, index, (d) => { d.notebooks["../tokens"] = { id: "../tokens", notebook: entry.notebook, runtime: entry.runtime }; }],
      ["forge an output", entry.runtime, runtime, (d) => { if (!d.cells) d.cells = {}; d.cells.c1 = { outputs: [{ output_type: "stream", name: "stdout", text: "forged" }] }; }],
      ["forge a run's metric", runUrl, runDoc, (d) => { d.status = "FINISHED"; d.metrics.pass_rate = { value: 1, step: 0, timestamp: 0 }; }],
    ];
    for (const [what, url, handle, change] of attacks) {
      const before = plain(handle.doc());
      const { code, reason } = await attempt(server, editor, url, base(handle), change);
      assert.equal(code, 1008, what);
      assert.match(reason, /written by the server only/, what);
      assert.deepEqual(plain(handle.doc()), before, `${what}: nobody else saw it`);
    }
    const listed = (await api(server, owner, "GET", "/api/notebooks")).json.notebooks.map((n) => n.id);
    assert.deepEqual(listed, [entry.id]);

    // A viewer cannot change even a notebook.
    const refused = await attempt(server, viewer, entry.notebook, base(notebook), (d) => {
      d.cells.c1.source = "VIEWER";
    });
    assert.equal(refused.code, 1008);
    assert.match(refused.reason, /a viewer token cannot change documents/);

    // An editor can: the same kind of message on a notebook is taken, and reaches others.
    const peer = await rawPeer(server, editor);
    const changed = A.change(base(notebook), (d) => { A.splice(d, ["cells", "c1", "source"], 0, 0, "// ed\n"); });
    peer.send({ type: "sync", documentId: idOf(entry.notebook), data: syncWithChanges(base(notebook), changed) });
    await waitFor(() => notebook.doc().cells.c1.source.toString().startsWith("// ed\n"), "the editor's change at another client");
    peer.close();
  } finally {
    await reader.shutdown();
    await server.stop();
  }
});

test("presence carries the sender's real name, and ephemeral messages are bounded", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data);
  const watcher = jsClient(server, editor);
  try {
    const workspace = (await api(server, editor, "GET", "/api/workspace")).json;
    const indexUrl = workspace.index ?? workspace.index_url;
    const index = await watcher.find(indexUrl);
    const heard = [];
    index.on("ephemeral-message", ({ message }) => heard.push(message));

    const liar = await rawPeer(server, viewer);
    const presence = (name) => ({
      type: "ephemeral", documentId: idOf(indexUrl), sessionId: liar.me, count: heard.length + 1,
      data: encode({ kind: "ferrolab.presence", name, role: "owner", cell: null, notebook: null }),
    });
    liar.send(presence("keeper"));
    const got = await waitFor(() => heard.find((m) => m.kind === "ferrolab.presence"), "the presence message");
    assert.equal(got.name, "vi", "the server's name for the sender, not the claimed one");
    assert.equal(got.role, "viewer");

    // Too big: the connection is closed with the limit.
    liar.send({ ...presence("x"), data: encode({ kind: "ferrolab.presence", blob: "x".repeat(64 * 1024) }) });
    const { code, reason } = await within(liar.closed, 15000, "the oversized ephemeral message to be refused");
    assert.equal(code, 1008);
    assert.match(reason, /ephemeral messages are limited to 16384 bytes/);
  } finally {
    await watcher.shutdown();
    await server.stop();
  }
});

test("a path in a notebook id never reaches the file system (raw request lines)", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  try {
    const net = await import("node:net");
    const raw = (line) => new Promise((resolve) => {
      const socket = net.connect(server.port, "127.0.0.1", () => {
        socket.write(`${line}\r\nHost: x\r\nAuthorization: Bearer ${editor}\r\nContent-Type: application/json\r\nContent-Length: 12\r\nConnection: close\r\n\r\n{"all":true}`);
      });
      let text = "";
      socket.on("data", (d) => (text += d));
      socket.on("end", () => resolve(text));
      socket.on("error", () => resolve(text));
    });
    const tokensBefore = (await import("node:fs")).readFileSync(`${data}/tokens.json`, "utf8");
    for (const id of ["..%2F..%2Ftokens", "%2e%2e%2ftokens", "..%2Fkernels%2Fx", "a%00b"]) {
      const answer = await raw(`POST /api/notebooks/${id}/kernel/execute HTTP/1.1`);
      const status = Number(answer.split(" ")[1]);
      assert.ok(status === 404 || status === 400, `${id}: ${answer.slice(0, 200)}`);
    }
    const fs = await import("node:fs");
    assert.equal(fs.readFileSync(`${data}/tokens.json`, "utf8"), tokensBefore);
    assert.ok(!fs.existsSync(`${data}/tokens.json.json`));
  } finally {
    await server.stop();
  }
});

test("one token holds at most 32 sync connections", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  const peers = [];
  let writer;
  try {
    for (let i = 0; i < 32; i++) peers.push(await rawPeer(server, editor));
    const socket = new WebSocket(`${server.ws}?token=${editor}`);
    socket.on("error", () => {});
    const closed = new Promise((resolve) => socket.on("close", (code, reason) => resolve({ code, reason: reason.toString() })));
    await new Promise((resolve) => socket.on("open", resolve));
    socket.send(encode({ type: "join", senderId: "one-too-many", peerMetadata: {}, supportedProtocolVersions: ["1"] }));
    const refused = await within(closed, 15000, "the 33rd connection to be refused");
    assert.equal(refused.code, 1008);
    assert.match(refused.reason, /limit of 32 sync connections/);
    for (const peer of peers.splice(1)) peer.close();
    writer = jsClient(server, editor);

    // The refused connection took nothing from the others: a new one joins now.
    const again = await rawPeer(server, editor);
    again.close();
    const entry = await createNotebook(server, editor, [codeCell("c", "")]);
    const seen = await writer.find(entry.notebook);
    assert.equal(seen.doc().cells.c.source.toString(), "");
  } finally {
    for (const peer of peers) peer.close();
    await writer?.shutdown();
    await server.stop();
  }
});

test("a peer that stops reading is disconnected when a send times out, and the others go on", async () => {
  // The raw peer asks for a notebook holding 32 MiB that does not compress, then
  // stops reading: the socket buffers fill and the server's send cannot finish.
  // Before, it waited for ever holding the message; now it gives up after 30 s and
  // drops the peer, which the server's log line and the peer's closed socket show.
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  let writer;
  let reader;
  try {
    const entry = await createNotebook(server, editor, [codeCell("c", "")]);
    writer = jsClient(server, editor);
    const handle = await writer.find(entry.notebook);
    const big = crypto.randomBytes(24 << 20).toString("base64");
    handle.change((doc) => {
      doc.cells.c.metadata.blob = new A.ImmutableString(big);
    });
    await waitFor(() => acknowledged(writer, handle), "the server to store the big notebook", 120000);

    reader = new WebSocket(`${server.ws}?token=${editor}`, { maxPayload: 1 << 30 });
    reader.on("error", () => {});
    const closed = new Promise((resolve) => reader.on("close", resolve));
    const inbox = [];
    reader.on("message", (message) => inbox.push(decode(message)));
    await new Promise((resolve) => reader.on("open", resolve));
    reader.send(encode({ type: "join", senderId: "slow", peerMetadata: {}, supportedProtocolVersions: ["1"] }));
    const peer = await waitFor(() => inbox.find((m) => m.type === "peer"), "the server's peer message");
    const [, request] = A.generateSyncMessage(A.init(), A.initSyncState());
    reader._socket.pause();
    reader.send(encode({
      type: "request", senderId: "slow", targetId: peer.senderId,
      documentId: idOf(entry.notebook), data: Buffer.from(request),
    }));
    await waitFor(() => /read nothing for 30 s; disconnecting it/.test(server.output()),
      "the server to give up on the peer that reads nothing", 90000);
    reader._socket.resume();
    await within(closed, 30000, "the slow peer's connection to close");

    // Everyone else goes on: the writer's next edit reaches a new reader.
    handle.change((doc) => A.splice(doc, ["cells", "c", "source"], 0, 0, "still here"));
    const other = jsClient(server, editor);
    try {
      const seen = await other.find(entry.notebook);
      await waitFor(() => cellSource(seen, "c") === "still here", "a new client to see the edit", 60000);
    } finally {
      await other.shutdown();
    }
  } finally {
    reader?.terminate();
    await writer?.shutdown();
    await server.stop();
  }
});

/** LEB128, as automerge writes lengths. */
function leb(n) {
  const out = [];
  do {
    let byte = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) byte |= 0x80;
    out.push(byte);
  } while (n > 0);
  return Buffer.from(out);
}

function peakRssMiB(pid) {
  const line = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmHWM:"));
  return Number(line.split(/\s+/)[1]) / 1024;
}

test("a sync message whose changes inflate past the limit is refused before anything inflates them", async () => {
  // One compressed change chunk holding 1 GiB of zeros: about 1 MiB on the wire.
  // automerge would inflate all of it while loading the change (then find the
  // checksum wrong); the server now measures it first, streaming, and refuses.
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  let writer;
  try {
    const entry = await createNotebook(server, editor, [codeCell("c", "")]);
    const deflater = zlib.createDeflateRaw();
    const parts = [];
    deflater.on("data", (part) => parts.push(part));
    const ended = new Promise((resolve) => deflater.on("end", resolve));
    const zeros = Buffer.alloc(16 << 20);
    for (let i = 0; i < 64; i++) {
      if (!deflater.write(zeros)) await new Promise((resolve) => deflater.once("drain", resolve));
    }
    deflater.end();
    await ended;
    const body = Buffer.concat(parts);
    assert.ok(body.length < 2 << 20, `${body.length} bytes on the wire`);
    const chunk = Buffer.concat([Buffer.from([0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2]), leb(body.length), body]);
    // A V1 sync message: no heads, needs or haves, one change.
    const message = Buffer.concat([Buffer.from([0x42, 0, 0, 0, 1]), leb(chunk.length), chunk]);

    const before = peakRssMiB(server.proc.pid);
    const peer = await rawPeer(server, editor);
    peer.send({ type: "sync", documentId: idOf(entry.notebook), data: message });
    const { code, reason } = await within(peer.closed, 30000, "the server to refuse the message");
    assert.equal(code, 1008);
    assert.match(reason, /inflate to more than 256 MiB/);
    const grown = peakRssMiB(server.proc.pid) - before;
    assert.ok(grown < 128, `the server's peak memory grew by ${grown.toFixed(0)} MiB`);

    // Nobody else noticed: a client still edits the notebook.
    writer = jsClient(server, editor);
    const handle = await writer.find(entry.notebook);
    handle.change((doc) => A.splice(doc, ["cells", "c", "source"], 0, 0, "fine"));
    await waitFor(() => acknowledged(writer, handle), "the server to take the edit");
  } finally {
    await writer?.shutdown();
    await server.stop();
  }
});
