// Load benchmark: ferrolab's collaboration server against automerge-repo's own
// Node sync server, with the stock automerge-repo client, in the same run.
//
// For each load (N clients, each typing R edits per second into one shared
// cell for D seconds) it reports edit propagation latency (p50/p99, measured at
// every other client), whether all clients converged, server CPU time per edit
// and server memory. Then it times a new client loading a notebook with 10,000
// prior edits from a freshly restarted server.
//
// usage: node load.mjs --bin PATH/TO/ferrolab [--duration 20] [--loads 2x5,4x5,8x5]
//                      [--history 10000] [--only ferrolab|js] [--out results.json]
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import * as A from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import {
  acknowledged, commandLine, cpuMs, freePort, memoryMiB, percentile, settle, sleep, typeMarks, waitPort, watchMarks,
} from "./common.mjs";

const here = path.dirname(new URL(import.meta.url).pathname);
const args = commandLine("node load.mjs --bin PATH/TO/ferrolab [--duration 20] [--loads 2x5,4x5] [--history 10000]");
const BIN = args.bin;
const DURATION = Number(args.duration ?? 20);
const LOADS = (args.loads ?? "2x5,4x5,8x5,4x10,8x10").split(",").map((l) => l.split("x").map(Number));
const HISTORY = Number(args.history ?? 10000);
const KINDS = args.only ? [args.only] : ["ferrolab", "js"];

async function startServer(kind, dir, port) {
  let proc;
  let token = "";
  if (kind === "ferrolab") {
    token = fs.existsSync(path.join(dir, "bench-token"))
      ? fs.readFileSync(path.join(dir, "bench-token"), "utf8")
      : execFileSync(BIN, ["collab", "token", "create", "--data", dir, "--name", "bench", "--role", "editor"]).toString().trim();
    fs.writeFileSync(path.join(dir, "bench-token"), token);
    proc = spawn(BIN, ["collab", "serve", "--data", dir, "--bind", `127.0.0.1:${port}`], { stdio: ["ignore", "pipe", "pipe"] });
  } else {
    proc = spawn(process.execPath, [path.join(here, "js_server.mjs"), String(port), dir], { stdio: ["ignore", "pipe", "pipe"] });
  }
  let output = "";
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  await waitPort(port, proc, () => output);
  const url = `ws://127.0.0.1:${port}/sync${kind === "ferrolab" ? `?token=${token}` : ""}`;
  return {
    proc,
    url,
    kind,
    base: `http://127.0.0.1:${port}`,
    token,
    output: () => output,
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
    },
  };
}

const client = (url) => new Repo({ network: [new WebSocketClientAdapter(url)] });

/**
 * A new notebook with one empty code cell `c`, open in `repo`. On ferrolab it is
 * made over REST, as the workspace makes it (peers may change notebooks, not
 * create documents); the JS sync server takes a client's new document.
 */
