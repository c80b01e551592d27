/**
 * The collaboration server's notebooks as a JupyterLab drive (`ferrolab:`).
 *
 * Everything goes through this Jupyter server's `ferrolab` extension, which holds
 * the person's token and adds it to each call, so the browser never sees it. This
 * first slice opens a notebook as it is on the server, read-only; editing it live
 * with the workspace is the next slice (docs/jupyterlab-live.md).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { Contents, ServerConnection } from '@jupyterlab/services';
import { ISignal, Signal } from '@lumino/signaling';

/** An entry of the server's notebook index (`GET /api/notebooks`). */
export interface INotebookEntry {
  id: string;
  title: string;
  created: string;
  updated: string;
}

/** What the server extension answers when something went wrong. */
interface IErrorReply {
  error?: { code?: string; message?: string };
}

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
  private _fileChanged = new Signal<Contents.IDrive, Contents.IChangedArgs>(this);
  private _isDisposed = false;

  constructor(settings?: ServerConnection.ISettings) {
    this.serverSettings = settings ?? ServerConnection.makeSettings();
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

  private url(...parts: string[]): string {
    return URLExt.join(this.serverSettings.baseUrl, 'ferrolab', 'api', ...parts);
  }

  /** GETs a JSON answer from the server extension, or throws what went wrong. */
  private async fetchJSON<T>(url: string): Promise<T> {
    const response = await ServerConnection.makeRequest(url, {}, this.serverSettings);
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

  async get(localPath: string, options?: Contents.IFetchOptions): Promise<Contents.IModel> {
    if (localPath === '' || localPath === '/') {
      const { notebooks } = await this.fetchJSON<{ notebooks: INotebookEntry[] }>(
        this.url('notebooks')
      );
      const content = notebooks.map(entry => this.fileModel(entry, null));
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
    const entry = await this.fetchJSON<INotebookEntry>(this.url('notebooks', id));
    const content =
      options?.content === false
        ? null
        : await this.fetchJSON<unknown>(this.url('notebooks', id, 'ipynb'));
    return { ...this.fileModel(entry, content), path: localPath };
  }

  private fileModel(entry: INotebookEntry, content: unknown): Contents.IModel {
    return {
      name: `${entry.title}.ipynb`,
      path: pathOf(entry),
      type: 'notebook',
      // Live editing is not built yet: what opens is the server's notebook as it
      // is, and saving here would only diverge from it.
      writable: false,
      created: entry.created,
      last_modified: entry.updated,
      mimetype: 'application/x-ipynb+json',
      content,
      format: content === null ? null : 'json'
    };
  }

  async getDownloadUrl(localPath: string): Promise<string> {
    return this.url('notebooks', idOf(localPath), 'ipynb');
  }

  private refuse(what: string): Promise<never> {
    return Promise.reject(
      new Error(
        `${what} is not possible in JupyterLab yet: the collaboration server's notebooks open read-only here; change them in the workspace`
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

  save(): Promise<Contents.IModel> {
    return this.refuse('Saving a notebook');
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
