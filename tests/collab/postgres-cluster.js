// A throwaway PostgreSQL cluster of Debian's packages in a temporary folder, as an
// unprivileged user (PostgreSQL refuses to run as root). Used by the cluster-mode
// tests and by the cluster benchmark; Node's own modules only.
import { execFileSync } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

/** A PostgreSQL program from Debian's packages (on the PATH, or in its versioned folder). */
function postgresProgram(name) {
  for (const dir of (process.env.PATH || "").split(":")) {
    if (dir && fs.existsSync(path.join(dir, name))) return path.join(dir, name);
  }
  const root = "/usr/lib/postgresql";
  const versions = fs.existsSync(root) ? fs.readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  for (const version of versions) {
    const file = path.join(root, version, "bin", name);
    if (fs.existsSync(file)) return file;
  }
  throw new Error(`PostgreSQL's ${name} is missing: install Debian's postgresql (make test does)`);
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Starts a cluster: `url` for the server, `sql(query[, database])` to look
 * inside, `pids()` of its processes (for CPU accounting), `start()`, `stop()`.
 * With `tls`, the server speaks TLS with a certificate for 127.0.0.1 from a CA of
 * its own (`ca`: the CA's PEM file). With `clientCerts` as well, TCP connections
 * must be TLS and present a certificate from that CA naming the user
 * (`clientCert`, `clientKey`: one for `ferrolab`); `sql()` then goes through the
 * Unix socket. */
export async function startPostgres({ tls = false, clientCerts = false } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "ferrolab-pg-"));
  process.on("exit", () => {
    if (!process.env.FERROLAB_KEEP_TEMP) fs.rmSync(dir, { recursive: true, force: true });
  });
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  // As root, the cluster belongs to `nobody`, which must be able to reach it.
  if (asRoot) {
    fs.chmodSync(dir, 0o755);
    fs.chownSync(dir, 65534, 65534);
  }
  const run = (program, args) => {
    const [file, argv] = asRoot ? ["runuser", ["-u", "nobody", "--", program, ...args]] : [program, args];
    return execFileSync(file, argv, { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  };
  const data = path.join(dir, "cluster");
  run(postgresProgram("initdb"), ["-D", data, "-A", "trust", "-U", "ferrolab", "--no-sync"]);
  let options = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1`;
  const ca = path.join(dir, "ca.pem");
  if (tls) {
    const openssl = (args) => execFileSync("openssl", args, { cwd: dir, stdio: ["ignore", "pipe", "pipe"] });
    openssl(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
      "-subj", "/CN=ferrolab test CA"]);
    openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    fs.writeFileSync(path.join(dir, "server.ext"), "subjectAltName=IP:127.0.0.1\n");
    openssl(["x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
      "-out", "server.crt", "-days", "2", "-extfile", "server.ext"]);
    // PostgreSQL wants its key private to the user it runs as.
    fs.chmodSync(path.join(dir, "server.key"), 0o600);
    if (asRoot) for (const file of ["server.key", "server.crt"]) fs.chownSync(path.join(dir, file), 65534, 65534);
    options += ` -c ssl=on -c ssl_cert_file=${dir}/server.crt -c ssl_key_file=${dir}/server.key`;
    if (clientCerts) {
      openssl(["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=ferrolab"]);
      // Version 3 (with extensions), as TLS libraries require.
      fs.writeFileSync(path.join(dir, "client.ext"), "extendedKeyUsage=clientAuth\n");
      openssl(["x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "client.crt", "-days", "2", "-extfile", "client.ext"]);
      fs.writeFileSync(path.join(data, "pg_hba.conf"), "local all all trust\nhostssl all all 127.0.0.1/32 cert\n");
      if (asRoot) fs.chownSync(path.join(data, "pg_hba.conf"), 65534, 65534);
      options += ` -c ssl_ca_file=${dir}/ca.pem`;
    }
  }
  const start = () =>
    run(postgresProgram("pg_ctl"), ["-D", data, "-l", path.join(dir, "log"), "-w", "-o", options, "start"]);
  start();
  return {
    url: `postgres://ferrolab@127.0.0.1:${port}/postgres`,
    ca: tls ? ca : undefined,
    clientCert: clientCerts ? path.join(dir, "client.crt") : undefined,
    clientKey: clientCerts ? path.join(dir, "client.key") : undefined,
    port,
    start,
    sql: (query, database = "postgres") =>
      execFileSync(postgresProgram("psql"), ["-h", clientCerts ? dir : "127.0.0.1", "-p", String(port), "-U", "ferrolab",
        "-d", database, "-tAc", query], { encoding: "utf8" }).trim(),
    /** The postmaster and its children. */
    pids: () => {
      const main = Number(fs.readFileSync(path.join(data, "postmaster.pid"), "utf8").split("\n")[0]);
      const children = fs.readdirSync("/proc").filter((name) => /^\d+$/.test(name)).filter((pid) => {
        try {
          return Number(fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ")[1]) === main;
        } catch {
          return false;
        }
      });
      return [main, ...children.map(Number)];
    },
    stop: () => {
      try {
        run(postgresProgram("pg_ctl"), ["-D", data, "-m", "immediate", "-w", "stop"]);
      } catch {
        // already gone
      }
    },
  };
}
