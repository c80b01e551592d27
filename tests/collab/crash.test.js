// Durability: a change the server has acknowledged (its heads include it)
// survives kill -9 at any moment. 50 rounds of edit, ack, kill, restart, check.
import { test } from "node:test";
// Killing the server under a connected client makes its socket report ECONNRESET.
process.on("uncaughtException", (error) => {
  if (error.code !== "ECONNRESET") throw error;
});
import assert from "node:assert/strict";
import * as A from "@automerge/automerge";
import {
  acknowledged, api, cellSource, codeCell, createNotebook, createToken, freePort, jsClient,
  startServer, tempDir, within,
} from "./helpers.js";

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 50);

test("acknowledged edits survive kill -9", async () => {
  const data = tempDir();
  const port = await freePort();
  let server = await startServer(data, { port });
  const token = createToken(data, "editor");
  const entry = await createNotebook(server, token, [codeCell("log")]);
  let expected = "";
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const client = jsClient(server, token);
      const handle = await client.find(entry.notebook);
      assert.equal(cellSource(handle, "log"), expected, `round ${round}: loaded what was acknowledged`);
      const line = `round ${round}\n`;
      // Kill the server the moment its acknowledgement arrives, in the same tick:
      // a server that acknowledged before its write reached the disk loses the edit.
      const killed = new Promise((resolve) => {
        handle.on("remote-heads", () => {
          if (acknowledged(client, handle) && server.alive()) {
            server.proc.kill("SIGKILL");
            // Leave before the socket notices: the stock adapter would otherwise
            // schedule a reconnect that outlives shutdown().
            resolve(client.shutdown().catch(() => {}));
          }
        });
      });
      handle.change((doc) => A.splice(doc, ["cells", "log", "source"], expected.length, 0, line));
      expected += line;
      await within(killed, 20000, `round ${round}: the server's acknowledgement`);
      await server.exited;
      server = await startServer(data, { port });
      const exported = await api(server, token, "GET", `/api/notebooks/${entry.id}/ipynb`);
      assert.equal(exported.status, 200, exported.text);
      assert.equal(exported.json.cells[0].source.join(""), expected, `round ${round}: nothing acknowledged was lost`);
    }
  } finally {
    await server.stop();
  }
});
