// What the browser workspace needs from the REST API: who am I and where is the
// index, renaming, and the static files at / (never anything outside them).
import { test } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { api, createNotebook, createToken, jsClient, startServer, tempDir, waitFor } from "./helpers.js";

test("the workspace call, renaming by role, and clear errors", async () => {
  const data = tempDir();
  const editor = createToken(data, "editor", "ed");
  const viewer = createToken(data, "viewer", "vi");
  const server = await startServer(data);
  const client = jsClient(server, viewer);
  try {
    const me = await api(server, viewer, "GET", "/api/workspace");
    assert.equal(me.status, 200);
    assert.deepEqual([me.json.user.name, me.json.user.role], ["vi", "viewer"]);
    assert.match(me.json.index, /^automerge:/);
    assert.equal((await api(server, undefined, "GET", "/api/workspace")).status, 401);

    const entry = await createNotebook(server, editor, []);
    const index = await client.find(me.json.index);
    const denied = await api(server, viewer, "PATCH", `/api/notebooks/${entry.id}`, { title: "x" });
    assert.equal(denied.status, 403);
    const bad = await api(server, editor, "PATCH", `/api/notebooks/${entry.id}`, "{not json");
    assert.equal(bad.status, 400);
    assert.match(bad.json.error.message, /title/);
    const empty = await api(server, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "  " });
    assert.equal(empty.status, 400);
    const missing = await api(server, editor, "PATCH", "/api/notebooks/nope", { title: "x" });
    assert.equal(missing.status, 404);
    const renamed = await api(server, editor, "PATCH", `/api/notebooks/${entry.id}`, { title: "  Evals  " });
    assert.equal(renamed.status, 200);
    assert.equal(renamed.json.title, "Evals");
    // Everyone holding the index sees the new title live.
    await waitFor(() => String(index.doc().notebooks[entry.id].title) === "Evals", "the index to show the rename");

    // No workspace built: / says how to build it; the API stays JSON.
    const root = await fetch(`${server.base}/`);
    assert.equal(root.status, 404);
    assert.match(await root.text(), /make up/);
    const unknown = await api(server, editor, "GET", "/api/nothing");
    assert.equal(unknown.json.error.code, "not_found");
  } finally {
    await client.shutdown();
    await server.stop();
  }
});

test("the built workspace is served at / and app routes fall back to index.html", async () => {
  const data = tempDir();
  const web = tempDir();
  fs.mkdirSync(path.join(web, "assets"));
  fs.writeFileSync(path.join(web, "index.html"), "<!doctype html><title>app</title>");
  fs.writeFileSync(path.join(web, "assets", "app-1234.js"), "console.log(1)");
  fs.writeFileSync(path.join(data + "-secret.txt"), "secret");
  const server = await startServer(data, { args: ["--web", web] });
  try {
    const index = await fetch(`${server.base}/`);
    assert.equal(index.status, 200);
    assert.match(index.headers.get("content-type"), /text\/html/);
    assert.equal(index.headers.get("cache-control"), "no-cache");
    const asset = await fetch(`${server.base}/assets/app-1234.js`);
    assert.match(asset.headers.get("content-type"), /javascript/);
    assert.match(asset.headers.get("cache-control"), /immutable/);
    const route = await fetch(`${server.base}/notebooks/abc`);
    assert.equal(await route.text(), "<!doctype html><title>app</title>");
    for (const sneaky of ["/../" + path.basename(data) + "-secret.txt", "/%2e%2e/" + path.basename(data) + "-secret.txt", "/assets/%2e%2e/%2e%2e/etc/passwd"]) {
      const res = await fetch(`${server.base}${sneaky}`);
      assert.doesNotMatch(await res.text(), /secret|root:/, `${sneaky} stays inside the web folder`);
    }
  } finally {
    await server.stop();
    fs.rmSync(data + "-secret.txt", { force: true });
  }
});
