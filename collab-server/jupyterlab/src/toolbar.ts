/**
 * A live notebook's toolbar item for its shared kernel on the server: the
 * kernel's status (from the runtime document, as every page sees it), interrupt
 * and restart. JupyterLab's own kernel items (which would speak of a kernel of
 * this Jupyter server) are hidden for live notebooks (style/index.css).
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { DocumentRegistry } from '@jupyterlab/docregistry';
import { refreshIcon, stopIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';
import { NotebookBinding, RuntimeDoc } from './binding';
import { idOf } from './drive';
import { LiveSession } from './live';

export class KernelBar extends Widget {
  private binding: NotebookBinding | null = null;
  private status: HTMLElement;
  private buttons: HTMLButtonElement[] = [];

  constructor(
    private live: LiveSession,
    context: DocumentRegistry.IContext<DocumentRegistry.IModel>
  ) {
    super();
    this.addClass('ferrolab-kernel-bar');
    const interrupt = this.button('ferrolab-interrupt', 'Interrupt the shared kernel', stopIcon.element());
    const restart = this.button(
      'ferrolab-restart',
      'Restart the shared kernel (everyone on this notebook loses its variables)',
      refreshIcon.element()
    );
    this.status = document.createElement('span');
    this.status.className = 'ferrolab-kernel-status';
    this.status.textContent = 'Shared kernel: connecting';
    this.node.append(interrupt, restart, this.status);
    interrupt.addEventListener('click', () => void this.act('interrupt'));
    restart.addEventListener('click', () => void this.restart());
    const pending = live.binding(idOf(context.path));
    if (!pending) {
      this.status.textContent = 'Shared kernel: not connected';
      return;
    }
    pending.then(
      binding => {
        if (this.isDisposed) {
          return;
        }
        this.binding = binding;
        for (const b of this.buttons) {
          b.disabled = !binding.canEdit;
        }
        binding.runtime?.on('change', this.showStatus);
        this.showStatus();
      },
      error => {
        this.status.textContent = `Shared kernel: ${(error as Error).message}`;
      }
    );
  }

  dispose(): void {
    this.binding?.runtime?.off('change', this.showStatus);
    super.dispose();
  }

  private button(name: string, title: string, icon: HTMLElement): HTMLButtonElement {
    const button = document.createElement('button');
    button.className = `jp-ToolbarButtonComponent jp-mod-minimal jp-Button ${name}`;
    button.title = title;
    button.disabled = true;
    button.append(icon);
    this.buttons.push(button);
    return button;
  }

  private showStatus = (): void => {
    const doc = this.binding?.runtime?.doc() as RuntimeDoc | undefined;
    const status = doc?.kernel?.status ? String(doc.kernel.status) : 'not started';
    this.status.textContent = `Shared kernel: ${status}`;
    this.status.dataset.status = status;
    this.status.title = doc?.kernel?.message ? String(doc.kernel.message) : 'the notebook\'s kernel on the collaboration server';
  };

  /** Asks, then restarts the shared kernel for everyone. */
  async restart(): Promise<void> {
    const answer = await showDialog({
      title: 'Restart the shared kernel?',
      body: 'Everyone on this notebook loses the kernel\'s variables.',
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Restart' })]
    });
    if (answer.button.accept) {
      await this.act('restart');
    }
  }

  /** Interrupts or restarts the shared kernel (restart without asking). */
  async act(action: 'interrupt' | 'restart'): Promise<void> {
    if (!this.binding) {
      return;
    }
    try {
      await this.live.kernel(this.binding, action);
    } catch (error) {
      void showErrorMessage(`The kernel could not ${action}`, (error as Error).message);
    }
  }
}
