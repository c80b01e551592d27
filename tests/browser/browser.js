// Playwright (playwright-core) driving Debian's Chromium, headless, against a
// collab server that serves the built workspace.
import { chromium } from "playwright-core";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
export const CHROMIUM = process.env.FERROLAB_CHROMIUM || "/usr/bin/chromium";
export const WEB_DIR = process.env.FERROLAB_WEB_DIR || path.resolve(here, "../../collab-server/web/dist");
export const ARTIFACTS = process.env.FERROLAB_ARTIFACTS || path.resolve(here, "artifacts");

export async function launch() {
  if (!fs.existsSync(path.join(WEB_DIR, "index.html"))) {
    throw new Error(`the workspace is not built in ${WEB_DIR}; run make test (or npm run build in collab-server/web)`);
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // A closed network: Chromium's own background connections only fail slowly.
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
}

/** A signed-in page (its own browser context: own storage, own IndexedDB). */
export async function signedIn(browser, server, token, route = "/") {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  const sep = route.includes("?") ? "&" : "?";
  await page.goto(`${server.base}${route}${sep}token=${encodeURIComponent(token)}`);
  page.errors = errors;
  return page;
}

/** The text a cell's editor shows. */
export function editorText(page, cellId) {
  return page.evaluate((id) => {
    const lines = document.querySelectorAll(`.cell[data-id="${id}"] .cm-content .cm-line`);
    // Without the remote cursors' name labels, which are widgets inside the line.
    return Array.from(lines, (line) => {
      const copy = line.cloneNode(true);
      for (const label of copy.querySelectorAll(".remote-caret")) label.remove();
      return copy.textContent;
    }).join("\n");
  }, cellId);
}

/** Cell ids in the order the page shows them. */
export function shownCells(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll("main.notebook > .cell"), (c) => c.dataset.id));
}

export async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Types `count` markers (`${prefix}0;` …) where the page's cursor is, a little
 * apart, as a person would; returns them. */
export async function typeMarkers(page, prefix, count) {
  const typed = [];
  for (let i = 0; i < count; i++) {
    const marker = `${prefix}${i};`;
    await page.keyboard.type(marker);
    typed.push(marker);
    await new Promise((resolve) => setTimeout(resolve, 15 + ((i * 7) % 20)));
  }
  return typed;
}
