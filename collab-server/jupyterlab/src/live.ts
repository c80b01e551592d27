/**
 * This page's connection to the collaboration server's live documents: one
 * automerge repository syncing over this Jupyter server's `/ferrolab/sync` socket
 * (which adds the person's token on the server side), and the bindings of the
 * notebooks open in JupyterLab to their documents.
 */
import type { DocHandle } from '@automerge/automerge-repo';
import { Repo } from '@automerge/automerge-repo';
import { WebSocketClientAdapter } from '@automerge/automerge-repo-network-websocket';
import { YNotebook } from '@jupyter/ydoc';
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { NotebookBinding, NotebookDoc, RuntimeDoc } from './binding';
import { PresenceChannel } from './presence';

/** Who this Jupyter server acts as on the collaboration server. */
export interface IUser {
  name: string;
  role: string;
  token_id: string;
}

/** A notebook's entry on the collaboration server (`GET /api/notebooks/{id}`). */
export interface INotebookEntry {
  id: string;
  title: string;
  created: string;
  updated: string;
  notebook?: string;
  runtime?: string;
}

/** The workspace's index document: its notebooks by id. */
interface IIndexDoc {
  notebooks?: Record<string, unknown>;
}

/** What the server extension answers when something went wrong. */
interface IErrorReply {
  error?: { code?: string; message?: string };
}

/** The server's answer to a call, or an error saying what went wrong. */
export async function fetchJSON<T>(
  settings: ServerConnection.ISettings,
  url: string,
  init: RequestInit = {}
): Promise<T> {
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message =
      (body as IErrorReply | null)?.error?.message ??
      `the collaboration server answered ${response.status}`;
    throw new Error(message);
  }
  return body as T;
}

export class LiveSession {
  readonly settings: ServerConnection.ISettings;
  private _repo: Repo | null = null;
  private _workspace: Promise<{ index: string; user: IUser }> | null = null;
  private _index: Promise<DocHandle<IIndexDoc>> | null = null;
  private _presence: Promise<PresenceChannel> | null = null;
  private bindings = new Map<string, Promise<NotebookBinding>>();
  private byModel = new WeakMap<object, NotebookBinding>();
  /** Kernel calls per notebook, sent one after another so that cells queue in
   * the order they were run. */
  private calls = new Map<string, Promise<unknown>>();

  constructor(settings: ServerConnection.ISettings) {
    this.settings = settings;
  }

  /** A URL of the server extension's API. */
  url(...parts: string[]): string {
    return URLExt.join(this.settings.baseUrl, 'ferrolab', 'api', ...parts);
  }

  /** The workspace this Jupyter server's token opens: its index document and
   * who the token is (asked once). */
  private workspace(): Promise<{ index: string; user: IUser }> {
    if (!this._workspace) {
      this._workspace = fetchJSON<{ index: string; user: IUser }>(this.settings, this.url('workspace'));
      this._workspace.catch(() => (this._workspace = null));
    }
    return this._workspace;
  }

  /** Who this Jupyter server acts as. */
  async user(): Promise<IUser> {
    return (await this.workspace()).user;
  }

  /** The workspace's index document (the notebooks there are). */
  private index(): Promise<DocHandle<IIndexDoc>> {
    if (!this._index) {
      this._index = this.workspace().then(
        async ({ index }) => (await this.repo.find(index as never)) as unknown as DocHandle<IIndexDoc>
      );
      this._index.catch(() => (this._index = null));
    }
    return this._index;
  }

  /** This page's presence, shared with the workspace's pages. */
  presence(): Promise<PresenceChannel> {
    if (!this._presence) {
      this._presence = Promise.all([this.index(), this.user()]).then(
        ([handle, user]) => new PresenceChannel(handle as DocHandle<unknown>, user)
      );
      this._presence.catch(() => (this._presence = null));
    }
    return this._presence;
  }

