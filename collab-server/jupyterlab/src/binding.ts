/**
 * A JupyterLab notebook model (a Yjs `YNotebook`) kept in step with a notebook's
 * two automerge documents on the collaboration server, both ways
 * (docs/jupyterlab-live.md, "The binding"):
 *
 * - local → automerge: each Yjs transaction not made here becomes one automerge
 *   change: text deltas become splices, cells are matched by id (JupyterLab moves
 *   a cell and changes its type by deleting it and inserting a copy with the same
 *   id), metadata by key. Outputs and execution counts are never sent: the
 *   server's kernel owns them.
 * - automerge → local: patches of the notebook document (text splices, cells
 *   added, removed, moved, retyped, metadata) and the runtime document (outputs,
 *   execution counts, running state) are applied in Yjs transactions whose origin
 *   is `REMOTE`, which the first direction ignores, so nothing echoes.
 */
import { next as A } from '@automerge/automerge';
import type { DocHandle, Repo } from '@automerge/automerge-repo';
import type { YNotebook } from '@jupyter/ydoc';
import type * as Y from 'yjs';
import { byPosition, positionBetween, stayPut } from './order';

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
type JsonObject = { [key: string]: Json };

interface CellDoc {
  id?: unknown;
  cell_type?: unknown;
  position?: unknown;
  source?: unknown;
  metadata?: Record<string, unknown>;
}

export interface NotebookDoc {
  cells: Record<string, CellDoc>;
  metadata?: Record<string, unknown>;
  runtime?: unknown;
}

export interface CellRuntime {
  execution_count?: unknown;
  outputs?: unknown;
  state?: unknown;
  /** The name on the token that last asked to run the cell. */
  ran_by?: unknown;
}

export interface RuntimeDoc {
  cells?: Record<string, CellRuntime>;
  kernel?: { status?: unknown; message?: unknown };
}

type Patch = A.Patch;

/** The origin of Yjs transactions that apply collaborators' changes. */
export const REMOTE = Symbol('ferrolab.remote');

/** A value read from automerge as plain JSON (the server writes strings as
 * immutable strings, which serialize as strings). */
export function plain(value: unknown): Json {
  return value === undefined ? null : (JSON.parse(JSON.stringify(value)) as Json);
}

/** A JSON value as the server writes it into a document: strings immutable. */
function stored(value: Json): unknown {
  if (typeof value === 'string') {
    return new A.ImmutableString(value);
  }
  if (Array.isArray(value)) {
    return value.map(stored);
  }
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, stored(v)]));
  }
  return value;
}

const str = (value: unknown) => (value == null ? '' : String(value));
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

/** Cell ids in the order every client shows them. */
export function cellOrder(doc: NotebookDoc | undefined): string[] {
  const positions = new Map<string, string>();
  for (const [id, cell] of Object.entries(doc?.cells ?? {})) {
    positions.set(id, str(cell.position));
  }
  return byPosition(positions);
}

/** What JupyterLab's `running` prompt means for a cell of the runtime document. */
function executionState(state: CellRuntime | undefined): 'running' | 'idle' {
  const s = str(state?.state);
  return s === 'running' || s === 'queued' ? 'running' : 'idle';
}

export interface IBindingOptions {
  /** The notebook's id on the collaboration server. */
  id: string;
  model: YNotebook;
  notebook: DocHandle<NotebookDoc>;
  runtime: DocHandle<RuntimeDoc> | null;
  /** False for a viewer: nothing is sent (the server would refuse it anyway). */
  canEdit: boolean;
}

export class NotebookBinding {
  readonly id: string;
  readonly model: YNotebook;
  readonly notebook: DocHandle<NotebookDoc>;
  readonly runtime: DocHandle<RuntimeDoc> | null;
  readonly canEdit: boolean;
  private ycells: Y.Array<Y.Map<unknown>>;
  private ymeta: Y.Map<unknown>;
  /** Cell maps that were in the model after the last sync either way. */
  private known = new WeakSet<Y.Map<unknown>>();
  /** Set while this page's own change is applied to the automerge document. */
  private sending = false;
  private disposed = false;

  constructor(options: IBindingOptions) {
    this.id = options.id;
    this.model = options.model;
    this.notebook = options.notebook;
    this.runtime = options.runtime;
    this.canEdit = options.canEdit;
    this.ycells = this.model.ydoc.getArray('cells');
    this.ymeta = this.model.ydoc.getMap('meta');
    this.load();
    this.ycells.observeDeep(this.onCells);
    this.ymeta.observeDeep(this.onMeta);
    // Nothing here is ever unsaved: the server keeps each change as it arrives.
    this.model.ystate.observe(this.onState);
    this.onState();
    this.notebook.on('change', this.onNotebook);
    this.runtime?.on('change', this.onRuntime);
  }

