// Real JupyterLab from .venv for the browser tests: a server of the test's own (its
// own config, runtime and settings folders, no news or update checks) that answers
// before the test goes on, and stops with it.
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, waitFor } from "../collab/helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
export const JUPYTER = process.env.FERROLAB_JUPYTER || path.resolve(here, "../../.venv/bin/jupyter");

/** Writes a JupyterLab setting for `plugin` (e.g. `notebook-extension/tracker`) under `dir/settings`. */
export function labSetting(dir, plugin, values) {
  const file = path.join(dir, "settings/@jupyterlab", `${plugin}.jupyterlab-settings`);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, JSON.stringify(values));
}

/** Starts `jupyter lab` serving `root` (by default an empty `dir/root`), with `env` added, its files in `dir`; the
 * log is `dir/lab.log`. With `expose`, the page has JupyterLab's application
 * object as `window.jupyterapp`, for a test to read the models behind the page. */
export async function startLab({ dir, root = null, env = {}, expose = false }) {
  if (root === null) {
    root = path.join(dir, "root");
    fs.mkdirSync(root, { recursive: true });
  }
  const port = await freePort();
  const token = "lab-token";
  // The network is closed: no news poll, no update check.
  labSetting(dir, "apputils-extension/notification", { fetchNews: "false", checkForUpdates: false });
  const log = fs.openSync(path.join(dir, "lab.log"), "a");
  const proc = spawn(JUPYTER, [
    "lab", "--no-browser", "--ip=127.0.0.1", `--port=${port}`, "--allow-root",
    `--IdentityProvider.token=${token}`, `--ServerApp.root_dir=${root}`,
    `--LabApp.user_settings_dir=${path.join(dir, "settings")}`,
    "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ...(expose ? ["--LabApp.expose_app_in_browser=True"] : []),
  ], {
    env: {
      ...process.env,
      JUPYTER_CONFIG_DIR: path.join(dir, "config"),
      JUPYTER_RUNTIME_DIR: path.join(dir, "runtime"),
      ...env,
    },
    stdio: ["ignore", log, log],
  });
  const base = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.exitCode !== null) throw new Error(`JupyterLab exited; see ${dir}/lab.log`);
    try {
      return (await fetch(`${base}/api/status?token=${token}`)).ok;
    } catch {
      return false;
    }
  }, "JupyterLab to answer", 60000);
  return {
    proc,
    port,
    base,
    token,
    dir,
    // SIGTERM, then SIGKILL after 15 s: once, after a test had relayed a sync
    // socket through the ferrolab server extension, JupyterLab never finished its
    // shutdown and the suite waited forever (docs/jupyterlab-live.md).
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      const exited = new Promise((resolve) => proc.once("exit", resolve));
      proc.kill("SIGTERM");
      const late = setTimeout(() => proc.kill("SIGKILL"), 15000);
      await exited;
      clearTimeout(late);
    },
  };
}
