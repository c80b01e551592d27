// The cluster mode: several `ferrolab collab serve --database …` replicas on one
// PostgreSQL (a throwaway cluster of Debian's), each change announced to the others
// with LISTEN/NOTIFY. Stock automerge-repo clients spread across the replicas type
// into one notebook and converge; a replica killed with SIGKILL mid-edit loses no
// acknowledged edit, its clients carry on through another replica behind a
// balancer, and the other replicas' clients never notice.
import { test, after } from "node:test";
// Killing a replica under a connected client makes its socket report ECONNRESET.
process.on("uncaughtException", (error) => {
  if (error.code !== "ECONNRESET") throw error;
});
import assert from "node:assert/strict";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import * as A from "@automerge/automerge";
import { execFileSync } from "node:child_process";
import {
  BIN, acknowledged, api, cellSource, codeCell, createNotebook, createToken, sleep, startBalancer, startPostgres,
  startServer, tempDir, waitFor,
} from "./helpers.js";

const postgres = await startPostgres();
after(() => postgres.stop());
const args = ["--database", postgres.url];

async function startReplicas(count) {
  const replicas = [];
  for (let i = 0; i < count; i++) replicas.push(await startServer(tempDir(), { args }));
  return replicas;
}

function clientAt(ws, token) {
  const adapter = new WebSocketClientAdapter(`${ws}?token=${token}`);
  const repo = new Repo({ network: [adapter] });
  const seen = { disconnects: 0 };
  repo.networkSubsystem.on("peer-disconnected", () => seen.disconnects++);
  return { repo, seen };
}

/** Inserts `line` at a random line boundary of cell `log`. */
function typeLine(handle, line) {
  handle.change((doc) => {
    const text = doc.cells.log.source.toString();
    const breaks = [0];
    for (let i = 0; i < text.length; i++) if (text[i] === "\n") breaks.push(i + 1);
    const at = breaks[Math.floor(Math.random() * breaks.length)];
    A.splice(doc, ["cells", "log", "source"], at, 0, line);
  });
}

function lines(text) {
  return (text ?? "").split("\n").filter(Boolean).sort();
}

