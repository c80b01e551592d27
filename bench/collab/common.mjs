// What the collaboration benchmarks share: ports, CPU and memory of processes,
// and whether a server has acknowledged a client's changes.
import fs from "node:fs";
import net from "node:net";
import * as A from "@automerge/automerge";

const TICKS_PER_SECOND = 100; // /proc/<pid>/stat clock ticks (USER_HZ) on Linux

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

export async function waitPort(port, proc, output) {
  for (let i = 0; i < 400; i++) {
    if (proc.exitCode !== null) throw new Error(`server exited: ${output()}`);
    const ok = await new Promise((resolve) => {
      const s = net.connect(port, "127.0.0.1");
      s.once("connect", () => (s.destroy(), resolve(true)));
      s.once("error", () => resolve(false));
    });
    if (ok) return;
    await sleep(25);
  }
  throw new Error("server did not listen");
}

export function cpuMs(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

export function memoryMiB(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const read = (key) => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))?.[1] ?? 0) / 1024;
  return { rss: read("VmRSS"), peak: read("VmHWM") };
}

export function serverStorageId(repo) {
  for (const m of Object.values(repo.peerMetadataByPeerId)) if (m?.storageId) return m.storageId;
  return undefined;
}

export async function acknowledged(repo, handle, timeoutMs = 60000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const id = serverStorageId(repo);
    const theirs = id ? handle.getSyncInfo(id)?.lastHeads ?? [] : [];
    if (handle.heads().every((h) => theirs.includes(h))) return true;
    await sleep(20);
  }
  return false;
}

export function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}


/** Calls `record(latency, from, to)` whenever client `to` receives a mark that
 * client `from` typed (`sentAt`: mark → when it was typed). */
export function watchMarks(handles, sentAt, record) {
  const pattern = /§(\d+)\.(\d+)¶/g;
  handles.forEach((handle, me) => {
    handle.on("change", ({ patches }) => {
      const now = performance.now();
      for (const patch of patches) {
        if (patch.action !== "splice" || typeof patch.value !== "string") continue;
        for (const [mark, who] of patch.value.matchAll(pattern)) {
          if (Number(who) === me) continue;
          const at = sentAt.get(mark);
          if (at !== undefined) record(now - at, Number(who), me);
        }
      }
    });
  });
}

/** Every client types `rate` marks a second at random places of cell `c` for
 * `seconds`; notes when each was typed in `sentAt` and answers how many it typed. */
export async function typeMarks(handles, rate, seconds, sentAt) {
  let sent = 0;
  const stopAt = performance.now() + seconds * 1000;
  await Promise.all(
    handles.map(async (handle, me) => {
      let k = 0;
      let next = performance.now() + Math.random() * (1000 / rate);
      while (performance.now() < stopAt) {
        const wait = next - performance.now();
        if (wait > 0) await sleep(wait);
        next += 1000 / rate;
        const mark = `§${me}.${k++}¶`;
        handle.change((doc) => {
          const length = doc.cells.c.source.length;
          A.splice(doc, ["cells", "c", "source"], Math.floor(Math.random() * (length + 1)), 0, mark);
        });
        sentAt.set(mark, performance.now());
        sent++;
      }
    }),
  );
  return sent;
}

/** Waits up to `ms` for every handle to reach the same heads and `done()` to say
 * yes (the server's acknowledgement); answers whether they did. */
export async function settle(handles, done, ms) {
  const start = performance.now();
  while (performance.now() - start < ms) {
    const heads = handles.map((h) => JSON.stringify([...h.heads()].sort()));
    if (heads.every((h) => h === heads[0]) && (await done())) return true;
    await sleep(50);
  }
  return false;
}

/** The command line's `--name value` pairs, and the `--bin` they must name (else
 * `usage` is printed and the process ends). */
export function commandLine(usage) {
  const args = Object.fromEntries(
    process.argv.slice(2).reduce((pairs, arg, i, all) => {
      if (arg.startsWith("--")) pairs.push([arg.slice(2), all[i + 1]]);
      return pairs;
    }, []),
  );
  if (!args.bin || !fs.existsSync(args.bin)) {
    console.error(`usage: ${usage}`);
    process.exit(2);
  }
  return args;
}
