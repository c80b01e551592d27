// Hostile and broken input: random bytes, truncated CBOR, huge messages, text
// frames, corrupt changes, sync for unknown documents. The offending connection
// is closed; the server stays up and other clients keep syncing.
import { test } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import * as A from "@automerge/automerge";
import WebSocket from "ws";
import { generateAutomergeUrl, parseAutomergeUrl } from "@automerge/automerge-repo";
import { encode } from "cbor-x";
import {
  cellSource, codeCell, createNotebook, createToken, jsClient, sleep, startServer, tempDir, waitFor, within,
} from "./helpers.js";

const join = (peer) => encode({ type: "join", senderId: peer, peerMetadata: {}, supportedProtocolVersions: ["1"] });

/** Opens a raw connection, optionally joins, sends `payloads`; resolves "closed" or "open". */
async function attack(server, token, { joinFirst = true, payloads }) {
  const socket = new WebSocket(`${server.ws}?token=${token}`, { maxPayload: 1 << 30 });
  const closed = new Promise((resolve) => socket.on("close", () => resolve("closed")));
  socket.on("error", () => {});
  await new Promise((resolve, reject) => {
    socket.on("open", resolve);
    socket.on("unexpected-response", (_q, r) => reject(new Error(`upgrade refused: ${r.statusCode}`)));
  });
  if (joinFirst) {
    socket.send(join(`attacker-${crypto.randomUUID()}`));
    await sleep(100);
  }
  for (const payload of payloads) socket.send(payload);
  const outcome = await within(closed, 5000, "close").catch(() => "open");
  socket.terminate();
  return outcome;
}

test("malformed input closes only the offending connection", async () => {
  const data = tempDir();
  const server = await startServer(data, { args: ["--max-message-mib", "1"] });
  const token = createToken(data, "editor");
  const entry = await createNotebook(server, token, [codeCell("c", "")]);
  const a = jsClient(server, token);
  const b = jsClient(server, token);
  try {
    const [ha, hb] = await Promise.all([a.find(entry.notebook), b.find(entry.notebook)]);
    const documentId = entry.id;
    const realSync = A.generateSyncMessage(A.from({ x: 1 }), A.initSyncState())[1];
    const syncFrame = (docId, bytes) =>
      encode({ type: "sync", senderId: "x", targetId: "server", documentId: docId, data: bytes });
    const corrupt = Uint8Array.from(realSync);
    for (let i = 8; i < corrupt.length; i += 3) corrupt[i] ^= 0x5a;
    const unknownDoc = A.generateSyncMessage(A.init(), A.initSyncState())[1];

    const cases = {
      "random bytes instead of a handshake": { joinFirst: false, payloads: [crypto.randomBytes(64)], closes: true },
      "random bytes after the handshake": { payloads: [crypto.randomBytes(256)], closes: true },
      "truncated CBOR": { payloads: [syncFrame(documentId, realSync).subarray(0, 20)], closes: true },
      "a message over the size limit": { payloads: [crypto.randomBytes(2 << 20)], closes: true },
      "a text frame": { payloads: ["hello"], closes: true },
      "a sync message whose changes are garbage": { payloads: [syncFrame(documentId, corrupt)], closes: true },
      "a sync payload that is not a sync message": { payloads: [syncFrame(documentId, crypto.randomBytes(40))], closes: true },
      "a sync message for an unknown document": { payloads: [syncFrame(parseAutomergeUrl(generateAutomergeUrl()).documentId, unknownDoc)], closes: false },
      "a claim to be another peer": { payloads: [encode({ type: "sync", senderId: "someone-else", targetId: "x", documentId, data: unknownDoc })], closes: true },
    };
    let round = 0;
    for (const [name, { closes, ...how }] of Object.entries(cases)) {
      const outcome = await attack(server, token, how);
      if (closes) assert.equal(outcome, "closed", `${name}: the connection is closed`);
      assert.ok(server.alive(), `${name}: the server is still running\n${server.output()}`);
      const marker = `[${round++}]`;
      ha.change((doc) => A.splice(doc, ["cells", "c", "source"], 0, 0, marker));
      await waitFor(() => cellSource(hb, "c")?.includes(marker), `${name}: other clients keep syncing`);
    }
  } finally {
    await a.shutdown();
    await b.shutdown();
    await server.stop();
  }
});
