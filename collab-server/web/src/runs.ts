// The runs page: every experiment's runs (MLflow's API on the same token),
// selected runs compared side by side, and their metric charts, live: each run
// has an automerge document (tag `ferrolab.doc`) whose latest metrics the server
// updates as the run logs, so a chart grows while the run trains.

import type { DocHandle } from "@automerge/automerge-repo";
import type { Session } from "./session";
import { lineChart, type Series } from "./chart";
import { header } from "./nav";

interface KV { key: string; value: string }
interface Metric { key: string; value: number; step: number; timestamp: number }
interface Run {
  info: { run_id: string; run_name?: string; experiment_id: string; status: string; start_time?: number; end_time?: number; user_id?: string };
  data: { metrics?: Metric[]; params?: KV[]; tags?: KV[] };
}
interface RunDoc { metrics?: Record<string, { value?: unknown; step?: unknown }>; status?: unknown }

const PALETTE = ["#1a73e8", "#d93025", "#188038", "#e37400", "#9334e6", "#12b5cb"];
const MAX_COMPARED = PALETTE.length;
const POLL_MS = 3000;

const tag = (run: Run, key: string) => run.data.tags?.find((t) => t.key === key)?.value;
const time = (ms?: number) => (ms ? new Date(ms).toLocaleString() : "");
const num = (v: number) => (Number.isInteger(v) ? String(v) : v.toPrecision(4));

