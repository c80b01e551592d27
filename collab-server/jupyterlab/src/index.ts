/**
 * ferrolab's JupyterLab extension: a "Shared notebooks" panel listing the
 * collaboration server's notebooks; a notebook opened from it is edited live with
 * everyone else on it and runs on its shared kernel on the server.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { showErrorMessage } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { EditorExtensionRegistry, IEditorExtensionRegistry } from '@jupyterlab/codemirror';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import {
  INotebookCellExecutor,
  INotebookModel,
  NotebookPanel,
  runCell
} from '@jupyterlab/notebook';
import { notebookIcon } from '@jupyterlab/ui-components';
import { DisposableDelegate, IDisposable } from '@lumino/disposable';
import { FerrolabDrive, idOf } from './drive';
import { LiveSession } from './live';
import { CursorLayer, PeopleBar } from './presence';
import { KernelBar } from './toolbar';

/** The page's one live session, shared by the plugins below. */
let session: LiveSession | null = null;
function live(app: JupyterFrontEnd): LiveSession {
  session ??= new LiveSession(app.serviceManager.serverSettings);
  return session;
}

/** The shared-kernel toolbar item of each live notebook panel. */
const kernelBars = new WeakMap<object, KernelBar>();

/** Whether a document path is one of the collaboration server's notebooks. */
const isLive = (path: string) => path.startsWith('ferrolab:');

const panel: JupyterFrontEndPlugin<void> = {
  id: '@ferrolab/jupyterlab:shared-notebooks',
  description: "The collaboration server's notebooks in a panel of their own, opened live",
  autoStart: true,
  requires: [IFileBrowserFactory],
  activate: (app: JupyterFrontEnd, factory: IFileBrowserFactory) => {
    const drive = new FerrolabDrive(live(app));
    // Connected from the start, so that opening a notebook waits for no handshake.
    void live(app)
      .presence()
      .catch(() => undefined);
    app.serviceManager.contents.addDrive(drive);
    const browser = factory.createFileBrowser('ferrolab-shared-notebooks', {
      driveName: drive.name
    });
    browser.id = 'ferrolab-shared-notebooks';
    browser.title.icon = notebookIcon;
    browser.title.caption = 'Shared notebooks (ferrolab collaboration server)';
    app.shell.add(browser, 'left', { rank: 150 });

    // JupyterLab's I, I and 0, 0 (interrupt, restart) speak to the Jupyter
    // server's kernel; in a live notebook they drive the shared one instead (a
    // more specific selector wins).
    const bar = () => {
      const current = app.shell.currentWidget;
      return current ? kernelBars.get(current) : undefined;
    };
    app.commands.addCommand('ferrolab:interrupt-kernel', {
      label: 'Interrupt the shared kernel',
      isEnabled: () => bar() !== undefined,
      execute: () => bar()?.act('interrupt')
    });
    app.commands.addCommand('ferrolab:restart-kernel', {
      label: 'Restart the shared kernel…',
      isEnabled: () => bar() !== undefined,
      execute: () => bar()?.restart()
    });
    const commandMode = '.ferrolab-live [data-jp-kernel-user]:not(.jp-mod-readWrite) :focus:not(:read-write)';
    app.commands.addKeyBinding({ command: 'ferrolab:interrupt-kernel', keys: ['I', 'I'], selector: commandMode });
    app.commands.addKeyBinding({ command: 'ferrolab:restart-kernel', keys: ['0', '0'], selector: commandMode });

    // A live notebook runs on the server's shared kernel: no kernel of this
    // Jupyter server is started for it, and its toolbar shows the shared one.
    app.docRegistry.addWidgetExtension('Notebook', {
      createNew(
        widget: NotebookPanel,
        context: DocumentRegistry.IContext<INotebookModel>
      ): IDisposable {
        if (!isLive(context.path)) {
          return new DisposableDelegate(() => undefined);
        }
        context.sessionContext.kernelPreference = {
          shouldStart: false,
          canStart: false,
          autoStartDefault: false
        };
        widget.addClass('ferrolab-live');
        const id = idOf(context.path);
        const bar = new KernelBar(live(app), context);
        widget.toolbar.addItem('ferrolab-kernel', bar);
        kernelBars.set(widget, bar);
        const people = new PeopleBar(live(app).presence(), () => id);
        widget.toolbar.addItem('ferrolab-people', people);
        void live(app)
          .presence()
          .then(p => p.update({ notebook: id, cell: null }), () => undefined);
        // A viewer's cells cannot be edited here (the server would refuse the
        // change anyway); marked so without writing `editable` into the notebook.
        const lock = () => {
          for (const cell of widget.content.widgets) {
            cell.syncEditable = false;
            cell.readOnly = true;
          }
        };
        void live(app)
          .binding(idOf(context.path))
          ?.then(binding => {
            // Who ran each cell, on its prompt (the runtime document records it).
            const runners = () => {
              const cells = binding.runtime?.doc()?.cells ?? {};
              for (const cell of widget.content.widgets) {
                const prompt = cell.inputArea?.promptNode;
                const by = cells[cell.model.id]?.ran_by;
                if (prompt) {
                  prompt.title = by ? `Run by ${String(by)}` : '';
                }
              }
            };
            binding.runtime?.on('change', runners);
            context.model.cells.changed.connect(runners);
            widget.disposed.connect(() => binding.runtime?.off('change', runners));
            runners();
            if (!binding.canEdit && !widget.isDisposed) {
              widget.addClass('ferrolab-viewer');
              lock();
              context.model.cells.changed.connect(lock);
            }
          }, () => undefined);
        // Deleted by someone while open here: the server takes no more changes,
        // so the tab closes, saying so, rather than let typing go nowhere.
        const unwatch = live(app).watchDeletion(id, () => {
          void showErrorMessage(
            'Notebook deleted',
            `"${context.localPath}" was deleted from the collaboration server while it was open here. ` +
              'The server takes no more changes to it, so its tab is closed.'
          );
          widget.dispose();
        });
        return new DisposableDelegate(() => {
          unwatch();
          bar.dispose();
          people.dispose();
          void live(app)
            .presence()
            .then(p => {
              if (p.me.notebook === id) {
                p.update({ notebook: null, cell: null });
              }
            }, () => undefined);
        });
      }
    });
  }
};