  dispose(): void {
    if (this.disposed) {
      return;
    }
    this.disposed = true;
    this.ycells.unobserveDeep(this.onCells);
    this.ymeta.unobserveDeep(this.onMeta);
    this.model.ystate.unobserve(this.onState);
    this.notebook.off('change', this.onNotebook);
    this.runtime?.off('change', this.onRuntime);
  }

  /**
   * Resolves once the collaboration server has every change made here (or after
   * `timeoutMs`): a cell is run only after the server has its text.
   */
  acknowledged(repo: Repo, timeoutMs = 5000): Promise<void> {
    const done = () => {
      const storageId = Object.values(repo.peerMetadataByPeerId).find(m => m?.storageId)
        ?.storageId;
      if (!storageId) {
        return false;
      }
      const theirs: string[] = this.notebook.getSyncInfo(storageId)?.lastHeads ?? [];
      return this.notebook.heads().every(head => theirs.includes(head));
    };
    if (done()) {
      return Promise.resolve();
    }
    return new Promise(resolve => {
      const finish = () => {
        clearTimeout(timer);
        this.notebook.off('remote-heads', check);
        resolve();
      };
      const check = () => {
        if (done()) {
          finish();
        }
      };
      const timer = setTimeout(finish, timeoutMs);
      this.notebook.on('remote-heads', check);
    });
  }

  // ------------------------------------------------------------ helpers

  private onState = (): void => {
    if (this.model.dirty) {
      this.model.dirty = false;
    }
  };

  private remote(fn: () => void): void {
    this.model.transact(fn, false, REMOTE);
    this.remember();
  }

  private remember(): void {
    for (const ycell of this.ycells) {
      this.known.add(ycell);
    }
  }

  private cellJSON(doc: NotebookDoc, id: string): JsonObject {
    const cell = doc.cells[id];
    const type = str(cell.cell_type) || 'code';
    const json: JsonObject = {
      id,
      cell_type: type,
      source: str(cell.source),
      metadata: (plain(cell.metadata ?? {}) as JsonObject) ?? {}
    };
    if (type === 'code') {
      const state = this.runtime?.doc()?.cells?.[id];
      json.outputs = (plain(state?.outputs ?? []) as Json[]) ?? [];
      const count = plain(state?.execution_count);
      json.execution_count = typeof count === 'number' ? count : null;
    }
    return json;
  }

  // The model's `cells` list follows its Yjs array only when a transaction ends:
  // inside one, cells are found in the Yjs array itself.

  private ids(): string[] {
    return this.ycells.toArray().map(m => str(m.get('id')));
  }

  private ycell(id: string): Y.Map<unknown> | undefined {
    return this.ycells.toArray().find(m => m.get('id') === id);
  }

  /** Inserts a cell made from the documents at `index` of the Yjs array. */
  private insertFromDoc(doc: NotebookDoc, index: number, id: string): void {
    const cell = this.model.insertCell(index, this.cellJSON(doc, id) as never);
    if (cell.cell_type === 'code') {
      (cell as unknown as { executionState: string }).executionState = executionState(
        this.runtime?.doc()?.cells?.[id]
      );
    }
  }

  // ------------------------------------------------------------ automerge → JupyterLab

  /** Fills the (empty) model from the documents. */
  private load(): void {
    const doc = this.notebook.doc();
    if (!doc) {
      return;
    }
    this.remote(() => {
      const metadata = (plain(doc.metadata ?? {}) as JsonObject) ?? {};
      if (this.ymeta.get('metadata') === undefined) {
        // A new model has no metadata map yet; JupyterLab's loader makes it.
        this.model.fromJSON({ nbformat: 4, nbformat_minor: 5, metadata, cells: [] } as never);
      } else {
        this.model.setMetadata(metadata as never);
      }
      this.ycells.delete(0, this.ycells.length);
      cellOrder(doc).forEach((id, i) => this.insertFromDoc(doc, i, id));
    });
  }

