import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

// automerge's "browser" entry imports its .wasm file as a module, which needs a
// plugin. Everything uses the slim entry instead, and main.ts loads the .wasm
// file (a hashed asset, compiled while it streams) before anything else runs.
const automerge = fileURLToPath(
  new URL("./node_modules/@automerge/automerge/dist/mjs/entrypoints/slim.js", import.meta.url),
);

export default defineConfig({
  resolve: { alias: [{ find: /^@automerge\/automerge$/, replacement: automerge }] },
  build: { target: "es2022", chunkSizeWarningLimit: 4096, sourcemap: true },
  server: {
    proxy: { "/api": "http://127.0.0.1:7878", "/sync": { target: "ws://127.0.0.1:7878", ws: true } },
  },
});
