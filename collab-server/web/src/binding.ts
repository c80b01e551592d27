// Cell editors ⇄ the notebook document. automerge-codemirror's plugin has each
// editor diff the whole document on every change, so 300 cells made every
// keystroke 300 diffs. Here one listener per notebook hands each editor only its
// own cell's patches, and an editor's local edits become splices.

import { next as A } from "@automerge/automerge";
import type { DocHandle } from "@automerge/automerge-repo";
import { Annotation, ChangeSet, type ChangeSpec, type Extension } from "@codemirror/state";
import { EditorView } from "@codemirror/view";

/** Marks transactions that apply someone else's edits (not to be sent back). */
export const remoteEdit = Annotation.define<boolean>();

export type Patch = { action: string; path: (string | number)[]; value?: unknown; values?: unknown[]; length?: number };

/** Set while this page's own edit is being applied to the document. */
export const guard = { local: false };

/** An editor extension: local edits of the text at `path` become automerge splices. */
export function sendEdits(handle: DocHandle<unknown>, path: (string | number)[]): Extension {
  return EditorView.updateListener.of((update) => {
    const transactions = update.transactions.filter((tr) => !tr.annotation(remoteEdit) && !tr.changes.empty);
    if (transactions.length === 0) return;
    guard.local = true;
    try {
      handle.change((doc) => {
        for (const tr of transactions) {
          tr.changes.iterChanges((fromA, toA, fromB, _toB, inserted) => {
            A.splice(doc as never, path.slice(), fromB, toA - fromA, inserted.toString());
          });
        }
      });
    } finally {
      guard.local = false;
    }
  });
}

/** Applies patches whose paths are the text's path plus one index (or the text itself). */
export function applyPatches(view: EditorView, textPath: (string | number)[], patches: Patch[]) {
  let selection = view.state.selection;
  const depth = textPath.length;
  for (const patch of patches) {
    let spec: ChangeSpec | null = null;
    const index = patch.path.length === depth + 1 ? patch.path[depth] : null;
    if (patch.path.length === depth && patch.action === "put") {
      spec = { from: 0, to: view.state.doc.length, insert: typeof patch.value === "string" ? patch.value : "" };
    } else if (typeof index === "number") {
      if (patch.action === "splice") spec = { from: index, insert: String(patch.value ?? "") };
      else if (patch.action === "insert") spec = { from: index, insert: (patch.values ?? []).map((v) => String(v ?? "")).join("") };
      else if (patch.action === "del") spec = { from: index, to: index + (patch.length ?? 1) };
    }
    if (!spec) continue;
    const changes = ChangeSet.of(spec, view.state.doc.length, "\n");
    selection = selection.map(changes, 1);
    view.dispatch({ changes, annotations: remoteEdit.of(true) });
  }
  view.dispatch({ selection, annotations: remoteEdit.of(true) });
}