/**
 * Runs a live notebook's code cells on its shared kernel on the server (and any
 * other notebook's as JupyterLab does). JupyterLab's own executor is disabled in
 * package.json so that this one is used.
 */
/** Collaborators' cursors in a live notebook's cell editors, and this page's
 * cursor sent to them. */
const cursorsPlugin: JupyterFrontEndPlugin<void> = {
  id: '@ferrolab/jupyterlab:cursors',
  description: "Collaborators' cursors in live notebooks' cells",
  autoStart: true,
  requires: [IEditorExtensionRegistry],
  activate: (app: JupyterFrontEnd, registry: IEditorExtensionRegistry) => {
    const cursors = new CursorLayer(() => live(app).presence());
    registry.addExtension({
      name: 'ferrolab:presence',
      factory: options => {
        // A notebook cell's text lives in its notebook's Yjs document.
        const cell = options.model.sharedModel as unknown as { id?: string; ymodel?: { doc?: object | null } };
        const notebook = cell.ymodel?.doc;
        if (!notebook || typeof cell.id !== 'string') {
          return null;
        }
        return EditorExtensionRegistry.createImmutableExtension(
          cursors.extension({
            notebook: () => live(app).bound(notebook)?.id ?? null,
            cell: () => (typeof cell.id === 'string' ? cell.id : null)
          })
        );
      }
    });
  }
};

const executor: JupyterFrontEndPlugin<INotebookCellExecutor> = {
  id: '@ferrolab/jupyterlab:cell-executor',
  description: "Runs live notebooks' cells on their shared kernel on the server",
  autoStart: true,
  provides: INotebookCellExecutor,
  activate: (app: JupyterFrontEnd): INotebookCellExecutor => ({
    async runCell(options: INotebookCellExecutor.IRunCellOptions): Promise<boolean> {
      const binding = live(app).bound((options.notebook.sharedModel as unknown as { ydoc: object }).ydoc);
      const { cell } = options;
      if (!binding || cell.model.type !== 'code') {
        return runCell(options);
      }
      if (!binding.canEdit) {
        void showErrorMessage(
          'Read only',
          "You can read this notebook but not run it: this Jupyter server's ferrolab token is a viewer's."
        );
        return false;
      }
      options.onCellExecutionScheduled({ cell });
      try {
        await live(app).kernel(binding, 'execute', [cell.model.id]);
        options.onCellExecuted({ cell, success: true });
        return true;
      } catch (error) {
        void showErrorMessage('The cell could not be run', (error as Error).message);
        options.onCellExecuted({ cell, success: false });
        return false;
      }
    }
  })
};

export default [panel, cursorsPlugin, executor];