  private onNotebook = ({ doc, patches }: { doc: NotebookDoc; patches: Patch[] }): void => {
    if (this.sending || this.disposed) {
      return;
    }
    const texts: Patch[] = [];
    const metadata = new Set<string>();
    const notebookMetadata = new Set<string>();
    let structure = false;
    for (const patch of patches) {
      const [root, id, field] = patch.path;
      if (root === 'cells' && field === 'source' && patch.path.length >= 3) {
        texts.push(patch);
      } else if (root === 'cells' && field === 'metadata' && patch.path.length >= 4) {
        metadata.add(`${String(id)}\u0000${String(patch.path[3])}`);
      } else if (root === 'metadata' && patch.path.length >= 2) {
        notebookMetadata.add(String(id));
      } else if (root === 'cells') {
        structure = true;
      }
    }
    this.remote(() => {
      // Cells (re)made now are made from the document as it is, text included.
      const made = structure ? this.reconcile(doc) : new Set<string>();
      for (const patch of texts) {
        const id = String(patch.path[1]);
        const ycell = made.has(id) ? undefined : this.ycell(id);
        if (ycell) {
          applyText(ycell.get('source') as Y.Text, patch, str(doc.cells[id]?.source));
        }
      }
      for (const key of metadata) {
        const [id, name] = key.split('\u0000');
        const ymetadata = made.has(id) ? undefined : (this.ycell(id)?.get('metadata') as Y.Map<unknown> | undefined);
        if (!ymetadata) {
          continue;
        }
        const value = doc.cells[id]?.metadata?.[name];
        if (value === undefined) {
          ymetadata.delete(name);
        } else if (!same(ymetadata.get(name), plain(value))) {
          ymetadata.set(name, plain(value));
        }
      }
      for (const name of notebookMetadata) {
        const value = doc.metadata?.[name];
        if (value === undefined) {
          this.model.deleteMetadata(name);
        } else if (!same(this.model.getMetadata(name), plain(value))) {
          this.model.setMetadata(name, plain(value) as never);
        }
      }
    });
  };

  /**
   * Brings the model's cells to the document's: removes cells gone or retyped,
   * adds new ones, and re-makes the fewest cells that put them in order (Yjs has
   * no move; JupyterLab moves the same way). Returns the ids of the cells made
   * anew, which already hold the document's text.
   */
  private reconcile(doc: NotebookDoc): Set<string> {
    const target = cellOrder(doc);
    const made = new Set<string>();
    const ycells = this.ycells.toArray();
    for (let i = ycells.length - 1; i >= 0; i--) {
      const wanted = doc.cells[str(ycells[i].get('id'))];
      if (!wanted || (str(wanted.cell_type) || 'code') !== str(ycells[i].get('cell_type'))) {
        this.ycells.delete(i, 1);
      }
    }
    const keep = stayPut(this.ids(), target);
    target.forEach((id, k) => {
      if (keep.has(id)) {
        return;
      }
      const at = this.ids().indexOf(id);
      if (at >= 0) {
        this.ycells.delete(at, 1);
      }
      const after = k > 0 ? this.ids().indexOf(target[k - 1]) : -1;
      this.insertFromDoc(doc, after + 1, id);
      made.add(id);
    });
    return made;
  }

  /** The model made the document's again: its cells, texts and metadata. */
  private restore(): void {
    const doc = this.notebook.doc();
    if (!doc) {
      return;
    }
    this.remote(() => {
      const made = this.reconcile(doc);
      for (const ycell of this.ycells.toArray()) {
        const id = str(ycell.get('id'));
        const cell = doc.cells[id];
        if (!cell || made.has(id)) {
          continue;
        }
        const text = ycell.get('source') as Y.Text;
        if (text.toString() !== str(cell.source)) {
          text.delete(0, text.length);
          text.insert(0, str(cell.source));
        }
        const ymetadata = ycell.get('metadata') as Y.Map<unknown>;
        const wanted = (plain(cell.metadata ?? {}) as JsonObject) ?? {};
        for (const key of [...ymetadata.keys()]) {
          if (!(key in wanted)) {
            ymetadata.delete(key);
          }
        }
        for (const [key, value] of Object.entries(wanted)) {
          if (!same(ymetadata.get(key), value)) {
            ymetadata.set(key, value);
          }
        }
      }
    });
  }

  private onRuntime = ({ doc, patches }: { doc: RuntimeDoc; patches: Patch[] }): void => {
    if (this.disposed) {
      return;
    }
    const touched = new Set<string>();
    let all = false;
    for (const patch of patches) {
      if (patch.path[0] === 'cells' && patch.path.length >= 2) {
        touched.add(String(patch.path[1]));
      } else if (patch.path[0] === 'cells') {
        all = true;
      }
    }
    this.remote(() => {
      for (const cell of this.model.cells) {
        if (cell.cell_type !== 'code' || (!all && !touched.has(cell.id))) {
          continue;
        }
        const state = doc.cells?.[cell.id];
        const code = cell as unknown as {
          executionState: string;
          execution_count: number | null;
        };
        updateOutputs(code as never, (plain(state?.outputs ?? []) as JsonObject[]) ?? []);
        const count = plain(state?.execution_count);
        code.execution_count = typeof count === 'number' ? count : null;
        code.executionState = executionState(state);
      }
    });
  };

