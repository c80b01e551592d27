// Durability: a change the server has acknowledged (its heads include it)
// survives kill -9 at any moment. 50 rounds of edit, ack, kill, restart, check.
import { test } from "node:test";
// Killing the server under a connected client makes its socket report ECONNRESET.
process.on("uncaughtException", (error) => {
  if (error.code !== "ECONNRESET") throw error;
});
import {
  codeCell, createNotebook, createToken, freePort, killOnAcknowledgement, startServer, tempDir,
} from "./helpers.js";

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 50);

test("acknowledged edits survive kill -9", async () => {
  const data = tempDir();
  const port = await freePort();
  let server = await startServer(data, { port });
  const token = createToken(data, "editor");
  const entry = await createNotebook(server, token, [codeCell("log")]);
  try {
    server = await killOnAcknowledgement({ server, data, port, token, entry, rounds: ROUNDS });
  } finally {
    await server.stop();
  }
});
