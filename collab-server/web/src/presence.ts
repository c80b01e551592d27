// Who is here and where their cursor is, over automerge-repo's ephemeral
// messages on the workspace index document (every client has it open). Nothing
// here is stored; a peer not heard from for a few seconds is gone.

import type { DocHandle } from "@automerge/automerge-repo";
import type { User } from "./api";

export interface Presence {
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

export function colorFor(seed: string): string {
  let hash = 0;
  for (const c of seed) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return `hsl(${hash % 360} 70% 42%)`;
}

export class PresenceChannel {
  readonly me: Presence;
  private peers = new Map<string, { presence: Presence; at: number }>();
  private listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval>;
  private pending: ReturnType<typeof setTimeout> | null = null;

  constructor(
    private handle: DocHandle<unknown>,
    user: User,
  ) {
    this.me = {
      name: user.name,
      role: user.role,
      color: colorFor(user.token_id + user.name),
      notebook: null,
      cell: null,
      anchor: 0,
      head: 0,
    };
    handle.on("ephemeral-message", ({ senderId, message }) => {
      const p = message as Partial<Presence> & { kind?: string };
      if (p?.kind !== "ferrolab.presence" || typeof p.name !== "string") return;
      this.peers.set(senderId, {
        presence: {
          name: p.name,
          role: String(p.role ?? ""),
          color: typeof p.color === "string" ? p.color : colorFor(p.name),
          notebook: typeof p.notebook === "string" ? p.notebook : null,
          cell: typeof p.cell === "string" ? p.cell : null,
          anchor: Number(p.anchor) || 0,
          head: Number(p.head) || 0,
        },
        at: Date.now(),
      });
      this.emit();
    });
    this.timer = setInterval(() => {
      this.send();
      const before = this.peers.size;
      for (const [id, p] of this.peers) if (Date.now() - p.at > GONE_MS) this.peers.delete(id);
      if (this.peers.size !== before) this.emit();
    }, HEARTBEAT_MS);
    this.send();
  }

  /** Updates where I am; sent at once, at most every 40 ms. */
  update(change: Partial<Presence>) {
    Object.assign(this.me, change);
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = null;
      this.send();
    }, 40);
  }

  private send() {
    this.handle.broadcast({ kind: "ferrolab.presence", ...this.me });
  }

  others(): Presence[] {
    return [...this.peers.values()].map((p) => p.presence);
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit() {
    for (const l of this.listeners) l();
  }

  close() {
    clearInterval(this.timer);
  }
}

export function renderPeople(el: HTMLElement, me: Presence, others: Presence[]) {
  el.replaceChildren();
  const seen = new Set<string>();
  for (const p of [me, ...others]) {
    const key = `${p.name}/${p.color}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const chip = document.createElement("span");
    chip.className = "person";
    chip.style.setProperty("--person", p.color);
    chip.textContent = p === me ? `${p.name} (you)` : p.name;
    chip.title = p.role;
    el.append(chip);
  }
}
