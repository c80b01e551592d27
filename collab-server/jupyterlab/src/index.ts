/**
 * ferrolab's JupyterLab extension: a "Shared notebooks" panel in the left sidebar
 * listing the collaboration server's notebooks, through this Jupyter server's
 * `ferrolab_jupyterlab` extension.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { IFileBrowserFactory } from '@jupyterlab/filebrowser';
import { notebookIcon } from '@jupyterlab/ui-components';
import { FerrolabDrive } from './drive';

const plugin: JupyterFrontEndPlugin<void> = {
  id: '@ferrolab/jupyterlab:shared-notebooks',
  description: "The collaboration server's notebooks in a panel of their own",
  autoStart: true,
  requires: [IFileBrowserFactory],
  activate: (app: JupyterFrontEnd, factory: IFileBrowserFactory) => {
    const drive = new FerrolabDrive(app.serviceManager.serverSettings);
    app.serviceManager.contents.addDrive(drive);
    const browser = factory.createFileBrowser('ferrolab-shared-notebooks', {
      driveName: drive.name
    });
    browser.id = 'ferrolab-shared-notebooks';
    browser.title.icon = notebookIcon;
    browser.title.caption = 'Shared notebooks (ferrolab collaboration server)';
    app.shell.add(browser, 'left', { rank: 150 });
  }
};

export default plugin;
