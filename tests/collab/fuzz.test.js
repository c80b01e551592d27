// A bounded fuzz run of /sync (a fixed seed and a fixed count of frames): random
// bytes, random CBOR maps with protocol-looking fields, and real sync and
// ephemeral messages with bytes flipped, cut or grown, from an editor and a viewer.
// Each connection may be closed; the server must not die, its memory must stay
// bounded, and two stock clients must keep syncing a notebook throughout. (The
// clients connect before the notebook exists: this run found that the share
// policy had decided their rights before the notebook was one, and kept it.)
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import * as A from "@automerge/automerge";
import WebSocket from "ws";
import { encode } from "cbor-x";
import { cellSource, codeCell, createNotebook, createToken, jsClient, startServer, tempDir, waitFor, within } from "./helpers.js";

const FRAMES = 600;

/** A small deterministic PRNG (mulberry32), so a failure can be replayed. */
function prng(seed) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function rssKib(pid) {
  const line = fs.readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(line.split(/\s+/)[1]);
}

test("fuzzed sync frames close only their own connections; sync goes on and memory stays bounded", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data);
  const a = jsClient(server, editor);
  const b = jsClient(server, editor);
  try {
    const entry = await createNotebook(server, editor, [codeCell("c", "")]);
    const [ha, hb] = await Promise.all([a.find(entry.notebook), b.find(entry.notebook)]);
    const docId = entry.notebook.replace("automerge:", "");
    // Real messages to mutate: a sync message with a change, and a presence message.
    const base = A.clone(ha.doc());
    const changed = A.change(A.clone(base), (d) => { A.splice(d, ["cells", "c", "source"], 0, 0, "fuzz"); });
    const [, syncBytes] = A.generateSyncMessage(changed, A.initSyncState());
    const templates = [
      encode({ type: "sync", senderId: "s", targetId: "t", documentId: docId, data: Buffer.from(syncBytes) }),
      encode({ type: "request", senderId: "s", targetId: "t", documentId: docId, data: Buffer.from(syncBytes) }),
      encode({ type: "ephemeral", senderId: "s", targetId: "t", documentId: docId, sessionId: "x", count: 1, data: encode({ kind: "ferrolab.presence", name: "n" }) }),
      encode({ type: "join", senderId: "s", peerMetadata: {}, supportedProtocolVersions: ["1"] }),
    ];
    const rand = prng(20261206);
    const pick = (list) => list[Math.floor(rand() * list.length)];
    const frame = () => {
      const kind = rand();
      if (kind < 0.2) return Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)));
      if (kind < 0.4) {
        return encode({
          type: pick(["sync", "request", "ephemeral", "join", "leave", "doc-unavailable", "remote-heads-changed", 7, null]),
          senderId: pick(["s", "", 1, null]), targetId: pick(["t", "", null]), documentId: pick([docId, "nope", "", 3]),
          data: pick([Buffer.from([]), Buffer.from([1, 2, 3]), "text", 5, Buffer.alloc(2048, 0x42)]),
        });
      }
      const bytes = Buffer.from(pick(templates));
      const mutations = 1 + Math.floor(rand() * 6);
      for (let i = 0; i < mutations; i++) {
        const at = Math.floor(rand() * bytes.length);
        bytes[at] = Math.floor(rand() * 256);
      }
      if (rand() < 0.2) return bytes.subarray(0, Math.floor(rand() * bytes.length));
      if (rand() < 0.1) return Buffer.concat([bytes, Buffer.alloc(Math.floor(rand() * 100000), 0xff)]);
      return bytes;
    };

    const before = rssKib(server.proc.pid);
    let sent = 0;
    let closed = 0;
    let round = 0;
    while (sent < FRAMES) {
      const token = round++ % 2 ? viewer : editor;
      const socket = new WebSocket(`${server.ws}?token=${token}`, { maxPayload: 1 << 30 });
      socket.on("error", () => {});
      const gone = new Promise((resolve) => socket.on("close", resolve));
      await within(new Promise((resolve, reject) => {
        socket.on("open", resolve);
        socket.on("unexpected-response", (_q, r) => reject(new Error(`upgrade refused: ${r.statusCode}`)));
      }), 10000, "the fuzz connection to open");
      if (rand() < 0.7) socket.send(encode({ type: "join", senderId: `fuzz-${round}`, peerMetadata: {}, supportedProtocolVersions: ["1"] }));
      const burst = 1 + Math.floor(rand() * 20);
      for (let i = 0; i < burst && sent < FRAMES; i++, sent++) {
        if (socket.readyState !== WebSocket.OPEN) break;
        socket.send(frame());
      }
      // Either the server closed it (most frames are bad), or we do.
      const outcome = await within(gone, 2000, "close").then(() => "closed", () => "open");
      if (outcome === "closed") closed += 1;
      socket.terminate();
      // Sync between the two stock clients goes on while the fuzz runs.
      if (round % 10 === 0) {
        const mark = `// ${round}\n`;
        ha.change((d) => A.splice(d, ["cells", "c", "source"], 0, 0, mark));
        await waitFor(() => cellSource(hb, "c")?.startsWith(mark), `round ${round}'s edit at the other client`);
      }
    }
    assert.ok(server.alive(), `the server died:\n${server.output()}`);
    assert.ok(closed > 0, "bad frames closed their connections");
    const after = rssKib(server.proc.pid);
    assert.ok(after - before < 256 * 1024, `RSS grew from ${before} KiB to ${after} KiB`);
    hb.change((d) => A.splice(d, ["cells", "c", "source"], 0, 0, "// after\n"));
    await waitFor(() => cellSource(ha, "c")?.startsWith("// after\n"), "an edit after the fuzz run");
  } finally {
    await a.shutdown();
    await b.shutdown();
    await server.stop();
  }
});
