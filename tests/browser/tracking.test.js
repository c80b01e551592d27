// The runs and models pages: runs listed and compared with charts that grow
// live while a run logs; the registry with aliases, reviews and the audit log.
import { test } from "node:test";
import assert from "node:assert/strict";
import { api, createToken, startServer, tempDir, waitFor } from "../collab/helpers.js";
import { WEB_DIR, launch, screenshot, signedIn } from "./browser.js";

async function mlflow(server, token, endpoint, body) {
  const res = await api(server, token, "POST", `/api/2.0/${endpoint}`, body);
  if (res.status !== 200) throw new Error(`${endpoint}: ${res.status} ${res.text}`);
  return res.json;
}

test("runs compare with live charts; the registry shows versions, reviews and the audit log", async () => {
  const data = tempDir();
  const alice = createToken(data, "editor", "alice");
  const bob = createToken(data, "editor", "bob");
  const server = await startServer(data, { args: ["--web", WEB_DIR] });
  const browser = await launch();
  try {
    const { experiment_id } = await mlflow(server, alice, "mlflow/experiments/create", { name: "finetune" });
    const runs = [];
    for (const [name, lr] of [["lr-high", "0.01"], ["lr-low", "0.001"]]) {
      const { run } = await mlflow(server, alice, "mlflow/runs/create", { experiment_id, run_name: name, start_time: Date.now() });
      const now = Date.now();
      await mlflow(server, alice, "mlflow/runs/log-batch", {
        run_id: run.info.run_id,
        params: [{ key: "lr", value: lr }, { key: "rank", value: "8" }],
        metrics: [0, 1, 2].map((step) => ({ key: "loss", value: 3 - step * (name === "lr-high" ? 0.9 : 0.4), timestamp: now, step })),
      });
      runs.push(run.info.run_id);
    }
    const page = await signedIn(browser, server, bob, "/runs");
    for (const id of runs) await page.waitForSelector(`tr[data-run="${id}"]`);
    for (const id of runs) await page.check(`tr[data-run="${id}"] input[type=checkbox]`);
    // Each run's data arrives on its own (one live document a run): wait for both.
    await waitFor(async () => (await page.locator('figure[data-metric="loss"] polyline').count()) === 2,
      "one line per run in the loss chart");
    await page.waitForSelector(".params tr.differs th");
    assert.equal(await page.textContent(".params tr.differs th"), "lr", "the differing param is marked");
    const line = 'figure[data-metric="loss"] polyline[data-series="lr-high"]';
    const pointsBefore = await page.getAttribute(line, "points");

    // The run keeps logging: the chart grows without a reload.
    await mlflow(server, alice, "mlflow/runs/log-metric", { run_id: runs[0], key: "loss", value: 0.05, timestamp: Date.now(), step: 3 });
    await waitFor(async () => {
      const points = await page.getAttribute(line, "points");
      return points !== pointsBefore && points.trim().split(" ").length === 4;
    }, "the chart to show the new point");
    await screenshot(page, "runs");

    // The registry: a version with an alias, a review by someone else, the audit log.
    await mlflow(server, alice, "mlflow/registered-models/create", { name: "support-bot" });
    await mlflow(server, alice, "mlflow/model-versions/create", { name: "support-bot", source: "runs:/x/adapter", run_id: runs[0] });
    await mlflow(server, bob, "ferrolab/reviews/create", { name: "support-bot", version: "1", decision: "approve", comment: "looks good" });
    await mlflow(server, alice, "mlflow/registered-models/alias", { name: "support-bot", alias: "staging", version: "1" });
    await mlflow(server, alice, "ferrolab/model-versions/link-evaluation", { name: "support-bot", version: "1", run_id: runs[0] });
    await page.click('.pages a[data-page="models"]');
    await page.waitForSelector('button.model[data-model="support-bot"]');
    await page.waitForSelector('tr[data-version="1"] .alias:text("staging")');
    assert.match(await page.textContent('tr[data-version="1"]'), /bob: approve/);
    // A run linked by hand is no evaluation: the page says the server has not evaluated it.
    const evaluation = page.locator('tr[data-version="1"] td').nth(5);
    assert.equal(await evaluation.textContent(), "not evaluated by the server");
    assert.match(await evaluation.getAttribute("title"), /linked by hand, not counted/);
    await page.waitForSelector(".chain.ok");
    assert.ok((await page.locator(".audit tbody tr").count()) >= 3, "registration, review and alias are in the log");
    await screenshot(page, "models");
    assert.deepEqual(page.errors, []);
  } finally {
    await browser.close();
    await server.stop();
  }
});
