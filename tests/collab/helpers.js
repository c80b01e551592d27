// Shared helpers: start the real `ferrolab collab serve`, make tokens with the
// real CLI, talk REST with fetch and sync with the stock automerge-repo client.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { Repo } from "@automerge/automerge-repo";
import * as A from "@automerge/automerge";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";

const here = path.dirname(new URL(import.meta.url).pathname);

export const BIN = process.env.FERROLAB_BIN || path.resolve(here, "../../target/debug/ferrolab");
export const SPLICE_PEER =
  process.env.FERROLAB_SPLICE_PEER || path.resolve(here, "../../target/debug/examples/splice_peer");

for (const [name, file] of [["FERROLAB_BIN", BIN], ["FERROLAB_SPLICE_PEER", SPLICE_PEER]]) {
  if (!fs.existsSync(file)) {
    throw new Error(`${file} does not exist: build it (make build) or set ${name}`);
  }
}

// Every temporary folder a test file made goes when its process ends (set
// FERROLAB_KEEP_TEMP to keep them for a look after a failure).
const made = [];
process.once("exit", () => {
  if (process.env.FERROLAB_KEEP_TEMP) return;
  for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
});

export function tempDir() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ferrolab-collab-"));
  made.push(dir);
  return dir;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export function createToken(data, role, name = role) {
  return execFileSync(BIN, ["collab", "token", "create", "--data", data, "--name", name, "--role", role])
    .toString()
    .trim();
}

export function revokeToken(data, name) {
  return execFileSync(BIN, ["collab", "token", "revoke", "--data", data, name]).toString();
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** `promise`, or a failure naming `what` after `ms`; the timer never outlives it. */
export async function within(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

export async function waitFor(check, what, timeoutMs = 20000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

export async function startServer(data, { port, args = [] } = {}) {
  port ??= await freePort();
  const proc = spawn(BIN, ["collab", "serve", "--data", data, "--bind", `127.0.0.1:${port}`, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));
  let gone = false;
  exited.then(() => (gone = true));
  await waitFor(async () => {
    if (gone) throw new Error(`the server exited during start:\n${output}`);
    return canConnect(port);
  }, "the server to listen");
  return {
    proc,
    port,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/sync`,
    output: () => output,
    alive: () => !gone,
    exited,
    async stop() {
      if (!gone) proc.kill("SIGTERM");
      return exited;
    },
    async kill9() {
      if (!gone) proc.kill("SIGKILL");
      return exited;
    },
  };
}

export async function api(server, token, method, route, body) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  let payload;
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    payload = typeof body === "string" ? body : JSON.stringify(body);
  }
  const response = await fetch(server.base + route, { method, headers, body: payload });
  const text = await response.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: response.status, json, text };
}

/** A stock automerge-repo client connected through the websocket adapter. */
export function jsClient(server, token) {
  return new Repo({ network: [new WebSocketClientAdapter(`${server.ws}?token=${token}`)] });
}

export function notebookWith(cells) {
  return { nbformat: 4, nbformat_minor: 5, metadata: {}, cells };
}

export function codeCell(id, source = "") {
  return { id, cell_type: "code", metadata: {}, source, execution_count: null, outputs: [] };
}

/** Creates a notebook over REST and returns its index entry. */
export async function createNotebook(server, token, cells) {
  const created = await api(server, token, "POST", "/api/notebooks", notebookWith(cells));
  if (created.status !== 201) throw new Error(`create failed: ${created.status} ${created.text}`);
  return created.json;
}

/** Inserts `text` at `index` of a cell's source (a character-level splice). */
export function spliceSource(handle, cellId, index, text) {
  handle.change((doc) => A.splice(doc, ["cells", cellId, "source"], index, 0, text));
}

export function cellSource(handle, cellId) {
  const doc = handle.doc();
  return doc?.cells?.[cellId]?.source?.toString();
}

/** The server's storage id, as the client learnt it in the handshake. */
export function serverStorageId(repo) {
  for (const metadata of Object.values(repo.peerMetadataByPeerId)) {
    if (metadata?.storageId) return metadata.storageId;
  }
  return undefined;
}

/** Whether the server's announced heads include all of this handle's heads. */
export function acknowledged(repo, handle) {
  const storageId = serverStorageId(repo);
  if (!storageId) return false;
  const theirs = handle.getSyncInfo(storageId)?.lastHeads ?? [];
  return handle.heads().every((head) => theirs.includes(head));
}
