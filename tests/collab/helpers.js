// Shared helpers: start the real `ferrolab collab serve`, make tokens with the
// real CLI, talk REST with fetch and sync with the stock automerge-repo client.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import { freePort } from "./postgres-cluster.js";
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

/** Creates a token with the CLI; `args` may name the cluster's database (`--database URL`). */
export function createToken(data, role, name = role, args = []) {
  return execFileSync(BIN, ["collab", "token", "create", "--data", data, "--name", name, "--role", role, ...args])
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

export { freePort, startPostgres } from "./postgres-cluster.js";

/** `rounds` times: a client appends a line to cell `log` of `entry`, the server is
 * killed with SIGKILL the moment its acknowledgement arrives, restarted with the
 * same `args`, and must export every acknowledged line. Returns the last server. */
export async function killOnAcknowledgement({ server, data, port, args = [], token, entry, rounds }) {
  const running = { server };
  try {
    await killRounds(running, { data, port, args, token, entry, rounds });
    return running.server;
  } catch (error) {
    // The caller knows only the first server; stop the one running now.
    await running.server.stop();
    throw error;
  }
}

async function killRounds(running, { data, port, args, token, entry, rounds }) {
  let expected = "";
  for (let round = 0; round < rounds; round++) {
    const server = running.server;
    const client = jsClient(server, token);
    const handle = await client.find(entry.notebook);
    if (cellSource(handle, "log") !== expected) {
      throw new Error(`round ${round}: loaded ${JSON.stringify(cellSource(handle, "log"))}, acknowledged ${JSON.stringify(expected)}`);
    }
    const line = `round ${round}\n`;
    // Kill the server the moment its acknowledgement arrives, in the same tick:
    // a server that acknowledged before its write was durable loses the edit.
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
    running.server = await startServer(data, { port, args });
    const exported = await api(running.server, token, "GET", `/api/notebooks/${entry.id}/ipynb`);
    if (exported.status !== 200) throw new Error(`round ${round}: export answered ${exported.status}: ${exported.text}`);
    const text = exported.json.cells[0].source.join("");
    if (text !== expected) {
      throw new Error(`round ${round}: acknowledged ${JSON.stringify(expected)}, the restarted server has ${JSON.stringify(text)}`);
    }
  }
}

/** A TCP load balancer in front of `ports` (round robin, no sticky sessions): each
 * new connection goes to the next backend that accepts it, as HAProxy in TCP mode
 * does. `close()` stops it. */
export async function startBalancer(ports) {
  let next = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on("close", () => sockets.delete(client));
    client.on("error", () => {});
    client.pause();
    const attempt = (tries) => {
      if (tries === ports.length) return client.destroy();
      const port = ports[next++ % ports.length];
      const backend = net.connect(port, "127.0.0.1");
      const refused = () => attempt(tries + 1);
      backend.once("error", refused);
      backend.once("connect", () => {
        backend.off("error", refused);
        sockets.add(backend);
        backend.on("close", () => sockets.delete(backend));
        backend.setNoDelay(true);
        client.setNoDelay(true);
        client.pipe(backend).pipe(client);
        client.resume();
        backend.on("error", () => client.destroy());
        backend.on("close", () => client.destroy());
        client.on("close", () => backend.destroy());
      });
    };
    attempt(0);
  });
  const port = await freePort();
  await new Promise((resolve) => server.listen(port, "127.0.0.1", resolve));
  return {
    port,
    base: `http://127.0.0.1:${port}`,
    ws: `ws://127.0.0.1:${port}/sync`,
    close: () => {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
