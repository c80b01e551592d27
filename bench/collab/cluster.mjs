// Cluster benchmark: ferrolab collab serve on its embedded storage, one replica on
// PostgreSQL, and three replicas on PostgreSQL, in the same run, with the stock
// automerge-repo client.
//
// Each setup: N clients in this process (spread round robin over the replicas),
// each typing R edits per second into one shared cell for D seconds. Reported:
// propagation latency measured at every other client (p50/p99), split into pairs
// on the same replica and pairs across replicas; the replicas' CPU time per edit
// (all replicas together, and per replica), the database's CPU per edit (its
// postmaster and backends), and whether everyone converged.
//
// Goals (the cluster issue): a replica on PostgreSQL costs at most 1.5× the
// embedded server's CPU per edit; p99 propagation across replicas at most 2× the
// p99 within one.
//
// usage: node cluster.mjs --bin PATH/TO/ferrolab [--duration 20] [--load 6x5] [--out results.json]
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { acknowledged, commandLine, cpuMs, freePort, percentile, settle, sleep, typeMarks, waitPort, watchMarks } from "./common.mjs";
import { startPostgres } from "../../tests/collab/postgres-cluster.js";

const args = commandLine("node cluster.mjs --bin PATH/TO/ferrolab [--duration 20] [--load 6x5] [--out results.json]");
const BIN = args.bin;
const DURATION = Number(args.duration ?? 20);
const [CLIENTS, RATE] = (args.load ?? "6x5").split("x").map(Number);

