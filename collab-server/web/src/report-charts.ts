// Interactive charts for `ferrolab export --interactive`. Built into one script
// (dist/report-charts.js) that the export inlines into the report, so the chart
// library is never loaded from the network.
//
// Each chart in a report is `<div class="output chart" data-vega-lite="{spec}">`
// (or `data-vega`) around its static SVG. With scripts allowed this draws the
// spec with vega-embed and hides the static picture; with scripts off, or if
// drawing fails, the static SVG stays. The report's Content-Security-Policy lets
// only this script run (by its hash) and still forbids every network load, so:
// - expressions go through vega-interpreter (no `eval`/`new Function`);
// - the loader refuses every URL but `data:` (decoded here: `fetch` is blocked);
// - links from the `href` channel open only through vega's own URL sanitiser;
// - no actions menu (it offers "Open in Vega Editor", a network round trip);
// - the spec's own `usermeta.embedOptions` are dropped: vega-embed would let
//   them override all of the above.

import embed, { type VisualizationSpec } from "vega-embed";
import { offlineEmbedOptions } from "./vega-offline";

export interface Drawn {
  drawn: number;
  failed: number;
}

/** Draws every chart in the document; resolves when all have drawn or failed. */
export async function drawCharts(root: ParentNode = document): Promise<Drawn> {
  const charts = Array.from(root.querySelectorAll<HTMLElement>("[data-vega-lite], [data-vega]"));
  const result: Drawn = { drawn: 0, failed: 0 };
  await Promise.all(
    charts.map(async (chart) => {
      const mode = chart.hasAttribute("data-vega-lite") ? "vega-lite" : "vega";
      try {
        const spec = JSON.parse(chart.getAttribute(`data-${mode}`) ?? "null") as VisualizationSpec;
        if (!spec || typeof spec !== "object") throw new Error("the chart's spec is not an object");
        const usermeta = (spec as { usermeta?: unknown }).usermeta;
        if (usermeta && typeof usermeta === "object") delete (usermeta as { embedOptions?: unknown }).embedOptions;
        const target = document.createElement("div");
        target.className = "interactive";
        chart.append(target);
        const errors: string[] = [];
        try {
          const { view, finalize } = await embed(target, spec, { mode, ...offlineEmbedOptions(errors) });
          await view.runAsync();
          if (errors.length > 0) {
            finalize();
            throw new Error(errors[0]);
          }
        } catch (error) {
          target.remove();
          throw error;
        }
        chart.querySelector<HTMLElement>(":scope > .picture")?.setAttribute("hidden", "");
        chart.dataset.drawn = "interactive";
        result.drawn += 1;
      } catch (error) {
        chart.dataset.drawn = "static";
        chart.title = `this chart is shown as a picture: ${error instanceof Error ? error.message : error}`;
        result.failed += 1;
      }
    }),
  );
  document.documentElement.dataset.charts = `${result.drawn} drawn, ${result.failed} static`;
  return result;
}

void drawCharts();
