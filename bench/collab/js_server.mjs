// The anchor: automerge-repo's stock Node sync server, as its sync-server
// example builds it (NodeWSServerAdapter + NodeFSStorageAdapter, shares nothing
// unasked). usage: node js_server.mjs PORT DATA_DIR
import http from "node:http";
import { WebSocketServer } from "ws";
import { Repo } from "@automerge/automerge-repo";
import { NodeWSServerAdapter } from "@automerge/automerge-repo-network-websocket";
import { NodeFSStorageAdapter } from "@automerge/automerge-repo-storage-nodefs";

const [port, dir] = process.argv.slice(2);
const wss = new WebSocketServer({ noServer: true });
const server = http.createServer((_req, res) => res.end("sync server"));
const repo = new Repo({
  network: [new NodeWSServerAdapter(wss)],
  storage: new NodeFSStorageAdapter(dir),
  peerId: `sync-server-${process.pid}`,
  sharePolicy: async () => false,
});
server.on("upgrade", (request, socket, head) => {
  wss.handleUpgrade(request, socket, head, (ws) => wss.emit("connection", ws, request));
});
server.listen(Number(port), "127.0.0.1", () => console.log(`listening on ${port}`));
// Flush what the repo still holds in memory before leaving, as a deployed server would.
process.on("SIGTERM", async () => {
  await repo.shutdown();
  process.exit(0);
});
