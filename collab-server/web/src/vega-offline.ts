// What vega may do on a page that loads nothing from outside itself (a report,
// and the workspace under its Content-Security-Policy): a loader that refuses
// every URL but `data:` (decoded here, since `fetch` is blocked), and a logger
// that records errors so a chart that failed is shown as its picture instead.
// Both the report's charts and the workspace's outputs draw with these and with
// vega-interpreter (no `eval` or `new Function`).

import { loader as vegaLoader, logger as vegaLogger, Warn } from "vega";
import { expressionInterpreter } from "vega-interpreter";

interface LoaderOptions {
  context?: string;
}

function refuse(uri: string): never {
  throw new Error(`a chart loads nothing from outside its page (${uri.slice(0, 80)})`);
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

export function offlineLoader() {
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
export function recordingLogger(errors: string[]) {
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


/** vega-embed's options for such a page: no actions menu, SVG, the expression
 * interpreter, the data:-only loader, and a logger that records into `errors`. */
export function offlineEmbedOptions(errors: string[]) {
  return {
    actions: false,
    renderer: "svg" as const,
    ast: true,
    expr: expressionInterpreter,
    loader: offlineLoader() as never,
    logger: recordingLogger(errors) as never,
  };
}
