/**
 * Who is on a live notebook and where their cursor is: the same presence the
 * workspace uses (automerge-repo ephemeral messages on the workspace index
 * document, which every client has open), so JupyterLab users show in the
 * workspace and workspace users' cursors show in JupyterLab's cell editors.
 * Nothing here is stored; a peer not heard from for a few seconds is gone.
 */
import type { DocHandle } from '@automerge/automerge-repo';
import { StateEffect, StateField, type Extension } from '@codemirror/state';
import {
  Decoration,
  type DecorationSet,
  EditorView,
  ViewPlugin,
  type ViewUpdate,
  WidgetType
} from '@codemirror/view';
import { Widget } from '@lumino/widgets';

export interface IPresence {
  name: string;
  role: string;
  color: string;
  /** The notebook open, if any; the cell and selection (UTF-16 offsets) in it. */
  notebook: string | null;
  cell: string | null;
  anchor: number;
  head: number;
}

const HEARTBEAT_MS = 2000;
const GONE_MS = 7000;

/** A person's colour, the same in the workspace and here. */
export function colorFor(seed: string): string {
  let hash = 0;
  for (const c of seed) {
    hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  }
  return `hsl(${hash % 360} 70% 42%)`;
}

export class PresenceChannel {
  readonly me: IPresence;
  private peers = new Map<string, { presence: IPresence; at: number }>();
  private listeners = new Set<() => void>();
  private pending: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private handle: DocHandle<unknown>,
    user: { name: string; role: string; token_id: string }
  ) {
    this.me = {
      name: user.name,
      role: user.role,
      color: colorFor(user.token_id + user.name),
      notebook: null,
      cell: null,
      anchor: 0,
      head: 0
    };
    handle.on('ephemeral-message', ({ senderId, message }) => {
      const p = message as Partial<IPresence> & { kind?: string };
      if (p?.kind !== 'ferrolab.presence' || typeof p.name !== 'string') {
        return;
      }
      this.peers.set(senderId, {
        presence: {
          name: p.name,
          role: String(p.role ?? ''),
          color: typeof p.color === 'string' ? p.color : colorFor(p.name),
          notebook: typeof p.notebook === 'string' ? p.notebook : null,
          cell: typeof p.cell === 'string' ? p.cell : null,
          anchor: Number(p.anchor) || 0,
          head: Number(p.head) || 0
        },
        at: Date.now()
      });
      this.emit();
    });
    // For as long as the page is open.
    setInterval(() => {
      this.send();
      const before = this.peers.size;
      for (const [id, p] of this.peers) {
        if (Date.now() - p.at > GONE_MS) {
          this.peers.delete(id);
        }
      }
      if (this.peers.size !== before) {
        this.emit();
      }
    }, HEARTBEAT_MS);
    this.send();
  }

  /** Updates where I am; sent at once, at most every 40 ms. */
  update(change: Partial<IPresence>): void {
    Object.assign(this.me, change);
    if (this.pending) {
      return;
    }
    this.pending = setTimeout(() => {
      this.pending = null;
      this.send();
    }, 40);
  }

  private send(): void {
    this.handle.broadcast({ kind: 'ferrolab.presence', ...this.me });
  }

  others(): IPresence[] {
    return [...this.peers.values()].map(p => p.presence);
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(): void {
    for (const l of this.listeners) {
      l();
    }
  }
}

// ------------------------------------------------------------ cursors in cell editors

interface IRemoteCursor {
  from: number;
  to: number;
  head: number;
  color: string;
  name: string;
}

const setRemote = StateEffect.define<IRemoteCursor[]>();

class CaretWidget extends WidgetType {
  constructor(
    readonly color: string,
    readonly name: string
  ) {
    super();
  }

  eq(other: CaretWidget): boolean {
    return other.color === this.color && other.name === this.name;
  }

  toDOM(): HTMLElement {
    const caret = document.createElement('span');
    caret.className = 'ferrolab-remote-caret';
    caret.style.borderColor = this.color;
    const label = document.createElement('span');
    label.className = 'ferrolab-remote-name';
    label.style.background = this.color;
    label.textContent = this.name;
    caret.append(label);
    return caret;
  }

  ignoreEvent(): boolean {
    return true;
  }
}

const remoteCursors = StateField.define<DecorationSet>({
  create: () => Decoration.none,
  update(value, tr) {
    value = value.map(tr.changes);
    for (const effect of tr.effects) {
      if (!effect.is(setRemote)) {
        continue;
      }
      const length = tr.state.doc.length;
      const clamp = (n: number) => Math.max(0, Math.min(length, n));
      const ranges = effect.value.flatMap(c => {
        const from = clamp(c.from);
        const to = clamp(c.to);
        const out = [
          Decoration.widget({ widget: new CaretWidget(c.color, c.name), side: 1 }).range(
            clamp(c.head)
          )
        ];
        if (to > from) {
          out.push(
            Decoration.mark({
              attributes: { style: `background: color-mix(in srgb, ${c.color} 25%, transparent)` }
            }).range(from, to)
          );
        }
        return out;
      });
      value = Decoration.set(ranges, true);
    }
    return value;
  },
  provide: field => EditorView.decorations.from(field)
});

