// The model registry page: registered models, their versions with aliases,
// reviews and the server's evaluations, and the audit log with its hash chain checked
// by the server. Read-only here; reviews and promotions go through %review,
// %promote or MLflow's client, where the policy applies.

import type { Session } from "./session";
import { header } from "./nav";

interface Alias { alias: string; version: string }
interface Model { name: string; description?: string; aliases?: Alias[]; last_updated_timestamp?: number; latest_versions?: { version: string }[] }
interface Version { name: string; version: string; run_id?: string; user_id?: string; creation_timestamp?: number; aliases?: string[]; source?: string }
interface Details {
  reviews?: { reviewer: string; decision: string; comment: string; timestamp: number }[];
  evaluation_runs?: { run_id: string; pass_rate: number | null }[];
  server_evaluations?: { run_id: string; pass_rate: number; tests: number }[];
}
interface Audit {
  entries: { seq: number; timestamp: number; actor: string; action: string; model: string; version: string; after: unknown }[];
  chain_verified: boolean;
  chain_broken_at?: number;
}

const time = (ms?: number) => (ms ? new Date(ms).toLocaleString() : "");
const text = (tag: string, content: string, className = "") => {
  const el = document.createElement(tag);
  el.textContent = content;
  if (className) el.className = className;
  return el;
};

export async function showModels(session: Session) {
  const { api } = session;
  document.title = "Models · ferrolab";
  session.root.replaceChildren(header(session, "models"));
  const main = document.createElement("main");
  main.className = "models";
  main.innerHTML = `<div class="model-list"></div><div class="model-detail"><p class="muted">Pick a model.</p></div>`;
  session.root.append(main);
  const list = main.querySelector(".model-list") as HTMLElement;
  const detail = main.querySelector(".model-detail") as HTMLElement;

  const found = await api.mlflow<{ registered_models?: Model[] }>("registered-models/search", undefined, { max_results: "1000" });
  const models = found.registered_models ?? [];
  if (models.length === 0) list.append(text("p", "No registered models yet: %register makes them.", "muted empty"));
  for (const model of models) {
    const button = document.createElement("button");
    button.className = "model";
    button.dataset.model = model.name;
    button.append(text("strong", model.name), text("span", ` ${model.latest_versions?.length ?? 0} version(s)`, "muted"));
    for (const a of model.aliases ?? []) button.append(text("span", `${a.alias} → v${a.version}`, "alias"));
    button.addEventListener("click", () => void open(model));
    list.append(button);
  }

  const open = async (model: Model) => {
    for (const b of list.querySelectorAll("button.model")) b.classList.toggle("active", (b as HTMLElement).dataset.model === model.name);
    detail.replaceChildren(text("h2", model.name));
    if (model.description) detail.append(text("p", model.description));
    try {
      const versions = (await api.mlflow<{ model_versions?: Version[] }>("model-versions/search", undefined, {
        filter: `name='${model.name.replace(/'/g, "''")}'`,
        max_results: "1000",
      })).model_versions ?? [];
      versions.sort((a, b) => Number(b.version) - Number(a.version));
      const table = document.createElement("table");
      table.className = "grid versions";
      table.innerHTML = "<thead><tr><th>Version</th><th>Aliases</th><th>Author</th><th>Created</th><th>Reviews</th><th>Evaluation</th><th>Run</th></tr></thead>";
      const body = table.createTBody();
      for (const v of versions) {
        const details = (await api.mlflow<{ model_version: Details }>("ferrolab/model-versions/details", undefined, { name: v.name, version: v.version })).model_version;
        const row = body.insertRow();
        row.dataset.version = v.version;
        row.insertCell().textContent = `v${v.version}`;
        const aliases = row.insertCell();
        for (const a of v.aliases ?? []) aliases.append(text("span", a, "alias"));
        row.insertCell().textContent = v.user_id ?? "";
        row.insertCell().textContent = time(v.creation_timestamp);
        const reviews = row.insertCell();
        for (const r of details.reviews ?? []) {
          const chip = text("span", `${r.reviewer}: ${r.decision}`, `review ${r.decision}`);
          chip.title = r.comment;
          reviews.append(chip);
        }
        // Only the server's own evaluations count for promotion; runs linked by hand
        // are named in the tooltip, not as a pass rate anyone could have typed in.
        const evaluation = row.insertCell();
        const evaluated = details.server_evaluations ?? [];
        evaluation.textContent = evaluated.length
          ? `server: ${(Math.max(...evaluated.map((e) => e.pass_rate)) * 100).toFixed(0)}% (best of ${evaluated.length})`
          : "not evaluated by the server";
        const linked = (details.evaluation_runs ?? []).filter((e) => !evaluated.some((s) => s.run_id === e.run_id));
        if (linked.length) evaluation.title = `linked by hand, not counted: ${linked.map((e) => e.run_id.slice(0, 8)).join(", ")}`;
        row.insertCell().textContent = v.run_id ? v.run_id.slice(0, 8) : "";
      }
      detail.append(table);
      const audit = await api.mlflow<Audit>("ferrolab/audit/get", undefined, { name: model.name });
      detail.append(text("h3", "Audit log"));
      detail.append(text("p", audit.chain_verified ? "hash chain verified" : `hash chain broken at entry ${audit.chain_broken_at}`,
        audit.chain_verified ? "chain ok" : "chain broken"));
      const log = document.createElement("table");
      log.className = "grid audit";
      log.innerHTML = "<thead><tr><th>#</th><th>When</th><th>Who</th><th>What</th><th>Version</th></tr></thead>";
      const logBody = log.createTBody();
      for (const e of [...audit.entries].reverse()) {
        const row = logBody.insertRow();
        row.insertCell().textContent = String(e.seq);
        row.insertCell().textContent = time(e.timestamp);
        row.insertCell().textContent = e.actor;
        row.insertCell().textContent = e.action;
        row.insertCell().textContent = e.version;
      }
      detail.append(log);
    } catch (error) {
      detail.append(text("p", (error as Error).message, "error"));
    }
  };
  if (models[0]) await open(models[0]);
  return () => {};
}
