/**
 * The collaboration server's notebooks as a JupyterLab drive (`ferrolab:`).
 *
 * Everything goes through this Jupyter server's `ferrolab` extension, which holds
 * the person's token and adds it to each call, so the browser never sees it. A
 * notebook opened from here is live: its model is bound to the notebook's
 * automerge documents (`LiveSession`), so there is nothing to load or save as a
 * file; the server keeps every change.
 */
import { Contents, ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';
import { fetchJSON, INotebookEntry, LiveSession } from './live';

/** What a live notebook's "hash" is: it never differs from what is open. */
const LIVE_HASH = 'live';

/** A notebook's id from its path in the drive: `TITLE--ID.ipynb`. */
export function idOf(path: string): string {
  const name = path.replace(/\.ipynb$/, '');
  const at = name.lastIndexOf('--');
  const id = at >= 0 ? name.slice(at + 2) : name;
  if (!/^[A-Za-z0-9]+$/.test(id)) {
    throw new Error(`'${path}' is not a notebook of the collaboration server`);
  }
  return id;
}

/** A notebook's path in the drive: its title (made safe for a path) and its id. */
export function pathOf(entry: INotebookEntry): string {
  const title = entry.title.replace(/[\\/:*?"<>|]+/g, ' ').trim() || 'notebook';
  return `${title}--${entry.id}.ipynb`;
}

export class FerrolabDrive implements Contents.IDrive {
  readonly name = 'ferrolab';
  readonly serverSettings: ServerConnection.ISettings;
  readonly live: LiveSession;
  /** Notebooks open here are live models of the server's documents. */
  readonly sharedModelFactory: Contents.ISharedFactory;
  private _fileChanged = new Signal<Contents.IDrive, Contents.IChangedArgs>(this);
  private _isDisposed = false;

  constructor(live: LiveSession) {
    this.live = live;
    this.serverSettings = live.settings;
    this.sharedModelFactory = {
      collaborative: true,
      createNew: options =>
        options.contentType === 'notebook' ? this.live.openNotebook(idOf(options.path)) : undefined
    };
  }

  get fileChanged(): ISignal<Contents.IDrive, Contents.IChangedArgs> {
    return this._fileChanged;
  }

  get isDisposed(): boolean {
    return this._isDisposed;
  }

  dispose(): void {
    if (this._isDisposed) {
      return;
    }
    this._isDisposed = true;
    Signal.clearData(this);
  }

  private fetchJSON<T>(url: string): Promise<T> {
    return fetchJSON<T>(this.serverSettings, url);
  }

  async get(localPath: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    if (localPath === '' || localPath === '/') {
      const { notebooks } = await this.fetchJSON<{ notebooks: INotebookEntry[] }>(
        this.live.url('notebooks')
      );
      const content = notebooks.map(entry => this.fileModel(entry, null, false));
      return {
        name: '',
        path: '',
        type: 'directory',
        writable: false,
        created: '',
        last_modified: '',
        mimetype: '',
        content,
        format: 'json'
      };
    }
    const id = idOf(localPath);
    const [entry, user] = await Promise.all([
      this.fetchJSON<INotebookEntry>(this.live.url('notebooks', id)),
      this.live.user()
    ]);
    const writable = user.role !== 'viewer';
    const binding = this.live.binding(id);
    if (binding) {
      // Opened live: the model fills itself from the documents (the binding);
      // there is no file content to load over it.
      await binding;
      return { ...this.fileModel(entry, null, writable), path: localPath };
    }
    const content =
      options?.content === false
        ? null
        : await this.fetchJSON<unknown>(this.live.url('notebooks', id, 'ipynb'));
    return { ...this.fileModel(entry, content, writable), path: localPath };
  }

  private fileModel(entry: INotebookEntry, content: unknown, writable: boolean): Contents.IModel {
    return {
      name: `${entry.title}.ipynb`,
      path: pathOf(entry),
      type: 'notebook',
      writable,
      created: entry.created,
      last_modified: entry.updated,
      mimetype: 'application/x-ipynb+json',
      content,
      format: content === null ? null : 'json',
      hash: LIVE_HASH,
      hash_algorithm: 'ferrolab'
    };
  }

  async getDownloadUrl(localPath: string): Promise<string> {
    return this.live.url('notebooks', idOf(localPath), 'ipynb');
  }

  /** Saving a live notebook is a no-op that succeeds: the server already keeps
   * every change it acknowledged. */
  async save(localPath: string): Promise<Contents.IModel> {
    const id = idOf(localPath);
    if (!this.live.binding(id)) {
      return this.refuse('Saving a notebook that is not open live');
    }
    const [entry, user] = await Promise.all([
      this.fetchJSON<INotebookEntry>(this.live.url('notebooks', id)),
      this.live.user()
    ]);
    return { ...this.fileModel(entry, null, user.role !== 'viewer'), path: localPath };
  }

  private refuse(what: string): Promise<never> {
    return Promise.reject(
      new Error(
        `${what} is not possible from JupyterLab yet; do it in the ferrolab workspace`
      )
    );
  }

  newUntitled(): Promise<Contents.IModel> {
    return this.refuse('Creating a notebook');
  }

  delete(): Promise<void> {
    return this.refuse('Deleting a notebook');
  }

  rename(): Promise<Contents.IModel> {
    return this.refuse('Renaming a notebook');
  }

  copy(): Promise<Contents.IModel> {
    return this.refuse('Copying a notebook');
  }

  createCheckpoint(): Promise<Contents.ICheckpointModel> {
    return this.refuse('A checkpoint');
  }

  async listCheckpoints(): Promise<Contents.ICheckpointModel[]> {
    return [];
  }

  restoreCheckpoint(): Promise<void> {
    return this.refuse('Restoring a checkpoint');
  }

  deleteCheckpoint(): Promise<void> {
    return this.refuse('Deleting a checkpoint');
  }
}
