// The ferrolab browser workspace. automerge's WebAssembly is loaded before
// anything uses it (see vite.config.ts).
import { next as Automerge } from "@automerge/automerge/slim";
import wasmUrl from "@automerge/automerge/automerge.wasm?url";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { IndexedDBStorageAdapter } from "@automerge/automerge-repo-storage-indexeddb";
import { Api, ApiError, signInWith, type User } from "./api";
import { PresenceChannel } from "./presence";
import type { Session } from "./session";
import { showWorkspace } from "./workspace";
import { showNotebook } from "./notebook";
import { showRuns } from "./runs";
import { showModels } from "./models";
import "./style.css";

const root = document.getElementById("app") as HTMLElement;
const WORKSPACE_KEY = "ferrolab.workspace";

function signIn(message?: string) {
  root.innerHTML = `
    <main class="sign-in">
      <h1>ferrolab</h1>
      <p>Sign in with a token. The server prints a sign-in link when it first starts;
      <code>ferrolab collab token create --name NAME --role editor</code> makes more.</p>
      <form><input name="token" placeholder="flb_…" autocomplete="off" required />
      <button type="submit">Sign in</button></form>
      <p class="error"></p>
    </main>`;
  (root.querySelector(".error") as HTMLElement).textContent = message ?? "";
  root.querySelector("form")?.addEventListener("submit", (event) => {
    event.preventDefault();
    const value = (root.querySelector("input") as HTMLInputElement).value.trim();
    signInWith(value).then(
      () => boot(),
      (error) => signIn(`That token was not accepted (${(error as Error).message}).`),
    );
  });
}

async function boot() {
  const wasm = Automerge.initializeWasm(wasmUrl);
  try {
    await signInWith();
  } catch (error) {
    return signIn(`That token was not accepted (${(error as Error).message}).`);
  }
  const api = new Api();
  let workspace: { index: string; user: User };
  try {
    workspace = await api.workspace();
    localStorage.setItem(WORKSPACE_KEY, JSON.stringify(workspace));
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      localStorage.removeItem(WORKSPACE_KEY);
      return signIn(error.message.includes("session") ? error.message : undefined);
    }
    // Offline: start from what we knew, and sync when the server is back.
    const kept = JSON.parse(localStorage.getItem(WORKSPACE_KEY) ?? "null");
    if (!kept) {
      root.textContent = `The server cannot be reached: ${(error as Error).message}`;
      return;
    }
    workspace = kept;
  }
  await wasm;
  const repo = new Repo({
    network: [new WebSocketClientAdapter(api.syncUrl(), 1000)],
    storage: new IndexedDBStorageAdapter(`ferrolab-${workspace.user.token_id}`),
  });
  const indexHandle = await repo.find(workspace.index as never);
  const session: Session = {
    api,
    repo,
    user: workspace.user,
    index: workspace.index,
    presence: new PresenceChannel(indexHandle as never, workspace.user),
    root,
    navigate(path: string) {
      history.pushState(null, "", path);
      route();
    },
    status(message, kind = "info") {
      let bar = document.getElementById("status");
      if (!bar) {
        bar = document.createElement("div");
        bar.id = "status";
        document.body.append(bar);
      }
      bar.className = kind;
      bar.textContent = message;
      bar.hidden = !message;
    },
  };
  let close: (() => void) | undefined;
  const route = async () => {
    close?.();
    close = undefined;
    session.status("");
    const match = location.pathname.match(/^\/notebooks\/([^/]+)$/);
    try {
      if (match) close = await showNotebook(session, decodeURIComponent(match[1]));
      else if (location.pathname === "/runs") close = await showRuns(session);
      else if (location.pathname === "/models") close = await showModels(session);
      else close = await showWorkspace(session, indexHandle as never);
    } catch (error) {
      session.status((error as Error).message, "error");
    }
  };
  window.addEventListener("popstate", route);
  (window as unknown as { ferrolab: Session }).ferrolab = session;
  await route();
}

boot().catch((error) => {
  root.textContent = `ferrolab could not start: ${error}`;
});
