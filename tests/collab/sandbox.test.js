// Attacks from a cell on the shared kernel, and the kernels' limits. An editor's
// cell runs on the server's machine: before the sandbox it ran as the server, in
// its working folder, and could read or rewrite tokens.json (minting an owner
// token) or the tracking database. Each check here failed on that code.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { api, codeCell, createNotebook, createToken, jsClient, startServer, tempDir, waitFor } from "./helpers.js";

const plain = (doc) => JSON.parse(JSON.stringify(doc));
const KERNEL_WAIT = 180000;

const text = (cell) => (cell?.outputs ?? []).map((o) => o.text ?? o.data?.["text/plain"] ?? o.evalue ?? "").join("");

// What the cell tries, printed as one line of words the test reads.
const probe = (data) => `
let data = std::path::Path::new(${JSON.stringify(data)});
let read_tokens = std::fs::read_to_string(data.join("tokens.json")).is_ok();
let append_tokens = std::fs::OpenOptions::new().append(true).open(data.join("tokens.json")).is_ok();
let sqlite = std::fs::metadata(data.join("tracking.sqlite")).is_ok();
let listed = std::fs::read_dir(data).map(|d| d.count()).unwrap_or(0);
let others = std::fs::read_dir(data.join("kernels")).map(|d| d.count()).unwrap_or(0);
let wrote_here = std::fs::write("mine.txt", "mine").is_ok();
let secret_env = std::env::vars().any(|(_, v)| v.contains("flb_probe_secret"));
println!("read_tokens={read_tokens} append_tokens={append_tokens} sqlite={sqlite} listed={listed} others={others} wrote_here={wrote_here} secret_env={secret_env}");`;

test("a cell cannot reach the server's data folder, its environment or another notebook's files", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const tokensBefore = fs.readFileSync(path.join(data, "tokens.json"));
  process.env.FERROLAB_PROBE = "flb_probe_secret";
  const server = await startServer(data);
  delete process.env.FERROLAB_PROBE;
  const client = jsClient(server, editor);
  try {
    // Something in the tracking store, so its file exists.
    await api(server, editor, "POST", "/api/2.0/mlflow/experiments/create", { name: "exists" });
    assert.ok(fs.existsSync(path.join(data, "tracking.sqlite")));
    const first = await createNotebook(server, editor, [codeCell("p", probe(data))]);
    const second = await createNotebook(server, editor, [codeCell("p", probe(data))]);
    for (const entry of [first, second]) {
      const runtime = await client.find(entry.runtime);
      assert.equal((await api(server, editor, "POST", `/api/notebooks/${entry.id}/kernel/execute`, { all: true })).status, 202);
      await waitFor(() => plain(runtime.doc()).cells?.p?.state === "idle" && text(plain(runtime.doc()).cells.p),
        "the probe cell", KERNEL_WAIT);
      const out = text(plain(runtime.doc()).cells.p);
      assert.match(out, /read_tokens=false append_tokens=false sqlite=false listed=0 others=0 wrote_here=true secret_env=false/, out);
    }
    assert.deepEqual(fs.readFileSync(path.join(data, "tokens.json")), tokensBefore, "tokens.json is untouched");
    // What a cell writes stays in its own notebook's work folder.
    const own = path.join(data, "kernels", "work", first.id, "mine.txt");
    assert.equal(fs.readFileSync(own, "utf8"), "mine");
    const mode = fs.statSync(path.join(data, "kernels", `${first.id}.json`)).mode & 0o777;
    assert.equal(mode, 0o600, "the connection file (with its signing key) is the server's only");
    assert.equal(fs.statSync(data).mode & 0o777, 0o700, "the data folder is private");
  } finally {
    await client.shutdown();
    await server.stop();
  }
});

test("kernels are capped per server and per token, bounded in memory, and stopped when idle", async () => {
  const data = tempDir();
  const ann = createToken(data, "editor", "ann");
  const ben = createToken(data, "editor", "ben");
  const cat = createToken(data, "editor", "cat");
  const server = await startServer(data, {
    args: ["--max-kernels", "2", "--max-kernels-per-token", "1", "--kernel-memory-mib", "4096", "--kernel-idle-secs", "6"],
  });
  const client = jsClient(server, ann);
  try {
    const a = await createNotebook(server, ann, [
      // calloc'd zeroes cost no memory until touched: without a limit this succeeds.
      codeCell("big", "let big = vec![0u8; 12usize << 30];\nbig.len()"),
      codeCell("small", "2 + 2"),
    ]);
    const b = await createNotebook(server, ann, [codeCell("x", "1")]);
    const c = await createNotebook(server, ben, [codeCell("x", "1")]);
    const run = (entry, token, cells) => api(server, token, "POST", `/api/notebooks/${entry.id}/kernel/execute`, { cells });
    assert.equal((await run(a, ann, ["big"])).status, 202);
    const mine = await run(b, ann, ["x"]);
    assert.equal(mine.status, 429, "one kernel per token");
    assert.match(mine.json.error.message, /your token already has 1 kernels running/);
    assert.equal((await run(c, ben, ["x"])).status, 202);
    const full = await run(b, cat, ["x"]);
    assert.equal(full.status, 429, "two kernels per server");
    assert.match(full.json.error.message, /the server already runs its limit of 2 kernels/);

    const runtime = await client.find(a.runtime);
    await waitFor(() => {
      const cell = plain(runtime.doc()).cells?.big;
      return cell?.state === "idle" && cell.outputs.length > 0;
    }, "the big allocation to fail", KERNEL_WAIT);
    const big = plain(runtime.doc()).cells.big;
    assert.ok(big.outputs.some((o) => o.output_type === "error"), JSON.stringify(big.outputs));
    assert.ok(!big.outputs.some((o) => o.output_type === "execute_result"), "the allocation did not succeed");
    assert.match(text(big), /memory allocation of 12884901888 bytes failed/);
    // The notebook goes on: a fresh run works under the same limit.
    await run(a, ann, ["small"]);
    await waitFor(() => text(plain(runtime.doc()).cells?.small) === "4", "2 + 2 after the failure", KERNEL_WAIT);

    // Idle: stopped with a reason, and no longer counted against ann's limit.
    await waitFor(() => plain(runtime.doc()).kernel?.status === "stopped", "the idle kernel to stop", 60000);
    assert.match(plain(runtime.doc()).kernel.message, /nothing to run/);
    assert.equal((await run(b, ann, ["x"])).status, 202, "ann may start another kernel now");
  } finally {
    await client.shutdown();
    await server.stop();
  }
});