  /** Calls `deleted` once notebook `id` leaves the workspace's index (someone
   * deleted it: the server takes no more changes to it). Returns the unwatch. */
  watchDeletion(id: string, deleted: () => void): () => void {
    let stop = () => undefined as void;
    let stopped = false;
    this.index().then(
      handle => {
        if (stopped) {
          return;
        }
        const check = () => {
          const notebooks = handle.doc()?.notebooks;
          if (notebooks && !(id in notebooks)) {
            stop();
            deleted();
          }
        };
        handle.on('change', check);
        stop = () => handle.off('change', check);
        check();
      },
      () => undefined
    );
    return () => {
      stopped = true;
      stop();
    };
  }

  get repo(): Repo {
    if (!this._repo) {
      let url = URLExt.join(this.settings.wsUrl, 'ferrolab', 'sync');
      // As JupyterLab's own sockets do where the page cannot rely on its cookie.
      if (this.settings.appendToken && this.settings.token) {
        url += `?token=${encodeURIComponent(this.settings.token)}`;
      }
      // `as never`: the adapter's event-emitter types resolve through a different
      // declaration file than the repository's under this module resolution.
      this._repo = new Repo({ network: [new WebSocketClientAdapter(url, 1000) as never] });
    }
    return this._repo;
  }

  /** The binding of notebook `id`, when it is open here. */
  binding(id: string): Promise<NotebookBinding> | undefined {
    return this.bindings.get(id);
  }

  /** The binding of a notebook open here, by its model's Yjs document, if it is
   * a live one. */
  bound(ydoc: object | null | undefined): NotebookBinding | undefined {
    return ydoc ? this.byModel.get(ydoc) : undefined;
  }

  /** Runs cells on notebook `id`'s shared kernel, or interrupts or restarts it,
   * once the server has this page's changes. */
  kernel(binding: NotebookBinding, action: 'execute' | 'interrupt' | 'restart', cells?: string[]): Promise<unknown> {
    const previous = this.calls.get(binding.id) ?? Promise.resolve();
    const call = previous
      .catch(() => undefined)
      .then(async () => {
        await binding.acknowledged(this.repo);
        return fetchJSON<unknown>(this.settings, this.url('notebooks', binding.id, 'kernel', action), {
          method: 'POST',
          body: action === 'execute' ? JSON.stringify({ cells }) : ''
        });
      });
    this.calls.set(binding.id, call);
    return call;
  }

  /** A notebook model for notebook `id`, filled from its live documents and kept
   * in step with them until the model is disposed. */
  openNotebook(id: string): YNotebook {
    const model = new YNotebook({ disableDocumentWideUndoRedo: true });
    const binding = this.bind(id, model);
    this.bindings.set(id, binding);
    binding.catch(() => undefined);
    model.disposed.connect(() => {
      if (this.bindings.get(id) === binding) {
        this.bindings.delete(id);
      }
      void binding.then(b => b.dispose(), () => undefined);
    });
    return model;
  }

  private async bind(id: string, model: YNotebook): Promise<NotebookBinding> {
    const [entry, user] = await Promise.all([
      fetchJSON<INotebookEntry>(this.settings, this.url('notebooks', id)),
      this.user()
    ]);
    if (!entry.notebook) {
      throw new Error(`the collaboration server gave no document for notebook ${id}`);
    }
    // Both documents at once: each is a round trip to the server.
    const [notebook, runtime] = (await Promise.all([
      this.repo.find(entry.notebook as never),
      entry.runtime ? this.repo.find(entry.runtime as never) : null
    ])) as unknown as [DocHandle<NotebookDoc>, DocHandle<RuntimeDoc> | null];
    if (model.isDisposed) {
      throw new Error('the notebook was closed while it opened');
    }
    const binding = new NotebookBinding({
      id,
      model,
      notebook,
      runtime,
      canEdit: user.role !== 'viewer'
    });
    this.byModel.set(model.ydoc, binding);
    return binding;
  }
}
