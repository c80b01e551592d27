// TLS to the database: with `sslmode=verify-full` (or `require`) and `sslrootcert`,
// every connection of the server is encrypted and the database's certificate is
// verified; a certificate nobody vouches for stops the server at start.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { BIN, createNotebook, createToken, codeCell, freePort, startPostgres, startServer, tempDir } from "./helpers.js";

const postgres = await startPostgres({ tls: true });
after(() => postgres.stop());

test("with sslmode=verify-full and the database's CA, every connection is encrypted", async () => {
  const url = `${postgres.url}?sslmode=verify-full&sslrootcert=${postgres.ca}`;
  const args = ["--database", url];
  const server = await startServer(tempDir(), { args });
  try {
    const token = createToken(tempDir(), "editor", "tess", args);
    await createNotebook(server, token, [codeCell("c", "1")]);
    const count = (encrypted) => Number(postgres.sql(
      "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) " +
        `WHERE a.backend_type = 'client backend' AND a.application_name <> 'psql' AND ${encrypted ? "" : "NOT"} s.ssl`,
    ));
    assert.ok(count(true) >= 2, "the query and the listening connection use TLS");
    assert.equal(count(false), 0, "no plain connection");
    assert.equal(Number(postgres.sql("SELECT count(*) FROM ferrolab_chunks")) > 0, true);
  } finally {
    await server.stop();
  }
});

test("a database certificate that nobody vouches for stops the server with what to do", async () => {
  const bad = spawnSync(BIN, ["collab", "serve", "--data", tempDir(), "--bind", `127.0.0.1:${await freePort()}`,
    "--database", `${postgres.url}?sslmode=require`], { encoding: "utf8", timeout: 60000 });
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /cannot connect to the database/);
  assert.match(bad.stderr, /certificate/i, bad.stderr);
  const empty = spawnSync(BIN, ["collab", "serve", "--data", tempDir(), "--bind", `127.0.0.1:${await freePort()}`,
    "--database", `${postgres.url}?sslrootcert=${postgres.ca}`], { encoding: "utf8", timeout: 60000 });
  assert.notEqual(empty.status, 0);
  assert.match(empty.stderr, /sslrootcert but not sslmode=require/);
});

test("a database that asks for client certificates takes the server's (sslcert, sslkey) and refuses it without", async () => {
  const strict = await startPostgres({ tls: true, clientCerts: true });
  try {
    const base = `${strict.url}?sslmode=verify-full&sslrootcert=${strict.ca}`;
    const args = ["--database", `${base}&sslcert=${strict.clientCert}&sslkey=${strict.clientKey}`];
    const server = await startServer(tempDir(), { args });
    try {
      const token = createToken(tempDir(), "editor", "cleo", args);
      await createNotebook(server, token, [codeCell("c", "1")]);
      assert.ok(Number(strict.sql("SELECT count(*) FROM ferrolab_chunks")) > 0, "the documents reached the database");
      const withCert = Number(strict.sql(
        "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) " +
          "WHERE a.backend_type = 'client backend' AND s.ssl AND s.client_dn = '/CN=ferrolab'",
      ));
      assert.ok(withCert >= 2, "the server's connections present the client certificate");
    } finally {
      await server.stop();
    }
    const refused = spawnSync(BIN, ["collab", "serve", "--data", tempDir(), "--bind", `127.0.0.1:${await freePort()}`,
      "--database", base], { encoding: "utf8", timeout: 60000 });
    assert.notEqual(refused.status, 0);
    assert.match(refused.stderr, /cannot connect to the database/);
    assert.match(refused.stderr, /requires a valid client certificate/, refused.stderr);
    assert.match(refused.stderr, /sslcert=FILE and sslkey=FILE/, refused.stderr);
  } finally {
    strict.stop();
  }
});