export async function showRuns(session: Session) {
  const { api, repo } = session;
  document.title = "Runs · ferrolab";
  session.root.replaceChildren(header(session, "runs"));
  const main = document.createElement("main");
  main.className = "runs";
  main.innerHTML = `
    <div class="run-list"><table class="grid"><thead></thead><tbody></tbody></table><p class="empty muted" hidden>No runs yet: %track start, %finetune or %%prompt_test make them.</p></div>
    <div class="compare"><p class="muted">Select runs to compare them.</p></div>`;
  session.root.append(main);
  const $ = <T extends HTMLElement>(s: string) => main.querySelector(s) as T;

  let runs: Run[] = [];
  const experiments = new Map<string, string>();
  const selected = new Set<string>();
  const history = new Map<string, Map<string, [number, number][]>>(); // run → metric → points
  const docs = new Map<string, { handle: DocHandle<RunDoc>; off: () => void }>();
  let closed = false;

  const refresh = async () => {
    try {
      const ex = await api.mlflow<{ experiments?: { experiment_id: string; name: string }[] }>("experiments/search", { max_results: 1000 });
      for (const e of ex.experiments ?? []) experiments.set(e.experiment_id, e.name);
      const found = await api.mlflow<{ runs?: Run[] }>("runs/search", {
        experiment_ids: [...experiments.keys()],
        max_results: 200,
        order_by: ["attributes.start_time DESC"],
      });
      runs = found.runs ?? [];
      renderList();
      // A new run's document tag arrives just after the run: follow it once it is there.
      for (const run of compared()) await follow(run);
    } catch (error) {
      session.status(`runs: ${(error as Error).message}`, "error");
    }
  };

  const metricKeys = () => {
    const counts = new Map<string, number>();
    for (const r of runs) for (const m of r.data.metrics ?? []) counts.set(m.key, (counts.get(m.key) ?? 0) + 1);
    return [...counts.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).slice(0, 4).map(([k]) => k);
  };

  const renderList = () => {
    const keys = metricKeys();
    $("thead").innerHTML = "";
    const head = document.createElement("tr");
    for (const label of ["", "Run", "Experiment", "Status", "User", "Started", ...keys]) {
      const th = document.createElement("th");
      th.textContent = label;
      head.append(th);
    }
    $("thead").append(head);
    $(".empty").hidden = runs.length > 0;
    $("tbody").replaceChildren(
      ...runs.map((run) => {
        const tr = document.createElement("tr");
        tr.dataset.run = run.info.run_id;
        const box = document.createElement("input");
        box.type = "checkbox";
        box.checked = selected.has(run.info.run_id);
        box.addEventListener("change", () => {
          if (box.checked && selected.size >= MAX_COMPARED) {
            box.checked = false;
            session.status(`Compare at most ${MAX_COMPARED} runs at once.`, "error");
            return;
          }
          if (box.checked) selected.add(run.info.run_id);
          else selected.delete(run.info.run_id);
          void renderCompare();
        });
        const cells = [
          box,
          run.info.run_name || run.info.run_id.slice(0, 8),
          experiments.get(run.info.experiment_id) ?? run.info.experiment_id,
          run.info.status,
          run.info.user_id ?? "",
          time(run.info.start_time),
          ...keys.map((k) => {
            const m = run.data.metrics?.find((x) => x.key === k);
            return m ? num(m.value) : "";
          }),
        ];
        for (const c of cells) {
          const td = document.createElement("td");
          if (typeof c === "string") td.textContent = c;
          else td.append(c);
          tr.append(td);
        }
        tr.querySelector("td:nth-child(4)")?.setAttribute("data-status", run.info.status);
        return tr;
      }),
    );
  };

  const loadHistory = async (run: Run) => {
    const byKey = history.get(run.info.run_id) ?? new Map<string, [number, number][]>();
    history.set(run.info.run_id, byKey);
    for (const m of run.data.metrics ?? []) {
      if (byKey.has(m.key)) continue;
      const h = await api.mlflow<{ metrics?: Metric[] }>("metrics/get-history", undefined, { run_id: run.info.run_id, metric_key: m.key });
      byKey.set(m.key, (h.metrics ?? []).map((p) => [Number(p.step), Number(p.value)]));
    }
  };

  /** Follows the run's document: each new latest value is a new point. */
  const follow = async (run: Run) => {
    const url = tag(run, "ferrolab.doc");
    if (!url || docs.has(run.info.run_id)) return;
    const handle = (await repo.find(url as never)) as unknown as DocHandle<RunDoc>;
    const onChange = () => {
      const metrics = handle.doc()?.metrics ?? {};
      const byKey = history.get(run.info.run_id) ?? new Map();
      history.set(run.info.run_id, byKey);
      let grew = false;
      for (const [key, m] of Object.entries(metrics)) {
        const step = Number(m.step ?? 0);
        const value = Number(m.value);
        const points = byKey.get(key) ?? [];
        const last = points[points.length - 1];
        if (!last || step > last[0] || (step === last[0] && value !== last[1])) {
          if (last && step === last[0]) points[points.length - 1] = [step, value];
          else points.push([step, value]);
          byKey.set(key, points);
          grew = true;
        }
      }
      if (grew) drawCharts();
    };
    handle.on("change", onChange);
    docs.set(run.info.run_id, { handle, off: () => handle.off("change", onChange) });
  };

  const compared = () => runs.filter((r) => selected.has(r.info.run_id));

  const drawCharts = () => {
    const charts = main.querySelector(".charts");
    if (!charts) return;
    const list = compared();
    const keys = [...new Set(list.flatMap((r) => [...(history.get(r.info.run_id)?.keys() ?? [])]))].sort();
    charts.replaceChildren(
      ...keys.map((key) => {
        const series: Series[] = list.map((r, i) => ({
          name: r.info.run_name || r.info.run_id,
          color: PALETTE[i % PALETTE.length],
          points: history.get(r.info.run_id)?.get(key) ?? [],
        }));
        const figure = document.createElement("figure");
        figure.dataset.metric = key;
        figure.append(lineChart(key, series));
        return figure;
      }),
    );
  };

  const renderCompare = async () => {
    const list = compared();
    for (const [id, d] of docs) {
      if (!selected.has(id)) {
        d.off();
        docs.delete(id);
      }
    }
    const box = $(".compare");
    if (list.length === 0) {
      box.innerHTML = '<p class="muted">Select runs to compare them.</p>';
      return;
    }
    box.innerHTML = `<div class="legend"></div><table class="grid params"></table><div class="charts"></div>`;
    const legend = box.querySelector(".legend") as HTMLElement;
    list.forEach((r, i) => {
      const chip = document.createElement("span");
      chip.className = "person";
      chip.style.setProperty("--person", PALETTE[i % PALETTE.length]);
      chip.textContent = r.info.run_name || r.info.run_id.slice(0, 8);
      legend.append(chip);
    });
    const table = box.querySelector(".params") as HTMLTableElement;
    const head = table.insertRow();
    for (const label of ["", ...list.map((r) => r.info.run_name || r.info.run_id.slice(0, 8))]) {
      const th = document.createElement("th");
      th.textContent = label;
      head.append(th);
    }
    const rows: [string, (r: Run) => string][] = [];
    const paramKeys = [...new Set(list.flatMap((r) => (r.data.params ?? []).map((p) => p.key)))].sort();
    for (const key of paramKeys) rows.push([key, (r) => r.data.params?.find((p) => p.key === key)?.value ?? ""]);
    const metricKeysAll = [...new Set(list.flatMap((r) => (r.data.metrics ?? []).map((m) => m.key)))].sort();
    for (const key of metricKeysAll) {
      rows.push([key, (r) => {
        const m = r.data.metrics?.find((x) => x.key === key);
        return m ? num(m.value) : "";
      }]);
    }
    for (const [key, value] of rows) {
      const row = table.insertRow();
      const values = list.map(value);
      if (new Set(values).size > 1) row.className = "differs";
      const th = document.createElement("th");
      th.textContent = key;
      row.append(th);
      for (const v of values) row.insertCell().textContent = v;
    }
    try {
      await Promise.all(list.map(loadHistory));
      await Promise.all(list.map(follow));
    } catch (error) {
      session.status(`metrics: ${(error as Error).message}`, "error");
    }
    drawCharts();
  };

  await refresh();
  const timer = setInterval(() => {
    if (!closed && document.visibilityState === "visible") void refresh();
  }, POLL_MS);
  return () => {
    closed = true;
    clearInterval(timer);
    for (const d of docs.values()) d.off();
  };
}
