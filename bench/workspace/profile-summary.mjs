// Where a page's time went, from a Chrome .cpuprofile (PROFILE=FILE in common.mjs):
// self time by function, and the time spent inside each named function (with
// everything it called), in ms and per keystroke.
//   node profile-summary.mjs FILE [KEYS] [NAME ...]
import fs from "node:fs";

const [file, keysArg, ...names] = process.argv.slice(2);
const keys = Number(keysArg || 1);
const profile = JSON.parse(fs.readFileSync(file, "utf8"));
const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of profile.nodes) for (const c of n.children || []) parent.set(c, n.id);
const label = (n) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.split("/").pop()}:${n.callFrame.lineNumber}`;
const self = new Map();
const inside = new Map(names.map((name) => [name, 0]));
for (let i = 0; i < profile.samples.length; i++) {
  const dt = (profile.timeDeltas[i + 1] ?? 0) / 1000;
  let node = nodes.get(profile.samples[i]);
  self.set(label(node), (self.get(label(node)) || 0) + dt);
  const seen = new Set();
  for (let id = node.id; id !== undefined; id = parent.get(id)) {
    const fn = nodes.get(id).callFrame.functionName;
    for (const name of names) {
      if (fn.includes(name) && !seen.has(name)) {
        seen.add(name);
        inside.set(name, inside.get(name) + dt);
      }
    }
  }
}
const top = [...self.entries()].filter(([k]) => !k.startsWith("(idle)")).sort((a, b) => b[1] - a[1]).slice(0, 25);
console.log("self time (ms, per key):");
for (const [k, v] of top) console.log(`  ${v.toFixed(1).padStart(8)} ${(v / keys).toFixed(2).padStart(6)}  ${k}`);
console.log("inside (ms, per key):");
for (const [k, v] of inside) console.log(`  ${v.toFixed(1).padStart(8)} ${(v / keys).toFixed(2).padStart(6)}  ${k}`);
