// The notebook page: one CodeMirror editor per cell, bound to the cell's
// automerge Text, cells ordered by their fractional positions, outputs from the
// runtime document, JupyterLab's keyboard shortcuts, and everyone's cursors.

import { next as A } from "@automerge/automerge";
import type { DocHandle } from "@automerge/automerge-repo";
import { basicSetup } from "codemirror";
import { EditorView, keymap, Decoration, WidgetType, type DecorationSet } from "@codemirror/view";
import { EditorState, Prec, StateEffect, StateField, type Extension } from "@codemirror/state";
import { rust } from "@codemirror/lang-rust";
import { markdown } from "@codemirror/lang-markdown";
import type { Session } from "./session";
import { positionBetween } from "./positions";
import { renderMarkdown, renderOutputs } from "./outputs";
import { renderPeople, type Presence } from "./presence";
import { header } from "./nav";
import { applyPatches, guard, remoteEdit, sendEdits, type Patch } from "./binding";

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
interface CellDoc {
  id: unknown;
  cell_type: unknown;
  position: unknown;
  source: string;
  metadata: Record<string, unknown>;
}
interface NotebookDoc {
  cells: Record<string, CellDoc>;
  runtime?: unknown;
  metadata?: Record<string, unknown>;
}
interface RuntimeDoc {
  cells?: Record<string, { execution_count?: number | null; outputs?: Json[]; state?: unknown; ran_by?: unknown }>;
  kernel?: { status?: unknown; message?: unknown };
}

const str = (v: unknown) => (v == null ? "" : String(v));
const imm = (s: string) => new A.ImmutableString(s);

/** Cell ids in display order: by position, ties by id. */
export function order(doc: NotebookDoc | undefined): string[] {
  return Object.entries(doc?.cells ?? {})
    .map(([id, c]) => [str(c.position), id] as const)
    .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0))
    .map(([, id]) => id);
}

// ------------------------------------------------------------ remote cursors

interface RemoteCursor {
  from: number;
  to: number;
  head: number;
  color: string;
  name: string;
}
const setRemote = StateEffect.define<RemoteCursor[]>();

class CaretWidget extends WidgetType {
  constructor(
    readonly color: string,
    readonly name: string,
  ) {
    super();
  }
  eq(other: CaretWidget) {
    return other.color === this.color && other.name === this.name;
  }
  toDOM() {
    const caret = document.createElement("span");
    caret.className = "remote-caret";
    caret.style.borderColor = this.color;
    const label = document.createElement("span");
    label.className = "remote-name";
    label.style.background = this.color;
    label.textContent = this.name;
    caret.append(label);
    return caret;
  }
  ignoreEvent() {
    return true;
  }
}

const remoteCursors = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(value, tr) {
    value = value.map(tr.changes);
    for (const effect of tr.effects) {
      if (!effect.is(setRemote)) continue;
      const length = tr.state.doc.length;
      const clamp = (n: number) => Math.max(0, Math.min(length, n));
      const ranges = effect.value.flatMap((c) => {
        const from = clamp(c.from);
        const to = clamp(c.to);
        const out = [Decoration.widget({ widget: new CaretWidget(c.color, c.name), side: 1 }).range(clamp(c.head))];
        if (to > from) {
          out.push(
            Decoration.mark({ attributes: { style: `background: color-mix(in srgb, ${c.color} 25%, transparent)` } }).range(from, to),
          );
        }
        return out;
      });
      value = Decoration.set(ranges, true);
    }
    return value;
  },
  provide: (field) => EditorView.decorations.from(field),
});

// ------------------------------------------------------------ the page

interface CellView {
  id: string;
  type: string;
  el: HTMLElement;
  view: EditorView;
  rendered: HTMLElement;
  outputs: HTMLElement;
  prompt: HTMLElement;
  outputsKey: string;
  cursorsKey: string;
  editingMarkdown: boolean;
}

