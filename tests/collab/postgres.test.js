// The cluster mode's first part: the notebooks' documents in PostgreSQL
// (`ferrolab collab serve --database postgres://…`), against a throwaway cluster
// of Debian's PostgreSQL. An acknowledged edit survives kill -9 of the server
// (its chunk was committed before the acknowledgement), the data folder holds no
// document, and a database that cannot be reached is a clear error at start.
import { test, after } from "node:test";
// Killing the server under a connected client makes its socket report ECONNRESET.
process.on("uncaughtException", (error) => {
  if (error.code !== "ECONNRESET") throw error;
});
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { spawnSync } from "node:child_process";
import * as A from "@automerge/automerge";
import {
  BIN, acknowledged, api, cellSource, codeCell, createNotebook, createToken, freePort, jsClient, killOnAcknowledgement,
  sleep, startPostgres, startServer, tempDir, waitFor,
} from "./helpers.js";

const ROUNDS = Number(process.env.CRASH_ROUNDS ?? 10);
const postgres = await startPostgres();
after(() => postgres.stop());

/** A server on the database, an editor's token and a notebook with a cell `log`. */
async function serverOnPostgres() {
  const data = tempDir();
  const port = await freePort();
  const args = ["--database", postgres.url];
  const server = await startServer(data, { port, args });
  const token = createToken(data, "editor", "editor", args);
  const entry = await createNotebook(server, token, [codeCell("log")]);
  return { data, port, args, server, token, entry };
}

test("on PostgreSQL, acknowledged edits survive kill -9 and the data folder holds no document", async () => {
  const { data, port, args, token, entry, ...started } = await serverOnPostgres();
  let server = started.server;
  try {
    server = await killOnAcknowledgement({ server, data, port, args, token, entry, rounds: ROUNDS });
  } finally {
    await server.stop();
  }
  const chunks = Number(postgres.sql("SELECT count(*) FROM ferrolab_chunks"));
  assert.ok(chunks > 0, "the documents' chunks are in the database");
  const docs = path.join(data, "docs");
  const files = fs.existsSync(docs) ? fs.readdirSync(docs, { recursive: true }) : [];
  assert.deepEqual(files, [], "no document chunk in the data folder");
  for (const file of ["tokens.json", "session.key", "workspace.json"]) {
    assert.equal(fs.existsSync(path.join(data, file)), false, `${file} is in the database, not the data folder`);
  }
});

test("while the database is down, edits wait unacknowledged; when it is back they are stored, none lost", async () => {
  const { data, port, args, token, entry, ...started } = await serverOnPostgres();
  let server = started.server;
  const client = jsClient(server, token);
  try {
    const handle = await client.find(entry.notebook);
    handle.change((doc) => A.splice(doc, ["cells", "log", "source"], 0, 0, "before\n"));
    await waitFor(() => acknowledged(client, handle), "the first edit's acknowledgement");
    postgres.stop();
    handle.change((doc) => A.splice(doc, ["cells", "log", "source"], "before\n".length, 0, "during\n"));
    await sleep(1500);
    assert.equal(acknowledged(client, handle), false, "no acknowledgement while the change cannot be stored");
    assert.ok(server.alive(), server.output());
    postgres.start();
    await waitFor(() => acknowledged(client, handle), "the acknowledgement once the database is back", 30000);
    assert.equal(cellSource(handle, "log"), "before\nduring\n");
  } finally {
    await client.shutdown().catch(() => {});
  }
  await server.kill9();
  server = await startServer(data, { port, args });
  try {
    const exported = await api(server, token, "GET", `/api/notebooks/${entry.id}/ipynb`);
    assert.equal(exported.status, 200, exported.text);
    assert.equal(exported.json.cells[0].source.join(""), "before\nduring\n", "both edits survived");
  } finally {
    await server.stop();
  }
});

test("a database that cannot be reached stops the server at start with what to check, and no password", async () => {
  const data = tempDir();
  const closed = await freePort();
  const result = spawnSync(BIN, ["collab", "serve", "--data", data, "--bind", `127.0.0.1:${await freePort()}`,
    "--database", `postgres://ada:s3cret@127.0.0.1:${closed}/ferrolab`], { encoding: "utf8", timeout: 60000 });
  assert.notEqual(result.status, 0, result.stdout + result.stderr);
  const said = result.stdout + result.stderr;
  assert.match(said, /cannot connect to the database postgres:\/\/ada:\*\*\*@127\.0\.0\.1/, said);
  assert.doesNotMatch(said, /s3cret/, said);
});
