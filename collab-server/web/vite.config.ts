import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

// automerge's "browser" entry imports its .wasm file as a module, which needs a
// plugin. Everything uses the slim entry instead, and main.ts loads the .wasm
// file (a hashed asset, compiled while it streams) before anything else runs.
const automerge = fileURLToPath(
  new URL("./node_modules/@automerge/automerge/dist/mjs/entrypoints/slim.js", import.meta.url),
);

// automerge-repo sends a document's changes to peers at most every 100 ms (a
// trailing throttle), which puts up to 100 ms on every keystroke a collaborator
// sees. 16 ms (a frame) still folds fast typing into few messages. The option is
// not exposed, so the build sets it, and fails if the library no longer has it.
const SYNC_RATE_MS = 16;
const syncRate = {
  name: "ferrolab-sync-rate",
  transform(code: string, id: string) {
    if (!id.includes("automerge-repo/dist/synchronizer/DocSynchronizer.js")) return null;
    const patched = code.replace("syncDebounceRate = 100;", `syncDebounceRate = ${SYNC_RATE_MS};`);
    if (patched === code) throw new Error("automerge-repo's DocSynchronizer no longer sets syncDebounceRate = 100; revisit vite.config.ts");
    return { code: patched, map: null };
  },
};

export default defineConfig({
  plugins: [syncRate],
  resolve: { alias: [{ find: /^@automerge\/automerge$/, replacement: automerge }] },
  build: { target: "es2022", chunkSizeWarningLimit: 4096, sourcemap: true },
  server: {
    proxy: { "/api": "http://127.0.0.1:7878", "/sync": { target: "ws://127.0.0.1:7878", ws: true } },
  },
});
