// The shared kernel behind the REST API: a queue per notebook, outputs written
// into the runtime document as they arrive, stop-on-error, interrupt, restart,
// roles and clear errors. Read by a stock automerge-repo client.
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import { api, codeCell, createNotebook, createToken, jsClient, startServer, tempDir, waitFor } from "./helpers.js";

const plain = (doc) => JSON.parse(JSON.stringify(doc));
const KERNEL_WAIT = 120000;

test("cells run in order on one kernel, outputs land in the runtime document, errors stop the queue", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data);
  const client = jsClient(server, viewer);
  try {
    const entry = await createNotebook(server, editor, [
      codeCell("a", 'println!("hello");\nlet x = 40 + 2;\nx'),
      { id: "md", cell_type: "markdown", metadata: {}, source: "not code" },
      codeCell("b", 'let y: i32 = "no";'),
      codeCell("c", "x + 1"),
      codeCell("d", 'let progress = display_markdown("0 of 3");\nfor step in 1..=3 {\n    progress.update("text/markdown", &format!("{step} of 3"));\n};'),
      codeCell("e", 'println!("old");\nclear_output(true);\nprintln!("new");'),
      codeCell("f", 'progress.update("text/markdown", "done");'),
    ]);
    const runtime = await client.find(entry.runtime);
    const run = (body, token = editor) => api(server, token, "POST", `/api/notebooks/${entry.id}/kernel/execute`, body);

    assert.equal((await run({ all: true }, viewer)).status, 403, "viewers cannot run");
    assert.equal((await run("{oops")).status, 400);
    const unknown = await run({ cells: ["nope"] });
    assert.equal(unknown.status, 404);
    assert.match(unknown.json.error.message, /no cell "nope"/);
    assert.equal((await api(server, editor, "POST", `/api/notebooks/${entry.id}/kernel/fly`)).status, 404);

    const queued = await run({ all: true });
    assert.equal(queued.status, 202);
    assert.deepEqual(queued.json.queued, ["a", "b", "c", "d", "e", "f"], "markdown is skipped");
    await waitFor(() => {
      const doc = plain(runtime.doc());
      return doc.kernel?.status === "idle" && doc.cells.b?.state === "idle" && doc.cells.b.outputs.length > 0;
    }, "the queue to finish", KERNEL_WAIT);
    const doc = plain(runtime.doc());
    assert.equal(doc.cells.a.execution_count, 1);
    assert.deepEqual(doc.cells.a.outputs[0], { output_type: "stream", name: "stdout", text: "hello\n" });
    assert.equal(doc.cells.a.outputs[1].output_type, "execute_result");
    assert.equal(doc.cells.a.outputs[1].data["text/plain"], "42");
    assert.equal(doc.cells.b.outputs[0].output_type, "error");
    assert.equal(doc.cells.b.outputs[0].ename, "CompileError");
    assert.deepEqual(doc.cells.c.outputs, [], "the cell after an error does not run");
    assert.equal(doc.cells.c.state, "idle");

    // The kernel keeps its state between requests; the export carries the outputs.
    await run({ cells: ["c"] });
    await waitFor(() => plain(runtime.doc()).cells.c.outputs[0]?.data?.["text/plain"] === "43", "x + 1", KERNEL_WAIT);
    const file = (await api(server, editor, "GET", `/api/notebooks/${entry.id}/ipynb`)).json;
    assert.deepEqual(file.cells[0].outputs[0].text, ["hello\n"]);
    assert.equal(file.cells[3].execution_count, 3);
    assert.equal(file.cells[3].state, undefined, "queue state stays out of the file");

    // Displays update in place, clear_output(wait) clears when the next output
    // comes, and a later cell can update an earlier cell's display.
    await run({ cells: ["d", "e"] });
    await waitFor(() => {
      const cells = plain(runtime.doc()).cells;
      return cells.e.state === "idle" && cells.e.outputs.length > 0;
    }, "the display cells", KERNEL_WAIT);
    let cells = plain(runtime.doc()).cells;
    assert.equal(cells.d.outputs.length, 1);
    assert.equal(cells.d.outputs[0].output_type, "display_data");
    assert.equal(cells.d.outputs[0].data["text/markdown"], "3 of 3");
    assert.deepEqual(cells.e.outputs, [{ output_type: "stream", name: "stdout", text: "new\n" }]);
    await run({ cells: ["f"] });
    await waitFor(() => plain(runtime.doc()).cells.d.outputs[0].data["text/markdown"] === "done",
      "the later cell's update", KERNEL_WAIT);
  } finally {
    await client.shutdown();
    await server.stop();
  }
});