export async function showNotebook(session: Session, id: string) {
  const { api, repo, user, presence } = session;
  const canEdit = user.role !== "viewer";
  const entry = await api.call<{ title: string; notebook: string; runtime: string }>(
    "GET",
    `/api/notebooks/${encodeURIComponent(id)}`,
  ).catch(() => null);
  const url = entry?.notebook ?? `automerge:${id}`;
  const handle = (await repo.find(url as never)) as unknown as DocHandle<NotebookDoc>;
  const runtimeUrl = entry?.runtime ?? str(handle.doc()?.runtime);
  const runtime = runtimeUrl ? ((await repo.find(runtimeUrl as never)) as unknown as DocHandle<RuntimeDoc>) : null;
  document.title = `${entry?.title ?? "Notebook"} · ferrolab`;

  session.root.innerHTML = `
    <nav class="toolbar">
      <button data-action="add-code" title="Insert a code cell below (B)">+ Code</button>
      <button data-action="add-markdown" title="Insert a markdown cell below">+ Markdown</button>
      <button data-action="up" title="Move the cell up">↑</button>
      <button data-action="down" title="Move the cell down">↓</button>
      <button data-action="delete" title="Delete the cell (D, D)">Delete</button>
      <select data-action="type" title="Cell type (Y / M)"><option value="code">Code</option><option value="markdown">Markdown</option><option value="raw">Raw</option></select>
      <button data-action="run" title="Run the cell (Shift-Enter)">▶ Run</button>
      <button data-action="run-all" title="Run every code cell, in order">Run all</button>
      <button data-action="interrupt" title="Interrupt the kernel">■</button>
      <button data-action="restart" title="Restart the kernel (its state is lost)">Restart</button>
      <span class="kernel-status" title="the shared kernel">kernel: not started</span>
      <a class="download" download>Download .ipynb</a>
      <a class="report" download title="Static charts, no scripts">HTML report</a>
      <a class="report-interactive" download title="Charts you can explore (adds the chart library, about 1 MB)">Interactive report</a>
      ${canEdit ? "" : '<span class="read-only">read only</span>'}
    </nav>
    <main class="notebook" tabindex="-1"></main>`;
  session.root.prepend(header(session, "notebooks", entry?.title ?? id));
  const $ = <T extends HTMLElement>(s: string) => session.root.querySelector(s) as T;
  $<HTMLAnchorElement>(".download").href = api.ipynbLink(id);
  $<HTMLAnchorElement>(".report").href = api.reportLink(id);
  $<HTMLAnchorElement>(".report-interactive").href = api.reportLink(id, true);
  for (const el of session.root.querySelectorAll<HTMLElement>(".toolbar [data-action]")) {
    if (!canEdit) (el as HTMLButtonElement).disabled = true;
  }
  const container = $("main.notebook");
  const views = new Map<string, CellView>();
  let active: string | null = null;
  let pendingD = 0;
  let pendingI = 0;
  let pendingZero = 0;

  const change = (fn: (doc: NotebookDoc) => void) => {
    if (!canEdit) {
      session.status("You can read this notebook but not change it (your token is a viewer's).", "error");
      return;
    }
    handle.change(fn);
  };

  const select = (cellId: string | null, focusEditor = false) => {
    active = cellId;
    for (const v of views.values()) v.el.classList.toggle("active", v.id === cellId);
    const v = cellId ? views.get(cellId) : undefined;
    if (!v) return;
    (v.el as HTMLElement).scrollIntoView({ block: "nearest" });
    ($<HTMLSelectElement>("select[data-action=type]")).value = v.type;
    if (focusEditor) {
      if (v.type === "markdown") showMarkdownEditor(v, true);
      v.view.focus();
    } else {
      container.focus({ preventScroll: true });
    }
    presence.update({ notebook: id, cell: cellId });
  };

  const insert = (where: "above" | "below", type = "code") => {
    const ids = order(handle.doc());
    const at = active ? ids.indexOf(active) : ids.length - 1;
    const positions = ids.map((c) => str(handle.doc().cells[c].position));
    const [before, after] =
      where === "above" ? [positions[at - 1] ?? null, positions[at] ?? null] : [positions[at] ?? null, positions[at + 1] ?? null];
    const cellId = crypto.randomUUID();
    change((doc) => {
      doc.cells[cellId] = {
        id: imm(cellId),
        cell_type: imm(type),
        position: imm(positionBetween(before, after)),
        source: "",
        metadata: {},
      };
    });
    if (canEdit) {
      reconcile();
      select(cellId, true);
    }
  };

  const remove = () => {
    if (!active) return;
    const ids = order(handle.doc());
    const index = ids.indexOf(active);
    const gone = active;
    change((doc) => {
      delete doc.cells[gone];
    });
    reconcile();
    select(ids[index + 1] ?? ids[index - 1] ?? null);
  };

  const move = (delta: -1 | 1) => {
    if (!active) return;
    const ids = order(handle.doc());
    const index = ids.indexOf(active);
    const target = index + delta;
    if (index < 0 || target < 0 || target >= ids.length) return;
    const pos = (i: number) => (i >= 0 && i < ids.length ? str(handle.doc().cells[ids[i]].position) : null);
    const [before, after] = delta < 0 ? [pos(target - 1), pos(target)] : [pos(target), pos(target + 1)];
    const cellId = active;
    change((doc) => {
      doc.cells[cellId].position = imm(positionBetween(before, after));
    });
  };

  const setType = (type: string) => {
    if (!active) return;
    const cellId = active;
    if (str(handle.doc().cells[cellId]?.cell_type) === type) return;
    change((doc) => {
      doc.cells[cellId].cell_type = imm(type);
    });
  };

  const run = (advance: boolean) => {
    if (!active) return;
    const v = views.get(active);
    if (v?.type === "markdown") {
      v.editingMarkdown = false;
      updateMarkdown(v);
    } else if (v?.type === "code") {
      execute([v.id]);
    }
    if (advance) {
      const ids = order(handle.doc());
      const next = ids[ids.indexOf(active) + 1];
      if (next) select(next);
      else if (canEdit) insert("below");
    } else {
      select(active);
    }
  };

  const execute = (cells: string[] | "all") => {
    if (!canEdit) {
      session.status("You can read this notebook but not run it (your token is a viewer's).", "error");
      return;
    }
    api.execute(id, cells).catch((error) => session.status((error as Error).message, "error"));
  };

  const kernelAction = (action: "interrupt" | "restart") => {
    if (action === "restart" && !confirm("Restart the kernel for everyone? Its variables are lost.")) return;
    api.kernel(id, action).catch((error) => session.status((error as Error).message, "error"));
  };

  const showMarkdownEditor = (v: CellView, editing: boolean) => {
    v.editingMarkdown = editing;
    updateMarkdown(v);
  };

  const updateMarkdown = (v: CellView) => {
    const rendered = v.type === "markdown" && !v.editingMarkdown;
    v.el.classList.toggle("rendered", rendered);
    if (rendered) {
      const source = v.view.state.doc.toString();
      v.rendered.innerHTML = source.trim() ? renderMarkdown(source) : '<p class="muted">Empty markdown cell: double-click to edit</p>';
    }
  };

  const cellKeys = (cellId: string): Extension =>
    Prec.highest(
      keymap.of([
        { key: "Shift-Enter", run: () => (select(cellId), run(true), true) },
        { key: "Mod-Enter", run: () => (select(cellId), run(false), true) },
        { key: "Escape", run: () => (select(cellId), true) },
      ]),
    );

  const makeCell = (cellId: string): CellView => {
    const cell = handle.doc().cells[cellId];
    const type = str(cell.cell_type) || "code";
    const el = document.createElement("section");
    el.className = `cell ${type}`;
    el.dataset.id = cellId;
    const prompt = document.createElement("div");
    prompt.className = "prompt";
    const body = document.createElement("div");
    body.className = "cell-body";
    const editor = document.createElement("div");
    editor.className = "editor";
    const rendered = document.createElement("div");
    rendered.className = "markdown-rendered";
    const outputs = document.createElement("div");
    outputs.className = "outputs";
    body.append(editor, rendered, outputs);
    el.append(prompt, body);
    const view = new EditorView({
      parent: editor,
      state: EditorState.create({
        doc: String(cell.source ?? ""),
        extensions: [
          cellKeys(cellId),
          basicSetup,
          type === "markdown" ? markdown() : type === "code" ? rust() : [],
          sendEdits(handle as never, ["cells", cellId, "source"]),
          EditorState.readOnly.of(!canEdit),
          EditorView.editable.of(canEdit),
          remoteCursors,
          EditorView.updateListener.of((update) => {
            if (update.focusChanged && update.view.hasFocus && active !== cellId) {
              active = cellId;
              for (const other of views.values()) other.el.classList.toggle("active", other.id === cellId);
            }
            // Where the cursor is while this editor has the focus; and where a
            // collaborator's edit moved it (mapped through their change), focused
            // or not: the page may be in the background while others type.
            const mine = presence.me.notebook === id && presence.me.cell === cellId;
            const moved = mine && update.transactions.some((tr) => tr.annotation(remoteEdit));
            if ((update.view.hasFocus || moved) && (update.selectionSet || update.focusChanged)) {
              const { anchor, head } = update.state.selection.main;
              presence.update({ notebook: id, cell: cellId, anchor, head });
            }
          }),
        ],
      }),
    });
    const v: CellView = { id: cellId, type, el, view, rendered, outputs, prompt, outputsKey: "", cursorsKey: "", editingMarkdown: false };
    el.addEventListener("mousedown", (event) => {
      if (!(event.target as HTMLElement).closest(".cm-editor")) select(cellId);
    });
    rendered.addEventListener("dblclick", () => select(cellId, true));
    updateMarkdown(v);
    return v;
  };

  const renderRuntime = (only?: Set<string>) => {
    const doc = runtime?.doc();
    const cells = doc?.cells ?? {};
    const status = str(doc?.kernel?.status) || "not started";
    const message = str(doc?.kernel?.message);
    const badge = $(".kernel-status");
    badge.textContent = `kernel: ${status}`;
    badge.dataset.status = status;
    badge.title = message || "the shared kernel";
    for (const v of views.values()) {
      if (only && !only.has(v.id)) continue;
      const state = cells[v.id];
      const count = state?.execution_count ?? null;
      const running = str(state?.state);
      const list = (state?.outputs ?? []) as Json[];
      const by = str(state?.ran_by);
      const key = JSON.stringify([count, running, list, by]);
      if (key === v.outputsKey) continue;
      v.outputsKey = key;
      v.prompt.title = by ? `Run by ${by}` : "";
      const busy = running === "running" || running === "queued";
      v.el.dataset.state = running || "idle";
      v.prompt.textContent = v.type === "code" ? `[${busy ? "*" : count ?? " "}]:` : "";
      v.outputs.replaceChildren(...(v.type === "code" ? renderOutputs(list) : []));
    }
  };

  /** Brings the page in line with the document; returns the cells it created. */
  const reconcile = (): Set<string> => {
    const doc = handle.doc();
    if (!doc) return new Set();
    const ids = order(doc);
    const wanted = new Set(ids);
    // Moving an element in the DOM takes the focus from the editor inside it: a
    // collaborator's insert or move must not end someone's typing.
    const focused = [...views.values()].find((v) => v.view.hasFocus);
    for (const [cellId, v] of views) {
      const type = str(doc.cells[cellId]?.cell_type) || "code";
      if (!wanted.has(cellId) || type !== v.type) {
        v.view.destroy();
        v.el.remove();
        views.delete(cellId);
      }
    }
    const created = new Set<string>();
    ids.forEach((cellId, i) => {
      let v = views.get(cellId);
      if (!v) {
        v = makeCell(cellId);
        views.set(cellId, v);
        created.add(cellId);
        if (cellId === active) v.el.classList.add("active");
      }
      if (container.children[i] !== v.el) container.insertBefore(v.el, container.children[i] ?? null);
    });
    if (focused && views.get(focused.id) === focused && !focused.view.hasFocus) focused.view.focus();
    if (created.size > 0) renderRuntime(created);
    queueCursors();
    return created;
  };

  // Typing changes only a cell's source, which its editor already follows: only
  // a change to anything else (cells added, removed, moved, retyped) needs the
  // page reconciled, and a rendered markdown cell re-rendered.
  const onNotebookChange = ({ patches }: { patches: Patch[] }) => {
    const sources = new Map<string, Patch[]>();
    const replaced = new Set<string>();
    let structural = false;
    for (const patch of patches) {
      const [root, cellId, field] = patch.path;
      if (root === "cells" && field === "source" && patch.path.length >= 3) {
        const list = sources.get(String(cellId)) ?? [];
        list.push(patch);
        sources.set(String(cellId), list);
      } else {
        structural = true;
        // A cell object put anew (same id): its editor starts again from the document.
        if (root === "cells" && patch.path.length === 2) replaced.add(String(cellId));
      }
    }
    for (const cellId of replaced) {
      const v = views.get(cellId);
      if (v) {
        v.view.destroy();
        v.el.remove();
        views.delete(cellId);
      }
    }
    const created = structural ? reconcile() : new Set<string>();
    for (const [cellId, list] of sources) {
      const v = views.get(cellId);
      // A cell created just now already shows the document's text.
      if (!v || replaced.has(cellId) || created.has(cellId)) continue;
      // This page's own typing is already in its editor.
      if (!guard.local) applyPatches(v.view, ["cells", cellId, "source"], list);
      if (v.type === "markdown" && !v.editingMarkdown) updateMarkdown(v);
    }
  };

  const onRuntimeChange = ({ patches }: { patches: { path: (string | number)[] }[] }) => {
    const cells = new Set<string>();
    let all = false;
    for (const patch of patches) {
      if (patch.path[0] === "cells" && patch.path.length >= 2) cells.add(String(patch.path[1]));
      else if (patch.path[0] === "cells") all = true;
    }
    renderRuntime(all ? undefined : cells);
  };

  // Remote cursors are dispatched outside whatever editor update is running (a
  // local keystroke changes the document, which calls reconcile).
  let cursorsQueued = false;
  const queueCursors = () => {
    if (cursorsQueued) return;
    cursorsQueued = true;
    setTimeout(() => {
      cursorsQueued = false;
      showCursors();
    }, 0);
  };

  const showCursors = () => {
    const others = presence.others().filter((p: Presence) => p.notebook === id);
    for (const v of views.values()) {
      if (!v.el.isConnected) continue;
      const here = others
        .filter((p) => p.cell === v.id)
        .map((p) => ({ from: Math.min(p.anchor, p.head), to: Math.max(p.anchor, p.head), head: p.head, color: p.color, name: p.name }));
      const key = JSON.stringify(here);
      if (key === v.cursorsKey) continue;
      v.cursorsKey = key;
      v.view.dispatch({ effects: setRemote.of(here) });
    }
    renderPeople($(".people"), presence.me, others);
  };

  // Toolbar.
  session.root.querySelector(".toolbar")?.addEventListener("click", (event) => {
    const action = (event.target as HTMLElement).closest<HTMLElement>("[data-action]")?.dataset.action;
    if (action === "add-code") insert("below", "code");
    else if (action === "add-markdown") insert("below", "markdown");
    else if (action === "up") move(-1);
    else if (action === "down") move(1);
    else if (action === "delete") remove();
    else if (action === "run") run(false);
    else if (action === "run-all") execute("all");
    else if (action === "interrupt") kernelAction("interrupt");
    else if (action === "restart") kernelAction("restart");
  });
  $<HTMLSelectElement>("select[data-action=type]").addEventListener("change", (event) =>
    setType((event.target as HTMLSelectElement).value),
  );

  // Command mode: keys when no editor has the focus.
  const onKey = (event: KeyboardEvent) => {
    const target = event.target as HTMLElement;
    if (target.closest(".cm-editor") || target.closest("input, select, textarea")) return;
    const ids = order(handle.doc());
    const index = active ? ids.indexOf(active) : -1;
    const key = event.key;
    let handled = true;
    if (key === "Enter" && event.shiftKey) run(true);
    else if (key === "Enter" && (event.ctrlKey || event.metaKey)) run(false);
    else if (key === "Enter" && active) select(active, true);
    else if (key === "ArrowUp" || key === "k") select(ids[Math.max(0, index - 1)] ?? null);
    else if (key === "ArrowDown" || key === "j") select(ids[Math.min(ids.length - 1, index + 1)] ?? null);
    else if (key === "a") insert("above");
    else if (key === "b") insert("below");
    else if (key === "m") setType("markdown");
    else if (key === "y") setType("code");
    else if (key === "r") setType("raw");
    else if (key === "i" && Date.now() - pendingI < 800) {
      pendingI = 0;
      kernelAction("interrupt");
    } else if (key === "i") pendingI = Date.now();
    else if (key === "0" && Date.now() - pendingZero < 800) {
      pendingZero = 0;
      kernelAction("restart");
    } else if (key === "0") pendingZero = Date.now();
    else if (key === "d") {
      if (Date.now() - pendingD < 800) {
        pendingD = 0;
        remove();
      } else pendingD = Date.now();
    } else handled = false;
    if (handled) event.preventDefault();
  };
  document.addEventListener("keydown", onKey);

  reconcile();
  if (!active) {
    const first = order(handle.doc())[0];
    if (first) select(first);
  }
  handle.on("change", onNotebookChange);
  runtime?.on("change", onRuntimeChange);
  const unsubscribe = presence.subscribe(queueCursors);
  return () => {
    document.removeEventListener("keydown", onKey);
    handle.off("change", onNotebookChange);
    runtime?.off("change", onRuntimeChange);
    unsubscribe();
    for (const v of views.values()) v.view.destroy();
    presence.update({ notebook: null, cell: null });
  };
}