/** Where a cell editor is: its notebook's id (once bound) and its cell's id. */
export interface ICellPlace {
  notebook(): string | null;
  cell(): string | null;
}

/**
 * Draws the others' cursors into every live cell editor of the page: one
 * subscription to the presence channel and one pass over the editors per update,
 * whatever the number of cells (a presence message comes with every keystroke of
 * every collaborator).
 */
export class CursorLayer {
  private editors = new Map<EditorView, { place: ICellPlace; shown: string }>();
  /** The channel, once there is one. */
  presence: PresenceChannel | null = null;
  private subscribed = false;
  private queued = false;

  constructor(private channel: () => Promise<PresenceChannel>) {}

  /** A cell editor's presence: its selection goes out while it has the focus,
   * and the others' cursors in its cell are drawn in it. */
  extension(place: ICellPlace): Extension {
    const layer = this;
    const plugin = ViewPlugin.fromClass(
      class {
        constructor(private view: EditorView) {
          layer.add(view, place);
        }

        update(update: ViewUpdate): void {
          const notebook = place.notebook();
          const cell = place.cell();
          if (!notebook || !cell || !(update.selectionSet || update.focusChanged || update.docChanged)) {
            return;
          }
          // Where the cursor is, while this editor has the focus; and when a
          // collaborator's edit moves it (the selection is mapped through their
          // change), where it is now, focused or not: the page may be in the
          // background while others type above the cursor.
          const me = layer.presence?.me;
          const mine = me?.notebook === notebook && me?.cell === cell;
          if (!update.view.hasFocus && !(mine && update.docChanged)) {
            return;
          }
          const { anchor, head } = update.state.selection.main;
          void layer.channel().then(presence => presence.update({ notebook, cell, anchor, head }));
        }

        destroy(): void {
          layer.editors.delete(this.view);
        }
      }
    );
    return [remoteCursors, plugin];
  }

  private add(view: EditorView, place: ICellPlace): void {
    this.editors.set(view, { place, shown: '' });
    if (this.subscribed) {
      this.queue();
      return;
    }
    this.subscribed = true;
    this.channel().then(
      presence => {
        this.presence = presence;
        presence.subscribe(() => this.queue());
        this.queue();
      },
      () => {
        this.subscribed = false;
      }
    );
  }

  /** Drawn outside whatever editor update is running. */
  private queue(): void {
    if (this.queued) {
      return;
    }
    this.queued = true;
    setTimeout(() => {
      this.queued = false;
      void this.channel().then(presence => this.draw(presence), () => undefined);
    }, 0);
  }

  private draw(presence: PresenceChannel): void {
    const byCell = new Map<string, IRemoteCursor[]>();
    for (const p of presence.others()) {
      if (p.notebook === null || p.cell === null) {
        continue;
      }
      const key = `${p.notebook}\u0000${p.cell}`;
      const list = byCell.get(key) ?? [];
      list.push({
        from: Math.min(p.anchor, p.head),
        to: Math.max(p.anchor, p.head),
        head: p.head,
        color: p.color,
        name: p.name
      });
      byCell.set(key, list);
    }
    for (const [view, editor] of this.editors) {
      const notebook = editor.place.notebook();
      const list = notebook === null ? undefined : byCell.get(`${notebook}\u0000${editor.place.cell()}`);
      const shown = list ? JSON.stringify(list) : '';
      if (shown === editor.shown) {
        continue;
      }
      editor.shown = shown;
      view.dispatch({ effects: setRemote.of(list ?? []) });
    }
  }
}

/** The people on a live notebook, as chips in its toolbar (me first). */
export class PeopleBar extends Widget {
  private unsubscribe: (() => void) | null = null;

  constructor(channel: Promise<PresenceChannel>, notebook: () => string | null) {
    super();
    this.addClass('ferrolab-people');
    channel.then(
      presence => {
        if (this.isDisposed) {
          return;
        }
        const draw = () => this.draw(presence, notebook());
        this.unsubscribe = presence.subscribe(draw);
        draw();
      },
      () => undefined
    );
  }

  private shown = '';

  private draw(presence: PresenceChannel, notebook: string | null): void {
    const here = presence.others().filter(p => notebook !== null && p.notebook === notebook);
    // Presence comes with every keystroke; the chips change far less often.
    const key = JSON.stringify([presence.me, ...here].map(p => [p.name, p.color, p.role]));
    if (key === this.shown) {
      return;
    }
    this.shown = key;
    const seen = new Set<string>();
    const chips: HTMLElement[] = [];
    for (const p of [presence.me, ...here]) {
      const key = `${p.name}/${p.color}`;
      if (seen.has(key)) {
        continue;
      }
      seen.add(key);
      const chip = document.createElement('span');
      chip.className = 'ferrolab-person';
      chip.style.background = p.color;
      chip.textContent = p === presence.me ? `${p.name} (you)` : p.name;
      chip.title = p.role;
      chips.push(chip);
    }
    this.node.replaceChildren(...chips);
  }

  dispose(): void {
    this.unsubscribe?.();
    super.dispose();
  }
}