async function newNotebook(server, repo) {
  if (server.kind !== "ferrolab") {
    const handle = repo.create(NOTEBOOK());
    await acknowledged(repo, handle);
    return handle;
  }
  const response = await fetch(`${server.base}/api/notebooks`, {
    method: "POST",
    headers: { Authorization: `Bearer ${server.token}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      nbformat: 4, nbformat_minor: 5, metadata: {},
      cells: [{ id: "c", cell_type: "code", source: "", metadata: {}, outputs: [], execution_count: null }],
    }),
  });
  if (!response.ok) throw new Error(`cannot create the notebook: ${response.status} ${await response.text()}`);
  const entry = await response.json();
  return repo.find(entry.notebook);
}

// A client that notes when its first message arrived (the server's answer to the
// client's greeting: the connection is up) and its largest (for a new client loading
// a document, the server's answer carrying it). What comes after the largest is the
// client's own work.
function timedClient(url) {
  const adapter = new WebSocketClientAdapter(url);
  const largest = { bytes: 0, at: NaN, first: NaN };
  const receive = adapter.receiveMessage.bind(adapter);
  adapter.receiveMessage = (bytes) => {
    const size = bytes.byteLength ?? bytes.length ?? 0;
    if (Number.isNaN(largest.first)) largest.first = performance.now();
    if (size > largest.bytes) Object.assign(largest, { bytes: size, at: performance.now() });
    return receive(bytes);
  };
  return { repo: new Repo({ network: [adapter] }), largest };
}

const NOTEBOOK = () => ({
  schema: "ferrolab.notebook",
  cells: { c: { id: "c", cell_type: "code", position: "V", source: "", metadata: {} } },
});

async function runLoad(kind, clients, rate) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `collab-bench-${kind}-`));
  const server = await startServer(kind, dir, await freePort());
  const creator = client(server.url);
  const created = await newNotebook(server, creator);
  const repos = [creator];
  for (let i = 1; i < clients; i++) repos.push(client(server.url));
  const handles = await Promise.all(repos.map((r) => r.find(created.url)));

  const sentAt = new Map();
  const latencies = [];
  watchMarks(handles, sentAt, (latency) => latencies.push(latency));

  const cpuBefore = cpuMs(server.proc.pid);
  const clientCpuBefore = process.cpuUsage();
  const planned = clients * rate * DURATION;
  const sent = await typeMarks(handles, rate, DURATION, sentAt);
  const settleStart = performance.now();
  const converged = await settle(handles, () => acknowledged(creator, handles[0], 1000), 15000);
  const settleMs = performance.now() - settleStart;
  const serverCpu = cpuMs(server.proc.pid) - cpuBefore;
  const memory = memoryMiB(server.proc.pid);
  const clientCpu = process.cpuUsage(clientCpuBefore);
  for (const r of repos) await r.shutdown().catch(() => {});
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  latencies.sort((a, b) => a - b);
  return {
    kind, clients, rate, planned, sent,
    saturated: sent < planned * 0.9,
    converged, settleMs: Math.round(settleMs),
    p50: percentile(latencies, 50), p99: percentile(latencies, 99), samples: latencies.length,
    serverCpuPerEditMs: serverCpu / Math.max(sent, 1),
    clientCpuPerEditMs: (clientCpu.user + clientCpu.system) / 1000 / Math.max(sent, 1),
    rssMiB: memory.rss, peakMiB: memory.peak,
  };
}

function treeStamp(dir) {
  let total = 0;
  for (const entry of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (entry.isFile()) {
      const stat = fs.statSync(path.join(entry.parentPath ?? entry.path, entry.name));
      total += stat.size + stat.mtimeMs;
    }
  }
  return total;
}

async function quiet(dir, settleMs = 2000, timeoutMs = 120000) {
  const deadline = Date.now() + timeoutMs;
  let last = treeStamp(dir);
  let since = Date.now();
  while (Date.now() < deadline) {
    await sleep(250);
    const now = treeStamp(dir);
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= settleMs) {
      return;
    }
  }
}

async function runLoadTime(kind) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `collab-bench-${kind}-`));
  const port = await freePort();
  let server = await startServer(kind, dir, port);
  const writer = client(server.url);
  const handle = await newNotebook(server, writer);
  for (let i = 0; i < HISTORY; i++) {
    handle.change((doc) => A.splice(doc, ["cells", "c", "source"], i, 0, "x"));
    if (i % 500 === 499) await sleep(0);
  }
  if (!(await acknowledged(writer, handle, 300000))) throw new Error(`${kind}: history never acknowledged`);
  // The JS server saves on a throttle after acknowledging: wait until its files
  // stop changing, so both servers restart from a complete store.
  await quiet(dir);
  // The first load in a process also pays for compiling the client's own code for
  // it; one load before the restart keeps that out of the cold figure, whichever
  // server runs first.
  const warmup = client(server.url);
  await warmup.find(handle.url);
  await warmup.shutdown();
  await writer.shutdown();
  await server.stop();
  server = await startServer(kind, dir, port);
  const times = [];
  const arrivals = [];
  for (let i = 0; i < 4; i++) {
    const { repo: reader, largest } = timedClient(server.url);
    const t0 = performance.now();
    const h = await reader.find(handle.url).catch(() => undefined);
    const t1 = performance.now();
    if (!h) {
      await reader.shutdown();
      await server.stop();
      return { kind, coldMs: NaN, warmMs: NaN, rssMiB: NaN, lost: true };
    }
    if (h.doc().cells.c.source.length !== HISTORY) throw new Error(`${kind}: loaded an incomplete document`);
    times.push(t1 - t0);
    arrivals.push({ connectedMs: largest.first - t0, arrivedMs: largest.at - t0, clientMs: t1 - largest.at, bytes: largest.bytes });
    await reader.shutdown();
  }
  const memory = memoryMiB(server.proc.pid);
  await server.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const warm = arrivals.slice(1);
  return {
    kind,
    coldMs: times[0],
    coldArrivedMs: arrivals[0].arrivedMs,
    warmMs: median(times.slice(1)),
    // The warm loads split at the document's arrival: the server's share (connection,
    // handshake, the server's answer) and the client's own (applying the document).
    warmConnectedMs: median(warm.map((a) => a.connectedMs)),
    warmArrivedMs: median(warm.map((a) => a.arrivedMs)),
    warmClientMs: median(warm.map((a) => a.clientMs)),
    documentBytes: arrivals[0].bytes,
    rssMiB: memory.rss,
  };
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const results = { date: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, duration: DURATION, loads: [], loadTime: [] };
console.log(`collab load benchmark: ${DURATION} s per load, ${os.cpus().length} CPUs`);
console.log("server    N  rate  sent/planned  conv  p50ms  p99ms  srvCPU/edit  cliCPU/edit  RSS MiB");
for (const [clients, rate] of LOADS) {
  const row = {};
  for (const kind of KINDS) {
    const r = await runLoad(kind, clients, rate);
    row[kind] = r;
    results.loads.push(r);
    console.log(
      `${kind.padEnd(9)} ${String(clients).padStart(2)} ${String(rate).padStart(5)}  ${`${r.sent}/${r.planned}`.padStart(12)}` +
        `  ${r.converged ? "yes " : "NO  "}  ${fmt(r.p50).padStart(5)}  ${fmt(r.p99).padStart(5)}` +
        `  ${fmt(r.serverCpuPerEditMs, 3).padStart(11)}  ${fmt(r.clientCpuPerEditMs, 2).padStart(11)}  ${fmt(r.rssMiB).padStart(7)}` +
        (r.saturated ? "  (clients saturated)" : ""),
    );
  }
  if (row.ferrolab && row.js) {
    const f = row.ferrolab, j = row.js;
    console.log(
      `  ratio ferrolab/js: CPU/edit ${fmt(f.serverCpuPerEditMs / j.serverCpuPerEditMs, 2)}x, RSS ${fmt(f.rssMiB / j.rssMiB, 2)}x, ` +
        `p99 ${fmt(f.p99 / j.p99, 2)}x${f.converged && j.converged ? "" : " (not both converged)"}`,
    );
  }
}
console.log(`\nnew client loading a notebook with ${HISTORY} prior edits (server restarted first)`);
const loadRows = {};
for (const kind of KINDS) {
  const r = await runLoadTime(kind);
  loadRows[kind] = r;
  results.loadTime.push(r);
  console.log(
    r.lost
      ? `${kind.padEnd(9)} the document was unavailable after the restart (acknowledged edits not on disk)`
      : `${kind.padEnd(9)} cold ${fmt(r.coldMs)} ms (document arrived at ${fmt(r.coldArrivedMs)} ms), warm ${fmt(r.warmMs)} ms (document of ${r.documentBytes} B arrived at ` +
          `${fmt(r.warmArrivedMs)} ms, then ${fmt(r.warmClientMs)} ms in the client), server RSS ${fmt(r.rssMiB)} MiB`,
  );
}
if (loadRows.ferrolab && loadRows.js) {
  console.log(
    `  ratio ferrolab/js: cold ${fmt(loadRows.ferrolab.coldMs / loadRows.js.coldMs, 2)}x, warm ${fmt(loadRows.ferrolab.warmMs / loadRows.js.warmMs, 2)}x` +
      `, warm until the document arrived ${fmt(loadRows.ferrolab.warmArrivedMs / loadRows.js.warmArrivedMs, 2)}x`,
  );
  // The connection and the client's own work after the document arrives are there
  // whichever server sends it: a server answering in no time still takes their sum.
  const connected = Math.min(loadRows.ferrolab.warmConnectedMs, loadRows.js.warmConnectedMs);
  const own = Math.min(loadRows.ferrolab.warmClientMs, loadRows.js.warmClientMs);
  console.log(
    `  a warm load with a server answering in no time: connection ${fmt(connected)} ms + the client's own ${fmt(own)} ms` +
      ` = ${fmt((connected + own) / loadRows.js.warmMs, 2)}x the JS server's warm load`,
  );
}
if (args.out) fs.writeFileSync(args.out, JSON.stringify(results, null, 2));
process.exit(0);
