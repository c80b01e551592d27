// The workspace page: the notebooks (live from the index document), who is
// online, and create / import / rename / delete by role.

import type { DocHandle } from "@automerge/automerge-repo";
import type { Entry } from "./api";
import type { Session } from "./session";
import { renderPeople } from "./presence";
import { header } from "./nav";

interface IndexDoc {
  notebooks?: Record<string, Record<string, unknown>>;
}

const str = (v: unknown) => (v == null ? "" : String(v));

function entries(doc: IndexDoc | undefined): Entry[] {
  return Object.values(doc?.notebooks ?? {})
    .map((e) => ({
      id: str(e.id),
      title: str(e.title),
      created: str(e.created),
      updated: str(e.updated),
      notebook: str(e.notebook),
      runtime: str(e.runtime),
    }))
    .sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
}

export async function showWorkspace(session: Session, index: DocHandle<IndexDoc>) {
  const { api, user, presence } = session;
  const canEdit = user.role !== "viewer";
  const canDelete = user.role === "owner";
  presence.update({ notebook: null, cell: null });
  document.title = "ferrolab";
  session.root.innerHTML = `
    <main class="workspace">
      <div class="actions">
        <button class="new" type="button">New notebook</button>
        <label class="import button">Import .ipynb<input type="file" accept=".ipynb,application/json" hidden /></label>
      </div>
      <table class="notebooks"><thead><tr><th>Notebook</th><th>Updated</th><th></th></tr></thead><tbody></tbody></table>
      <p class="empty" hidden>No notebooks yet.</p>
    </main>`;
  session.root.prepend(header(session, "notebooks"));
  const $ = <T extends HTMLElement>(selector: string) => session.root.querySelector(selector) as T;
  $<HTMLButtonElement>(".new").hidden = !canEdit;
  $(".import").hidden = !canEdit;
  $(".new").addEventListener("click", async () => {
    try {
      const entry = await api.create("Untitled");
      session.navigate(`/notebooks/${entry.id}`);
    } catch (error) {
      session.status((error as Error).message, "error");
    }
  });
  $<HTMLInputElement>(".import input").addEventListener("change", async (event) => {
    const file = (event.target as HTMLInputElement).files?.[0];
    if (!file) return;
    try {
      await api.importFile(file.name, await file.text());
      session.status(`Imported ${file.name}.`);
    } catch (error) {
      session.status(`${file.name}: ${(error as Error).message}`, "error");
    }
  });

  const body = $("tbody");
  const render = () => {
    const list = entries(index.doc());
    $(".empty").hidden = list.length > 0;
    body.replaceChildren(
      ...list.map((entry) => {
        const row = document.createElement("tr");
        row.dataset.id = entry.id;
        const link = document.createElement("a");
        link.href = `/notebooks/${entry.id}`;
        link.className = "title";
        link.textContent = entry.title || "Untitled";
        link.addEventListener("click", (event) => {
          event.preventDefault();
          session.navigate(link.pathname);
        });
        const cells = [document.createElement("td"), document.createElement("td"), document.createElement("td")];
        cells[0].append(link);
        cells[1].textContent = entry.updated ? new Date(entry.updated).toLocaleString() : "";
        if (canEdit) {
          const rename = document.createElement("button");
          rename.textContent = "Rename";
          rename.className = "rename";
          rename.addEventListener("click", async () => {
            const title = prompt("New title", entry.title);
            if (!title) return;
            try {
              await api.rename(entry.id, title);
            } catch (error) {
              session.status((error as Error).message, "error");
            }
          });
          cells[2].append(rename);
        }
        if (canDelete) {
          const remove = document.createElement("button");
          remove.textContent = "Delete";
          remove.className = "delete";
          remove.addEventListener("click", async () => {
            if (!confirm(`Delete “${entry.title}” from the workspace?`)) return;
            try {
              await api.remove(entry.id);
            } catch (error) {
              session.status((error as Error).message, "error");
            }
          });
          cells[2].append(remove);
        }
        row.append(...cells);
        return row;
      }),
    );
  };
  const people = () => renderPeople($(".people"), presence.me, presence.others());
  render();
  people();
  index.on("change", render);
  const unsubscribe = presence.subscribe(people);
  return () => {
    index.off("change", render);
    unsubscribe();
  };
}
