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
import { expressionInterpreter } from "vega-interpreter";
import { loader as vegaLoader, logger as vegaLogger, Warn } from "vega";

interface LoaderOptions {
  context?: string;
}

function refuse(uri: string): never {
  throw new Error(`a report loads nothing from outside itself (${uri.slice(0, 80)})`);
}

/** The text of a `data:` URL (RFC 2397), without a request. */
function decodeDataUrl(uri: string): string {
  const match = /^data:([^,]*),(.*)$/is.exec(uri);
  if (!match) refuse(uri);
  const [, meta, payload] = match;
  if (/;base64$/i.test(meta)) {
    const bytes = Uint8Array.from(atob(payload), (c) => c.charCodeAt(0));
    return new TextDecoder().decode(bytes);
  }
  return decodeURIComponent(payload);
}

const isData = (uri: string) => /^data:/i.test(uri.trim());

function offlineLoader() {
  const base = vegaLoader();
  return {
    ...base,
    async sanitize(uri: string, options?: LoaderOptions) {
      if (isData(uri)) return { href: uri };
      // A click on a mark with an `href`: vega's own check (no javascript: URLs).
      if (options?.context === "href") return base.sanitize(uri, options as never);
      refuse(uri);
    },
    async load(uri: string) {
      if (!isData(uri)) refuse(uri);
      return decodeDataUrl(uri);
    },
    async http(uri: string) {
      refuse(uri);
    },
    async file(uri: string) {
      refuse(uri);
    },
  };
}

/**
 * vega logs what went wrong (a refused load, a bad expression) and draws an
 * empty chart; a chart that logged an error or a failed load is not drawn, its
 * picture stays.
 */
function recordingLogger(errors: string[]) {
  const base = vegaLogger(Warn);
  const log = {
    level(level?: number) {
      if (level === undefined) return base.level();
      base.level(level);
      return log;
    },
    error(...args: unknown[]) {
      errors.push(args.map((a) => (a instanceof Error ? a.message : String(a))).join(" "));
      return log;
    },
    warn(...args: unknown[]) {
      // A refused data load is only a warning to vega; here it means no chart.
      if (String(args[0]).startsWith("Loading failed")) log.error(...args);
      else base.warn(...args);
      return log;
    },
    info() {
      return log;
    },
    debug() {
      return log;
    },
  };
  return log;
}

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
          const { view, finalize } = await embed(target, spec, {
            mode,
            actions: false,
            renderer: "svg",
            ast: true,
            expr: expressionInterpreter,
            loader: offlineLoader() as never,
            logger: recordingLogger(errors) as never,
          });
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