  // ------------------------------------------------------------ JupyterLab → automerge

  private send(fn: (doc: NotebookDoc) => void): void {
    if (!this.canEdit) {
      return;
    }
    this.sending = true;
    try {
      this.notebook.change(fn);
    } finally {
      this.sending = false;
    }
  }

  private onCells = (events: Y.YEvent<any>[], transaction: Y.Transaction): void => {
    if (transaction.origin === REMOTE || this.disposed) {
      return;
    }
    if (!this.canEdit) {
      // A viewer's page shows the document, whatever was tried here.
      this.restore();
      return;
    }
    let structure = false;
    const texts: Y.YTextEvent[] = [];
    const metadata: Y.YMapEvent<unknown>[] = [];
    const types = new Set<Y.Map<unknown>>();
    for (const event of events) {
      const target = event.target as unknown;
      if (target === this.ycells) {
        structure = true;
        continue;
      }
      const parent = (event.target as Y.AbstractType<unknown>).parent as Y.Map<unknown> | null;
      if (parent && parent.get('source') === target) {
        texts.push(event as Y.YTextEvent);
      } else if (parent && parent.get('metadata') === target) {
        metadata.push(event as Y.YMapEvent<unknown>);
      } else if (
        (event as Y.YMapEvent<unknown>).keysChanged?.has('cell_type') &&
        (target as Y.Map<unknown>).get('source') !== undefined
      ) {
        types.add(target as Y.Map<unknown>);
      }
      // Outputs, execution counts and states are the kernel's.
    }
    if (!structure && texts.length === 0 && metadata.length === 0 && types.size === 0) {
      return;
    }
    this.send(doc => {
      for (const event of texts) {
        const ycell = (event.target as Y.Text).parent as Y.Map<unknown>;
        const id = str(ycell.get('id'));
        if (!doc.cells[id]) {
          continue;
        }
        let index = 0;
        for (const op of event.delta) {
          if (op.retain !== undefined) {
            index += op.retain;
          } else if (typeof op.insert === 'string') {
            A.splice(doc as never, ['cells', id, 'source'], index, 0, op.insert);
            index += op.insert.length;
          } else if (op.delete !== undefined) {
            A.splice(doc as never, ['cells', id, 'source'], index, op.delete);
          }
        }
      }
      for (const event of metadata) {
        const ycell = (event.target as Y.Map<unknown>).parent as Y.Map<unknown>;
        const cell = doc.cells[str(ycell.get('id'))];
        if (!cell) {
          continue;
        }
        cell.metadata ??= {};
        const ymetadata = event.target as Y.Map<unknown>;
        for (const key of event.keysChanged) {
          if (!ymetadata.has(key)) {
            delete cell.metadata[key];
          } else if (!same(plain(cell.metadata[key]), ymetadata.get(key))) {
            cell.metadata[key] = stored(ymetadata.get(key) as Json);
          }
        }
      }
      for (const ycell of types) {
        const cell = doc.cells[str(ycell.get('id'))];
        const type = str(ycell.get('cell_type'));
        if (cell && str(cell.cell_type) !== type) {
          cell.cell_type = new A.ImmutableString(type);
        }
      }
      if (structure) {
        this.sendStructure(doc);
      }
    });
    this.remember();
  };