test("interrupt stops a running cell; restart gives a fresh kernel", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  const client = jsClient(server, editor);
  try {
    const entry = await createNotebook(server, editor, [
      codeCell("slow", 'let kept = 7;\nprintln!("started");\nstd::thread::sleep(std::time::Duration::from_secs(120));'),
      codeCell("after", "kept"),
    ]);
    const runtime = await client.find(entry.runtime);
    const call = (action, body) => api(server, editor, "POST", `/api/notebooks/${entry.id}/kernel/${action}`, body);
    await call("execute", { cells: ["slow", "after"] });
    await waitFor(() => plain(runtime.doc()).cells.slow?.outputs?.[0]?.text === "started\n", "the slow cell to start", KERNEL_WAIT);
    assert.equal(plain(runtime.doc()).cells.after.state, "queued");
    assert.equal((await call("interrupt")).status, 202);
    await waitFor(() => plain(runtime.doc()).cells.slow.state === "idle", "the interrupt to stop the cell", 60000);
    const doc = plain(runtime.doc());
    assert.ok(doc.cells.slow.outputs.some((o) => o.output_type === "error"), "the interrupted cell says so");
    assert.equal(doc.cells.after.state, "idle");
    assert.deepEqual(doc.cells.after.outputs, [], "what was queued behind it does not run");

    assert.equal((await call("restart")).status, 202);
    await waitFor(() => plain(runtime.doc()).kernel?.status === "stopped", "the restart");
    await call("execute", { cells: ["after"] });
    await waitFor(() => plain(runtime.doc()).cells.after.outputs.length > 0 && plain(runtime.doc()).cells.after.state === "idle",
      "the cell to run on the new kernel", KERNEL_WAIT);
    const fresh = plain(runtime.doc()).cells.after;
    assert.equal(fresh.execution_count, 1, "a fresh kernel counts from 1");
    assert.equal(fresh.outputs[0].output_type, "error", "the old kernel's variables are gone");
  } finally {
    await client.shutdown();
    await server.stop();
  }
});

/** The process and every process under it (Linux's /proc), by pid. */
function processTree(pid) {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    let tasks = [];
    try {
      tasks = fs.readdirSync(`/proc/${all[i]}/task`);
    } catch {
      continue;
    }
    for (const task of tasks) {
      try {
        const children = fs.readFileSync(`/proc/${all[i]}/task/${task}/children`, "utf8").trim();
        if (children) all.push(...children.split(/\s+/).map(Number));
      } catch {}
    }
  }
  return all;
}

const running = (pid) => {
  try {
    // A zombie has exited; only its parent has not collected it yet.
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
};

test("a server killed with SIGKILL takes its kernels with it", { skip: process.platform !== "linux" && "Linux only" }, async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const server = await startServer(data);
  let kernels = [];
  try {
    const entry = await createNotebook(server, editor, [codeCell("c", 'println!("up");')]);
    const client = jsClient(server, editor);
    try {
      const runtime = await client.find(entry.runtime);
      await api(server, editor, "POST", `/api/notebooks/${entry.id}/kernel/execute`, { cells: ["c"] });
      await waitFor(() => plain(runtime.doc()).cells.c?.outputs?.[0]?.text === "up\n", "the cell to run", KERNEL_WAIT);
    } finally {
      await client.shutdown();
    }
    kernels = processTree(server.proc.pid).slice(1);
    assert.ok(kernels.length >= 1, "the server runs a kernel");
    await server.kill9();
    await waitFor(() => kernels.every((pid) => !running(pid)), "the kernel processes to end", 30000);
  } finally {
    for (const pid of kernels) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    await server.stop();
  }
});