test("three replicas: clients spread across them type into one notebook and converge, nothing lost", async () => {
  const replicas = await startReplicas(3);
  const clients = [];
  try {
    const token = createToken(tempDir(), "editor", "ada", args);
    const entry = await createNotebook(replicas[0], token, [codeCell("log")]);
    // Two clients on each replica; the notebook was created through the first.
    for (let i = 0; i < 6; i++) clients.push(clientAt(replicas[i % 3].ws, token));
    const handles = await Promise.all(clients.map(({ repo }) => repo.find(entry.notebook)));
    const typed = [];
    for (let round = 0; round < 15; round++) {
      handles.forEach((handle, i) => {
        const line = `client ${i} line ${round}\n`;
        typed.push(line.trim());
        typeLine(handle, line);
      });
      await sleep(20);
    }
    const expected = typed.sort();
    await waitFor(
      () => handles.every((handle) => JSON.stringify(lines(cellSource(handle, "log"))) === JSON.stringify(expected)),
      "every client to hold every line",
      30000,
    );
    const texts = new Set(handles.map((handle) => cellSource(handle, "log")));
    assert.equal(texts.size, 1, "every client holds the same text");
    await waitFor(() => handles.every((handle, i) => acknowledged(clients[i].repo, handle)), "acknowledgements");
    // Each replica answers REST with every line (the notebook is in the database).
    for (const replica of replicas) {
      const exported = await api(replica, token, "GET", `/api/notebooks/${entry.id}/ipynb`);
      assert.equal(exported.status, 200, exported.text);
      assert.deepEqual(lines(exported.json.cells[0].source.join("")), expected);
    }
    for (const { seen } of clients) assert.equal(seen.disconnects, 0, "no client was disconnected");
  } finally {
    await Promise.all(clients.map(({ repo }) => repo.shutdown().catch(() => {})));
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});

test("kill -9 of a replica mid-edit: its clients carry on through another, no acknowledged edit lost, the others never notice", async () => {
  const replicas = await startReplicas(3);
  const [doomed, ...survivors] = replicas;
  // The doomed replica's clients reach it through a balancer that can also reach
  // the others (no sticky sessions): once it is gone, they reconnect elsewhere.
  const balancer = await startBalancer(replicas.map((replica) => replica.port));
  const clients = [];
  try {
    const token = createToken(tempDir(), "editor", "grace", args);
    const entry = await createNotebook(survivors[0], token, [codeCell("log")]);
    // The balancer's first connection goes to the first replica, the doomed one.
    const mover = clientAt(balancer.ws, token);
    clients.push(mover);
    const moverHandle = await mover.repo.find(entry.notebook);
    // A client that vanishes with the replica: what it had acknowledged must stay.
    const vanisher = clientAt(doomed.ws, token);
    const vanisherHandle = await vanisher.repo.find(entry.notebook);
    const others = survivors.map((replica) => clientAt(replica.ws, token));
    clients.push(...others);
    const otherHandles = await Promise.all(others.map(({ repo }) => repo.find(entry.notebook)));

    const typed = [];
    const acknowledgedVanisherLines = [];
    for (let round = 0; round < 10; round++) {
      for (const [name, handle] of [["mover", moverHandle], ["vanisher", vanisherHandle], ["other0", otherHandles[0]], ["other1", otherHandles[1]]]) {
        const line = `${name} ${round}`;
        typed.push(line);
        typeLine(handle, `${line}\n`);
      }
      await sleep(20);
    }
    await waitFor(() => acknowledged(vanisher.repo, vanisherHandle), "the vanishing client's acknowledgement");
    acknowledgedVanisherLines.push(...lines(cellSource(vanisherHandle, "log")).filter((l) => l.startsWith("vanisher")));
    // More edits in flight, then the replica dies, and the vanishing client with it.
    for (let round = 10; round < 15; round++) {
      for (const [name, handle] of [["mover", moverHandle], ["other0", otherHandles[0]], ["other1", otherHandles[1]]]) {
        const line = `${name} ${round}`;
        typed.push(line);
        typeLine(handle, `${line}\n`);
      }
      typeLine(vanisherHandle, `vanisher ${round}\n`);
    }
    // The vanishing client goes first (were it to see its replica die, the stock
    // adapter would schedule a reconnect that outlives its shutdown).
    await vanisher.repo.shutdown().catch(() => {});
    await doomed.kill9();
    for (let round = 15; round < 25; round++) {
      for (const [name, handle] of [["mover", moverHandle], ["other0", otherHandles[0]], ["other1", otherHandles[1]]]) {
        const line = `${name} ${round}`;
        typed.push(line);
        typeLine(handle, `${line}\n`);
      }
      await sleep(20);
    }
    // Everything the living clients typed (whether or not the dead replica had
    // acknowledged it) and everything it acknowledged for the vanished client.
    const mustHave = [...typed, ...acknowledgedVanisherLines];
    const holdsAll = (handle) => {
      const have = new Set(lines(cellSource(handle, "log")));
      return mustHave.every((line) => have.has(line));
    };
    await waitFor(() => [moverHandle, ...otherHandles].every(holdsAll), "every living client to hold every line", 30000);
    const texts = new Set([moverHandle, ...otherHandles].map((handle) => cellSource(handle, "log")));
    assert.equal(texts.size, 1, "the living clients agree");
    for (const line of lines(cellSource(moverHandle, "log"))) {
      assert.equal(lines(cellSource(moverHandle, "log")).filter((l) => l === line).length, 1, `${line} once`);
    }
    assert.ok(mover.seen.disconnects > 0, "the doomed replica's client did reconnect");
    for (const { seen } of others) assert.equal(seen.disconnects, 0, "the other replicas' clients never noticed");
    // A replica started afterwards reads it all from the database.
    const late = await startServer(tempDir(), { args });
    replicas.push(late);
    await waitFor(() => acknowledged(mover.repo, moverHandle), "the mover's acknowledgement by its new replica");
    const exported = await api(late, token, "GET", `/api/notebooks/${entry.id}/ipynb`);
    assert.equal(exported.status, 200, exported.text);
    const stored = new Set(lines(exported.json.cells[0].source.join("")));
    for (const line of mustHave) assert.ok(stored.has(line), `${line} is stored`);
  } finally {
    await Promise.all(clients.map(({ repo }) => repo.shutdown().catch(() => {})));
    await balancer.close();
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});

test("tokens live in the database: one created through any replica works on all, a revocation reaches all", async () => {
  const replicas = await startReplicas(2);
  try {
    const token = createToken(tempDir(), "viewer", "lin", args);
    for (const replica of replicas) {
      const listed = await api(replica, token, "GET", "/api/notebooks");
      assert.equal(listed.status, 200, listed.text);
    }
    // The CLI changes the database's row and announces it.
    execFileSync(BIN, ["collab", "token", "revoke", "--data", tempDir(), ...args, "lin"]);
    for (const replica of replicas) {
      await waitFor(async () => (await api(replica, token, "GET", "/api/notebooks")).status === 401,
        "the revocation to reach every replica", 10000);
    }
  } finally {
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});

test("a replica whose listening connection broke re-reads what it missed once it is back", async () => {
  const replicas = await startReplicas(2);
  const clients = [];
  try {
    const token = createToken(tempDir(), "editor", "mo", args);
    const entry = await createNotebook(replicas[0], token, [codeCell("log")]);
    for (const replica of replicas) clients.push(clientAt(replica.ws, token));
    const [writer, reader] = await Promise.all(clients.map(({ repo }) => repo.find(entry.notebook)));
    typeLine(writer, "before\n");
    await waitFor(() => cellSource(reader, "log") === "before\n", "the first line on the other replica");
    // Cut every listening connection and keep new ones out: the replicas' query
    // connections stay, so the writer's edit is stored and acknowledged while the
    // reader's replica cannot hear of it.
    postgres.sql("ALTER DATABASE postgres ALLOW_CONNECTIONS false", "template1");
    postgres.sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'", "template1");
    typeLine(writer, "while deaf\n");
    await waitFor(() => acknowledged(clients[0].repo, writer), "the acknowledgement of the edit made meanwhile");
    await sleep(500);
    assert.equal(cellSource(reader, "log"), "before\n", "the deaf replica did not hear the edit");
    postgres.sql("ALTER DATABASE postgres ALLOW_CONNECTIONS true", "template1");
    await waitFor(() => lines(cellSource(reader, "log")).join() === "before,while deaf",
      "the missed edit once the replica listens again", 20000);
    typeLine(writer, "after\n");
    await waitFor(() => lines(cellSource(reader, "log")).length === 3, "announcements heard again");
  } finally {
    await Promise.all(clients.map(({ repo }) => repo.shutdown().catch(() => {})));
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});

test("a shared kernel runs on one replica under a lease; runs through another reach it; when its replica dies the lease moves, with the runs handed to it", async () => {
  const leaseArgs = [...args, "--kernel-lease-secs", "3"];
  const replicas = [];
  for (let i = 0; i < 2; i++) replicas.push(await startServer(tempDir(), { args: leaseArgs }));
  const [first, second] = replicas;
  const client = clientAt(second.ws, createToken(tempDir(), "viewer", "watcher", args));
  const plain = (doc) => JSON.parse(JSON.stringify(doc));
  const KERNEL_WAIT = 120000;
  try {
    const token = createToken(tempDir(), "editor", "kim", args);
    const entry = await createNotebook(first, token,
      [codeCell("a", "let x = 41;"), codeCell("b", "x + 1"), codeCell("c", "x * 2")]);
    const runtime = await client.repo.find(entry.runtime);
    const run = (replica, cells) => api(replica, token, "POST", `/api/notebooks/${entry.id}/kernel/execute`, { cells });
    const ran = (cell, check) => () => {
      const state = plain(runtime.doc()).cells?.[cell];
      return state?.state === "idle" && check(state.outputs ?? []);
    };

    // The first run, through the first replica, starts the kernel there.
    assert.equal((await run(first, ["a"])).status, 202);
    await waitFor(ran("a", () => plain(runtime.doc()).cells.a.execution_count === 1), "cell a on the first replica", KERNEL_WAIT);
    const holder = postgres.sql(`SELECT replica FROM ferrolab_kernels WHERE notebook = '${entry.id}'`);
    assert.ok(holder, "the first replica holds the kernel's lease");
    // A run through the second replica reaches the same kernel: `x` is defined.
    const handed = await run(second, ["b"]);
    assert.equal(handed.status, 202, handed.text);
    assert.deepEqual(handed.json.queued, ["b"]);
    await waitFor(ran("b", (outputs) => outputs[0]?.data?.["text/plain"] === "42"), "x + 1 = 42 through the second replica", KERNEL_WAIT);
    assert.equal(postgres.sql(`SELECT replica FROM ferrolab_kernels WHERE notebook = '${entry.id}'`), holder,
      "the lease did not move while its replica lives");
    // A bad request through the other replica is still refused there.
    assert.equal((await run(second, ["nope"])).status, 404);

    // The first replica stops answering and dies just after a run was handed to
    // it (the API answered 202). Nobody asks again: once its lease expires, the
    // second replica takes the lease and the request, starts a kernel and runs
    // the cells; the outputs already there stay.
    first.proc.kill("SIGSTOP");
    const handedToDying = await run(second, ["a", "c"]);
    assert.equal(handedToDying.status, 202, handedToDying.text);
    assert.deepEqual(handedToDying.json.queued, ["a", "c"]);
    await sleep(500);
    await first.kill9();
    await waitFor(ran("c", (outputs) => outputs[0]?.data?.["text/plain"] === "82"),
      "the run handed to the dead replica, run by the second", KERNEL_WAIT);
    assert.equal(plain(runtime.doc()).cells.b.outputs[0]?.data?.["text/plain"], "42", "the first kernel's outputs stay");
    const moved = postgres.sql(`SELECT replica FROM ferrolab_kernels WHERE notebook = '${entry.id}'`);
    assert.ok(moved && moved !== holder, "the lease moved to the second replica");
    assert.equal(postgres.sql(`SELECT count(*) FROM ferrolab_kernel_requests`), "0", "every request was taken once");
    assert.equal(plain(runtime.doc()).cells.c.ran_by, "kim", "the handed-over run says who asked for it");
    // The next run goes to the new kernel, where `x` is defined.
    const countBefore = plain(runtime.doc()).cells.b.execution_count;
    await run(second, ["b"]);
    await waitFor(ran("b", (outputs) => outputs[0]?.data?.["text/plain"] === "42" &&
      plain(runtime.doc()).cells.b.execution_count !== countBefore), "the new kernel runs b after a and c", KERNEL_WAIT);
  } finally {
    await client.repo.shutdown().catch(() => {});
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});

test("the workspace is one across replicas: a browser signed in on one is signed in on all, notebooks made or deleted on one are listed so on all", async () => {
  const replicas = await startReplicas(2);
  const [one, two] = replicas;
  try {
    const owner = createToken(tempDir(), "owner", "olga", args);
    const signIn = await fetch(`${one.base}/api/session`, { method: "POST", headers: { authorization: `Bearer ${owner}` } });
    assert.equal(signIn.status, 200, await signIn.text());
    const cookie = signIn.headers.get("set-cookie").split(";")[0];
    const entry = await createNotebook(one, owner, [codeCell("c", "1 + 1")]);
    const listed = async (replica) => {
      const response = await fetch(`${replica.base}/api/notebooks`, { headers: { cookie } });
      assert.equal(response.status, 200, "the session cookie from the other replica is accepted");
      return (await response.json()).notebooks.map((notebook) => notebook.id);
    };
    await waitFor(async () => (await listed(two)).includes(entry.id), "the new notebook listed on the other replica");
    const deleted = await api(one, owner, "DELETE", `/api/notebooks/${entry.id}`);
    assert.ok([200, 204].includes(deleted.status), deleted.text);
    await waitFor(async () => !(await listed(two)).includes(entry.id), "the deletion on the other replica");
    assert.equal((await api(two, owner, "GET", `/api/notebooks/${entry.id}/ipynb`)).status, 404);
  } finally {
    await Promise.all(replicas.map((replica) => replica.stop()));
  }
});