  /** The model's cell list into the document: matched by id, positions only for
   * the cells out of order, a re-created cell's text by the smallest edit. */
  private sendStructure(doc: NotebookDoc): void {
    const ycells = this.ycells.toArray();
    const ids = this.ids();
    const present = new Set(ids);
    for (const id of Object.keys(doc.cells)) {
      if (!present.has(id)) {
        delete doc.cells[id];
      }
    }
    const current = cellOrder(doc).filter(id => present.has(id));
    const keep = stayPut(current, ids);
    // The position of the next cell that stays, for each index.
    const next: (string | null)[] = new Array(ids.length).fill(null);
    let upcoming: string | null = null;
    for (let i = ids.length - 1; i >= 0; i--) {
      next[i] = upcoming;
      if (keep.has(ids[i])) {
        upcoming = str(doc.cells[ids[i]].position);
      }
    }
    let previous: string | null = null;
    ycells.forEach((ycell, i) => {
      const id = ids[i];
      const type = str(ycell.get('cell_type')) || 'code';
      const source = String(ycell.get('source') ?? '');
      const metadata = plain(ycell.get('metadata') ?? {}) as JsonObject;
      const existing = doc.cells[id];
      if (existing && keep.has(id)) {
        previous = str(existing.position);
      } else {
        const position = positionBetween(previous, next[i]);
        previous = position;
        if (existing) {
          existing.position = new A.ImmutableString(position);
        } else {
          doc.cells[id] = {
            id: new A.ImmutableString(id),
            cell_type: new A.ImmutableString(type),
            position: new A.ImmutableString(position),
            source,
            metadata: stored(metadata) as Record<string, unknown>
          };
          return;
        }
      }
      // A cell JupyterLab made anew with an old id (moved, retyped): its type, text
      // and metadata, each changed only where they differ.
      if (!this.known.has(ycell)) {
        const cell = doc.cells[id];
        if (str(cell.cell_type) !== type) {
          cell.cell_type = new A.ImmutableString(type);
        }
        if (str(cell.source) !== source) {
          A.updateText(doc as never, ['cells', id, 'source'], source);
        }
        if (!same(plain(cell.metadata ?? {}), metadata)) {
          cell.metadata = stored(metadata) as Record<string, unknown>;
        }
      }
    });
  }

  private onMeta = (events: Y.YEvent<any>[], transaction: Y.Transaction): void => {
    if (transaction.origin === REMOTE || this.disposed) {
      return;
    }
    const changed = new Set<string>();
    for (const event of events) {
      const map = event.target as Y.Map<unknown>;
      if (map === this.ymeta.get('metadata')) {
        for (const key of (event as Y.YMapEvent<unknown>).keysChanged) {
          changed.add(key);
        }
      } else if (map === this.ymeta && (event as Y.YMapEvent<unknown>).keysChanged.has('metadata')) {
        for (const key of Object.keys(this.model.getMetadata())) {
          changed.add(key);
        }
      }
    }
    if (changed.size === 0) {
      return;
    }
    const metadata = this.model.getMetadata() as JsonObject;
    this.send(doc => {
      doc.metadata ??= {};
      for (const key of changed) {
        if (!(key in metadata)) {
          delete doc.metadata[key];
        } else if (!same(plain(doc.metadata[key]), metadata[key])) {
          doc.metadata[key] = stored(metadata[key]);
        }
      }
    });
  };
}

interface IOutputCell {
  getOutputs(): JsonObject[];
  updateOutputs(start: number, end: number, outputs: JsonObject[], origin?: unknown): void;
  appendStreamOutput(index: number, text: string, origin?: unknown): void;
}

/**
 * A code cell's outputs brought to `wanted` the way a kernel's messages would
 * change them: the outputs both share are left alone, a stream that grew gets
 * only its new text, and the rest is replaced. JupyterLab renders a cell's
 * outputs from these steps, so replacing them all on every stream message would
 * redraw everything and, for streams, lose text.
 */
function updateOutputs(cell: IOutputCell, wanted: JsonObject[]): void {
  const shown = cell.getOutputs();
  let common = 0;
  while (common < shown.length && common < wanted.length && same(shown[common], wanted[common])) {
    common++;
  }
  if (common === shown.length && common === wanted.length) {
    return;
  }
  const before = shown[common];
  const after = wanted[common];
  if (
    common === shown.length - 1 &&
    before?.output_type === 'stream' &&
    after?.output_type === 'stream' &&
    before.name === after.name
  ) {
    const had = [before.text ?? ''].flat().join('');
    const has = [after.text ?? ''].flat().join('');
    if (has.startsWith(had) && has.length > had.length) {
      cell.appendStreamOutput(common, has.slice(had.length));
      common++;
    }
  }
  if (common < shown.length || common < wanted.length) {
    cell.updateOutputs(common, shown.length, wanted.slice(common));
  }
}

/** One automerge patch of a cell's text applied to its Yjs text. */
function applyText(text: Y.Text, patch: Patch, whole: string): void {
  const depth = 3;
  if (patch.path.length === depth) {
    // The whole text put anew.
    if (text.toString() !== whole) {
      text.delete(0, text.length);
      text.insert(0, whole);
    }
    return;
  }
  const index = patch.path[depth];
  if (typeof index !== 'number') {
    return;
  }
  if (patch.action === 'splice') {
    text.insert(index, String(patch.value ?? ''));
  } else if (patch.action === 'del') {
    text.delete(index, patch.length ?? 1);
  } else if (patch.action === 'insert') {
    text.insert(index, patch.values.map(v => str(v)).join(''));
  }
}