async function startReplica(database) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "collab-cluster-"));
  const port = await freePort();
  const extra = database ? ["--database", database] : [];
  const proc = spawn(BIN, ["collab", "serve", "--data", dir, "--bind", `127.0.0.1:${port}`, ...extra], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  await waitPort(port, proc, () => output);
  return {
    proc, dir, port,
    base: `http://127.0.0.1:${port}`,
    async stop() {
      proc.kill("SIGTERM");
      await new Promise((r) => (proc.exitCode !== null ? r() : proc.once("exit", r)));
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

function token(replica, database) {
  const where = database ? ["--database", database] : [];
  return execFileSync(BIN, ["collab", "token", "create", "--data", replica.dir, ...where, "--name", "bench", "--role", "editor"])
    .toString()
    .trim();
}

async function newNotebook(replica, bearer) {
  const response = await fetch(`${replica.base}/api/notebooks`, {
    method: "POST",
    headers: { Authorization: `Bearer ${bearer}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      nbformat: 4, nbformat_minor: 5, metadata: {},
      cells: [{ id: "c", cell_type: "code", source: "", metadata: {}, outputs: [], execution_count: null }],
    }),
  });
  if (!response.ok) throw new Error(`cannot create the notebook: ${response.status} ${await response.text()}`);
  return response.json();
}

const cpuOf = (pids) => pids.reduce((sum, pid) => {
  try {
    return sum + cpuMs(pid);
  } catch {
    return sum; // a backend that ended
  }
}, 0);

async function runSetup(name, replicaCount, postgres) {
  const database = postgres?.url;
  const replicas = [];
  for (let i = 0; i < replicaCount; i++) replicas.push(await startReplica(database));
  const bearer = token(replicas[0], database);
  const entry = await newNotebook(replicas[0], bearer);
  const homes = Array.from({ length: CLIENTS }, (_, i) => i % replicaCount);
  const repos = homes.map((home) => new Repo({
    network: [new WebSocketClientAdapter(`ws://127.0.0.1:${replicas[home].port}/sync?token=${bearer}`)],
  }));
  const handles = await Promise.all(repos.map((repo) => repo.find(entry.notebook)));
  await sleep(500);

  const sentAt = new Map();
  const same = [];
  const across = [];
  watchMarks(handles, sentAt, (latency, from, to) => (homes[from] === homes[to] ? same : across).push(latency));

  const replicaPids = replicas.map((replica) => replica.proc.pid);
  const databasePids = postgres ? postgres.pids() : [];
  const replicaCpuBefore = cpuOf(replicaPids);
  const databaseCpuBefore = cpuOf(databasePids);
  const sent = await typeMarks(handles, RATE, DURATION, sentAt);
  const converged = await settle(
    handles,
    async () => (await Promise.all(repos.map((repo, i) => acknowledged(repo, handles[i], 1000)))).every(Boolean),
    20000,
  );
  // Backends opened during the run count too.
  const databaseCpu = postgres ? cpuOf([...new Set([...databasePids, ...postgres.pids()])]) - databaseCpuBefore : 0;
  const replicaCpu = cpuOf(replicaPids) - replicaCpuBefore;
  for (const repo of repos) await repo.shutdown().catch(() => {});
  for (const replica of replicas) await replica.stop();
  same.sort((a, b) => a - b);
  across.sort((a, b) => a - b);
  return {
    name, replicas: replicaCount, clients: CLIENTS, rate: RATE, sent, converged,
    sameP50: percentile(same, 50), sameP99: percentile(same, 99), sameSamples: same.length,
    acrossP50: percentile(across, 50), acrossP99: percentile(across, 99), acrossSamples: across.length,
    replicaCpuPerEditMs: replicaCpu / Math.max(sent, 1),
    perReplicaCpuPerEditMs: replicaCpu / replicaCount / Math.max(sent, 1),
    databaseCpuPerEditMs: databaseCpu / Math.max(sent, 1),
  };
}

const fmt = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const postgres = await startPostgres();
const results = {
  date: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, duration: DURATION,
  postgres: postgres.sql("SHOW server_version"), setups: [],
};
console.log(`cluster benchmark: ${CLIENTS} clients × ${RATE} edits/s for ${DURATION} s, ${os.cpus().length} CPUs, PostgreSQL ${results.postgres}`);
console.log("setup        sent  conv  same p50/p99 ms   across p50/p99 ms  replicas CPU/edit  per replica  database CPU/edit");
try {
  for (const [name, count, db] of [["embedded", 1, null], ["pg×1", 1, postgres], ["pg×3", 3, postgres]]) {
    const r = await runSetup(name, count, db);
    results.setups.push(r);
    console.log(
      `${name.padEnd(10)} ${String(r.sent).padStart(6)}  ${r.converged ? "yes" : "NO "}  ${`${fmt(r.sameP50)}/${fmt(r.sameP99)}`.padStart(15)}` +
        `  ${`${fmt(r.acrossP50)}/${fmt(r.acrossP99)}`.padStart(17)}  ${fmt(r.replicaCpuPerEditMs, 2).padStart(14)} ms` +
        `  ${fmt(r.perReplicaCpuPerEditMs, 2).padStart(8)} ms  ${fmt(r.databaseCpuPerEditMs, 2).padStart(13)} ms`,
    );
  }
} finally {
  postgres.stop();
}
const [embedded, one, three] = results.setups;
console.log(`\nratios:`);
console.log(`  one replica on PostgreSQL / embedded, server CPU per edit: ${fmt(one.replicaCpuPerEditMs / embedded.replicaCpuPerEditMs, 2)}x (goal ≤ 1.5x)`);
console.log(`  with the database's CPU counted too: ${fmt((one.replicaCpuPerEditMs + one.databaseCpuPerEditMs) / embedded.replicaCpuPerEditMs, 2)}x`);
console.log(`  three replicas, per replica / embedded: ${fmt(three.perReplicaCpuPerEditMs / embedded.replicaCpuPerEditMs, 2)}x`);
console.log(`  three replicas, p99 across replicas / p99 within one: ${fmt(three.acrossP99 / three.sameP99, 2)}x (goal ≤ 2x); / embedded p99: ${fmt(three.acrossP99 / embedded.sameP99, 2)}x`);
if (args.out) fs.writeFileSync(args.out, JSON.stringify(results, null, 2));
process.exit(0);
