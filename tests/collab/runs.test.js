// Live run documents: a run logged through MLflow's REST API (what the mlflow
// client sends) has an automerge document that stock automerge-repo clients sync;
// they see its summary change as points arrive (only the server writes it), and
// co-edit its notes in a document of their own, which a restart keeps.
import { test } from "node:test";
import assert from "node:assert/strict";
import * as A from "@automerge/automerge";
import { api, createToken, jsClient, startServer, tempDir, waitFor } from "./helpers.js";

// Scalar strings come out of automerge 3 as ImmutableString.
const str = (v) => v?.toString();

const mlflow = (server, token, endpoint, body) =>
  api(server, token, "POST", `/api/2.0/mlflow/${endpoint}`, body);

test("collaborators see a run's summary change live and co-edit its notes", async () => {
  const data = tempDir();
  let server = await startServer(data);
  const token = createToken(data, "editor", "trainer");
  const viewer = createToken(data, "viewer", "watcher");
  try {
    const created = await mlflow(server, token, "runs/create", { experiment_id: "0", run_name: "lora-r8" });
    assert.equal(created.status, 200, created.text);
    const runId = created.json.run.info.run_id;
    const url = await waitFor(async () => {
      const got = await mlflow(server, token, "runs/get", { run_id: runId });
      return got.json.run.data.tags.find((t) => t.key === "ferrolab.doc")?.value;
    }, "the run's document to be named in its tags");
    assert.match(url, /^automerge:/);

    const watcher = jsClient(server, viewer);
    const seen = await watcher.find(url);
    assert.equal(str(seen.doc().schema), "ferrolab.run");
    assert.equal(str(seen.doc().name), "lora-r8");
    assert.equal(str(seen.doc().status), "RUNNING");

    // Points logged over REST show up in the watcher's copy without asking.
    const changes = [];
    seen.on("change", ({ doc }) => changes.push(doc.metrics?.loss?.value));
    for (let step = 0; step < 20; step++) {
      const logged = await mlflow(server, token, "runs/log-metric", {
        run_id: runId, key: "loss", value: 2 / (step + 1), step, timestamp: Date.now(),
      });
      assert.equal(logged.status, 200, logged.text);
    }
    await mlflow(server, token, "runs/log-batch", {
      run_id: runId, params: [{ key: "lr", value: "0.002" }], tags: [{ key: "team", value: "nlp" }],
    });
    await waitFor(() => seen.doc().metrics?.loss?.step === 19, "the last loss to arrive");
    assert.equal(seen.doc().metrics.loss.value, 2 / 20);
    await waitFor(() => str(seen.doc().params?.lr) === "0.002" && str(seen.doc().tags?.team) === "nlp", "params and tags");
    assert.ok(changes.length >= 1, "the watcher was told of changes");

    // The notes live in their own document, named in the summary, which the run's
    // tag names.
    const notesUrl = str(seen.doc().notes_url);
    assert.match(notesUrl, /^automerge:/);
    const tagged = await mlflow(server, token, "runs/get", { run_id: runId });
    assert.ok(tagged.json.run.data.tags.some((t) => t.key === "ferrolab.doc"));

    // An editor writes notes while the server keeps updating the summary.
    const editor = jsClient(server, token);
    const mine = await editor.find(notesUrl);
    const seenNotes = await watcher.find(notesUrl);
    assert.equal(str(mine.doc().schema), "ferrolab.run-notes");
    mine.change((doc) => A.splice(doc, ["notes"], 0, 0, "r=8 looks best. "));
    await mlflow(server, token, "runs/log-metric", { run_id: runId, key: "loss", value: 0.05, step: 20, timestamp: Date.now() });
    await mlflow(server, token, "runs/update", { run_id: runId, status: "FINISHED", end_time: Date.now() });
    await waitFor(() => str(seen.doc().status) === "FINISHED" && seen.doc().metrics.loss.step === 20, "the finished run");
    await waitFor(() => seenNotes.doc().notes.toString() === "r=8 looks best. ", "the notes to reach the watcher");
    // (A viewer's or editor's change to the summary itself is refused: rights.test.js.)

    await watcher.shutdown();
    await editor.shutdown();
    await server.stop();

    // After a restart the document, notes included, is still the run's.
    server = await startServer(data);
    const again = jsClient(server, token);
    const reloaded = await again.find(url);
    const reloadedNotes = await again.find(notesUrl);
    assert.equal(reloadedNotes.doc().notes.toString(), "r=8 looks best. ");
    assert.equal(str(reloaded.doc().status), "FINISHED");
    await mlflow(server, token, "runs/set-tag", { run_id: runId, key: "reviewed", value: "yes" });
    await waitFor(() => str(reloaded.doc().tags?.reviewed) === "yes", "a change after the restart");
    // Still editable after the restart.
    reloadedNotes.change((doc) => A.splice(doc, ["notes"], 0, 0, "Confirmed. "));
    const check = jsClient(server, token);
    const fresh = await check.find(notesUrl);
    await waitFor(() => fresh.doc().notes.toString() === "Confirmed. r=8 looks best. ", "notes edited after the restart");
    await check.shutdown();
    await again.shutdown();
  } finally {
    await server.stop();
  }
});
